"""The mysql back end (PyMySQL in a bounded thread pool) against a private MariaDB.

MariaDB 10.11 (Debian 12) has no caching_sha2_password plugin, so the accounts here use
mysql_native_password; PyMySQL's caching_sha2_password support (full authentication over
a plain connection with the server's RSA key, through `cryptography`) is exercised only
against a MySQL 8 server, which is not packaged for Debian.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd.stores import dsn
from dkimd.stores.base import StoreError
from dkimd.stores.cache import CacheSettings, StoreCache
from dkimd.stores.dsn import from_spec
from support.sqlservers import MariaServer, start_mariadb
from support.tools import require_module


@pytest.fixture(scope="module")
def maria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaServer]:
    require_module("pymysql")  # in the test extra: missing under CI is a failure, not a skip
    server = start_mariadb(tmp_path_factory.mktemp("maria"))
    server.execute(
        "CREATE TABLE dkim.dkimkeys (id VARCHAR(255) PRIMARY KEY, data TEXT)",
        "INSERT INTO dkim.dkimkeys VALUES ('example.com', 'example.com:sel:KEYDATA')",
    )
    yield server
    server.cleanup()


def test_lookup_hostile_key_and_walk(maria: MariaServer) -> None:
    async def go() -> list[tuple[str, tuple[str, ...]]]:
        store = from_spec(maria.dsn())
        await store.open()
        assert await store.get("example.com") == [("example.com:sel:KEYDATA",)]
        assert await store.get("x' OR '1'='1") == []
        assert await store.get("x\\' OR 1=1 -- ") == []
        rows = [item async for item in store.walk()]
        await store.close()
        return rows

    assert asyncio.run(go()) == [("example.com", ("example.com:sel:KEYDATA",))]


def test_wrong_password(maria: MariaServer) -> None:
    async def go() -> str:
        store = from_spec(maria.dsn(password="not-it"))
        try:
            await store.open()
        except StoreError as exc:
            return str(exc)
        finally:
            await store.close()
        raise AssertionError("logged in with a wrong password")

    message = asyncio.run(go())
    assert "Access denied" in message and "not-it" not in message


def test_server_stopped_then_recovery(maria: MariaServer) -> None:
    async def go() -> list[str]:
        cache = StoreCache(from_spec(maria.dsn()), CacheSettings(ttl=0, negative_ttl=0))
        await cache.open()
        outcomes = []
        await asyncio.to_thread(maria.stop)
        try:
            await cache.get("example.com")
            outcomes.append("ok")
        except StoreError:
            outcomes.append("fail")
        await asyncio.to_thread(maria.start)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                outcomes.append("ok" if await cache.get("example.com") else "empty")
                break
            except StoreError:
                await asyncio.sleep(0.2)
        await cache.close()
        return outcomes

    outcomes = asyncio.run(go())
    assert outcomes[0] == "fail" and outcomes[-1] == "ok"


def test_a_server_that_stops_answering_frees_the_thread(
    maria: MariaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGSTOP: the kernel keeps the connection, nothing answers. Without a read timeout
    # the pool's thread would wait for ever, after the cache's timeout failed the lookup.
    monkeypatch.setattr(dsn, "IO_TIMEOUT", 1.0, raising=False)
    assert maria.proc is not None
    pid = maria.proc.pid

    async def go() -> tuple[str, float]:
        store = from_spec(maria.dsn(), pool_size=1)
        assert await store.get("example.com")  # the thread's connection, made now
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        try:
            await asyncio.wait_for(store.get("example.com"), 20)
            outcome = "answered"
        except StoreError:
            outcome = "StoreError"
        except TimeoutError:
            outcome = "still waiting"
        finally:
            os.kill(pid, signal.SIGCONT)
        took = time.monotonic() - started
        await store.close()
        return outcome, took

    outcome, took = asyncio.run(go())
    assert outcome == "StoreError" and took < 10


def test_unix_socket_host(maria: MariaServer, tmp_path: Path) -> None:
    sock = str(maria.socket).replace("/", "=2F")
    dsn = f"dsn:mysql://root@{sock}/dkim/table=dkimkeys?keycol=id?datacol=data"

    async def go() -> list[tuple[str, ...]]:
        store = from_spec(dsn)
        rows = await store.get("example.com")
        await store.close()
        return rows

    assert asyncio.run(go()) == [("example.com:sel:KEYDATA",)]
