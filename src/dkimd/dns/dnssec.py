"""DNSSEC validation of an answer from a trust anchor down (RFC 4033-4035, RFC 5155).

    validator = ChainValidator(anchors, query)      # query(name, rdtype) -> response
    status = await validator.answer_status(qname, response)   # SECURE / INSECURE / BOGUS

This is what libunbound does for OpenDKIM when `TrustAnchorFile` is set, done with
dnspython's `dns.dnssec`: the answer's RRsets are checked against the DNSKEYs of the zone
that signed them, those DNSKEYs against the DS records in the parent, and so on up to a
trust anchor. The queries go to the configured resolver with CD set (RFC 4035 3.2.2), so
it hands over what it has even when it would call it bogus: the verdict is ours.

* SECURE: every RRset of the answer validates along an unbroken chain.
* INSECURE: no anchor covers the name, or a signed parent proves (NSEC, NSEC3, or an
  NSEC3 opt-out span) that a zone between the anchor and the name has no DS, or the DS
  only names algorithms or digests we cannot check (RFC 4035 5.2).
* BOGUS: anything else: a bad or expired signature, a missing RRSIG or DNSKEY, a DS that
  matches no key, a denial that proves nothing.

A query that cannot be answered (timeout, SERVFAIL) raises `ChainUnavailable`: nothing can
be said, and the caller treats the lookup as a temporary DNS failure.

Validated DNSKEY sets and zone cuts are kept per zone for their TTL (bounded), so a chain
is walked once per TTL, not once per key record. Not done: the proof that a wildcard
answer had no closer match, and validation of negative answers (a missing key record has
no status: it fails anyway).
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import dns.dnssec
import dns.dnssectypes
import dns.exception
import dns.message
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.ANY.NSEC3
import dns.rdtypes.ANY.RRSIG
import dns.rrset

from dkimd.dns.base import DnssecStatus
from dkimd.dns.trust_anchors import TrustAnchor, TrustAnchors

__all__ = ["ChainUnavailable", "ChainValidator", "Query"]

#: Ask the resolver for `name`/`rdtype` (DO and CD set); the response, NXDOMAIN included.
#: Raises ChainUnavailable when there is none to be had.
Query = Callable[[dns.name.Name, dns.rdatatype.RdataType], Awaitable[dns.message.Message]]

_ZONE_KEY_FLAG = 0x0100  # DNSKEY flags: Zone Key (RFC 4034 2.1.1)
_NSEC3_OPT_OUT = 0x01
# Algorithms and digests are checked as unbound 1.17 checks them (SHA-1 included).
_POLICY = dns.dnssec.allow_all_policy


class ChainUnavailable(Exception):
    """A record the chain needs could not be fetched (timeout, SERVFAIL)."""


class _Bogus(Exception):
    """Validation failed; the message says where."""


@dataclass(frozen=True, slots=True)
class _Insecure:
    """A zone at or above the one asked about is provably unsigned."""

    why: str


@dataclass(frozen=True, slots=True)
class _ZoneKeys:
    zone: dns.name.Name
    dnskeys: dns.rdataset.Rdataset


_Trust = _ZoneKeys | _Insecure


class ChainValidator:
    """Validates answers against `anchors`, fetching DS/DNSKEY records with `query`."""

    def __init__(
        self,
        anchors: TrustAnchors,
        query: Query,
        *,
        cache_size: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.anchors = anchors
        self._query = query
        self._clock = clock
        self.cache_size = max(0, cache_size)
        # zone name -> (expiry, what is known of it): its validated keys, or insecure
        self._zones: OrderedDict[dns.name.Name, tuple[float, _Trust]] = OrderedDict()
        # names known not to be zone cuts, below a zone whose keys are known
        self._inside: OrderedDict[dns.name.Name, float] = OrderedDict()

    async def answer_status(
        self, qname: dns.name.Name, response: dns.message.Message
    ) -> tuple[DnssecStatus, str]:
        """The status of the positive answer in `response` to a query for `qname`, and why."""
        if self.anchors.covering(qname) is None:
            return DnssecStatus.INSECURE, "no trust anchor covers the name"
        rrsets = [r for r in response.answer if r.rdtype != dns.rdatatype.RRSIG]
        if not rrsets:
            return DnssecStatus.BOGUS, "empty answer"
        worst = (DnssecStatus.SECURE, "validated")
        try:
            # Each RRset of a CNAME chain on its own chain of trust; the weakest one counts.
            for rrset in rrsets:
                anchor = self.anchors.covering(rrset.name)
                if anchor is None:
                    worst = (DnssecStatus.INSECURE, f"no trust anchor covers {rrset.name}")
                    continue
                status = await self._rrset_status(anchor, rrset, _rrsigs(response, rrset))
                if status[0] is DnssecStatus.INSECURE:
                    worst = status
        except _Bogus as exc:
            return DnssecStatus.BOGUS, str(exc)
        except (ValueError, dns.exception.DNSException) as exc:
            # Records that do not hold together (an NSEC3 owner that is no hash, an unknown
            # hash algorithm): nothing validates, and nothing here may take the lookup down.
            return DnssecStatus.BOGUS, f"malformed DNSSEC records: {type(exc).__name__}: {exc}"
        return worst

    # -- one RRset --

    async def _rrset_status(
        self,
        anchor: TrustAnchor,
        rrset: dns.rrset.RRset,
        rrsigs: dns.rrset.RRset | None,
    ) -> tuple[DnssecStatus, str]:
        if rrsigs is None:
            # Unsigned data is fine only below a provably unsigned delegation.
            trust = await self._walk_down(anchor, rrset.name)
            if isinstance(trust, _Insecure):
                return DnssecStatus.INSECURE, trust.why
            raise _Bogus(f"{rrset.name} is in signed zone {trust.zone} but has no RRSIG")
        signers = {sig.signer for sig in rrsigs if isinstance(sig, dns.rdtypes.ANY.RRSIG.RRSIG)}
        if len(signers) != 1:
            raise _Bogus(f"{rrset.name}: RRSIGs from {len(signers)} signers")
        signer = signers.pop()
        if not rrset.name.is_subdomain(signer) or not signer.is_subdomain(anchor.zone):
            raise _Bogus(f"{rrset.name}: signed by {signer}, outside its chain")
        trust = await self._zone_trust(anchor, signer)
        if isinstance(trust, _Insecure):
            return DnssecStatus.INSECURE, trust.why
        _validate(rrset, rrsigs, trust, self._clock())
        return DnssecStatus.SECURE, f"validated by {signer}"

    # -- the chain --

    async def _zone_trust(self, anchor: TrustAnchor, zone: dns.name.Name) -> _Trust:
        """The validated DNSKEYs of `zone` (which signs something), or why it is insecure."""
        known = self._cached_zone(zone)
        if known is not None:
            return known
        if zone == anchor.zone:
            return await self._anchor_keys(anchor)
        response = await self._query(zone, dns.rdatatype.DS)
        ds_rrset = response.get_rrset(response.answer, zone, dns.rdataclass.IN, dns.rdatatype.DS)
        if ds_rrset is None:
            why = await self._no_ds(anchor, zone, response)
            if why is None:
                raise _Bogus(f"{zone} signs records but its parent proves no DS for it")
            return self._remember(zone, _Insecure(why), _negative_ttl(response))
        ds_sigs = _rrsigs(response, ds_rrset)
        if ds_sigs is None:
            raise _Bogus(f"DS {zone} has no RRSIG")
        parent = _signer(ds_sigs)
        if not zone.is_subdomain(parent) or zone == parent or not parent.is_subdomain(anchor.zone):
            raise _Bogus(f"DS {zone} signed by {parent}")
        parent_trust = await self._zone_trust(anchor, parent)
        if isinstance(parent_trust, _Insecure):
            return parent_trust
        _validate(ds_rrset, ds_sigs, parent_trust, self._clock())
        return await self._keys_from_ds(zone, list(ds_rrset), int(ds_rrset.ttl))

    async def _anchor_keys(self, anchor: TrustAnchor) -> _Trust:
        known = self._cached_zone(anchor.zone)
        if known is not None:
            return known
        return await self._keys_from_ds(anchor.zone, anchor.ds, None, trusted=anchor.dnskeys)

    async def _keys_from_ds(
        self,
        zone: dns.name.Name,
        ds_records: Iterable[object],
        ttl: int | None,
        *,
        trusted: Iterable[dns.rdtypes.ANY.DNSKEY.DNSKEY] = (),
    ) -> _Trust:
        """Fetch `zone`'s DNSKEYs; keep them if one that a DS (or a trusted DNSKEY) names
        signs the set (RFC 4035 5.2)."""
        ds_list = [d for d in ds_records if isinstance(d, dns.rdtypes.ANY.DS.DS)]
        trusted = list(trusted)
        usable_ds = [d for d in ds_list if _ds_checkable(d)]
        if ds_list and not usable_ds and not trusted:
            why = f"DS of {zone} uses only algorithms or digests not supported"
            return self._remember(zone, _Insecure(why), ttl or 300)
        response = await self._query(zone, dns.rdatatype.DNSKEY)
        keys = response.get_rrset(response.answer, zone, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
        if keys is None:
            raise _Bogus(f"no DNSKEY at {zone}")
        sigs = _rrsigs(response, keys)
        if sigs is None:
            raise _Bogus(f"DNSKEY {zone} has no RRSIG")
        entry_keys = [
            key
            for key in keys
            if isinstance(key, dns.rdtypes.ANY.DNSKEY.DNSKEY)
            and key.flags & _ZONE_KEY_FLAG
            and (any(_ds_matches(zone, d, key) for d in usable_ds) or key in trusted)
        ]
        if not entry_keys:
            raise _Bogus(f"no DNSKEY of {zone} matches its DS or trust anchor")
        entry = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.DNSKEY)
        for key in entry_keys:
            entry.add(key)
        _validate(keys, sigs, _ZoneKeys(zone, entry), self._clock())
        lifetime = int(keys.ttl) if ttl is None else min(ttl, int(keys.ttl))
        return self._remember(zone, _ZoneKeys(zone, keys), lifetime)

    async def _walk_down(self, anchor: TrustAnchor, name: dns.name.Name) -> _Trust:
        """Follow zone cuts from the anchor to `name` (DS queries for every name between):
        the keys of the zone `name` is in, or the insecure delegation above it."""
        trust = await self._anchor_keys(anchor)
        labels = len(anchor.zone.labels)
        for depth in range(labels + 1, len(name.labels) + 1):
            if isinstance(trust, _Insecure):
                return trust
            child = dns.name.Name(name.labels[-depth:])
            known = self._cached_zone(child)
            if known is not None:
                trust = known
                continue
            if self._is_inside(child):
                continue
            response = await self._query(child, dns.rdatatype.DS)
            ds_rrset = response.get_rrset(
                response.answer, child, dns.rdataclass.IN, dns.rdatatype.DS
            )
            if ds_rrset is not None:
                ds_sigs = _rrsigs(response, ds_rrset)
                if ds_sigs is None:
                    raise _Bogus(f"DS {child} has no RRSIG")
                _validate(ds_rrset, ds_sigs, trust, self._clock())
                trust = await self._keys_from_ds(child, list(ds_rrset), int(ds_rrset.ttl))
                continue
            denial = _denial(child, response, trust, self._clock())
            if denial == "insecure":
                why = f"{child} is an unsigned delegation from {trust.zone}"
                trust = self._remember(child, _Insecure(why), _negative_ttl(response))
            elif denial == "inside":
                self._remember_inside(child, _negative_ttl(response))
            else:
                raise _Bogus(f"no proof for the missing DS at {child}: {denial}")
        return trust

    async def _no_ds(
        self, anchor: TrustAnchor, zone: dns.name.Name, response: dns.message.Message
    ) -> str | None:
        """Why `zone` is insecure when its DS query came back empty, or None if unproven."""
        parent_trust = await self._walk_down(anchor, zone.parent())
        if isinstance(parent_trust, _Insecure):
            return parent_trust.why
        if _denial(zone, response, parent_trust, self._clock()) == "insecure":
            return f"{zone} is an unsigned delegation from {parent_trust.zone}"
        return None

    # -- caches --

    def _cached_zone(self, zone: dns.name.Name) -> _Trust | None:
        entry = self._zones.get(zone)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._zones[zone]
            return None
        return entry[1]

    def _remember(self, zone: dns.name.Name, trust: _Trust, ttl: int) -> _Trust:
        if self.cache_size and ttl > 0:
            self._zones[zone] = (self._clock() + ttl, trust)
            self._zones.move_to_end(zone)
            while len(self._zones) > self.cache_size:
                self._zones.popitem(last=False)
        return trust

    def _is_inside(self, name: dns.name.Name) -> bool:
        expiry = self._inside.get(name)
        if expiry is None:
            return False
        if self._clock() >= expiry:
            del self._inside[name]
            return False
        return True

    def _remember_inside(self, name: dns.name.Name, ttl: int) -> None:
        if self.cache_size:
            self._inside[name] = self._clock() + ttl
            while len(self._inside) > self.cache_size:
                self._inside.popitem(last=False)


# -- helpers --


def _negative_ttl(response: dns.message.Message) -> int:
    """How long a proven absence holds: min(SOA TTL, SOA MINIMUM) (RFC 2308), capped at an
    hour; 5 minutes when the response has no SOA."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return max(0, min(int(rrset.ttl), int(rrset[0].minimum), 3600))
    return 300


