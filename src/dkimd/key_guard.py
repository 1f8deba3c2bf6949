"""The key guard: is the record of each signing key published, and does it match the key?

A key whose record is missing or publishes another key makes signatures every verifier
fails. The daemon looks each signing key up (every key the SigningTable names; every
KeyTable key when there is no SigningTable) at start, after each reload and then every
`RECHECK_INTERVAL`, and logs a key once when it is found unpublished (and once when it is
published again). `SkipUnpublishedKeys yes` then skips such a key in favour of the
sender's next SigningTable match (dkimd.signing_keys); the default, as OpenDKIM, signs
with it anyway.

The lookups use a resolver of their own, built from the configuration as the key tools
build it (TestDNSData, Nameservers, resolv.conf): they never share a cache entry or an
in-flight query with the verification of a message. A lookup that fails for a temporary
reason changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from dkimd.config import Config
from dkimd.dns.base import TxtLookup
from dkimd.keytools.context import txt_lookup
from dkimd.keytools.published import (
    Publication,
    PublicationCheck,
    check_publication,
    guarded_entries,
)
from dkimd.log import get_logger
from dkimd.session import Runtime, RuntimeHolder
from dkimd.signing_keys import KeyProblem

log = get_logger("keys")

RECHECK_INTERVAL = 600.0
# How often the watcher looks whether a reload swapped the runtime.
RELOAD_POLL = 1.0


class KeyGuard:
    """Checks the keys of one runtime after another; remembers what it logged per key."""

    def __init__(self, lookup_for: Callable[[Config], TxtLookup] = txt_lookup) -> None:
        self.lookup_for = lookup_for
        self._states: dict[str, Publication] = {}

    async def check(self, runtime: Runtime) -> dict[str, PublicationCheck]:
        """Look every guarded key of `runtime` up; updates its key store's `unpublished`."""
        config = runtime.config
        keys = runtime.policy.keys
        lookup = self.lookup_for(config)
        results: dict[str, PublicationCheck] = {}
        unpublished = set(keys.unpublished)
        for entry in guarded_entries(config):
            key = keys.load(entry)
            if isinstance(key, KeyProblem):
                continue  # a key that cannot be loaded is reported where it is used
            result = await check_publication(lookup, entry.selector, entry.domain, key)
            results[entry.name] = result
            if result.state is Publication.UNKNOWN:
                continue
            if result.state.unpublished:
                unpublished.add(entry.name)
            else:
                unpublished.discard(entry.name)
            self._log(entry.name, result, config.skip_unpublished_keys)
        keys.unpublished = frozenset(unpublished)
        return results

    def _log(self, name: str, result: PublicationCheck, skipping: bool) -> None:
        before = self._states.get(name)
        self._states[name] = result.state
        if before == result.state:
            return
        if result.state.unpublished:
            action = (
                "skipped in favour of the next SigningTable match (SkipUnpublishedKeys yes)"
                if skipping
                else "still signing with it (SkipUnpublishedKeys no)"
            )
            log.warning("key %s: %s; %s", name, result.describe(), action)
        elif before is not None:
            log.info("key %s: %s again", name, result.describe())


async def watch_keys(
    holder: RuntimeHolder,
    guard: KeyGuard | None = None,
    *,
    interval: float = RECHECK_INTERVAL,
    poll: float = RELOAD_POLL,
) -> None:
    """Run the guard on the current runtime now, after every reload and every `interval`
    seconds, until cancelled."""
    guard = guard or KeyGuard()
    checked: Runtime | None = None
    last = 0.0
    while True:
        runtime = holder.current
        if runtime is not checked or time.monotonic() - last >= interval:
            try:
                await guard.check(runtime)
            except Exception:  # the guard must never take the daemon down
                log.exception("key guard: checking the key records failed")
            checked, last = runtime, time.monotonic()
        await asyncio.sleep(poll)
