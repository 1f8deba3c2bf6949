"""RequiredHeaders: mail whose header breaks RFC 5322 section 3.6's field counts is refused.

OpenDKIM 2.11 (observed with Debian's binary; the 2015 source took the bad-format path
instead) checks, once it has decided to sign or verify a message and before the header
fields are fed to libopendkim: exactly one From, exactly one Date, at most one each of
Reply-To, To, Cc, Bcc, Message-Id, In-Reply-To, References and Subject (Sender is not
counted). Field names compare case-insensitively. The message is rejected at end of
headers with `550 5.0.0 <reason>`, the reason of the *last* count in that order that
fails (each failing check overwrites the one before), and logged as
"RFC5322 header requirement error: <reason>". IgnoreMalformedMail does not change this.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from dkimd import milter
from dkimd.dkim import HeaderField, name_key

__all__ = ["REPLY_CODE", "REPLY_XCODE", "header_count_error", "rejection"]

REPLY_CODE = 550
REPLY_XCODE = "5.0.0"

# (field name as OpenDKIM writes it, exactly one?) in the order libopendkim's caller checks.
_COUNTS: tuple[tuple[str, bool], ...] = (
    ("From", True),
    ("Date", True),
    ("Reply-To", False),
    ("To", False),
    ("Cc", False),
    ("Bcc", False),
    ("Message-Id", False),
    ("In-Reply-To", False),
    ("References", False),
    ("Subject", False),
)
_KEYS = {name_key(name): name for name, _ in _COUNTS}


def header_count_error(headers: Sequence[HeaderField]) -> str | None:
    """The reason OpenDKIM gives for `headers`, or None when the counts are fine."""
    seen = dict.fromkeys(_KEYS.values(), 0)
    for h in headers:
        name = _KEYS.get(h.key)
        if name is not None:
            seen[name] += 1
    reason = None
    for name, exactly_one in _COUNTS:
        count = seen[name]
        if exactly_one and count != 1:
            reason = f"message does not have exactly one {name} field"
        elif not exactly_one and count > 1:
            reason = f"message has multiple {name} fields"
    return reason


def rejection(reason: str) -> milter.ReplyCode:
    """The end-of-headers reply: `550 5.0.0 <reason>`."""
    return milter.ReplyCode(REPLY_CODE, REPLY_XCODE, reason)
