"""The sans-IO milter connection: bytes in, events out; actions in, bytes out.

Usage (the asyncio loop in ``dkimd.server`` does exactly this)::

    conn = Connection(FilterOptions(...))
    conn.receive_data(data)            # b"" means end of stream
    while (event := conn.next_event()) is not NEED_DATA:
        ...                            # decide
        out = conn.send(Continue())    # bytes to write (maybe b"")

Rules:

* Option negotiation is done here: the first event is ``OptionNegotiation`` (the MTA's
  offer); answer it with ``send(Continue())``, which encodes the negotiated reply
  (``conn.negotiated``).
* After an event the MTA waits for (``conn.reply_expected``), send exactly one final
  action (``Continue``, ``Accept``, ``Reject``, ``TempFail``, ``Discard``,
  ``ReplyCode``, ``Skip``) before asking for the next event; ``Progress`` may come
  first, any number of times. At ``EndOfMessage``, modifications come before the final
  action (``send_many([...mods, Continue()])``).
* Replying is always allowed: after an event the MTA does not wait for (abort, quit,
  and the stages whose SMFIP_NR_* flag was negotiated), ``send(Continue())``
  returns ``b""``. Any other action there is a ``LocalProtocolError``, because the MTA
  would read it as the answer to a later command.
* Macros (SMFIC_MACRO) are kept per stage and merged: ``conn.macros`` (``"i"``,
  ``"j"``, ``"{auth_authen}"``, ``"{daemon_name}"``...) and ``conn.macro(name)``, which
  also finds ``{i}`` when asked for ``i`` and vice versa. Message-stage macros (mail,
  rcpt, data, header, eoh, body, eom) are dropped when the message ends (final reply to
  ``EndOfMessage``), on ``Abort`` and on a HELO inside a transaction; all of them on
  ``QuitNewConnection``.
  A macro packet gives no event: it is only checked for structure when it arrives (a
  malformed one fails the connection there) and decoded when ``macros``/``macro``/
  ``stage_macros`` first need it. Postfix sends a dozen macro packets per message,
  mostly repeats, and reads of a few names at most; decoding each one into an event
  cost more than the rest of the packet handling.
* Several messages per connection; ``Abort`` ends the message, not the connection.
* Any ``RemoteProtocolError`` (framing, payload, order; see ``state.py``) leaves the
  connection unusable: every later ``next_event`` raises again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final, Literal, TypeAlias, cast

from . import actions as act
from . import events as ev
from .codec import (
    DECODERS,
    FrameReader,
    decode,
    decode_header,
    encode_action,
    macro_stage,
    macro_values,
)
from .codec import encode_optneg_reply as _encode_optneg_reply
from .constants import DEFAULT_MAX_PACKET, Command, ProtocolFlag
from .errors import (
    LocalProtocolError,
    MalformedPacket,
    RemoteProtocolError,
    UnexpectedCommand,
)
from .options import FilterOptions, Negotiated, negotiate
from .state import IN_MESSAGE, State, transitions

__all__ = ["NEED_DATA", "Connection", "NeedData"]


class NeedData(enum.Enum):
    """Sentinel type: ``next_event`` needs more bytes."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA

C = Command

# Macro stages in the order they are merged (later ones win on a name clash). Plain ints,
# not Command members: the stages key dicts that are searched on every macro lookup, and
# hashing an IntEnum member goes through a Python-level slot (3x an int's cost).
_STAGE_ORDER: Final[tuple[int, ...]] = tuple(
    int(c)
    for c in (
        *(C.CONNECT, C.HELO, C.UNKNOWN),
        *(C.MAIL, C.RCPT, C.DATA, C.HEADER, C.EOH, C.BODY, C.BODYEOB),
    )
)
_ORDERED: Final = frozenset(_STAGE_ORDER)
_STAGE_PRECEDENCE: Final = _STAGE_ORDER[::-1]
_MESSAGE_STAGES: Final[frozenset[int]] = frozenset(
    int(c) for c in (C.MAIL, C.RCPT, C.DATA, C.HEADER, C.EOH, C.BODY, C.BODYEOB)
)
# Postfix ignores DISCARD for connect and helo (milter8.c "DISCARD action is not
# allowed for connect or helo"); refuse it so the mistake shows.
_NO_DISCARD: Final = frozenset({C.CONNECT, C.HELO})


