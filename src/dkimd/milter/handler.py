"""The contract between the milter server (the asyncio edge) and a per-connection handler.

It lives beside the protocol it speaks (events in, actions out) rather than in the server,
so that a handler (``dkimd.session``) depends on the milter package only, never on asyncio
or on the server, and a test drives a handler exactly as the server does. Pure: nothing
here awaits.

One handler per milter connection, made by a ``HandlerFactory`` from a ``ConnectionInfo``::

    class Handler:
        def handle(self, event: milter.Event) -> Step: ...
        def provide(self, answer: object) -> Step: ...
        def close(self) -> None: ...

``handle`` is called for every event except ``OptionNegotiation`` (answered by the
``Connection`` from the filter options), macros (read them from
``info.connection.macro(name)`` instead) and the end of the connection (``close`` is
called exactly once, however the connection ends). A ``Step`` is one of:

* ``None``: ``Continue()`` (or nothing, where the MTA expects no reply);
* one ``Action``: the reply to this event;
* a sequence of actions: at ``EndOfMessage``, modifications followed by the final action;
* a ``Request``: outside work (key records today; table rows or a Lua call tomorrow) the
  handler needs before it can answer this event. The server performs it, bounded by the
  request's ``timeout``, and hands the answer back with ``provide(answer)``, which
  returns a ``Step`` again (so one event may need several requests in turn). While a
  request is pending the server reads nothing more from the MTA, so replies stay in
  order;
* a ``Prefetch``: start this request now without waiting, and reply as to ``None``. The
  handler returns the same request object later (at end of message) when it needs the
  answer; by then the work has overlapped the body transfer. A prefetch not asked for
  is dropped at the end of the message (end-of-message reply, abort) and at close.

Failure is never a crash or lost mail: a request that raises or runs out of time is
answered with ``request.failed(error)`` (for key lookups, a temporary DNS error), and a
handler that raises, or returns an action the negotiated options do not allow, gets the
server's error action for that event and the connection keeps serving.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .actions import Action
from .connection import Connection
from .events import Event

__all__ = [
    "ConnectionInfo",
    "HandlerFactory",
    "HandlerResult",
    "MilterHandler",
    "Prefetch",
    "Request",
    "Step",
]

HandlerResult = Action | Sequence[Action] | None

_A = TypeVar("_A")


class Request(abc.ABC, Generic[_A]):
    """Outside work a handler needs, as a value: the handler builds it, the server runs it.

    The handler never awaits: ``perform`` is built from whatever the runtime holds (a
    resolver, a database pool), and only the server calls it.
    """

    __slots__ = ()

    #: Seconds the server waits for ``perform`` at most; then ``failed(TimeoutError())``.
    timeout: float

    def answer_now(self) -> _A | None:
        """The answer if it is known without awaiting (a cache that has it all), else None.

        The server asks this first, so the usual case needs no task and no trip through
        the event loop.
        """
        return None

    @abc.abstractmethod
    def perform(self) -> Awaitable[_A]:
        """Do the work (awaited by the server only)."""

    @abc.abstractmethod
    def failed(self, error: BaseException) -> _A:
        """The answer to hand over when ``perform`` raised ``error`` or timed out."""


@dataclass(frozen=True, slots=True)
class Prefetch:
    """Start ``request`` now, reply to this event as to ``None``; asked for again later."""

    request: Request[Any]


Step = HandlerResult | Request[Any] | Prefetch


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

    def handle(self, event: Event) -> Step: ...

    def provide(self, answer: Any) -> Step: ...

    def close(self) -> None: ...


HandlerFactory = Callable[[ConnectionInfo], MilterHandler]
