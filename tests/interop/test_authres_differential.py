"""Authentication-Results and end-of-message replies, dkimd against the real OpenDKIM 2.11.

The same configuration (Mode v, TestDNSData, AlwaysAddARHeader, On-BadSignature reject) and
the same messages go through both daemons with miltertest, which offers everything
(SMFIP_HDR_LEADSPC included, as Postfix does). The A-R values must be equal byte for byte
(the b= prefixes too: both read the same signatures), and so must the reply commands.

Keys are made with opendkim-genkey and messages signed by OpenDKIM itself, so the
signatures are OpenDKIM's; DNS is TestDNSData for both (no DNSSEC word on either side).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from support.dkimd import Dkimd
from support.opendkim import OpenDKIM, genkey, milter_transaction, opendkim_sign
from support.tools import require

OUTSIDE = "192.0.2.77"

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: differential\r\n"
    b"Date: Fri, 04 Dec 2026 12:00:00 +0000\r\n"
    b"Message-ID: <diff-1@example.com>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n\r\nthis went through both filters.\r\n"
)

OPTIONS = {
    "AlwaysAddARHeader": "yes",
    "On-BadSignature": "reject",
    "On-KeyNotFound": "accept",
}


@dataclass
class Pair:
    opendkim: OpenDKIM
    dkimd: Dkimd
    messages: dict[str, bytes]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    require("opendkim")
    require("miltertest")
    tmp = tmp_path_factory.mktemp("ar-diff")
    com = genkey(tmp / "keys-com", "example.com", "mail", bits=1024)
    second = genkey(tmp / "keys-second", "example.com", "second", bits=1024)
    gone = genkey(tmp / "keys-gone", "example.com", "gone", bits=1024)
    revoked = genkey(tmp / "keys-revoked", "example.com", "revoked", bits=1024)
    records = {
        **com.records,
        **second.records,
        revoked.dns_name: "v=DKIM1; k=rsa; p=",
        "badp._domainkey.example.com": "v=DKIM1; k=rsa; p=!!not-base64!!",
        "edkey._domainkey.example.com": com.txt.replace("k=rsa", "k=ed25519"),
        "sha1only._domainkey.example.com": com.txt.replace("h=sha256", "h=sha1"),
        "ftponly._domainkey.example.com": com.txt + "; s=ftp",
        # gone's record is not published at all: key not found.
    }
    signed = opendkim_sign(MESSAGE, com.private_key, "example.com", "mail", "relaxed/simple")
    twice = opendkim_sign(signed, second.private_key, "example.com", "second", "simple/simple")
    messages = {
        "unsigned": MESSAGE,
        "good": signed,
        "two-signatures": twice,
        "body-changed": signed.replace(b"both filters", b"one filter"),
        "header-changed": signed.replace(b"Subject: differential", b"Subject: changed"),
        "key-not-found": opendkim_sign(
            MESSAGE, gone.private_key, "example.com", "gone", "relaxed/relaxed"
        ),
        "key-revoked": opendkim_sign(
            MESSAGE, revoked.private_key, "example.com", "revoked", "relaxed/relaxed"
        ),
    }
    # A failing signature on top of a good one: the message passes.
    messages["revoked-over-good"] = opendkim_sign(
        signed, revoked.private_key, "example.com", "revoked", "relaxed/relaxed"
    )
    messages["expired"] = opendkim_sign(
        MESSAGE, com.private_key, "example.com", "mail", options={"SignatureTTL": "1"}
    )
    for selector in ("badp", "edkey", "sha1only", "ftponly"):
        messages[f"key-{selector}"] = opendkim_sign(
            MESSAGE, com.private_key, "example.com", selector, "relaxed/relaxed"
        )
    common = {"mode": "v", "dns_records": records, "options": OPTIONS}
    with (
        OpenDKIM(tmp / "opendkim", **common) as od,  # type: ignore[arg-type]
        Dkimd(tmp / "dkimd", **common) as d,  # type: ignore[arg-type]
    ):
        yield Pair(od, d, messages)


CASES = [
    "unsigned",
    "good",
    "two-signatures",
    "body-changed",
    "header-changed",
    "key-revoked",
    "key-badp",
    "key-sha1only",
    "key-ftponly",
    "expired",
    "revoked-over-good",
]


@pytest.mark.parametrize("case", CASES)
def test_same_authentication_results_and_reply(pair: Pair, case: str) -> None:
    message = pair.messages[case]
    theirs = milter_transaction(
        pair.opendkim.socket_spec, message, client_addr=OUTSIDE, collect=("Authentication-Results",)
    )
    ours = milter_transaction(
        pair.dkimd.socket_spec, message, client_addr=OUTSIDE, collect=("Authentication-Results",)
    )
    assert theirs.headers("Authentication-Results"), theirs.output  # the reference wrote one
    assert ours.headers("Authentication-Results") == theirs.headers("Authentication-Results"), (
        ours.output,
        theirs.output,
    )
    assert ours.reply == theirs.reply, (ours.output, theirs.output)


def test_key_lookup_error_differs_on_purpose(pair: Pair) -> None:
    """A name missing from TestDNSData is a lookup *error* to OpenDKIM (KEYFAIL) and to
    dkimd. OpenDKIM 2.11 then adds no A-R and accepts whatever On-DNSError says (mlfi_eom
    keeps the status unknown); dkimd reports `dkim=temperror` and applies On-DNSError
    (default tempfail, `451 4.7.5 DKIM key retrieval failed`, sent as SMFIR_REPLYCODE), as
    opendkim.conf(5) documents it (README, "Where dkimd differs")."""
    message = pair.messages["key-not-found"]
    theirs = milter_transaction(
        pair.opendkim.socket_spec, message, client_addr=OUTSIDE, collect=("Authentication-Results",)
    )
    ours = milter_transaction(
        pair.dkimd.socket_spec, message, client_addr=OUTSIDE, collect=("Authentication-Results",)
    )
    assert (theirs.reply, theirs.headers("Authentication-Results")) == ("a", []), theirs.output
    [ar] = ours.headers("Authentication-Results")
    assert ar.startswith(" mx.test.example;\n\tdkim=temperror "), ar
    assert ours.reply == "y", ours.output  # On-DNSError tempfail, with its reply text


def test_key_type_mismatch_differs_on_purpose(pair: Pair) -> None:
    """A key record saying k=ed25519 over an RSA key: OpenDKIM 2.11 ignores k= and passes
    the rsa-sha256 signature; dkimd reads the record as an ed25519 key, which p= is not
    (RFC 6376 3.6.1: k= names the key type), and reports a corrupt key record. Neither
    applies an On-* action."""
    message = pair.messages["key-edkey"]
    theirs = milter_transaction(
        pair.opendkim.socket_spec, message, client_addr=OUTSIDE, collect=("Authentication-Results",)
    )
    ours = milter_transaction(
        pair.dkimd.socket_spec, message, client_addr=OUTSIDE, collect=("Authentication-Results",)
    )
    assert "dkim=pass" in theirs.headers("Authentication-Results")[0], theirs.output
    assert "dkim=temperror" in ours.headers("Authentication-Results")[0], ours.output
    assert ours.reply == theirs.reply == "a", (ours.output, theirs.output)
