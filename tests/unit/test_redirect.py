"""RedirectFailuresTo (dkimd.redirect) through MilterSession, as OpenDKIM 2.11 does it.

Observed with the Debian binary (two recipients, a bad signature): after the
Authentication-Results field, per recipient newest first DELRCPT then ADDHEADER
`Original-Recipient: rfc822;<recipient>`, then ADDRCPT of the configured address, then the
reply On-BadSignature gives. tests/interop/test_redirect_interop.py compares with it.
"""

from __future__ import annotations

import pytest

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.negotiation import filter_options_for
from dkimd.redirect import redirect_actions
from support.negotiated import Mta
from support.signed import Fields, signed_message

BODY = b"This is a test!\r\n"
HEADERS = [
    (b"From", b" user@example.com"),
    (b"Date", b" Tue, 22 Dec 2009 13:04:12 -0800"),
    (b"Subject", b" Signing test"),
]
RECIPIENTS = ["<first@example.net>", "<second@example.org>"]
REDIRECT = [
    milter.DeleteRecipient("second@example.org"),
    milter.AddHeader(b"Original-Recipient", b"rfc822;second@example.org"),
    milter.DeleteRecipient("first@example.net"),
    milter.AddHeader(b"Original-Recipient", b"rfc822;first@example.net"),
    milter.AddRecipient("admin@example.org"),
]


@pytest.fixture(scope="module")
def signed() -> tuple[Fields, dict[str, str]]:
    """HEADERS with a DKIM-Signature over BODY, and the key record."""
    return signed_message(HEADERS, BODY)


def redirected(mta: Mta) -> list[milter.Action]:
    return [a for a in mta.at("eom") if not isinstance(a, milter.InsertHeader)]


@pytest.mark.parametrize(
    ("extra", "final"),
    [
        ("", milter.Accept()),
        ("On-BadSignature reject\n", milter.ReplyCode(550, "5.7.0", "bad DKIM signature data")),
    ],
)
def test_bad_signature_is_redirected(
    signed: tuple[Fields, dict[str, str]],
    extra: str,
    final: milter.FinalAction,
) -> None:
    headers, records = signed
    mta = Mta(
        "Mode v\nRedirectFailuresTo admin@example.org\n" + extra,
        records=records,
        recipients=RECIPIENTS,
    )
    mta.run(headers, b"This is a changed test!\r\n")
    eom = mta.at("eom")
    assert isinstance(eom[0], milter.InsertHeader) and b"dkim=fail" in eom[0].value
    assert redirected(mta) == [*REDIRECT, final]


def test_passing_and_unsigned_mail_is_not_redirected(
    signed: tuple[Fields, dict[str, str]],
) -> None:
    headers, records = signed
    config = "Mode v\nRedirectFailuresTo admin@example.org\n"
    for message, body in ((headers, BODY), (HEADERS, BODY)):
        mta = Mta(config, records=records, recipients=RECIPIENTS)
        mta.run(message, body)
        assert redirected(mta) == [milter.Accept()]
    # A key not found is not a bad signature: no redirection (OpenDKIM's status NOKEY).
    mta = Mta(config, recipients=RECIPIENTS)
    mta.run(headers, b"changed\r\n")
    assert redirected(mta) == [milter.Accept()]


def test_negotiation_asks_for_recipients_and_the_right_to_change_them() -> None:
    plain = filter_options_for(parse_config_text("Mode v\n"))
    options = filter_options_for(parse_config_text("Mode v\nRedirectFailuresTo a@example.org\n"))
    wanted = milter.ActionFlag.ADDRCPT | milter.ActionFlag.DELRCPT
    assert options.actions == plain.actions | wanted
    assert milter.ProtocolFlag.NORCPT in plain.protocol
    assert options.protocol == plain.protocol & ~milter.ProtocolFlag.NORCPT


def test_a_connection_that_cannot_change_recipients_is_left_alone() -> None:
    config = parse_config_text("RedirectFailuresTo a@example.org\n")
    assert redirect_actions(config, ["x@example.net"], milter.ActionFlag.ADDHDRS) == []
    assert redirect_actions(parse_config_text(""), ["x@example.net"], ~milter.ActionFlag.NONE) == []
