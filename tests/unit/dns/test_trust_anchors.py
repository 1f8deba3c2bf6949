"""TrustAnchorFile: unbound's trust-anchor-file format (DS / DNSKEY zone-file lines)."""

from __future__ import annotations

from pathlib import Path

import dns.name
import pytest

from dkimd.dns.trust_anchors import load_trust_anchors, parse_trust_anchors

DATA = Path(__file__).resolve().parents[2] / "data" / "dnssec"


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def test_ds_and_dnskey_lines_by_zone_other_types_ignored() -> None:
    anchors = load_trust_anchors(str(DATA / "anchors.key"))
    assert set(anchors.zones) == {dns.name.root, name("example.")}
    root = anchors.zones[dns.name.root]
    assert [d.key_tag for d in root.ds] == [20326] and root.dnskeys == []
    example = anchors.zones[name("example.")]
    assert example.ds == [] and [k.algorithm for k in example.dnskeys] == [13]


def test_the_closest_enclosing_anchor_covers_a_name() -> None:
    anchors = load_trust_anchors(str(DATA / "anchors.key"))
    covering = anchors.covering(name("sel._domainkey.mail.example."))
    assert covering is not None and covering.zone == name("example.")
    other = anchors.covering(name("sel._domainkey.example.org."))
    assert other is not None and other.zone == dns.name.root
    only_example = parse_trust_anchors("example. IN DS 1 13 2 " + "00" * 32 + "\n")
    assert only_example.covering(name("example.org.")) is None


@pytest.mark.parametrize(
    "text",
    [
        "",  # nothing at all
        "; only a comment\n",
        "example. IN NS ns.example.\n",  # no DS or DNSKEY
        "this is not a zone file line\n",
        "example. IN DS 1 13 2 not-hex\n",
    ],
)
def test_a_file_without_usable_anchors_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_trust_anchors(text)


def test_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load_trust_anchors(str(tmp_path / "missing.key"))
