"""redis:/rediss: data sets (dkimd.stores.redis) against a real redis-server on loopback."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd.stores.base import MissingExtra, StoreError, StoreSpecError
from dkimd.stores.redis import MAX_CONNECTIONS, from_spec, parse_spec
from support.kvservers import RedisServer, ThrowawayCa

PASSWORD = "s3cret-Pw"


@pytest.fixture
def rd(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "rd", password=PASSWORD) as server:
        yield server


def url(server: RedisServer, query: str = "", password: str = PASSWORD, db: int = 0) -> str:
    return f"redis://:{password}@127.0.0.1:{server.port}/{db}" + (f"?{query}" if query else "")


# -- the URL -----------------------------------------------------------------------------------


def test_parse_defaults_and_describe_hides_the_password() -> None:
    spec = parse_spec("redis://:pw@example.net")
    assert (spec.host, spec.port, spec.db, spec.kind, spec.prefix) == (
        "example.net",
        6379,
        0,
        "string",
        "",
    )
    spec = parse_spec("rediss://dkim:pw@[::1]:6380/3?key=hash&prefix=k:&fields=a,b&timeout=2")
    assert (spec.tls, spec.host, spec.port, spec.db, spec.username) == (
        True,
        "::1",
        6380,
        3,
        "dkim",
    )
    assert spec.fields == ("a", "b") and spec.timeout == 2
    assert "pw" not in spec.describe()
    assert "pw" not in repr(spec)  # a traceback's locals, a debug line
    assert spec.describe() == "rediss://dkim:***@[::1]:6380/3?key=hash&prefix=k:&fields=a,b"


@pytest.mark.parametrize(
    "value",
    [
        "redis:///0",  # no host
        "redis://h/x",  # db not a number
        "redis://h/?key=set",
        "redis://h/?fields=a",  # fields only for hash
        "redis://h/?bogus=1",
        "redis://h/?timeout=0",
        "redis://h/?ca=/x.pem",  # ca only for rediss
        "redis://h:99999/",
        "redis://h/?key=hash&key=list",
    ],
)
def test_unusable_urls_are_configuration_errors(value: str) -> None:
    with pytest.raises(StoreSpecError):
        parse_spec(value)


@pytest.mark.parametrize(
    "value", ["redis://u:pa#ss@h/0", "redis://u:pa/ss@h/0", "redis://:pa?ss@h/0"]
)
def test_a_password_read_as_a_port_is_not_quoted(value: str) -> None:
    # urlsplit takes "u:pa" for host and port and says "... as 'pa'": the password's start.
    with pytest.raises(StoreSpecError) as err:
        parse_spec(value)
    assert "pa" not in err.value.message
    assert err.value.hint is not None and "%23" in err.value.hint


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(MissingExtra) as err:
        from_spec("redis://127.0.0.1/")
    assert err.value.extra == "redis"
    assert err.value.hint == "pip install 'dkimd[redis]'"


# -- against redis-server ----------------------------------------------------------------------


def lookups(store_url: str, *keys: str) -> list[object]:
    async def run() -> list[object]:
        store = from_spec(store_url)
        await store.open()
        try:
            return [await store.get(k) for k in keys]
        finally:
            await store.close()

    return asyncio.run(run())


def test_string_found_not_found_prefix_and_db(rd: RedisServer) -> None:
    rd.command("SET", "dkim:example.com", "example.com:sel:/keys/example.pem")
    rd.command("SET", "example.com", "no prefix")
    rd.command("SET", "example.com", "in db 2", db=2)
    assert lookups(url(rd, "prefix=dkim:"), "example.com", "example.org", "EXAMPLE.COM") == [
        [("example.com:sel:/keys/example.pem",)],
        [],
        [],
    ]
    assert lookups(url(rd), "example.com") == [[("no prefix",)]]
    assert lookups(url(rd, db=2), "example.com", "example.org") == [[("in db 2",)], []]


def test_hash_in_the_fields_order_or_by_name(rd: RedisServer) -> None:
    rd.command("HSET", "kt:k1", "selector", "sel", "domain", "example.com", "key", "/k.pem")
    rd.command("HSET", "kt:k2", "domain", "example.org")
    q = "key=hash&prefix=kt:&fields=domain,selector,key"
    assert lookups(url(rd, q), "k1", "k2", "k3") == [
        [("example.com", "sel", "/k.pem")],
        [("example.org", "", "")],  # a missing field reads as ""
        [],
    ]
    # without fields=: every field, in field-name order (domain, key, selector)
    assert lookups(url(rd, "key=hash&prefix=kt:"), "k1") == [[("example.com", "/k.pem", "sel")]]


def test_list_is_several_rows(rd: RedisServer) -> None:
    rd.command("RPUSH", "st:example.com", "key-a", "key-b", "key-c")
    assert lookups(url(rd, "key=list&prefix=st:"), "example.com", "example.org") == [
        [("key-a",), ("key-b",), ("key-c",)],
        [],
    ]


def test_hostile_keys_are_data(rd: RedisServer) -> None:
    hostile = "*)(\r\nFLUSHALL\r\n"
    rd.command("SET", "p:" + hostile, "stored under a hostile key")
    rd.command("SET", "p:victim", "still-here")
    assert lookups(url(rd, "prefix=p:"), hostile, "*", "victim") == [
        [("stored under a hostile key",)],
        [],  # no glob: "*" is a key like any other
        [("still-here",)],
    ]


def test_a_key_of_the_wrong_type_is_a_store_error(rd: RedisServer) -> None:
    rd.command("RPUSH", "example.com", "x")

    async def run() -> None:
        store = from_spec(url(rd))
        with pytest.raises(StoreError, match="WRONGTYPE"):
            await store.get("example.com")
        await store.close()

    asyncio.run(run())


def test_wrong_password_fails_at_open_without_the_password(rd: RedisServer) -> None:
    async def run() -> str:
        store = from_spec(url(rd, password="Not-The-Pw-42"))
        try:
            with pytest.raises(StoreError) as err:
                await store.open()
            return str(err.value)
        finally:
            await store.close()

    message = asyncio.run(run())
    assert "Not-The-Pw-42" not in message and PASSWORD not in message
    assert "***" in message


def test_stopped_server_then_restarted_same_store(rd: RedisServer) -> None:
    rd.command("SET", "example.com", "v1")

    async def run() -> None:
        store = from_spec(url(rd, "timeout=2"))
        await store.open()
        assert await store.get("example.com") == [("v1",)]
        rd.stop()
        with pytest.raises(StoreError) as err:
            await store.get("example.com")
        assert PASSWORD not in str(err.value)
        rd.start()
        rd.command("SET", "example.com", "v2")
        assert await store.get("example.com") == [("v2",)]
        await store.close()

    asyncio.run(run())


def test_hung_server_times_out(rd: RedisServer) -> None:
    async def run() -> float:
        store = from_spec(url(rd, "timeout=0.5"))
        await store.open()
        rd.pause()
        try:
            start = time.monotonic()
            with pytest.raises(StoreError):
                await store.get("example.com")
            return time.monotonic() - start
        finally:
            rd.resume()
            await store.close()

    assert asyncio.run(run()) < 2.5


def test_walk_with_a_prefix_holding_glob_characters(rd: RedisServer) -> None:
    rd.command("SET", "t[1]*:a.example", "A")
    rd.command("SET", "t[1]*:b.example", "B")
    rd.command("SET", "t1x:c.example", "not under the prefix")

    async def run() -> list[tuple[str, tuple[str, ...]]]:
        store = from_spec(url(rd, "prefix=t%5B1%5D*:"))
        try:
            return sorted([item async for item in store.walk()])
        finally:
            await store.close()

    assert asyncio.run(run()) == [("a.example", ("A",)), ("b.example", ("B",))]


def test_tls_with_the_test_ca_and_refused_without_it(tmp_path: Path) -> None:
    ca = ThrowawayCa(tmp_path / "ca")
    with RedisServer(tmp_path / "rd", password=PASSWORD, ca=ca) as rd:
        base = f"rediss://:{PASSWORD}@127.0.0.1:{rd.port}/0"

        async def run() -> tuple[object, str]:
            trusted = from_spec(f"{base}?ca={ca.ca_cert}&timeout=3")
            await trusted.open()
            found = await trusted.get("nothing-here")
            await trusted.close()
            untrusted = from_spec(f"{base}?timeout=3")  # the system's CAs: not ours
            with pytest.raises(StoreError) as err:
                await untrusted.open()
            await untrusted.close()
            return found, str(err.value)

        found, refused = asyncio.run(run())
        assert found == []
        assert "certificate" in refused.lower() and PASSWORD not in refused


def test_any_key_is_answered_or_refused_cleanly(rd: RedisServer) -> None:
    import random

    rnd = random.Random(16)
    alphabet = 'ab.*()\\\0\x01\n\r ,+"<>;=#$%é€\U0001f600\udcff\ud800'
    keys = ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 12))) for _ in range(300)]
    rd.command("SET", b"p:\xff", "raw byte key")

    async def run() -> list[object]:
        store = from_spec(url(rd, "prefix=p:"))
        try:
            return [await store.get(k) for k in [*keys, "\udcff"]]
        finally:
            await store.close()

    *answers, raw = asyncio.run(run())
    assert answers == [[]] * len(keys)
    assert raw == [("raw byte key",)]  # an undecodable byte is looked up as that byte


def test_concurrent_lookups_over_a_bounded_number_of_connections(rd: RedisServer) -> None:
    for i in range(50):
        rd.command("SET", f"d{i}.example", f"d{i}.example:sel:/k{i}")

    def connections_received() -> int:
        info = rd.command("INFO", "stats").decode()
        return int(info.split("total_connections_received:")[1].split()[0])

    async def run() -> list[object]:
        store = from_spec(url(rd))
        try:
            return list(
                await asyncio.gather(*(store.get(f"d{i % 60}.example") for i in range(300)))
            )
        finally:
            await store.close()

    before = connections_received()
    answers = asyncio.run(run())
    assert answers == [
        [(f"d{i % 60}.example:sel:/k{i % 60}",)] if i % 60 < 50 else [] for i in range(300)
    ]
    # +1: connections_received's own connection
    assert connections_received() - before <= MAX_CONNECTIONS + 1


def test_server_down_at_open_then_up_serves_without_a_new_store(rd: RedisServer) -> None:
    # What SoftStart relies on: a failed open() leaves a store that works once the server does.
    rd.stop()

    async def run() -> list[object]:
        store = from_spec(url(rd, "timeout=2"))
        with pytest.raises(StoreError):
            await store.open()
        rd.start()
        rd.command("SET", "example.com", "up now")
        try:
            return await store.get("example.com")
        finally:
            await store.close()

    assert asyncio.run(run()) == [("up now",)]
