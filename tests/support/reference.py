"""The seed recipe's reference configuration, as kept in tests/data/config/reference.

The files are verbatim copies of what an admin following the seed recipe has on disk
(opendkim.conf, its refile: data sets and the Postfix main.cf snippet). Tests copy them into a
temporary directory and point the absolute paths they name at it; nothing reads a path outside
the repository, so a fresh clone finds them wherever it is checked out.
"""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from support.tools import in_ci

__all__ = ["REFERENCE", "postfix_snippet", "reference_user"]

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


def reference_user() -> pwd.struct_passwd | None:
    """The user of the reference config's `UserID opendkim:opendkim`, or None where there is
    no such user (a test then drops that line and runs unprivileged). Under CI its absence is a
    failure: the opendkim package that scripts/bootstrap.sh installs creates the user, so the
    privilege drop must be part of what CI checks."""
    try:
        return pwd.getpwnam("opendkim")
    except KeyError:
        if in_ci():
            pytest.fail("no opendkim user (apt-get install opendkim); CI is set", pytrace=False)
        return None
