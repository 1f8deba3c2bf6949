"""KeyTable and SigningTable in SQL through a real session: the session never awaits, the
rows come by a NeedRows request, a store that fails tempfails (On-InternalError) and the
next message after it recovers signs again; two daemons sharing one PostgreSQL see a key
rotated by UPDATE within the cache TTL, and stop signing for a deleted row."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.dns.testdata import TestDnsFile
from dkimd.milter.handler import ConnectionInfo, MilterHandler
from dkimd.session import Runtime, RuntimeHolder, SessionStats, handler_factory
from dkimd.stores.dataset import remote_datasets
from dkimd.stores.lookups import NeedRows
from support.handler import settle
from support.milterwire import macro, pkt
from support.sqlservers import PgServer, start_postgres

HEADERS = [(b"From", b" Alice <alice@example.com>"), (b"To", b" bob@example.net")]
BODY = b"Hello.\r\n"


def new_key() -> tuple[str, str]:
    """(base64 DER private key for the KeyTable, its public key record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode(), "v=DKIM1; k=rsa; p=" + base64.b64encode(pub).decode()


class Mta:
    def __init__(self, config_text: str, records: dict[str, str]) -> None:
        config = parse_config_text(config_text)
        self.holder = RuntimeHolder(Runtime.build(config, TestDnsFile.from_records(records)))
        self.requests: list[object] = []

    async def message(
        self, headers: Sequence[tuple[bytes, bytes]] = HEADERS
    ) -> list[milter.Action]:
        conn = milter.Connection(
            milter.FilterOptions(
                actions=milter.ActionFlag(0x1FF),
                protocol=milter.ProtocolFlag.HDR_LEADSPC | milter.ProtocolFlag.NR_HDR,
            )
        )
        handler: MilterHandler = handler_factory(self.holder, SessionStats())(
            ConnectionInfo(conn, "t")
        )
        stream = pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
        stream += macro(b"C", {"j": "mx.test"}) + pkt(
            b"C", b"client\x004" + struct.pack(">H", 25) + b"127.0.0.1\0"
        )
        stream += macro(b"M", {"i": "QID"}) + pkt(b"M", b"<alice@example.com>\0")
        stream += pkt(b"R", b"<bob@example.net>\0")
        for name, value in headers:
            stream += pkt(b"L", name + b"\0" + value + b"\0")
        stream += pkt(b"N") + pkt(b"B", BODY) + pkt(b"E")
        conn.receive_data(stream)
        out: list[milter.Action] = []
        while True:
            event = conn.next_event()
            if event is milter.NEED_DATA:
                break
            if isinstance(event, milter.OptionNegotiation):
                conn.send(milter.Continue())
                continue
            step = handler.handle(event)
            if isinstance(step, NeedRows):
                self.requests.append(step)
            result = await settle(handler, step)
            if result is None:
                conn.send(milter.Continue())
                continue
            actions = [result] if isinstance(result, milter.Action) else list(result)
            conn.send_many(actions)
            out += actions
            if any(
                isinstance(a, milter.FinalAction) and not isinstance(a, milter.Continue)
                for a in actions
            ):
                break  # a final reply: the MTA sends nothing more for this message
        handler.close()
        return [a for a in out if not isinstance(a, milter.Continue)]

    def run(self) -> list[milter.Action]:
        return asyncio.run(self.message())


def signature(actions: Sequence[milter.Action]) -> bytes | None:
    found = [
        a.value
        for a in actions
        if isinstance(a, milter.InsertHeader | milter.AddHeader) and a.name == b"DKIM-Signature"
    ]
    return found[0] if found else None


def tempfailed(action: milter.Action) -> bool:
    """A temporary failure: TempFail, or a 4xx reply (On-InternalError's tempfail with text)."""
    if isinstance(action, milter.TempFail):
        return True
    return isinstance(action, milter.ReplyCode) and str(action.code).startswith("4")


def tags(sig: bytes) -> dict[str, str]:
    out = {}
    for part in sig.decode().replace("\r\n", "").replace("\t", "").split(";"):
        name, _, value = part.strip().partition("=")
        out[name] = value.strip()
    return out


# -- sqlite3 --


def _qp(path: Path) -> str:
    return str(path).replace("/", "=2F") + "=2F"  # OpenDBX: host is the directory with its /


@pytest.fixture
def sqlite_site(tmp_path: Path) -> tuple[Path, str, dict[str, str]]:
    keydata, record = new_key()
    db = tmp_path / "dkim.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE keytable (id TEXT PRIMARY KEY, domain TEXT, selector TEXT, key TEXT);"
        "CREATE TABLE signing (pattern TEXT PRIMARY KEY, keyname TEXT);"
        "INSERT INTO signing VALUES ('example.com', 'k1');"
    )
    conn.execute("INSERT INTO keytable VALUES ('k1', 'example.com', 'sel1', ?)", (keydata,))
    conn.commit()
    conn.close()
    where = f"dsn:sqlite3://{_qp(tmp_path)}/dkim.db"
    config = (
        "Mode sv\nAuthservID mx.test\nSocket inet:8891@127.0.0.1\n"
        f"KeyTable {where}/table=keytable?keycol=id?datacol=domain,selector,key\n"
        f"SigningTable {where}/table=signing?keycol=pattern?datacol=keyname\n"
        "DataSetCacheTTL 0\nDataSetNegativeCacheTTL 0\n"
    )
    return db, config, {"sel1._domainkey.example.com": record}


