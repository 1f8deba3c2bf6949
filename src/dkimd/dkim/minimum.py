"""`Minimum`: how much of the body a passing signature must cover (opendkim.conf(5)).

Three forms, read as opendkim.c `dkimf_config_load` reads them (`strtoul`, then the one
character after the number):

* `N`: at least N canonical body bytes signed, or all of a body shorter than N;
* `N%`: at least N percent of the canonical body signed (N at most 100);
* `N+`: at most N canonical body bytes left unsigned after the signed part (l=).

A value with a leading `-`, a number beyond 2**32-1, a percentage over 100 or anything but
`%`/`+` after the number is refused with OpenDKIM's words, `illegal value for "Minimum"`.
An empty value is the number 0, which checks nothing (`strtoul` of "" is 0, as in C).

OpenDKIM applies the test to the message's first passing signature only, and a signature
that covers too little turns the message's status from GOOD into PARTIAL. In Debian's 2.11
that status changes nothing the MTA sees: the signature is still `dkim=pass` in
Authentication-Results and the message is accepted whatever On-BadSignature says
(observed, docs/opendkim-behaviour.md section 5.4). dkimd does the same and logs it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["BodyMinimum", "MinimumKind", "parse_minimum"]

_UINT_MAX = 2**32 - 1
# strtoul(str, &p, 10): optional leading white space, optional "+", decimal digits.
_NUMBER = re.compile(r"[ \t\n\v\f\r]*\+?([0-9]*)")


class MinimumKind(enum.Enum):
    BYTES = "bytes"  # N
    PERCENT = "percent"  # N%
    MAX_ADDED = "max-added"  # N+


@dataclass(frozen=True, slots=True)
class BodyMinimum:
    """One `Minimum` setting, ready to test a signature's coverage."""

    value: int
    kind: MinimumKind = MinimumKind.BYTES

    def covered(self, signed: int, body: int) -> bool:
        """Whether a signature over `signed` of the `body` canonical body bytes is enough.

        OpenDKIM divides by the body length for a percentage, and so dies on an empty
        body; an empty body is wholly signed by any signature here.
        """
        if self.kind is MinimumKind.PERCENT:
            return body == 0 or (100 * signed) // body >= self.value
        if self.kind is MinimumKind.MAX_ADDED:
            return signed + self.value >= body
        return signed >= min(self.value, body)

    def __str__(self) -> str:
        suffix = {MinimumKind.PERCENT: "%", MinimumKind.MAX_ADDED: "+"}.get(self.kind, "")
        return f"{self.value}{suffix}"


def parse_minimum(text: str) -> BodyMinimum:
    """The `Minimum` value `text`; ValueError (with OpenDKIM's words) when it is illegal."""
    illegal = ValueError('illegal value for "Minimum"')
    match = _NUMBER.match(text)
    assert match is not None  # every part of the pattern may be empty
    if text.lstrip(" \t\n\v\f\r").startswith("-"):
        raise illegal
    digits = match[1]
    value = int(digits) if digits else 0
    # With no digits strtoul leaves its end pointer at the very start of the value.
    rest = text[match.end() :] if digits else text
    if value > _UINT_MAX:
        raise illegal
    if rest.startswith("%"):
        if value > 100:
            raise illegal
        return BodyMinimum(value, MinimumKind.PERCENT)
    if rest.startswith("+"):
        return BodyMinimum(value, MinimumKind.MAX_ADDED)
    if rest:
        raise illegal
    return BodyMinimum(value)
