"""Start-up, key and signing options against the real OpenDKIM 2.11: the same configuration
and message through both filters (support.differential), every reply and header change
compared, the DKIM-Signature fields tag for tag (t= and b= aside).

* a malformed KeyTable line, a SigningTable naming a key the KeyTable lacks: both start, and
  the senders routed there get a bare TEMPFAIL at end of headers;
* MultipleSignatures, RequestReports, ATPSDomains, BodyLengthDB, MaximumSignedBytes: the
  DKIM-Signature fields are OpenDKIM's, tag for tag;
* TestPublicKeys: key records from a flat file verify on both.

dkimd oversigns From on purpose (docs/differences.md, from-oversign).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.differential import Envelope, FilterPair, assert_same_as_opendkim
from support.opendkim import DkimKey, genkey, opendkim_sign
from support.tools import require

pytestmark = pytest.mark.interop


def message(sender: str) -> bytes:
    return (
        f"From: {sender}\r\nDate: Tue, 22 Dec 2009 13:04:12 -0800\r\n"
        "Subject: Signing test\r\n\r\nThis is a test!\r\n"
    ).encode()


def inside(sender: str) -> Envelope:
    return Envelope(mail_from=sender, rcpt_to=("recipient@example.com",))


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    require("opendkim-genkey")
    return genkey(tmp_path_factory.mktemp("key"), "example.com", "test", bits=1024)


def test_broken_tables_start_and_tempfail_at_end_of_headers(tmp_path: Path, key: DkimKey) -> None:
    path = key.private_key
    keys = tmp_path / "keys"
    # First line for "bad" wins, and it is not domain:selector:key.
    keys.write_text(
        f"bad\texample.com test {path}\nbad example.com:test:{path}\ngood example.net:test:{path}\n"
    )
    signing = {"*@example.com": "bad", "*@example.org": "gone", "*@example.net": "good"}
    with FilterPair(tmp_path, key_table=keys, signing_table=signing) as pair:
        for sender in ("user@example.com", "user@example.org", "user@example.net"):
            theirs, ours = pair.exchange(message(sender), inside(sender))
            assert_same_as_opendkim(f"options/sv:in/broken-tables-{sender}", theirs, ours)
            if sender.endswith("example.net"):
                assert theirs.final == ("eom", "a") and theirs.headers("DKIM-Signature")
            else:
                assert theirs.final == ours.final == ("eoh", "t")


@pytest.mark.parametrize(
    "options",
    [
        {"MultipleSignatures": "yes"},
        {"RequestReports": "true"},
        {"ATPSDomains": "example.com", "RequestReports": "1"},
        {"ATPSDomains": "example.com", "ATPSHashAlgorithm": "none"},
        {"BodyLengthDB": "csl:*@.com"},
        {"BodyLengthDB": "csl:nobody@example.com"},
        {"MaximumSignedBytes": "10"},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_signature_tags(tmp_path: Path, key: DkimKey, options: dict[str, str]) -> None:
    path = key.private_key
    keys = {"k1": f"example.com:test:{path}", "k2": f"example.net:test2:{path}"}
    (tmp_path / "sign").write_text("user@example.com k1\nexample.com k2\n")
    with FilterPair(
        tmp_path,
        key_table=keys,
        canonicalization="relaxed/simple",
        options={"SigningTable": f"file:{tmp_path / 'sign'}", **options},
    ) as pair:
        theirs, ours = pair.exchange(message("user@example.com"), inside("user@example.com"))
    setting = "+".join(f"{k}={v}" for k, v in options.items())
    assert_same_as_opendkim(f"options/sv:in/{setting}", theirs, ours)
    expected = 2 if "MultipleSignatures" in options else 1
    assert len(theirs.headers("DKIM-Signature")) == expected, theirs


def test_test_public_keys_verify_on_both(tmp_path: Path, key: DkimKey) -> None:
    """A message OpenDKIM signs verifies with TestPublicKeys (no TestDNSData record) on both."""
    pubkeys = tmp_path / "pubkeys"
    pubkeys.write_text(
        f"other._domainkey.example.com\tv=DKIM1; p=\ntest._domainkey.example.com {key.txt}\n"
    )
    signed = opendkim_sign(message("user@example.com"), key.private_key, "example.com", "test")
    outside = Envelope(client_addr="192.0.2.9", client_host="outside.example")
    with FilterPair(tmp_path, mode="v", options={"TestPublicKeys": str(pubkeys)}) as pair:
        theirs, ours = pair.exchange(signed, outside)
    assert_same_as_opendkim("options/v/test-public-keys", theirs, ours)
    [ar] = theirs.headers("Authentication-Results")
    assert "dkim=pass" in ar, theirs
