"""OpenARC's `SealHeaderChecks`: which messages get ARC work at all, by their header fields.

openarc.conf(5): "Identifies a file containing header checks that should be done to
determine whether to seal a message. Each entry in this file must be of the form
name:regexp. When this feature is set, messages will only be processed by the filter if any
instance of the named header field exists and has a value matching the provided regular
expression. If the value of an instance appears to be a JSON list, then the regular
expression is applied to all strings in the list."

OpenARC compiles each expression with regcomp(3) and no flags: a POSIX *basic* regular
expression (with GNU's extensions, as glibc has them), searched for anywhere in the value.
Python's `re` speaks a different dialect (in a BRE `+`, `?`, `|`, `(` are literals and
`\\(` groups), so `bre_to_python` translates, and a check file written for OpenARC means
the same here. Pure: the file's lines come in, checks go out; nothing here reads a file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dkimd.dkim.headers import HeaderField, name_key

__all__ = [
    "HeaderCheck",
    "HeaderCheckError",
    "bre_to_python",
    "first_match",
    "parse_header_checks",
]

#: A value longer than this is not tried as JSON (Postfix's header_size_limit is 100 KiB;
#: a list that long is not a list of tags).
_JSON_LIMIT = 65536

# POSIX character classes, as Python set members (ASCII: glibc's C locale, as a milter runs).
_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r" \t\n\r\f\v",
    "blank": r" \t",
    "punct": r"!-/:-@\[-`{-~",
    "print": r" -~",
    "graph": r"!-~",
    "cntrl": r"\x00-\x1f\x7f",
    "xdigit": "0-9A-Fa-f",
}
# What a backslash does before these in a glibc BRE; anything else escaped is the literal.
_INTERVAL = re.compile(r"[0-9]{1,3}(,[0-9]{0,3})?|,[0-9]{1,3}")
_ESCAPES = {
    "(": "(",
    ")": ")",
    "|": "|",
    "+": "+",
    "?": "?",
    "<": r"\b",
    ">": r"\b",
    "b": r"\b",
    "B": r"\B",
    "w": r"\w",
    "W": r"\W",
    "s": r"\s",
    "S": r"\S",
    "`": r"\A",
    "'": r"\Z",
}


class HeaderCheckError(ValueError):
    """A check that cannot be used (reason in args[0])."""


def _bracket(pattern: str, start: int) -> tuple[str, int]:
    """The bracket expression at pattern[start] ("["), as a Python set, and the index after
    its "]". POSIX: a "]" first is a member, a backslash is itself, [:class:] names a class;
    a range's ends are single characters, and a range does not start where one ended."""
    i = start + 1
    out = ["["]
    if i < len(pattern) and pattern[i] == "^":
        out.append("^")
        i += 1
    first = True
    # What the last member was: "" (none yet), "char" (may start a range), "class",
    # "range-end" (regcomp refuses a range from there, REG_ERANGE), "dash" (a range is open).
    last = ""
    while i < len(pattern):
        ch = pattern[i]
        if ch == "]" and not first:
            if last == "dash":
                raise HeaderCheckError("unterminated range in a bracket expression")
            out.append("]")
            return "".join(out), i + 1
        first = False
        if ch == "[" and i + 1 < len(pattern) and pattern[i + 1] in ":=.":
            kind = pattern[i + 1]
            end = pattern.find(kind + "]", i + 2)
            if end < 0:
                raise HeaderCheckError("unterminated [: :], [= =] or [. .] in a bracket")
            name = pattern[i + 2 : end]
            if kind == ":":
                if last == "dash":
                    raise HeaderCheckError("a character class cannot end a range")
                members = _CLASSES.get(name)
                if members is None:
                    raise HeaderCheckError(f"unknown character class [:{name}:]")
                out.append(members)
                last = "class"
            else:
                out.append(re.escape(name))  # an equivalence class or collating symbol: itself
                last = "range-end" if last == "dash" else "char"
            i = end + 2
            continue
        if ch == "-" and last in ("char", "class", "range-end") and pattern[i + 1 : i + 2] != "]":
            if last != "char":
                raise HeaderCheckError("a range must start at a single character")
            out.append("-")  # a range between the members around it
            last = "dash"
        else:
            # Everything else is a literal member; escape what Python's sets treat specially
            # (and what newer Pythons warn about as future set operations).
            out.append("\\" + ch if ch in "\\[]^-&~|" else ch)
            last = "range-end" if last == "dash" else "char"
        i += 1
    raise HeaderCheckError("unterminated bracket expression")


