"""The sans-IO Connection, driven from byte lists as Postfix sends them (no sockets)."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dkimd import milter
from dkimd.milter import ActionFlag, FilterOptions, MacroStage, ProtocolFlag, State, connection
from dkimd.milter.state import transitions
from support.milterwire import (
    ABORT,
    DATA,
    EOH,
    POSTFIX_ACTIONS,
    POSTFIX_V2_PROTOCOL,
    POSTFIX_V6_PROTOCOL,
    QUIT,
    QUIT_NC,
    body,
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
    replies,
    session,
    z,
)

PF = ProtocolFlag


def negotiated(options: FilterOptions | None = None, *packets: bytes) -> milter.Connection:
    """A connection past negotiation (v6, Postfix's offer) and the given packets."""
    conn = milter.Connection(options)
    conn.receive_data(optneg() + b"".join(packets))
    assert isinstance(conn.next_event(), milter.OptionNegotiation)
    conn.send(milter.Continue())
    return conn


def next_event(conn: milter.Connection) -> milter.Event:
    event = conn.next_event()
    assert event is not milter.NEED_DATA
    return event


# -- negotiation ---------------------------------------------------------------


def test_postfix_v6_negotiation_default_options() -> None:
    conn = milter.Connection()
    conn.receive_data(optneg(6, POSTFIX_ACTIONS, POSTFIX_V6_PROTOCOL))
    event = next_event(conn)
    assert event == milter.OptionNegotiation(6, ActionFlag(0x1FF), PF(0x1FFFFF))
    assert conn.reply_expected
    wire = conn.send(milter.Continue())
    # Default: add/change headers + quarantine (0x31); SKIP + HDR_LEADSPC (0x100400).
    assert wire == pkt("O", struct.pack(">III", 6, 0x31, 0x100400))
    assert conn.negotiated is not None
    assert conn.negotiated.leading_space
    assert conn.state is State.READY


def test_postfix_v2_negotiation() -> None:
    # milter_protocol = 2: Postfix offers actions 0x1FF, protocol 0x7F (NO* flags only),
    # so none of NR_*, SKIP, HDR_LEADSPC can be agreed.
    options = FilterOptions(
        actions=ActionFlag.ADDHDRS | ActionFlag.CHGHDRS,
        protocol=PF.NOHELO | PF.NOUNKNOWN | PF.NR_HDR | PF.NR_BODY | PF.SKIP | PF.HDR_LEADSPC,
        macros={MacroStage.CONNECT: ("j",)},
    )
    conn = milter.Connection(options)
    conn.receive_data(optneg(2, POSTFIX_ACTIONS, POSTFIX_V2_PROTOCOL))
    next_event(conn)
    wire = conn.send(milter.Continue())
    assert wire == pkt("O", struct.pack(">III", 2, 0x11, PF.NOHELO))
    n = conn.negotiated
    assert n is not None
    assert (n.version, n.macros, n.leading_space) == (2, (), False)
    assert n.expects_reply(milter.Command.HEADER)


@pytest.mark.parametrize("protocol", [0, POSTFIX_V2_PROTOCOL, POSTFIX_V6_PROTOCOL, 0x1F, 0x100400])
def test_linked_rows_are_the_transition_table(protocol: int) -> None:
    flags = ProtocolFlag(protocol)
    table = transitions(flags)
    rows = connection._linked_rows(flags)
    for state, moves in table.items():
        assert {cmd: nxt for cmd, (nxt, _) in rows[state].items()} == dict(moves)
        for nxt, row in rows[state].values():
            assert row is rows[nxt]


def test_agreements_kept_per_offer_on_the_options() -> None:
    options = FilterOptions()

    def agree(version: int, protocol: int) -> tuple[milter.Negotiated | None, bytes]:
        conn = milter.Connection(options)
        conn.receive_data(optneg(version, POSTFIX_ACTIONS, protocol))
        next_event(conn)
        return conn.negotiated, conn.send(milter.Continue())

    first, first_wire = agree(6, POSTFIX_V6_PROTOCOL)
    again, again_wire = agree(6, POSTFIX_V6_PROTOCOL)
    assert again is first and again_wire == first_wire  # worked out once
    v2, v2_wire = agree(2, POSTFIX_V2_PROTOCOL)
    assert v2 is not None and v2.version == 2 and v2_wire != first_wire
    assert set(options.agreements) == {
        (6, POSTFIX_ACTIONS, POSTFIX_V6_PROTOCOL),
        (2, POSTFIX_ACTIONS, POSTFIX_V2_PROTOCOL),
    }
    assert FilterOptions() == options  # the kept agreements are not part of its value
    for protocol in range(40):  # many distinct offers: the cache stays bounded
        agree(6, protocol)
    assert 0 < len(options.agreements) <= 16


def test_v2_session_without_leadspc_restores_the_space() -> None:
    conn = milter.Connection()
    events, out = drive(conn, [session(version=2, messages=1)])
    headers = [e for e in events if isinstance(e, milter.Header)]
    # the builder sends " Sender ..." raw; without LEADSPC Postfix would strip it, but
    # the connection only ever adds one space, it does not strip.
    assert headers[0].value == b"  Sender <sender@example.org>"
    assert not any(isinstance(e, milter.Data) for e in events)
    # every reply-expecting event got a 'c'; the last event is ConnectionClosed
    assert isinstance(events[-1], milter.ConnectionClosed)
    assert {r for r, _ in replies(out)[1:]} == {"c"}


def test_v6_setsymlist() -> None:
    options = FilterOptions(
        macros={MacroStage.ENVFROM: ("i", "{auth_authen}"), MacroStage.CONNECT: ("j",)}
    )
    conn = milter.Connection(options)
    conn.receive_data(optneg())
    next_event(conn)
    _version, actions, _protocol = struct.unpack_from(">III", conn.send(milter.Continue()), 5)
    assert actions & ActionFlag.SETSYMLIST
    assert conn.negotiated is not None
    assert conn.negotiated.macros == (
        (MacroStage.CONNECT, ("j",)),
        (MacroStage.ENVFROM, ("i", "{auth_authen}")),
    )


def test_max_version_caps_reply() -> None:
    conn = milter.Connection(FilterOptions(max_version=2))
    conn.receive_data(optneg(6))
    next_event(conn)
    assert struct.unpack_from(">I", conn.send(milter.Continue()), 5)[0] == 2


def test_mta_version_too_old() -> None:
    conn = milter.Connection()
    conn.receive_data(optneg(1))
    with pytest.raises(milter.RemoteProtocolError, match="too old"):
        conn.next_event()


def test_required_action_missing() -> None:
    options = FilterOptions(
        actions=ActionFlag.ADDHDRS | ActionFlag.CHGBODY, required_actions=ActionFlag.CHGBODY
    )
    conn = milter.Connection(options)
    conn.receive_data(optneg(6, actions=0x01))
    with pytest.raises(milter.RemoteProtocolError, match="required"):
        conn.next_event()


def test_bad_filter_options() -> None:
    with pytest.raises(milter.LocalProtocolError):
        FilterOptions(max_version=7)
    with pytest.raises(milter.LocalProtocolError):
        FilterOptions(actions=ActionFlag.ADDHDRS, required_actions=ActionFlag.CHGBODY)
    with pytest.raises(milter.LocalProtocolError):
        FilterOptions(macros={MacroStage.CONNECT: ("a b",)})


def test_optneg_must_be_answered_with_continue() -> None:
    conn = milter.Connection()
    conn.receive_data(optneg())
    next_event(conn)
    with pytest.raises(milter.LocalProtocolError):
        conn.send(milter.Reject())


# -- a full Postfix session -------------------------------------------------------


def test_full_v6_session_events_and_replies() -> None:
    conn = milter.Connection()
    events, out = drive(conn, [session(version=6, messages=2)])
    kinds = [type(e).__name__ for e in events]
    one_message = [
        "MailFrom", "RcptTo", "Data", "Header", "Header", "Header", "EndOfHeaders",
        "BodyChunk", "EndOfMessage", "Abort",
    ]  # fmt: skip
    assert kinds == [
        "OptionNegotiation", "Connect", "Helo", *one_message, *one_message, "Quit",
        "ConnectionClosed",
    ]  # fmt: skip
    sent = replies(out)
    assert sent[0][0] == "O"
    # one 'c' per event the MTA waits for: C, H, and per message M R T L L L N B E
    assert [r for r, _ in sent[1:]] == ["c"] * (2 + 2 * 9)
    mail_event = next(e for e in events if isinstance(e, milter.MailFrom))
    assert mail_event.args == ("SIZE=100", "BODY=8BITMIME")
    folded = [e for e in events if isinstance(e, milter.Header)][2]
    assert folded == milter.Header(b"X-Folded", b" one\r\n\ttwo")


def test_macros_merged_and_scoped() -> None:
    conn = negotiated(
        None,
        macro("C", {"j": "mx.example.com", "{daemon_name}": "smtpd"}),
        connect(),
        *message(1)[:4],  # macros M, MAIL, macros R, RCPT
    )
    seen: dict[str, dict[str, str]] = {}
    while True:
        event = conn.next_event()
        if event is milter.NEED_DATA:
            break
        seen[type(event).__name__] = dict(conn.macros)
        conn.send(milter.Continue())
    assert seen["Connect"] == {"j": "mx.example.com", "{daemon_name}": "smtpd"}
    assert seen["RcptTo"]["i"] == "QUEUE1"
    assert seen["RcptTo"]["{auth_authen}"] == "alice"
    assert seen["RcptTo"]["{rcpt_addr}"] == "rcpt1@example.net"
    assert conn.macro("daemon_name") == "smtpd"
    assert conn.macro("{i}") == "QUEUE1"
    assert conn.macro("nope") is None
    assert conn.stage_macros(milter.Command.MAIL)["{mail_addr}"] == "sender"
    # Abort drops message macros, keeps connection macros
    conn.receive_data(ABORT)
    assert isinstance(next_event(conn), milter.Abort)
    assert dict(conn.macros) == {"j": "mx.example.com", "{daemon_name}": "smtpd"}
    # QuitNewConnection drops everything
    conn.receive_data(QUIT_NC)
    assert isinstance(next_event(conn), milter.QuitNewConnection)
    assert dict(conn.macros) == {}
    assert conn.state is State.READY


def test_message_macros_dropped_after_eom_reply() -> None:
    conn = negotiated(None, connect(), *message(1)[:-1])  # without the final abort
    while True:
        event = next_event(conn)
        if isinstance(event, milter.EndOfMessage):
            break
        conn.send(milter.Continue())
    assert conn.macro("i") == "QUEUE1"
    assert conn.in_message
    conn.send(milter.Continue())
    assert conn.macro("i") is None
    assert not conn.in_message


def test_several_messages_with_abort_between() -> None:
    stream = [connect(), helo()]
    stream += message(1)[:5]  # abort in the middle of the envelope (RSET)
    stream += [ABORT]
    stream += message(2)
    stream += [mail(), ABORT, *message(3), QUIT]
    conn = negotiated(None, *stream)
    events, _ = drive(conn, [])
    eoms = [e for e in events if isinstance(e, milter.EndOfMessage)]
    assert len(eoms) == 2
    assert sum(isinstance(e, milter.Abort) for e in events) == 4


def test_abort_outside_a_transaction_and_before_connect() -> None:
    conn = negotiated(None, ABORT, connect(), ABORT, helo(), ABORT, ABORT)
    events, _ = drive(conn, [])
    assert [type(e).__name__ for e in events] == [
        "Abort", "Connect", "Abort", "Helo", "Abort", "Abort", "ConnectionClosed",
    ]  # fmt: skip


def test_helo_inside_transaction_ends_it() -> None:
    # smtpd.c helo_cmd: HELO event first, then mail_reset() -> milter_abort().
    conn = negotiated(None, connect(), helo(), *message(1)[:4], helo("again"), ABORT, mail())
    events, _ = drive(conn, [])
    names = [type(e).__name__ for e in events]
    assert names[-4:] == ["Helo", "Abort", "MailFrom", "ConnectionClosed"]


def test_quit_new_connection_reuses_negotiation() -> None:
    conn = negotiated(None, connect(), helo(), *message(1), QUIT_NC, connect("second"), QUIT)
    events, _ = drive(conn, [])
    connects = [e for e in events if isinstance(e, milter.Connect)]
    assert [c.hostname for c in connects] == ["client.example", "second"]


def test_eom_with_data_and_without_headers_or_body() -> None:
    conn = negotiated(None, connect(), mail(), rcpt(), EOH, eom(b"last\r\n"))
    events, _ = drive(conn, [])
    assert milter.EndOfMessage(b"last\r\n") in events
    conn = negotiated(None, connect(), mail(), rcpt(), eom())
    events, _ = drive(conn, [])
    assert milter.EndOfMessage() in events


def test_unknown_smtp_command_event() -> None:
    conn = negotiated(None, connect(), pkt("U", z("XYZZY")), mail(), pkt("U", z("FOO")), rcpt())
    events, _ = drive(conn, [])
    assert [e for e in events if isinstance(e, milter.Unknown)] == [
        milter.Unknown("XYZZY"),
        milter.Unknown("FOO"),
    ]


# -- no-reply flags ----------------------------------------------------------------


def test_nr_flags_make_continue_silent() -> None:
    options = FilterOptions(protocol=PF.NR_CONN | PF.NR_HDR | PF.NR_BODY | PF.HDR_LEADSPC)
    conn = negotiated(options, connect(), mail(), rcpt(), header("A", " b"), body(b"x"), eom())
    assert isinstance(next_event(conn), milter.Connect)
    assert not conn.reply_expected
    assert conn.send(milter.Continue()) == b""
    assert isinstance(next_event(conn), milter.MailFrom)
    assert conn.send(milter.Continue()) == pkt("c")
    next_event(conn)
    conn.send(milter.Continue())
    assert isinstance(next_event(conn), milter.Header)
    with pytest.raises(milter.LocalProtocolError, match="expects no reply"):
        conn.send(milter.Reject())
    # not replying at all is fine too when the MTA expects nothing
    assert isinstance(next_event(conn), milter.BodyChunk)
    assert isinstance(next_event(conn), milter.EndOfMessage)
    assert conn.reply_expected


def test_reply_required_before_next_event() -> None:
    conn = negotiated(None, connect(), helo())
    next_event(conn)
    with pytest.raises(milter.LocalProtocolError, match="reply to SMFIC_CONNECT"):
        conn.next_event()


def test_no_reply_events_accept_continue() -> None:
    conn = negotiated(None, macro("C", {"j": "x"}), ABORT)
    assert isinstance(next_event(conn), milter.Abort)  # the macro packet gives no event
    assert conn.macro("j") == "x"
    with pytest.raises(milter.LocalProtocolError):
        conn.send(milter.Accept())
    assert conn.send(milter.Continue()) == b""
    with pytest.raises(milter.LocalProtocolError, match="no event"):
        conn.send(milter.Continue())


# -- reply rules -----------------------------------------------------------------


def _at_eom(options: FilterOptions | None = None) -> milter.Connection:
    conn = negotiated(options, connect(), mail(), rcpt(), header("From", " a@b"), EOH, eom())
    while not isinstance(next_event(conn), milter.EndOfMessage):
        conn.send(milter.Continue())
    return conn


def test_eom_modifications_then_final() -> None:
    conn = _at_eom()
    wire = conn.send_many(
        [
            milter.InsertHeader(0, b"DKIM-Signature", b" v=1; a=rsa-sha256"),
            milter.AddHeader(b"Authentication-Results", b" mx; dkim=pass"),
            milter.ChangeHeader(1, b"X-Old", b""),
            milter.Quarantine("held"),
            milter.Accept(),
        ]
    )
    assert [r for r, _ in replies(wire)] == ["i", "h", "m", "q", "a"]
    assert replies(wire)[0][1] == b"\0\0\0\0DKIM-Signature\0 v=1; a=rsa-sha256\0"


def test_eom_modifications_default_to_continue() -> None:
    conn = _at_eom()
    wire = conn.send_many([milter.AddHeader(b"X", b" y")])
    assert [r for r, _ in replies(wire)] == ["h", "c"]


def test_eom_header_value_without_leadspc() -> None:
    conn = _at_eom(FilterOptions(protocol=PF.NONE))
    wire = conn.send(milter.AddHeader(b"X", b" y"))
    assert wire == pkt("h", z("X", "y"))


def test_modification_rules() -> None:
    conn = _at_eom()
    with pytest.raises(milter.LocalProtocolError, match="not negotiated"):
        conn.send(milter.ReplaceBody(b"x"))
    with pytest.raises(milter.LocalProtocolError, match="last action"):
        conn.send_many([milter.Accept(), milter.AddHeader(b"X", b" y")])
    # nothing was consumed by the failed calls
    assert conn.send(milter.Progress()) == pkt("p")
    assert conn.send(milter.Continue()) == pkt("c")
    with pytest.raises(milter.LocalProtocolError, match="only allowed at end of message"):
        conn.send(milter.AddHeader(b"X", b" y"))
    with pytest.raises(milter.LocalProtocolError, match="progress"):
        conn.send(milter.Progress())


def test_modification_before_eom_refused() -> None:
    conn = negotiated(None, connect())
    next_event(conn)
    with pytest.raises(milter.LocalProtocolError):
        conn.send(milter.AddHeader(b"X", b" y"))
    with pytest.raises(milter.LocalProtocolError):
        conn.send_many([milter.AddHeader(b"X", b" y"), milter.Continue()])


def test_skip_and_discard_rules() -> None:
    conn = negotiated(None, connect(), mail(), rcpt(), EOH, body(b"x"))
    assert isinstance(next_event(conn), milter.Connect)
    with pytest.raises(milter.LocalProtocolError, match="Discard"):
        conn.send(milter.Discard())
    conn.send(milter.Continue())
    for _ in range(3):
        next_event(conn)
        conn.send(milter.Continue())
    assert isinstance(next_event(conn), milter.BodyChunk)
    assert conn.send(milter.Skip()) == pkt("s")
    conn = _at_eom()
    with pytest.raises(milter.LocalProtocolError, match="end of message"):
        conn.send(milter.Skip())
    conn = negotiated(FilterOptions(protocol=PF.NONE), connect())
    next_event(conn)
    with pytest.raises(milter.LocalProtocolError, match="SMFIP_SKIP"):
        conn.send(milter.Skip())


def test_reject_tempfail_replycode_at_rcpt() -> None:
    conn = negotiated(None, connect(), mail(), rcpt(), rcpt("<b@x>"), rcpt("<c@x>"))
    for _ in range(2):
        next_event(conn)
        conn.send(milter.Continue())
    next_event(conn)
    assert conn.send(milter.Reject()) == pkt("r")
    next_event(conn)
    assert conn.send(milter.TempFail()) == pkt("t")
    next_event(conn)
    assert conn.send(milter.ReplyCode(550, "5.1.1", "unknown")) == pkt("y", z("550 5.1.1 unknown"))


# -- protocol errors from the MTA ---------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    [
        [connect()],  # before negotiation
        [optneg(), optneg()],  # twice
        [optneg(), connect(), EOH],  # end of headers without a message
        [optneg(), connect(), rcpt()],  # RCPT before MAIL
        [optneg(), connect(), mail(), mail()],  # MAIL twice
        [optneg(), connect(), eom()],  # end of message without a message
        [optneg(), connect(), connect()],  # CONNECT twice
        [optneg(), connect(), mail(), rcpt(), EOH, header("A", " b")],  # header after EOH
        [optneg(), connect(), mail(), rcpt(), body(b"x"), DATA],  # DATA after body
        [optneg(), connect(), mail(), rcpt(), DATA, pkt("U", z("X"))],  # UNKNOWN in DATA
    ],
)
def test_out_of_order(stream: list[bytes]) -> None:
    conn = milter.Connection()
    conn.receive_data(b"".join(stream))
    with pytest.raises(milter.UnexpectedCommand):
        while True:
            conn.next_event()
            if conn.reply_expected:
                conn.send(milter.Continue())
    with pytest.raises(milter.RemoteProtocolError, match="already failed"):
        conn.next_event()


