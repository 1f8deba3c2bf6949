"""TXT lookups over real DNS with dnspython's asyncio resolver, a TTL cache and coalescing.

    resolver = DnsResolver()                          # nameservers from /etc/resolv.conf
    resolver = DnsResolver(parse_nameservers("192.0.2.1, 192.0.2.2"))  # OpenDKIM `Nameservers`
    result = await resolver.lookup_txt("sel._domainkey.example.com")

Mapping of outcomes onto `TxtStatus` (failures are values, never exceptions):

* an answer with TXT records              -> OK (one bytes value per record, strings joined)
* NXDOMAIN, or NOERROR without TXT (NODATA) -> NXDOMAIN
* SERVFAIL from every server, network errors -> SERVFAIL
* no answer within `timeout` seconds      -> TIMEOUT
* anything else (REFUSED, CNAME loop or chain too long, malformed reply, bad name) -> ERROR

Caching: positive answers for the smallest TTL in the answer (CNAMEs included, capped by
`max_ttl`); negative answers (NXDOMAIN / NODATA) for min(SOA TTL, SOA MINIMUM) from the authority
section, or `negative_ttl` seconds when the server sent no SOA. Temporary failures and errors are
not cached. The cache is an LRU bounded by `cache_size` entries. Concurrent lookups of one name
share one query. The clock is injectable for tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from dkimd import metrics
from dkimd.dns.base import TxtResult, TxtStatus
from dkimd.log import get_logger

__all__ = ["DnsResolver", "parse_nameservers"]

log = get_logger("dns")

DEFAULT_NEGATIVE_TTL = 60
DEFAULT_MAX_TTL = 86400
DEFAULT_MAX_NEGATIVE_TTL = 3600


def parse_nameservers(value: str) -> list[str]:
    """Split OpenDKIM's `Nameservers` option (comma- and/or space-separated addresses)."""
    return [part for part in value.replace(",", " ").split() if part]


def split_nameserver(text: str) -> tuple[str, int | None]:
    """`ADDR`, `ADDR:PORT` (IPv4) or `[ADDR]:PORT` -> (address, port or None).

    The port form is a dkimd extension to OpenDKIM's Nameservers (a resolver on loopback
    listening elsewhere than 53); raises ValueError for anything that is not an address.
    """
    text = text.strip()
    port: int | None = None
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"bad nameserver {text!r}")
            port = int(rest[1:])
    elif text.count(":") == 1:
        address, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"bad nameserver {text!r}")
        port = int(port_text)
    else:
        address = text
    ipaddress.ip_address(address)
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"bad port in nameserver {text!r}")
    return address, port


def _nameserver(text: str, default_port: int) -> dns.nameserver.Nameserver:
    address, port = split_nameserver(text)
    return dns.nameserver.Do53Nameserver(address, port or default_port)


def _normalize(name: str) -> str:
    return name.rstrip(".").lower()


def _negative_ttl(response: dns.message.Message | None, default: int, cap: int) -> int:
    """RFC 2308: min(SOA TTL, SOA MINIMUM) from the authority section, else `default`."""
    if response is None:
        return default
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
            minimum = int(rrset[0].minimum)
            return max(0, min(int(rrset.ttl), minimum, cap))
    return default


def _describe_errors(errors: object) -> tuple[TxtStatus, str]:
    """Classify a NoNameservers error list: SERVFAIL/network trouble is temporary, the rest not."""
    temporary = False
    texts: list[str] = []
    if isinstance(errors, list):
        for entry in errors:
            if not isinstance(entry, tuple) or len(entry) < 4:
                continue
            server, err = entry[0], entry[3]
            if isinstance(err, str):
                if err == "SERVFAIL":
                    temporary = True
                texts.append(f"{server}: {err}")
            else:
                if isinstance(err, OSError | EOFError | dns.message.Truncated):
                    temporary = True
                texts.append(f"{server}: {type(err).__name__}: {err}")
    detail = "; ".join(texts) or "all nameservers failed"
    return (TxtStatus.SERVFAIL if temporary else TxtStatus.ERROR), detail


