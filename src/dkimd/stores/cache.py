"""The lookup layer in front of every remote store: cache, coalescing, timeouts, outages.

* A TTL cache of answers, and a negative cache (a key with no rows) with its own TTL:
  a fleet of dkimd hosts sharing one database sees an UPDATE within the TTL, without reload.
  A TTL of 0 turns that cache off (every lookup asks the store).
* Request coalescing: concurrent lookups of one key share one query.
* A per-lookup timeout: a slow store fails the lookups waiting on it, nothing else.
* One log line when the store stops answering (not one per message) and one when it
  answers again; the back end reconnects by itself, so recovery needs no restart.
* `cached(key)` answers without awaiting: the session's requests ask it first
  (`Request.answer_now`), so a warm cache costs no trip through the event loop.
* `get_many(keys)`: many keys at once (a host list asks up to 520 for one client). A back
  end that has `get_many` answers them in one query (dkimd.stores.dsn: `IN (...)`);
  the others are asked key by key, concurrently. Either way each key is cached and
  coalesced as with `get`.

Nothing here blocks: the back ends are asynchronous (or run a blocking driver in their own
bounded thread pool).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import islice

from dkimd.stores.base import RemoteStore, Row, StoreError

__all__ = ["CacheSettings", "StoreCache"]

_log = logging.getLogger("dkimd.stores")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """How long answers are kept and how long a lookup may take (seconds)."""

    ttl: float = 300.0  # rows found
    negative_ttl: float = 60.0  # no rows: a domain added to the table signs within this
    timeout: float = 5.0  # one lookup, queueing for a connection included
    max_entries: int = 100_000  # bounded memory whatever keys the mail brings


class StoreCache:
    """A `RemoteStore` behind the cache; one per configured remote data set."""

    __slots__ = (
        "_batches",
        "_clock",
        "_down_since",
        "_entries",
        "_failed",
        "_inflight",
        "settings",
        "store",
    )

    def __init__(
        self,
        store: RemoteStore,
        settings: CacheSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings or CacheSettings()
        self._clock = clock
        self._entries: dict[str, tuple[float, list[Row]]] = {}  # key -> (expires, rows)
        self._inflight: dict[str, asyncio.Future[list[Row]]] = {}
        self._down_since: float | None = None
        self._failed = 0  # lookups failed during the current outage
        self._batches: set[asyncio.Task[None]] = set()  # get_many queries in flight

    def describe(self) -> str:
        return self.store.describe()

    @property
    def is_down(self) -> bool:
        """Whether the last attempt to reach the store failed."""
        return self._down_since is not None

    def cached(self, key: str) -> list[Row] | None:
        """The rows for `key` if a fresh answer is cached, else None. Never awaits."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] <= self._clock():
            del self._entries[key]
            return None
        return hit[1]

    async def get(self, key: str) -> list[Row]:
        """The rows for `key`: cached, or asked once however many callers wait for it.

        Raises StoreError when the store fails or does not answer within the timeout.
        """
        rows = self.cached(key)
        if rows is not None:
            return rows
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(key))
            self._inflight[key] = pending
            pending.add_done_callback(self._settled(key))
        # shield: one waiter giving up (its message's timeout) must not cancel the others'.
        return await self._wait(pending)

    async def get_many(self, keys: Sequence[str]) -> dict[str, list[Row] | StoreError]:
        """The rows of each key, or the error that stopped its lookup; never raises
        StoreError. Cached keys are answered from memory, keys already being asked wait
        for that answer, the rest are asked together."""
        batch: Callable[[list[str]], Awaitable[dict[str, list[Row]]]] | None = getattr(
            self.store, "get_many", None
        )
        wanted = list(dict.fromkeys(keys))
        if batch is None:

            async def one(key: str) -> list[Row] | StoreError:
                try:
                    return await self.get(key)
                except StoreError as exc:
                    return exc

            results = await asyncio.gather(*(one(k) for k in wanted))
            return dict(zip(wanted, results, strict=True))
        loop = asyncio.get_running_loop()
        waiting: dict[str, asyncio.Future[list[Row]]] = {}
        mine: dict[str, asyncio.Future[list[Row]]] = {}
        out: dict[str, list[Row] | StoreError] = {}
        for key in wanted:
            rows = self.cached(key)
            if rows is not None:
                out[key] = rows
                continue
            pending = self._inflight.get(key)
            if pending is None:
                pending = loop.create_future()
                self._inflight[key] = pending
                pending.add_done_callback(self._settled(key))
                mine[key] = pending
            waiting[key] = pending
        if mine:
            task = loop.create_task(self._fetch_many(batch, mine))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        for key, pending in waiting.items():
            try:
                # shield: one waiter giving up must not cancel the others' answer.
                out[key] = await self._wait(pending)
            except StoreError as exc:
                out[key] = exc
        return out

    async def _wait(self, pending: asyncio.Future[list[Row]]) -> list[Row]:
        """The answer of a lookup in flight. One that `close()` cancelled (the stores of a
        configuration replaced by a reload) fails this lookup: a CancelledError out of here
        would cancel the waiter's task and drop its milter connection."""
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if pending.cancelled() and (task is None or not task.cancelling()):
                raise StoreError(f"{self.describe()}: closed") from None
            raise

    async def _fetch_many(
        self,
        batch: Callable[[list[str]], Awaitable[dict[str, list[Row]]]],
        futures: dict[str, asyncio.Future[list[Row]]],
    ) -> None:
        keys = list(futures)
        error: StoreError | None = None
        found: dict[str, list[Row]] = {}
        try:
            found = await asyncio.wait_for(batch(keys), self.settings.timeout)
        except TimeoutError:
            self._outage(f"no answer within {self.settings.timeout:g}s")
            error = StoreError(f"{self.describe()}: no answer in time")
        except StoreError as exc:
            self._outage(str(exc))
            error = exc
        except asyncio.CancelledError:
            for future in futures.values():
                future.cancel()
            raise
        except Exception as exc:  # a back end bug must not become a lost message
            _log.error("%s: lookup failed", self.describe(), exc_info=exc)
            self._outage(f"{type(exc).__name__}")
            error = StoreError(f"{self.describe()}: lookup failed")
        if error is None and not found.keys() <= futures.keys():
            # A row came back under a key that is not byte for byte one asked (a
            # case-insensitive collation, trailing blanks): which key it answers is the
            # database's business, so each key is asked on its own, as `get` does.
            results = await asyncio.gather(
                *(self._fetch(key) for key in keys), return_exceptions=True
            )
            for key, result in zip(keys, results, strict=True):
                if isinstance(result, BaseException):
                    futures[key].set_exception(
                        result
                        if isinstance(result, StoreError)
                        else StoreError(f"{self.describe()}: lookup failed")
                    )
                else:
                    futures[key].set_result(result)
            return
        if error is None:
            self._recovered()
        for key, future in futures.items():
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                rows = found.get(key, [])
                self._remember(key, rows)
                future.set_result(rows)

    def _settled(self, key: str) -> Callable[[asyncio.Future[list[Row]]], None]:
        def done(future: asyncio.Future[list[Row]]) -> None:
            self._inflight.pop(key, None)
            if not future.cancelled():
                future.exception()  # retrieved: a failure no waiter saw is not "never retrieved"

        return done

    async def _fetch(self, key: str) -> list[Row]:
        try:
            rows = await asyncio.wait_for(self.store.get(key), self.settings.timeout)
        except TimeoutError:
            self._outage(f"no answer within {self.settings.timeout:g}s")
            raise StoreError(f"{self.describe()}: no answer in time") from None
        except StoreError as exc:
            self._outage(str(exc))
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a back end bug must not become a lost message
            _log.error("%s: lookup failed", self.describe(), exc_info=exc)
            self._outage(f"{type(exc).__name__}")
            raise StoreError(f"{self.describe()}: lookup failed") from exc
        self._recovered()
        self._remember(key, rows)
        return rows

    def _remember(self, key: str, rows: list[Row]) -> None:
        ttl = self.settings.ttl if rows else self.settings.negative_ttl
        if ttl <= 0:
            return
        entries = self._entries
        limit = self.settings.max_entries
        if len(entries) >= limit:
            # Full: the expired go, then the oldest eighth, so that the next limit/8 new
            # keys go in without a scan. Making room for one key at a time scanned the
            # whole cache for every new key (milliseconds on the event loop, for each of
            # the keys hostile mail brings by the hundred).
            now = self._clock()
            for old in [k for k, (exp, _) in entries.items() if exp <= now]:
                del entries[old]
            if len(entries) >= limit:
                for old in list(islice(entries, max(1, limit // 8))):
                    del entries[old]  # the oldest insertions
        entries[key] = (self._clock() + ttl, rows)

    def _outage(self, reason: str) -> None:
        self._failed += 1
        if self._down_since is None:
            self._down_since = self._clock()
            _log.error(
                "data set %s is unavailable (%s); messages that need it get the "
                "On-InternalError action until it answers again",
                self.describe(),
                reason,
            )

    def _recovered(self) -> None:
        if self._down_since is None:
            return
        _log.warning(
            "data set %s answers again after %.1fs (%d lookups failed meanwhile)",
            self.describe(),
            self._clock() - self._down_since,
            self._failed,
        )
        self._down_since = None
        self._failed = 0

    def forget(self) -> None:
        """Drop every cached answer (a reload)."""
        self._entries.clear()

    async def open(self, *, soft_start: bool = False) -> None:
        """Log in once. Raises StoreError, unless `soft_start`: then the failure counts as
        the start of an outage and every lookup tries again."""
        try:
            await asyncio.wait_for(self.store.open(), self.settings.timeout)
        except (StoreError, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {self.settings.timeout:g}s"
            if not soft_start:
                raise StoreError(reason) from None
            self._outage(reason)

    def walk(self) -> AsyncIterator[tuple[str, Row]]:
        """Every (key, row) of the store, uncached (`dkimd check --walk`)."""
        return self.store.walk()

    async def close(self) -> None:
        for task in list(self._batches):
            task.cancel()
        for pending in list(self._inflight.values()):
            pending.cancel()
        await self.store.close()
