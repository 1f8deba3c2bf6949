"""Canonicalization (RFC 6376 3.4): the RFC's example, the empty-body rules, chunk independence,
bounded memory, and agreement with dkimpy's implementation."""

from __future__ import annotations

import hashlib
import tracemalloc

import dkim.canonicalization as dkimpy_canon
from hypothesis import given, settings
from hypothesis import strategies as st

from dkimd.dkim import (
    BodyCanonicalizer,
    LineEndingNormalizer,
    MessageSplitter,
    canonicalize_body,
    canonicalize_header,
    split_message,
)
from dkimd.dkim.canonicalization import BodyHashSet

# RFC 6376 section 3.4.6, byte for byte.
EXAMPLE = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n"


def test_rfc6376_example_relaxed() -> None:
    headers, offset = split_message(EXAMPLE)
    assert b"".join(canonicalize_header(f, "relaxed") for f in headers) == b"a:X\r\nb:Y Z\r\n"
    assert canonicalize_body(EXAMPLE[offset:], "relaxed") == b" C\r\nD E\r\n"


def test_rfc6376_example_simple() -> None:
    headers, offset = split_message(EXAMPLE)
    assert (
        b"".join(canonicalize_header(f, "simple") for f in headers)
        == b"A: X\r\nB : Y\t\r\n\tZ  \r\n"
    )
    assert canonicalize_body(EXAMPLE[offset:], "simple") == b" C \r\nD \t E\r\n"


def test_empty_body_rules() -> None:
    # Simple: an empty body is one CRLF (3.4.3). Relaxed: the empty string (errata 1384).
    assert canonicalize_body(b"", "simple") == b"\r\n"
    assert canonicalize_body(b"", "relaxed") == b""
    assert canonicalize_body(b"\r\n\r\n\r\n", "simple") == b"\r\n"
    assert canonicalize_body(b"\r\n \t\r\n\r\n", "relaxed") == b""
    e3b0 = hashlib.sha256(b"").digest()
    assert BodyCanonicalizer("relaxed").digest() == e3b0
    assert BodyCanonicalizer("simple").digest() == hashlib.sha256(b"\r\n").digest()


def test_missing_final_crlf_is_added() -> None:
    assert canonicalize_body(b"abc", "simple") == b"abc\r\n"
    assert canonicalize_body(b"abc  ", "relaxed") == b"abc \r\n"  # as dkimpy does
    assert canonicalize_body(b"abc\r", "simple") == b"abc\r\r\n"


def test_header_relaxed_unfolds_and_lowercases() -> None:
    headers, _ = split_message(b"SUBJECT :  a \t b\r\n  c \r\n\r\n")
    assert canonicalize_header(headers[0], "relaxed") == b"subject:a b c\r\n"
    assert canonicalize_header(headers[0], "relaxed", crlf=False) == b"subject:a b c"


def _digest(canon: str, chunks: list[bytes], limit: int | None) -> tuple[bytes, int, int]:
    c = BodyCanonicalizer(canon, "sha256", limit)
    for chunk in chunks:
        c.update(chunk)
    return c.digest(), c.length, c.hashed


# Bodies built from the pieces that matter at chunk boundaries: CR, LF, CRLF, WSP runs, empty
# lines, text.
_PIECES = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b" ", b"\t", b"  \t ", b"\r\n\r\n", b"x", b"abc", b" \r\n", b"\xff"]
)
_BODIES = st.lists(_PIECES, max_size=40).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(
    body=_BODIES,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    canon=st.sampled_from(["simple", "relaxed"]),
    limit=st.one_of(st.none(), st.integers(min_value=0, max_value=60)),
)
def test_chunking_never_changes_the_hash(
    body: bytes, cuts: list[int], canon: str, limit: int | None
) -> None:
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert b"".join(chunks) == body
    assert _digest(canon, chunks, limit) == _digest(canon, [body], limit)
    # Byte-by-byte is the harshest split of all: every CR/LF pair and WSP run is cut.
    assert _digest(canon, [body[i : i + 1] for i in range(len(body))], limit) == _digest(
        canon, [body], limit
    )


@settings(max_examples=300, deadline=None)
@given(body=_BODIES)
def test_agrees_with_dkimpy(body: bytes) -> None:
    assert canonicalize_body(body, "simple") == dkimpy_canon.Simple.canonicalize_body(body)
    assert canonicalize_body(body, "relaxed") == dkimpy_canon.Relaxed.canonicalize_body(body)


def test_length_limit_counts_canonical_bytes() -> None:
    c = BodyCanonicalizer("relaxed", "sha256", 5)
    c.update(b"hello   world\r\n\r\n")
    assert c.digest() == hashlib.sha256(b"hello").digest()
    assert c.length == len(b"hello world\r\n")
    assert c.beyond_limit == len(b"hello world\r\n") - 5


def test_millions_of_blank_lines_use_bounded_memory() -> None:
    block = b"\r\n" * 500_000  # 1 MB per chunk, 5 million empty lines in all
    tracemalloc.start()
    try:
        c = BodyCanonicalizer("simple")
        c.update(b"text\r\n")
        for _ in range(10):
            c.update(block)
        _, peak_before = tracemalloc.get_traced_memory()
        c.update(b"more\r\n")  # releases all held empty lines at once
        c.digest()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = b"text\r\n" + b"\r\n" * 5_000_000 + b"more\r\n"
    assert c.length == len(expected)
    assert c.digest() == hashlib.sha256(expected).digest()
    # Peak is a few chunk-sized temporaries, not the 10 MB of held lines.
    assert peak < 4 * len(block)
    assert peak_before < 4 * len(block)


def test_body_hash_set_shares_one_pass() -> None:
    hashes = BodyHashSet(
        [("relaxed", "sha256", None), ("relaxed", "sha256", None), ("simple", "sha256", 3)]
    )
    assert len(hashes) == 2
    hashes.update(b"a  b \r\n")
    hashes.finish()
    assert hashes[("relaxed", "sha256", None)].digest() == hashlib.sha256(b"a b\r\n").digest()
    assert hashes[("simple", "sha256", 3)].digest() == hashlib.sha256(b"a  ").digest()


@settings(max_examples=200, deadline=None)
@given(
    body=st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\r\n\r\n"]), max_size=30).map(
        b"".join
    ),
    cut=st.integers(min_value=0, max_value=100),
)
def test_line_ending_normalizer_is_chunk_independent(body: bytes, cut: int) -> None:
    whole = LineEndingNormalizer()
    expected = whole.feed(body) + whole.flush()
    split = LineEndingNormalizer()
    got = split.feed(body[:cut]) + split.feed(body[cut:]) + split.flush()
    assert got == expected
    assert b"\n" not in expected.replace(b"\r\n", b"")


def test_message_splitter_across_chunks() -> None:
    message = b"A: 1\r\nB: 2\r\n\r\nbody\r\n"
    for cut in range(len(message) + 1):
        s = MessageSplitter()
        body = s.feed(message[:cut]) + s.feed(message[cut:])
        s.finish()
        assert s.headers is not None and [f.name for f in s.headers] == [b"A", b"B"]
        assert body == b"body\r\n"
