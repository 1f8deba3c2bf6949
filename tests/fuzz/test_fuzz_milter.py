"""Hostile milter input: the codec and the Connection state machine only ever raise
RemoteProtocolError on what the MTA sends, and everything they write back is well-formed.

Two generators: arbitrary byte streams (with or without a valid negotiation in front), and
structured mutations of valid Postfix v2/v6 sessions (packets dropped, duplicated,
swapped, truncated, length fields corrupted, command bytes changed, hostile payloads).
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from fuzz_targets import (
    _pump,
    check_reply_stream,
    examples,
    milter_mutation,
    milter_stream,
    mutate,
    pkt,
    session_packets,
    z,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dkimd import milter
from dkimd.milter.codec import FrameReader, PayloadReader, decode

FUZZ = settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

COMMANDS = st.sampled_from([*list(b"OCHMRTLNBEAQKDU"), 0, 88, 255])


@FUZZ
@given(st.binary(max_size=2048))
@example(b"\x01" + b"\x00\x00\x00\x00")  # zero-length packet after negotiation
@example(b"\x01" + b"\xff\xff\xff\xffO")  # 4 GB length
@example(b"\x00" + b"\x00\x00\x00\x01")  # negotiation missing, command truncated
@example(b"\x03" + pkt("X"))  # unknown command
@example(b"\x03" + pkt("L", b"Subject\0x\0"))  # header before connect
@example(b"\x03" + pkt("C", b"host\0"))  # connect without family
@example(b"\x03" + pkt("D"))  # macro packet without a stage byte
@example(b"\x03" + pkt("D", b"Cname\0"))  # macro without a value
def test_random_stream(data: bytes) -> None:
    milter_stream(data)


@FUZZ
@given(st.binary(min_size=1, max_size=64))
@example(b"\x80")
@example(b"\x00\x00")
def test_mutated_postfix_session(ops: bytes) -> None:
    milter_mutation(ops)


@FUZZ
@given(st.lists(st.tuples(COMMANDS, st.binary(max_size=64)), max_size=30), st.integers(1, 64))
def test_packet_sequences(packets: list[tuple[int, bytes]], chunk: int) -> None:
    """Well-framed packets in any order with any payload: framing never desynchronizes."""
    stream = b"".join(session_packets()[:1]) + b"".join(pkt(c, p) for c, p in packets)
    conn = milter.Connection(milter.FilterOptions())
    out = _pump(conn, [stream[i : i + chunk] for i in range(0, len(stream), chunk)])
    check_reply_stream(out)


@FUZZ
@given(COMMANDS, st.binary(max_size=200))
def test_decode_payloads(command: int, payload: bytes) -> None:
    """Every decoder, any payload: an event or MalformedPacket, nothing else."""
    try:
        event = decode(command, payload)
    except milter.MalformedPacket:
        return
    assert isinstance(event, milter.Event)


@FUZZ
@given(st.binary(max_size=64), st.integers(1, 100))
def test_frame_reader_any_split(data: bytes, max_packet: int) -> None:
    """FrameReader gives the same packets however the stream is split."""

    def packets(chunks: list[bytes]) -> tuple[list[tuple[int, bytes]], str | None]:
        r = FrameReader(max_packet)
        got: list[tuple[int, bytes]] = []
        try:
            for c in chunks:
                r.feed(c)
                got += list(r)
        except milter.RemoteProtocolError as exc:
            return got, type(exc).__name__
        return got, None

    whole = packets([data])
    bytewise = packets([data[i : i + 1] for i in range(len(data))])
    assert whole == bytewise


@FUZZ
@given(st.binary(max_size=40))
def test_payload_reader_bounds(data: bytes) -> None:
    r = PayloadReader(ord("C"), data)
    for read in (r.u16, r.u32, r.byte, r.cstring, r.cstrings, r.rest):
        with contextlib.suppress(milter.MalformedPacket):
            read()
        assert 0 <= r.remaining <= len(data)


def test_seed_session_is_valid() -> None:
    """The unmutated seeds are accepted end to end (so mutations start from valid input)."""
    for version in (2, 6):
        stream = b"".join(session_packets(version=version))
        conn = milter.Connection(milter.FilterOptions())
        out = check_reply_stream(_pump(conn, [stream]))
        assert conn.state is milter.State.CLOSED
        assert out[0][0] == ord("O")
        assert any(code == ord("i") for code, _ in out)


@pytest.mark.parametrize(
    "stream",
    [
        pkt("O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF)) + pkt("C", z("h") + b"4\x00"),
        pkt("O", struct.pack(">II", 6, 0x1FF)),
        pkt("O", struct.pack(">III", 0, 0, 0)),
        pkt("O", struct.pack(">III", 2**32 - 1, 2**32 - 1, 2**32 - 1)),
        mutate(b"".join(session_packets()), b"\x05hostile"),
    ],
)
def test_regression_streams(stream: bytes) -> None:
    conn = milter.Connection(milter.FilterOptions())
    check_reply_stream(_pump(conn, [stream]))
