"""The whole MilterSession behind a real milter.Connection, fed hostile sessions.

Invariant: for every event the Connection accepts, `MilterSession.handle` returns without
raising, its answer is a valid reply for that event (Connection.send accepts it), and the
bytes written back are well-formed milter replies (header values folded, SMTP text on one
line). The configurations cycle through every On-* action, sign and verify paths, and key
records that are good, revoked, garbage or several per name.
"""

from __future__ import annotations

from fuzz_targets import examples, run_session, session, world
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=examples(120),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SIG_TEXT = st.sampled_from(
    [
        b" v=1; a=rsa-sha256; d=example.com; s=mail; h=from; bh=YWJj; b=YWJj",
        b" v=1; a=rsa-sha256; d=example.com; s=revoked; h=from; bh=YWJj; b=YWJj",
        b" v=1; a=rsa-sha256; d=example.com; s=junk; h=from; bh=YWJj; b=YWJj",
        b" v=1; a=rsa-sha256; d=example.com; s=two; h=from; bh=YWJj; b=YWJj",
        b" v=1; a=rsa-sha256; d=example.com; s=nope; h=from; bh=YWJj; b=YWJj; x=1",
        b" v=1; a=ed25519-sha256; d=example.com; s=mail; h=from; bh=YWJj; b=YWJj; l=3",
        b" v=1; a=rsa-sha256; d=example.com; s=mail; h=from; bh=YWJj; b=YWJj\r\n\tX-Evil: 1",
        b" v=1; a=rsa-sha256; d=ex\xffample.com; s=mail\r; h=from; bh=YWJj; b=YWJj",
        b" garbage",
        b"",
    ]
) | st.binary(max_size=80)
HEADER = st.one_of(
    st.tuples(st.just(b"DKIM-Signature"), SIG_TEXT),
    st.tuples(
        st.just(b"Authentication-Results"),
        st.sampled_from([b" mx.test.example; dkim=pass", b" (c) MX.TEST.EXAMPLE; x", b" other; y"])
        | st.binary(max_size=40),
    ),
    st.tuples(
        st.sampled_from([b"From", b"from", b"Sender", b"To", b"Subject", b"X\x80"]),
        st.sampled_from([b" a@example.com", b" <>", b' "x@y" <b@example.com>', b" @", b""])
        | st.binary(max_size=40),
    ),
)


@FUZZ
@given(
    st.integers(0, 0x7F),
    st.lists(HEADER.map(lambda h: (h[0], h[1].replace(b"\0", b""))), max_size=8),
    st.binary(max_size=300),
    st.sampled_from([1, 5, 4096]),
)
def test_session_structured(
    flags: int, headers: list[tuple[bytes, bytes]], body: bytes, chunk: int
) -> None:
    run_session(flags, headers, body, chunk=chunk)


@FUZZ
@given(st.binary(max_size=400))
@example(b"\x30")  # signed, internal client: the daemon signs
@example(b"\x10")  # signed by us, from outside: verify passes
@example(b"\x90\x01")  # signed and packets mutated
@example(b"\x00\x01:\xff\x01:\xff")  # two empty DKIM-Signature fields
def test_session_bytes(data: bytes) -> None:
    session(data)


def test_session_signs_and_verifies() -> None:
    """The seeds reach the interesting paths (not just early rejections)."""
    w = world()
    signed = w.signed_message()
    out = run_session(0x20, [(b"From", b" a@example.com"), (b"To", b" b@x")], b"hi\r\n")
    assert b"DKIM-Signature\0" in out
    out = run_session(0x00, signed, b"Hello,\r\nworld.\r\n")
    assert b"dkim=pass" in out
    out = run_session(0x01, signed, b"tampered\r\n")  # On-BadSignature reject
    assert b"dkim=fail" in out and b"y\x00\x00" not in out
    assert b"550 5.7.0 bad DKIM signature data" in out
