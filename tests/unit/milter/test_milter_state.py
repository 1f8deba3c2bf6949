"""Properties of the state table in dkimd.milter.state."""

from __future__ import annotations

import pytest

from dkimd.milter.constants import Command, ProtocolFlag
from dkimd.milter.state import IN_MESSAGE, State, transitions

C = Command


@pytest.mark.parametrize("state", [s for s in State if s not in (State.NEGOTIATE, State.CLOSED)])
def test_always_allowed_after_negotiation(state: State) -> None:
    moves = transitions()[state]
    assert moves[C.MACRO] is state  # macros never change the state
    assert moves[C.QUIT] is State.CLOSED
    assert moves[C.QUIT_NC] is State.READY
    assert moves[C.ABORT] is (State.READY if state is State.READY else State.CONNECTED)


def test_negotiate_and_closed() -> None:
    table = transitions()
    assert dict(table[State.NEGOTIATE]) == {C.OPTNEG: State.READY, C.QUIT: State.CLOSED}
    assert dict(table[State.CLOSED]) == {}


def test_message_moves_forward_only() -> None:
    table = transitions()
    order = [State.RCPT, State.DATA, State.HEADERS, State.EOH, State.BODY]
    stage_of = {State.DATA: C.DATA, State.HEADERS: C.HEADER, State.EOH: C.EOH, State.BODY: C.BODY}
    for i, state in enumerate(order):
        for later in order[i + 1 :]:
            assert table[state][stage_of[later]] is later
        for earlier in order[1 : i + 1]:
            if earlier is state and earlier in (State.HEADERS, State.BODY):
                continue  # repeatable
            assert stage_of[earlier] not in table[state], (state, earlier)
        assert table[state][C.BODYEOB] is State.CONNECTED


def test_envelope_skips_need_negotiation() -> None:
    assert C.RCPT not in transitions()[State.CONNECTED]
    assert C.DATA not in transitions()[State.MAIL]
    skipping = transitions(ProtocolFlag.NOMAIL | ProtocolFlag.NORCPT)
    assert skipping[State.CONNECTED][C.RCPT] is State.RCPT
    assert skipping[State.CONNECTED][C.DATA] is State.DATA
    assert skipping[State.CONNECTED][C.BODYEOB] is State.CONNECTED
    assert skipping[State.MAIL][C.HEADER] is State.HEADERS


def test_in_message() -> None:
    assert State.CONNECTED not in IN_MESSAGE
    assert {State.MAIL, State.BODY} <= IN_MESSAGE