_HEADER: Final = int(C.HEADER)
_MACRO: Final = int(C.MACRO)
_OPTNEG: Final = int(C.OPTNEG)
_ABORT: Final = int(C.ABORT)
_HELO: Final = int(C.HELO)
_QUIT_NC: Final = int(C.QUIT_NC)
_BODYEOB: Final = int(C.BODYEOB)
_OPTNEG_ONLY: Final = frozenset({_OPTNEG})
_CONTINUE_PACKET: Final = encode_action(act.Continue())


class Agreement:
    """One negotiation outcome with what follows from it, computed once per MTA offer.

    Working it out (flag arithmetic, the reply packet, the state table) costs more than
    the rest of a connection's packets together, and every connection from one MTA makes
    the same offer: ``FilterOptions.agreements`` keeps them, at most ``_AGREEMENTS_KEPT``.
    bench/instructions.py sign: 8,111,331 instructions per message with it, 8,365,005
    (+3.1%) when every connection negotiates afresh.
    """

    __slots__ = ("actions", "expects", "leading_space", "negotiated", "reply", "rows")

    def __init__(self, negotiated: Negotiated) -> None:
        self.negotiated = negotiated
        n = negotiated
        self.reply = _encode_optneg_reply(n.version, n.actions, n.protocol, n.macros)
        # Commands the MTA waits for a reply to.
        self.expects = frozenset(int(c) for c in DECODERS if n.expects_reply(c))
        self.leading_space = n.leading_space
        self.actions = int(n.actions)
        self.rows = _linked_rows(n.protocol)


# A state's row of the transition table: command -> (next state, the next state's row).
_Row: TypeAlias = "dict[int, tuple[State, _Row]]"


def _linked_rows(protocol: ProtocolFlag) -> dict[State, _Row]:
    """``transitions(protocol)`` as plain dicts, one row per state, each move carrying the
    row it leads to: a packet costs one int-keyed lookup. Looking the row up by State
    hashes an Enum member (a Python-level call) per packet: bench/instructions.py counts
    2,475,371 instructions per verified message that way, 2,451,715 with these rows."""
    table = transitions(protocol)
    rows: dict[State, _Row] = {state: {} for state in State}
    for state, moves in table.items():
        rows[state].update({command: (nxt, rows[nxt]) for command, nxt in moves.items()})
    return rows


_INITIAL_ROWS: Final = _linked_rows(ProtocolFlag.NONE)

# Distinct offers remembered per FilterOptions: one MTA makes one offer; a few MTAs with
# different milter_protocol settings make a few.
_AGREEMENTS_KEPT: Final = 16


def _raw_name(name: str) -> bytes:
    """``name`` + NUL as it would appear in a macro packet; b"" if it cannot be encoded
    (a lone surrogate, which no decoded packet holds), and then every stage is searched."""
    try:
        return name.encode("utf-8", "surrogateescape") + b"\0"
    except UnicodeEncodeError:
        return b""


def _name(command: int) -> str:
    try:
        return f"SMFIC_{Command(command).name}"
    except ValueError:
        return f"command 0x{command:02x}"