def _rrsigs(response: dns.message.Message, rrset: dns.rrset.RRset) -> dns.rrset.RRset | None:
    for section in (response.answer, response.authority):
        found = response.get_rrset(
            section, rrset.name, dns.rdataclass.IN, dns.rdatatype.RRSIG, rrset.rdtype
        )
        if found is not None and len(found):
            return found
    return None


def _signer(rrsigs: dns.rrset.RRset) -> dns.name.Name:
    signers = {sig.signer for sig in rrsigs if isinstance(sig, dns.rdtypes.ANY.RRSIG.RRSIG)}
    if len(signers) != 1:
        raise _Bogus(f"{rrsigs.name}: RRSIGs from {len(signers)} signers")
    return signers.pop()


def _validate(
    rrset: dns.rrset.RRset, rrsigs: dns.rrset.RRset, trust: _ZoneKeys, now: float
) -> None:
    try:
        dns.dnssec.validate(rrset, rrsigs, {trust.zone: trust.dnskeys}, now=now, policy=_POLICY)
    except (dns.exception.ValidationFailure, dns.exception.UnsupportedAlgorithm) as exc:
        raise _Bogus(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}: {exc}") from exc


def _ds_checkable(ds: dns.rdtypes.ANY.DS.DS) -> bool:
    try:
        algorithm = dns.dnssectypes.Algorithm(ds.algorithm)
        digest = dns.dnssectypes.DSDigest(ds.digest_type)
    except ValueError:
        return False
    return algorithm.name != "INDIRECT" and digest.name in ("SHA1", "SHA256", "SHA384")


