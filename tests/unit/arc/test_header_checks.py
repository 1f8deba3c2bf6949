"""SealHeaderChecks (dkimd.arc.header_checks): OpenARC's "name:regexp" lines, whose regexp is
a POSIX basic regular expression compiled by regcomp(3) with no flags.

The translation to Python's `re` is checked against the real thing: glibc's regcomp/regexec,
called through ctypes, on the same patterns and values (the C library OpenARC links on Linux).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkimd.arc.header_checks import (
    HeaderCheck,
    HeaderCheckError,
    bre_to_python,
    first_match,
    parse_header_checks,
)
from dkimd.dkim import HeaderField
from support.tools import unavailable

# (pattern, value): BRE corners where Python's dialect differs, each tried both ways.
CASES = [
    ("a+b", "a+b"),
    ("a+b", "aab"),
    (r"a\+b", "aab"),
    (r"a\?b", "b"),
    ("x|y", "y"),
    ("x|y", "x|y"),
    (r"x\|y", "y"),
    (r"\(ab\)*c", "ababc"),
    (r"\(ab\)*c", "(ab)c"),
    ("(ab)", "(ab)"),
    ("(ab)", "ab"),
    ("^list", "list-id"),
    ("^list", "a list"),
    ("a^b", "a^b"),
    ("ab$", "xab"),
    ("ab$", "ab\n"),
    ("a$b", "a$b"),
    ("*a", "*a"),
    ("*a", "a"),
    (r"\(*a\)", "*a"),
    ("^*a", "*a"),
    (r"[[:digit:]]\{3\}", "x123"),
    (r"[[:digit:]]\{3\}", "x12"),
    ("a{2}", "a{2}"),
    ("a{2}", "aa"),
    ("[]a]", "]"),
    ("[]a]", "b"),
    ("[^a-c]", "abc"),
    ("[^a-c]", "abcd"),
    ("[a-]", "-"),
    (r"[\]", "\\"),
    ("[[:alpha:]_]*-list", "dev_x-list"),
    ("a.b", "a\nb"),
    (r"\(a\)\1", "aa"),
    (r"\(a\)\1", "ab"),
    (r"\<dev\>", "the dev list"),
    (r"\<dev\>", "devel"),
    (r"lists\.example\.org", "<dev.lists.example.org>"),
    (r"lists\.example\.org", "<dev.listsXexampleXorg>"),
    ("[.]", "x.y"),
    ("[&~|]", "~"),
    (r"a\{2,\}b", "xaaab"),
    (r"a\{2,3\}b", "xab"),
    ("}a", "}a"),
]


class _Posix:
    """glibc's regcomp/regexec (REG_NOSUB only: match or not)."""

    REG_NOSUB = 8  # glibc's value (regex.h: REG_NOSUB (1 << 3))

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        if name is None or os.uname().sysname != "Linux":
            unavailable("glibc's regcomp(3), the reference, is not on this system")
        self.libc = ctypes.CDLL(name)

    def search(self, pattern: str, value: str) -> bool:
        buf = ctypes.create_string_buffer(256)  # regex_t is 64 bytes on glibc x86-64
        # Flags 0 as OpenARC passes them, plus NOSUB (no effect on whether it matches).
        if self.libc.regcomp(buf, pattern.encode(), self.REG_NOSUB) != 0:
            raise ValueError(pattern)
        try:
            return self.libc.regexec(buf, value.encode(), 0, None, 0) == 0
        finally:
            self.libc.regfree(buf)


@pytest.fixture(scope="module")
def posix() -> _Posix:
    return _Posix()


@pytest.mark.parametrize(("pattern", "value"), CASES)
def test_translation_matches_as_glibc_regcomp_does(posix: _Posix, pattern: str, value: str) -> None:
    import re

    expected = posix.search(pattern, value)
    got = re.search(bre_to_python(pattern), value, re.DOTALL) is not None
    assert got is expected, (pattern, value, bre_to_python(pattern))


ATOMS = [
    "a", "b", ".", "*", "^", "$", "[", "]", "\\", "(", ")", "{", "}", "+", "?", "|", "-",
    "1", ",", "[:digit:]", "\\(", "\\)", "\\{", "\\}", "\\|", "\\+", "\\?", "\\1", "x",
]  # fmt: skip
VALUES = ["", "a", "ab", "aab", "b", "x1", "a*b", "(a)", "a{2}", "a|b", "a+", "[a]", "12",
          "a\nb", "$", "^", "-", "ba", "abab"]  # fmt: skip


