"""dkimd's own cost per message, without sockets: the driver's conversation fed straight into
the server's protocol object.

    python bench/inproc.py CONF MESSAGE [--client-addr ADDR] [--messages N] [--profile KEY]

Builds the exact bytes bench/driver.py would send for one message (same compiled
conversation, negotiated against dkimd's real option reply), then hands them, one connection
per message, to `dkimd.server`'s protocol object with a transport that only collects the
replies. Prints the CPU time per message (time.process_time) and the final reply; with
`--profile tottime|cumtime`, a cProfile listing of the measured messages.

What it leaves out is the kernel and the event loop (accept, epoll, send and receive), so
it shows changes to dkimd's Python code clearly. On a noisy machine, count instructions
instead of seconds (the same count for the same code and input):

    valgrind --tool=callgrind python3.11 bench/inproc.py CONF MSG --messages 1
    valgrind --tool=callgrind python3.11 bench/inproc.py CONF MSG --messages 301
    # (second total - first total) / 300 = instructions per message

Use the interpreter itself, not a wrapper script (a pyenv shim would be traced instead).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import mta_codec as mc
from driver import Driver, Envelope
from mta_message import load_message

from dkimd import metrics
from dkimd.config import load_config
from dkimd.daemon import build_runtime
from dkimd.log import setup_logging
from dkimd.negotiation import filter_options_for
from dkimd.server import MilterServer, _MilterProtocol
from dkimd.session import RuntimeHolder, SessionStats, handler_factory


class _Transport(asyncio.Transport):
    """Collects what the filter writes; closing tells the protocol the connection is gone."""

    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closed = False
        self.protocol: _MilterProtocol | None = None
        self._peer = peer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out.append(bytes(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                self.protocol.connection_lost(None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self._peer, "sockname": ("127.0.0.1", 8891)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Recorder:
    """Stands in for the driver's socket while it builds a conversation: keeps the bytes."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def send(self, *chunks: bytes | memoryview) -> None:
        self.data += [bytes(c) for c in chunks]

    async def read(self) -> tuple[bytes, bytes]:
        raise RuntimeError("the filter wants a reply before end of message; not supported here")


class Replay:
    """One dkimd runtime and one prepared conversation, replayed once per message."""

    def __init__(self, conf: Path, message: Path, client_addr: str) -> None:
        config = load_config(str(conf))
        self.server = MilterServer(
            handler_factory(RuntimeHolder(build_runtime(config, None)), SessionStats()),
            filter_options_for(config),
            progress_interval=30.0,
        )
        self.loop = asyncio.get_event_loop()
        self.peer = (client_addr, 40000)
        msg = load_message(message)
        envelope = Envelope(client_addr=client_addr, sender=msg.from_address() or "s@example.com")
        self.driver = Driver("in-process", msg, envelope)
        optneg = mc.optneg()
        reply, _ = self._run([optneg])
        code, data = mc.split_packets(bytearray(reply))[0]
        if code != mc.CMD_OPTNEG:
            raise RuntimeError(f"unexpected option negotiation reply {code!r}")
        neg = mc.parse_optneg(data)
        rec = _Recorder()
        self._drive(self.driver._connect_events(rec, neg))  # type: ignore[arg-type]
        self.connect = b"".join(rec.data)
        self.neg = neg

    @staticmethod
    def _drive(coro: Any) -> Any:
        # The driver's builders are coroutines that never suspend against this recorder.
        try:
            coro.send(None)
        except StopIteration as stop:
            return stop.value
        raise RuntimeError("the conversation builder waited for a reply")

    def message_bytes(self) -> bytes:
        """One connection's worth: negotiation, connect events, the message, quit."""
        rec = _Recorder()
        program = self.driver._compile_message(self.neg)
        qid = self.driver._queue_id().encode()
        for op, arg in program:
            if op in ("send", "send-qid"):
                rec.send(cast(bytes, arg).replace(b"QQQQQQQQ", qid))
            elif op == "body":
                rec.send(*arg)  # type: ignore[misc]
            # "decide"/"body-decide": a reply the driver reads before going on (dkimd
            # replies at end-of-headers when it signs: it may tempfail there). Replayed as
            # one stream, the conversation goes on as after a "continue"; _final shows the
            # last reply only.
        # Then QUIT, as smtpd's milter8_disc_event(): the filter closes the connection.
        return self.connect + b"".join(rec.data) + mc.packet(mc.CMD_QUIT)

    def _run(self, chunks: Sequence[bytes]) -> tuple[bytes, bool]:
        transport = _Transport(self.peer)
        proto = _MilterProtocol(self.server, self.loop)
        transport.protocol = proto
        proto.connection_made(transport)
        for chunk in chunks:
            buf = proto.get_buffer(len(chunk))
            buf[: len(chunk)] = chunk
            proto.buffer_updated(len(chunk))
            while proto._task is not None:  # end of message awaiting a DNS task
                self.loop.run_until_complete(asyncio.sleep(0))
        return b"".join(transport.out), transport.closed

    def one(self, conversation: Sequence[bytes]) -> bytes:
        reply, _ = self._run(conversation)
        return reply


