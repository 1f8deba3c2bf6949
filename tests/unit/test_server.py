"""dkimd.server: the asyncio server on loopback sockets (bound by dkimd.sockets)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from dkimd import milter
from dkimd.milter.handler import ConnectionInfo, HandlerResult, Prefetch, Request, Step
from dkimd.server import MilterServer
from dkimd.sockets import bind_socket
from support.milterwire import pkt, z

# -- binding -----------------------------------------------------------------------


def test_bind_tcp_loopback() -> None:
    sock = bind_socket("inet:0@127.0.0.1")
    try:
        assert sock.family == socket.AF_INET
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert sock.getsockname()[0] == "127.0.0.1"
        assert not sock.getblocking()
    finally:
        sock.close()


def test_bind_tcp_reuse_port() -> None:
    first = bind_socket("inet:0@127.0.0.1", reuse_port=True)
    port = first.getsockname()[1]
    # Workers N: each worker binds the same port; the kernel spreads connections among them.
    second = bind_socket(f"inet:{port}@127.0.0.1", reuse_port=True)
    try:
        for sock in (first, second):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
            assert sock.getsockname() == ("127.0.0.1", port)
        # Without the option a second daemon on the same port is refused, as it must be.
        with pytest.raises(OSError, match="in use"):
            bind_socket(f"inet:{port}@127.0.0.1")
    finally:
        first.close()
        second.close()
    alone = bind_socket("inet:0@127.0.0.1")
    try:
        assert alone.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    finally:
        alone.close()


def test_bind_unix_umask_and_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "milter.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # file left behind, nobody listening
    sock = bind_socket(f"local:{path}", umask=0o077)
    try:
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o700
        # a second daemon must not steal a live socket
        with pytest.raises(OSError, match="in use"):
            bind_socket(f"unix:{path}")
    finally:
        sock.close()


def test_bind_unix_refuses_to_remove_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        bind_socket(str(path))
    assert path.read_text() == "precious"


# -- server ------------------------------------------------------------------------


OPTNEG = pkt("O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
CONNECT = pkt("C", z("client.example") + b"4" + struct.pack(">H", 4000) + z("192.0.2.1"))
MESSAGE = [
    pkt("D", b"M" + z("i", "ABC123")),
    pkt("M", z("<a@example.org>")),
    pkt("R", z("<b@example.net>")),
    pkt("L", z("From", " a@example.org")),
    pkt("N"),
    pkt("B", b"body\r\n"),
    pkt("E"),
]


class MTA:
    """The MTA side of one milter connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def tcp(cls, port: int) -> MTA:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, *packets: bytes) -> None:
        self.writer.write(b"".join(packets))
        await self.writer.drain()

    async def reply(self) -> tuple[str, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(5), 5)
        (length,) = struct.unpack(">I", head[:4])
        payload = await asyncio.wait_for(self.reader.readexactly(length - 1), 5)
        return chr(head[4]), payload

    async def ask(self, packet: bytes) -> tuple[str, bytes]:
        await self.send(packet)
        return await self.reply()

    async def negotiate(self) -> None:
        assert (await self.ask(OPTNEG))[0] == "O"

    async def message(self) -> list[tuple[str, bytes]]:
        """Send one message; return every reply (EOM modifications included)."""
        got = []
        for packet in MESSAGE[:-1]:
            if packet[4:5] == b"D":
                await self.send(packet)
            else:
                got.append(await self.ask(packet))
        await self.send(MESSAGE[-1])
        while True:
            reply = await self.reply()
            got.append(reply)
            if reply[0] not in "hiqmp":
                return got

    async def is_closed(self, timeout: float = 5) -> bool:
        """Whether the filter closes the connection (replies still in flight ignored)."""
        await asyncio.wait_for(self.reader.read(), timeout)  # read() = until EOF
        self.writer.close()
        return True

    def close(self) -> None:
        self.writer.close()


