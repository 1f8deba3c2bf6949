"""Host lists and many-key lookups in real memcached servers: `MemcacheStore.get_many`
(`get k1 k2 ...` per server, lines under memcached's limit) reads exactly what `get` reads,
with the keys spread over two servers; InternalHosts in memcached decides a session."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd.stores.base import Row, StoreError
from dkimd.stores.hostlist import host_list_keys
from dkimd.stores.memcache import MAX_GET_LINE, from_spec, server_index
from support.kvservers import Memcached
from support.remote_lists import Mta, base_config


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Memcached, Memcached]]:
    with Memcached(tmp_path / "a") as a, Memcached(tmp_path / "b") as b:
        yield a, b


def test_get_many_reads_what_get_reads(two: tuple[Memcached, Memcached]) -> None:
    servers = list(two)
    keys = host_list_keys("2001:db8::5", "mx.lan.example")  # 520 keys: many lines
    stored = ["2001:db8::/32", "!2001:db8::5/128", ".lan.example", "[2001:db8::5]"]
    for key in stored:
        name = f"hosts:{key}".encode()
        servers[server_index(name, 2)].set(name, "yes:" + key)
    store = from_spec(f"memcache:127.0.0.1:{servers[0].port},127.0.0.1:{servers[1].port}/hosts")
    asked = [*keys, "bad key", "x" * 300]  # not storable: never sent

    async def go() -> tuple[dict[str, list[Row]], dict[str, list[Row]]]:
        try:
            many: dict[str, list[Row]] = await store.get_many(asked)  # type: ignore[attr-defined]
            single = {k: rows for k in asked if (rows := await store.get(k))}
            return many, single
        finally:
            await store.close()

    assert sum(len(k) + 7 for k in keys) > 2 * MAX_GET_LINE  # more than one line
    many, single = asyncio.run(go())
    assert many == single
    assert sorted(many) == sorted(stored)
    assert many[".lan.example"] == [("yes:.lan.example",)]


def test_get_many_server_down(two: tuple[Memcached, Memcached]) -> None:
    a, b = two
    store = from_spec(f"memcache:127.0.0.1:{a.port},127.0.0.1:{b.port}/hosts")
    b.stop()

    async def go() -> None:
        try:
            await store.get_many(host_list_keys("192.0.2.1", None))  # type: ignore[attr-defined]
        finally:
            await store.close()

    with pytest.raises(StoreError):
        asyncio.run(go())


def test_internal_hosts_in_memcached(two: tuple[Memcached, Memcached], tmp_path: Path) -> None:
    a, _ = two
    for key in ("192.0.2.0/24", "!192.0.2.5", ".lan.example"):
        a.set(f"hosts:{key}", "1")
    config = base_config(tmp_path) + f"InternalHosts memcache:127.0.0.1:{a.port}/hosts\n"
    mta = Mta(config)

    async def scenario() -> None:
        try:
            assert (await mta.message("192.0.2.9", "unknown")).signed
            assert (await mta.message("203.0.113.1", "pc.lan.example")).signed
            assert not (await mta.message("192.0.2.5", "unknown")).signed
            assert not (await mta.message("198.51.100.1", "unknown")).signed
            a.stop()
            assert (await mta.message("192.0.2.9", "unknown")).tempfailed
        finally:
            await mta.close()

    asyncio.run(scenario())