class Connection:
    """One milter connection, from option negotiation to quit. Not thread-safe."""

    __slots__ = (
        "_actions",
        "_broken",
        "_decoded",
        "_eof",
        "_expects",
        "_leading_space",
        "_merged",
        "_negotiated",
        "_options",
        "_optneg_reply",
        "_order",
        "_owed",
        "_raw_macros",
        "_reader",
        "_replyable",
        "_row",
        "_state",
    )

    def __init__(
        self,
        options: FilterOptions | None = None,
        *,
        max_packet: int = DEFAULT_MAX_PACKET,
    ) -> None:
        self._options = options if options is not None else FilterOptions()
        self._reader = FrameReader(max_packet)
        self._state = State.NEGOTIATE
        self._row = _INITIAL_ROWS[State.NEGOTIATE]
        self._negotiated: Negotiated | None = None
        self._optneg_reply = b""
        self._leading_space = True
        self._actions = 0  # the negotiated ActionFlag, as an int
        # Per stage, the last macro payload (arrival order, which orders the merge of
        # stages outside _STAGE_ORDER) and, once read, its decoded values.
        self._raw_macros: dict[int, bytes] = {}
        self._decoded: dict[int, dict[str, str]] = {}
        self._order: list[int] | None = None  # _precedence(), until a stage comes or goes
        self._merged: Mapping[str, str] | None = None
        self._eof = False
        self._broken: RemoteProtocolError | None = None
        self._owed: int | None = None  # command whose reply the MTA waits for
        self._replyable: int | None = None  # last event, until replied to
        # Commands the MTA waits for a reply to (before negotiation: only OPTNEG).
        self._expects: frozenset[int] = _OPTNEG_ONLY

    # -- inspection ---------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def options(self) -> FilterOptions:
        return self._options

    @property
    def negotiated(self) -> Negotiated | None:
        """The negotiation outcome, once ``OptionNegotiation`` has been received."""
        return self._negotiated

    @property
    def in_message(self) -> bool:
        """Whether a message transaction is open (between MAIL and end/abort)."""
        return self._state in IN_MESSAGE or (
            self._replyable == C.BODYEOB and self._owed is not None
        )

    @property
    def reply_expected(self) -> bool:
        """Whether the MTA is waiting for a reply to the last event."""
        return self._owed is not None

    @property
    def macros(self) -> Mapping[str, str]:
        """All current macro values, merged across stages (read-only)."""
        if self._merged is None:
            merged: dict[str, str] = {}
            raw = self._raw_macros
            for stage in _STAGE_ORDER:
                if stage in raw:
                    merged.update(self._stage_values(stage))
            for stage in raw:
                if stage not in _ORDERED:
                    merged.update(self._stage_values(stage))
            self._merged = MappingProxyType(merged)
        return self._merged

    def macro(self, name: str) -> str | None:
        """One macro, by name with or without braces (``"i"`` finds ``"{i}"``)."""
        alt = name[1:-1] if name.startswith("{") and name.endswith("}") else f"{{{name}}}"
        merged = self._merged
        if merged is not None:
            value = merged.get(name)
            return value if value is not None else merged.get(alt)
        return self._find(name, alt)

    def _find(self, name: str, alt: str) -> str | None:
        # What the merged view would hold for name, else for alt, without building it: the
        # stages are searched in precedence order, once for both spellings, and a stage is
        # only decoded if its bytes hold "name\0" or "alt\0". A lookup (the queue id, the
        # auth macros, j) reads one or two stages of the seven a message brings; building
        # the merged view decoded them all.
        order = self._order
        if order is None:
            order = self._order = self._precedence()
        decoded = self._decoded
        raw = self._raw_macros
        keys: tuple[bytes, bytes] | None = None
        other = None  # alt's value in the first stage that has it
        for stage in order:
            values = decoded.get(stage)
            if values is None:
                if keys is None:
                    keys = (_raw_name(name), _raw_name(alt))
                payload = raw[stage]
                first, second = keys
                if first and second and first not in payload and second not in payload:
                    continue
                values = self._stage_values(stage)
            value = values.get(name)
            if value is not None:
                return value  # name in any stage wins over alt, as in the merged view
            if other is None:
                other = values.get(alt)
        return other

    def _precedence(self) -> list[int]:
        """The stages present, the one that wins a clash in the merged view first."""
        raw = self._raw_macros
        return [s for s in reversed(raw) if s not in _ORDERED] + [
            s for s in _STAGE_PRECEDENCE if s in raw
        ]

    def stage_macros(self, stage: int) -> Mapping[str, str]:
        """The macros the MTA sent for one stage (``Command.MAIL``...)."""
        if stage not in self._raw_macros:
            return MappingProxyType({})
        return MappingProxyType(self._stage_values(stage))

    def _stage_values(self, stage: int) -> dict[str, str]:
        values = self._decoded.get(stage)
        if values is None:
            values = self._decoded[stage] = macro_values(self._raw_macros[stage])
        return values

    # -- input --------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the MTA; ``b""`` marks the end of the stream."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after end of stream")
            return
        if data:
            self._reader.feed(data)
        else:
            self._eof = True

    def next_event(self) -> ev.Event | Literal[NeedData.NEED_DATA]:
        """The next event, or ``NEED_DATA``; raises RemoteProtocolError on bad input."""
        if self._broken is not None:
            raise RemoteProtocolError(f"connection already failed: {self._broken}")
        if self._owed is not None:
            raise LocalProtocolError(f"reply to {_name(self._owed)} before the next event")
        self._replyable = None
        if self._state is State.CLOSED:
            return ev.ConnectionClosed()
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._broken = exc
            raise

    def _next_event(self) -> ev.Event | Literal[NeedData.NEED_DATA]:
        reader = self._reader
        while True:
            packet = reader.next_packet()
            if packet is None:
                if not self._eof:
                    return NEED_DATA
                if reader.pending:
                    raise MalformedPacket(
                        f"end of stream inside a packet ({reader.pending} bytes pending)"
                    )
                self._state = State.CLOSED
                return ev.ConnectionClosed()
            command, payload = packet
            if command != _MACRO:
                break
            # No event: check and keep the payload. Valid in every state after
            # negotiation without changing it, and never replied to, so nothing else moves.
            if _MACRO not in self._row:
                raise UnexpectedCommand(f"{_name(command)} in state {self._state.value}")
            raw = self._raw_macros
            # A repeat (Postfix resends the queue id before every header) changes nothing,
            # and was checked when it first came.
            if payload and raw.get(payload[0]) == payload:
                continue
            stage = macro_stage(payload)
            if stage not in raw:
                self._order = None
            raw[stage] = payload
            self._decoded.pop(stage, None)
            self._merged = None
        state = self._state
        move = self._row.get(command)
        if move is None:
            if command not in DECODERS:
                raise MalformedPacket(f"unknown milter command {_name(command)}")
            raise UnexpectedCommand(f"{_name(command)} in state {state.value}")
        next_state, next_row = move
        # Plain int comparisons on the command byte: this runs for every packet.
        if command == _HEADER:
            event: ev.Event = decode_header(payload, self._leading_space)
        else:
            event = decode(command, payload)
            if command == _OPTNEG:
                next_row = self._negotiate(cast(ev.OptionNegotiation, event))[next_state]
            elif command == _ABORT or (command == _HELO and state in IN_MESSAGE):
                self._drop_message_macros()
            elif command == _QUIT_NC:
                self._raw_macros.clear()
                self._decoded.clear()
                self._merged = None
                self._order = None

        self._state = next_state
        self._row = next_row
        if command in self._expects:
            self._owed = command
        self._replyable = command
        return event

    def _negotiate(self, offer: ev.OptionNegotiation) -> dict[State, _Row]:
        """Take the agreed options for this connection; returns the agreed table."""
        options = self._options
        known = options.agreements
        key = (offer.version, int(offer.actions), int(offer.protocol))
        agreed = known.get(key)
        if agreed is None:
            agreed = Agreement(negotiate(options, offer.version, offer.actions, offer.protocol))
            if len(known) >= _AGREEMENTS_KEPT:
                known.clear()
            known[key] = agreed
        self._negotiated = agreed.negotiated
        self._optneg_reply = agreed.reply
        self._expects = agreed.expects
        self._leading_space = agreed.leading_space
        self._actions = agreed.actions
        return agreed.rows

    def _drop_message_macros(self) -> None:
        raw = self._raw_macros
        for stage in _MESSAGE_STAGES:
            if raw.pop(stage, None) is not None:
                self._decoded.pop(stage, None)
                self._merged = None
                self._order = None

    # -- output -------------------------------------------------------------

    def send(self, action: act.Action) -> bytes:
        """Encode one action for the last event; may be ``b""`` (see module docstring)."""
        if type(action) is act.Continue:
            command = self._replyable
            if command is not None and command != _OPTNEG and command != _BODYEOB:
                # The common reply, short-cut: _check_final has nothing to refuse here.
                self._replyable = None
                if self._owed is None:
                    return b""
                self._owed = None
                return _CONTINUE_PACKET
        if isinstance(action, act.FinalAction):
            return self._send_final(action)
        if isinstance(action, act.Modification):
            return self._send_modification(action)
        if isinstance(action, act.Progress):
            if self._owed is None or self._owed == C.OPTNEG:
                raise LocalProtocolError("progress is only allowed while the MTA waits")
            return encode_action(action)
        raise LocalProtocolError(f"not a milter action: {action!r}")

    def send_many(self, actions: Iterable[act.Action]) -> bytes:
        """Encode modifications/progress followed by one final action (``Continue`` if
        none is given). The sequence is checked as a whole first, so a bad list raises
        before anything changes."""
        items = list(actions)
        if not items or not isinstance(items[-1], act.FinalAction):
            items.append(act.Continue())
        if any(isinstance(a, act.FinalAction) for a in items[:-1]):
            raise LocalProtocolError("only the last action may be a final action")
        for a in items[:-1]:
            if isinstance(a, act.Modification):
                self._check_modification(a)
            elif isinstance(a, act.Progress):
                if self._owed is None or self._owed == C.OPTNEG:
                    raise LocalProtocolError("progress is only allowed while the MTA waits")
            else:
                raise LocalProtocolError(f"not a milter action: {a!r}")
        self._check_final(items[-1])  # type: ignore[arg-type]
        return b"".join(self.send(a) for a in items)

    def _check_final(self, action: act.FinalAction) -> None:
        command = self._replyable
        if command is None:
            raise LocalProtocolError("no event to reply to")
        if self._owed is None:
            if type(action) is not act.Continue:
                raise LocalProtocolError(
                    f"the MTA expects no reply to {_name(command)}; only Continue() is allowed"
                )
            return
        if command == C.OPTNEG:
            if type(action) is not act.Continue:
                raise LocalProtocolError("answer option negotiation with Continue()")
            return
        if isinstance(action, act.Skip):
            negotiated = self._negotiated
            if negotiated is None or not negotiated.protocol & ProtocolFlag.SKIP:
                raise LocalProtocolError("Skip needs SMFIP_SKIP, which was not negotiated")
            if command == C.BODYEOB:
                raise LocalProtocolError("Skip is not a valid reply to end of message")
        elif isinstance(action, act.Discard) and command in _NO_DISCARD:
            raise LocalProtocolError(f"Discard is not a valid reply to {_name(command)}")

    def _send_final(self, action: act.FinalAction) -> bytes:
        self._check_final(action)
        command = self._replyable
        self._replyable = None
        if self._owed is None:
            return b""
        self._owed = None
        if command == C.OPTNEG:
            return self._optneg_reply  # set when the OPTNEG event was produced
        if command == C.BODYEOB:
            self._drop_message_macros()
        return encode_action(action)

    def _check_modification(self, action: act.Modification) -> None:
        if self._owed != C.BODYEOB:
            raise LocalProtocolError(
                f"{type(action).__name__} is only allowed at end of message, before its reply"
            )
        negotiated = self._negotiated
        assert negotiated is not None
        # As ints: Flag's & is Python code, and this runs for every header we add.
        if not self._actions & int(type(action).requires):
            raise LocalProtocolError(
                f"{type(action).__name__} needs {action.requires!r}, which was not negotiated"
            )

    def _send_modification(self, action: act.Modification) -> bytes:
        self._check_modification(action)
        return encode_action(action, self._leading_space)
