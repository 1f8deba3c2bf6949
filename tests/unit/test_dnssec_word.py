"""The DNSSEC word after the key size in A-R items ("(1024-bit key; unprotected)").

OpenDKIM 2.11 knows no DNSSEC state for keys from TestDNSData or TestPublicKeys and writes no
word there (docs/opendkim-behaviour.md 0.4; the differential matrix compares it); for keys
from DNS without validation it writes "unprotected".
"""

from __future__ import annotations

from pathlib import Path

from dkimd.config import parse_config_text
from dkimd.dns.base import TxtResult, TxtStatus
from dkimd.dns.testdata import TestDnsFile
from dkimd.dns.testkeys import KeyRecordsFirst, TestPublicKeysFile
from dkimd.session import Runtime


def test_keys_from_test_public_keys_get_no_dnssec_word(tmp_path: Path) -> None:
    keys = tmp_path / "pubkeys"
    keys.write_text("mail._domainkey.example.com v=DKIM1; p=\n")
    config = parse_config_text(f"Mode v\nTestPublicKeys {keys}\n")
    resolver = KeyRecordsFirst(TestPublicKeysFile(keys), TestDnsFile.from_records({}))
    assert Runtime.build(config, resolver).dnssec_word is None


def test_keys_from_test_dns_data_get_no_dnssec_word() -> None:
    config = parse_config_text("Mode v\n")
    assert Runtime.build(config, TestDnsFile.from_records({})).dnssec_word is None


class _Dns:
    """A resolver that is neither test data nor test keys (no query is made here)."""

    async def lookup_txt(self, name: str) -> TxtResult:
        return TxtResult(name, TxtStatus.NXDOMAIN)


def test_keys_from_dns_are_unprotected() -> None:
    config = parse_config_text("Mode v\n")
    assert Runtime.build(config, _Dns()).dnssec_word == "unprotected"
