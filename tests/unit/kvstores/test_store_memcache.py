"""memcache: data sets (dkimd.stores.memcache) against a real memcached on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd.stores.base import StoreError, StoreSpecError
from dkimd.stores.memcache import (
    DEFAULT_PORT,
    MAX_CONNECTIONS_PER_SERVER,
    Server,
    from_spec,
    one_at_a_time,
    parse_spec,
    server_index,
    valid_key,
)
from support.kvservers import Memcached


@pytest.fixture
def mc(tmp_path: Path) -> Iterator[Memcached]:
    with Memcached(tmp_path / "mc") as server:
        yield server


# -- the value as opendkim(8) writes it --------------------------------------------------------


def test_parse_hosts_ports_and_prefix() -> None:
    servers, prefix = parse_spec("memcache:localhost,otherhost:11311,[::1]:11411/keyname")
    assert servers == (
        Server("localhost", DEFAULT_PORT),
        Server("otherhost", 11311),
        Server("::1", 11411),
    )
    assert prefix == "keyname"
    assert from_spec("memcache:a,b:2/p").describe() == "memcache:a:11211,b:2/p"


@pytest.mark.parametrize(
    "value",
    [
        "memcache:localhost",  # no /prefix
        "memcache:/prefix",  # no host
        "memcache:host:0/p",
        "memcache:host:port/p",
        "memcache:[::1/p",
        "memcache:host/pre fix",  # a prefix memcached could never hold
    ],
)
def test_unusable_values_are_configuration_errors(value: str) -> None:
    with pytest.raises(StoreSpecError):
        parse_spec(value)


def test_one_at_a_time_matches_the_published_vectors() -> None:
    # Bob Jenkins' one-at-a-time hash: the values every implementation is checked against.
    assert one_at_a_time(b"a") == 0xCA2E9442
    assert one_at_a_time(b"The quick brown fox jumps over the lazy dog") == 0x519E91F5
    assert server_index(b"anything", 1) == 0
    assert server_index(b"a", 3) == 0xCA2E9442 % 3


def test_keys_memcached_cannot_hold() -> None:
    assert valid_key(b"dkim:example.com")
    assert not valid_key(b"")
    assert not valid_key(b"dkim:a b")
    assert not valid_key(b"dkim:a\r\nflush_all")
    assert not valid_key(b"dkim:\x7f")
    assert not valid_key(b"k" * 251)


# -- against memcached -------------------------------------------------------------------------


def test_found_not_found_and_the_prefix(mc: Memcached) -> None:
    mc.set("dkim:example.com", "example.com:sel:/keys/example.pem")
    mc.set("example.org", "unprefixed")

    async def run() -> tuple[object, ...]:
        store = from_spec(f"memcache:127.0.0.1:{mc.port}/dkim")
        await store.open()
        try:
            return (
                await store.get("example.com"),
                await store.get("example.org"),
                await store.get("EXAMPLE.COM"),
            )
        finally:
            await store.close()

    found, unprefixed, other_case = asyncio.run(run())
    assert found == [("example.com:sel:/keys/example.pem",)]
    assert unprefixed == []  # only prefix ":" key is asked
    assert other_case == []  # memcached keys are exact bytes


def test_hostile_keys_are_never_sent(mc: Memcached) -> None:
    mc.set("dkim:victim", "still-here")

    async def run() -> list[object]:
        store = from_spec(f"memcache:127.0.0.1:{mc.port}/dkim", timeout=2)
        await store.open()
        before = mc.stat("cmd_get")
        try:
            answers: list[object] = [
                await store.get("x\r\nflush_all"),
                await store.get("a b"),
                await store.get("k" * 300),
                await store.get("*)(\x00"),
            ]
            answers.append(mc.stat("cmd_get") - before)
            answers.append(await store.get("victim"))
            return answers
        finally:
            await store.close()

    *hostile, gets, victim = asyncio.run(run())
    assert hostile == [[], [], [], []]
    assert gets == 0  # none of them reached the server
    assert victim == [("still-here",)]  # no flush_all was injected


def test_several_hosts_key_goes_where_libmemcached_puts_it(tmp_path: Path) -> None:
    with Memcached(tmp_path / "a") as a, Memcached(tmp_path / "b") as b:
        servers = [a, b]
        names = [f"example{i}.com" for i in range(12)]
        for name in names:
            servers[server_index(f"dkim:{name}".encode(), 2)].set(f"dkim:{name}", name)
        # and a decoy on the wrong server, which must not be read
        wrong = servers[1 - server_index(b"dkim:example0.com", 2)]
        wrong.set("dkim:example0.com", "wrong server")
        used = {server_index(f"dkim:{n}".encode(), 2) for n in names}
        assert used == {0, 1}  # the test really spreads keys over both

        async def run() -> list[object]:
            store = from_spec(f"memcache:127.0.0.1:{a.port},127.0.0.1:{b.port}/dkim")
            await store.open()
            try:
                return [await store.get(n) for n in names]
            finally:
                await store.close()

        assert asyncio.run(run()) == [[(n,)] for n in names]


def test_stopped_server_then_restarted_same_store(mc: Memcached) -> None:
    mc.set("dkim:example.com", "v1")

    async def run() -> None:
        store = from_spec(f"memcache:127.0.0.1:{mc.port}/dkim", timeout=2)
        await store.open()
        assert await store.get("example.com") == [("v1",)]
        mc.stop()
        with pytest.raises(StoreError, match=rf"127\.0\.0\.1:{mc.port}"):
            await store.get("example.com")
        mc.start()
        mc.set("dkim:example.com", "v2")
        assert await store.get("example.com") == [("v2",)]
        await store.close()

    asyncio.run(run())


def test_open_fails_when_a_server_is_down(mc: Memcached) -> None:
    mc.stop()

    async def run() -> None:
        store = from_spec(f"memcache:127.0.0.1:{mc.port}/dkim", timeout=2)
        with pytest.raises(StoreError):
            await store.open()
        await store.close()

    asyncio.run(run())


def test_hung_server_times_out(mc: Memcached) -> None:
    mc.set("dkim:example.com", "v1")

    async def run() -> float:
        store = from_spec(f"memcache:127.0.0.1:{mc.port}/dkim", timeout=0.5)
        await store.open()
        mc.pause()
        try:
            start = time.monotonic()
            with pytest.raises(StoreError, match=r"no answer within 0\.5 s"):
                await store.get("example.com")
            return time.monotonic() - start
        finally:
            mc.resume()
            await store.close()

    assert asyncio.run(run()) < 2.0


@pytest.mark.parametrize(
    "reply",
    [
        b"VALUE dkim:k 0 99999999999\r\n",  # announces more than any item can hold
        b"SERVER_ERROR out of memory\r\n",
        b"VALUE dkim:k 0 3\r\nabcXY",  # data not followed by CR LF
        b"x" * 70000,  # a line without end
    ],
)
def test_bad_replies_are_store_errors(reply: bytes) -> None:
    async def run() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            writer.write(reply)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        store = from_spec(f"memcache:127.0.0.1:{port}/dkim", timeout=2)
        try:
            with pytest.raises(StoreError):
                await store.get("k")
        finally:
            await store.close()
            server.close()
            await server.wait_closed()

    asyncio.run(run())


def test_walk_lists_the_prefixed_keys_of_every_server(tmp_path: Path) -> None:
    with Memcached(tmp_path / "a") as a, Memcached(tmp_path / "b") as b:
        servers = [a, b]
        names = ["example.com", "example.org", "a b", "x.example"]
        for name in names[:2] + names[3:]:
            key = f"dkim:{name}"
            servers[server_index(key.encode(), 2)].set(key, f"{name}:sel:/k")
        a.set("other:example.net", "not in this table")
        # a key on the server lookups would not ask is not part of the table either
        stray = "dkim:stray.example"
        servers[1 - server_index(stray.encode(), 2)].set(stray, "unreachable by get")

        async def run() -> list[tuple[str, tuple[str, ...]]]:
            store = from_spec(f"memcache:127.0.0.1:{a.port},127.0.0.1:{b.port}/dkim")
            try:
                return sorted([item async for item in store.walk()])
            finally:
                await store.close()

        assert asyncio.run(run()) == [
            ("example.com", ("example.com:sel:/k",)),
            ("example.org", ("example.org:sel:/k",)),
            ("x.example", ("x.example:sel:/k",)),
        ]


def test_concurrent_lookups(mc: Memcached) -> None:
    for i in range(50):
        mc.set(f"dkim:d{i}.example", f"d{i}.example:sel:/k{i}")

    async def run() -> list[object]:
        store = from_spec(f"memcache:127.0.0.1:{mc.port}/dkim")
        try:
            return list(
                await asyncio.gather(*(store.get(f"d{i % 60}.example") for i in range(300)))
            )
        finally:
            await store.close()

    before = mc.stat("total_connections")
    answers = asyncio.run(run())
    # 300 lookups at once, over no more than the bound of connections (+1: stat's own)
    assert mc.stat("total_connections") - before <= MAX_CONNECTIONS_PER_SERVER + 1
    assert answers == [
        [(f"d{i % 60}.example:sel:/k{i % 60}",)] if i % 60 < 50 else [] for i in range(300)
    ]


def test_restart_between_lookups_costs_no_failed_lookup(mc: Memcached) -> None:
    async def run() -> list[object]:
        store = from_spec(f"memcache:127.0.0.1:{mc.port}/dkim", timeout=2)
        await store.open()
        first = await store.get("example.com")  # leaves an idle connection
        mc.stop()
        mc.start()
        mc.set("dkim:example.com", "after restart")
        second = await store.get("example.com")  # the idle one is dead: a new one answers
        await store.close()
        return [first, second]

    assert asyncio.run(run()) == [[], [("after restart",)]]


def test_any_key_is_answered_or_refused_cleanly(mc: Memcached) -> None:
    import random

    rnd = random.Random(16)
    alphabet = 'ab.*()\\\0\x01\n\r ,+"<>;=#$%é€\U0001f600\udcff\ud800'
    keys = ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 12))) for _ in range(300)]
    keys.append("k" * 400)

    async def run() -> list[object]:
        store = from_spec(f"memcache:127.0.0.1:{mc.port}/dkim", timeout=2)
        try:
            return [await store.get(k) for k in keys]
        finally:
            await store.close()

    assert asyncio.run(run()) == [[]] * len(keys)


def test_server_down_at_open_then_up_serves_without_a_new_store(mc: Memcached) -> None:
    # What SoftStart relies on: a failed open() leaves a store that works once the server does.
    mc.stop()

    async def run() -> list[object]:
        store = from_spec(f"memcache:127.0.0.1:{mc.port}/dkim", timeout=2)
        with pytest.raises(StoreError):
            await store.open()
        mc.start()
        mc.set("dkim:example.com", "up now")
        try:
            return await store.get("example.com")
        finally:
            await store.close()

    assert asyncio.run(run()) == [("up now",)]