class DnsResolver:
    """`TxtLookup` over DNS. Safe to share between tasks of one event loop."""

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        timeout: float = 5.0,
        cache_size: int = 10000,
        *,
        port: int = 53,
        negative_ttl: int = DEFAULT_NEGATIVE_TTL,
        max_ttl: int = DEFAULT_MAX_TTL,
        max_negative_ttl: int = DEFAULT_MAX_NEGATIVE_TTL,
        clock: Callable[[], float] = time.monotonic,
        tcp: bool = False,
        trace: bool = False,
    ) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [_nameserver(ns, port) for ns in nameservers]
        else:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = ["127.0.0.1"]
        resolver.port = port
        resolver.cache = None  # we cache ourselves, with negative caching and an LRU bound
        resolver.timeout = timeout
        resolver.lifetime = timeout
        self._resolver = resolver
        self.timeout = timeout
        self.cache_size = max(0, cache_size)
        self.negative_ttl = negative_ttl
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, TxtResult]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[tuple[TxtResult, int]]] = {}
        self.queries = 0  # number of queries actually sent (cache misses), for tests and stats
        self.tcp = tcp  # DNSConnect: TCP from the first query
        self.trace = trace  # ResolverTracing: log every query and its answer

    @property
    def nameservers(self) -> list[str]:
        """The servers asked, as `ADDR` (port 53) or `ADDR:PORT` / `[ADDR]:PORT`."""
        out: list[str] = []
        for ns in self._resolver.nameservers:
            if not isinstance(ns, dns.nameserver.Do53Nameserver):
                out.append(str(ns))
            elif ns.port == 53:
                out.append(ns.address)
            else:
                host = f"[{ns.address}]" if ":" in ns.address else ns.address
                out.append(f"{host}:{ns.port}")
        return out

    def __len__(self) -> int:
        return len(self._cache)

    def cached(self, name: str) -> TxtResult | None:
        """The cached answer for `name`, if there is a live one; never queries."""
        cached = self._cache_get(_normalize(name))
        if cached is None:
            return None  # a miss is counted by the lookup_txt that follows
        metrics.recorder.dns_cache(True)
        return cached if cached.name == name else _rename(cached, name)

    async def lookup_txt(self, name: str) -> TxtResult:
        key = _normalize(name)
        cached = self._cache_get(key)
        metrics.recorder.dns_cache(cached is not None)
        if cached is not None:
            return cached if cached.name == name else _rename(cached, name)
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._query(key))
            self._inflight[key] = future
            future.add_done_callback(functools.partial(self._settle, key))
        # shield: one cancelled waiter must not cancel the query the others wait for
        result, _ttl = await asyncio.shield(future)
        return result if result.name == name else _rename(result, name)

    def _settle(self, key: str, future: asyncio.Future[tuple[TxtResult, int]]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if future.cancelled() or future.exception() is not None:
            return
        result, ttl = future.result()
        if ttl > 0 and self.cache_size > 0:
            self._cache[key] = (self._clock() + ttl, result)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _cache_get(self, key: str) -> TxtResult | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, result = entry
        if self._clock() >= expires:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return result

    async def _query(self, key: str) -> tuple[TxtResult, int]:
        """Run one query; return the result and how long it may be cached (0: not at all)."""
        started = time.monotonic()
        try:
            answer = await self._query_unchecked(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let a bogus answer crash a milter connection
            answer = TxtResult(key, TxtStatus.ERROR, detail=f"{type(exc).__name__}: {exc}"), 0
        if self.trace:
            _trace_answer(*answer)
        metrics.recorder.dns_lookup(answer[0].status.value, time.monotonic() - started)
        return answer

    async def _query_unchecked(self, key: str) -> tuple[TxtResult, int]:
        if not key:
            return TxtResult(key, TxtStatus.ERROR, detail="empty name"), 0
        try:
            qname = dns.name.from_text(key, origin=dns.name.root)
        except dns.exception.DNSException as exc:
            return TxtResult(key, TxtStatus.ERROR, detail=f"bad name: {exc}"), 0
        self.queries += 1
        if self.trace:
            log.info("DNS query %s TXT (%s)", key, "TCP" if self.tcp else "UDP")
        try:
            answer = await self._resolver.resolve(
                qname,
                dns.rdatatype.TXT,
                tcp=self.tcp,
                search=False,
                raise_on_no_answer=False,
                lifetime=self.timeout,
            )
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[dns.name.Name, dns.message.Message] = exc.kwargs.get("responses") or {}
            response = next(iter(responses.values()), None)
            ttl = _negative_ttl(response, self.negative_ttl, self.max_negative_ttl)
            return TxtResult(key, TxtStatus.NXDOMAIN, detail="NXDOMAIN"), ttl
        except dns.resolver.LifetimeTimeout as exc:
            return TxtResult(key, TxtStatus.TIMEOUT, detail=str(exc)), 0
        except dns.exception.Timeout as exc:
            return TxtResult(key, TxtStatus.TIMEOUT, detail=str(exc)), 0
        except dns.resolver.NoNameservers as exc:
            return await self._no_nameservers(key, qname, exc.kwargs.get("errors"))
        except dns.resolver.YXDOMAIN:
            return TxtResult(key, TxtStatus.ERROR, detail="YXDOMAIN"), 0
        except dns.exception.DNSException as exc:
            return TxtResult(key, TxtStatus.ERROR, detail=f"{type(exc).__name__}: {exc}"), 0

        chain = answer.chaining_result
        if answer.rrset is None:
            ttl = _negative_ttl(answer.response, self.negative_ttl, self.max_negative_ttl)
            for cname in chain.cnames:
                ttl = min(ttl, int(cname.ttl))
            return TxtResult(key, TxtStatus.NXDOMAIN, detail="no TXT record (NODATA)"), ttl
        records = tuple(b"".join(rdata.strings) for rdata in answer.rrset)
        ttl = max(0, min(int(chain.minimum_ttl), self.max_ttl))
        return await self._answered(key, qname, answer, records, ttl)

    # Two points where a subclass (dkimd.dns.validating) says more about an answer.

    async def _no_nameservers(
        self, key: str, qname: dns.name.Name, errors: object
    ) -> tuple[TxtResult, int]:
        """Every server failed (SERVFAIL, REFUSED, ...): a temporary error, not cached."""
        status, detail = _describe_errors(errors)
        return TxtResult(key, status, detail=detail), 0

    async def _answered(
        self,
        key: str,
        qname: dns.name.Name,
        answer: dns.resolver.Answer,
        records: tuple[bytes, ...],
        ttl: int,
    ) -> tuple[TxtResult, int]:
        """A positive answer, `records` cached for `ttl` seconds."""
        return TxtResult(key, TxtStatus.OK, records), ttl


def _trace_answer(result: TxtResult, ttl: int) -> None:
    if result.ok:
        texts = "; ".join(repr(r.decode("ascii", "replace")) for r in result.records)
        log.info("DNS answer %s TXT: %s (ttl %d)", result.name, texts, ttl)
    else:
        log.info("DNS answer %s TXT: %s %s", result.name, result.status.value, result.detail)


def _rename(result: TxtResult, name: str) -> TxtResult:
    return dataclasses.replace(result, name=name)