def _ds_matches(
    zone: dns.name.Name, ds: dns.rdtypes.ANY.DS.DS, key: dns.rdtypes.ANY.DNSKEY.DNSKEY
) -> bool:
    if ds.key_tag != dns.dnssec.key_id(key) or ds.algorithm != key.algorithm:
        return False
    try:
        made = dns.dnssec.make_ds(zone, key, ds.digest_type, policy=_POLICY)
    except (dns.exception.UnsupportedAlgorithm, ValueError):
        return False
    return bool(made.digest == ds.digest)


def _denial(name: dns.name.Name, response: dns.message.Message, trust: _Trust, now: float) -> str:
    """What a validated NSEC/NSEC3 in `response` says of `name`'s missing DS:
    "insecure" (a delegation without DS, or inside an opt-out span), "inside" (not a zone
    cut), or a description of why it proves nothing."""
    if isinstance(trust, _Insecure):
        return "insecure"
    proofs: list[dns.rrset.RRset] = []
    for rrset in response.authority:
        if rrset.rdtype not in (dns.rdatatype.NSEC, dns.rdatatype.NSEC3):
            continue
        sigs = _rrsigs(response, rrset)
        if sigs is None:
            return f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} has no RRSIG"
        _validate(rrset, sigs, trust, now)
        proofs.append(rrset)
    if not proofs:
        return "no NSEC or NSEC3 record"
    nsec = [r for r in proofs if r.rdtype == dns.rdatatype.NSEC]
    if nsec:
        return _nsec_denial(name, nsec)
    return _nsec3_denial(name, trust.zone, proofs)


