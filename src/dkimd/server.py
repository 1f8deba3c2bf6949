"""The asyncio edge: listening sockets and one task per milter connection.

This is the only place milter bytes meet a socket. Each connection task pumps bytes
between an asyncio stream and a sans-IO ``dkimd.milter.Connection`` and calls the
handler once per event (the httpcore model: a thin async loop around a sans-IO core).

Pieces:

* ``MilterServer(handler_factory, filter_options, ...)`` with ``serve(sock)`` (a socket
  from ``dkimd.sockets.bind_socket``) and ``stop(grace)``.

The handler contract (``MilterHandler``, ``ConnectionInfo``, ``Request``, ``Prefetch``)
is ``dkimd.milter.handler``: a synchronous handler returns actions or a request for
outside work; the server performs the request (answered inline when it can be, else in a
task while reading from the MTA is paused, bounded by the request's timeout) and hands
the answer back with ``handler.provide``. With ``progress_interval`` set, the server
sends SMFIR_PROGRESS while end-of-message waits, so long key lookups do not hit
Postfix's ``milter_content_timeout``.

Failure policy: a handler exception (or an invalid reply) is logged with its traceback
and answered with ``error_action`` (``TempFail()`` by default); the connection keeps
serving. A request that raises or times out is answered with ``request.failed(error)``.
A protocol error from the MTA (bad framing, oversized packet, command out of
order) or an idle timeout closes that connection only, with one log line on the
``dkimd.milter`` logger; Postfix then applies its ``milter_default_action``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from dkimd import metrics, milter
from dkimd.milter import Action, FilterOptions
from dkimd.milter.handler import (
    ConnectionInfo,
    HandlerFactory,
    HandlerResult,
    MilterHandler,
    Prefetch,
    Request,
    Step,
)
from dkimd.milter_trace import connection_factory

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "MilterServer",
    "perform_request",
]

log = logging.getLogger("dkimd.milter")

#: Seconds a milter connection may stay silent. Postfix keeps its milter connection for
#: the whole SMTP session, and an SMTP client may idle up to smtpd_timeout (300 s) per
#: command, so this must be well above that.
DEFAULT_IDLE_TIMEOUT = 900.0

_A = TypeVar("_A")

_READ_SIZE = 256 * 1024  # what asyncio reads at most per call by default

# ---------------------------------------------------------------------------
# The server.


@dataclass(slots=True)
class _Stats:
    connections: int = 0
    protocol_errors: int = 0
    handler_errors: int = 0
    timeouts: int = 0


_CONTINUE = milter.Continue()
_TEMPFAIL = milter.TempFail()
# Events the handler never sees (module docstring). Event classes are final, so an
# exact type test is enough (and cheaper than isinstance per packet).
_NOT_DISPATCHED: frozenset[type] = frozenset({milter.OptionNegotiation})
_NEED_DATA = milter.NEED_DATA
_Quit = milter.Quit
_ConnectionClosed = milter.ConnectionClosed
_EndOfMessage = milter.EndOfMessage
# Events after which a message's prefetched work is no longer wanted (once replied to).
_MESSAGE_ENDS: frozenset[type] = frozenset(
    {milter.EndOfMessage, milter.Abort, milter.QuitNewConnection, milter.MailFrom}
)
# What _answer_now returns when the answer needs waiting for.
_PENDING: Any = object()


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
        milter_debug: int = 0,
    ) -> None:
        self._factory = handler_factory
        self._new_connection = connection_factory(milter_debug)  # MilterDebug's trace
        self._options = filter_options if filter_options is not None else FilterOptions()
        self._idle_timeout = idle_timeout
        self._max_packet = max_packet
        self._error_action = error_action
        self._progress_interval = progress_interval
        self._servers: list[asyncio.Server] = []
        self._unix_paths: list[str] = []
        self._clients: set[_MilterProtocol] = set()
        self._stopping = False
        self._idle_deadline = 0.0  # loop time; meaningful once stopping
        self._all_closed: asyncio.Future[None] | None = None  # set while stop() waits
        self._stopped = asyncio.Event()
        # Every connection reads into this, then copies out (see _MilterProtocol).
        self._recv_buffer = memoryview(bytearray(_READ_SIZE))
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
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _MilterProtocol(self, loop), sock=sock)
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
                loop.call_later(idle_grace, client.close_if_idle)
            else:
                client.close_if_idle()
        if self._clients:
            all_closed = self._all_closed = loop.create_future()
            done, _ = await asyncio.wait({all_closed}, timeout=grace)
            if not done:
                pending = list(self._clients)
                for client in pending:
                    client.cancel()
                log.warning(
                    "stop: cancelled %d milter connection(s) after %.1fs", len(pending), grace
                )
                await asyncio.wait({all_closed})
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._stopped.set()

    def _forget(self, client: _MilterProtocol) -> None:
        self._clients.discard(client)
        waiter = self._all_closed
        if not self._clients and waiter is not None and not waiter.done():
            waiter.set_result(None)


async def perform_request(request: Request[_A]) -> _A:
    """The answer to ``request``: what it performs, within its timeout, or its ``failed``."""
    try:
        async with asyncio.timeout(request.timeout):
            return await request.perform()
    except TimeoutError as exc:
        log.warning("%r: no answer within %.1fs", request, request.timeout)
        return request.failed(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("%r failed", request, exc_info=exc)
        return request.failed(exc)


class _MilterProtocol(asyncio.BufferedProtocol):
    """One milter connection: bytes in through ``buffer_updated``, replies out.

    A BufferedProtocol so that the transport receives into one buffer shared by all
    connections of the server (``MilterServer._recv_buffer``): with ``data_received``
    asyncio allocates a fresh 256 KiB bytes object per read and shrinks it, which is an
    mmap + mremap + munmap (and page faults) for every read, several per message. The
    bytes are copied out at once, so sharing the buffer is safe.

    Events are processed synchronously as the bytes arrive; replies for one batch of
    bytes go out in one write. A request the handler returns is answered inline when it
    can be; otherwise it is performed in a task while reading is paused, so replies stay
    in order; when the answer is in, ``provide`` gives the reply, it is written and
    processing resumes with whatever the MTA had already sent. Prefetched requests run
    in tasks of their own meanwhile, until asked for or the message ends.
    """

    __slots__ = (
        "_closing",
        "_conn",
        "_done",
        "_event",
        "_handler",
        "_idle_timer",
        "_last_active",
        "_loop",
        "_lost",
        "_peer",
        "_prefetched",
        "_progress_timer",
        "_server",
        "_task",
        "_transport",
        "_write_paused",
    )

    def __init__(self, server: MilterServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._conn = server._new_connection(server._options, server._max_packet)
        self._transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self._handler: MilterHandler | None = None
        self._peer = "?"
        self._task: asyncio.Task[Any] | None = None  # the request the handler waits for
        self._event: milter.Event | None = None  # the event _task's answer leads to a reply to
        # Requests started ahead (Prefetch), until asked for or the message ends.
        self._prefetched: dict[Request[Any], asyncio.Task[Any]] = {}
        self._closing = False  # transport.close()/abort() called
        self._lost = False  # connection_lost() seen
        self._done = False  # handler closed (or never made), server told
        self._write_paused = False
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._progress_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's is not an asyncio.Transport subclass, hence a cast.
        self._transport = cast(asyncio.Transport, transport)
        transport = self._transport
        server = self._server
        if server._stopping:
            self._done = True
            self._closing = True
            transport.close()
            return
        server._clients.add(self)
        server.stats.connections += 1
        metrics.recorder.connection_opened()
        self._peer = peer = _peer_name(transport)
        nodelay = _set_nodelay(transport)
        try:
            self._handler = server._factory(ConnectionInfo(self._conn, peer, nodelay))
        except Exception:
            log.exception("milter connection from %s: internal error; closing", peer)
            self._close()
            return
        if server._idle_timeout is not None:
            self._last_active = now = self._loop.time()
            self._idle_timer = self._loop.call_at(now + server._idle_timeout, self._check_idle)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._server._recv_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing:
            return
        self._last_active = self._loop.time()
        self._conn.receive_data(self._server._recv_buffer[:nbytes].tobytes())
        if self._task is None and not self._write_paused:
            self._process()

    def eof_received(self) -> bool:
        if not self._closing:
            self._conn.receive_data(b"")
            if self._task is None and not self._write_paused:
                self._process()
        return True  # we close the transport ourselves, once replies are out

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._closing = True
        if exc is not None:
            log.info("milter connection from %s: %s", self._peer, exc)
        if self._task is None:
            self._finish()
        else:
            # Nobody is left to answer: stop waiting; _resumed then finishes.
            self._task.cancel()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._task is None and not self._closing:
            self._transport.resume_reading()
            self._process()

    # -- for MilterServer.stop() ------------------------------------------------

    def close_if_idle(self) -> None:
        if self._task is None and not self._closing and not self._conn.in_message:
            self._close()

    def cancel(self) -> None:
        log.info("milter connection from %s: cancelled", self._peer)
        self._closing = True
        self._transport.abort()
        self._drop_prefetched()
        if self._task is not None:
            self._task.cancel()

    # -- the work -----------------------------------------------------------------

    def _process(self) -> None:
        """Handle every complete event buffered, write the replies in one go."""
        conn = self._conn
        out: list[bytes] = []
        close = False
        try:
            while True:
                event = conn.next_event()
                if event is _NEED_DATA:
                    server = self._server
                    # Past stop()'s idle deadline, an idle connection ends here; before
                    # it, stop() closes the connection at the deadline if still idle.
                    if (
                        server._stopping
                        and not conn.in_message
                        and server._idle_deadline - self._loop.time() <= 0
                    ):
                        close = True
                    break
                kind = type(event)
                if kind in _NOT_DISPATCHED:
                    out.append(conn.send(_CONTINUE))
                    continue
                if kind is _ConnectionClosed:
                    close = True
                    break
                reply = self._dispatch(event)
                if reply is None:  # waiting for a request: the task writes the reply
                    break
                if reply:
                    out.append(reply)
                if self._prefetched and kind in _MESSAGE_ENDS:
                    self._drop_prefetched()
                if kind is _Quit:
                    close = True
                    break
        except milter.RemoteProtocolError as exc:
            self._server.stats.protocol_errors += 1
            log.warning("milter connection from %s: protocol error: %s; closing", self._peer, exc)
            close = True
        except asyncio.CancelledError:
            log.info("milter connection from %s: cancelled", self._peer)
            close = True
        except Exception:
            log.exception("milter connection from %s: internal error; closing", self._peer)
            close = True
        if out:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            self._close()

    def _dispatch(self, event: milter.Event) -> bytes | None:
        """The reply to one event, or None while the handler waits for a request."""
        handler = self._handler
        assert handler is not None
        try:
            step = handler.handle(event)
        except Exception as exc:
            return self._handler_failed(event, exc)
        if step is None:  # the usual answer, to all but end of message
            return self._conn.send(_CONTINUE)
        return self._advance(event, step)

    def _advance(self, event: milter.Event, step: Step) -> bytes | None:
        """Follow the handler's steps for ``event`` until a reply, or a request to wait for."""
        handler = self._handler
        assert handler is not None
        while isinstance(step, Request):
            answer = self._answer_now(step)
            if answer is _PENDING:
                self._wait_for(event, step)
                return None
            try:
                step = handler.provide(answer)
            except Exception as exc:
                return self._handler_failed(event, exc)
        if isinstance(step, Prefetch):
            request = step.request
            if request not in self._prefetched and request.answer_now() is None:
                self._prefetched[request] = self._loop.create_task(perform_request(request))
            step = None
        return self._encode(event, step)

    def _answer_now(self, request: Request[Any]) -> Any:
        """The answer if it needs no waiting (prefetched and done, or known now), else _PENDING."""
        task = self._prefetched.get(request)
        if task is not None and task.done() and not task.cancelled():
            del self._prefetched[request]
            return task.result()  # perform_request raises only if request.failed does
        known = request.answer_now()
        if known is None:
            return _PENDING
        if task is not None:
            del self._prefetched[request]
            task.cancel()
        return known

    def _wait_for(self, event: milter.Event, request: Request[Any]) -> None:
        self._transport.pause_reading()
        self._event = event
        task = self._prefetched.pop(request, None)
        if task is None or task.cancelled():
            task = self._loop.create_task(perform_request(request))
        self._task = task
        task.add_done_callback(self._resumed)
        interval = self._server._progress_interval
        if interval is not None and type(event) is _EndOfMessage:
            # SMFIR_PROGRESS while the request runs, so a slow key lookup does not hit
            # Postfix's milter_content_timeout.
            self._progress_timer = self._loop.call_later(interval, self._progress, interval)

    def _drop_prefetched(self) -> None:
        for task in self._prefetched.values():
            task.cancel()
        self._prefetched.clear()

    def _encode(self, event: milter.Event, result: HandlerResult) -> bytes:
        conn = self._conn
        try:
            if result is None:
                return conn.send(_CONTINUE)
            if isinstance(result, Action):
                if isinstance(result, milter.FinalAction):
                    return conn.send(result)
                return conn.send_many([result])
            return conn.send_many(result)
        except Exception as exc:  # an invalid reply
            return self._handler_failed(event, exc)

    def _handler_failed(self, event: milter.Event, exc: BaseException) -> bytes:
        server = self._server
        server.stats.handler_errors += 1
        log.error(
            "milter connection from %s: handler failed on %s",
            self._peer,
            type(event).__name__,
            exc_info=exc,
        )
        conn = self._conn
        if not conn.reply_expected:
            return conn.send(_CONTINUE)
        try:
            return conn.send(server._error_action)
        except milter.LocalProtocolError:
            return conn.send(_TEMPFAIL)

    def _progress(self, interval: float) -> None:
        # Postfix keeps waiting and restarts its read timer (milter8.c milter8_event:
        # "Still working on it").
        if self._task is None or self._closing:
            return
        self._transport.write(self._conn.send(milter.Progress()))
        self._progress_timer = self._loop.call_later(interval, self._progress, interval)

    def _resumed(self, task: asyncio.Task[Any]) -> None:
        """The request the handler waited for is answered: its reply, then read on."""
        self._task = None
        event = self._event
        self._event = None
        assert event is not None
        if self._progress_timer is not None:
            self._progress_timer.cancel()
            self._progress_timer = None
        if task.cancelled():
            if not self._closing:
                log.info("milter connection from %s: cancelled", self._peer)
                self._close()
        else:
            failure = task.exception()
            if failure is not None:  # the request's own failed() raised
                reply = self._handler_failed(event, failure)
            else:
                handler = self._handler
                assert handler is not None
                try:
                    step = handler.provide(task.result())
                except Exception as exc:
                    reply = self._handler_failed(event, exc)
                else:
                    next_reply = self._advance(event, step)
                    if next_reply is None:  # another request to wait for
                        return
                    reply = next_reply
            if reply and not self._closing:
                self._transport.write(reply)
        if self._prefetched and type(event) in _MESSAGE_ENDS:
            self._drop_prefetched()
        if self._lost:
            self._finish()
        elif not self._closing and not self._write_paused:
            self._transport.resume_reading()
            self._process()

    def _check_idle(self) -> None:
        """Close the connection once it has waited ``idle_timeout`` seconds for the MTA.

        One timer per connection, re-armed when it fires early, instead of a timeout
        around every read: that cost a timer set-up and cancel per read, several times
        per message.
        """
        self._idle_timer = None
        if self._closing:
            return
        idle = self._server._idle_timeout
        assert idle is not None
        now = self._loop.time()
        if self._task is not None or now < self._last_active + idle:
            # Working on a message (DNS) or active since the timer was set: look again.
            start = now if self._task is not None else self._last_active
            self._idle_timer = self._loop.call_at(start + idle, self._check_idle)
            return
        self._server.stats.timeouts += 1
        log.info("milter connection from %s: idle for %ss; closing", self._peer, idle)
        self._closing = True
        self._transport.abort()

    def _close(self) -> None:
        if not self._closing:
            self._closing = True
            self._transport.close()  # flushes what is buffered; connection_lost follows

    def _finish(self) -> None:
        """The connection is gone and no handler call runs: close the handler, once."""
        if self._done:
            return
        self._done = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._drop_prefetched()
        metrics.recorder.connection_closed()
        handler = self._handler
        if handler is not None:
            try:
                handler.close()
            except Exception:
                log.exception("milter connection from %s: handler close failed", self._peer)
        self._server._forget(self)


def _peer_name(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return "unix" if not peer else str(peer)


def _set_nodelay(transport: asyncio.BaseTransport) -> bool | None:
    # Milter is strictly request/response with small packets: Nagle would delay every
    # reply by up to an ACK round trip. (asyncio sets it too; we make sure and report.)
    # An IP peer is a tuple (a UNIX one a path); socket.family would build an enum.
    if not isinstance(transport.get_extra_info("peername"), tuple):
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
            return True  # the usual case: the transport has set it already
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    except OSError:
        return False
