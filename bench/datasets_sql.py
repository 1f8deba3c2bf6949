"""KeyTable/SigningTable in PostgreSQL vs in files: start-up time and messages/s.

    python bench/datasets_sql.py [--rows 1000000] [--domains 10000] [--messages 2000]

Starts a private PostgreSQL (tests/support/sqlservers.py), fills a SigningTable of
`--rows` rows (one per domain, `--domains` of them with a KeyTable entry, the others
naming a key the KeyTable lacks) and a KeyTable of `--domains` entries with inline key
data, then measures:

* start-up: loading a configuration that names both tables (dkimd logs in once and asks
  one indexed query per table; nothing is walked), best of 3;
* messages/s through a real session (in process, one connection per message, signing with
  a 1024-bit RSA key), over `--messages` senders of distinct domains: cold (each domain's
  first message: the rows come from the server) and warm (the same senders again: the
  rows come from the cache), against the same tables as files.

The numbers are for one process on a shared 2-CPU machine; signing dominates a warm run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.dns.testdata import TestDnsFile
from dkimd.milter.handler import ConnectionInfo
from dkimd.session import Runtime, RuntimeHolder, SessionStats, handler_factory
from dkimd.stores.dataset import close_stores
from support.handler import settle
from support.milterwire import macro, pkt
from support.sqlservers import start_postgres

BODY = b"Hello.\r\n"


def message_stream(domain: str) -> bytes:
    stream = pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
    stream += macro(b"C", {"j": "mx.test"})
    stream += pkt(b"C", b"client\x004" + struct.pack(">H", 25) + b"127.0.0.1\0")
    stream += macro(b"M", {"i": "QID"}) + pkt(b"M", f"<a@{domain}>\0".encode())
    stream += pkt(b"R", b"<bob@example.net>\0")
    stream += pkt(b"L", b"From\0 a@" + domain.encode() + b"\0")
    stream += pkt(b"L", b"To\0 bob@example.net\0")
    return stream + pkt(b"N") + pkt(b"B", BODY) + pkt(b"E")


async def one_message(holder: RuntimeHolder, domain: str) -> bool:
    conn = milter.Connection(
        milter.FilterOptions(
            actions=milter.ActionFlag(0x1FF),
            protocol=milter.ProtocolFlag.HDR_LEADSPC | milter.ProtocolFlag.NR_HDR,
        )
    )
    handler = handler_factory(holder, SessionStats())(ConnectionInfo(conn, "bench"))
    conn.receive_data(message_stream(domain))
    signed = False
    while True:
        event = conn.next_event()
        if event is milter.NEED_DATA:
            break
        if isinstance(event, milter.OptionNegotiation):
            conn.send(milter.Continue())
            continue
        result = await settle(handler, handler.handle(event))
        if result is None:
            conn.send(milter.Continue())
            continue
        actions = [result] if isinstance(result, milter.Action) else list(result)
        signed = signed or any(
            isinstance(a, milter.InsertHeader) and a.name == b"DKIM-Signature" for a in actions
        )
        conn.send_many(actions)
    handler.close()
    return signed


async def rate(holder: RuntimeHolder, domains: list[str]) -> float:
    started = time.perf_counter()
    for domain in domains:
        if not await one_message(holder, domain):
            raise SystemExit(f"{domain}: not signed")
    return len(domains) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--domains", type=int, default=10_000)
    ap.add_argument("--messages", type=int, default=2000)
    args = ap.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    keydata = base64.b64encode(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    ).decode()
    pub = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    domains = [f"d{i}.example" for i in range(args.domains)]

    with tempfile.TemporaryDirectory(prefix="dkimd-bench-") as tmp_name:
        tmp = Path(tmp_name)
        pg = start_postgres(tmp / "pg")
        try:
            pg.execute(
                "CREATE TABLE keytable (id TEXT PRIMARY KEY, domain TEXT, selector TEXT, key TEXT)",
                "CREATE TABLE signing (pattern TEXT PRIMARY KEY, keyname TEXT)",
                "GRANT SELECT ON keytable, signing TO dkimd",
            )
            t0 = time.perf_counter()
            pg.copy_rows(
                "signing",
                ("pattern", "keyname"),
                ((f"d{i}.example", f"d{i}.example") for i in range(args.rows)),
            )
            pg.copy_rows(
                "keytable",
                ("id", "domain", "selector", "key"),
                ((d, d, "sel", keydata) for d in domains),
            )
            pg.execute("ANALYZE signing", "ANALYZE keytable")
            fill = time.perf_counter() - t0

            base = "Mode s\nSocket inet:8891@127.0.0.1\nRequireSafeKeys no\n"
            sql_conf = base + (
                f"KeyTable {pg.dsn('keytable', 'id', 'domain,selector,key')}\n"
                f"SigningTable {pg.dsn('signing', 'pattern', 'keyname')}\n"
            )
            (tmp / "keys").write_text(
                "".join(f"{d} {d}:sel:{keydata}\n" for d in domains), encoding="ascii"
            )
            (tmp / "signing").write_text("".join(f"{d} {d}\n" for d in domains))
            file_conf = base + f"KeyTable file:{tmp}/keys\nSigningTable file:{tmp}/signing\n"

            starts = []
            for _ in range(3):
                t0 = time.perf_counter()
                parse_config_text(sql_conf)
                starts.append(time.perf_counter() - t0)
            file_starts = []
            for _ in range(3):
                t0 = time.perf_counter()
                parse_config_text(file_conf)
                file_starts.append(time.perf_counter() - t0)

            records = {f"sel._domainkey.{d}": f"v=DKIM1; p={pub}" for d in domains}
            sample = domains[: args.messages]

            async def measure(conf: str) -> tuple[float, float]:
                runtime = Runtime.build(parse_config_text(conf), TestDnsFile.from_records(records))
                holder = RuntimeHolder(runtime)
                cold = await rate(holder, sample)
                warm = await rate(holder, sample)
                await close_stores(runtime.config)
                return cold, warm

            sql_cold, sql_warm = asyncio.run(measure(sql_conf))
            file_cold, file_warm = asyncio.run(measure(file_conf))
        finally:
            pg.cleanup()

    print(f"SigningTable rows: {args.rows}, KeyTable rows: {args.domains} (filled in {fill:.1f}s)")
    print(
        f"start-up (config load), best of 3: PostgreSQL {min(starts) * 1000:.0f} ms "
        f"(median {statistics.median(starts) * 1000:.0f} ms); "
        f"files of {args.domains} domains {min(file_starts) * 1000:.0f} ms"
    )
    print(f"messages/s over {len(sample)} distinct sender domains (1024-bit RSA signing):")
    print(f"  {'tables':<12}{'cold':>10}{'warm':>10}")
    print(f"  {'PostgreSQL':<12}{sql_cold:>10.0f}{sql_warm:>10.0f}")
    print(f"  {'files':<12}{file_cold:>10.0f}{file_warm:>10.0f}")


if __name__ == "__main__":
    main()