def _bitmap_verdict(types: set[dns.rdatatype.RdataType]) -> str:
    if dns.rdatatype.DS in types:
        return "the proof lists a DS"
    if dns.rdatatype.NS in types and dns.rdatatype.SOA not in types:
        return "insecure"
    return "inside"


def _nsec_types(
    rdata: dns.rdtypes.ANY.NSEC.NSEC | dns.rdtypes.ANY.NSEC3.NSEC3,
) -> set[dns.rdatatype.RdataType]:
    out: set[dns.rdatatype.RdataType] = set()
    for window, bitmap in rdata.windows:
        for i, byte in enumerate(bitmap):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    out.add(dns.rdatatype.RdataType.make(window * 256 + i * 8 + bit))
    return out


def _nsec_denial(name: dns.name.Name, proofs: list[dns.rrset.RRset]) -> str:
    for rrset in proofs:
        for rdata in rrset:
            if not isinstance(rdata, dns.rdtypes.ANY.NSEC.NSEC):
                continue
            if rrset.name == name:
                return _bitmap_verdict(_nsec_types(rdata))
            # An empty non-terminal has no NSEC of its own; the one before it points to a
            # name below it.
            if rrset.name < name and rdata.next != name and rdata.next.is_subdomain(name):
                return "inside"
    return "no NSEC matches the name"


