"""Framing, payload decoding and action encoding, from bytes (no sockets)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dkimd import milter
from dkimd.milter import codec
from dkimd.milter.constants import Command, Family
from support.milterwire import body, connect, header, macro, mail, optneg, pkt, rcpt, z


def test_frame_reader_whole_and_partial() -> None:
    reader = codec.FrameReader()
    data = pkt("T") + pkt("B", b"abc") + pkt("N")
    reader.feed(data[:3])
    assert list(reader) == []
    reader.feed(data[3:7])  # T complete, B has 2 of its 8 bytes
    assert list(reader) == [(ord("T"), b"")]
    reader.feed(data[7:])
    assert list(reader) == [(ord("B"), b"abc"), (ord("N"), b"")]
    assert reader.pending == 0


def test_frame_reader_byte_by_byte() -> None:
    reader = codec.FrameReader()
    data = pkt("B", b"x" * 300) + pkt("E")
    got = []
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        got += list(reader)
    assert got == [(ord("B"), b"x" * 300), (ord("E"), b"")]


def test_zero_length_packet() -> None:
    reader = codec.FrameReader()
    reader.feed(b"\0\0\0\0")
    with pytest.raises(milter.MalformedPacket, match="zero-length"):
        reader.next_packet()


def test_oversized_length_refused_before_payload_arrives() -> None:
    reader = codec.FrameReader(max_packet=1000)
    reader.feed(struct.pack(">I", 1001))
    with pytest.raises(milter.PacketTooLarge):
        reader.next_packet()


def test_packet_at_limit_accepted() -> None:
    reader = codec.FrameReader(max_packet=1000)
    reader.feed(pkt("B", b"y" * 999))
    assert reader.next_packet() == (ord("B"), b"y" * 999)


def test_default_limit_and_huge_length() -> None:
    reader = codec.FrameReader()
    assert reader.max_packet == milter.DEFAULT_MAX_PACKET
    reader.feed(b"\xff\xff\xff\xffB")
    with pytest.raises(milter.PacketTooLarge):
        reader.next_packet()


def _decode(packet: bytes) -> milter.Event:
    reader = codec.FrameReader()
    reader.feed(packet)
    got = reader.next_packet()
    assert got is not None
    return codec.decode(*got)


def test_decode_optneg() -> None:
    event = _decode(optneg(6, 0x1FF, 0x1FFFFF))
    assert event == milter.OptionNegotiation(
        6, milter.ActionFlag(0x1FF), milter.ProtocolFlag(0x1FFFFF)
    )


def test_decode_optneg_short() -> None:
    with pytest.raises(milter.MalformedPacket, match="SMFIC_OPTNEG"):
        _decode(pkt("O", b"\0\0\0\6\0\0"))


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (connect("h", "4", 25, "192.0.2.1"), milter.Connect("h", Family.INET, 25, "192.0.2.1")),
        (
            connect("h", "6", 587, "2001:db8::1"),
            milter.Connect("h", Family.INET6, 587, "2001:db8::1"),
        ),
        (
            connect("localhost", "L", 0, "/run/sock"),
            milter.Connect("localhost", Family.UNIX, 0, "/run/sock"),
        ),
        (connect("[192.0.2.9]", "U"), milter.Connect("[192.0.2.9]", Family.UNKNOWN)),
    ],
)
def test_decode_connect(packet: bytes, expected: milter.Connect) -> None:
    assert _decode(packet) == expected


@pytest.mark.parametrize(
    "packet",
    [
        pkt("C", z("h") + b"X" + struct.pack(">H", 25) + z("1.2.3.4")),  # family
        pkt("C", z("h") + b"4" + b"\0"),  # truncated port
        pkt("C", z("h") + b"4" + struct.pack(">H", 25) + b"1.2.3.4"),  # no NUL
        pkt("C", b"h"),  # no NUL in host name
        pkt("C", z("h")),  # no family
        pkt("C", z("h") + b"4" + struct.pack(">H", 25) + z("1.2.3.4") + b"junk"),
    ],
)
def test_decode_connect_malformed(packet: bytes) -> None:
    with pytest.raises(milter.MalformedPacket):
        _decode(packet)


def test_decode_envelope() -> None:
    assert _decode(mail("<a@b>", "SIZE=10", "BODY=8BITMIME")) == milter.MailFrom(
        "<a@b>", ("SIZE=10", "BODY=8BITMIME")
    )
    assert _decode(rcpt("<c@d>")) == milter.RcptTo("<c@d>", ())
    with pytest.raises(milter.MalformedPacket):
        _decode(pkt("R"))
    with pytest.raises(milter.MalformedPacket):
        _decode(pkt("M", b"<a@b>"))


def test_decode_8bit_text_round_trips() -> None:
    event = _decode(mail(b"<j\xc3\xb6rg@b>"))
    assert isinstance(event, milter.MailFrom)
    assert event.address == "<jörg@b>"
    event = _decode(pkt("H", b"\xff\xfe\0"))
    assert isinstance(event, milter.Helo)
    assert event.name.encode("utf-8", "surrogateescape") == b"\xff\xfe"


def test_decode_macros() -> None:
    event = _decode(macro("C", {"j": "mx", "{daemon_name}": "smtpd"}))
    assert event == milter.Macros(ord("C"), {"j": "mx", "{daemon_name}": "smtpd"})
    assert _decode(pkt("D", b"M")) == milter.Macros(ord("M"), {})
    with pytest.raises(milter.MalformedPacket, match="without a value"):
        _decode(pkt("D", b"M" + z("i")))
    with pytest.raises(milter.MalformedPacket):
        _decode(pkt("D"))


def test_decode_header_and_leading_space() -> None:
    assert _decode(header("Subject", " hi")) == milter.Header(b"Subject", b" hi")
    payload = z("Subject", "hi")
    assert codec.decode_header(payload, leading_space=False) == milter.Header(b"Subject", b" hi")
    assert codec.decode_header(z("X", ""), leading_space=False) == milter.Header(b"X", b"")
    with pytest.raises(milter.MalformedPacket):
        _decode(pkt("L", z("Subject")))
    with pytest.raises(milter.MalformedPacket):
        _decode(pkt("L", z("", "value")))
    with pytest.raises(milter.MalformedPacket):
        _decode(pkt("L", z("a", "b", "c")))


def test_decode_body_eom_and_simple_commands() -> None:
    chunk = bytes(range(256)) * 3
    assert _decode(body(chunk)) == milter.BodyChunk(chunk)
    assert _decode(pkt("E")) == milter.EndOfMessage()
    assert _decode(pkt("E", b"tail\r\n")) == milter.EndOfMessage(b"tail\r\n")
    assert _decode(pkt("T")) == milter.Data()
    assert _decode(pkt("N")) == milter.EndOfHeaders()
    assert _decode(pkt("A")) == milter.Abort()
    assert _decode(pkt("Q")) == milter.Quit()
    assert _decode(pkt("K")) == milter.QuitNewConnection()
    assert _decode(pkt("U", z("XFOO bar"))) == milter.Unknown("XFOO bar")


def test_decode_unknown_command_byte() -> None:
    with pytest.raises(milter.MalformedPacket, match="unknown milter command"):
        codec.decode(ord("Z"), b"")


@given(st.binary(max_size=200))
def test_any_payload_decodes_or_raises_malformed(payload: bytes) -> None:
    for command in Command:
        with contextlib.suppress(milter.MalformedPacket):
            codec.decode(command, payload)


@given(st.binary(max_size=400))
def test_any_stream_frames_or_raises_remote_error(data: bytes) -> None:
    reader = codec.FrameReader(max_packet=4096)
    reader.feed(data)
    try:
        for command, payload in reader:
            with contextlib.suppress(milter.MalformedPacket):
                codec.decode(command, payload)
    except milter.RemoteProtocolError:
        pass


# -- encoding ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "wire"),
    [
        (milter.Continue(), b"\0\0\0\x01c"),
        (milter.Accept(), b"\0\0\0\x01a"),
        (milter.Reject(), b"\0\0\0\x01r"),
        (milter.TempFail(), b"\0\0\0\x01t"),
        (milter.Discard(), b"\0\0\0\x01d"),
        (milter.Skip(), b"\0\0\0\x01s"),
        (milter.Progress(), b"\0\0\0\x01p"),
        (milter.ReplyCode(550, "5.7.1", "no 100% sure"), pkt("y", z("550 5.7.1 no 100%% sure"))),
        (milter.ReplyCode(451), pkt("y", z("451"))),
        (milter.AddHeader(b"X-A", b" v"), pkt("h", z("X-A", " v"))),
        (
            milter.InsertHeader(0, b"DKIM-Signature", b" v=1"),
            pkt("i", b"\0\0\0\0" + z("DKIM-Signature", " v=1")),
        ),
        (milter.ChangeHeader(2, b"Subject", b""), pkt("m", b"\0\0\0\x02" + z("Subject", ""))),
        (milter.Quarantine("spam"), pkt("q", z("spam"))),
        (milter.AddRecipient("<x@y>"), pkt("+", z("<x@y>"))),
        (
            milter.AddRecipientWithArgs("<x@y>", "NOTIFY=NEVER"),
            pkt("2", z("<x@y>", "NOTIFY=NEVER")),
        ),
        (milter.DeleteRecipient("<x@y>"), pkt("-", z("<x@y>"))),
        (milter.ChangeSender("<s@y>"), pkt("e", z("<s@y>"))),
        (milter.ChangeSender("<s@y>", "SIZE=1"), pkt("e", z("<s@y>", "SIZE=1"))),
        (milter.ReplaceBody(b"new\r\n"), pkt("b", b"new\r\n")),
    ],
)
def test_encode_action(action: milter.Action, wire: bytes) -> None:
    assert codec.encode_action(action) == wire


def test_encode_header_without_leading_space_negotiated() -> None:
    # Postfix adds " " after the colon itself unless HDR_LEADSPC was negotiated.
    assert codec.encode_action(milter.AddHeader(b"X-A", b" v"), False) == pkt("h", z("X-A", "v"))
    assert codec.encode_action(milter.AddHeader(b"X-A", b"v"), False) == pkt("h", z("X-A", "v"))


def test_replace_body_is_split_into_chunks() -> None:
    data = b"a" * 65535 + b"b" * 10
    wire = codec.encode_action(milter.ReplaceBody(data))
    assert wire == pkt("b", b"a" * 65535) + pkt("b", b"b" * 10)


def test_optneg_reply_with_symlist() -> None:
    wire = codec.encode_optneg_reply(6, 0x101, 0x400, [(0, ["j", "{daemon_name}"]), (2, ["i"])])
    payload = struct.pack(">III", 6, 0x101, 0x400)
    payload += struct.pack(">I", 0) + z("j {daemon_name}") + struct.pack(">I", 2) + z("i")
    assert wire == pkt("O", payload)


@pytest.mark.parametrize(
    "build",
    [
        lambda: milter.AddHeader(b"", b"v"),
        lambda: milter.AddHeader(b"X:Y", b"v"),
        lambda: milter.AddHeader(b"X Y", b"v"),
        lambda: milter.AddHeader(b"X", b"a\0b"),
        lambda: milter.InsertHeader(-1, b"X", b"v"),
        lambda: milter.ChangeHeader(2**31, b"X", b"v"),
        lambda: milter.ReplyCode(250),
        lambda: milter.ReplyCode(550, "4.7.1"),
        lambda: milter.ReplyCode(550, "5.7"),
        lambda: milter.ReplyCode(550, "5.7.1", "two\r\nlines"),
        lambda: milter.Quarantine("a\0b"),
        lambda: milter.AddRecipient("a\0b"),
    ],
)
def test_action_validation(build: object) -> None:
    with pytest.raises(milter.LocalProtocolError):
        build()  # type: ignore[operator]


def test_event_validation() -> None:
    with pytest.raises(milter.LocalProtocolError):
        milter.Connect("h", Family.INET, 70000, "x")
    with pytest.raises(milter.LocalProtocolError):
        milter.Header(b"", b"v")


@given(st.binary(min_size=1, max_size=20), st.binary(max_size=40), st.booleans())
def test_fast_header_events_are_ordinary_header_events(
    name: bytes, value: bytes, leading_space: bool
) -> None:
    """decode_header's shortcut for a well-formed payload gives what the checked path would."""
    payload = name + b"\0" + value + b"\0"
    try:
        event = codec.decode_header(payload, leading_space)
    except milter.MalformedPacket:
        assert b"\0" in name or b"\0" in value
        return
    assert type(event) is milter.Header
    if b"\0" not in name and b"\0" not in value:
        expected = value if leading_space or not value else b" " + value
        assert event == milter.Header(name, expected)
        assert repr(event) == repr(milter.Header(name, expected))
        assert hash(event) == hash(milter.Header(name, expected))
    with pytest.raises(AttributeError):
        event.name = b"other"  # type: ignore[misc]
