"""One host-list decision with the list in a database: cold and warm, IPv4 and IPv6.

    python bench/hostlist_lookups.py [--rows 5000] [--clients 20] [--one-by-one]

Fills an InternalHosts table of `--rows` networks (10.x.y.0/24) plus a few entries, in
SQLite and in a private PostgreSQL (tests/support/sqlservers.py), and times
`RemoteHostList.matches` as the session runs it (fetch what is missing in one round, then
decide): for `--clients` new clients each (a client in a network not asked before: its
136 IPv4 or 520 IPv6 candidate keys mostly miss the cache), then the same clients again
(all in the cache). `--one-by-one` takes away the back ends' `get_many`, for the cost of
asking every key in its own query. Prints the median and the worst, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dkimd.config.datasets import open_dataset
from dkimd.config.hosts import check_host_entries
from dkimd.stores.dataset import RemoteDataset
from dkimd.stores.hostlist import RemoteHostList
from support.remote_lists import ask, sqlite_url
from support.sqlservers import start_postgres

CLIENTS = {"IPv4": "198.51.{}.{}", "IPv6": "2001:db9:{:x}::{:x}"}


def rows(count: int) -> list[tuple[str, str]]:
    extra = [("192.0.2.0/24", ""), ("!192.0.2.5", ""), ("2001:db8::/32", ""), (".lan.test", "")]
    return extra + [(f"10.{i // 256}.{i % 256}.0/24", "") for i in range(count)]


def host_list(url: str, one_by_one: bool) -> RemoteHostList:
    ds, problems = open_dataset(url, option="InternalHosts")
    assert isinstance(ds, RemoteDataset), problems
    if one_by_one:
        ds.cache.store.get_many = None  # type: ignore[attr-defined]
    hosts, _ = check_host_entries(ds, "InternalHosts")
    assert isinstance(hosts, RemoteHostList)
    return hosts


async def measure(hosts: RemoteHostList, clients: int) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    try:
        for family, pattern in CLIENTS.items():
            for phase in ("cold", "warm"):
                took = []
                for i in range(clients):
                    address = pattern.format(i + 1, i + 1)
                    start = time.perf_counter()
                    await ask(lambda a=address, n=i: hosts.matches(a, f"host{n}.example.org"))  # type: ignore[misc]
                    took.append((time.perf_counter() - start) * 1000)
                out[f"{family} {phase}"] = (statistics.median(took), max(took))
    finally:
        await hosts.dataset.cache.close()  # type: ignore[attr-defined]
    return out


def report(name: str, results: dict[str, tuple[float, float]]) -> None:
    for what, (median, worst) in results.items():
        print(f"{name:10} {what:10} median {median:7.2f} ms   worst {worst:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--one-by-one", action="store_true")
    args = parser.parse_args()
    table = rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "hosts.db"
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE hosts (k TEXT PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO hosts VALUES (?, ?)", table)
        conn.commit()
        conn.close()
        hosts = host_list(sqlite_url(db, "hosts"), args.one_by_one)
        report("sqlite3", asyncio.run(measure(hosts, args.clients)))
        pg = start_postgres(Path(tmp) / "pg")
        try:
            pg.execute("CREATE TABLE hosts (k TEXT PRIMARY KEY, v TEXT)")
            pg.execute("GRANT SELECT ON hosts TO dkimd")
            pg.copy_rows("hosts", ("k", "v"), iter(table))
            hosts = host_list(pg.dsn("hosts", "k", "v"), args.one_by_one)
            report("pgsql", asyncio.run(measure(hosts, args.clients)))
        finally:
            pg.cleanup()


if __name__ == "__main__":
    main()
