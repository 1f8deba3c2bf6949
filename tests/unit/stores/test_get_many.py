"""Many keys at once (a host list asks up to 520 for one client): `StoreCache.get_many` and
the SQL back ends' `get_many` (one `IN (...)` query per 500 keys).

Against SQLite and MariaDB (whose default collation is case-insensitive, so a row comes
back under a key that is not byte for byte the one asked: the cache then asks key by key,
as OpenDKIM's single-key query would match), and the cache's own rules (coalescing with
concurrent askers, the cache answering first, one outage line, failures as answers) with
a store that counts its calls.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dkimd.stores.base import Row, StoreError
from dkimd.stores.cache import CacheSettings, StoreCache
from dkimd.stores.dsn import MANY_BATCH, from_spec
from support.remote_lists import sqlite_url
from support.sqlservers import MariaServer, start_mariadb

# -- SQL back ends ----------------------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    db = tmp_path / "t.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (k TEXT, a TEXT, b TEXT)")
    rows = [(f"key{i}", f"a{i}", f"b{i}") for i in range(1200)]
    rows += [("dup", "first", "1"), ("dup", "second", "2"), ("x' OR '1'='1", "quoted", "q")]
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return db


def test_sqlite_get_many_answers_each_key(sqlite_db: Path) -> None:
    store = from_spec(sqlite_url(sqlite_db, "t", "k", "a,b"))
    asked = [f"key{i}" for i in range(0, 1300)] + ["dup", "x' OR '1'='1", "' OR 1=1 --"]

    async def go() -> tuple[dict[str, list[Row]], dict[str, list[Row]]]:
        try:
            many = await store.get_many(asked)  # type: ignore[attr-defined]
            one_by_one = {k: rows for k in asked if (rows := await store.get(k))}
            return many, one_by_one
        finally:
            await store.close()

    assert len(asked) > 2 * MANY_BATCH  # more than one IN (...) query
    many, one_by_one = asyncio.run(go())
    assert many == one_by_one  # the same rows as the single-key query, key by key
    assert many["key3"] == [("a3", "b3")] and "key1200" not in many
    assert sorted(many["dup"]) == [("first", "1"), ("second", "2")]
    assert many["x' OR '1'='1"] == [("quoted", "q")] and "' OR 1=1 --" not in many


def test_sqlite_filter_applies(sqlite_db: Path) -> None:
    store = from_spec(sqlite_url(sqlite_db, "t", "k", "a") + "?filter=b <> 'b2'")

    async def go() -> dict[str, list[Row]]:
        try:
            found: dict[str, list[Row]] = await store.get_many(["key1", "key2"])  # type: ignore[attr-defined]
            return found
        finally:
            await store.close()

    assert asyncio.run(go()) == {"key1": [("a1",)]}


@pytest.fixture(scope="module")
def maria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaServer]:
    server = start_mariadb(tmp_path_factory.mktemp("maria"))
    server.execute(
        "CREATE TABLE dkim.hosts (k VARCHAR(255) PRIMARY KEY, v TEXT)",
        "INSERT INTO dkim.hosts VALUES ('192.0.2.0/24', 'net'), ('MX.Example.ORG', 'name')",
    )
    yield server
    server.cleanup()


def test_mariadb_case_insensitive_collation_falls_back_to_single_keys(maria: MariaServer) -> None:
    cache = StoreCache(from_spec(maria.dsn("hosts", "k", "v")), CacheSettings(timeout=10))

    async def go() -> dict[str, list[Row] | StoreError]:
        try:
            return await cache.get_many(["192.0.2.0/24", "mx.example.org", "none.example"])
        finally:
            await cache.close()

    found = asyncio.run(go())
    # 'mx.example.org' = 'MX.Example.ORG' under MariaDB's default collation, as a single
    # `WHERE k = ...` query (OpenDKIM's) finds it.
    assert found == {"192.0.2.0/24": [("net",)], "mx.example.org": [("name",)], "none.example": []}


# -- the cache ------------------------------------------------------------------------------


class BatchStore:
    """A store with get_many whose answers the test sets; it counts every call."""

    def __init__(self, rows: dict[str, list[Row]]) -> None:
        self.rows = rows
        self.batches: list[list[str]] = []
        self.singles: list[str] = []
        self.fail: str | None = None
        self.delay = 0.0
        self.rename: dict[str, str] = {}  # key as stored -> key as the database returns it

    def describe(self) -> str:
        return "dsn:test://store/db/table=t?keycol=k?datacol=v"

    async def open(self) -> None:
        pass

    async def get(self, key: str) -> list[Row]:
        self.singles.append(key)
        if self.fail:
            raise StoreError(self.fail)
        return list(self.rows.get(key, []))

    async def get_many(self, keys: list[str]) -> dict[str, list[Row]]:
        self.batches.append(list(keys))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise StoreError(self.fail)
        return {self.rename.get(k, k): list(self.rows[k]) for k in keys if k in self.rows}

    async def walk(self) -> AsyncIterator[tuple[str, Row]]:
        for key, rows in self.rows.items():
            for row in rows:
                yield key, row

    async def close(self) -> None:
        pass


def _cache(store: BatchStore, **kw: float) -> StoreCache:
    return StoreCache(store, CacheSettings(**kw))  # type: ignore[arg-type]


def test_one_query_then_the_cache() -> None:
    store = BatchStore({"a": [("1",)], "c": [("3",)]})
    cache = _cache(store)

    async def go() -> list[dict[str, list[Row] | StoreError]]:
        first = await cache.get_many(["a", "b", "c", "a"])
        second = await cache.get_many(["a", "b", "c", "d"])
        return [first, second]

    first, second = asyncio.run(go())
    assert first == {"a": [("1",)], "b": [], "c": [("3",)]}
    assert second == {**first, "d": []}
    assert store.batches == [["a", "b", "c"], ["d"]]  # misses cached too (negative TTL)
    assert store.singles == []


def test_concurrent_askers_share_keys() -> None:
    store = BatchStore({"a": [("1",)], "b": [("2",)], "c": [("3",)]})
    store.delay = 0.05
    cache = _cache(store)

    async def go() -> tuple[dict[str, list[Row] | StoreError], ...]:
        return tuple(await asyncio.gather(cache.get_many(["a", "b"]), cache.get_many(["b", "c"])))

    one, two = asyncio.run(go())
    assert one == {"a": [("1",)], "b": [("2",)]} and two == {"b": [("2",)], "c": [("3",)]}
    assert store.batches == [["a", "b"], ["c"]]  # "b" asked once


def test_failure_is_an_answer_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    store = BatchStore({"a": [("1",)]})
    store.fail = "connection refused"
    cache = _cache(store, negative_ttl=0)

    async def go() -> list[dict[str, list[Row] | StoreError]]:
        return [await cache.get_many(["a", "b"]) for _ in range(3)]

    with caplog.at_level(logging.ERROR, logger="dkimd.stores"):
        answers = asyncio.run(go())
    assert all(isinstance(v, StoreError) for a in answers for v in a.values())
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    assert cache.is_down
    store.fail = None
    assert asyncio.run(cache.get_many(["a"])) == {"a": [("1",)]}
    assert not cache.is_down


def test_timeout_fails_the_keys() -> None:
    store = BatchStore({"a": [("1",)]})
    store.delay = 1.0
    cache = _cache(store, timeout=0.05)
    found = asyncio.run(cache.get_many(["a"]))
    assert isinstance(found["a"], StoreError)


def test_a_row_under_another_key_asks_key_by_key() -> None:
    store = BatchStore({"mx.example.org": [("name",)], "net": [("n",)]})
    store.rename = {"mx.example.org": "MX.Example.ORG"}
    cache = _cache(store)
    found = asyncio.run(cache.get_many(["mx.example.org", "net", "none"]))
    assert found == {"mx.example.org": [("name",)], "net": [("n",)], "none": []}
    assert store.singles == ["mx.example.org", "net", "none"]


def test_a_store_without_get_many_is_asked_key_by_key() -> None:
    class Plain(BatchStore):
        get_many = None  # type: ignore[assignment]

    store = Plain({"a": [("1",)]})
    cache = _cache(store)
    assert asyncio.run(cache.get_many(["a", "b"])) == {"a": [("1",)], "b": []}
    assert store.singles == ["a", "b"] and store.batches == []
