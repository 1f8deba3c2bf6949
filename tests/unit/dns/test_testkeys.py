"""TestPublicKeys: key records from a flat file, read as libopendkim dkim_get_key_file does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dkimd.config import analyze_config_text
from dkimd.daemon import make_resolver
from dkimd.dns.base import CachingTxtLookup, TxtLookup, TxtResult, TxtStatus
from dkimd.dns.testdata import TestDnsFile
from dkimd.dns.testkeys import (
    KeyRecordsFirst,
    TestPublicKeysFile,
    find_key_record,
    is_key_record_name,
)

# The shape of OpenDKIM's own tests/pubkeys: lines that are not key records, a revoked key,
# an ATPS name, and the name/record separators it uses (tabs, one space).
PUBKEYS = (
    b"example2.com\t\t\tfoo\n"
    b"_report._domainkey.example.com\tra=dkim-feedbacks\n"
    b"revoked._domainkey.example.com\tk=rsa; t=y; p=\n"
    b"test._domainkey.example.com v=DKIM1; k=rsa; p=FIRST\n"
    b"test._domainkey.example.com v=DKIM1; k=rsa; p=SECOND\n"
    b"noblank._domainkey.example.com\n"
    b"# comment._domainkey.example.com v=DKIM1; p=COMMENT\n"
    b"crlf._domainkey.example.com   v=DKIM1; p=CRLF\r\n"
)


def lookup(source: TxtLookup, name: str) -> TxtResult:
    return asyncio.run(source.lookup_txt(name))


@pytest.fixture
def pubkeys(tmp_path: Path) -> Path:
    path = tmp_path / "pubkeys"
    path.write_bytes(PUBKEYS)
    return path


def test_first_matching_line_wins_case_insensitively(pubkeys: Path) -> None:
    answer = lookup(TestPublicKeysFile(pubkeys), "TEST._domainkey.Example.COM")
    assert answer == TxtResult(
        "TEST._domainkey.Example.COM", TxtStatus.OK, (b"v=DKIM1; k=rsa; p=FIRST",)
    )


def test_record_starts_after_the_blank_run_and_keeps_the_rest_of_the_line() -> None:
    assert find_key_record(PUBKEYS, "crlf._domainkey.example.com") == b"v=DKIM1; p=CRLF"
    assert find_key_record(PUBKEYS, "revoked._domainkey.example.com") == b"k=rsa; t=y; p="


def test_lines_that_never_match() -> None:
    # no blank after the name, a comment line, a name that is only a prefix of a line's name
    assert find_key_record(PUBKEYS, "noblank._domainkey.example.com") is None
    assert find_key_record(PUBKEYS, "comment._domainkey.example.com") is None
    assert find_key_record(PUBKEYS, "test._domainkey.example") is None


def test_no_matching_line_is_nokey(pubkeys: Path) -> None:
    answer = lookup(TestPublicKeysFile(pubkeys), "other._domainkey.example.com")
    assert answer.status is TxtStatus.NXDOMAIN


def test_missing_file_is_a_temporary_failure(tmp_path: Path) -> None:
    answer = lookup(TestPublicKeysFile(tmp_path / "absent"), "test._domainkey.example.com")
    assert answer.status is TxtStatus.SERVFAIL and answer.status.is_temporary
    assert str(tmp_path) not in answer.detail  # no paths in what may reach a log line


def test_file_is_read_again_on_every_lookup(pubkeys: Path) -> None:
    source = TestPublicKeysFile(pubkeys)
    assert lookup(source, "new._domainkey.example.com").status is TxtStatus.NXDOMAIN
    pubkeys.write_bytes(PUBKEYS + b"new._domainkey.example.com v=DKIM1; p=NEW\n")
    assert lookup(source, "new._domainkey.example.com").records == (b"v=DKIM1; p=NEW",)


@pytest.mark.parametrize(
    ("name", "is_key"),
    [
        ("test._domainkey.example.com", True),
        ("a.b._domainkey.example.com.", True),
        ("_report._domainkey.example.com", False),
        ("_adsp._domainkey.example.com", False),
        ("_domainkey.example.com", False),
        ("test._domainkey", False),
        ("UN42N5XOV642KXRXRQIYANHCOUPGQL5LT4WTBKYT2IJFLBWODFDQ====._atps.example.net", False),
    ],
)
def test_key_record_names(name: str, is_key: bool) -> None:
    assert is_key_record_name(name) is is_key


def test_keys_from_the_file_everything_else_from_the_other_lookup(pubkeys: Path) -> None:
    other = TestDnsFile.from_records(
        {
            "test._domainkey.example.com": "v=DKIM1; p=FROM-DNS-DATA",
            "_report._domainkey.example.com": "ra=from-dns-data",
        }
    )
    router = KeyRecordsFirst(TestPublicKeysFile(pubkeys), other)
    assert lookup(router, "test._domainkey.example.com").records == (b"v=DKIM1; k=rsa; p=FIRST",)
    assert lookup(router, "_report._domainkey.example.com").records == (b"ra=from-dns-data",)
    # key names are never answered from memory: the file is read per lookup
    assert isinstance(router, CachingTxtLookup)
    assert router.cached("test._domainkey.example.com") is None
    cached = router.cached("_report._domainkey.example.com")
    assert cached is not None and cached.records == (b"ra=from-dns-data",)


def test_config_combines_test_public_keys_with_test_dns_data(
    pubkeys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "dns.data"
    data.write_text("_report._domainkey.example.com ra=reports\n")
    monkeypatch.chdir(tmp_path)
    report = analyze_config_text(
        "Mode v\nSocket inet:8891@localhost\nTestPublicKeys pubkeys\nTestDNSData file:dns.data\n"
    )
    assert report.config is not None and not report.warnings
    # relative to where the filter started, kept absolute for later (detach chdirs to /)
    assert report.config.test_public_keys == str(pubkeys)
    resolver = make_resolver(report.config)
    assert isinstance(resolver, KeyRecordsFirst)
    assert lookup(resolver, "revoked._domainkey.example.com").records == (b"k=rsa; t=y; p=",)
    assert lookup(resolver, "_report._domainkey.example.com").records == (b"ra=reports",)


def test_a_name_test_dns_data_lacks_is_a_failed_lookup(tmp_path: Path) -> None:
    """OpenDKIM 2.11 (observed): a key TestDNSData lacks is KEYFAIL, not NOKEY; an ATPS name
    it lacks leaves dkim-atps neutral. A --dns-file zone stand-in keeps NXDOMAIN."""
    data = tmp_path / "dns.data"
    data.write_text("test._domainkey.example.com v=DKIM1; p=abc\n")
    config = analyze_config_text(f"Mode v\nTestDNSData file:{data}\n").config
    assert config is not None
    resolver = make_resolver(config)
    assert lookup(resolver, "test._domainkey.example.com").ok
    missing = lookup(resolver, "gone._domainkey.example.com")
    assert missing.status is TxtStatus.SERVFAIL and missing.status.is_temporary
    assert isinstance(resolver, CachingTxtLookup)
    assert resolver.cached("gone._domainkey.example.com") == missing
    zone = TestDnsFile.from_records({"a.example": "x"})
    assert lookup(zone, "gone.example").status is TxtStatus.NXDOMAIN


def test_unreadable_test_public_keys_is_a_warning_not_an_error(tmp_path: Path) -> None:
    report = analyze_config_text(
        f"Mode v\nSocket inet:8891@localhost\nTestPublicKeys {tmp_path}/absent\n"
    )
    assert report.ok and report.config is not None
    assert [w.option for w in report.warnings] == ["TestPublicKeys"]
    assert not any("not implement" in w.message for w in report.warnings)
