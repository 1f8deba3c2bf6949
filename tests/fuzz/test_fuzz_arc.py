"""Hostile ARC input (RFC 8617): field values built from the grammar's edges, header blocks
of instance bombs, duplicate instances, gaps and huge fields. Parsers return a value or raise
ArcFieldError; the verifier always ends in none, pass or fail; the sealer refuses or adds a
well-formed next set (see fuzz_targets.arc_fields / arc_chain for the invariants)."""

from __future__ import annotations

import time

import pytest
from fuzz_targets import arc_chain, arc_fields, arc_trusted, examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dkimd.arc import ArcFieldError, ArcVerifier, ChainState, parse_seal
from dkimd.dkim import HeaderField

FUZZ = settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

INSTANCE = st.sampled_from(["1", "2", "3", "50", "51", "0", "00", "-1", "999", "", "x", "1 1"])
VALUE = st.sampled_from(
    [
        "rsa-sha256",
        "ed25519-sha256",
        "rsa-sha1",
        "none",
        "pass",
        "fail",
        "PASS",
        "x",
        "",
        "AAAA",
        "from:to",
        "from:arc-seal",
        "relaxed/relaxed",
        "example.org",
        "12345",
        "\\0",
        "\\x80\\xff",
    ]
)
TAG = st.sampled_from(["i", "a", "b", "bh", "cv", "d", "s", "t", "x", "h", "c", "l", "v", "z"])


@st.composite
def arc_value(draw: st.DrawFn) -> bytes:
    tags = [("i", draw(INSTANCE))]
    tags += draw(st.lists(st.tuples(TAG, VALUE), max_size=10))
    if draw(st.booleans()):
        draw(st.randoms()).shuffle(tags)
    sep = draw(st.sampled_from(["; ", ";", ";\\r\\n\\t", " ; "]))
    return (" " + sep.join(f"{k}={v}" for k, v in tags)).encode("latin-1")


@FUZZ
@given(arc_value())
@example(b" i=1; a=rsa-sha256; cv=none; d=x; s=y; b=AAAA; h=from")
@example(b" i=1; lists.example.org; spf=pass")
def test_arc_field_values(value: bytes) -> None:
    arc_fields(value)


@FUZZ
@given(st.binary(max_size=400))
def test_arc_field_bytes(value: bytes) -> None:
    arc_fields(value)


@st.composite
def arc_block(draw: st.DrawFn) -> bytes:
    """A header block of ARC fields with chosen instances (gaps, duplicates, out of range)."""
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(
            st.sampled_from(["ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results"])
        )
        lines.append(f"{name}:".encode() + draw(arc_value()))
    lines.append(b"From: a@example.com")
    body = draw(st.binary(max_size=60))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@FUZZ
@given(arc_block())
def test_arc_chain_blocks(data: bytes) -> None:
    arc_chain(data)


@FUZZ
@given(st.binary(max_size=600))
@example(b"ARC-Seal: i=1\n\n")
@example(b"\x00ARC-Seal: i=50; cv=pass\nARC-Seal: i=50; cv=pass\n\n")
def test_arc_chain_bytes(data: bytes) -> None:
    arc_chain(data)


def test_instance_bomb_costs_no_parsing() -> None:
    """100,000 ARC fields: refused on the count, well under a second."""
    fields = [
        HeaderField(
            b"ARC-Seal", b" i=%d; a=rsa-sha256; cv=pass; d=x.example; s=s; b=AAAA" % (n % 50 + 1)
        )
        for n in range(100_000)
    ]
    start = time.perf_counter()
    verifier = ArcVerifier(fields)
    assert verifier.result().state is ChainState.FAIL and verifier.key_queries() == []
    assert time.perf_counter() - start < 2.0


def test_huge_field_is_bounded() -> None:
    """A 1 MB b= value: rejected by the signature length check, not decoded."""
    huge = b" i=1; a=rsa-sha256; cv=none; d=x.example; s=s; b=" + b"A" * 1_000_000
    start = time.perf_counter()
    with pytest.raises(ArcFieldError, match="too long"):
        parse_seal(HeaderField(b"ARC-Seal", huge))
    arc_fields(huge)
    block = b"ARC-Seal:" + huge + b"\r\nFrom: a@example.com\r\n\r\nbody\r\n"
    arc_chain(block)
    assert time.perf_counter() - start < 2.0  # ~0.02 s: the length is checked first


@st.composite
def trusted_block(draw: st.DrawFn) -> bytes:
    """Authentication-Results fields under our authserv-id and others, SealHeaderChecks'
    fields with JSON-ish values, folded and not."""
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.sampled_from(["Authentication-Results", "List-Id", "X-Tags", "Subject"]))
        ident = draw(st.sampled_from(["mx.test", "MX.Test", "(c) mx.test", '"mx.test"', "x"]))
        items = draw(
            st.lists(
                st.sampled_from(
                    [
                        "arc=pass",
                        "arc=fail",
                        "arc=none",
                        "arc",
                        "arc=",
                        'arc=pass reason="a;b"',
                        "spf=pass smtp.mailfrom=a (c;d)",
                        "dkim=pass header.d=x",
                        "x-y=pass",
                        "iprev=pass policy.iprev=192.0.2.1",
                        '["forward", 1, ["x"]]',
                        "[" * 50,
                        "\\",
                        "(unclosed",
                        '"unclosed',
                        "\r\n\t",
                        "\x80\xff",
                    ]
                ),
                max_size=6,
            )
        )
        value = (
            f"{ident}; " + "; ".join(items) if name == "Authentication-Results" else " ".join(items)
        )
        lines.append(f"{name}: {value}".encode("latin-1"))
    return b"\n".join(lines) + b"\n\nbody\n"


@FUZZ
@given(trusted_block())
@example(b"Authentication-Results: mx.test; arc=pass\nX-Tags: " + b"[" * 100000 + b"\n\n")
def test_arc_trusted_fields(data: bytes) -> None:
    arc_trusted(data)


@FUZZ
@given(st.binary(max_size=600))
def test_arc_trusted_bytes(data: bytes) -> None:
    arc_trusted(data)
