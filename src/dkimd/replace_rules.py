"""ReplaceRules / ReplaceHeaders: OpenDKIM's rewrite of the filter's own copy of the header.

opendkim.conf(5): ReplaceRules names a file of regular expressions and replacement texts;
each header field value the filter keeps (the one it reads the sender from, signs and
verifies) is rewritten with them. The message itself is not changed. ReplaceHeaders, a
data set of field names, limits the rewrite to those fields; unset, every field is
rewritten.

The file format and the rewrite follow OpenDKIM 2.11 (util.c `dkimf_load_replist`,
opendkim.c `mlfi_header`):

* each line is cut at its first "#" (even inside the expression) and blank lines are
  skipped;
* the line is split at its *last* TAB: before it a POSIX basic regular expression
  (case-sensitive), after it the literal replacement (no back-references);
* a line without a TAB, or an expression that does not compile, fails the whole file;
* rules apply from the *last line of the file to the first* (OpenDKIM builds its list by
  prepending; observed with the Debian 2.11 binary: with `@a -> @b` then `@b -> @c`,
  `user@a` becomes `user@b`); each rule replaces its leftmost match again and again until
  it no longer matches.

A rule whose replacement matches again would loop for ever in OpenDKIM; here each rule
stops after `MAX_REPLACEMENTS` replacements in one field value.

POSIX leftmost-longest matching differs from Python's leftmost-first only for alternation
(`\\|`, a GNU extension); the translation keeps everything else exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container
from dataclasses import dataclass

__all__ = [
    "MAX_REPLACEMENTS",
    "ReplaceRule",
    "ReplaceRules",
    "ReplaceRulesError",
    "bre_to_python",
    "rules_for",
]

#: Replacements of one rule in one field value before it is stopped.
MAX_REPLACEMENTS = 100

# POSIX character classes, as Python bracket contents.
_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v",
    "blank": " \\t",
    "punct": "!-/:-@\\[-`{-~",
    "print": " -~",
    "graph": "!-~",
    "cntrl": "\\x00-\\x1f\\x7f",
    "xdigit": "0-9A-Fa-f",
}
# Escapes GNU regcomp gives a meaning in a basic expression, as Python spells them.
_GNU_ESCAPES = {
    "(": "(",
    ")": ")",
    "{": "{",
    "}": "}",
    "+": "+",
    "?": "?",
    "|": "|",
    "<": r"\b",
    ">": r"\b",
    "w": r"\w",
    "W": r"\W",
    "s": r"\s",
    "S": r"\S",
    "b": r"\b",
    "B": r"\B",
    "`": r"\A",
    "'": r"\Z",
}


class ReplaceRulesError(ValueError):
    """The file cannot be used (OpenDKIM: "failed to load ReplaceRules from FILE")."""


def _bracket(pattern: str, i: int) -> tuple[str, int]:
    """The bracket expression starting at pattern[i] == "[", as Python; the index after it."""
    j = i + 1
    out = ["["]
    if j < len(pattern) and pattern[j] == "^":
        out.append("^")
        j += 1
    first = True
    while True:
        if j >= len(pattern):
            raise ReplaceRulesError("unterminated bracket expression")
        c = pattern[j]
        if c == "]" and not first:
            out.append("]")
            return "".join(out), j + 1
        if c == "[" and pattern[j + 1 : j + 2] == ":":
            end = pattern.find(":]", j + 2)
            name = pattern[j + 2 : end] if end != -1 else ""
            if name not in _CLASSES:
                raise ReplaceRulesError(f"unknown character class [:{name}:]")
            out.append(_CLASSES[name])
            j = end + 2
        else:
            # A backslash is literal in a POSIX bracket; Python needs most punctuation escaped.
            out.append("\\" + c if c in "\\[]&~|^" else c)
            j += 1
        first = False


def bre_to_python(pattern: str) -> str:
    """A POSIX basic regular expression (with GNU's extensions) as a Python `re` pattern."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    # Where "*" is literal and "^" an anchor: at the start and right after "\(" or "\|".
    at_start = True
    while i < n:
        c = pattern[i]
        starting = at_start
        at_start = False
        if c == "\\":
            if i + 1 >= n:
                raise ReplaceRulesError("trailing backslash")
            d = pattern[i + 1]
            i += 2
            if d in "123456789":
                out.append("\\" + d)
            elif d in _GNU_ESCAPES:
                out.append(_GNU_ESCAPES[d])
                at_start = d in "(|"
            else:
                out.append(re.escape(d))
            continue
        if c == "[":
            text, i = _bracket(pattern, i)
            out.append(text)
            continue
        if c == "*" and starting:
            out.append(r"\*")
            at_start = False
        elif c == "^":
            out.append("^" if starting else r"\^")
            at_start = starting
        elif c == "$":
            at_end = i + 1 == n or pattern[i + 1 : i + 3] in ("\\)", "\\|")
            out.append("$" if at_end else r"\$")
        elif c == ".":
            out.append(".")
        elif c == "*":
            out.append("*")
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class ReplaceRule:
    pattern: re.Pattern[bytes]
    replacement: bytes

    def apply(self, value: bytes) -> bytes:
        for _ in range(MAX_REPLACEMENTS):
            m = self.pattern.search(value)
            if m is None:
                break
            value = value[: m.start()] + self.replacement + value[m.end() :]
        return value


@dataclass(frozen=True, slots=True)
class ReplaceRules:
    """The rules of one ReplaceRules file, and which fields they apply to."""

    rules: tuple[ReplaceRule, ...]  # in the order they apply: last line of the file first
    #: ReplaceHeaders: does a field of this name get rewritten? None: every field does.
    applies_to: Callable[[bytes], bool] | None = None

    @classmethod
    def parse(cls, text: bytes) -> ReplaceRules:
        rules: list[ReplaceRule] = []
        for number, raw in enumerate(text.split(b"\n"), 1):
            line = raw.split(b"#", 1)[0]
            if not line.strip():
                continue
            pattern, tab, replacement = line.rpartition(b"\t")
            if not tab:
                raise ReplaceRulesError(f"line {number}: no TAB between expression and text")
            try:
                compiled = re.compile(
                    bre_to_python(pattern.decode("latin-1")).encode("latin-1"), re.DOTALL
                )
            except (re.error, ReplaceRulesError) as exc:
                raise ReplaceRulesError(f"line {number}: regcomp() failed: {exc}") from exc
            rules.append(ReplaceRule(compiled, replacement))
        return cls(tuple(reversed(rules)))

    @classmethod
    def load(cls, path: str) -> ReplaceRules:
        try:
            with open(path, "rb") as f:
                return cls.parse(f.read())
        except OSError as exc:
            raise ReplaceRulesError(f"{path}: fopen(): {exc.strerror}") from exc

    def limited_to(self, applies_to: Callable[[bytes], bool]) -> ReplaceRules:
        return ReplaceRules(self.rules, applies_to)

    def rewrite(self, name: bytes, value: bytes) -> bytes:
        """The value the filter keeps for a field `name: value` (as the MTA sent it)."""
        if self.applies_to is not None and not self.applies_to(name):
            return value
        for rule in self.rules:
            value = rule.apply(value)
        return value


def rules_for(rules: ReplaceRules, names: Container[str] | None) -> ReplaceRules:
    """`rules` limited to the field names in `names` (ReplaceHeaders, a data set that
    compares case-insensitively); None: every field."""
    if names is None:
        return rules
    return rules.limited_to(lambda name: name.decode("utf-8", "surrogateescape") in names)
