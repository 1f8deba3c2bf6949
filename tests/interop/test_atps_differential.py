"""ATPS verification (RFC 6541), dkimd against the real OpenDKIM 2.11.

Mail from example.net signed by third parties (example.com, example.org, example.biz), each
signature made by OpenDKIM itself with ATPSDomains, so `atps=`/`atpsh=` are OpenDKIM's.
Both daemons verify with the same TestDNSData, where example.net authorises example.com
(`v=ATPS1`), publishes something else for example.org, and nothing for example.biz. Every
reply and header change is compared (support.differential), the Authentication-Results field
by field, its `dkim-atps=` item in particular.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dkimd.dkim.atps import atps_label
from support.differential import Envelope, FilterPair, Transcript, assert_same_as_opendkim
from support.opendkim import DkimKey, OpenDKIM, genkey, milter_transaction
from support.tools import require

OUTSIDE = Envelope(client_addr="192.0.2.77", client_host="mx.outside.example")

MESSAGE = (
    b"From: Carol <carol@example.net>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: third party\r\n"
    b"Date: Fri, 04 Dec 2026 12:00:00 +0000\r\n"
    b"Message-ID: <atps-1@example.net>\r\n"
    b"\r\n"
    b"Signed on behalf of example.net.\r\n"
)


def third_party_sign(
    tmp: Path, message: bytes, key: DkimKey, atps_hash: str | None = "sha256"
) -> bytes:
    """`message` signed by OpenDKIM with `key` whatever its From, with ATPSDomains example.net
    (and `atps_hash`) unless `atps_hash` is None."""
    options = {} if atps_hash is None else {"ATPSDomains": "example.net"}
    if atps_hash is not None:
        options["ATPSHashAlgorithm"] = atps_hash
    with OpenDKIM(
        tmp,
        mode="s",
        key_table={"k": f"{key.domain}:{key.selector}:{key.private_key}"},
        signing_table={"*": "k"},
        canonicalization="relaxed/simple",
        options=options,
    ) as od:
        result = milter_transaction(od.socket_spec, message, collect=("DKIM-Signature",))
        [sig] = result.headers("DKIM-Signature")
    value = sig.replace("\r\n", "\n").replace("\n", "\r\n")
    return b"DKIM-Signature:" + value.encode("latin-1") + b"\r\n" + message


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
    tmp = tmp_path_factory.mktemp("atps-diff")
    com = genkey(tmp / "keys-com", "example.com", "mail", bits=1024)
    org = genkey(tmp / "keys-org", "example.org", "mail", bits=1024)
    biz = genkey(tmp / "keys-biz", "example.biz", "mail", bits=1024)
    net = genkey(tmp / "keys-net", "example.net", "mail", bits=1024)
    # d=Example.COM: libopendkim hashes d= as written, so the label is not example.com's.
    mixed = genkey(tmp / "keys-mixed", "Example.COM", "mixed", bits=1024)
    records = {
        **com.records,
        **org.records,
        **biz.records,
        **net.records,
        "mixed._domainkey.example.com": mixed.txt,
        f"{atps_label('Example.COM')}._atps.example.net": "v=ATPS1",
        f"{atps_label('example.com')}._atps.example.net": "v=ATPS1",
        f"{atps_label('example.com', 'sha1')}._atps.example.net": "v=ATPS1",
        f"{atps_label('example.org')}._atps.example.net": "foo=bar",
        # Nothing for example.biz: a failed lookup to OpenDKIM's TestDNSData.
    }
    signed = third_party_sign(tmp / "s1", MESSAGE, com)
    messages = {
        "authorised": signed,
        "authorised-sha1": third_party_sign(tmp / "s2", MESSAGE, com, "sha1"),
        "not-authorised": third_party_sign(tmp / "s3", MESSAGE, org),
        "no-record": third_party_sign(tmp / "s4", MESSAGE, biz),
        "no-atps-tag": third_party_sign(tmp / "s5", MESSAGE, com, None),
        "mixed-case-signer": third_party_sign(tmp / "s9", MESSAGE, mixed),
        "body-changed": signed.replace(b"Signed on", b"Changed on"),
        "author-signed-too": third_party_sign(tmp / "s6", signed, net, None),
        "refused-then-authorised": third_party_sign(
            tmp / "s7", third_party_sign(tmp / "s8", MESSAGE, com), biz, None
        ),
    }
    common = {
        "mode": "v",
        "dns_records": records,
        "options": {"AlwaysAddARHeader": "yes", "On-BadSignature": "reject"},
    }
    with FilterPair(tmp, **common) as filters:  # type: ignore[arg-type]
        yield Pair(filters, messages)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("authorised", "pass"),
        ("authorised-sha1", "pass"),
        ("not-authorised", "fail"),
        ("no-record", "neutral"),
        ("no-atps-tag", "neutral"),
        ("mixed-case-signer", "pass"),
        ("body-changed", "neutral"),
        ("author-signed-too", "neutral"),
        ("refused-then-authorised", "neutral"),
    ],
)
def test_same_atps_result_and_reply(pair: Pair, case: str, expected: str) -> None:
    theirs, ours = pair.run(case)
    [ar] = theirs.headers("Authentication-Results")
    assert ar.endswith(f"dkim-atps={expected}"), theirs  # what the reference says
    assert_same_as_opendkim(f"atps/v/{case}", theirs, ours)
    assert ours.headers("Authentication-Results") == [ar]


def test_atpsh_none_differs_on_purpose(tmp_path: Path) -> None:
    """`atpsh=none` names d= itself. OpenDKIM 2.11 dies reading the record at that name;
    dkimd judges it as any other ATPS record (docs/differences.md, atpsh-none-crash)."""
    require("opendkim")
    key = genkey(tmp_path / "keys", "example.com", "mail", bits=1024)
    message = third_party_sign(tmp_path / "sign", MESSAGE, key, "none")
    assert b"atpsh=none; atps=example.net;" in message
    records = {**key.records, "example.com._atps.example.net": "v=ATPS1"}
    options = {"AlwaysAddARHeader": "yes"}
    with FilterPair(tmp_path / "pair", mode="v", dns_records=records, options=options) as pair:
        theirs, ours = pair.exchange(message, OUTSIDE)
    [ar] = ours.headers("Authentication-Results")
    assert "dkim=pass" in ar and ar.endswith("dkim-atps=pass"), ours
    assert ours.final == ("eom", "a"), ours
    assert theirs.final[1] == "closed", theirs  # the OpenDKIM process is gone
    assert assert_same_as_opendkim("atps/v/atpsh-none", theirs, ours) == {"atpsh-none-crash"}
