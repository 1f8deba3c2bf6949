"""The asyncio edge: listening sockets and one task per milter connection.

This is the only place milter bytes meet a socket. Each connection task pumps bytes
between an asyncio stream and a sans-IO ``dkimd.milter.Connection`` and calls the
handler once per event (the httpcore model: a thin async loop around a sans-IO core).

Pieces:

* ``parse_socket_spec(spec) -> SocketSpec``: OpenDKIM's ``Socket`` formats
  (opendkim.conf(5)): ``inet:PORT[@HOST]``, ``inet:PORT@[IPv6]``, ``inet6:PORT[@HOST]``,
  ``local:/path``, ``unix:/path``, a bare ``/path``, and ``PORT@HOST`` (inet).
* ``bind_socket(spec, umask=None, reuse_port=False) -> socket.socket``: a bound,
  listening, non-blocking socket. A stale UNIX socket file is removed (only if nothing
  answers on it); ``umask`` sets the socket file's permissions race-free.
* ``MilterServer(handler_factory, filter_options, ...)`` with ``serve(sock)`` and
  ``stop(grace)``.

The handler interface (``MilterHandler``), one handler per milter connection::

    class Handler:
        def __init__(self, info: ConnectionInfo): self.conn = info.connection
        async def handle(self, event: milter.Event) -> HandlerResult: ...
        async def close(self) -> None: ...

``handle`` is awaited for every event except ``OptionNegotiation`` (answered by the
``Connection`` from ``filter_options``), ``Macros`` (read them from
``info.connection.macros`` / ``.macro(name)`` instead) and the end of the connection
(``close`` is called exactly once, however the connection ends). It returns:

* ``None``: ``Continue()`` (or nothing, where the MTA expects no reply);
* one ``Action``: the reply for this event;
* a sequence of actions: at ``EndOfMessage``, modifications followed by the final
  action (``Continue()`` is appended when the last item is not a final action).

``handle`` may await anything (DNS); the MTA simply waits. With ``progress_interval``
set, the server sends SMFIR_PROGRESS while ``handle(EndOfMessage)`` runs, so long key
lookups do not hit Postfix's ``milter_content_timeout``.

Failure policy: a handler exception (or an invalid reply) is logged with its traceback
and answered with ``error_action`` (``TempFail()`` by default); the connection keeps
serving. A protocol error from the MTA (bad framing, oversized packet, command out of
order) or an idle timeout closes that connection only, with one log line on the
``dkimd.milter`` logger; Postfix then applies its ``milter_default_action``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from dkimd import milter
from dkimd.milter import Action, Connection, FilterOptions

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "ConnectionInfo",
    "HandlerFactory",
    "HandlerResult",
    "MilterHandler",
    "MilterServer",
    "SocketSpec",
    "bind_socket",
    "parse_socket_spec",
]

log = logging.getLogger("dkimd.milter")

#: Seconds a milter connection may stay silent. Postfix keeps its milter connection for
#: the whole SMTP session, and an SMTP client may idle up to smtpd_timeout (300 s) per
#: command, so this must be well above that.
DEFAULT_IDLE_TIMEOUT = 900.0

_READ_SIZE = 256 * 1024

HandlerResult = Action | Sequence[Action] | None


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What a handler factory gets for each accepted milter connection."""

    #: The live sans-IO connection: ``.macros``, ``.macro(name)``, ``.negotiated``.
    connection: Connection
    #: The MTA's end of the socket, for logs ("127.0.0.1:40312", "unix").
    peer: str
    #: TCP_NODELAY as read back from the kernel (None for UNIX sockets).
    tcp_nodelay: bool | None = None


class MilterHandler(Protocol):
    """Per-connection event handler; see the module docstring for the contract."""

    async def handle(self, event: milter.Event) -> HandlerResult: ...

    async def close(self) -> None: ...


HandlerFactory = Callable[[ConnectionInfo], MilterHandler]


# ---------------------------------------------------------------------------
# Socket specifications.


@dataclass(frozen=True, slots=True)
class SocketSpec:
    """A parsed ``Socket`` value. ``host`` None means all addresses."""

    kind: Literal["inet", "inet6", "unix"]
    host: str | None = None
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"local:{self.path}"
        if self.host is None:
            return f"{self.kind}:{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}:{self.port}@{host}"


