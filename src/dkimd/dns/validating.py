"""Key-record lookups that also say what DNSSEC makes of the answer (`TxtResult.dnssec`).

    ValidatingResolver(nameservers, timeout, anchors=load_trust_anchors(path))  # TrustAnchorFile
    ValidatingResolver(nameservers, timeout, trust_resolver_ad=True)            # TrustResolverAD

Two ways, as an admin chooses:

* `TrustAnchorFile` (OpenDKIM's option): dkimd validates itself (dkimd.dns.dnssec) from
  the anchors, asking the configured resolver with DO and CD set, so a resolver that
  does not validate (or validates wrongly) changes nothing.
* `TrustResolverAD yes` (a dkimd extension): the configured resolver (`Nameservers`,
  ideally on loopback) validates, and its AD bit is believed: AD set is secure, a
  positive answer without it is insecure ("unprotected"). A bogus answer is a SERVFAIL
  from such a resolver; it is recognised as bogus only when the resolver says so with an
  Extended DNS Error (RFC 8914; unbound: `ede: yes`), and then the record is fetched
  once more with CD set, so that `BogusKey none` can still use it. A SERVFAIL without
  such an EDE is a DNS error, as before.

A resolver that answers without DNSSEC records (no DO bit echoed, RFC 3225) leaves every
record unprotected, with one warning in the log: calling signed zones bogus for it would be
worse. The status is cached with the record (the resolver's TTL cache); a bogus answer for at
most a minute, as unbound's val-bogus-ttl, so a repaired zone is seen soon.
Negative answers (NXDOMAIN, NODATA) carry no status: a missing key fails anyway.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import dns.asyncresolver
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from dkimd.dns.base import DnssecStatus, TxtResult, TxtStatus
from dkimd.dns.dnssec import ChainUnavailable, ChainValidator
from dkimd.dns.resolver import DnsResolver
from dkimd.dns.trust_anchors import TrustAnchors, load_trust_anchors
from dkimd.key_trust import validates_keys

if TYPE_CHECKING:
    from dkimd.config import Config

__all__ = ["BOGUS_TTL", "ValidatingResolver", "validating_resolver"]

_log = logging.getLogger("dkimd.dns")

#: Seconds a bogus answer is kept (unbound's val-bogus-ttl default).
BOGUS_TTL = 60
_EDNS_PAYLOAD = 1232
# RFC 8914 codes a validating resolver gives for a DNSSEC failure (not 1 and 2, which
# mean "cannot check", i.e. insecure, and not 5, "indeterminate").
_BOGUS_EDE = frozenset({6, 7, 8, 9, 10, 11, 12})


class ValidatingResolver(DnsResolver):
    """A DnsResolver whose answers carry a DNSSEC status."""

    def __init__(
        self,
        nameservers: list[str] | None = None,
        timeout: float = 5.0,
        *,
        anchors: TrustAnchors | None = None,
        trust_resolver_ad: bool = False,
        **kwargs: object,
    ) -> None:
        if (anchors is None) == (not trust_resolver_ad):
            raise ValueError("give either trust anchors or trust_resolver_ad")
        super().__init__(nameservers, timeout, **kwargs)  # type: ignore[arg-type]
        self.trust_resolver_ad = trust_resolver_ad
        self._warned_no_dnssec = False
        resolver = self._resolver
        if anchors is not None:
            # CD: hand over what you have, we judge; DO: with the RRSIGs.
            resolver.flags = dns.flags.RD | dns.flags.CD
            resolver.use_edns(0, dns.flags.DO, _EDNS_PAYLOAD)
            self.validator: ChainValidator | None = ChainValidator(anchors, self._chain_query)
        else:
            resolver.flags = dns.flags.RD | dns.flags.AD
            resolver.use_edns(0, 0, _EDNS_PAYLOAD)
            self.validator = None

    async def _no_nameservers(
        self, key: str, qname: dns.name.Name, errors: object
    ) -> tuple[TxtResult, int]:
        if self.validator is None and _says_bogus(errors):
            return await self._bogus_from_resolver(key, qname)
        return await super()._no_nameservers(key, qname, errors)

    async def _answered(
        self,
        key: str,
        qname: dns.name.Name,
        answer: dns.resolver.Answer,
        records: tuple[bytes, ...],
        ttl: int,
    ) -> tuple[TxtResult, int]:
        if self.validator is None:
            secure = bool(answer.response.flags & dns.flags.AD)
            verdict = DnssecStatus.SECURE if secure else DnssecStatus.INSECURE
            why = "the resolver validated it (AD)" if secure else "the resolver did not set AD"
        elif not answer.response.ednsflags & dns.flags.DO:
            # RFC 3225: a resolver that knows DNSSEC echoes DO. One that does not hands over
            # no RRSIGs, which would make every signed zone look forged: nothing can be
            # said, and the admin is told once.
            verdict, why = DnssecStatus.INSECURE, "the resolver does not return DNSSEC records"
            if not self._warned_no_dnssec:
                self._warned_no_dnssec = True
                _log.warning(
                    "TrustAnchorFile: the resolver (%s) returns no DNSSEC records (no DO bit "
                    "in its replies); key records cannot be validated and count as unprotected",
                    ", ".join(self.nameservers),
                )
        else:
            try:
                verdict, why = await self.validator.answer_status(qname, answer.response)
            except ChainUnavailable as exc:
                return TxtResult(key, TxtStatus.SERVFAIL, detail=f"DNSSEC chain: {exc}"), 0
        if verdict is DnssecStatus.BOGUS:
            ttl = min(ttl, BOGUS_TTL)
        return TxtResult(key, TxtStatus.OK, records, detail=why, dnssec=verdict), ttl

    async def _chain_query(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.message.Message:
        """A DS or DNSKEY answer for the validator (NXDOMAIN and NODATA included)."""
        self.queries += 1
        try:
            answer = await self._resolver.resolve(
                name, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.kwargs.get("responses") or {}
            response = next(iter(responses.values()), None)
            if not isinstance(response, dns.message.Message):
                raise ChainUnavailable(f"{name}: NXDOMAIN without a response") from exc
            return response
        except dns.exception.DNSException as exc:
            what = dns.rdatatype.to_text(rdtype)
            raise ChainUnavailable(f"{name} {what}: {type(exc).__name__}") from exc
        return answer.response

    async def _bogus_from_resolver(self, key: str, qname: dns.name.Name) -> tuple[TxtResult, int]:
        """The record the resolver refused as bogus, fetched with CD so that the
        signature can still be judged (BogusKey none or neutral)."""
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = list(self._resolver.nameservers)
        resolver.cache = None
        resolver.timeout = self._resolver.timeout
        resolver.lifetime = self._resolver.lifetime
        resolver.flags = dns.flags.RD | dns.flags.CD
        resolver.use_edns(0, 0, _EDNS_PAYLOAD)
        why = "the resolver reports it bogus (Extended DNS Error)"
        try:
            answer = await resolver.resolve(
                qname, dns.rdatatype.TXT, search=False, raise_on_no_answer=False
            )
        except dns.exception.DNSException:
            return TxtResult(key, TxtStatus.OK, (), detail=why, dnssec=DnssecStatus.BOGUS), 0
        if answer.rrset is None:
            return TxtResult(key, TxtStatus.NXDOMAIN, detail=why, dnssec=DnssecStatus.BOGUS), 0
        records = tuple(b"".join(rdata.strings) for rdata in answer.rrset)
        ttl = min(int(answer.chaining_result.minimum_ttl), BOGUS_TTL)
        return TxtResult(key, TxtStatus.OK, records, detail=why, dnssec=DnssecStatus.BOGUS), ttl


def validating_resolver(config: Config) -> Callable[..., ValidatingResolver]:
    """How to make the resolver of a `config` that validates key records
    (dkimd.key_trust.validates_keys): a factory for dkimd.dns.options.build_resolver, which
    adds the servers, transport, cache and tracing the other resolver options ask for.

    TrustResolverAD wins over TrustAnchorFile: the admin said the resolver validates.
    """
    if not validates_keys(config):
        raise ValueError("the configuration does not validate key records")
    if config.trust_resolver_ad:
        return functools.partial(ValidatingResolver, trust_resolver_ad=True)
    assert config.trust_anchor_file is not None
    anchors = load_trust_anchors(config.trust_anchor_file)
    return functools.partial(ValidatingResolver, anchors=anchors)


def _says_bogus(errors: object) -> bool:
    """Whether a SERVFAIL came with an Extended DNS Error naming a DNSSEC failure."""
    if not isinstance(errors, list):
        return False
    for entry in errors:
        if not isinstance(entry, tuple) or len(entry) < 5:
            continue
        response = entry[4]
        if not isinstance(response, dns.message.Message):
            continue
        for option in response.extended_errors():
            if isinstance(option, dns.edns.EDEOption) and int(option.code) in _BOGUS_EDE:
                return True
    return False
