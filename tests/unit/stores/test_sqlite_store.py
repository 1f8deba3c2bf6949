"""The sqlite3 back end against a real database file (stdlib sqlite3 in a thread pool)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from dkimd.stores.base import StoreError
from dkimd.stores.dsn import from_spec


def _db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE keys (id TEXT, domain TEXT, selector TEXT, keydata TEXT, enabled INT);
        INSERT INTO keys VALUES ('a', 'example.com', 'sel1', 'KEYA', 1);
        INSERT INTO keys VALUES ('b', 'example.org', 'sel2', NULL, 0);
        INSERT INTO keys VALUES ('b', 'example.org', 'sel3', 'KEYB', 1);
        """
    )
    conn.commit()
    conn.close()


def _dsn(path: Path, extra: str = "") -> str:
    return (
        f"dsn:sqlite3://{str(path.parent).replace('/', '=2F')}=2F/{path.name}/"
        f"table=keys?keycol=id?datacol=domain,selector,keydata{extra}"
    )


def test_lookup_rows_nulls_and_absent(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    _db(path)

    async def go() -> None:
        store = from_spec(_dsn(path))
        await store.open()
        assert await store.get("a") == [("example.com", "sel1", "KEYA")]
        assert await store.get("b") == [
            ("example.org", "sel2", ""),
            ("example.org", "sel3", "KEYB"),
        ]
        assert await store.get("nope") == []
        await store.close()

    asyncio.run(go())


def test_filter(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    _db(path)

    async def go() -> None:
        store = from_spec(_dsn(path, "?filter=enabled=3D1"))
        assert await store.get("b") == [("example.org", "sel3", "KEYB")]
        await store.close()

    asyncio.run(go())


@pytest.mark.parametrize("hostile", ["x' OR '1'='1", "a' --", "a'; DROP TABLE keys; --", "a\x00b"])
def test_key_is_data_never_sql(tmp_path: Path, hostile: str) -> None:
    path = tmp_path / "keys.db"
    _db(path)

    async def go() -> None:
        store = from_spec(_dsn(path))
        assert await store.get(hostile) == []
        assert await store.get("a") == [("example.com", "sel1", "KEYA")]  # the table is intact
        await store.close()

    asyncio.run(go())


def test_walk(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    _db(path)

    async def go() -> list[tuple[str, tuple[str, ...]]]:
        store = from_spec(_dsn(path))
        rows = [item async for item in store.walk()]
        await store.close()
        return rows

    rows = asyncio.run(go())
    assert sorted(rows) == sorted(
        [
            ("a", ("example.com", "sel1", "KEYA")),
            ("b", ("example.org", "sel2", "")),
            ("b", ("example.org", "sel3", "KEYB")),
        ]
    )


def test_missing_file_fails_to_open_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"

    async def go() -> None:
        store = from_spec(_dsn(path))
        with pytest.raises(StoreError):
            await store.open()
        await store.close()

    asyncio.run(go())
    assert not path.exists()


def test_missing_table_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    sqlite3.connect(path).close()

    async def go() -> None:
        store = from_spec(_dsn(path))
        with pytest.raises(StoreError, match="no such table"):
            await store.get("a")
        await store.close()

    asyncio.run(go())
