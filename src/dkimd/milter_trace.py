"""MilterDebug: a trace of the milter protocol in the log, at the level the option gives.

opendkim passes MilterDebug to libmilter (`smfi_setdbg`), whose debug output is a trace
of the protocol ("highest meaningful value is 6"). dkimd's milter code is its own, so the
levels are dkimd's, each adding to the one below:

* 0 (the default): nothing;
* 1: each connection: the MTA's option offer, what was agreed, the end of the connection;
* 2: every command from the MTA and every reply to it, by name and size;
* 3: also their contents, each cut to 200 characters;
* 4 and above: the contents whole (headers and body chunks included: for debugging only).

Like opendkim, the level is read at start and not on reload. At 0 the milter connection
is the plain `Connection`, so the option costs nothing when unused.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Literal

from dkimd.log import get_logger
from dkimd.milter import Connection, FilterOptions
from dkimd.milter import actions as act
from dkimd.milter import events as ev
from dkimd.milter.connection import NeedData

__all__ = ["TracingConnection", "connection_factory"]

log = get_logger("milter.trace")

CUT = 200  # characters of an event or reply shown at level 3


class TracingConnection(Connection):
    """A `Connection` that logs what passes through it."""

    def __init__(
        self,
        options: FilterOptions | None = None,
        *,
        max_packet: int,
        level: int,
        label: str,
    ) -> None:
        super().__init__(options, max_packet=max_packet)
        self.trace_level = level
        self.label = label
        self._agreement_logged = False

    def _show(self, thing: object) -> str:
        text = repr(thing)
        if self.trace_level < 4 and len(text) > CUT:
            return f"{text[:CUT]}... ({len(text)} characters)"
        return text

    def next_event(self) -> ev.Event | Literal[NeedData.NEED_DATA]:
        event = super().next_event()
        if event is NeedData.NEED_DATA:
            return event
        level = self.trace_level
        if isinstance(event, ev.OptionNegotiation | ev.ConnectionClosed) or level >= 3:
            log.info("%s: MTA: %s", self.label, self._show(event))
        elif level >= 2:
            log.info("%s: MTA: %s", self.label, type(event).__name__)
        return event

    def send(self, action: act.Action) -> bytes:
        data = super().send(action)
        self._sent([action], data)
        return data

    def send_many(self, actions: Iterable[act.Action]) -> bytes:
        items = list(actions)
        data = super().send_many(items)
        self._sent(items, data)
        return data

    def _sent(self, actions: list[act.Action], data: bytes) -> None:
        level = self.trace_level
        negotiated = self.negotiated
        if negotiated is not None and not self._agreement_logged:
            self._agreement_logged = True
            log.info("%s: agreed: %s", self.label, negotiated)
        if level < 2:
            return
        shown = (
            ", ".join(self._show(a) for a in actions)
            if level >= 3
            else ", ".join(type(a).__name__ for a in actions)
        )
        log.info("%s: filter: %s (%d bytes)", self.label, shown, len(data))


def connection_factory(level: int) -> Callable[[FilterOptions, int], Connection]:
    """How the server makes each connection's `Connection`: traced when `level` > 0."""
    if level <= 0:
        return lambda options, max_packet: Connection(options, max_packet=max_packet)
    numbers = itertools.count(1)

    def make(options: FilterOptions, max_packet: int) -> Connection:
        return TracingConnection(
            options, max_packet=max_packet, level=level, label=f"milter #{next(numbers)}"
        )

    return make