def test_signs_from_sqlite_tables(sqlite_site: tuple[Path, str, dict[str, str]]) -> None:
    _, config, records = sqlite_site
    mta = Mta(config, records)
    actions = mta.run()
    sig = signature(actions)
    assert sig is not None, actions
    assert (tags(sig)["d"], tags(sig)["s"]) == ("example.com", "sel1")
    assert isinstance(actions[-1], milter.Accept)
    # The session asked (SigningTable candidates in one round, then the KeyTable entry).
    assert len(mta.requests) >= 1


def test_no_row_no_signature(sqlite_site: tuple[Path, str, dict[str, str]]) -> None:
    db, config, records = sqlite_site
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM signing")
    conn.commit()
    conn.close()
    actions = Mta(config, records).run()
    assert signature(actions) is None
    assert isinstance(actions[-1], milter.Accept)


def test_store_down_tempfails_then_recovers(sqlite_site: tuple[Path, str, dict[str, str]]) -> None:
    db, config, records = sqlite_site
    mta = Mta(config, records)
    assert signature(mta.run()) is not None

    def sql(statement: str) -> None:
        conn = sqlite3.connect(db)
        conn.execute(statement)
        conn.commit()
        conn.close()

    # The table gone: every lookup fails as it would with the server down.
    sql("ALTER TABLE signing RENAME TO signing_away")
    for _ in range(3):
        actions = mta.run()
        assert actions and tempfailed(actions[-1]), actions
    sql("ALTER TABLE signing_away RENAME TO signing")
    assert signature(mta.run()) is not None  # the same runtime, no reload


def test_start_fails_without_the_table(tmp_path: Path) -> None:
    from dkimd.config import ConfigError

    text = (
        "Mode sv\nSocket inet:8891@127.0.0.1\n"
        f"SigningTable dsn:sqlite3://{_qp(tmp_path)}/absent.db/table=s?keycol=k?datacol=v\n"
        f"KeyTable {tmp_path}/keys\n"
    )
    (tmp_path / "keys").write_text("")
    with pytest.raises(ConfigError, match="SigningTable: cannot use data set"):
        parse_config_text(text)
    parse_config_text(text + "SoftStart yes\n")  # starts; every lookup tries again


# -- two daemons, one PostgreSQL --


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    server = start_postgres(tmp_path_factory.mktemp("pg"))
    server.execute(
        "CREATE TABLE keytable (id TEXT PRIMARY KEY, domain TEXT, selector TEXT, key TEXT)",
        "CREATE TABLE signing (pattern TEXT PRIMARY KEY, keyname TEXT)",
        "GRANT SELECT ON keytable, signing TO dkimd",
    )
    yield server
    server.cleanup()


def test_two_daemons_one_postgres_rotation_and_delete(pg: PgServer) -> None:
    key1, record1 = new_key()
    key2, record2 = new_key()
    pg.execute("INSERT INTO signing VALUES ('example.com', 'k')")
    pg.execute("INSERT INTO keytable VALUES ('k', 'example.com', 'old', %s)", params=(key1,))
    ttl = 1
    config = (
        "Mode sv\nAuthservID mx.test\nSocket inet:8891@127.0.0.1\n"
        f"KeyTable {pg.dsn('keytable', 'id', 'domain,selector,key')}\n"
        f"SigningTable {pg.dsn('signing', 'pattern', 'keyname')}\n"
        f"DataSetCacheTTL {ttl}\nDataSetNegativeCacheTTL {ttl}\n"
    )
    records = {"old._domainkey.example.com": record1, "new._domainkey.example.com": record2}
    a, b = Mta(config, records), Mta(config, records)

    async def both() -> tuple[bytes | None, bytes | None]:
        return signature(await a.message()), signature(await b.message())

    loop = asyncio.new_event_loop()
    try:
        first = loop.run_until_complete(both())
        assert [tags(s)["s"] for s in first if s] == ["old", "old"]
        pg.execute("UPDATE keytable SET selector = 'new', key = %s WHERE id = 'k'", params=(key2,))
        time.sleep(ttl + 0.2)
        rotated = loop.run_until_complete(both())
        assert [tags(s)["s"] for s in rotated if s] == ["new", "new"]
        pg.execute("DELETE FROM signing WHERE pattern = 'example.com'")
        time.sleep(ttl + 0.2)
        gone = loop.run_until_complete(both())
        assert gone == (None, None)
    finally:
        for mta in (a, b):
            for dataset in remote_datasets(mta.holder.current.config):
                loop.run_until_complete(dataset.cache.close())
        loop.close()


# -- dkimd check --walk --


def test_check_walk_reports_rows_naming_missing_keys(
    sqlite_site: tuple[Path, str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    from dkimd.cli import check

    db, config, _ = sqlite_site
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO signing VALUES ('example.org', 'nosuchkey')")
    conn.execute("INSERT INTO keytable VALUES ('bad', 'example.net', 'sel', NULL)")
    conn.commit()
    conn.close()
    conf = db.parent / "dkimd.conf"
    conf.write_text(config)
    code = check.main(["-x", str(conf), "--no-postfix", "--walk"])
    out = capsys.readouterr().out
    assert 'SigningTable row "example.org" names key "nosuchkey"' in out
    assert 'KeyTable row "bad"' in out
    assert "SigningTable: 2 rows walked, 1 name a missing key" in out
    assert "KeyTable: 2 rows walked" in out
    assert code == check.EXIT_ERRORS  # rows that fail messages count as errors
