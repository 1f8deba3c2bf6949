"""The running daemon's key guard: a signing key whose record is not in DNS is logged once,
and with SkipUnpublishedKeys yes skipped for the sender's next SigningTable match until a
reload finds its record (DNS from a local server, messages through miltertest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from support.dkimd import Dkimd
from support.fakedns import FakeDns
from support.opendkim import DkimKey, milter_transaction

pytestmark = [pytest.mark.e2e]

MESSAGE = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: guard\r\n"
    b"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n\r\nHello.\r\n"
)
WARNING = "key new._domainkey.example.com: new._domainkey.example.com: no key record in DNS"


def selector_signed(d: Dkimd) -> str:
    result = milter_transaction(d.socket_spec, MESSAGE)
    [signature] = result.headers("DKIM-Signature")
    return next(
        p.strip()[2:] for p in signature.replace("\n", "").split(";") if p.strip()[:2] == "s="
    )


def start(tmp_path: Path, fake_dns: FakeDns, new: DkimKey, old: DkimKey, skip: str | None) -> Dkimd:
    d = Dkimd(
        tmp_path / "dkimd",
        key_table={
            "new._domainkey.example.com": f"example.com:new:{new.private_key}",
            "mail._domainkey.example.com": f"example.com:mail:{old.private_key}",
        },
        # Both lines match alice@example.com; the first one wins unless it is skipped.
        signing_table={
            "*@example.com": "new._domainkey.example.com",
            "*@*example.com": "mail._domainkey.example.com",
        },
        internal_hosts=["127.0.0.1"],
        options={} if skip is None else {"SkipUnpublishedKeys": skip},
    )
    del d.config["TestDNSData"]
    d.config["Nameservers"] = f"127.0.0.1:{fake_dns.port}"
    d.write_config()
    return d.start()


@pytest.mark.parametrize("skip", ["yes", None])
def test_unpublished_key_is_logged_once_and_skipped_when_asked(
    tmp_path: Path, fake_dns: FakeDns, make_dkim_key: Callable[..., DkimKey], skip: str | None
) -> None:
    old = make_dkim_key(selector="mail")
    new = make_dkim_key(selector="new")
    fake_dns.txt(old.dns_name, old.txt)
    d = start(tmp_path, fake_dns, new, old, skip)
    try:
        d.wait_for_log(WARNING)
        expected = "mail" if skip else "new"
        assert [selector_signed(d) for _ in range(3)] == [expected] * 3
        assert d.log_text().count(WARNING) == 1
        if skip:
            assert "skipped in favour of the next SigningTable match" in d.log_text()
        else:
            assert "still signing with it (SkipUnpublishedKeys no)" in d.log_text()
        # The admin publishes the record; the reload's check finds it.
        fake_dns.txt(new.dns_name, new.txt)
        d.reload()
        d.wait_for_log("new._domainkey.example.com: record published again")
        assert selector_signed(d) == "new"
        assert d.log_text().count(WARNING) == 1
    finally:
        d.stop()
