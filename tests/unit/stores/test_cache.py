"""The lookup layer: TTL and negative cache, coalescing, timeout, once-per-outage logging."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from dkimd.stores.base import Row, StoreError
from dkimd.stores.cache import CacheSettings, StoreCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedStore:
    """A store whose answers the test sets: rows per key, failures, a delay."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Row]] = {}
        self.calls: list[str] = []
        self.fail: str | None = None
        self.delay = 0.0
        self.opened = 0

    def describe(self) -> str:
        return "dsn:test://store/db/table=t?keycol=k?datacol=v"

    async def open(self) -> None:
        self.opened += 1
        if self.fail:
            raise StoreError(self.fail)

    async def get(self, key: str) -> list[Row]:
        self.calls.append(key)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise StoreError(f"{self.describe()}: {self.fail}")
        return list(self.rows.get(key, []))

    async def walk(self) -> AsyncIterator[tuple[str, Row]]:
        for key, rows in self.rows.items():
            for row in rows:
                yield key, row

    async def close(self) -> None:
        pass


def _cache(store: ScriptedStore, clock: Clock, **kw: float) -> StoreCache:
    return StoreCache(store, CacheSettings(**kw), clock=clock)  # type: ignore[arg-type]


def test_positive_and_negative_ttl() -> None:
    store, clock = ScriptedStore(), Clock()
    store.rows["a"] = [("x",)]
    cache = _cache(store, clock, ttl=30, negative_ttl=5)

    async def go() -> None:
        assert cache.cached("a") is None
        assert await cache.get("a") == [("x",)]
        assert await cache.get("b") == []
        assert cache.cached("a") == [("x",)] and cache.cached("b") == []
        store.rows["a"] = [("y",)]
        store.rows["b"] = [("new",)]
        clock.now += 6  # the negative answer expired, the positive one not yet
        assert await cache.get("b") == [("new",)]
        assert await cache.get("a") == [("x",)]
        clock.now += 30
        assert await cache.get("a") == [("y",)]

    asyncio.run(go())
    assert store.calls == ["a", "b", "b", "a"]


def test_zero_ttl_disables_caching() -> None:
    store, clock = ScriptedStore(), Clock()
    cache = _cache(store, clock, ttl=0, negative_ttl=0)

    async def go() -> None:
        await cache.get("a")
        await cache.get("a")

    asyncio.run(go())
    assert store.calls == ["a", "a"]


def test_concurrent_lookups_share_one_query() -> None:
    store, clock = ScriptedStore(), Clock()
    store.rows["a"] = [("x",)]
    store.delay = 0.05
    cache = _cache(store, clock)

    async def go() -> list[list[Row]]:
        return await asyncio.gather(*(cache.get("a") for _ in range(50)))

    answers = asyncio.run(go())
    assert answers == [[("x",)]] * 50
    assert store.calls == ["a"]


def test_timeout_fails_only_the_slow_key() -> None:
    store, clock = ScriptedStore(), Clock()
    cache = _cache(store, clock, timeout=0.05)

    async def go() -> None:
        store.delay = 1.0
        with pytest.raises(StoreError, match="no answer in time"):
            await cache.get("slow")
        store.delay = 0.0
        assert await cache.get("fast") == []

    asyncio.run(go())


def test_one_log_line_per_outage_and_one_on_recovery(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = ScriptedStore(), Clock()
    store.rows["a"] = [("x",)]
    cache = _cache(store, clock, ttl=0, negative_ttl=0)
    caplog.set_level(logging.INFO, logger="dkimd.stores")

    async def go() -> None:
        store.fail = "connection refused"
        for _ in range(20):
            with pytest.raises(StoreError):
                await cache.get("a")
        assert cache.is_down
        clock.now += 12
        store.fail = None
        assert await cache.get("a") == [("x",)]
        assert await cache.get("a") == [("x",)]

    asyncio.run(go())
    lines = [r for r in caplog.records if r.name == "dkimd.stores"]
    assert len(lines) == 2
    assert lines[0].levelno == logging.ERROR and "unavailable" in lines[0].getMessage()
    assert "connection refused" in lines[0].getMessage()
    assert "answers again after 12.0s (20 lookups failed" in lines[1].getMessage()
    assert not cache.is_down


def test_failures_are_not_cached() -> None:
    store, clock = ScriptedStore(), Clock()
    cache = _cache(store, clock)

    async def go() -> None:
        store.fail = "down"
        with pytest.raises(StoreError):
            await cache.get("a")
        store.fail = None
        store.rows["a"] = [("x",)]
        assert await cache.get("a") == [("x",)]

    asyncio.run(go())


def test_open_soft_start() -> None:
    store, clock = ScriptedStore(), Clock()
    store.fail = "password authentication failed"
    cache = _cache(store, clock)

    async def go() -> None:
        with pytest.raises(StoreError, match="password"):
            await cache.open()
        await cache.open(soft_start=True)  # starts; lookups try again
        assert cache.is_down

    asyncio.run(go())


def test_bounded_size() -> None:
    store, clock = ScriptedStore(), Clock()
    cache = _cache(store, clock, max_entries=10)

    async def go() -> None:
        for i in range(100):
            await cache.get(f"k{i}")

    asyncio.run(go())
    assert len(cache._entries) <= 10
    assert cache.cached("k99") == []


def test_new_keys_into_a_full_cache_cost_no_scan_each() -> None:
    # Every new key a message brings (a host list asks hundreds) goes through here on the
    # event loop: making room must not cost a pass over the whole cache per key.
    store, clock = ScriptedStore(), Clock()
    size = 100_000
    cache = _cache(store, clock, max_entries=size)

    async def fill(prefix: str, count: int) -> float:
        started = time.perf_counter()
        for i in range(count):
            await cache.get(f"{prefix}{i}")
        return time.perf_counter() - started

    async def go() -> tuple[float, float]:
        room = await fill("a", 2000)  # the cache has room: nothing to drop
        for i in range(size - 2000):
            cache._remember(f"k{i}", [])  # as a get would, without the loop's cost
        # Now full of fresh answers: nothing expired to drop either.
        return room, await fill("x", 2000)

    room, full = asyncio.run(go())
    assert len(cache._entries) <= size
    assert cache.cached("x1999") == []
    assert cache.cached("a0") is None  # the oldest went first
    # 2000 keys cost ~0.05 s whether or not the cache is full (a scan a key took ~5 s).
    assert full < 10 * room + 0.5


@pytest.mark.parametrize("many", [False, True])
def test_lookups_in_flight_when_the_store_closes_fail_not_cancel(many: bool) -> None:
    # After a reload the replaced stores are closed: a message still waiting on one gets a
    # StoreError (On-InternalError), not a CancelledError that would drop its connection.
    store, clock = ScriptedStore(), Clock()
    store.delay = 5.0
    cache = _cache(store, clock)

    async def go() -> object:
        async def ask() -> object:
            if many:
                return (await cache.get_many(["a", "b"]))["a"]
            return await cache.get("a")

        waiter = asyncio.ensure_future(ask())
        await asyncio.sleep(0.05)
        await cache.close()
        try:
            return await asyncio.wait_for(waiter, 2)
        except asyncio.CancelledError:
            return "cancelled"
        except StoreError as exc:
            return exc

    outcome = asyncio.run(go())
    assert isinstance(outcome, StoreError), outcome
    assert "closed" in str(outcome)
