"""Load driver: plays Postfix against a milter, many sessions at once, and reports throughput.

    python bench/driver.py --target 127.0.0.1:8891 --message msg.eml --concurrency 8 \\
        --messages 2000 [--per-connection 1] [--client-addr 127.0.0.1] [--auth-user USER] [--json]

Each session opens a milter connection, negotiates protocol 6 as Postfix does, sends
`--per-connection` messages (SMFIC_ABORT between them, as smtpd's mail_reset() does) and quits.
The conversation, macros included, is Postfix 3.7's with default main.cf settings (see
mta_codec.py). Outgoing packets are buffered and written in one go when a reply is due or the
buffer is full, the way Postfix's VSTREAM does, and TCP_NODELAY is on, so the driver itself adds
no Nagle delay. The packets of a message are built once and replayed with a new queue id, so
the driver's own CPU per message stays small next to the filter's.

A message's latency runs from its first byte (for the first message of a connection that is the
TCP connect, which Postfix also waits for) to the filter's final reply to end-of-message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import mta_codec as mc
from mta_message import Message, load_message

POSTFIX_VERSION = "Postfix 3.7.11"
MTA_HOSTNAME = "mx.bench.test"
# Postfix's milter stream buffer: vstream_tweak_tcp() raises VSTREAM_BUFSIZE (4096) to twice
# the TCP MSS when the MSS is larger, and the MSS is 65483 on loopback. Output is written when
# the buffer is full or when a reply is awaited (milter8.c sends "macros and event parameters
# in one VSTREAM transaction"), never once per command.
VSTREAM_BUFFER = 2 * 65483


@dataclass(frozen=True)
class Envelope:
    """Who is talking to the MTA, and about which message."""

    client_addr: str = "127.0.0.1"
    client_name: str = ""  # empty: "localhost" for loopback, else Postfix's "[addr]"
    helo: str = "client.bench.test"
    sender: str = "sender@example.com"
    recipient: str = "rcpt@example.net"
    auth_user: str | None = None

    def hostname(self) -> str:
        if self.client_name:
            return self.client_name
        if self.client_addr in ("127.0.0.1", "::1"):
            return "localhost"
        return f"[{self.client_addr}]"  # milter8.c's form for an unknown client name


@dataclass
class Report:
    """What one load run measured."""

    target: str
    concurrency: int
    per_connection: int
    messages: int = 0  # completed with a final reply
    failed: int = 0
    connections: int = 0
    elapsed_s: float = 0.0
    msgs_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    final_replies: dict[str, int] = field(default_factory=dict)
    header_edits: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    protocol_mask: str = ""
    # Every edit of the first completed message, for checking (e.g. verify the signature).
    sample_edits: list[dict[str, object]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"target {self.target}  concurrency {self.concurrency}  "
            f"per-connection {self.per_connection}",
            f"messages {self.messages} ok, {self.failed} failed, "
            f"{self.connections} connections in {self.elapsed_s:.2f} s",
            f"throughput {self.msgs_per_s:.1f} msgs/s",
            f"latency ms  p50 {self.p50_ms:.2f}  p99 {self.p99_ms:.2f}  max {self.max_ms:.2f}",
            f"final replies {self.final_replies}",
            f"header edits {self.header_edits}",
            f"errors {self.errors}",
            f"filter protocol mask {self.protocol_mask}",
        ]
        return "\n".join(lines)


class _Wire:
    """Socket pump: buffers writes until a reply is due, splits incoming bytes into packets.

    Plain non-blocking socket calls through the loop (sock_sendall, sock_recv_into), not an
    asyncio transport: a transport costs ~0.13 ms to set up per connection here, and every
    reply then goes protocol -> future -> task. At concurrency 1 that was ~0.5 ms of the
    driver's own time inside each measured latency, which Postfix, in C, does not spend.
    """

    # Diagnostic switch (--quickack): ACK every segment at once instead of delaying the ACK.
    quickack = False

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        self._inbuf = bytearray()
        self._readbuf = bytearray(65536)
        self._packets: deque[tuple[bytes, bytes]] = deque()
        self._out: list[bytes | memoryview] = []
        self._pending = 0  # bytes in _out

    @classmethod
    async def open(cls, target: str) -> _Wire:
        loop = asyncio.get_running_loop()
        if target.startswith(("unix:", "local:")):
            return await cls._connect(socket.AF_UNIX, target.split(":", 1)[1])
        host, _, port_text = target.rpartition(":")
        host = host.strip("[]")
        port = int(port_text)  # before any socket exists: a bad target leaks nothing
        # An address literal is used as is (loop.getaddrinfo would take a trip through a
        # thread inside every measured latency); a name is resolved and each address tried
        # in turn, as asyncio's create_connection does (localhost may be ::1 only).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            socket.inet_pton(family, host)
        except OSError:
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICSERV
            )
        else:
            return await cls._connect(family, (host, port))
        error: OSError | None = None
        for family, _, _, _, address in infos:
            try:
                return await cls._connect(family, address)
            except OSError as exc:
                error = exc
        raise error or OSError(f"no address for {target}")

    @classmethod
    async def _connect(cls, family: int, address: str | tuple[Any, ...]) -> _Wire:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.get_running_loop().sock_connect(sock, address)
            wire = cls(sock)
            wire._quickack()
        except BaseException:
            sock.close()
            raise
        return wire

    def _quickack(self) -> None:
        # Linux clears TCP_QUICKACK again on its own, so it is re-armed after every read.
        if self.quickack and self._tcp:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def send(self, *chunks: bytes | memoryview) -> None:
        self._out.extend(chunks)
        for c in chunks:
            self._pending += len(c)

    async def flush(self) -> None:
        if self._out:
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out.clear()
            self._pending = 0
            await self._loop.sock_sendall(self._sock, data)

    async def flush_if_full(self) -> None:
        """Write once a VSTREAM buffer's worth is pending, as Postfix's stream does when a
        body chunk overflows it; smaller messages go out with end-of-message in one write."""
        if self._pending >= VSTREAM_BUFFER:
            await self.flush()

    async def read(self) -> tuple[bytes, bytes]:
        await self.flush()
        while not self._packets:
            n = await self._loop.sock_recv_into(self._sock, self._readbuf)
            self._quickack()
            if not n:
                raise ConnectionResetError("milter closed the connection")
            self._inbuf += memoryview(self._readbuf)[:n]
            self._packets.extend(mc.split_packets(self._inbuf))
        return self._packets.popleft()

    def close(self) -> None:
        self._sock.close()


# Operations of a compiled message (Driver._compile_message).
_SEND = "send"  # bytes to buffer
_SEND_QID = "send-qid"  # bytes to buffer, with the queue id patched in
_BODY = "body"  # a body chunk's frame head and data (sent unless the filter said skip)
_BODY_FLUSH = "body-flush"  # write if a VSTREAM buffer's worth is pending
_BODY_DECIDE = "body-decide"  # read the reply to a body chunk (continue or skip)
_DECIDE = "decide"  # read the reply to an event
# Stands for the queue id in compiled packets: the same length as every id _queue_id makes.
_QID_SLOT = b"QQQQQQQQ"


def _merge_sends(ops: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """Join runs of buffered packets into one bytes object: one send per run, not per packet."""
    out: list[tuple[str, object]] = []
    for op, arg in ops:
        if op in (_SEND, _SEND_QID) and out and out[-1][0] in (_SEND, _SEND_QID):
            joined = cast(bytes, out[-1][1]) + cast(bytes, arg)
            out[-1] = (_SEND_QID if _QID_SLOT in joined else _SEND, joined)
        else:
            out.append((op, arg))
    return out


class _MessageEnded(Exception):
    """A final reply before end-of-message (accept, reject, ...): the rest is not sent."""

    def __init__(self, reply: str, connection_done: bool) -> None:
        super().__init__(reply)
        self.reply = reply
        self.connection_done = connection_done


class _Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.final: Counter[str] = Counter()
        self.edits: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.failed = 0
        self.connections = 0
        self.protocol_mask = 0
        self.sample: list[mc.Modification] | None = None


class Driver:
    """Runs sessions against one milter endpoint."""

    def __init__(
        self,
        target: str,
        message: Message,
        envelope: Envelope,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.target = target
        self.message = message
        self.envelope = envelope
        self.timeout = timeout
        self._queue_ids = 0
        self._ports = 0
        self._programs: dict[object, list[tuple[str, object]]] = {}

    async def run(
        self,
        messages: int,
        concurrency: int,
        per_connection: int = 1,
        max_seconds: float | None = None,
    ) -> Report:
        """Send `messages` messages over `concurrency` parallel sessions; measure them.

        With `max_seconds`, sessions stop starting connections after that long, so a slow
        milter ends the run early; throughput stays completed messages / elapsed time.
        """
        stats = _Stats()
        remaining = [messages]
        start = time.perf_counter()
        deadline = start + max_seconds if max_seconds else float("inf")
        await asyncio.gather(
            *(self._worker(remaining, per_connection, stats, deadline) for _ in range(concurrency))
        )
        elapsed = time.perf_counter() - start
        return self._report(stats, elapsed, concurrency, per_connection)

    def _report(
        self, stats: _Stats, elapsed: float, concurrency: int, per_connection: int
    ) -> Report:
        lat = sorted(stats.latencies)
        done = len(lat)

        def pct(p: float) -> float:
            # nearest-rank percentile, in milliseconds
            return lat[min(done - 1, max(0, int(p * done + 0.5) - 1))] * 1000 if done else 0.0

        return Report(
            target=self.target,
            concurrency=concurrency,
            per_connection=per_connection,
            messages=done,
            failed=stats.failed,
            connections=stats.connections,
            elapsed_s=round(elapsed, 4),
            msgs_per_s=round(done / elapsed, 2) if elapsed > 0 else 0.0,
            p50_ms=round(pct(0.50), 3),
            p99_ms=round(pct(0.99), 3),
            max_ms=round(lat[-1] * 1000, 3) if done else 0.0,
            final_replies=dict(stats.final),
            header_edits=dict(stats.edits),
            errors=dict(stats.errors),
            protocol_mask=f"{stats.protocol_mask:#x}",
            sample_edits=[asdict(m) for m in stats.sample or []],
        )

    async def _worker(
        self, remaining: list[int], per_connection: int, stats: _Stats, deadline: float
    ) -> None:
        while remaining[0] > 0 and time.perf_counter() < deadline:
            batch = min(per_connection, remaining[0])
            remaining[0] -= batch
            try:
                # A connection-level accept/reject hands back what it did not carry.
                carried = await self._connection(batch, stats)
                # Not `remaining[0] += ... await ...`: that reads the counter before the await.
                remaining[0] += batch - carried
            except (OSError, EOFError, mc.ProtocolError, TimeoutError) as e:
                stats.errors[f"{type(e).__name__}: {e}"[:120]] += 1

    async def _open(self) -> _Wire:
        return await _Wire.open(self.target)

    async def _connection(self, batch: int, stats: _Stats) -> int:
        """One milter connection for up to `batch` messages; returns how many it carried.

        On an exception the message in flight and the ones not yet sent count as failed.
        """
        started = time.perf_counter()
        done = 0
        try:
            # Bounded like every other wait: a target that drops SYNs would otherwise hold
            # the session for the kernel's connect timeout (~2 minutes).
            async with asyncio.timeout(self.timeout):
                wire = await self._open()
        except BaseException:
            stats.failed += batch
            raise
        stats.connections += 1
        try:
            async with asyncio.timeout(self.timeout):
                neg = await self._negotiate(wire)
            stats.protocol_mask = neg.protocol
            connected = False
            while done < batch:
                if done:
                    started = time.perf_counter()
                connection_over = False
                try:
                    async with asyncio.timeout(self.timeout):
                        if not connected:
                            await self._connect_events(wire, neg)
                            connected = True
                        edits, reply = await self._message(wire, neg)
                except _MessageEnded as end:
                    edits, reply, connection_over = [], end.reply, end.connection_done
                self._record(stats, started, reply, edits)
                done += 1
                if connection_over:
                    return done  # Postfix drops the milter for the rest of the SMTP session
                # smtpd's mail_reset() after every transaction: SMFIC_ABORT, buffered until
                # the next write as VSTREAM would.
                wire.send(mc.packet(mc.CMD_ABORT))
            wire.send(mc.packet(mc.CMD_QUIT))  # client QUIT: milter8_disc_event()
            async with asyncio.timeout(self.timeout):
                await wire.flush()
            return done
        except BaseException:
            stats.failed += batch - done
            raise
        finally:
            wire.close()

    def _record(
        self, stats: _Stats, started: float, reply: str, edits: list[mc.Modification]
    ) -> None:
        stats.latencies.append(time.perf_counter() - started)
        stats.final[reply] += 1
        for m in edits:
            stats.edits[f"{m.action} {m.name}".strip()] += 1
        if stats.sample is None:
            stats.sample = edits

    async def _negotiate(self, wire: _Wire) -> mc.Negotiated:
        wire.send(mc.optneg())
        code, data = await wire.read()
        if code != mc.CMD_OPTNEG:
            raise mc.ProtocolError(f"expected OPTNEG reply, got {code!r}")
        return mc.parse_optneg(data)

    # ---- macros (Postfix 3.7 defaults: postconf milter_*_macros) ----

    def _macros(self, neg: mc.Negotiated, event: bytes, pairs: list[tuple[str, str]]) -> bytes:
        wanted = neg.symlists.get(event)
        if wanted is not None:  # SMFIF_SETSYMLIST: only what the filter asked for
            pairs = [p for p in pairs if p[0] in wanted]
        return mc.macro(event, pairs)

    def _queue_id(self) -> str:
        self._queue_ids += 1
        qid = f"{0x4B000000 + self._queue_ids:X}"  # Postfix-like short hex queue id
        assert len(qid) == len(_QID_SLOT)
        return qid

    async def _event(
        self, wire: _Wire, neg: mc.Negotiated, event: bytes, macros: bytes | None, pkt: bytes
    ) -> None:
        """Macros, then the event unless skipped, then its reply unless the filter waived it."""
        if macros is not None:
            wire.send(macros)
        if neg.skips(event):
            return
        wire.send(pkt)
        if neg.no_reply(event):
            return
        await self._decision(wire, event)

    async def _decision(self, wire: _Wire, event: bytes) -> str:
        while True:
            code, data = await wire.read()
            if code == b"p":  # SMFIR_PROGRESS: still working
                continue
            if code == b"c":
                return "continue"
            if code == b"s" and event == mc.CMD_BODY:
                return "skip"
            if code in (b"a", b"r", b"t", b"d", b"y", b"f"):
                name = mc.reply_name(code, data)
                in_connect = event in (mc.CMD_CONNECT, mc.CMD_HELO)
                raise _MessageEnded(name, connection_done=in_connect or code == b"f")
            raise mc.ProtocolError(
                f"unexpected reply {mc.REPLY_NAMES.get(code, code)!r} to event {event!r}"
            )

    async def _connect_events(self, wire: _Wire, neg: mc.Negotiated) -> None:
        env = self.envelope
        self._ports = (self._ports + 1) % 28000
        host = env.hostname()
        conn_macros = [
            ("j", MTA_HOSTNAME),
            ("{daemon_name}", MTA_HOSTNAME),  # milter_macro_daemon_name = $myhostname
            ("{daemon_addr}", "127.0.0.1"),
            ("v", POSTFIX_VERSION),
            ("_", f"{host.strip('[]') if host.startswith('[') else host} [{env.client_addr}]"),
        ]
        if host.startswith("["):
            conn_macros[-1] = ("_", f"unknown [{env.client_addr}]")
        await self._event(
            wire,
            neg,
            mc.CMD_CONNECT,
            self._macros(neg, mc.CMD_CONNECT, conn_macros),
            mc.connect(host, env.client_addr, 32768 + self._ports),
        )
        # milter_helo_macros are all TLS ones: without TLS the list is empty, but still sent.
        await self._event(
            wire,
            neg,
            mc.CMD_HELO,
            self._macros(neg, mc.CMD_HELO, []),
            mc.packet(mc.CMD_HELO, mc.cstrings([env.helo])),
        )

    async def _message(self, wire: _Wire, neg: mc.Negotiated) -> tuple[list[mc.Modification], str]:
        """One message: replay the compiled conversation with this message's queue id."""
        key = (neg.protocol, tuple(sorted(neg.symlists.items())))
        program = self._programs.get(key)
        if program is None:
            program = self._programs[key] = self._compile_message(neg)
        qid = self._queue_id().encode()
        skipping_body = False
        for op, arg in program:
            if op is _SEND:
                wire.send(cast(bytes, arg))
            elif op is _SEND_QID:
                wire.send(cast(bytes, arg).replace(_QID_SLOT, qid))
            elif op is _BODY:
                if not skipping_body:
                    wire.send(*cast(tuple[bytes, memoryview], arg))
            elif op is _BODY_FLUSH:
                if not skipping_body:
                    await wire.flush_if_full()  # waits only when the socket buffer is full
            elif op is _BODY_DECIDE:
                if not skipping_body:
                    skipping_body = await self._decision(wire, mc.CMD_BODY) == "skip"
            else:  # _DECIDE
                await self._decision(wire, cast(bytes, arg))
        return await self._end_of_message(wire)

    def _compile_message(self, neg: mc.Negotiated) -> list[tuple[str, object]]:
        """The MTA's side of one message, as a list of operations, built once per negotiated
        protocol: the bytes Postfix would send (queue id left as a slot, patched per message)
        and the points where it waits for the filter. Building the packets per message cost
        the driver more CPU than some filters spend, which capped what two filter workers
        could show on two CPUs."""
        ops: list[tuple[str, object]] = []

        def send(data: bytes) -> None:
            ops.append((_SEND_QID if _QID_SLOT in data else _SEND, data))

        def event(ev: bytes, macros: bytes | None, pkt: bytes) -> None:
            # Macros, then the event unless skipped, then its reply unless waived.
            if macros is not None:
                send(macros)
            if neg.skips(ev):
                return
            send(pkt)
            if not neg.no_reply(ev):
                ops.append((_DECIDE, ev))

        env = self.envelope
        msg = self.message
        qid = _QID_SLOT.decode()
        i_only = self._macros(neg, mc.CMD_EOH, [("i", qid)])
        mail_macros: list[tuple[str, str]] = []
        if env.auth_user:
            mail_macros += [("{auth_type}", "PLAIN"), ("{auth_authen}", env.auth_user)]
        sender_domain = env.sender.rpartition("@")[2]
        mail_macros += [
            ("{mail_addr}", env.sender),
            ("{mail_host}", sender_domain),
            ("{mail_mailer}", "smtp"),
        ]
        # No {i} at MAIL: smtpd_delay_open_until_valid_rcpt = yes defers the queue file.
        size = sum(len(n) + len(v) + 3 for n, v in msg.headers) + 2 + len(msg.body)
        event(
            mc.CMD_MAIL,
            self._macros(neg, mc.CMD_MAIL, mail_macros),
            mc.packet(mc.CMD_MAIL, mc.cstrings([f"<{env.sender}>", f"SIZE={size}"])),
        )
        rcpt_domain = env.recipient.rpartition("@")[2]
        event(
            mc.CMD_RCPT,
            self._macros(
                neg,
                mc.CMD_RCPT,
                [
                    ("i", qid),
                    ("{rcpt_addr}", env.recipient),
                    ("{rcpt_host}", rcpt_domain),
                    ("{rcpt_mailer}", "smtp"),
                ],
            ),
            mc.packet(mc.CMD_RCPT, mc.cstrings([f"<{env.recipient}>"])),
        )
        event(mc.CMD_DATA, self._macros(neg, mc.CMD_DATA, [("i", qid)]), mc.packet(mc.CMD_DATA))
        # One header event each, with the end-of-header macros before every one (milter8.c);
        # milter8_message() does not even call the header hook when headers are skipped.
        if not neg.skips(mc.CMD_HEADER):
            for name, value in msg.header_values(bool(neg.protocol & mc.P_HDR_LEADSPC)):
                event(mc.CMD_HEADER, i_only, mc.packet(mc.CMD_HEADER, name + b"\0" + value + b"\0"))
        event(mc.CMD_EOH, i_only, mc.packet(mc.CMD_EOH))
        eob_macros = self._macros(neg, mc.CMD_EOB, [("i", qid)])
        if not neg.skips(mc.CMD_BODY):
            body = memoryview(msg.body)
            no_reply = neg.no_reply(mc.CMD_BODY)
            for off in range(0, len(body), mc.MILTER_CHUNK_SIZE):
                chunk = body[off : off + mc.MILTER_CHUNK_SIZE]
                send(eob_macros)
                ops.append((_BODY, (mc.packet_header(mc.CMD_BODY, len(chunk)), chunk)))
                ops.append((_BODY_FLUSH if no_reply else _BODY_DECIDE, None))
        send(eob_macros)
        send(mc.packet(mc.CMD_EOB))
        return _merge_sends(ops)

    async def _end_of_message(self, wire: _Wire) -> tuple[list[mc.Modification], str]:
        edits: list[mc.Modification] = []
        while True:
            code, data = await wire.read()
            if code in mc.MODIFICATIONS:
                edits.append(mc.parse_modification(code, data))
            elif code == b"p":
                continue
            elif code in mc.FINAL_REPLIES and code != b"s":
                name = mc.reply_name(code, data)
                if code == b"f":
                    raise _MessageEnded(name, connection_done=True)
                return edits, name
            else:
                raise mc.ProtocolError(f"unexpected reply {code!r} at end of message")