def test_nomail_norcpt_allow_skipping_envelope() -> None:
    options = FilterOptions(protocol=PF.NOMAIL | PF.NORCPT)
    conn = negotiated(options, connect(), DATA, header("A", " b"), EOH, eom())
    events, _ = drive(conn, [])
    assert any(isinstance(e, milter.EndOfMessage) for e in events)
    conn = negotiated(None, connect(), DATA)
    with pytest.raises(milter.UnexpectedCommand):
        drive(conn, [])


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (optneg() + pkt("Z"), milter.MalformedPacket),  # unknown command byte
        (optneg() + b"\0\0\0\0", milter.MalformedPacket),  # zero-length packet
        (optneg() + b"\x00\x20\x00\x01" + b"B", milter.PacketTooLarge),  # 2 MiB announced
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", milter.PacketTooLarge),  # garbage
        (b"\0\0\0\x02O\0", milter.MalformedPacket),  # short OPTNEG payload
    ],
)
def test_bad_input(data: bytes, error: type[Exception]) -> None:
    conn = milter.Connection()
    conn.receive_data(data)
    with pytest.raises(error):
        while True:
            event = conn.next_event()
            assert event is not milter.NEED_DATA
            conn.send(milter.Continue())


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 10])
def test_truncated_packet_at_end_of_stream(cut: int) -> None:
    data = optneg() + mail()
    conn = milter.Connection()
    conn.receive_data(data[: len(optneg()) + cut])
    next_event(conn)
    conn.send(milter.Continue())
    assert conn.next_event() is milter.NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(milter.MalformedPacket, match="end of stream"):
        conn.next_event()


