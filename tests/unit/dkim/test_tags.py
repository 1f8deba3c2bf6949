"""Tag-list grammar (RFC 6376 3.2), including hostile input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkimd.dkim import TagListError, parse_tag_list
from dkimd.dkim.tags import _bad_fold, strip_fws


def test_parses_ordered_with_fws_trimmed() -> None:
    tags = parse_tag_list(b" v=1;\r\n\ta = rsa-sha256 ; h=from : to;")
    assert list(tags.items()) == [("v", "1"), ("a", "rsa-sha256"), ("h", "from : to")]


def test_trailing_semicolon_optional_and_empty_value_allowed() -> None:
    assert parse_tag_list("a=1") == {"a": "1"}
    assert parse_tag_list("a=1;") == {"a": "1"}
    assert parse_tag_list("p=") == {"p": ""}
    assert parse_tag_list("") == {}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a=1; a=2", "duplicate tag 'a'"),
        ("a=1;;b=2", "empty tag-spec"),
        ("a", "tag-spec without '='"),
        ("=1", "malformed tag name"),
        ("1a=1", "malformed tag name"),
        ("a b=1", "malformed tag name"),
        ("a=1\x00", "invalid character in value of tag 'a'"),
        ("a=x\ny", "invalid character in value of tag 'a'"),
        ("a=x\r\ny", "invalid character in value of tag 'a'"),  # CRLF not followed by WSP
    ],
)
def test_malformed_lists_raise_with_reason(text: str, reason: str) -> None:
    with pytest.raises(TagListError) as info:
        parse_tag_list(text)
    assert info.value.reason == reason


def test_tag_names_are_case_sensitive() -> None:
    assert parse_tag_list("a=1; A=2") == {"a": "1", "A": "2"}


def test_eight_bit_values_survive_latin1_round_trip() -> None:
    tags = parse_tag_list(b"i=j\xc3\xa9@example.com")
    assert tags["i"].encode("latin-1") == b"j\xc3\xa9@example.com"


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_tag_list_error(data: bytes) -> None:
    try:
        tags = parse_tag_list(data)
    except TagListError as exc:
        assert exc.reason
    else:
        assert all(isinstance(v, str) for v in tags.values())


def _outcome(data: bytes | str) -> object:
    try:
        return parse_tag_list(data)
    except TagListError as exc:
        return exc.reason


@given(
    st.lists(
        st.sampled_from(
            [
                b"a=b",
                b";",
                b"=",
                b" ",
                b"\t",
                b"\r\n ",
                b"\r",
                b"\n",
                b"\x00",
                b"\x08",
                b"\x0b",
                b"\x1f",
                b"\x7f",
                b"\x80",
                b"\xff",
                b"v",
                b"1",
            ]
        ),
        max_size=20,
    )
)
def test_bytes_and_text_are_checked_alike(pieces: list[bytes]) -> None:
    """Bytes are screened for control characters by translate, text by a regex: the same
    verdict and the same tags either way."""
    data = b"".join(pieces)
    assert _outcome(data) == _outcome(data.decode("latin-1"))


def test_huge_value_is_fine() -> None:
    assert len(parse_tag_list("b=" + "A" * 1_000_000)["b"]) == 1_000_000


# The regex _bad_fold replaced; kept here as the reference it must agree with.
_BAD_FOLD_REGEX = re.compile(r"\r(?!\n)|(?<!\r)\n|\r\n(?![ \t])")


@settings(max_examples=500)
@given(st.lists(st.sampled_from(["\r", "\n", "\r\n", " ", "\t", "a", "=", ";"]), max_size=16))
def test_bad_fold_agrees_with_the_regex(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert _bad_fold(text) == bool(_BAD_FOLD_REGEX.search(text)), repr(text)


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("a=1;\r\n b=2", False),
        ("a=1;\r\n\tb=2", False),
        ("a=1;\r\nb=2", True),  # CRLF not followed by WSP
        ("a=1;\r\n", True),  # CRLF at the very end
        ("a=1;\n b=2", True),  # bare LF
        ("a=1;\r b=2", True),  # bare CR
        ("a=1;\r\r\n b=2", True),
        ("a=1; b=2", False),
    ],
)
def test_bad_fold_cases(text: str, bad: bool) -> None:
    assert _bad_fold(text) is bad


@given(st.text(alphabet=st.sampled_from(" \t\r\n\x0b\x0c\x85\xa0\u3000aZ=+/"), max_size=40))
def test_strip_fws_removes_exactly_the_fws_characters(text: str) -> None:
    # Only SP, TAB, CR and LF are FWS; other whitespace (str.split's idea of it) stays.
    assert strip_fws(text) == text.translate(str.maketrans("", "", " \t\r\n"))