def bre_to_python(pattern: str) -> str:
    """A POSIX basic regular expression (glibc's, with its GNU extensions) as an equivalent
    Python `re` pattern, for `re.search` with `re.DOTALL` (regexec without REG_NEWLINE: "."
    matches a newline, "^" and "$" anchor only at the ends). Raises HeaderCheckError.

    Stricter than regcomp in one place: a repetition of a repetition (`a**`, `a*\\+`,
    `a\\{2\\}*`), which glibc accepts or refuses case by case and Python reads differently
    (`a*+` is possessive there), is refused; write `\\(a*\\)*`."""
    out: list[str] = []
    # What came last: "start" (RE start, after \( or \|: "*", "\+", "\?" are literals
    # there and "^" an anchor), "anchor" (a leading "^": still literal repetitions), "atom",
    # or "repeat".
    last = "start"
    groups = 0  # \( seen so far, for back-references
    closed: set[int] = set()
    opened: list[int] = []
    i = 0
    n = len(pattern)

    def repeat(op: str, literal: str) -> None:
        nonlocal last
        if last in ("start", "anchor"):
            out.append(literal)
            last = "atom"
        elif last == "repeat":
            raise HeaderCheckError("a repetition of a repetition; group it: \\(a*\\)*")
        else:
            out.append(op)
            last = "repeat"

    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise HeaderCheckError("trailing backslash")
            nxt = pattern[i + 1]
            i += 2
            if nxt.isdigit() and nxt != "0":
                if int(nxt) not in closed:
                    raise HeaderCheckError(f"back-reference \\{nxt} to no group before it")
                # Grouped: "\\1" then a digit must not read as back-reference 12.
                out.append("(?:\\" + nxt + ")")
                last = "atom"
            elif nxt == "{":
                # An interval: Python would read a malformed one as literal text, regcomp
                # refuses it (REG_EBRACE, REG_BADBR), and at the start too (REG_BADRPT).
                end = pattern.find("\\}", i)
                bounds = pattern[i:end] if end >= 0 else ""
                if not _INTERVAL.fullmatch(bounds) or last in ("start", "anchor"):
                    raise HeaderCheckError("invalid interval \\{...\\}")
                repeat("{" + bounds + "}", "")
                i = end + 2
            elif nxt in "+?":
                repeat(nxt, "\\" + nxt)
            elif nxt == "(":
                groups += 1
                opened.append(groups)
                out.append("(")
                last = "start"
            elif nxt == ")":
                if not opened:
                    raise HeaderCheckError("unmatched \\)")
                closed.add(opened.pop())
                out.append(")")
                last = "atom"
            elif nxt == "|":
                # The groups of the branch that ends here cannot be referred to in the next
                # one (regcomp: REG_ESUBREG).
                branch = opened[-1] if opened else 0
                closed -= set(range(branch + 1, groups + 1))
                out.append("|")
                last = "start"
            elif nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                last = "atom" if nxt in "wWsS" else "anchor" if last == "start" else last
            else:
                out.append(re.escape(nxt))
                last = "atom"
            continue
        if ch == "[":
            text, i = _bracket(pattern, i)
            out.append(text)
            last = "atom"
            continue
        i += 1
        if ch == "*":
            repeat("*", "\\*")
        elif ch == "^" and last == "start":
            out.append("^")
            last = "anchor"
        elif ch == "$" and (i == n or pattern.startswith(("\\)", "\\|"), i)):
            out.append("\\Z")
            last = "atom"
        elif ch == ".":
            out.append(".")
            last = "atom"
        else:
            out.append(re.escape(ch))  # ( ) { } + ? | ^ $ are literals here in a BRE
            last = "atom"
    if opened:
        raise HeaderCheckError("unmatched \\(")
    text = "".join(out)
    try:
        re.compile(text, re.DOTALL)
    except re.error as exc:
        raise HeaderCheckError(f"invalid regular expression: {exc}") from None
    return text


@dataclass(frozen=True, slots=True)
class HeaderCheck:
    """One "name:regexp" line."""

    name: str
    pattern: str  # as written (BRE)
    regex: re.Pattern[str] = field(repr=False, compare=False)
    line: int = 0

    @property
    def key(self) -> bytes:
        return name_key(self.name)

    def matches_value(self, value: str) -> bool:
        strings = _json_strings(value)
        if strings is not None:
            return any(self.regex.search(s) for s in strings)
        return self.regex.search(value) is not None


def _json_strings(value: str) -> list[str] | None:
    """The strings of a value that is a JSON list, else None (OpenARC: jansson's
    json_loads, which takes only an array or an object at the top)."""
    text = value.strip()
    if not text.startswith("[") or len(text) > _JSON_LIMIT:
        return None
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # a hostile "[[[[..." is not a list of tags
        return None
    if not isinstance(parsed, list):
        return None
    return [s for s in parsed if isinstance(s, str)]


def parse_header_checks(lines: Iterable[str]) -> tuple[list[HeaderCheck], list[str]]:
    """The checks of a SealHeaderChecks file and the problems of its bad lines
    ("line N: why"). Blank lines and lines starting with "#" are skipped."""
    checks: list[HeaderCheck] = []
    problems: list[str] = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, pattern = line.partition(":")
        name = name.strip()
        if not colon or not name or any(c <= " " or c > "~" for c in name):
            problems.append(f"line {number}: not of the form name:regexp")
            continue
        try:
            regex = re.compile(bre_to_python(pattern), re.DOTALL)
        except HeaderCheckError as exc:
            problems.append(f"line {number}: {exc.args[0]}")
            continue
        checks.append(HeaderCheck(name, pattern, regex, number))
    return checks, problems


def _value(header: HeaderField) -> str:
    # As libmilter hands OpenARC the value: no leading space, folds as they came (LF).
    return header.value.decode("utf-8", "replace").replace("\r\n", "\n").lstrip(" \t")


def first_match(
    checks: Sequence[HeaderCheck], headers: Sequence[HeaderField]
) -> HeaderCheck | None:
    """The first check that an instance of its field satisfies, or None."""
    for check in checks:
        key = check.key
        for h in headers:
            if h.key == key and check.matches_value(_value(h)):
                return check
    return None
