"""ValidatingResolver without the signed tree (tests/interop/test_dnssec.py has that):
what it does with a resolver that knows nothing of DNSSEC, and its construction."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from dkimd.config import parse_config_text
from dkimd.dns.base import DnssecStatus, TxtStatus
from dkimd.dns.trust_anchors import load_trust_anchors
from dkimd.dns.validating import ValidatingResolver, validating_resolver
from support.fakedns import FakeDns

ANCHORS = Path(__file__).resolve().parents[2] / "data" / "dnssec" / "anchors.key"


def test_a_resolver_without_dnssec_leaves_records_unprotected_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """FakeDns, like a resolver that strips DNSSEC, echoes no DO bit and sends no RRSIG:
    the record is unprotected (not bogus, which would fail every signed zone), logged once."""
    with FakeDns() as server:
        server.txt("sel._domainkey.example", "v=DKIM1; p=abc")
        server.txt("other._domainkey.example", "v=DKIM1; p=def")
        resolver = ValidatingResolver(
            [f"127.0.0.1:{server.port}"], 2.0, anchors=load_trust_anchors(str(ANCHORS))
        )

        async def run() -> list[DnssecStatus | None]:
            first = await resolver.lookup_txt("sel._domainkey.example")
            second = await resolver.lookup_txt("other._domainkey.example")
            assert first.status is TxtStatus.OK and first.records == (b"v=DKIM1; p=abc",)
            return [first.dnssec, second.dnssec]

        with caplog.at_level(logging.WARNING, logger="dkimd.dns"):
            statuses = asyncio.run(run())
    assert statuses == [DnssecStatus.INSECURE, DnssecStatus.INSECURE]
    warnings = [
        r.getMessage() for r in caplog.records if "returns no DNSSEC records" in r.getMessage()
    ]
    assert len(warnings) == 1


def test_negative_answers_carry_no_status() -> None:
    with FakeDns() as server:
        resolver = ValidatingResolver([f"127.0.0.1:{server.port}"], 2.0, trust_resolver_ad=True)
        result = asyncio.run(resolver.lookup_txt("missing._domainkey.example"))
    assert result.status is TxtStatus.NXDOMAIN and result.dnssec is None


def test_the_configuration_chooses_the_mode() -> None:
    from dkimd.daemon import make_resolver

    socket = "Socket inet:8891@127.0.0.1\nNameservers 127.0.0.1:5353\n"
    anchored = make_resolver(parse_config_text(socket + f"TrustAnchorFile {ANCHORS}\n"))
    assert isinstance(anchored, ValidatingResolver)
    assert anchored.validator is not None and not anchored.trust_resolver_ad
    believing = make_resolver(
        parse_config_text(
            socket + f"TrustAnchorFile {ANCHORS}\nTrustResolverAD yes\nDNSConnect yes\n"
        )
    )
    assert isinstance(believing, ValidatingResolver)
    assert believing.validator is None and believing.trust_resolver_ad
    assert believing.nameservers == ["127.0.0.1:5353"]
    assert not isinstance(make_resolver(parse_config_text(socket)), ValidatingResolver)
    with pytest.raises(ValueError):
        validating_resolver(parse_config_text(socket))
    with pytest.raises(ValueError):
        ValidatingResolver(["127.0.0.1"], 1.0)  # neither anchors nor the AD bit
