"""`TrustAnchorFile`: the DNSSEC trust anchors key records are validated from.

OpenDKIM hands the file to libunbound (`ub_ctx_add_ta_file`), so it is in unbound's
`trust-anchor-file` format: zone-file lines holding DS or DNSKEY records, e.g. Debian's
`/usr/share/dns/root.key` (the root KSK as DNSKEY) or `root.ds`:

    . IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D
    example. 3600 IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+...

`;` starts a comment; `$ORIGIN`/`$TTL` lines are accepted (dnspython's zone-file reader);
records of other types are ignored, as unbound ignores them. A file that cannot be read,
does not parse, or holds no DS/DNSKEY at all is an error (OpenDKIM refuses to start with
"failed to add trust anchor").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.zonefile

__all__ = ["TrustAnchor", "TrustAnchors", "load_trust_anchors"]


@dataclass(slots=True)
class TrustAnchor:
    """What one zone is trusted by: DS digests and/or DNSKEYs of its key-signing keys."""

    zone: dns.name.Name
    ds: list[dns.rdtypes.ANY.DS.DS] = field(default_factory=list)
    dnskeys: list[dns.rdtypes.ANY.DNSKEY.DNSKEY] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """The anchors of one file, by zone."""

    zones: dict[dns.name.Name, TrustAnchor]

    def covering(self, name: dns.name.Name) -> TrustAnchor | None:
        """The anchor of the closest enclosing zone of `name` (or `name` itself), if any."""
        candidate = name
        while True:
            anchor = self.zones.get(candidate)
            if anchor is not None:
                return anchor
            if candidate == dns.name.root:
                return None
            candidate = candidate.parent()


def parse_trust_anchors(text: str) -> TrustAnchors:
    """The anchors in `text`; ValueError when it does not parse or holds none."""
    zones: dict[dns.name.Name, TrustAnchor] = {}
    try:
        reader = dns.zonefile.read_rrsets(
            text, rdclass=None, default_ttl=0, origin=dns.name.root, relativize=False
        )
    except dns.exception.DNSException as exc:
        raise ValueError(f"not a trust anchor file: {exc}") from exc
    for rrset in reader:
        if rrset.rdclass != dns.rdataclass.IN:
            continue
        for rdata in rrset:
            if isinstance(rdata, dns.rdtypes.ANY.DS.DS):
                zones.setdefault(rrset.name, TrustAnchor(rrset.name)).ds.append(rdata)
            elif isinstance(rdata, dns.rdtypes.ANY.DNSKEY.DNSKEY):
                zones.setdefault(rrset.name, TrustAnchor(rrset.name)).dnskeys.append(rdata)
    if not zones:
        raise ValueError("no DS or DNSKEY record in the trust anchor file")
    return TrustAnchors(zones)


def load_trust_anchors(path: str) -> TrustAnchors:
    """The anchors in the file at `path`; OSError or ValueError when it is unusable."""
    with open(path, encoding="ascii", errors="replace") as handle:
        return parse_trust_anchors(handle.read())
