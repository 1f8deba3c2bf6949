"""Host lists, per-message lists and list options in a remote store (issue 16).

The host lists must decide exactly as the file lists do (those follow OpenDKIM's
dkimf_checkhost/dkimf_checkip, checked against opendkim 2.11 in tests/unit/config): the
first part compares both on the same entries for a grid of clients. Then each option goes
through a real session over the milter wire with an SQLite `dsn:`: a match, a miss, a
negated entry, a CIDR entry where the option has them, and a store that is down
(On-InternalError: tempfail). The end repeats the host lists with PostgreSQL, stopped and
started again under the same runtime.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from dkimd import milter
from dkimd.config import ConfigError, parse_config_text
from dkimd.config.datasets import open_dataset
from dkimd.config.hosts import HostList, check_host_entries
from dkimd.stores.base import StoreError
from dkimd.stores.dataset import RemoteDataset
from dkimd.stores.hostlist import RemoteHostList, host_list_keys
from support.remote_lists import (
    Mta,
    ask,
    base_config,
    key_file,
    sqlite_exec,
    sqlite_table,
    sqlite_url,
)
from support.sqlservers import PgServer, start_postgres

# -- the host-list keys, and the same decisions as a file --------------------------------

ENTRIES = [
    "192.0.2.0/24",
    "!192.0.2.5",
    "[198.51.100.7]",
    "10.0.0.0/8",
    "!10.9.0.0/16",
    "10.9.8.7",
    "2001:db8::/32",
    "!2001:db8:dead::/48",
    "::1",
    "[2001:db8:beef::1]",
    "::ffff:203.0.113.0/120",
    "mx.example.org",
    ".example.net",
    "!bad.example.net",
    "!.lab.example.net",
    "ok.lab.example.net",
]
ADDRESSES = [
    "192.0.2.1",
    "192.0.2.5",
    "192.0.3.1",
    "198.51.100.7",
    "198.51.100.8",
    "10.1.1.1",
    "10.9.1.1",
    "10.9.8.7",
    "2001:db8::1",
    "2001:DB8:dead::1",
    "::1",
    "::2",
    "2001:db8:beef::1",
    "::ffff:203.0.113.9",
    "2001:db9::1",
    "203.0.113.9",
]
HOSTNAMES = [
    None,
    "mx.example.org",
    "MX.Example.ORG",
    "a.example.net",
    "bad.example.net",
    "x.lab.example.net",
    "ok.lab.example.net",
    "other.test",
]


def test_candidate_keys_in_opendkim_order() -> None:
    keys = host_list_keys("192.0.2.5", "mx.a.example")
    names = ["!mx.a.example", "mx.a.example", "!.a.example", ".a.example", "!.example"]
    assert keys[:6] == [*names, ".example"]
    assert keys[6:10] == ["!192.0.2.5", "192.0.2.5", "![192.0.2.5]", "[192.0.2.5]"]
    assert keys[10:14] == ["!192.0.2.5/32", "192.0.2.5/32", "![192.0.2.5]/32", "[192.0.2.5]/32"]
    assert keys[-4:] == ["!0.0.0.0/0", "0.0.0.0/0", "![0.0.0.0]/0", "[0.0.0.0]/0"]
    assert "192.0.2.0/24" in keys and len(keys) == 6 + 4 + 33 * 4
    v6 = host_list_keys("2001:DB8::1", None)
    assert v6[:2] == ["!2001:db8::1", "2001:db8::1"] and len(v6) == 4 + 129 * 4
    assert "2001:db8::/32" in v6 and "::ffff:0.0.0.0/96" not in v6
    assert host_list_keys(None, None) == []


@pytest.fixture
def hosts_db(tmp_path: Path) -> Path:
    db = tmp_path / "lists.db"
    sqlite_table(db, "hosts", [(entry, "") for entry in ENTRIES])
    return db


def remote_hosts(url: str, option: str = "InternalHosts") -> RemoteHostList:
    ds, problems = open_dataset(url, option=option)
    assert isinstance(ds, RemoteDataset), problems
    hosts, _ = check_host_entries(ds, option)
    assert isinstance(hosts, RemoteHostList)
    return hosts


def test_remote_host_list_decides_as_the_file_list(hosts_db: Path) -> None:
    ds, _ = open_dataset("csl:" + ",".join(ENTRIES))
    assert ds is not None
    local, _ = check_host_entries(ds, "InternalHosts")
    remote = remote_hosts(sqlite_url(hosts_db, "hosts"))

    async def compare() -> list[tuple[str, str | None, bool]]:
        decided = []
        for address in ADDRESSES:
            for hostname in HOSTNAMES:
                got, rounds = await ask(partial(remote.matches, address, hostname))
                assert rounds <= 1  # every key this client can need, in one round
                assert got == local.matches(address, hostname), (address, hostname)
                decided.append((address, hostname, got))
        await remote.dataset.cache.close()  # type: ignore[attr-defined]
        return decided

    decided = asyncio.run(compare())
    yes = {(a, h) for a, h, got in decided if got}
    # Not a trivial agreement: both answers occur, for the reasons the entries give.
    assert ("192.0.2.1", None) in yes and ("192.0.2.5", None) not in yes  # CIDR, negation
    assert ("10.9.8.7", None) in yes and ("10.9.1.1", None) not in yes  # /32 before !/16
    assert ("2001:db8::1", None) in yes and ("2001:DB8:dead::1", None) not in yes
    assert ("::ffff:203.0.113.9", None) in yes and ("203.0.113.9", None) not in yes
    assert ("198.51.100.7", None) in yes  # the bracketed form
    assert ("203.0.113.9", "MX.Example.ORG") in yes  # the name, case-blind
    assert ("203.0.113.9", "bad.example.net") not in yes
    assert ("203.0.113.9", "x.lab.example.net") not in yes  # "!.lab" before ".example.net"
    assert ("203.0.113.9", "ok.lab.example.net") in yes
    assert ("192.0.2.1", "bad.example.net") in yes  # a "!" name leaves the address


def test_second_ask_is_answered_from_the_cache(hosts_db: Path) -> None:
    remote = remote_hosts(sqlite_url(hosts_db, "hosts"))

    async def twice() -> tuple[int, int]:
        _, cold = await ask(lambda: remote.matches("192.0.2.1", "mx.example.org"))
        _, warm = await ask(lambda: remote.matches("192.0.2.1", "mx.example.org"))
        await remote.dataset.cache.close()  # type: ignore[attr-defined]
        return cold, warm

    assert asyncio.run(twice()) == (1, 0)


def test_store_down_is_an_error_not_a_miss(hosts_db: Path) -> None:
    remote = remote_hosts(sqlite_url(hosts_db, "hosts"))
    sqlite_exec(hosts_db, "ALTER TABLE hosts RENAME TO gone")

    async def down() -> None:
        try:
            await ask(lambda: remote.matches("192.0.2.1", None))
        finally:
            await remote.dataset.cache.close()  # type: ignore[attr-defined]

    with pytest.raises(StoreError):
        asyncio.run(down())


def test_file_host_lists_unchanged() -> None:
    assert not isinstance(HostList.default_internal(), RemoteHostList)


# -- each option in a session, SQLite ------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, str]:
    db = tmp_path / "lists.db"
    sqlite_table(db, "hosts", [])
    return db, base_config(tmp_path)


def test_peerlist(site: tuple[Path, str]) -> None:
    db, config = site
    sqlite_table(db, "peers", [("192.0.2.0/24", ""), ("!192.0.2.5", ""), (".peers.example", "")])
    mta = Mta(config + f"PeerList {sqlite_url(db, 'peers')}\n")
    cidr = mta.run("192.0.2.7", "x.outside.example")
    assert cidr.stage == "C" and isinstance(cidr.final, milter.Accept), cidr
    by_name = mta.run("203.0.113.1", "mx.peers.example")
    assert by_name.stage == "C" and isinstance(by_name.final, milter.Accept)
    negated = mta.run("192.0.2.5", "x.outside.example")
    assert negated.stage == "EOM" and not negated.signed  # processed (verified)
    miss = mta.run("198.51.100.1", "x.outside.example")
    assert miss.stage == "EOM"
    sqlite_exec(db, "ALTER TABLE peers RENAME TO gone")
    down = mta.run("198.51.100.1", "x.outside.example")
    assert down.stage == "C" and down.tempfailed, down


def test_internal_hosts(site: tuple[Path, str]) -> None:
    db, config = site
    rows = [("192.0.2.0/24", ""), ("!192.0.2.5", ""), ("2001:db8::/32", ""), (".lan.example", "")]
    sqlite_table(db, "internal", rows)
    mta = Mta(config + f"InternalHosts {sqlite_url(db, 'internal')}\n")
    cidr = mta.run("192.0.2.9", "unknown")
    assert cidr.signed and cidr.requests == 1, cidr  # the client's keys: one round
    assert mta.run("2001:db8::5", "unknown").signed
    assert mta.run("203.0.113.1", "pc.lan.example").signed
    assert not mta.run("192.0.2.5", "unknown").signed  # "!192.0.2.5" before the /24
    miss = mta.run("127.0.0.1", "localhost")  # the default list is replaced
    assert not miss.signed and isinstance(miss.final, milter.Accept)
    sqlite_exec(db, "ALTER TABLE internal RENAME TO gone")
    down = mta.run("192.0.2.9", "unknown")
    assert down.stage == "EOH" and down.tempfailed, down


def test_external_ignore_list(site: tuple[Path, str], caplog: pytest.LogCaptureFixture) -> None:
    db, config = site
    sqlite_table(db, "ignore", [("198.51.100.0/24", ""), ("!198.51.100.66", "")])
    mta = Mta(config + f"LogWhy yes\nExternalIgnoreList {sqlite_url(db, 'ignore')}\n")
    claim = "tried to send mail as example.com"
    with caplog.at_level(logging.INFO):
        listed = mta.run("198.51.100.9", "relay.example")
    assert not listed.signed and claim not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        negated = mta.run("198.51.100.66", "relay.example")
    assert not negated.signed and claim in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        miss = mta.run("203.0.113.1", "relay.example")
    assert not miss.signed and claim in caplog.text
    sqlite_exec(db, "ALTER TABLE ignore RENAME TO gone")
    assert mta.run("198.51.100.9", "relay.example").tempfailed


def test_macro_list_read_at_load(site: tuple[Path, str]) -> None:
    db, config = site
    sqlite_table(db, "macros", [("{daemon_name}", "ORIG|SUB"), ("{auth_type}", "")])
    text = config + f"MacroList {sqlite_url(db, 'macros')}\n"
    mta = Mta(text)
    outside = ("198.51.100.9", "relay.example")
    assert mta.run(*outside, eoh_macros={"{daemon_name}": "SUB"}).signed
    assert not mta.run(*outside, eoh_macros={"{daemon_name}": "MX"}).signed
    assert mta.run(*outside, eoh_macros={"{auth_type}": "PLAIN"}).signed  # any value
    assert not mta.run(*outside).signed
    # Read at load, as OpenDKIM's dkimf_db_mkarray: a new row counts from the next load.
    sqlite_table(db, "macros", [("{client_name}", "trusted")])
    assert not mta.run(*outside, eoh_macros={"{client_name}": "trusted"}).signed
    assert Mta(text).run(*outside, eoh_macros={"{client_name}": "trusted"}).signed
    sqlite_exec(db, "ALTER TABLE macros RENAME TO gone")
    with pytest.raises(ConfigError, match="MacroList: cannot read data set"):
        parse_config_text(text)
    soft = parse_config_text(text + "SoftStart yes\n")
    assert soft.macro_list == ()
    assert any("MacroList" in p.message for p in soft.warnings)


def test_a_list_read_at_load_shows_its_store_without_the_password(tmp_path: Path) -> None:
    db = tmp_path / "macros.db"
    sqlite_table(db, "macros", [("{daemon_name}", "")])
    # sqlite3 ignores a login, but the URL may carry one as any dsn: does.
    text = sqlite_url(db, "macros").replace("sqlite3://", "sqlite3://dkim:S3cret-Pw@")
    dataset, problems = open_dataset(text, option="MacroList")
    assert problems == [] and dataset is not None
    assert [e.key for e in dataset.entries] == ["{daemon_name}"]
    assert "S3cret" not in dataset.describe() and "S3cret" not in repr(dataset)
    assert dataset.describe().startswith("dsn:sqlite3://dkim:***@")


def test_dont_sign_mail_to(site: tuple[Path, str]) -> None:
    db, config = site
    sqlite_table(db, "nosign", [("carol@example.net", "")])
    mta = Mta(config + f"DontSignMailTo {sqlite_url(db, 'nosign')}\n")
    assert mta.run(recipients=["bob@example.net"]).signed
    many = [f"user{i}@example.net" for i in range(12)] + ["Carol@Example.NET"]
    hit = mta.run(recipients=many)
    assert hit.stage == "EOH" and isinstance(hit.final, milter.Accept) and not hit.signed
    assert hit.requests == 1  # thirteen recipients, one round
    sqlite_exec(db, "ALTER TABLE nosign RENAME TO gone")
    assert mta.run(recipients=["bob@example.net"]).tempfailed
    # Mail that is only verified never asks DontSignMailTo: the outage does not touch it.
    inbound = mta.run("198.51.100.9", "relay.example", recipients=["bob@example.net"])
    assert inbound.stage == "EOM" and isinstance(inbound.final, milter.Accept), inbound


def test_exempt_domains(site: tuple[Path, str]) -> None:
    db, config = site
    sqlite_table(db, "exempt", [("example.org", "")])
    mta = Mta(config + f"ExemptDomains {sqlite_url(db, 'exempt')}\n")
    assert mta.run(sender="alice@example.com").signed
    exempt = mta.run("198.51.100.9", "relay.example", sender="x@EXAMPLE.org")
    assert exempt.stage == "EOH" and exempt.actions == [milter.Accept()], exempt
    sqlite_exec(db, "ALTER TABLE exempt RENAME TO gone")
    assert mta.run(sender="alice@example.com").tempfailed


def test_mta_names(site: tuple[Path, str]) -> None:
    db, config = site
    # MTA is case-blind: its table holds the names in lower case (docs/datasets.md)
    sqlite_table(db, "mtas", [("orig", "")])
    mta = Mta(config + f"MTA {sqlite_url(db, 'mtas')}\n")
    outside = ("198.51.100.9", "relay.example")
    assert mta.run(*outside, eoh_macros={"{daemon_name}": "ORIG"}).signed
    assert not mta.run(*outside, eoh_macros={"{daemon_name}": "MX"}).signed
    sqlite_exec(db, "ALTER TABLE mtas RENAME TO gone")
    assert mta.run(*outside, eoh_macros={"{daemon_name}": "ORIG"}).tempfailed


def test_body_length_db(site: tuple[Path, str]) -> None:
    db, config = site
    sqlite_table(db, "bldb", [("*@.lists.example", "")])
    mta = Mta(config + f"BodyLengthDB {sqlite_url(db, 'bldb')}\n")

    def l_tag(outcome: object) -> bool:
        sigs = [
            a.value
            for a in outcome.actions  # type: ignore[attr-defined]
            if isinstance(a, milter.InsertHeader | milter.AddHeader) and a.name == b"DKIM-Signature"
        ]
        assert sigs
        return b" l=" in sigs[0] or b";l=" in sigs[0].replace(b" ", b"")

    assert l_tag(mta.run(recipients=["x@dev.lists.example"]))
    assert not l_tag(mta.run(recipients=["x@example.net"]))
    sqlite_exec(db, "ALTER TABLE bldb RENAME TO gone")
    assert mta.run(recipients=["x@dev.lists.example"]).tempfailed


def test_resign_mail_to(site: tuple[Path, str]) -> None:
    db, config = site
    sqlite_table(db, "resign", [(".lists.example", "")])
    mta = Mta(config + f"ResignMailTo {sqlite_url(db, 'resign')}\nResignAll yes\n")
    outside = ("198.51.100.9", "relay.example")
    assert mta.run(*outside, recipients=["a@example.net", "x@dev.lists.example"]).signed
    assert not mta.run(*outside, recipients=["a@example.net"]).signed
    sqlite_exec(db, "ALTER TABLE resign RENAME TO gone")
    assert mta.run(*outside, recipients=["x@dev.lists.example"]).tempfailed


def test_options_that_stay_refused(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    sqlite_table(db, "t", [])
    text = base_config(tmp_path) + f"TestDNSData {sqlite_url(db, 't')}\n"
    with pytest.raises(ConfigError, match="cannot be used for TestDNSData"):
        parse_config_text(text)


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    server = start_postgres(tmp_path_factory.mktemp("pg"))
    server.execute(
        "CREATE TABLE hosts (k TEXT PRIMARY KEY, v TEXT)",
        "CREATE TABLE nosign (k TEXT PRIMARY KEY, v TEXT)",
        "GRANT SELECT ON hosts, nosign TO dkimd",
        "INSERT INTO hosts VALUES ('192.0.2.0/24', ''), ('!192.0.2.5', ''),"
        " ('2001:db8::/32', ''), ('.lan.example', '')",
        "INSERT INTO nosign VALUES ('carol@example.net', '')",
    )
    yield server
    server.cleanup()


def test_postgres_host_lists_and_outage(pg: PgServer, tmp_path: Path) -> None:
    config = (
        base_config(tmp_path)
        + f"InternalHosts {pg.dsn('hosts', 'k', 'v')}\n"
        + f"PeerList {pg.dsn('hosts', 'k', 'v')}\n"
        + f"DontSignMailTo {pg.dsn('nosign', 'k', 'v')}\n"
        + "DataSetTimeout 2\n"
    )
    # PeerList and InternalHosts name the same table: a peer never gets to be signed,
    # so the list is both; what differs is where the answer comes.
    mta = Mta(config)

    async def scenario() -> None:
        try:
            cidr = await mta.message("192.0.2.7", "unknown")
            assert cidr.stage == "C" and isinstance(cidr.final, milter.Accept)
            v6 = await mta.message("2001:db8::7", "unknown")
            assert v6.stage == "C"
            negated = await mta.message("192.0.2.5", "unknown")
            assert negated.stage == "EOM" and not negated.signed
            miss = await mta.message("198.51.100.1", "relay.example")
            assert miss.stage == "EOM" and not miss.signed
            pg.stop()
            down = await mta.message("198.51.100.1", "relay.example")
            assert down.stage == "C" and down.tempfailed, down
            pg.start()
            back = await mta.message("198.51.100.1", "relay.example")
            assert back.stage == "EOM"  # the same runtime recovers by itself
        finally:
            await mta.close()

    asyncio.run(scenario())


def test_postgres_per_message_list(pg: PgServer, tmp_path: Path) -> None:
    config = (
        base_config(tmp_path)
        + f"InternalHosts {pg.dsn('hosts', 'k', 'v')}\n"
        + f"DontSignMailTo {pg.dsn('nosign', 'k', 'v')}\n"
    )
    mta = Mta(config)

    async def scenario() -> None:
        try:
            signed = await mta.message("192.0.2.9", "unknown", recipients=["bob@example.net"])
            assert signed.signed
            skipped = await mta.message("192.0.2.9", "unknown", recipients=["carol@example.net"])
            assert skipped.stage == "EOH" and not skipped.signed
            outside = await mta.message("198.51.100.1", "x.example", recipients=["b@example.net"])
            assert not outside.signed
        finally:
            await mta.close()

    asyncio.run(scenario())


def test_arc_seal_hosts_and_mail_to(tmp_path: Path) -> None:
    db = tmp_path / "lists.db"
    sqlite_table(db, "seal", [("192.0.2.0/24", ""), ("!192.0.2.5", "")])
    sqlite_table(db, "sealto", [("lists.example", "")])
    key = key_file(tmp_path)
    (tmp_path / "keys").write_text(f"arc example.com:arc:{key}\n")
    config = (
        "Mode v\nAuthservID mx.test\nSocket inet:21000@127.0.0.1\n"
        f"KeyTable {tmp_path / 'keys'}\nArcMode s\nArcKey arc\n"
        f"ArcSealHosts {sqlite_url(db, 'seal')}\nArcSealMailTo {sqlite_url(db, 'sealto')}\n"
        "DataSetCacheTTL 0\nDataSetNegativeCacheTTL 0\n"
    )
    mta = Mta(config)

    def sealed(outcome: object) -> bool:
        actions = outcome.actions  # type: ignore[attr-defined]
        return any(getattr(a, "name", None) == b"ARC-Seal" for a in actions)

    listed = mta.run("192.0.2.9", "relay.example")
    assert sealed(listed) and listed.requests == 1, listed  # both lists in one round
    assert not sealed(mta.run("192.0.2.5", "relay.example"))  # negated
    assert not sealed(mta.run("198.51.100.1", "relay.example"))  # miss
    assert sealed(mta.run("198.51.100.1", "relay.example", recipients=["x@lists.example"]))
    sqlite_exec(db, "ALTER TABLE seal RENAME TO gone")
    assert mta.run("192.0.2.9", "relay.example").tempfailed


def test_arc_key_in_a_remote_key_table(tmp_path: Path) -> None:
    # ArcKey's entry is read at end-of-message: it must have been fetched with the
    # message's other rows (a load-time check or an end-of-message lookup has none).
    db = tmp_path / "keys.db"
    key = key_file(tmp_path)
    sqlite_table(
        db, "keys", [("arc", f"example.com:arc:{key}"), ("dkim", f"example.com:sel:{key}")]
    )
    (tmp_path / "signing").write_text("*@example.com dkim\n")
    config = (
        "Mode sv\nAuthservID mx.test\nSocket inet:21000@127.0.0.1\n"
        f"KeyTable {sqlite_url(db, 'keys')}\nSigningTable refile:{tmp_path / 'signing'}\n"
        "ArcMode s\nArcKey arc\nDataSetCacheTTL 0\nDataSetNegativeCacheTTL 0\n"
    )
    mta = Mta(config)  # the load does not look the entry up
    outcome = mta.run()
    seals = [a.value for a in outcome.actions if getattr(a, "name", None) == b"ARC-Seal"]
    assert outcome.signed and len(seals) == 1, outcome
    assert b"s=arc" in seals[0]  # ArcKey's selector, not the DKIM key's "sel"
    sqlite_exec(db, "ALTER TABLE keys RENAME TO gone")
    assert mta.run().tempfailed  # On-InternalError, not an internal error's traceback


def test_arc_key_store_down_at_end_of_message_is_no_internal_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Only ArcKey's entry is in the store (verify mode): its failure shows at end-of-message,
    # where it is the On-InternalError action with the outage logged once, no traceback.
    db = tmp_path / "keys.db"
    sqlite_table(db, "keys", [("arc", f"example.com:arc:{key_file(tmp_path)}")])
    config = (
        "Mode v\nAuthservID mx.test\nSocket inet:21000@127.0.0.1\n"
        f"KeyTable {sqlite_url(db, 'keys')}\nArcMode s\nArcKey arc\n"
        "DataSetCacheTTL 0\nDataSetNegativeCacheTTL 0\n"
    )
    mta = Mta(config)
    outside = ("198.51.100.1", "relay.example")
    assert any(getattr(a, "name", None) == b"ARC-Seal" for a in mta.run(*outside).actions)
    sqlite_exec(db, "ALTER TABLE keys RENAME TO gone")
    with caplog.at_level(logging.INFO, logger="dkimd"):
        down = [mta.run(*outside) for _ in range(2)]
    assert all(outcome.tempfailed for outcome in down), down
    assert not [r for r in caplog.records if r.exc_info or "while processing" in r.getMessage()]
    assert len([r for r in caplog.records if "is unavailable" in r.getMessage()]) == 1


def test_atps_domains(site: tuple[Path, str]) -> None:
    db, config = site
    sqlite_table(db, "atps", [("example.com", "")])
    mta = Mta(config + f"ATPSDomains {sqlite_url(db, 'atps')}\n")

    def atps(outcome: object) -> bool:
        actions = outcome.actions  # type: ignore[attr-defined]
        sigs = [a.value for a in actions if getattr(a, "name", None) == b"DKIM-Signature"]
        assert sigs, actions
        return b"atps=example.com" in sigs[0].replace(b"\r\n\t", b"").replace(b"\n\t", b"")

    assert atps(mta.run())
    sqlite_exec(db, "DELETE FROM atps")
    assert not atps(mta.run())  # TTL 0: the row gone shows at once
    sqlite_exec(db, "ALTER TABLE atps RENAME TO gone")
    assert mta.run().tempfailed


def test_header_list_and_domain_read_at_load(tmp_path: Path) -> None:
    db = tmp_path / "lists.db"
    sqlite_table(db, "signhdr", [("from", ""), ("subject", "")])
    sqlite_table(db, "domains", [("example.com", "")])
    config = base_config(tmp_path).replace("Domain example.com\n", "")
    mta = Mta(
        config + f"Domain {sqlite_url(db, 'domains')}\nSignHeaders {sqlite_url(db, 'signhdr')}\n"
    )
    signed = mta.run()
    sig = [a.value for a in signed.actions if getattr(a, "name", None) == b"DKIM-Signature"]
    assert sig, signed
    tags = dict(
        part.strip().partition("=")[::2]
        for part in sig[0].decode().replace("\r", "").replace("\n", "").split(";")
    )
    signed_names = tags["h"].replace("\t", "").replace(" ", "").lower().split(":")
    assert "from" in signed_names and "to" not in signed_names, tags  # To: not in the table
    assert signed.requests == 0  # nothing asked per message: both were read at load
    assert not mta.run(sender="alice@example.org").signed  # not in the Domain table
    # Unreadable at start with SoftStart: the option is left at its default, not emptied.
    sqlite_exec(db, "ALTER TABLE signhdr RENAME TO gone")
    text = config + f"Domain example.com\nSignHeaders {sqlite_url(db, 'signhdr')}\n"
    with pytest.raises(ConfigError, match="SignHeaders: cannot read data set"):
        parse_config_text(text)
    soft = parse_config_text(text + "SoftStart yes\n")
    assert soft.sign_headers == parse_config_text(config + "Domain example.com\n").sign_headers


def test_check_with_lists_in_postgres(
    pg: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dkimd.cli import check
    from support.sqlservers import PASSWORD

    hosts, nosign = pg.dsn("hosts", "k", "v"), pg.dsn("nosign", "k", "v")
    key = key_file(tmp_path)
    (tmp_path / "keys").write_text(f"arc example.com:arc:{key}\n")
    (tmp_path / "signing").write_text("example.com arc\n")
    conf = tmp_path / "dkimd.conf"
    conf.write_text(
        "Mode sv\nSocket inet:21000@127.0.0.1\nRequireSafeKeys no\n"
        + f"SigningTable {tmp_path / 'signing'}\n"
        + f"InternalHosts {hosts}\nPeerList {hosts}\nExternalIgnoreList {hosts}\n"
        + f"DontSignMailTo {nosign}\nExemptDomains {nosign}\nMTA {nosign}\n"
        + f"KeyTable {tmp_path / 'keys'}\nArcMode s\nArcKey arc\n"
        + f"ArcSealHosts {hosts}\nArcSealMailTo {nosign}\nMacroList {nosign}\n"
    )
    code = check.main(["-x", str(conf), "--no-postfix"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "InternalHosts (as its data set behind a server answers)" in out
    assert "ArcSealHosts (dsn:pgsql://dkimd:***@" in out
    assert PASSWORD not in out


def test_no_password_in_reprs() -> None:
    from dkimd.stores import open_store
    from dkimd.stores.cache import StoreCache

    url = "dsn:pgsql://dkim:topsecret@db.test/mail/table=t?keycol=k?datacol=v"
    dataset = RemoteDataset(url, StoreCache(open_store(url)))
    for text in (repr(dataset), dataset.describe(), repr(RemoteHostList(dataset))):
        assert "topsecret" not in text and "db.test" in text, text
