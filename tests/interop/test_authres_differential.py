"""Authentication-Results and end-of-message replies, dkimd against the real OpenDKIM 2.11.

The same configuration (Mode v, TestDNSData, AlwaysAddARHeader, On-BadSignature reject) and
the same messages go through both daemons (support.differential: every stage's reply and
every header change compared; the A-R field by field). What differs must be a row of
docs/differences.md; the tests that name a row check that it is that row which applies.

Keys are made with opendkim-genkey and messages signed by OpenDKIM itself, so the
signatures are OpenDKIM's; DNS is TestDNSData for both (no DNSSEC word on either side).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from support.differential import Envelope, FilterPair, Transcript, assert_same_as_opendkim
from support.opendkim import genkey, opendkim_sign
from support.tools import require

OUTSIDE = Envelope(client_addr="192.0.2.77", client_host="mx.outside.example")

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
    filters: FilterPair
    messages: dict[str, bytes]

    def run(self, case: str) -> tuple[Transcript, Transcript]:
        return self.filters.exchange(self.messages[case], OUTSIDE)


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
    with FilterPair(tmp, **common) as filters:  # type: ignore[arg-type]
        yield Pair(filters, messages)


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
    theirs, ours = pair.run(case)
    assert theirs.headers("Authentication-Results"), theirs  # the reference wrote one
    assert_same_as_opendkim(f"authres/v/{case}", theirs, ours)
    assert ours.final == theirs.final


def test_key_lookup_error_differs_on_purpose(pair: Pair) -> None:
    """A name missing from TestDNSData is a lookup *error* to OpenDKIM (KEYFAIL) and to
    dkimd; OpenDKIM 2.11 then adds no A-R and accepts, dkimd reports `dkim=temperror` and
    applies On-DNSError (docs/differences.md, key-lookup-error)."""
    theirs, ours = pair.run("key-not-found")
    assert (theirs.final[1], theirs.headers("Authentication-Results")) == ("a", []), theirs
    [ar] = ours.headers("Authentication-Results")
    assert ar.startswith(" mx.test.example;\n\tdkim=temperror "), ar
    assert ours.final[1] == "y 451 4.7.5 DKIM key retrieval failed", ours
    assert assert_same_as_opendkim("authres/v/key-not-found", theirs, ours) == {"key-lookup-error"}


def test_key_type_mismatch_differs_on_purpose(pair: Pair) -> None:
    """A key record saying k=ed25519 over an RSA key: OpenDKIM 2.11 ignores k= and passes
    the rsa-sha256 signature; dkimd reads the record as an ed25519 key, which p= is not
    (docs/differences.md, key-type-mismatch). Neither applies an On-* action."""
    theirs, ours = pair.run("key-edkey")
    assert "dkim=pass" in theirs.headers("Authentication-Results")[0], theirs
    assert "dkim=temperror" in ours.headers("Authentication-Results")[0], ours
    assert ours.final[1] == theirs.final[1] == "a"
    assert assert_same_as_opendkim("authres/v/key-edkey", theirs, ours) == {"key-type-mismatch"}
