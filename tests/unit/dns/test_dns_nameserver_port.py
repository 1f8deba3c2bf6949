"""`Nameservers ADDR:PORT`: a dkimd extension so a loopback resolver need not sit on port 53."""

from __future__ import annotations

import asyncio

import pytest

from dkimd.config import ConfigError, parse_config_text
from dkimd.dns.base import TxtStatus
from dkimd.dns.resolver import DnsResolver, split_nameserver
from support.fakedns import FakeDns


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", None)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("2001:db8::53", ("2001:db8::53", None)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
        ("[::1]", ("::1", None)),
    ],
)
def test_split_nameserver(text: str, expected: tuple[str, int | None]) -> None:
    assert split_nameserver(text) == expected


@pytest.mark.parametrize(
    "text", ["ns.example.com", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "[::1]x", "1.2.3"]
)
def test_bad_nameservers(text: str) -> None:
    with pytest.raises(ValueError):
        split_nameserver(text)
    with pytest.raises(ConfigError, match="Nameservers"):
        parse_config_text(f"Nameservers {text}\n")


def test_resolver_asks_the_given_port(fake_dns: FakeDns) -> None:
    fake_dns.txt("mail._domainkey.example.com", "v=DKIM1; p=abc")
    config = parse_config_text(f"Nameservers 127.0.0.1:{fake_dns.port}\n")
    resolver = DnsResolver(config.nameservers, timeout=2.0)
    result = asyncio.run(resolver.lookup_txt("mail._domainkey.example.com"))
    assert result.status is TxtStatus.OK
    assert result.records == (b"v=DKIM1; p=abc",)
    assert fake_dns.count("mail._domainkey.example.com") == 1


def test_cached_answers_without_a_query(fake_dns: FakeDns) -> None:
    from dkimd.dns.base import CachingTxtLookup

    fake_dns.txt("mail._domainkey.example.com", "v=DKIM1; p=abc", ttl=300)
    resolver = DnsResolver([f"127.0.0.1:{fake_dns.port}"], timeout=2.0)
    assert isinstance(resolver, CachingTxtLookup)
    assert resolver.cached("mail._domainkey.example.com") is None
    asyncio.run(resolver.lookup_txt("mail._domainkey.example.com"))
    hit = resolver.cached("MAIL._domainkey.example.com.")
    assert hit is not None and hit.records == (b"v=DKIM1; p=abc",)
    assert hit.name == "MAIL._domainkey.example.com."
    assert fake_dns.count("mail._domainkey.example.com") == 1


def test_test_dns_file_answers_from_memory() -> None:
    from dkimd.dns.testdata import TestDnsFile

    source = TestDnsFile.from_records({"a._domainkey.example.com": "v=DKIM1; p="})
    hit = source.cached("a._domainkey.example.com")
    assert hit is not None and hit.ok
    missing = source.cached("b._domainkey.example.com")
    assert missing is not None and missing.status is TxtStatus.NXDOMAIN