def test_nothing_after_quit() -> None:
    conn = negotiated(None, QUIT, connect())
    assert isinstance(next_event(conn), milter.Quit)
    assert isinstance(next_event(conn), milter.ConnectionClosed)
    assert isinstance(next_event(conn), milter.ConnectionClosed)


def test_clean_end_of_stream() -> None:
    conn = negotiated(None)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), milter.ConnectionClosed)
    assert conn.state is State.CLOSED
    with pytest.raises(milter.LocalProtocolError):
        conn.receive_data(b"more")


def test_smaller_max_packet() -> None:
    conn = milter.Connection(max_packet=100)
    conn.receive_data(optneg() + body(b"x" * 100))
    next_event(conn)
    conn.send(milter.Continue())
    with pytest.raises(milter.PacketTooLarge):
        conn.next_event()


# -- chunking: the same stream in any pieces gives the same events ------------------------


def _reference(stream: bytes) -> tuple[list[milter.Event], bytes]:
    return drive(milter.Connection(), [stream])


SMALL = session(version=6, messages=1)


def test_every_split_point_small_session() -> None:
    expected = _reference(SMALL)
    for i in range(len(SMALL) + 1):
        assert drive(milter.Connection(), [SMALL[:i], SMALL[i:]]) == expected, i


def test_byte_by_byte_small_session() -> None:
    expected = _reference(SMALL)
    chunks = [SMALL[i : i + 1] for i in range(len(SMALL))]
    assert drive(milter.Connection(), chunks) == expected


LARGE = session(
    version=6, messages=3, body_chunks=[b"line of body text\r\n" * 40, b"x" * 5000, b"end\r\n"]
)
LARGE_EXPECTED = _reference(LARGE)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(LARGE)), max_size=60))
def test_random_chunkings_large_session(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(LARGE)]
    chunks = [LARGE[a:b] for a, b in itertools.pairwise(points)]
    assert drive(milter.Connection(), chunks) == LARGE_EXPECTED
