"""Lookups per second of the ldap:, memcache: and redis: stores against private local servers.

    python bench/bench_kvstores.py [--keys 10000] [--lookups 5000] [--concurrency 64]

Starts memcached, redis-server and slapd (tests/support/kvservers.py: loopback ports, data
in a temporary directory), fills each with `--keys` KeyTable rows (`dN.example` ->
domain, selector, key path) and times `--lookups` lookups of random keys (9 in 10 present)
through each store, first one at a time (latency), then `--concurrency` at once (what one
event loop gets out of it). The stores alone: no cache in front, as a cold cache sees them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dkimd.stores.base import Row
from dkimd.stores.ldap import LdapSettings
from dkimd.stores.ldap import from_spec as ldap_store
from dkimd.stores.memcache import from_spec as memcache_store
from dkimd.stores.redis import from_spec as redis_store
from support.kvservers import READER_DN, SUFFIX, Memcached, RedisServer, Slapd


async def timed(
    get: Callable[[str], Awaitable[list[Row]]], names: list[str], concurrency: int
) -> float:
    """Lookups per second of `names`, `concurrency` at a time."""
    queue = iter(names)
    start = time.perf_counter()

    async def worker() -> None:
        for name in queue:
            await get(name)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(names) / (time.perf_counter() - start)


async def measure(store: object, names: list[str], concurrency: int) -> tuple[float, float]:
    await store.open()  # type: ignore[attr-defined]
    get = store.get  # type: ignore[attr-defined]
    try:
        assert await get(names[0]) is not None
        return await timed(get, names, 1), await timed(get, names, concurrency)
    finally:
        await store.close()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10000)
    parser.add_argument("--lookups", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    rnd = random.Random(1)
    names = [f"d{rnd.randrange(int(args.keys * 1.1))}.example" for _ in range(args.lookups)]
    rows = {f"d{i}.example": (f"d{i}.example", "sel", f"/keys/d{i}.pem") for i in range(args.keys)}
    results: dict[str, tuple[float, float]] = {}

    with tempfile.TemporaryDirectory(prefix="kvbench") as tmp:
        d = Path(tmp)
        with Memcached(d / "mc") as mc:
            for name, row in rows.items():
                mc.set(f"dkim:{name}", ":".join(row))
            store = memcache_store(f"memcache:127.0.0.1:{mc.port}/dkim")
            results["memcache:"] = asyncio.run(measure(store, names, args.concurrency))
        with RedisServer(d / "rd") as rd:
            for name, row in rows.items():
                rd.command("HSET", f"k:{name}", "domain", row[0], "selector", row[1], "key", row[2])
            url = f"redis://127.0.0.1:{rd.port}/0?key=hash&prefix=k:&fields=domain,selector,key"
            results["redis: (hash)"] = asyncio.run(
                measure(redis_store(url), names, args.concurrency)
            )
        ldif = f"dn: ou=keys,{SUFFIX}\nobjectClass: organizationalUnit\nou: keys\n\n" + "".join(
            f"dn: cn={name},ou=keys,{SUFFIX}\nobjectClass: dkimEntry\ncn: {name}\n"
            f"dkimDomain: {row[0]}\ndkimSelector: {row[1]}\ndkimKey: {row[2]}\n\n"
            for name, row in rows.items()
        )
        with Slapd(d / "ld", ldif) as sd:
            spec = sd.url + f"/ou=keys,{SUFFIX}?dkimDomain,dkimSelector,dkimKey?one?(cn=$d)"
            settings = LdapSettings(bind_user=READER_DN, bind_password=Slapd.reader_password)
            results["ldap: (simple bind)"] = asyncio.run(
                measure(ldap_store(spec, settings), names, args.concurrency)
            )

    print(f"{args.keys} rows, {args.lookups} lookups (9 in 10 found), no cache")
    print(f"{'store':<22}{'1 at a time':>14}{f'{args.concurrency} at once':>14}   lookups/s")
    for name, (single, many) in results.items():
        print(f"{name:<22}{single:>14.0f}{many:>14.0f}")


if __name__ == "__main__":
    main()
