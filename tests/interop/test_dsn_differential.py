"""OpenDKIM and dkimd on the same `dsn:sqlite3` KeyTable and SigningTable: same decisions.

Debian's OpenDKIM 2.11 is built with OpenDBX (USE_ODBX); libopendbx1-sqlite3 is its sqlite3
back end. OpenDBX opens the file named by host and database side by side, and OpenDKIM does
not decode `=2F` in the host (docs/differences.md), so the only paths it can use are
relative to its working directory: `dsn:sqlite3://dk/im.db/...` is ./dkim.db. Both filters
run in the same directory here and read the same file through the same DSN text.

For each sender: OpenDKIM's reply and signature (d=, s=) or none, against dkimd's.

The same comparison on a server back end: a private PostgreSQL (tests/support/sqlservers.py)
read by OpenDKIM through OpenDBX's pgsql back end (libopendbx1-pgsql) and by dkimd through
psycopg, with the same `dsn:pgsql://user:password@port+host/...` text.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.dns.testdata import TestDnsFile
from dkimd.milter.handler import ConnectionInfo
from dkimd.session import Runtime, RuntimeHolder, SessionStats, handler_factory
from dkimd.stores.dataset import close_stores
from support.handler import settle
from support.milterwire import macro, pkt
from support.opendkim import OpenDKIM, genkey, milter_transaction
from support.sqlservers import PgServer, start_postgres
from support.tools import require, unavailable

SQLITE_BACKEND = "/usr/lib/opendbx/libsqlite3backend.so"
PGSQL_BACKEND = "/usr/lib/opendbx/libpgsqlbackend.so"

SENDERS = [
    "a@example.com",  # exact domain row
    "user@example.net",  # user@domain row before the domain row
    "other@example.net",  # the domain row
    "b@mail.sub.example.org",  # ".example.org" parent row
    "c@EXAMPLE.COM",  # case
    "x@unlisted.test",  # no row
]


def _tags(value: str) -> dict[str, str]:
    out = {}
    for part in value.replace("\n", "").replace("\t", "").replace(" ", "").split(";"):
        name, _, v = part.partition("=")
        out[name] = v
    return out


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, str]]]:
    require("opendkim")
    require("miltertest")
    if not os.path.exists(SQLITE_BACKEND):
        unavailable("OpenDBX's sqlite3 back end is missing: apt-get install libopendbx1-sqlite3")
    monkeypatch.chdir(tmp_path)  # both filters resolve dkim.db here
    k1 = genkey(tmp_path / "k1", "example.com", "one", bits=1024)
    k2 = genkey(tmp_path / "k2", "example.net", "two", bits=1024)
    k3 = genkey(tmp_path / "k3", "example.org", "three", bits=1024)
    conn = sqlite3.connect(tmp_path / "dkim.db")
    conn.executescript(
        "CREATE TABLE keytable (id TEXT, domain TEXT, selector TEXT, key TEXT);"
        "CREATE TABLE signing (pattern TEXT, keyname TEXT);"
    )
    conn.executemany(
        "INSERT INTO keytable VALUES (?, ?, ?, ?)",
        [
            ("k1", "example.com", "one", str(k1.private_key)),
            ("k2", "example.net", "two", str(k2.private_key)),
            ("k3", "example.org", "three", str(k3.private_key)),
        ],
    )
    conn.executemany(
        "INSERT INTO signing VALUES (?, ?)",
        [
            ("example.com", "k1"),
            ("user@example.net", "k2"),
            ("example.net", "k1"),
            (".example.org", "k3"),
        ],
    )
    conn.commit()
    conn.close()
    records = {**k1.records, **k2.records, **k3.records}
    yield "dsn:sqlite3://dk/im.db", records


def _dkimd_sign(config_text: str, records: dict[str, str], sender: str) -> str | None:
    holder = RuntimeHolder(
        Runtime.build(parse_config_text(config_text), TestDnsFile.from_records(records))
    )
    return asyncio.run(_sign(holder, sender))


async def _sign(holder: RuntimeHolder, sender: str) -> str | None:
    """One message from `sender` through a milter session; its DKIM-Signature or None."""
    conn = milter.Connection(
        milter.FilterOptions(
            actions=milter.ActionFlag(0x1FF),
            protocol=milter.ProtocolFlag.HDR_LEADSPC | milter.ProtocolFlag.NR_HDR,
        )
    )
    handler = handler_factory(holder, SessionStats())(ConnectionInfo(conn, "t"))
    stream = pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
    stream += macro(b"C", {"j": "mx.test"})
    stream += pkt(b"C", b"localhost\x004" + struct.pack(">H", 25) + b"127.0.0.1\0")
    stream += pkt(b"M", f"<{sender}>\0".encode()) + pkt(b"R", b"<r@example.net>\0")
    stream += pkt(b"L", b"From\0 " + sender.encode() + b"\0")
    stream += pkt(b"L", b"To\0 r@example.net\0")
    stream += pkt(b"N") + pkt(b"B", b"Hello.\r\n") + pkt(b"E")
    conn.receive_data(stream)
    found: str | None = None
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
        for a in actions:
            is_header = isinstance(a, milter.InsertHeader | milter.AddHeader)
            if is_header and a.name == b"DKIM-Signature":
                found = a.value.decode()
        conn.send_many(actions)
    handler.close()
    return found


def test_same_signing_decisions_as_opendkim(
    site: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    base, records = site
    kt = f"{base}/table=keytable?keycol=id?datacol=domain,selector,key"
    st = f"{base}/table=signing?keycol=pattern?datacol=keyname"
    theirs: dict[str, tuple[str, str] | None] = {}
    with OpenDKIM(
        tmp_path / "od", dns_records=records, options={"KeyTable": kt, "SigningTable": st}
    ) as od:
        for sender in SENDERS:
            message = f"From: {sender}\r\nTo: r@example.net\r\n\r\nHello.\r\n".encode()
            result = milter_transaction(od.socket_spec, message, mail_from=sender)
            sigs = result.headers("DKIM-Signature")
            theirs[sender] = (_tags(sigs[0])["d"], _tags(sigs[0])["s"]) if sigs else None
    config = (
        "Mode sv\nSocket inet:8891@127.0.0.1\nRequireSafeKeys no\n"
        f"KeyTable {kt}\nSigningTable {st}\n"
    )
    ours: dict[str, tuple[str, str] | None] = {}
    for sender in SENDERS:
        sig = _dkimd_sign(config, records, sender)
        ours[sender] = (_tags(sig)["d"], _tags(sig)["s"]) if sig else None
    assert theirs["a@example.com"] == ("example.com", "one")  # OpenDKIM works this way
    assert ours == theirs


# -- PostgreSQL: a server back end --

KEY_ROWS = [
    ("k1", "example.com", "one"),
    ("k2", "example.net", "two"),
    ("k3", "example.org", "three"),
]
SIGNING_ROWS = [
    ("example.com", "k1"),
    ("user@example.net", "k2"),
    ("example.net", "k1"),
    (".example.org", "k3"),
]


@pytest.fixture
def pg_site(tmp_path: Path) -> Iterator[tuple[PgServer, dict[str, str]]]:
    require("opendkim")
    require("miltertest")
    if not os.path.exists(PGSQL_BACKEND):
        unavailable("OpenDBX's pgsql back end is missing: apt-get install libopendbx1-pgsql")
    server = start_postgres(tmp_path / "pg")
    try:
        server.execute(
            "CREATE TABLE keytable (id TEXT, domain TEXT, selector TEXT, key TEXT)",
            "CREATE TABLE signing (pattern TEXT, keyname TEXT)",
            "GRANT SELECT ON keytable, signing TO dkimd",
        )
        records: dict[str, str] = {}
        for name, domain, selector in KEY_ROWS:
            key = genkey(tmp_path / name, domain, selector, bits=1024)
            records.update(key.records)
            server.execute(
                "INSERT INTO keytable VALUES (%s, %s, %s, %s)",
                params=(name, domain, selector, str(key.private_key)),
            )
        for pattern, name in SIGNING_ROWS:
            server.execute("INSERT INTO signing VALUES (%s, %s)", params=(pattern, name))
        yield server, records
    finally:
        server.cleanup()


def test_same_signing_decisions_as_opendkim_on_postgres(
    pg_site: tuple[PgServer, dict[str, str]], tmp_path: Path
) -> None:
    server, records = pg_site
    kt = server.dsn("keytable", "id", "domain,selector,key")
    st = server.dsn("signing", "pattern", "keyname")
    theirs: dict[str, tuple[str, str] | None] = {}
    with OpenDKIM(
        tmp_path / "od", dns_records=records, options={"KeyTable": kt, "SigningTable": st}
    ) as od:
        for sender in SENDERS:
            message = f"From: {sender}\r\nTo: r@example.net\r\n\r\nHello.\r\n".encode()
            result = milter_transaction(od.socket_spec, message, mail_from=sender)
            sigs = result.headers("DKIM-Signature")
            theirs[sender] = (_tags(sigs[0])["d"], _tags(sigs[0])["s"]) if sigs else None
    config = (
        "Mode sv\nSocket inet:8891@127.0.0.1\nRequireSafeKeys no\n"
        f"KeyTable {kt}\nSigningTable {st}\n"
    )
    parsed = parse_config_text(config)
    holder = RuntimeHolder(Runtime.build(parsed, TestDnsFile.from_records(records)))

    async def sign_all() -> dict[str, tuple[str, str] | None]:
        # One loop for every message: the psycopg pool lives on it, and is closed on it.
        try:
            signed = {sender: await _sign(holder, sender) for sender in SENDERS}
        finally:
            await close_stores(parsed)
        return {s: (_tags(v)["d"], _tags(v)["s"]) if v else None for s, v in signed.items()}

    ours = asyncio.run(sign_all())
    # OpenDKIM works through OpenDBX's pgsql back end: the rows decide its signatures.
    assert theirs["a@example.com"] == ("example.com", "one")
    assert theirs["user@example.net"] == ("example.net", "two")
    assert ours == theirs
