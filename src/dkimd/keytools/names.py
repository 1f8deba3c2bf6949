"""Syntax checks for the selector and domain names the key tools put in files and DNS."""

from __future__ import annotations

import re

# RFC 6376 section 3.1: a selector is a sub-domain (dot-separated labels). Underscores
# are accepted because they are common in selectors and harmless in TXT owner names.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def name_problem(kind: str, value: str) -> str | None:
    """Why `value` cannot be used as a `kind` ("selector" or "domain"), or None if it can."""
    if not value:
        return f"the {kind} is empty"
    if not value.isascii():
        return f"the {kind} {value!r} is not ASCII; use its punycode (xn--) form"
    if len(value) > 253 or not _NAME.fullmatch(value):
        return (
            f"the {kind} {value!r} is not a valid DNS name "
            "(letters, digits, '-' and '_' in dot-separated labels of at most 63 characters)"
        )
    return None
