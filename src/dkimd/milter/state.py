"""The milter state table: which command may follow which. All of it is in this file.

A state is where the MTA is in its SMTP dialogue, as far as the filter can tell. The
table is modelled on libmilter's (engine.c ``next_states``) and checked against what
Postfix actually sends (milter8.c, smtpd.c, cleanup_milter.c):

* ``O`` comes first, exactly once.
* ``D`` (macros) may precede any command and never changes the state.
* ``A`` (abort) is legal any time after negotiation: Postfix calls ``milter_abort`` from
  ``mail_reset`` on RSET, HELO, after each message, and after a reject, whether or not a
  transaction is open. It leaves the message, never the connection.
* ``Q`` is legal everywhere and ends the connection; ``K`` (quit, new connection) starts
  over at ``READY`` keeping the negotiated options.
* ``C`` is optional (SMFIP_NOCONNECT), ``H`` may repeat (EHLO again after STARTTLS) and
  may even arrive inside a transaction: smtpd.c ``helo_cmd`` reports HELO and only then
  resets the transaction, which sends ``A``. We end the transaction at the ``H``.
* ``U`` (unknown SMTP command) may arrive at any point of the SMTP dialogue outside
  DATA and does not change the state.
* Inside a message the MTA only moves forward: ``T`` (v4+ only), headers, ``N``, body
  chunks, ``E``; any of them may be missing (no DATA event before v4, no header, an empty
  body, or the NO* flags), so every later stage is reachable from every earlier one.
* ``M`` and ``R`` may only be skipped when the filter negotiated SMFIP_NOMAIL /
  SMFIP_NORCPT: ``transitions(protocol)`` adds those shortcuts, the way libmilter's
  ``trans_ok`` walks over states marked NX_SKIP.

Anything else is ``UnexpectedCommand``, and the connection is closed.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from .constants import Command, ProtocolFlag

__all__ = ["IN_MESSAGE", "State", "transitions"]


class State(enum.Enum):
    NEGOTIATE = "negotiate"  # waiting for SMFIC_OPTNEG
    READY = "ready"  # negotiated, waiting for SMFIC_CONNECT
    CONNECTED = "connected"  # SMTP session open, no transaction
    MAIL = "mail"  # MAIL FROM seen
    RCPT = "rcpt"  # at least one RCPT TO seen
    DATA = "data"  # DATA seen
    HEADERS = "headers"  # in the header
    EOH = "eoh"  # end of header seen
    BODY = "body"  # in the body
    CLOSED = "closed"  # SMFIC_QUIT seen or end of stream


#: States in which a message transaction is open.
IN_MESSAGE: Final = frozenset(
    {State.MAIL, State.RCPT, State.DATA, State.HEADERS, State.EOH, State.BODY}
)

S = State
C = Command

_MESSAGE: Final[dict[int, State]] = {
    # Forward-only moves through the content stages (see module docstring).
    C.DATA: S.DATA,
    C.HEADER: S.HEADERS,
    C.EOH: S.EOH,
    C.BODY: S.BODY,
    C.BODYEOB: S.CONNECTED,  # the transaction ends with end of message
}


def _after(stage: State) -> dict[int, State | None]:
    order = [S.DATA, S.HEADERS, S.EOH, S.BODY]
    later = order[order.index(stage) :] if stage in order else order
    result: dict[int, State | None] = {cmd: st for cmd, st in _MESSAGE.items() if st in later}
    result[C.BODYEOB] = S.CONNECTED
    if stage in (S.HEADERS, S.BODY):
        result[C.HEADER if stage is S.HEADERS else C.BODY] = stage  # repeatable
    return result


_SESSION: Final[dict[int, State | None]] = {C.HELO: S.CONNECTED, C.MAIL: S.MAIL, C.UNKNOWN: None}

# None as a target means "stay in the current state".
_BASE: Final[dict[State, dict[int, State | None]]] = {
    S.NEGOTIATE: {C.OPTNEG: S.READY},
    S.READY: {C.CONNECT: S.CONNECTED, **_SESSION},
    S.CONNECTED: dict(_SESSION),
    # HELO inside a transaction: reported before the abort (smtpd.c helo_cmd).
    S.MAIL: {C.RCPT: S.RCPT, C.HELO: S.CONNECTED, C.UNKNOWN: None},
    S.RCPT: {C.RCPT: S.RCPT, C.HELO: S.CONNECTED, C.UNKNOWN: None, **_after(S.DATA)},
    S.DATA: _after(S.HEADERS),
    S.HEADERS: _after(S.HEADERS),
    S.EOH: _after(S.BODY),
    S.BODY: _after(S.BODY),
    S.CLOSED: {},
}

# Valid in every state after negotiation.
_ANYTIME: Final[dict[int, State | None]] = {
    C.MACRO: None,
    C.ABORT: None,  # resolved below: CONNECTED if a session is open, else READY
    C.QUIT: S.CLOSED,
    C.QUIT_NC: S.READY,
}

# Stages the filter may ask the MTA to leave out, and the state that stands for them.
_SKIPPABLE: Final = {ProtocolFlag.NOMAIL: S.MAIL, ProtocolFlag.NORCPT: S.RCPT}


@functools.lru_cache(maxsize=16)
def transitions(protocol: ProtocolFlag = ProtocolFlag.NONE) -> Mapping[State, Mapping[int, State]]:
    """The table for a negotiated protocol mask: ``table[state][command] -> next state``."""
    table: dict[State, dict[int, State | None]] = {s: dict(t) for s, t in _BASE.items()}
    skipped = {st for flag, st in _SKIPPABLE.items() if protocol & flag}
    # Where a skippable state could be entered, also allow what may follow it
    # (repeat so that NOMAIL+NORCPT chain from CONNECTED straight to DATA).
    changed = True
    while changed:
        changed = False
        for moves in table.values():
            for target in [t for t in moves.values() if t in skipped]:
                for cmd, nxt in table[target].items():
                    if cmd not in moves:
                        moves[cmd] = nxt
                        changed = True
    resolved: dict[State, Mapping[int, State]] = {}
    for state, moves in table.items():
        full: dict[int, State | None] = dict(moves)
        if state is not S.NEGOTIATE:
            full.update(_ANYTIME)
            full[C.ABORT] = S.READY if state is S.READY else S.CONNECTED
        else:
            full[C.QUIT] = S.CLOSED
        if state is S.CLOSED:
            full = {}
        # Keys as plain ints: a lookup runs for every packet with the command byte, and a
        # Command key makes each hit fall back to IntEnum's slower equality.
        resolved[state] = MappingProxyType(
            {int(cmd): (state if nxt is None else nxt) for cmd, nxt in full.items()}
        )
    return MappingProxyType(resolved)