class Work(Request[Step]):
    """Outside work for tests: after `delay` seconds, `result` (or `error` raised); the
    answer is what the handler replies (Recorder.provide hands it straight back)."""

    def __init__(
        self,
        result: Step,
        *,
        delay: float = 0.0,
        known: bool = False,
        error: Exception | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.result = result
        self.delay = delay
        self.known = known  # answered now, without performing
        self.error = error
        self.timeout = timeout
        self.performed = 0
        self.cancelled = False
        self.failures: list[BaseException] = []

    def answer_now(self) -> Step | None:
        return self.result if self.known else None

    async def perform(self) -> Step:
        self.performed += 1
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return self.result

    def failed(self, error: BaseException) -> Step:
        self.failures.append(error)
        return milter.TempFail()


class Recorder:
    """Test handler: adds a header at end of message; optional hooks per event type."""

    instances: list[Recorder] = []

    def __init__(self, info: ConnectionInfo) -> None:
        self.info = info
        self.events: list[milter.Event] = []
        self.provided: list[object] = []
        self.closed = 0
        self.queue_ids: list[str | None] = []
        Recorder.instances.append(self)

    hooks: dict[type, Callable[[Recorder], Step]] = {}

    def handle(self, event: milter.Event) -> Step:
        self.events.append(event)
        hook = self.hooks.get(type(event))
        if hook is not None:
            return hook(self)
        if isinstance(event, milter.EndOfMessage):
            self.queue_ids.append(self.info.connection.macro("i"))
            return [milter.AddHeader(b"X-Dkimd-Test", b" yes"), milter.Continue()]
        return None

    def provide(self, answer: Step) -> Step:
        self.provided.append(answer)
        return answer

    def close(self) -> None:
        self.closed += 1


@pytest.fixture(autouse=True)
def _reset_recorder() -> None:
    Recorder.instances = []
    Recorder.hooks = {}


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


async def start(
    server: MilterServer, spec: str = "inet:0@127.0.0.1"
) -> tuple[int, asyncio.Task[None]]:
    sock = bind_socket(spec)
    port = sock.getsockname()[1] if sock.family != socket.AF_UNIX else 0
    task = asyncio.create_task(server.serve(sock))
    await asyncio.sleep(0)
    return port, task


def test_tcp_session_adds_header_and_sets_nodelay() -> None:
    async def main() -> None:
        server = MilterServer(Recorder)
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        assert await mta.ask(CONNECT) == ("c", b"")
        got = await mta.message()
        assert got[-2:] == [("h", z("X-Dkimd-Test", " yes")), ("c", b"")]
        await mta.send(pkt("A"), pkt("Q"))
        assert await mta.is_closed()
        await server.stop(1)
        await task
        (handler,) = Recorder.instances
        assert handler.info.tcp_nodelay is True
        assert handler.closed == 1
        assert handler.queue_ids == ["ABC123"]
        names = [type(e).__name__ for e in handler.events]
        assert names[0] == "Connect" and names[-2:] == ["Abort", "Quit"]

    run(main())


def test_unix_socket_session(tmp_path: Path) -> None:
    path = tmp_path / "dkimd.sock"

    async def main() -> None:
        server = MilterServer(Recorder)
        _, task = await start(server, f"local:{path}")
        mta = MTA(*await asyncio.open_unix_connection(str(path)))
        await mta.negotiate()
        await mta.ask(CONNECT)
        assert (await mta.message())[-1] == ("c", b"")
        assert (await mta.message())[-1] == ("c", b"")  # a second message
        mta.close()
        await server.stop(1)
        await task
        assert Recorder.instances[0].info.tcp_nodelay is None
        assert not path.exists()  # removed at stop

    run(main())


def test_idle_timeout_closes_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        server = MilterServer(Recorder, idle_timeout=0.2)
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        assert await mta.is_closed(timeout=3)
        assert server.stats.timeouts == 1
        assert Recorder.instances[0].closed == 1
        await server.stop(1)
        await task

    with caplog.at_level(logging.INFO, logger="dkimd.milter"):
        run(main())
    assert "idle" in caplog.text


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff\xff\xff\xffO",  # oversized length
        b"\0\0\0\0",  # zero-length packet
        OPTNEG + pkt("Z"),  # unknown command
        OPTNEG + pkt("E"),  # end of message out of order
        b"GET / HTTP/1.0\r\n\r\n",  # garbage
    ],
)
def test_bad_client_does_not_disturb_good_one(bad: bytes, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        server = MilterServer(Recorder, max_packet=64 * 1024)
        port, task = await start(server)
        good = await MTA.tcp(port)
        await good.negotiate()
        await good.ask(CONNECT)
        evil = await MTA.tcp(port)
        await evil.send(bad)
        assert await evil.is_closed()
        assert (await good.message())[-1] == ("c", b"")
        good.close()
        await server.stop(1)
        await task
        assert server.stats.protocol_errors == 1

    with caplog.at_level(logging.WARNING, logger="dkimd.milter"):
        run(main())
    assert "protocol error" in caplog.text


def test_handler_exception_tempfails_and_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def boom(handler: Recorder) -> HandlerResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("kaboom")
        return None

    async def main() -> None:
        Recorder.hooks = {milter.EndOfMessage: boom}
        server = MilterServer(Recorder)
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        await mta.ask(CONNECT)
        assert (await mta.message())[-1] == ("t", b"")
        await mta.send(pkt("A"))
        assert (await mta.message())[-1] == ("c", b"")
        mta.close()
        await server.stop(1)
        await task
        assert server.stats.handler_errors == 1

    with caplog.at_level(logging.ERROR, logger="dkimd.milter"):
        run(main())
    assert "kaboom" in caplog.text  # the traceback is logged


def test_invalid_handler_reply_uses_error_action() -> None:
    def bad_reply(handler: Recorder) -> HandlerResult:
        return milter.AddHeader(b"X", b" y")  # a modification before end of message

    async def main() -> None:
        Recorder.hooks = {milter.Connect: bad_reply}
        server = MilterServer(Recorder, error_action=milter.Reject())
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        assert await mta.ask(CONNECT) == ("r", b"")
        mta.close()
        await server.stop(1)
        await task

    run(main())


def test_progress_while_handler_is_slow() -> None:
    def slow(handler: Recorder) -> Step:
        return Work(milter.Accept(), delay=0.35)

    async def main() -> None:
        Recorder.hooks = {milter.EndOfMessage: slow}
        server = MilterServer(Recorder, progress_interval=0.1)
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        await mta.ask(CONNECT)
        got = await mta.message()
        assert got[-1] == ("a", b"")
        assert 2 <= [r for r, _ in got].count("p") <= 4
        mta.close()
        await server.stop(1)
        await task

    run(main())


def test_graceful_stop_finishes_in_flight_message() -> None:
    async def main() -> None:
        server = MilterServer(Recorder)
        port, task = await start(server)
        idle = await MTA.tcp(port)
        await idle.negotiate()
        await idle.ask(CONNECT)
        busy = await MTA.tcp(port)
        await busy.negotiate()
        await busy.ask(CONNECT)
        for packet in MESSAGE[:5]:  # up to end of headers
            if packet[4:5] != b"D":
                await busy.ask(packet)
            else:
                await busy.send(packet)
        stopping = asyncio.create_task(server.stop(grace=5))
        assert await idle.is_closed()  # between messages: closed at once
        with pytest.raises(OSError):
            await MTA.tcp(port)  # not accepting any more
        assert not stopping.done()
        assert await busy.ask(MESSAGE[5]) == ("c", b"")
        await busy.send(MESSAGE[6])
        assert await busy.reply() == ("h", z("X-Dkimd-Test", " yes"))
        assert await busy.reply() == ("c", b"")
        assert await busy.is_closed()  # closed once the message is done
        await stopping
        await task
        assert all(h.closed == 1 for h in Recorder.instances)

    run(main())


def test_stop_cancels_after_grace(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        server = MilterServer(Recorder)
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        await mta.ask(CONNECT)
        await mta.ask(pkt("M", z("<a@b>")))  # in a message, then silence
        await server.stop(grace=0.2)
        await task
        assert await mta.is_closed()
        assert Recorder.instances[0].closed == 1

    with caplog.at_level(logging.WARNING, logger="dkimd.milter"):
        run(main())
    assert "cancelled 1" in caplog.text


def test_many_concurrent_connections() -> None:
    async def client(port: int) -> list[tuple[str, bytes]]:
        mta = await MTA.tcp(port)
        await mta.negotiate()
        await mta.ask(CONNECT)
        replies = await mta.message()
        await mta.send(pkt("A"))
        replies += await mta.message()
        await mta.send(pkt("Q"))
        assert await mta.is_closed()
        return replies

    async def main() -> None:
        server = MilterServer(Recorder)
        port, task = await start(server)
        results = await asyncio.gather(*(client(port) for _ in range(60)))
        assert all(r == results[0] for r in results)
        assert server.stats.connections == 60
        await server.stop(1)
        await task

    run(main())


def test_suspended_handler_keeps_order_of_pipelined_commands() -> None:
    # The handler suspends at end of message while the MTA has already sent what comes
    # next (abort, a second message): the reply to the first end of message must come
    # before anything for the later commands, and every event is still handled once.
    calls = 0

    def slow_once(handler: Recorder) -> Step:
        nonlocal calls
        calls += 1
        if calls == 1:
            return Work(milter.Accept(), delay=0.05)
        return milter.Reject()

    async def main() -> None:
        Recorder.hooks = {milter.EndOfMessage: slow_once}
        server = MilterServer(Recorder)
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        await mta.ask(CONNECT)
        await mta.send(*MESSAGE, pkt("A"), *MESSAGE)
        replies = [await mta.reply() for _ in range(2 * (len(MESSAGE) - 1))]
        finals = [r for r, _ in replies if r in "ar"]
        assert finals == ["a", "r"]
        await mta.send(pkt("Q"))
        assert await mta.is_closed()
        await server.stop(1)
        await task
        (handler,) = Recorder.instances
        assert handler.closed == 1
        names = [type(e).__name__ for e in handler.events]
        assert names.count("EndOfMessage") == 2 and names[-1] == "Quit"

    run(main())


# -- the handler contract: requests for outside work (dkimd.milter.handler) ----------------


async def one_message(
    hooks: dict[type, Callable[[Recorder], Step]], **options: Any
) -> tuple[list[tuple[str, bytes]], Recorder, MilterServer]:
    """One connection, one message with `hooks`; the replies, the handler and the server."""
    Recorder.hooks = hooks
    server = MilterServer(Recorder, **options)
    port, task = await start(server)
    mta = await MTA.tcp(port)
    await mta.negotiate()
    await mta.ask(CONNECT)
    got = await mta.message()
    await mta.send(pkt("Q"))
    assert await mta.is_closed()
    await server.stop(1)
    await task
    (handler,) = Recorder.instances
    assert handler.closed == 1
    return got, handler, server


def test_request_answered_now_is_not_performed() -> None:
    work = Work([milter.AddHeader(b"X-Now", b" 1"), milter.Continue()], known=True)

    async def main() -> None:
        got, handler, _ = await one_message({milter.EndOfMessage: lambda h: work})
        assert got[-2:] == [("h", z("X-Now", " 1")), ("c", b"")]
        assert handler.provided == [work.result]

    run(main())
    assert work.performed == 0


def test_request_performed_then_provided_in_a_chain() -> None:
    """provide() may ask for more work; each answer comes back through provide()."""
    second = Work(milter.Accept(), delay=0.05)
    first = Work(second, delay=0.05)

    async def main() -> None:
        got, handler, _ = await one_message({milter.EndOfMessage: lambda h: first})
        assert got[-1] == ("a", b"")
        assert handler.provided == [second, second.result]

    run(main())
    assert (first.performed, second.performed) == (1, 1)


def test_request_that_raises_gets_its_failed_answer(caplog: pytest.LogCaptureFixture) -> None:
    work = Work(milter.Accept(), error=RuntimeError("resolver bug"))

    async def main() -> None:
        got, handler, server = await one_message({milter.EndOfMessage: lambda h: work})
        assert got[-1] == ("t", b"")  # Work.failed: TempFail, handed over by provide()
        assert handler.provided == [milter.TempFail()]
        assert server.stats.handler_errors == 0

    with caplog.at_level(logging.ERROR, logger="dkimd.milter"):
        run(main())
    [error] = work.failures
    assert isinstance(error, RuntimeError)
    assert "resolver bug" in caplog.text


def test_request_that_hangs_times_out() -> None:
    work = Work(milter.Accept(), delay=60, timeout=0.2)

    async def main() -> None:
        got, _, _ = await one_message({milter.EndOfMessage: lambda h: work})
        assert got[-1] == ("t", b"")

    run(main())
    [error] = work.failures
    assert isinstance(error, TimeoutError)
    assert work.cancelled


def test_prefetch_overlaps_the_body_and_is_performed_once() -> None:
    """A prefetch starts at end of headers; end of message asks for the same request and
    gets its answer without performing it again."""
    work = Work(milter.Accept(), delay=0.1)

    async def main() -> None:
        hooks: dict[type, Callable[[Recorder], Step]] = {
            milter.EndOfHeaders: lambda h: Prefetch(work),
            milter.EndOfMessage: lambda h: work,
        }
        got, handler, _ = await one_message(hooks)
        assert ("c", b"") in got  # end of headers replied to at once
        assert got[-1] == ("a", b"")
        assert handler.provided == [milter.Accept()]

    run(main())
    assert work.performed == 1


def test_prefetch_already_answered_needs_no_task() -> None:
    work = Work(milter.Accept(), known=True)

    async def main() -> None:
        hooks: dict[type, Callable[[Recorder], Step]] = {
            milter.EndOfHeaders: lambda h: Prefetch(work),
            milter.EndOfMessage: lambda h: work,
        }
        got, _, _ = await one_message(hooks)
        assert got[-1] == ("a", b"")

    run(main())
    assert work.performed == 0


def test_abort_drops_a_prefetch_in_flight() -> None:
    work = Work(milter.Accept(), delay=60)

    async def main() -> None:
        Recorder.hooks = {milter.EndOfHeaders: lambda h: Prefetch(work)}
        server = MilterServer(Recorder)
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        await mta.ask(CONNECT)
        for packet in MESSAGE[:5]:  # up to end of headers
            if packet[4:5] == b"D":
                await mta.send(packet)
            else:
                await mta.ask(packet)
        await asyncio.sleep(0.05)
        assert work.performed == 1 and not work.cancelled
        await mta.send(pkt("A"))
        assert (await mta.message())[-1] == ("c", b"")  # the connection serves on
        assert work.cancelled
        mta.close()
        await server.stop(1)
        await task

    run(main())


@pytest.mark.parametrize("how", ["stop", "mta-gone"])
def test_close_while_a_request_is_pending(how: str) -> None:
    """The connection ends while end of message waits for a request: on stop (after the
    grace time) the work is cancelled and nothing is provided; when the MTA goes away
    (noticed once the request is answered, as reading is paused meanwhile) the reply goes
    nowhere. Either way the handler is closed exactly once and the server forgets it."""
    work = Work(milter.Accept(), delay=60 if how == "stop" else 0.2)

    async def main() -> None:
        Recorder.hooks = {milter.EndOfMessage: lambda h: work}
        server = MilterServer(Recorder)
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        await mta.ask(CONNECT)
        await mta.send(*MESSAGE)
        for _ in range(len(MESSAGE) - 2):  # replies up to the body chunk
            await mta.reply()
        while work.performed == 0:
            await asyncio.sleep(0.01)
        if how == "stop":
            await server.stop(grace=0.2)
            assert await mta.is_closed()
        else:
            mta.writer.close()
            while server.active_connections:
                await asyncio.sleep(0.01)
            await server.stop(1)
        await task
        (handler,) = Recorder.instances
        assert handler.closed == 1
        assert handler.provided == ([] if how == "stop" else [milter.Accept()])
        assert server.active_connections == 0

    run(main())
    assert work.cancelled is (how == "stop")


def test_handler_failure_in_provide_uses_error_action(caplog: pytest.LogCaptureFixture) -> None:
    class Failing(Recorder):
        def provide(self, answer: Step) -> Step:
            raise RuntimeError("provide broke")

    async def main() -> None:
        Recorder.hooks = {milter.EndOfMessage: lambda h: Work(milter.Accept(), delay=0.01)}
        server = MilterServer(Failing, error_action=milter.Reject())
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        await mta.ask(CONNECT)
        assert (await mta.message())[-1] == ("r", b"")
        await mta.send(pkt("A"))
        Recorder.hooks = {}
        assert (await mta.message())[-1] == ("c", b"")  # the connection keeps serving
        mta.close()
        await server.stop(1)
        await task
        assert server.stats.handler_errors == 1

    with caplog.at_level(logging.ERROR, logger="dkimd.milter"):
        run(main())
    assert "handler failed on EndOfMessage" in caplog.text
