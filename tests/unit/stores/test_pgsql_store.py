"""The pgsql back end against a real PostgreSQL started for the test (tests/support).

Faults: wrong password at open, the server stopped mid-load (lookups fail, then succeed
again once it is back, without re-creating the store), a slow query not holding up the
others, and a hostile key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from dkimd.stores.base import StoreError
from dkimd.stores.cache import CacheSettings, StoreCache
from dkimd.stores.dsn import from_spec
from support.sqlservers import PgServer, start_postgres
from support.tools import require_module


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    require_module("psycopg")  # in the test extra: missing under CI is a failure, not a skip
    server = start_postgres(tmp_path_factory.mktemp("pg"))
    server.execute(
        "CREATE TABLE keys (id TEXT PRIMARY KEY, data TEXT)",
        "INSERT INTO keys VALUES ('example.com', 'example.com:sel:KEYDATA')",
        "INSERT INTO keys VALUES ('slow', 'slow.example:sel:K')",
        "GRANT SELECT ON keys TO dkimd",
        "CREATE FUNCTION slow(t TEXT) RETURNS BOOLEAN AS $$ "
        "SELECT pg_sleep(CASE WHEN t = 'slow' THEN 2 ELSE 0 END) IS NOT NULL $$ LANGUAGE SQL",
    )
    yield server
    server.cleanup()


def test_lookup_and_hostile_key(pg: PgServer) -> None:
    async def go() -> None:
        store = from_spec(pg.dsn())
        await store.open()
        assert await store.get("example.com") == [("example.com:sel:KEYDATA",)]
        assert await store.get("x' OR '1'='1") == []
        assert await store.get("absent.example") == []
        await store.close()

    asyncio.run(go())


def test_wrong_password_is_a_clear_error(pg: PgServer) -> None:
    async def go() -> str:
        store = from_spec(pg.dsn(password="wrong-one"))
        try:
            await store.open()
        except StoreError as exc:
            return str(exc)
        finally:
            await store.close()
        raise AssertionError("opened with a wrong password")

    message = asyncio.run(go())
    assert "password authentication failed" in message
    assert "wrong-one" not in message


def test_slow_query_does_not_hold_up_others(pg: PgServer) -> None:
    # The filter calls slow(id): the key "slow" takes 2 s, the others none.
    dsn = pg.dsn(extra="?filter=slow(id)")

    async def go() -> tuple[float, bool]:
        cache = StoreCache(from_spec(dsn), CacheSettings(timeout=0.5))
        await cache.open()
        slow = asyncio.ensure_future(cache.get("slow"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert await cache.get("example.com") == [("example.com:sel:KEYDATA",)]
        fast = time.monotonic() - started
        try:
            await slow
            timed_out = False
        except StoreError:
            timed_out = True
        await cache.close()
        return fast, timed_out

    fast, timed_out = asyncio.run(go())
    assert fast < 0.4
    assert timed_out


def test_server_stopped_mid_load_then_recovery(pg: PgServer) -> None:
    async def go() -> list[str]:
        cache = StoreCache(from_spec(pg.dsn()), CacheSettings(ttl=0, negative_ttl=0, timeout=2))
        await cache.open()
        outcomes: list[str] = []
        assert await cache.get("example.com")
        await asyncio.to_thread(pg.stop)
        for _ in range(3):
            try:
                await cache.get("example.com")
                outcomes.append("ok")
            except StoreError:
                outcomes.append("fail")
        await asyncio.to_thread(pg.start)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                rows = await cache.get("example.com")
                outcomes.append("ok" if rows else "empty")
                break
            except StoreError:
                await asyncio.sleep(0.2)
        await cache.close()
        return outcomes

    outcomes = asyncio.run(go())
    assert outcomes[:3] == ["fail", "fail", "fail"]
    assert outcomes[-1] == "ok"


def test_walk_streams_every_row(pg: PgServer) -> None:
    pg.execute("CREATE TABLE big (k TEXT, v TEXT)", "GRANT SELECT ON big TO dkimd")
    pg.copy_rows("big", ("k", "v"), ((f"d{i}.example", f"key{i}") for i in range(5000)))

    async def go() -> int:
        store = from_spec(pg.dsn("big", "k", "v"))
        n = 0
        async for key, row in store.walk():
            assert row == (f"key{key[1:].split('.')[0]}",)
            n += 1
        await store.close()
        return n

    assert asyncio.run(go()) == 5000


def test_tls_required_and_missing(pg: PgServer) -> None:
    # The server accepts this account over TLS only, and has no TLS: a clear error at open
    # (a configuration naming it would not start, exit 78), no silent downgrade.
    hba = pg.datadir / "pg_hba.conf"
    saved = hba.read_text()
    hba.write_text("local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
    pg.reload()
    try:

        async def go() -> str:
            store = from_spec(pg.dsn())
            try:
                await store.open()
            except StoreError as exc:
                return str(exc)
            finally:
                await store.close()
            raise AssertionError("opened without TLS")

        message = asyncio.run(go())
    finally:
        hba.write_text(saved)
        pg.reload()
    assert "no encryption" in message or "SSL" in message, message
