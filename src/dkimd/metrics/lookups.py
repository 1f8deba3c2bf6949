"""TestDNSData's answers counted as lookups, as DNS answers are.

With ``TestDNSData`` the key (and ATPS, report) records come from a file and no query is
sent, so dkimd.dns.resolver, which counts the queries it sends, never sees them. A test or
staging set-up still wants to see what it looked up and what it got (a key the file lacks
is a failed lookup, as OpenDKIM takes it): the daemon wraps the file in ``CountedLookup``
when metrics are on (``counted``), for the messages and for the key guard's look at our own
keys alike, and each answer counts in ``dkimd_dns_lookups_total`` by outcome and in
the lookup-time histogram (microseconds). There is no cache in front of a file, so the
cache metrics do not move.
"""

from __future__ import annotations

import time

from dkimd import metrics
from dkimd.dns.base import CachingTxtLookup, TxtLookup, TxtResult
from dkimd.dns.testdata import TestDnsFile

__all__ = ["CountedLookup", "counted"]


def counted(lookup: TxtLookup) -> TxtLookup:
    """`lookup`, its answers counted if it is a records file and metrics are on (DNS
    queries are counted by the resolver that sends them)."""
    if metrics.recorder.enabled and isinstance(lookup, TestDnsFile):
        return CountedLookup(lookup)
    return lookup


class CountedLookup:
    """A ``CachingTxtLookup`` that counts each answer of the one it wraps."""

    def __init__(self, inner: CachingTxtLookup) -> None:
        self.inner = inner

    def cached(self, name: str) -> TxtResult | None:
        started = time.monotonic()
        result = self.inner.cached(name)
        if result is not None:  # none: the lookup_txt that follows counts it
            metrics.recorder.dns_lookup(result.status.value, time.monotonic() - started)
        return result

    async def lookup_txt(self, name: str) -> TxtResult:
        started = time.monotonic()
        result = await self.inner.lookup_txt(name)
        metrics.recorder.dns_lookup(result.status.value, time.monotonic() - started)
        return result
