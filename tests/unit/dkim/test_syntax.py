"""libopendkim's syntax checks (dkimd.dkim.syntax): what it refuses, and what it lets through."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkimd.dkim import HeaderField, TagListError, parse_tag_list, signature_fields
from dkimd.dkim.syntax import header_syntax_error, signature_tag_list_error, strict_header_error
from dkimd.dkim.tags import TagList

# The signature of OpenDKIM's t-verify-syntax, with the missing ";" put back.
GOOD = (
    b" v=1; a=rsa-sha256; c=simple/simple; d=example.com; s=test;\r\n"
    b"\tt=1283905216; bh=3VWGQGY+cSNYd1MGM+X6hRXU0stl8JCaQtl4mbX/j2I=;\r\n"
    b"\th=From:Date:Subject;\r\n\tb=AiGrvHu2mODRK2BlLXJy/YjCiBg3qr/QZ7laVq7ccMeA2QDmrksc9\r\n"
    b"\t lgIJh+8gzyQeGZz8TYX/LJaBg8kH8jn0w70hvI63sgN4wytwhvpvkPInUhLXgpkknj"
)


def test_a_well_formed_signature_passes() -> None:
    assert signature_tag_list_error(GOOD) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        # t-verify-syntax: "v=1 a=rsa-sha256;" makes v "1 a=rsa-sha256" and leaves no a=.
        (GOOD.replace(b"v=1;", b"v=1"), "missing parameter"),
        (GOOD.replace(b" a=rsa-sha256;", b""), "missing parameter"),
        (GOOD.replace(b" d=example.com;", b""), "missing parameter"),
        (GOOD.replace(b"t=1283905216", b"t=12x"), 'invalid "t" value'),
        (GOOD.replace(b"t=1283905216", b"t=-1"), 'invalid "t" value'),
        (GOOD.replace(b"t=1283905216", b"t="), 'invalid "t" value'),
        (GOOD + b"; x=18446744073709551615", 'invalid "x" value'),
        (GOOD + b"; z", "tag without value at end"),
        (GOOD + b"; a b=1", "syntax error"),
        (GOOD + b"; _x=1", "syntax error"),
        (GOOD.replace(b"d=example.com", b"d=ex\xc3\xa4mple.com"), "invalid character"),
        (GOOD.replace(b"d=example.com", b"d=exam\x01ple.com"), "invalid character"),
    ],
)
def test_what_libopendkim_refuses(value: bytes, reason: str) -> None:
    problem = signature_tag_list_error(value)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    "value",
    [
        GOOD + b"; a=rsa-sha1",  # a repeated tag: the last one wins, no error
        GOOD.replace(b"c=simple/simple", b"c=bogus/bogus"),  # judged per signature later
        GOOD.replace(b" bh=3VWGQGY+cSNYd1MGM+X6hRXU0stl8JCaQtl4mbX/j2I=;", b""),  # likewise
        GOOD.replace(b"s=test", b"s="),  # present, even empty, is enough here
        GOOD.replace(b"t=1283905216", b"t=+12"),  # strtoull takes a sign
        GOOD + b";  ",
        GOOD + b"; q = dns/txt",  # space before "=" is allowed
    ],
)
def test_what_libopendkim_lets_through(value: bytes) -> None:
    assert signature_tag_list_error(value) is None


def test_a_nul_ends_the_value_as_in_c() -> None:
    assert signature_tag_list_error(GOOD + b"\0 garbage;;") is None


def test_header_syntax_error_looks_at_signatures_and_names() -> None:
    from_ = HeaderField(b"From", b" user@example.com")
    assert header_syntax_error([from_, HeaderField(b"DKIM-Signature", GOOD)]) is None
    broken = HeaderField(b"dkim-signature ", GOOD.replace(b"v=1;", b"v=1"))
    assert header_syntax_error([from_, broken]) == "missing parameter(s) in signature data"
    assert header_syntax_error([HeaderField(b"X-\xe9t\xe9", b" x"), from_]) is not None
    # A name with ";" is dropped by the filter before libopendkim sees it.
    assert header_syntax_error([HeaderField(b"X;\xe9", b" x"), from_]) is None


def _fields(*names: str) -> list[HeaderField]:
    return [HeaderField(n.encode(), b" x") for n in names]


def test_strict_headers_counts() -> None:
    ok = _fields("From", "Date", "Subject", "To")
    assert strict_header_error(ok, author_parses=True) is None
    assert strict_header_error(ok, author_parses=False) == "From: header field cannot be parsed"
    assert "multiple From" in (strict_header_error([*ok, *_fields("from ")], True) or "")
    assert "multiple Subject" in (strict_header_error([*ok, *_fields("Subject")], True) or "")
    assert "multiple To" in (strict_header_error([*ok, *_fields("TO")], True) or "")
    assert "multiple Message-ID" in (
        strict_header_error([*ok, *_fields("Message-Id", "Message-ID")], True) or ""
    )
    assert strict_header_error(_fields("From", "Subject"), True) == "Date: header field absent"
    assert strict_header_error(_fields("Date", "Subject"), True) == "From: header field absent"
    # Fields that may repeat.
    assert strict_header_error([*ok, *_fields("Received", "Received", "Comments")], True) is None


# -- the fast reader against a literal port of libopendkim's dkim_process_set -------------

_SPACE = frozenset(b" \t\n\v\f\r")


def _process_set_refuses(value: bytes) -> bool:
    """dkim_process_set for a signature, byte by byte as in libopendkim/dkim.c."""
    value = value.split(b"\0", 1)[0]
    tags: dict[bytes, bytes] = {}
    state, spaced = 0, False
    name = b""
    start = 0

    def collapse(text: bytes) -> bytes:
        return bytes(c for c in text if c not in _SPACE)

    for i, c in enumerate(value):
        if c > 0x7F or (not 0x20 <= c <= 0x7E and c not in _SPACE):
            return True
        if state == 0:
            if c in _SPACE:
                continue
            if not chr(c).isalnum():
                return True
            start, state = i, 1
        elif state == 1:
            if c in _SPACE:
                spaced = True
            elif c == 0x3D:
                name, state, spaced = collapse(value[start:i]), 2, False
            elif c == 0x3B or spaced:
                return True
        elif state == 2:
            if c in _SPACE:
                continue
            if c == 0x3B:
                tags[name], state = b"", 0
            else:
                start, state = i, 3
        elif c == 0x3B:
            tags[name], state = collapse(value[start:i]), 0
    if state == 1:
        return True
    if state == 2:
        tags[name] = b""
    elif state == 3:
        tags[name] = collapse(value[start:])
    if any(t not in tags for t in (b"s", b"h", b"d", b"b", b"v", b"a")):
        return True
    for t in (b"t", b"x"):
        v = tags.get(t)
        if v is not None:
            digits = v[1:] if v[:1] == b"+" else v
            if not digits.isdigit() or int(digits) >= 2**64 - 1:
                return True
    return False


_PIECES = [b"v=1", b"a=rsa-sha256", b"d=x", b"s=y", b"h=from", b"b=AA", b"t=5", b"x=+7"]
_NOISE = [b";", b" ", b"\t", b"\r\n\t", b"=", b"a", b"1", b"_", b"\x01", b"\xff", b"t=", b"x=-"]


@given(
    st.lists(st.sampled_from(_PIECES + _NOISE), max_size=20).map(b"".join)
    | st.lists(st.sampled_from(_PIECES), max_size=8).map(b"; ".join)
    | st.binary(max_size=40)
)
@settings(max_examples=3000, deadline=None)
def test_fast_reader_agrees_with_libopendkim(value: bytes) -> None:
    assert (signature_tag_list_error(value) is not None) == _process_set_refuses(value)


def _rfc_tags(value: bytes) -> TagList | None:
    try:
        return parse_tag_list(value)
    except TagListError:
        return None


_VALUE_BITS = [b"1", b"7", b"+", b"-", b"x", b" ", b"\r\n ", b"\xff", b"18446744073709551615"]
_SPEC = st.tuples(
    st.sampled_from([b"v", b"a", b"d", b"s", b"h", b"b", b"t", b"x", b"bh", b"q"]),
    st.lists(st.sampled_from(_VALUE_BITS), max_size=4).map(b"".join),
    st.sampled_from([b"", b" ", b"\r\n\t"]),
)
# Tag-lists RFC 6376's grammar reads (distinct names, FWS around names and values), with
# the values libopendkim judges differently: signs, spaces and folding in t= and x=,
# numbers too big, bytes above 0x7e.
_READABLE = st.tuples(
    st.lists(_SPEC, max_size=10, unique_by=lambda spec: spec[0]),
    st.sampled_from([b"", b";", b"; ", b";\r\n "]),
).map(lambda t: b";".join(ws + name + b"=" + value for name, value, ws in t[0]) + t[1])


@given(
    _READABLE.filter(lambda v: _rfc_tags(v) is not None)
    | st.lists(st.sampled_from(_PIECES), max_size=8, unique=True).map(b"; ".join)
)
@settings(max_examples=3000, deadline=None)
def test_the_rfc_reading_gives_the_same_verdict(value: bytes) -> None:
    # The milter hands the verifier's tag-list reading to the check: a value RFC 6376's
    # grammar reads must get the very reason the byte-by-byte reader gives.
    tags = _rfc_tags(value)
    assert tags is not None
    assert signature_tag_list_error(value, tags) == signature_tag_list_error(value)


@pytest.mark.parametrize(
    "value",
    [
        GOOD,
        GOOD.replace(b"d=example.com", b"d=ex\xc3\xa4mple.com"),  # above 0x7e: both refuse
        GOOD.replace(b"t=1283905216", b"t=12\r\n 83"),  # folding inside t= is dropped
        GOOD.replace(b"t=1283905216", b"t=12 x"),
        GOOD.replace(b"v=1;", b"v=1"),
        GOOD.replace(b"t=1283905216", b"t=+12"),
    ],
)
def test_the_rfc_reading_of_known_values(value: bytes) -> None:
    tags = parse_tag_list(value)
    assert signature_tag_list_error(value, tags) == signature_tag_list_error(value)


def test_header_syntax_error_takes_the_reading_it_is_given() -> None:
    from_ = HeaderField(b"From", b" user@example.com")
    broken = HeaderField(b"DKIM-Signature", GOOD.replace(b"v=1;", b"v=1"))
    bad_name = HeaderField(b"X-\x01", b" x")
    for headers in (
        [from_, HeaderField(b"DKIM-Signature", GOOD), broken],
        [bad_name, broken],
        [broken, bad_name],
        [HeaderField(b"DKIM-Signature\t", GOOD), from_],
        [HeaderField(b"X;\x01", b" x"), HeaderField(b"dkim-signature", b" v=1\0")],
    ):
        expected = header_syntax_error(headers)
        assert header_syntax_error(headers, signature_fields(headers)) == expected
    assert header_syntax_error([broken, bad_name]) == "missing parameter(s) in signature data"
    assert header_syntax_error([bad_name, broken]) == "invalid character in header field name"
    tab = [HeaderField(b"DKIM-Signature\t", GOOD)]
    assert header_syntax_error(tab) == "invalid character in header field name"
