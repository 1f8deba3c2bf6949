"""BodyLengthDB: which recipients ask for l=, in dkimf_checkbldb's lookup order."""

from __future__ import annotations

import pytest

from dkimd.body_length import BodyLengthDb, lookup_keys
from dkimd.config import Dataset


def test_lookup_order_of_opendkim() -> None:
    assert list(lookup_keys("user", "a.example.com")) == [
        "user@a.example.com",
        "*@a.example.com",
        "user@.example.com",
        "*@.example.com",
        "user@.com",
        "*@.com",
        "user@*",
        "*",
    ]


@pytest.mark.parametrize(
    ("entries", "recipients", "matched"),
    [
        ("*", ["recipient@example.com"], "*"),  # t-sign-ss-ltag: csl:*
        ("*@.com", ["a@b.example.com"], "*@.com"),
        ("list@.example.org", ["list@lists.example.org"], "list@.example.org"),
        ("Bob@Example.NET", ["bob@example.net"], "bob@example.net"),  # case-blind
        ("user@*,other.example", ["x@other.example"], None),  # a bare domain is no key
        ("*@example.com", ["junk", "<>", "a@example.com"], "*@example.com"),
        ("*@example.com", ["a@example.org"], None),
        ("*", [], None),
    ],
)
def test_first_recipient_that_hits(entries: str, recipients: list[str], matched: str) -> None:
    db = BodyLengthDb(Dataset.from_csl(entries))
    addresses = [r for r in recipients if "@" in r]  # the caller drops what does not parse
    assert db.match(addresses) == matched
