"""TrustAnchorFile, BogusKey, UnprotectedKey and the TrustResolverAD extension, read as
OpenDKIM 2.11 reads them (observed: `opendkim -n`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dkimd.config import KeyAction, analyze_config_text, parse_config_text
from dkimd.config.options import find_option

ANCHORS = Path(__file__).resolve().parents[2] / "data" / "dnssec" / "anchors.key"
SOCKET = "Socket inet:8891@127.0.0.1\n"


def test_defaults_are_opendkims() -> None:
    config = parse_config_text(SOCKET)
    assert config.bogus_key is KeyAction.FAIL
    assert config.unprotected_key is KeyAction.NONE
    assert config.trust_anchor_file is None and not config.trust_resolver_ad


def test_values_are_read_case_insensitively_and_implemented() -> None:
    config = parse_config_text(
        SOCKET + f"BogusKey Neutral\nUnprotectedKey FAIL\nTrustAnchorFile {ANCHORS}\n"
        "TrustResolverAD no\n"
    )
    assert config.bogus_key is KeyAction.NEUTRAL
    assert config.unprotected_key is KeyAction.FAIL
    assert config.trust_anchor_file == str(ANCHORS) and not config.trust_resolver_ad
    assert config.warnings == ()  # no "not implemented" warning any more
    for name in ("BogusKey", "UnprotectedKey", "TrustAnchorFile", "TrustResolverAD"):
        spec = find_option(name)
        assert spec is not None and spec.implemented, name


def test_an_unknown_key_action_refuses_the_configuration() -> None:
    """OpenDKIM: "unknown key action 'maybe'", exit 78."""
    report = analyze_config_text(SOCKET + "BogusKey maybe\n")
    assert report.config is None
    assert [p.message for p in report.errors] == ["BogusKey: unknown key action 'maybe'"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file or directory"),
        ("not a zone file\n", "TrustAnchorFile"),
        ("example. IN NS ns.example.\n", "no DS or DNSKEY"),
    ],
)
def test_an_unusable_trust_anchor_file_refuses_the_configuration(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "anchor.key"
    if content is not None:
        path.write_text(content)
    report = analyze_config_text(SOCKET + f"TrustAnchorFile {path}\n")
    assert report.config is None
    assert any(message in p.message for p in report.errors), report.errors


def test_test_dns_data_leaves_the_trust_anchor_unused(tmp_path: Path) -> None:
    """OpenDKIM applies no resolver option with TestDNSData (dkimf_config_setlib)."""
    data = tmp_path / "dns.data"
    data.write_text("")
    config = parse_config_text(
        SOCKET + f"TestDNSData file:{data}\nTrustAnchorFile {tmp_path / 'missing'}\n"
    )
    assert config.trust_anchor_file is None


def test_trusting_the_resolver_warns_about_what_it_trusts() -> None:
    report = analyze_config_text(SOCKET + f"TrustResolverAD yes\nTrustAnchorFile {ANCHORS}\n")
    assert report.config is not None and report.config.trust_resolver_ad
    messages = [w.message for w in report.warnings]
    assert any("no Nameservers" in m for m in messages), messages
    assert any("TrustAnchorFile is not used" in m for m in messages), messages
    quiet = analyze_config_text(SOCKET + "TrustResolverAD yes\nNameservers 127.0.0.1:5353\n")
    assert quiet.warnings == ()