def _parse_port(text: str, spec: str) -> int:
    if text.isdigit():
        port = int(text)
        if 0 <= port <= 65535:
            return port
        raise ValueError(f"socket {spec!r}: port {port} out of range")
    if text:
        # libmilter accepts service names (getservbyname), so do we.
        try:
            return socket.getservbyname(text, "tcp")
        except OSError:
            pass
    raise ValueError(f"socket {spec!r}: bad port {text!r}")


def _parse_inet(kind: Literal["inet", "inet6"], rest: str, spec: str) -> SocketSpec:
    port_text, _, host = rest.partition("@")
    if "@" not in rest and ":" in rest:
        raise ValueError(f"socket {spec!r}: use {kind}:PORT@HOST (OpenDKIM form), not HOST:PORT")
    port = _parse_port(port_text, spec)
    if not host:
        return SocketSpec(kind, None, port)
    if host.startswith("["):
        # opendkim.conf(5): "A literal IP address must be enclosed in square brackets."
        if not host.endswith("]"):
            raise ValueError(f"socket {spec!r}: unbalanced '[' in host")
        host = host[1:-1]
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"socket {spec!r}: {host!r} is not an IP address") from None
        return SocketSpec("inet6" if address.version == 6 else kind, str(address), port)
    if ":" in host:
        # A bare IPv6 literal (inet6:PORT@ADDR).
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"socket {spec!r}: bad host {host!r}") from None
        return SocketSpec("inet6", str(address), port)
    return SocketSpec(kind, host, port)


def parse_socket_spec(spec: str) -> SocketSpec:
    """Parse an OpenDKIM ``Socket`` value; ValueError with the reason if it is bad."""
    text = spec.strip()
    if not text:
        raise ValueError("empty socket specification")
    if text.startswith("/"):
        return SocketSpec("unix", path=text)
    prefix, sep, rest = text.partition(":")
    lowered = prefix.lower()
    if sep and lowered in ("local", "unix"):
        if not rest:
            raise ValueError(f"socket {spec!r}: missing path")
        return SocketSpec("unix", path=rest)
    if sep and lowered in ("inet", "inet6"):
        return _parse_inet("inet6" if lowered == "inet6" else "inet", rest, spec)
    # "PORT@HOST" (or just "PORT") without a prefix means inet, as in OpenDKIM.
    if text.partition("@")[0].isdigit():
        return _parse_inet("inet", text, spec)
    raise ValueError(
        f"socket {spec!r}: expected inet:PORT@HOST, inet6:PORT@HOST, local:/path or /path"
    )


def _remove_stale_unix_socket(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        # Nobody listens: left over from a crash. Same as OpenDKIM's start-up check.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError:
        pass
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "socket is in use by another process", path)


