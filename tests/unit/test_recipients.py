"""Envelope recipients as OpenDKIM keeps them, and DontSignMailTo (dkimd.recipients)."""

from __future__ import annotations

import pytest

from dkimd.config import parse_config_text
from dkimd.recipients import dont_sign_hit, needs_recipients, strip_brackets


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("<bob@example.net>", "bob@example.net"),
        ("bob@example.net", "bob@example.net"),
        ("<>", ""),
        ("<Bob@Example.NET", "Bob@Example.NET"),
    ],
)
def test_strip_brackets(sent: str, kept: str) -> None:
    assert strip_brackets(sent) == kept


@pytest.mark.parametrize(
    ("text", "needed"),
    [
        ("Mode sv\n", False),
        ("DontSignMailTo csl:a@example.org\n", True),
        ("BodyLengthDB csl:a@example.org\n", True),
        ("RedirectFailuresTo admin@example.org\n", True),
        ("ResignMailTo csl:example.org\n", True),
    ],
)
def test_needs_recipients(text: str, needed: bool) -> None:
    assert needs_recipients(parse_config_text(text)) is needed


def test_dont_sign_hit_is_a_whole_address_case_insensitive() -> None:
    config = parse_config_text("DontSignMailTo csl:recipient@example.org\n")
    assert dont_sign_hit(config, ["other@example.org", "Recipient@Example.ORG"]) == (
        "Recipient@Example.ORG"
    )
    # No domain or wildcard fallback (unlike BodyLengthDB).
    assert dont_sign_hit(config, ["x@recipient@example.org", "example.org"]) is None
    assert dont_sign_hit(parse_config_text("Mode sv\n"), ["recipient@example.org"]) is None
