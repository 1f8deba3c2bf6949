"""Connection and macros: macro packets give no events and decode on first read.

The contract: events, replies and errors are what the same stream without its macro
packets gives; macro values, merge order and drop rules are those of `MacroModel` (the
documented rules, from the codec's decoding of each packet); a malformed macro packet
fails the connection when it arrives, not when read.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dkimd import milter
from dkimd.milter import Command
from dkimd.milter.codec import FrameReader, decode, macro_stage, macro_values
from support.milterwire import (
    ABORT,
    EOH,
    QUIT_NC,
    connect,
    drive,
    eom,
    header,
    helo,
    macro,
    mail,
    message,
    optneg,
    pkt,
    rcpt,
    session,
)

STAGES = [int(c) for c in Command] + [0, 1, 0x7F, 0xFF]


def lazy(*packets: bytes) -> milter.Connection:
    """A connection past negotiation, with the given packets queued."""
    conn = milter.Connection()
    conn.receive_data(optneg() + b"".join(packets))
    assert isinstance(conn.next_event(), milter.OptionNegotiation)
    conn.send(milter.Continue())
    return conn


def next_event(conn: milter.Connection) -> milter.Event:
    event = conn.next_event()
    assert event is not milter.NEED_DATA
    return event


def snapshot(conn: milter.Connection) -> tuple[dict[str, str], dict[int, dict[str, str]]]:
    return dict(conn.macros), {s: dict(conn.stage_macros(s)) for s in STAGES}


_MACRO = int(Command.MACRO)
_MESSAGE_STAGES = [int(c) for c in b"MRTLNBE"]
_STAGE_ORDER = [int(c) for c in b"CHUMRTLNBE"]


def split(stream: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """The packets of `stream`, and whether a framing error ends it."""
    reader = FrameReader(milter.DEFAULT_MAX_PACKET)
    reader.feed(stream)
    packets: list[tuple[int, bytes]] = []
    try:
        while (packet := reader.next_packet()) is not None:
            packets.append(packet)
    except milter.RemoteProtocolError:
        return packets, True
    return packets, bool(reader.pending)


def without_macros(stream: bytes) -> bytes:
    """`stream` with its macro packets taken out (framing errors left in place)."""
    packets, _ = split(stream)
    kept = b"".join(pkt(c, p) for c, p in packets if c != _MACRO)
    return kept + stream[sum(len(p) + 5 for _, p in packets) :]


class MacroModel:
    """The documented macro rules, kept from decoded payloads: per stage the last payload
    (a stage keeps the place of its first arrival); merged in SMTP order, a later stage
    winning, then stages outside that order in arrival order; message stages dropped at
    abort, at a HELO inside a message and once end of message is replied to; all of them
    at QUIT_NC."""

    def __init__(self) -> None:
        self.stages: dict[int, dict[str, str]] = {}

    def add(self, payload: bytes) -> None:
        event = decode(Command.MACRO, payload)  # raises MalformedPacket as on arrival
        assert isinstance(event, milter.Macros)
        self.stages[event.stage] = dict(event.macros)

    def drop_message(self) -> None:
        for stage in _MESSAGE_STAGES:
            self.stages.pop(stage, None)

    def merged(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for stage in _STAGE_ORDER:
            out.update(self.stages.get(stage, {}))
        for stage, values in self.stages.items():
            if stage not in _STAGE_ORDER:
                out.update(values)
        return out

    def snapshot(self) -> tuple[dict[str, str], dict[int, dict[str, str]]]:
        return self.merged(), {s: dict(self.stages.get(s, {})) for s in STAGES}


# -- a whole session ----------------------------------------------------------------------


def test_full_session_same_events_and_replies_as_without_macro_packets() -> None:
    stream = session(version=6, messages=2)
    events, out = drive(milter.Connection(), [stream])
    plain_events, plain_out = drive(milter.Connection(), [without_macros(stream)])
    assert events == plain_events
    assert out == plain_out
    assert not any(isinstance(e, milter.Macros) for e in events)


def test_macros_merged_and_scoped() -> None:
    conn = lazy(
        macro("C", {"j": "mx.example.com", "{daemon_name}": "smtpd"}),
        connect(),
        *message(1)[:4],  # macros M, MAIL, macros R, RCPT
    )
    assert isinstance(next_event(conn), milter.Connect)
    assert dict(conn.macros) == {"j": "mx.example.com", "{daemon_name}": "smtpd"}
    conn.send(milter.Continue())
    assert isinstance(next_event(conn), milter.MailFrom)
    conn.send(milter.Continue())
    assert isinstance(next_event(conn), milter.RcptTo)
    assert conn.macro("i") == conn.macro("{i}") == "QUEUE1"
    assert conn.macro("daemon_name") == "smtpd"
    assert conn.macro("{rcpt_addr}") == "rcpt1@example.net"
    assert conn.macro("nope") is None
    assert conn.stage_macros(Command.MAIL)["{mail_addr}"] == "sender"
    conn.receive_data(ABORT)
    conn.send(milter.Continue())
    assert isinstance(next_event(conn), milter.Abort)
    # macro() first: it searches the stages itself, macros builds the merged view.
    assert conn.macro("i") is None
    assert conn.macro("j") == "mx.example.com"
    assert dict(conn.macros) == {"j": "mx.example.com", "{daemon_name}": "smtpd"}
    conn.receive_data(QUIT_NC)
    assert isinstance(next_event(conn), milter.QuitNewConnection)
    assert conn.macro("j") is None
    assert dict(conn.macros) == {}


def test_later_stage_wins_and_unknown_stages_merge_last_in_arrival_order() -> None:
    conn = lazy(
        pkt("D", b"\x7f" + b"x\0unknown-7f\0"),
        pkt("D", b"\x01" + b"x\0unknown-01\0y\0one\0"),
        macro("M", {"x": "mail", "i": "Q"}),
        macro("C", {"x": "connect", "j": "mx"}),
        connect(),
    )
    next_event(conn)
    assert dict(conn.macros) == {"x": "unknown-01", "i": "Q", "j": "mx", "y": "one"}
    assert list(conn.macros) == ["x", "j", "i", "y"]


# -- laziness -----------------------------------------------------------------------------


def test_macro_packet_never_read_is_replaced_by_the_next_one() -> None:
    conn = lazy(connect(), macro("M", {"i": "FIRST"}), macro("M", {"i": "SECOND"}), mail())
    next_event(conn)
    conn.send(milter.Continue())
    assert isinstance(next_event(conn), milter.MailFrom)
    assert conn.macro("i") == "SECOND"
    assert dict(conn.stage_macros(Command.MAIL)) == {"i": "SECOND"}


def test_repeated_payload_keeps_values_changed_payload_replaces_them() -> None:
    same = macro("L", {"i": "Q1"})
    conn = lazy(connect(), mail(), rcpt(), same, header("A", " 1"), same, header("B", " 2"))
    for _ in range(3):
        next_event(conn)
        conn.send(milter.Continue())
    assert isinstance(next_event(conn), milter.Header)
    before = conn.stage_macros(Command.HEADER)
    assert conn.macro("i") == "Q1"
    conn.send(milter.Continue())
    assert isinstance(next_event(conn), milter.Header)
    assert conn.macro("i") == "Q1"
    assert conn.stage_macros(Command.HEADER) == before
    conn.send(milter.Continue())
    conn.receive_data(macro("L", {"i": "Q2"}) + EOH)
    assert isinstance(next_event(conn), milter.EndOfHeaders)
    assert conn.macro("i") == "Q2"
    assert dict(before) == {"i": "Q1"}  # a view handed out earlier keeps its values


def test_unread_message_macros_gone_after_abort() -> None:
    conn = lazy(macro("C", {"j": "mx"}), connect(), *message(1)[:4], ABORT)
    while not isinstance(next_event(conn), milter.Abort):
        conn.send(milter.Continue())
    # The M and R payloads were never decoded; the abort must drop them all the same.
    assert conn.macro("i") is None
    assert conn.macro("j") == "mx"
    assert dict(conn.macros) == {"j": "mx"}
    assert dict(conn.stage_macros(Command.MAIL)) == {}
    assert conn.macro("i") is None


def test_unread_message_macros_gone_after_end_of_message_reply() -> None:
    conn = lazy(connect(), *message(1)[:-1])  # without the final abort
    while not isinstance(next_event(conn), milter.EndOfMessage):
        conn.send(milter.Continue())
    assert conn.macro("i") == "QUEUE1"
    conn.send(milter.Continue())
    assert conn.macro("i") is None
    assert dict(conn.macros) == {}


def test_helo_inside_a_transaction_drops_unread_message_macros() -> None:
    conn = lazy(connect(), macro("M", {"i": "Q"}), mail(), helo())
    while not isinstance(next_event(conn), milter.Helo):
        conn.send(milter.Continue())
    assert conn.macro("i") is None


def test_values_read_before_abort_stay_in_their_views() -> None:
    conn = lazy(connect(), macro("M", {"i": "Q"}), mail(), ABORT)
    next_event(conn)
    conn.send(milter.Continue())
    next_event(conn)
    merged = conn.macros
    assert merged["i"] == "Q"
    conn.send(milter.Continue())
    next_event(conn)  # Abort
    assert merged["i"] == "Q"  # the old merged view is a snapshot, as before
    assert "i" not in conn.macros


# -- malformed packets fail at arrival ---------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no stage byte
        b"Cname\0",  # a name without a value
        b"Cname\0value",  # no NUL at the end
        b"C\0",  # one empty name, no value
        b"Ca\0b\0c\0",
    ],
)
def test_malformed_macro_packet_fails_when_received(payload: bytes) -> None:
    with pytest.raises(milter.MalformedPacket) as expected:
        decode(Command.MACRO, payload)

    conn = lazy(pkt("D", payload), connect())
    with pytest.raises(milter.MalformedPacket) as got:
        conn.next_event()  # the Connect behind it is never reached
    assert str(got.value) == str(expected.value)
    with pytest.raises(milter.RemoteProtocolError, match="already failed"):
        conn.next_event()


def test_macro_before_negotiation_is_unexpected() -> None:
    conn = milter.Connection()
    conn.receive_data(macro("C", {"j": "x"}))
    with pytest.raises(milter.UnexpectedCommand, match="SMFIC_MACRO in state negotiate"):
        conn.next_event()


def test_macros_only_then_need_data_and_end_of_stream() -> None:
    conn = lazy(macro("C", {"j": "x"}), macro("H", {}))
    assert conn.next_event() is milter.NEED_DATA
    assert conn.macro("j") == "x"
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), milter.ConnectionClosed)


# -- codec helpers ----------------------------------------------------------------------


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.one_of(
        st.binary(max_size=40),
        st.lists(st.sampled_from([b"\0", b"a", b"{i}", b"\xff", b"C"]), max_size=12).map(b"".join),
    )
)
def test_macro_stage_and_values_agree_with_decode(payload: bytes) -> None:
    try:
        event = decode(Command.MACRO, payload)
    except milter.MalformedPacket as exc:
        with pytest.raises(milter.MalformedPacket) as got:
            macro_stage(payload)
        assert str(got.value) == str(exc)
        return
    assert isinstance(event, milter.Macros)
    assert macro_stage(payload) == event.stage
    assert macro_values(payload) == event.macros


# -- differential: any packet sequence ------------------------------------------------

NAMES = [
    *("i", "{i}", "j", "{j}", "{auth_authen}", "auth_authen", "nope", "{", "{}", ""),
    *("\udcffname", "\ud800", "i\0j", "v", "name"),
]


def expected_macro(merged: dict[str, str], name: str) -> str | None:
    """Connection.macro as documented: the merged value, else the other brace form."""
    if name in merged:
        return merged[name]
    alt = name[1:-1] if name.startswith("{") and name.endswith("}") else f"{{{name}}}"
    return merged.get(alt)


_PACKETS = st.sampled_from(
    [
        connect(),
        helo(),
        mail(),
        rcpt(),
        header("A", " b"),
        EOH,
        eom(),
        ABORT,
        QUIT_NC,
        macro("C", {"j": "mx"}),
        macro("H", {}),
        macro("M", {"i": "Q1", "{auth_authen}": "a"}),
        macro("M", {"i": "Q2"}),
        macro("R", {"i": "Q1"}),
        macro("L", {"i": "Q1"}),
        macro("N", {"i": "Q1", "j": "eoh"}),
        macro("E", {"i": "Q1"}),
        pkt("D", b"\x7fi\0odd\0"),
        pkt("D", b"\x01i\0one\0{j}\0braced\0"),
        pkt("D", b"C\xffname\0v\0j\0i\0"),  # "i" only as a value; an 8-bit name
        pkt("D", b"Ti\0\0\0empty name\0"),
        pkt("D", b"M"),
        pkt("D", b"Mi\0"),
    ]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_PACKETS, max_size=25), st.lists(st.booleans(), max_size=25))
# Whole messages, which random packets seldom make: every drop rule is reached.
@example(
    [
        *(macro("C", {"j": "mx"}), connect(), helo(), macro("M", {"i": "Q1"}), mail(), rcpt()),
        *(header("A", " b"), macro("N", {"i": "Q1", "j": "eoh"}), EOH, macro("E", {"i": "Q1"})),
        *(eom(), macro("M", {"i": "Q2"}), mail(), helo(), mail(), ABORT, QUIT_NC, connect()),
    ],
    [],
)
def test_same_as_the_model(packets: list[bytes], reads: list[bool]) -> None:
    """Step the connection and its oracles (the stream without macro packets for events,
    replies and errors; MacroModel for macros) in lock step, reading macros at random
    points (so some payloads are never decoded)."""
    stream = optneg() + b"".join(packets)
    conn = milter.Connection()
    plain = milter.Connection()
    conn.receive_data(stream)
    plain.receive_data(without_macros(stream))
    conn.receive_data(b"")
    plain.receive_data(b"")
    model = MacroModel()
    queue, _ = split(stream)
    negotiated = False
    for step in itertools.count():
        # The macro packets ahead of the next event: kept, or the error they give.
        failure: milter.RemoteProtocolError | None = None
        while queue and queue[0][0] == _MACRO:
            _, payload = queue.pop(0)
            if not negotiated:
                failure = milter.UnexpectedCommand("SMFIC_MACRO in state negotiate")
                break
            try:
                model.add(payload)
            except milter.MalformedPacket as exc:
                failure = exc
                break
        if failure is None:
            was_in_message = plain.in_message
            try:
                event = plain.next_event()
            except milter.RemoteProtocolError as exc:
                failure = exc
        if failure is not None:
            with pytest.raises(type(failure)) as got:
                conn.next_event()
            assert str(got.value) == str(failure)
            assert snapshot(conn) == model.snapshot()
            return
        if queue:
            queue.pop(0)
        assert conn.next_event() == event
        negotiated = True
        if isinstance(event, milter.Abort) or (isinstance(event, milter.Helo) and was_in_message):
            model.drop_message()
        elif isinstance(event, milter.QuitNewConnection):
            model.stages.clear()
        if step >= len(reads) or reads[step]:
            # macro() before anything builds the merged view, then from the merged view.
            merged = model.merged()
            for _ in range(2):
                for name in NAMES:
                    assert conn.macro(name) == expected_macro(merged, name), name
                assert snapshot(conn) == model.snapshot()
        if isinstance(event, milter.ConnectionClosed):
            return
        assert conn.reply_expected == plain.reply_expected
        assert conn.send(milter.Continue()) == plain.send(milter.Continue())
        assert conn.in_message == plain.in_message
        if isinstance(event, milter.EndOfMessage):
            model.drop_message()