def bind_socket(
    spec: SocketSpec | str,
    *,
    umask: int | None = None,
    reuse_port: bool = False,
    backlog: int = socket.SOMAXCONN,
) -> socket.socket:
    """Create, bind and listen; the socket is returned non-blocking.

    UNIX: a stale socket file (nothing accepting on it) is removed first; ``umask``
    applies while binding, so the file is created with ``0o777 & ~umask`` and never
    exists with wider permissions. TCP: SO_REUSEADDR always, SO_REUSEPORT on request
    (several worker processes on one port).
    """
    if isinstance(spec, str):
        spec = parse_socket_spec(spec)
    if spec.kind == "unix":
        _remove_stale_unix_socket(spec.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(umask) if umask is not None else None
            try:
                sock.bind(spec.path)
            finally:
                if old is not None:
                    os.umask(old)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    family = socket.AF_INET6 if spec.kind == "inet6" else socket.AF_INET
    host = spec.host
    if host is None:
        host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    infos = socket.getaddrinfo(host, spec.port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    fam, type_, proto, _, address = infos[0]
    sock = socket.socket(fam, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


# ---------------------------------------------------------------------------
# The server.


class _Client:
    """Book-keeping for one live connection (for graceful stop)."""

    __slots__ = ("busy", "connection", "idle_timer", "last_active", "task", "timed_out", "writer")

    def __init__(self, connection: Connection, writer: asyncio.StreamWriter) -> None:
        self.connection = connection
        self.writer = writer
        self.busy = True
        self.task: asyncio.Task[None] | None = asyncio.current_task()
        self.last_active = 0.0
        self.timed_out = False
        self.idle_timer: asyncio.TimerHandle | None = None

    def watch_idle(self, loop: asyncio.AbstractEventLoop, idle: float) -> None:
        """Close the connection once it has waited `idle` seconds for the MTA.

        One timer per connection, re-armed lazily when it fires early, instead of an
        asyncio.timeout() around every read: that cost a timer set-up and cancel per read,
        several times per message.
        """
        self.last_active = loop.time()
        self.idle_timer = loop.call_at(self.last_active + idle, self._check_idle, loop, idle)

    def _check_idle(self, loop: asyncio.AbstractEventLoop, idle: float) -> None:
        due = self.last_active + idle
        if self.busy or loop.time() < due:
            # Working on a message (DNS) or active since the timer was set: look again later.
            start = loop.time() if self.busy else self.last_active
            self.idle_timer = loop.call_at(start + idle, self._check_idle, loop, idle)
            return
        self.timed_out = True
        self.writer.transport.abort()

    def stop_watching(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None


@dataclass(slots=True)
class _Stats:
    connections: int = 0
    protocol_errors: int = 0
    handler_errors: int = 0
    timeouts: int = 0


_CONTINUE = milter.Continue()
_TEMPFAIL = milter.TempFail()
# Events the handler never sees (module docstring).
_NOT_DISPATCHED = (milter.OptionNegotiation, milter.Macros)


class MilterServer:
    """Serve milter connections from one or more listening sockets."""

    def __init__(
        self,
        handler_factory: HandlerFactory,
        filter_options: FilterOptions | None = None,
        *,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_packet: int = milter.DEFAULT_MAX_PACKET,
        error_action: milter.FinalAction = _TEMPFAIL,
        progress_interval: float | None = None,
    ) -> None:
        self._factory = handler_factory
        self._options = filter_options if filter_options is not None else FilterOptions()
        self._idle_timeout = idle_timeout
        self._max_packet = max_packet
        self._error_action = error_action
        self._progress_interval = progress_interval
        self._servers: list[asyncio.Server] = []
        self._unix_paths: list[str] = []
        self._clients: set[_Client] = set()
        self._stopping = False
        self._idle_deadline = 0.0  # loop time; meaningful once stopping
        self._stopped = asyncio.Event()
        self.stats = _Stats()

    @property
    def active_connections(self) -> int:
        return len(self._clients)

    async def serve(self, sock: socket.socket, *, remove_unix_socket: bool = True) -> None:
        """Accept connections on ``sock`` (from ``bind_socket``) until ``stop``.

        May be awaited for several sockets at once. With ``remove_unix_socket`` the
        UNIX socket file is removed at stop.
        """
        if self._stopping:
            raise RuntimeError("server is stopping")
        if sock.family == socket.AF_UNIX and remove_unix_socket:
            name = sock.getsockname()
            if isinstance(name, str) and name:
                self._unix_paths.append(name)
        server = await asyncio.start_server(self._client_connected, sock=sock)
        self._servers.append(server)
        await self._stopped.wait()

    async def stop(self, grace: float = 30.0, *, idle_grace: float = 0.0) -> None:
        """Stop accepting; let connections finish their current message; then close.

        Connections between messages get ``idle_grace`` seconds to start one (an SMTP
        session that has connected but not yet sent MAIL, or commands already on their
        way when the stop began) and are closed when it runs out while they are idle;
        with 0 they are closed at once. Connections inside a message are closed as soon
        as it ends (and idle_grace has run out). After ``grace`` seconds the rest are
        cancelled.
        """
        self._stopping = True
        loop = asyncio.get_running_loop()
        self._idle_deadline = loop.time() + max(0.0, idle_grace)
        for server in self._servers:
            server.close()
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
        for client in list(self._clients):
            if idle_grace > 0:
                loop.call_later(idle_grace, self._close_if_idle, client)
            else:
                self._close_if_idle(client)
        tasks = {c.task for c in self._clients if c.task is not None}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "stop: cancelled %d milter connection(s) after %.1fs", len(pending), grace
                )
                await asyncio.wait(pending)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._stopped.set()

    @staticmethod
    def _close_if_idle(client: _Client) -> None:
        if not client.busy and not client.connection.in_message:
            client.writer.close()

    # -- per connection -----------------------------------------------------

    async def _client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = Connection(self._options, max_packet=self._max_packet)
        client = _Client(connection, writer)
        if self._stopping:
            writer.close()
            return
        self._clients.add(client)
        self.stats.connections += 1
        peer = _peer_name(writer)
        nodelay = _set_nodelay(writer)
        handler: MilterHandler | None = None
        try:
            handler = self._factory(ConnectionInfo(connection, peer, nodelay))
            await self._pump(client, reader, writer, handler, peer)
        except milter.RemoteProtocolError as exc:
            self.stats.protocol_errors += 1
            log.warning("milter connection from %s: protocol error: %s; closing", peer, exc)
        except TimeoutError:
            self.stats.timeouts += 1
            log.info("milter connection from %s: idle for %ss; closing", peer, self._idle_timeout)
        except (ConnectionError, OSError) as exc:
            log.info("milter connection from %s: %s", peer, exc)
        except asyncio.CancelledError:
            log.info("milter connection from %s: cancelled", peer)
            raise
        except Exception:
            log.exception("milter connection from %s: internal error; closing", peer)
        finally:
            client.stop_watching()
            self._clients.discard(client)
            if handler is not None:
                try:
                    await handler.close()
                except Exception:
                    log.exception("milter connection from %s: handler close failed", peer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _pump(
        self,
        client: _Client,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: MilterHandler,
        peer: str,
    ) -> None:
        conn = client.connection
        transport = writer.transport
        loop = asyncio.get_running_loop()
        if self._idle_timeout is not None:
            client.watch_idle(loop, self._idle_timeout)
        while True:
            event = conn.next_event()
            if event is milter.NEED_DATA:
                # Past stop()'s idle deadline, an idle connection ends here; before it,
                # stop() closes the connection at the deadline if it is still idle.
                if (
                    self._stopping
                    and not conn.in_message
                    and self._idle_deadline - loop.time() <= 0
                ):
                    return
                client.busy = False
                try:
                    data = await reader.read(_READ_SIZE)
                except (ConnectionError, OSError):
                    if client.timed_out:
                        raise TimeoutError from None
                    raise
                if client.timed_out:
                    raise TimeoutError
                client.busy = True
                client.last_active = loop.time()
                conn.receive_data(data)
                continue
            if isinstance(event, milter.ConnectionClosed):
                return
            if isinstance(event, _NOT_DISPATCHED):
                out = conn.send(_CONTINUE)
            else:
                out = await self._dispatch(conn, handler, event, writer, peer)
            if out:
                writer.write(out)
                if transport.get_write_buffer_size():
                    await writer.drain()
            if isinstance(event, milter.Quit):
                return

    async def _dispatch(
        self,
        conn: Connection,
        handler: MilterHandler,
        event: milter.Event,
        writer: asyncio.StreamWriter,
        peer: str,
    ) -> bytes:
        try:
            if self._progress_interval is not None and isinstance(event, milter.EndOfMessage):
                result = await self._with_progress(conn, handler, event, writer)
            else:
                result = await handler.handle(event)
            if result is None:
                return conn.send(_CONTINUE)
            if isinstance(result, Action):
                if isinstance(result, milter.FinalAction):
                    return conn.send(result)
                return conn.send_many([result])
            return conn.send_many(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.handler_errors += 1
            log.exception(
                "milter connection from %s: handler failed on %s", peer, type(event).__name__
            )
            return self._fallback(conn)

    def _fallback(self, conn: Connection) -> bytes:
        if not conn.reply_expected:
            return conn.send(_CONTINUE)
        try:
            return conn.send(self._error_action)
        except milter.LocalProtocolError:
            return conn.send(_TEMPFAIL)

    async def _with_progress(
        self,
        conn: Connection,
        handler: MilterHandler,
        event: milter.Event,
        writer: asyncio.StreamWriter,
    ) -> HandlerResult:
        interval = self._progress_interval
        assert interval is not None
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle

        def progress() -> None:
            # SMFIR_PROGRESS: Postfix keeps waiting and restarts its read timer
            # (milter8.c milter8_event: "Still working on it").
            nonlocal timer
            if not writer.is_closing():
                writer.write(conn.send(milter.Progress()))
            timer = loop.call_later(interval, progress)

        # A timer rather than a task per message: most messages finish long before the
        # first progress packet would be due, and a task + wait() cost more than the rest
        # of the end-of-message work for a verified message.
        timer = loop.call_later(interval, progress)
        try:
            return await handler.handle(event)
        finally:
            timer.cancel()


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return "unix" if not peer else str(peer)


def _set_nodelay(writer: asyncio.StreamWriter) -> bool | None:
    # Milter is strictly request/response with small packets: Nagle would delay every
    # reply by up to an ACK round trip. (asyncio sets it too; we make sure and report.)
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    except OSError:
        return False
