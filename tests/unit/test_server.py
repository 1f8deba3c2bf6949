"""dkimd.server: socket specs, binding, and the asyncio server on loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from dkimd import milter
from dkimd.server import (
    DEFER,
    ConnectionInfo,
    Defer,
    HandlerResult,
    MilterServer,
    SocketSpec,
    bind_socket,
    parse_socket_spec,
)

# -- socket specifications ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("inet:8891@localhost", SocketSpec("inet", "localhost", 8891)),
        ("inet:8891@127.0.0.1", SocketSpec("inet", "127.0.0.1", 8891)),
        ("inet:8891@[127.0.0.1]", SocketSpec("inet", "127.0.0.1", 8891)),
        ("inet:8891@[::1]", SocketSpec("inet6", "::1", 8891)),
        ("inet:8891", SocketSpec("inet", None, 8891)),
        ("INET:8891", SocketSpec("inet", None, 8891)),
        ("inet6:8891@[2001:db8::1]", SocketSpec("inet6", "2001:db8::1", 8891)),
        ("inet6:8891@::1", SocketSpec("inet6", "::1", 8891)),
        ("inet6:8891", SocketSpec("inet6", None, 8891)),
        ("8891@localhost", SocketSpec("inet", "localhost", 8891)),
        ("8891", SocketSpec("inet", None, 8891)),
        ("local:/run/opendkim/x.sock", SocketSpec("unix", path="/run/opendkim/x.sock")),
        ("unix:/var/run/dkimd.sock", SocketSpec("unix", path="/var/run/dkimd.sock")),
        ("/var/spool/postfix/dkimd/sock", SocketSpec("unix", path="/var/spool/postfix/dkimd/sock")),
        ("  inet:25@host  ", SocketSpec("inet", "host", 25)),
    ],
)  # fmt: skip
def test_parse_socket_spec(text: str, expected: SocketSpec) -> None:
    assert parse_socket_spec(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "inet:",
        "inet:99999@localhost",
        "inet:port-that-does-not-exist@localhost",
        "inet:127.0.0.1:8891",  # Postfix's form, not OpenDKIM's
        "inet:8891@[127.0.0.1",
        "inet:8891@[not-an-ip]",
        "local:",
        "tcp:8891",
        "relative/path",
    ],
)
def test_parse_socket_spec_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_socket_spec(text)


def test_socket_spec_str_round_trips() -> None:
    for text in ["inet:8891@127.0.0.1", "inet6:8891@[::1]", "inet:10", "local:/x/y"]:
        assert str(parse_socket_spec(text)) == text


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


def pkt(command: str, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", len(payload) + 1, ord(command)) + payload


def z(*parts: str) -> bytes:
    return b"".join(p.encode() + b"\0" for p in parts)


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


class Recorder:
    """Test handler: adds a header at end of message; optional hooks per event type."""

    instances: list[Recorder] = []

    def __init__(self, info: ConnectionInfo) -> None:
        self.info = info
        self.events: list[milter.Event] = []
        self.closed = False
        self.queue_ids: list[str | None] = []
        Recorder.instances.append(self)

    hooks: dict[type, Callable[[Recorder], Awaitable[HandlerResult]]] = {}

    async def handle(self, event: milter.Event) -> HandlerResult:
        self.events.append(event)
        hook = self.hooks.get(type(event))
        if hook is not None:
            return await hook(self)
        if isinstance(event, milter.EndOfMessage):
            self.queue_ids.append(self.info.connection.macro("i"))
            return [milter.AddHeader(b"X-Dkimd-Test", b" yes"), milter.Continue()]
        return None

    async def close(self) -> None:
        self.closed = True


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
        assert handler.closed
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
        assert Recorder.instances[0].closed
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

    async def boom(handler: Recorder) -> HandlerResult:
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
    async def bad_reply(handler: Recorder) -> HandlerResult:
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
    async def slow(handler: Recorder) -> HandlerResult:
        await asyncio.sleep(0.35)
        return milter.Accept()

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
        assert all(h.closed for h in Recorder.instances)

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
        assert Recorder.instances[0].closed

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

    async def slow_once(handler: Recorder) -> HandlerResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.05)
            return milter.Accept()
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
        assert handler.closed
        names = [type(e).__name__ for e in handler.events]
        assert names.count("EndOfMessage") == 2 and names[-1] == "Quit"

    run(main())


class NowRecorder(Recorder):
    """A Recorder with handle_now: EndOfMessage deferred to handle(), a hook on Connect."""

    now_events: list[milter.Event]
    now_hook: Callable[[milter.Event], HandlerResult] | None = None

    def handle_now(self, event: milter.Event) -> HandlerResult | Defer:
        self.now_events = getattr(self, "now_events", [])
        self.now_events.append(event)
        if isinstance(event, milter.EndOfMessage):
            return DEFER
        if NowRecorder.now_hook is not None and isinstance(event, milter.Connect):
            return NowRecorder.now_hook(event)
        return None


def test_handle_now_replaces_handle_until_it_defers() -> None:
    async def main() -> None:
        NowRecorder.now_hook = None
        server = MilterServer(NowRecorder)
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        assert await mta.ask(CONNECT) == ("c", b"")
        got = await mta.message()
        assert got[-2:] == [("h", z("X-Dkimd-Test", " yes")), ("c", b"")]
        mta.close()
        await server.stop(1)
        await task
        (handler,) = Recorder.instances
        names = [type(e).__name__ for e in handler.now_events]
        assert names == [
            *("Connect", "MailFrom", "RcptTo", "Header", "EndOfHeaders"),
            *("BodyChunk", "EndOfMessage"),
        ]
        # handle() ran only for what handle_now deferred.
        assert [type(e).__name__ for e in handler.events] == ["EndOfMessage"]
        assert handler.queue_ids == ["ABC123"]

    run(main())


@pytest.mark.parametrize("failure", ["raise", "invalid reply"])
def test_handle_now_failure_uses_error_action(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(event: milter.Event) -> HandlerResult:
        if failure == "raise":
            raise RuntimeError("kaboom now")
        return milter.AddHeader(b"X", b" y")  # a modification before end of message

    async def main() -> None:
        NowRecorder.now_hook = hook
        server = MilterServer(NowRecorder, error_action=milter.Reject())
        port, task = await start(server)
        mta = await MTA.tcp(port)
        await mta.negotiate()
        assert await mta.ask(CONNECT) == ("r", b"")
        assert (await mta.message())[-1] == ("c", b"")  # the connection keeps serving
        mta.close()
        await server.stop(1)
        await task
        assert server.stats.handler_errors == 1

    try:
        with caplog.at_level(logging.ERROR, logger="dkimd.milter"):
            run(main())
    finally:
        NowRecorder.now_hook = None
    assert "handler failed on Connect" in caplog.text
