"""`NeedKeys`: key-record lookups as a request the milter server performs for the session.

The session builds one from the runtime's resolver and returns it (dkimd.milter.handler);
it never awaits. The server asks `answer_now` first (the resolver's cache), otherwise
awaits `perform` within `timeout`. A lookup that raises or runs out of time is a
temporary DNS failure for its names (RFC 6376 6.1.2: TEMPERROR), never a lost message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from dkimd.dns.base import TxtLookup, TxtResult, TxtStatus
from dkimd.milter.handler import Request

__all__ = ["KeyRecords", "NeedKeys"]

_log = logging.getLogger("dkimd.dns")

#: The answer: one result per name asked for.
KeyRecords = dict[str, TxtResult]


class NeedKeys(Request[KeyRecords]):
    """The TXT records at `names` (DKIM key records), all of them."""

    __slots__ = ("_cached", "_resolver", "names", "timeout")

    def __init__(
        self,
        names: Sequence[str],
        resolver: TxtLookup,
        *,
        cached: Callable[[str], TxtResult | None] | None = None,
        timeout: float,
    ) -> None:
        self.names = tuple(names)
        self._resolver = resolver
        # The resolver's memory, when it has one (CachingTxtLookup.cached).
        self._cached = cached
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"NeedKeys({', '.join(self.names)})"

    def answer_now(self) -> KeyRecords | None:
        cached = self._cached
        if cached is None:
            return None
        found: KeyRecords = {}
        for name in self.names:
            known = cached(name)
            if known is None:
                return None
            found[name] = known
        return found

    async def perform(self) -> KeyRecords:
        names = self.names
        if len(names) == 1:  # the usual case: no gather, no extra tasks
            return {names[0]: await self._one(names[0])}
        results = await asyncio.gather(*(self._one(name) for name in names))
        return dict(zip(names, results, strict=True))

    async def _one(self, name: str) -> TxtResult:
        # One failing name must not take the others' answers with it.
        try:
            return await self._resolver.lookup_txt(name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a resolver bug
            _log.error("key lookup for %s failed", name, exc_info=exc)
            return self._failed_name(name, exc)

    def failed(self, error: BaseException) -> KeyRecords:
        return {name: self._failed_name(name, error) for name in self.names}

    @staticmethod
    def _failed_name(name: str, error: BaseException) -> TxtResult:
        if isinstance(error, TimeoutError):
            return TxtResult(name, TxtStatus.TIMEOUT, detail="no answer in time")
        # A bug (logged where it was caught): a temporary failure for the mail, so the
        # sender tries again rather than the message being judged on our mistake.
        return TxtResult(name, TxtStatus.SERVFAIL, detail="lookup failed")
