"""How the resolver behaves: opendkim.conf's DNSConnect, ResolverTracing, QueryCache and
ResolverConfiguration, as one value the daemon builds its resolver from.

* `DNSConnect yes`: queries go over TCP from the start instead of UDP first.
* `ResolverTracing yes`: every query and its answer is logged (opendkim leaves this to its
  own asynchronous resolver library, which Debian does not use; a log line per query is
  what an admin asking for a trace can use).
* `QueryCache`: opendkim keeps, when it is on, its own cache of key records that honours
  their TTL, instead of relying on the nameserver's cache. dkimd's resolver has always kept
  such a cache (its answers are those the nameserver would give within the TTL, so only the
  number of queries differs) and keeps it when the option is not set: the cache is how
  dkimd answers most key lookups without a trip through the event loop. `QueryCache no`
  written out turns it off: every lookup then asks the nameserver (concurrent lookups of one
  name still share one query).
* `ResolverConfiguration FILE`: Debian's opendkim is built with libunbound, which reads the
  file as an unbound.conf(5) (`dkimd.dns.unbound_conf` says which parts dkimd applies).
  A file that cannot be read or parsed stops the start, as in opendkim ("can't configure
  DKIM library: failed to add resolver configuration file"; it exits 70, EX_SOFTWARE).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dkimd.dns.resolver import DnsResolver
from dkimd.dns.unbound_conf import UnboundConfError, read_unbound_conf
from dkimd.log import get_logger

__all__ = ["EX_SOFTWARE", "ResolverConfigError", "ResolverOptions", "build_resolver"]

log = get_logger("dns")

DEFAULT_CACHE_SIZE = 10000  # key records kept, least recently used dropped first
EX_SOFTWARE = 70  # sysexits.h; opendkim's exit when the resolver cannot be configured


@dataclass(frozen=True, slots=True)
class ResolverOptions:
    tcp: bool = False  # DNSConnect
    tracing: bool = False  # ResolverTracing
    query_cache: bool | None = None  # QueryCache; None: not set (dkimd caches)
    configuration: str | None = None  # ResolverConfiguration: an unbound.conf path

    @property
    def caches(self) -> bool:
        return self.query_cache is not False


class ResolverConfigError(Exception):
    """ResolverConfiguration names a file that cannot be used."""


def build_resolver(
    nameservers: Sequence[str],
    timeout: float,
    options: ResolverOptions,
    factory: Callable[..., DnsResolver] = DnsResolver,
) -> DnsResolver:
    """The resolver for these options; raises ResolverConfigError (opendkim's words).

    `factory` makes it (a DnsResolver subclass, e.g. the DNSSEC-validating one, takes the
    same servers, transport, cache and tracing)."""
    servers = list(nameservers)
    tcp = options.tcp
    if options.configuration is not None:
        try:
            unbound = read_unbound_conf(options.configuration)
        except UnboundConfError as exc:
            raise ResolverConfigError(
                f"can't configure DKIM library: failed to add resolver configuration file: {exc}"
            ) from None
        if unbound.ignored:
            log.warning(
                "ResolverConfiguration %s: not applied by dkimd: %s",
                options.configuration,
                ", ".join(unbound.ignored),
            )
        servers = servers or unbound.forwarders
        tcp = tcp or unbound.tcp
    return factory(
        servers or None,
        timeout=timeout,
        cache_size=DEFAULT_CACHE_SIZE if options.caches else 0,
        tcp=tcp,
        trace=options.tracing,
    )