def run_load(
    target: str,
    message: Message,
    envelope: Envelope,
    *,
    messages: int,
    concurrency: int,
    per_connection: int = 1,
    warmup: int = 0,
    timeout: float = 60.0,
    max_seconds: float | None = None,
) -> Report:
    """Blocking helper: optional warm-up (not measured), then the measured run."""

    async def go() -> Report:
        driver = Driver(target, message, envelope, timeout=timeout)
        if warmup:
            await driver.run(warmup, concurrency, per_connection)
        return await driver.run(messages, concurrency, per_connection, max_seconds)

    return asyncio.run(go())


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="HOST:PORT or unix:/path of the milter")
    p.add_argument("--message", required=True, type=Path, help="RFC 5322 message file")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--per-connection", type=int, default=1, help="messages per connection")
    p.add_argument("--warmup", type=int, default=0, help="unmeasured messages sent first")
    p.add_argument("--client-addr", default="127.0.0.1", help="SMTP client address to claim")
    p.add_argument("--client-name", default="", help="SMTP client host name (default: derived)")
    p.add_argument("--helo", default="client.bench.test")
    p.add_argument("--sender", help="envelope sender (default: the From: address)")
    p.add_argument("--recipient", default="rcpt@example.net")
    p.add_argument("--auth-user", help="claim SMTP AUTH as this user ({auth_type}, {auth_authen})")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per message")
    p.add_argument("--max-seconds", type=float, help="stop starting new messages after this")
    p.add_argument(
        "--quickack",
        action="store_true",
        help="diagnostic: ACK at once (TCP_QUICKACK), unlike Postfix; shows Nagle stalls",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if args.concurrency < 1 or args.messages < 1 or args.per_connection < 1:
        p.error("--concurrency, --messages and --per-connection must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    _Wire.quickack = args.quickack
    message = load_message(args.message)
    envelope = Envelope(
        client_addr=args.client_addr,
        client_name=args.client_name,
        helo=args.helo,
        sender=args.sender or message.from_address() or "sender@example.com",
        recipient=args.recipient,
        auth_user=args.auth_user,
    )
    report = run_load(
        args.target,
        message,
        envelope,
        messages=args.messages,
        concurrency=args.concurrency,
        per_connection=args.per_connection,
        warmup=args.warmup,
        timeout=args.timeout,
        max_seconds=args.max_seconds,
    )
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(report.summary())
    return 0 if report.messages and not report.failed else 1


if __name__ == "__main__":
    sys.exit(main())
