"""Host lists and many-key lookups in a real redis-server: `RedisStore.get_many` (one
pipeline) reads exactly what `get` reads, for each kind of value, and a PeerList and
InternalHosts in Redis decide a session (match, miss, negated, CIDR, server stopped and
started again)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd import milter
from dkimd.stores.base import Row, StoreError
from dkimd.stores.redis import from_spec
from support.kvservers import RedisServer
from support.remote_lists import Mta, base_config

PASSWORD = "s3cret-Pw"


@pytest.fixture
def rd(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "rd", password=PASSWORD) as server:
        yield server


def url(server: RedisServer, query: str) -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0?{query}"


@pytest.mark.parametrize(
    "query",
    ["prefix=s:", "key=hash&prefix=h:", "key=hash&prefix=h:&fields=b,a", "key=list&prefix=l:"],
)
def test_get_many_reads_what_get_reads(rd: RedisServer, query: str) -> None:
    rd.command("SET", "s:one", "example.com:sel:/k.pem")
    rd.command("SET", "s:!192.0.2.5", "")
    rd.command("HSET", "h:one", "a", "1", "b", "2")
    rd.command("HSET", "h:two", "b", "only b")
    rd.command("RPUSH", "l:one", "x", "y")
    keys = ["one", "two", "!192.0.2.5", "none", "x\r\nFLUSHALL\r\n", "\udcff"]
    store = from_spec(url(rd, query))

    async def go() -> tuple[dict[str, list[Row]], dict[str, list[Row]]]:
        try:
            many: dict[str, list[Row]] = await store.get_many(keys)  # type: ignore[attr-defined]
            single = {k: rows for k in keys if (rows := await store.get(k))}
            return many, single
        finally:
            await store.close()

    many, single = asyncio.run(go())
    assert many == single and many  # something found, and the same as key by key
    assert rd.command("EXISTS", "s:one").endswith(b":1\r\n+OK\r\n")  # no FLUSHALL ran


def test_get_many_server_down_is_a_store_error(rd: RedisServer) -> None:
    store = from_spec(url(rd, "prefix=s:&timeout=1"))
    rd.stop()

    async def go() -> None:
        try:
            await store.get_many(["a", "b"])  # type: ignore[attr-defined]
        finally:
            await store.close()

    with pytest.raises(StoreError):
        asyncio.run(go())


def test_host_lists_in_redis(rd: RedisServer, tmp_path: Path) -> None:
    for key in ("192.0.2.0/24", "!192.0.2.5", "2001:db8::/32", ".lan.example"):
        rd.command("SET", "hosts:" + key, "1")
    hosts = url(rd, "prefix=hosts:&timeout=1")
    config = base_config(tmp_path) + f"InternalHosts {hosts}\nDataSetTimeout 2\n"
    peers = Mta(base_config(tmp_path) + f"PeerList {hosts}\nDataSetTimeout 2\n")
    internal = Mta(config)

    async def scenario() -> None:
        try:
            assert (await internal.message("192.0.2.9", "unknown")).signed  # CIDR
            assert (await internal.message("2001:db8::9", "unknown")).signed
            assert (await internal.message("203.0.113.1", "pc.lan.example")).signed
            assert not (await internal.message("192.0.2.5", "unknown")).signed  # negated
            assert not (await internal.message("198.51.100.1", "unknown")).signed  # miss
            peer = await peers.message("192.0.2.9", "unknown")
            assert peer.stage == "C" and isinstance(peer.final, milter.Accept)
            assert (await peers.message("192.0.2.5", "unknown")).stage == "EOM"
            rd.stop()
            down = await peers.message("198.51.100.1", "unknown")
            assert down.stage == "C" and down.tempfailed, down
            down = await internal.message("198.51.100.1", "unknown")
            assert down.stage == "EOH" and down.tempfailed, down
            rd.start()  # empty: the test server keeps nothing on disk
            assert not (await internal.message("192.0.2.9", "unknown")).signed
            rd.command("SET", "hosts:192.0.2.0/24", "1")
            assert (await internal.message("192.0.2.9", "unknown")).signed  # recovered
        finally:
            await internal.close()
            await peers.close()

    asyncio.run(scenario())