@settings(max_examples=600, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(ATOMS), min_size=1, max_size=7).map("".join))
def test_what_is_accepted_means_what_regcomp_means(posix: _Posix, pattern: str) -> None:
    """Differential: any pattern the translation accepts, regcomp accepts too, and the two
    agree on every value. (The translation may refuse more: a repetition of a repetition,
    an interval like \\{,\\}, a repeated \\b; those stop dkimd at start, with the reason.)"""
    import re

    try:
        translated = bre_to_python(pattern)
    except HeaderCheckError:
        return
    for value in VALUES:
        expected = posix.search(pattern, value)  # raises if regcomp refuses it
        got = re.search(translated, value, re.DOTALL) is not None
        assert got is expected, (pattern, value, translated)


def test_the_table_exercises_both_outcomes(posix: _Posix) -> None:
    """A table whose every case matched (or none did) would prove little."""
    outcomes = [posix.search(p, v) for p, v in CASES]
    assert 10 < sum(outcomes) < len(CASES) - 10


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("a\\", "trailing backslash"),
        ("[abc", "unterminated bracket"),
        ("[[:nope:]]", "unknown character class"),
        (r"\(a", r"unmatched \\\("),
        (r"a\)", r"unmatched \\\)"),
        (r"\(a\)\|\1", "back-reference"),
        ("[[:digit:]-z]", "range must start"),
        ("[a-c-e]", "range must start"),
        (r"a\{2", "invalid interval"),
        (r"a\{x\}", "invalid interval"),
    ],
)
def test_bad_patterns_are_refused(posix: _Posix, pattern: str, why: str) -> None:
    with pytest.raises(HeaderCheckError, match=why):
        bre_to_python(pattern)
    with pytest.raises(ValueError):  # and regcomp refuses them too
        posix.search(pattern, "")


def test_check_file_lines() -> None:
    lines = [
        "# lists we relay",
        "",
        "List-Id:lists\\.example\\.org",
        "  # indented comment",
        "X-Tags:^forward$",
        "no colon here",
        "Bad Name:x",
        "X-Broken:\\(",
    ]
    checks, problems = parse_header_checks(lines)
    assert [(c.name, c.pattern, c.line) for c in checks] == [
        ("List-Id", "lists\\.example\\.org", 3),
        ("X-Tags", "^forward$", 5),
    ]
    assert problems[0] == "line 6: not of the form name:regexp"
    assert problems[1] == "line 7: not of the form name:regexp"
    assert problems[2] == "line 8: unmatched \\("


def _checks(*lines: str) -> list[HeaderCheck]:
    checks, problems = parse_header_checks(lines)
    assert not problems
    return checks


def test_any_instance_of_the_named_field_may_match() -> None:
    checks = _checks("list-id:^<dev\\.lists")
    headers = [
        HeaderField(b"List-Id", b" <other.example>"),
        HeaderField(b"LIST-ID", b" <dev.lists.example.org>"),
    ]
    assert first_match(checks, headers) is checks[0]  # names compare case-insensitively
    assert first_match(checks, headers[:1]) is None
    assert first_match(checks, [HeaderField(b"X-List-Id", b" <dev.lists.x>")]) is None


def test_the_value_is_matched_as_libmilter_hands_it_over() -> None:
    """No leading space (^ anchors at the text), folds as LF (. crosses them)."""
    checks = _checks("Subject:^\\[dev\\].*end$")
    assert first_match(checks, [HeaderField(b"Subject", b" [dev] a\r\n\tlong end")])


def test_a_json_list_value_is_matched_string_by_string() -> None:
    checks = _checks("X-Tags:^forward$")
    assert first_match(checks, [HeaderField(b"X-Tags", b' ["spam", "forward"]')])
    # As one string the list would not match ^forward$; as plain text neither does this.
    assert first_match(checks, [HeaderField(b"X-Tags", b' ["spam", 1, {"forward": 1}]')]) is None
    assert first_match(checks, [HeaderField(b"X-Tags", b" [forward")]) is None
    # Not a list: the raw value.
    assert first_match(_checks("X-Tags:forward"), [HeaderField(b"X-Tags", b' {"a": "forward"}')])


def test_hostile_json_does_not_crash() -> None:
    checks = _checks("X-Tags:x")
    deep = b" " + b"[" * 200_000 + b"]" * 200_000
    assert first_match(checks, [HeaderField(b"X-Tags", deep)]) is None
    huge = b' ["' + b"y" * 70_000 + b'x"]'  # past the JSON limit: matched as text
    assert first_match(checks, [HeaderField(b"X-Tags", huge)]) is checks[0]
