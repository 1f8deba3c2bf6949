"""The seed recipe's reference configuration, as kept in tests/data/config/reference.

The files are verbatim copies of what an admin following the seed recipe has on disk
(opendkim.conf, its refile: data sets and the Postfix main.cf snippet). Tests copy them into a
temporary directory and point the absolute paths they name at it; nothing reads a path outside
the repository, so a fresh clone finds them wherever it is checked out.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["REFERENCE", "postfix_snippet"]

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "config" / "reference"


def postfix_snippet() -> dict[str, str]:
    """The `name = value` settings of the reference main.cf snippet (comments dropped)."""
    settings: dict[str, str] = {}
    for row in (REFERENCE / "postfix-main.cf.snippet").read_text().splitlines():
        row = row.split("#", 1)[0].strip()
        if not row:
            continue
        name, equals, value = row.partition("=")
        if not equals:
            raise ValueError(f"postfix-main.cf.snippet: not a `name = value` line: {row!r}")
        settings[name.strip()] = value.strip()
    return settings