def _nsec3_denial(name: dns.name.Name, zone: dns.name.Name, proofs: list[dns.rrset.RRset]) -> str:
    for rrset in proofs:
        for rdata in rrset:
            if not isinstance(rdata, dns.rdtypes.ANY.NSEC3.NSEC3):
                continue
            hashed = dns.dnssec.nsec3_hash(name, rdata.salt, rdata.iterations, rdata.algorithm)
            owner = rrset.name.labels[0].decode("ascii", "replace").upper()
            if owner == hashed:
                return _bitmap_verdict(_nsec_types(rdata))
    # No exact match: an opt-out NSEC3 covering the name leaves room for an unsigned
    # delegation there (RFC 5155 6, 8.6).
    for rrset in proofs:
        for rdata in rrset:
            if not isinstance(rdata, dns.rdtypes.ANY.NSEC3.NSEC3):
                continue
            if not rdata.flags & _NSEC3_OPT_OUT:
                continue
            hashed = dns.dnssec.nsec3_hash(name, rdata.salt, rdata.iterations, rdata.algorithm)
            owner = rrset.name.labels[0].decode("ascii", "replace").upper()
            following = base64.b32encode(rdata.next).decode("ascii")
            following = following.translate(_B32_TO_HEX).rstrip("=")
            if _covers(owner, following, hashed):
                return "insecure"
    return f"no NSEC3 matches or covers {name} in {zone}"


_B32_TO_HEX = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789ABCDEFGHIJKLMNOPQRSTUV")


def _covers(owner: str, following: str, hashed: str) -> bool:
    if owner < following:
        return owner < hashed < following
    return hashed > owner or hashed < following  # the last NSEC3 wraps around