def _final(reply: bytes) -> list[str]:
    """The edits and final reply, as the driver names them."""
    out = []
    last = None
    for code, data in mc.split_packets(bytearray(reply)):
        if code in mc.MODIFICATIONS:
            m = mc.parse_modification(code, data)
            out.append(f"{m.action} {m.name}: {m.value[:60]}")
        elif code != mc.CMD_OPTNEG:
            last = mc.reply_name(code, data)  # replies before end of message: continue
    return out if last is None else [*out, last]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("conf", type=Path)
    p.add_argument("message", type=Path)
    p.add_argument("--client-addr", default="127.0.0.1")
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--profile", choices=("tottime", "cumtime"))
    p.add_argument(
        "--metrics",
        choices=("off", "memory", "multiprocess"),
        default="off",
        help="count into Prometheus metrics as the daemon would (needs MetricsSocket in CONF):"
        " in memory (one process) or in multiprocess files (Workers N)",
    )
    p.add_argument(
        "--publish-every",
        type=int,
        default=100,
        metavar="N",
        help="with --metrics multiprocess: copy the counts to the files after every N messages"
        " (a worker does it once a second, i.e. after thousands; default 100: its cost shows)",
    )
    args = p.parse_args(argv)
    if args.metrics != "off":
        from dkimd.metrics.setup import prepare

        many = args.metrics == "multiprocess"
        prepare(load_config(str(args.conf)), multiprocess=many, owner=None)
    # As the daemon logs in the foreground, to nowhere: its cost counts, its lines do not.
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of this process
    setup_logging(syslog=False, stderr=True)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    replay = Replay(args.conf, args.message, args.client_addr)
    head = mc.optneg()
    sample = replay.message_bytes()
    # Trees before the per-tick publishing counted straight into the files: nothing to call.
    publish = getattr(metrics.recorder, "publish", None) if args.metrics == "multiprocess" else None
    for _ in range(args.warmup):
        replay.one([head, replay.message_bytes()])
    if publish is not None:
        publish()  # the first copy makes the file entries: a worker's once-only cost
    print("\n".join(_final(replay.one([head, sample]))), file=sys.stdout)
    conversations = [[head, replay.message_bytes()] for _ in range(args.messages)]
    prof = cProfile.Profile() if args.profile else None
    every = max(1, args.publish_every)
    t0 = time.process_time()
    if prof is not None:
        prof.enable()
    for i, conv in enumerate(conversations, 1):
        replay.one(conv)
        if publish is not None and i % every == 0:
            publish()
    if prof is not None:
        prof.disable()
    spent = time.process_time() - t0
    n = max(1, args.messages)
    print(f"{args.messages} messages, CPU {spent * 1000 / n:.3f} ms/msg (in-process, no sockets)")
    if prof is not None:
        pstats.Stats(prof, stream=sys.stdout).sort_stats(args.profile).print_stats(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
