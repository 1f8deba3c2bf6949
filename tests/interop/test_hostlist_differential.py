"""OpenDKIM and dkimd on the same `dsn:sqlite3` InternalHosts and PeerList: same decisions.

OpenDKIM asks a host list that is not a file one key at a time (dkimf_checkhost, then
dkimf_checkip); dkimd asks every candidate key of the client in one round and walks them
in the same order. Both read the same SQLite file through the same DSN text (relative to
the working directory, as tests/interop/test_dsn_differential.py explains), for a grid of
clients covering names and parent domains, negated entries, CIDR networks, the bracketed
forms and IPv6. Compared: whether the message is signed (InternalHosts), and whether the
filter lets the connection go at connect (PeerList: no Authentication-Results).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.dkimd import Dkimd
from support.opendkim import OpenDKIM, genkey, lua_string, milter_transaction, run_miltertest
from support.remote_lists import Mta
from support.tools import require, unavailable

SQLITE_BACKEND = "/usr/lib/opendbx/libsqlite3backend.so"

ENTRIES = [
    "192.0.2.0/24",
    "!192.0.2.5",
    "[198.51.100.7]",
    "10.0.0.0/8",
    "!10.9.0.0/16",
    "10.9.8.7",
    "2001:db8::/32",
    "!2001:db8:dead::/48",
    "mx.example.org",
    ".example.net",
    "!bad.example.net",
    "!.lab.example.net",
    "ok.lab.example.net",
]
CLIENTS = [  # (host name as the MTA gives it, address)
    ("unknown.test", "192.0.2.1"),
    ("unknown.test", "192.0.2.5"),
    ("unknown.test", "192.0.3.1"),
    ("unknown.test", "198.51.100.7"),
    ("unknown.test", "10.1.1.1"),
    ("unknown.test", "10.9.1.1"),
    ("unknown.test", "10.9.8.7"),
    ("mx.example.org", "203.0.113.9"),
    ("MX.Example.ORG", "203.0.113.9"),
    ("a.example.net", "203.0.113.9"),
    ("bad.example.net", "203.0.113.9"),
    ("bad.example.net", "192.0.2.1"),
    ("x.lab.example.net", "203.0.113.9"),
    ("ok.lab.example.net", "203.0.113.9"),
    ("unknown.test", "2001:db8::1"),
    ("unknown.test", "2001:db8:dead::1"),
    ("unknown.test", "2001:db9::1"),
]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    require("opendkim")
    require("miltertest")
    if not os.path.exists(SQLITE_BACKEND):
        unavailable("OpenDBX's sqlite3 back end is missing: apt-get install libopendbx1-sqlite3")
    monkeypatch.chdir(tmp_path)  # both filters resolve dkim.db here
    conn = sqlite3.connect(tmp_path / "dkim.db")
    conn.execute("CREATE TABLE hosts (k TEXT, v TEXT)")
    conn.executemany("INSERT INTO hosts VALUES (?, '')", [(e,) for e in ENTRIES])
    conn.commit()
    conn.close()
    yield tmp_path


HOSTS = "dsn:sqlite3://dk/im.db/table=hosts?keycol=k?datacol=v"


#: Every client is internal: a PeerList client is the one left unsigned.
EVERYONE = "0.0.0.0/0,::/0"


def _signed(od: OpenDKIM, host: str, address: str) -> bool:
    """Whether OpenDKIM signs one message from this client."""
    message = b"From: a@example.com\r\nTo: r@example.net\r\n\r\nHello.\r\n"
    result = milter_transaction(
        od.socket_spec, message, client_host=host, client_addr=address, mail_from="a@example.com"
    )
    return bool(result.headers("DKIM-Signature"))


def test_internal_hosts_as_opendkim(site: Path) -> None:
    key = genkey(site / "k", "example.com", "sel", bits=1024)
    theirs: dict[tuple[str, str], bool] = {}
    with OpenDKIM(
        site / "od",
        domain="example.com",
        selector="sel",
        keyfile=key.private_key,
        dns_records=key.records,
        options={"InternalHosts": HOSTS},
    ) as od:
        for host, address in CLIENTS:
            theirs[(host, address)] = _signed(od, host, address)
    config = (
        "Mode sv\nAuthservID mx.test\nSocket inet:21000@127.0.0.1\nRequireSafeKeys no\n"
        f"Domain example.com\nSelector sel\nKeyFile {key.private_key}\n"
        f"InternalHosts {HOSTS}\nDataSetCacheTTL 0\nDataSetNegativeCacheTTL 0\n"
    )
    mta = Mta(config)

    async def run_all() -> dict[tuple[str, str], bool]:
        try:
            return {(h, a): (await mta.message(a, h)).signed for h, a in CLIENTS}
        finally:
            await mta.close()

    ours = asyncio.run(run_all())
    assert theirs[("unknown.test", "192.0.2.1")], theirs  # OpenDKIM reads the table at all
    # The one difference, on purpose: at end-of-headers OpenDKIM asks the table with the
    # client's name as the MTA wrote it, so SQLite's case-sensitive "=" misses an upper-case
    # name that a file list (and PeerList, which OpenDKIM lower-cases at connect) matches.
    # dkimd asks in lower case for every case-blind list (docs/datasets.md).
    upper = ("MX.Example.ORG", "203.0.113.9")
    assert ours.pop(upper) and not theirs.pop(upper)
    assert ours == theirs


def test_peer_list_as_opendkim(site: Path) -> None:
    key = genkey(site / "k", "example.com", "sel", bits=1024)
    theirs: dict[tuple[str, str], bool] = {}
    with OpenDKIM(
        site / "od",
        domain="example.com",
        selector="sel",
        keyfile=key.private_key,
        dns_records=key.records,
        options={"PeerList": HOSTS, "InternalHosts": EVERYONE},
    ) as od:
        for host, address in CLIENTS:
            theirs[(host, address)] = not _signed(od, host, address)
    config = (
        "Mode sv\nAuthservID mx.test\nSocket inet:21000@127.0.0.1\nRequireSafeKeys no\n"
        f"Domain example.com\nSelector sel\nKeyFile {key.private_key}\n"
        f"PeerList {HOSTS}\nInternalHosts {EVERYONE}\n"
        "DataSetCacheTTL 0\nDataSetNegativeCacheTTL 0\n"
    )
    mta = Mta(config)

    async def run_all() -> dict[tuple[str, str], bool]:
        try:
            outcomes = {(h, a): await mta.message(a, h) for h, a in CLIENTS}
        finally:
            await mta.close()
        for outcome in outcomes.values():  # a peer is let go at connect, the rest signed
            assert (outcome.stage == "C") != outcome.signed, outcome
        return {client: outcome.stage == "C" for client, outcome in outcomes.items()}

    ours = asyncio.run(run_all())
    assert theirs[("unknown.test", "192.0.2.1")], theirs
    assert not theirs[("unknown.test", "192.0.3.1")], theirs
    assert ours == theirs


def _peer_over_the_wire(dd: Dkimd, host: str, address: str) -> bool:
    """Whether dkimd let this client go at connect (its LogWhy line says so).

    Not the signature: miltertest, unlike Postfix, goes on sending the message after an
    accept at connect, and dkimd (unlike libmilter) then handles it (a file PeerList too).
    """
    before = dd.log_text().count("(PeerList)")
    _signed(dd, host, address)  # type: ignore[arg-type]
    return dd.log_text().count("(PeerList)") > before


def test_daemons_over_the_wire(site: Path) -> None:
    """The real daemons side by side, each message through miltertest: dkimd's server
    waits for the rows at connect (PeerList) or end-of-headers and answers in order."""
    key = genkey(site / "k", "example.com", "sel", bits=1024)
    common = {"domain": "example.com", "selector": "sel", "keyfile": key.private_key}
    clients = [c for c in CLIENTS if c != ("MX.Example.ORG", "203.0.113.9")]  # see above
    internal = {"InternalHosts": HOSTS}
    peers = {"PeerList": HOSTS, "InternalHosts": EVERYONE}
    with OpenDKIM(site / "od", dns_records=key.records, options=internal, **common) as od:
        theirs = {c: _signed(od, *c) for c in clients}
    with Dkimd(site / "dd", dns_records=key.records, options=internal, **common) as dd:
        ours = {c: _signed(dd, *c) for c in clients}  # type: ignore[arg-type]
    assert any(theirs.values()) and not all(theirs.values()), theirs
    assert ours == theirs
    with OpenDKIM(site / "od2", dns_records=key.records, options=peers, **common) as od:
        their_peers = {c: not _signed(od, *c) for c in clients}
    with Dkimd(site / "dd2", dns_records=key.records, options=peers, **common) as dd:
        our_peers = {c: _peer_over_the_wire(dd, *c) for c in clients}
    assert any(their_peers.values()) and not all(their_peers.values()), their_peers
    assert our_peers == their_peers


MESSAGES = [  # (sender, recipients)
    ("a@example.com", ["r@example.net"]),
    ("a@example.com", ["r@example.net", "carol@example.net"]),  # DontSignMailTo
    ("a@example.com", ["Carol@example.net"]),  # upper case in the message
    ("x@exempt.example", ["r@example.net"]),  # ExemptDomains
    ("x@EXEMPT.example", ["r@example.net"]),
    ("x@other.example", ["r@example.net"]),
]
TABLE = "dsn:sqlite3://dk/im.db/table={}?keycol=k?datacol=v"


def _decision(socket_spec: str, sender: str, rcpts: list[str]) -> str:
    """The reply that ended the message, at which stage, and whether it was signed."""
    lines = [
        "mt.set_timeout(20)",
        f"local conn = mt.connect({lua_string(socket_spec)}, 100, 0.05)",
        'if conn == nil then error("connect") end',
        'mt.conninfo(conn, "client.example", "127.0.0.1")',
        f"mt.mailfrom(conn, {lua_string('<' + sender + '>')})",
        *(f"pcall(mt.rcptto, conn, {lua_string('<' + r + '>')})" for r in rcpts),
        f"mt.header(conn, 'From', {lua_string(sender)})",
        "mt.header(conn, 'To', 'r@example.net')",
        "mt.eoh(conn)",
        "local r = mt.getreply(conn)",
        "if r ~= SMFIR_CONTINUE then io.write('eoh=', string.char(r)) os.exit(0) end",
        'mt.bodystring(conn, "Hello.\\r\\n")',
        "mt.eom(conn)",
        "io.write('eom=', string.char(mt.getreply(conn)))",
        "if mt.getheader(conn, 'DKIM-Signature', 0) ~= nil then io.write(' signed') end",
        "mt.disconnect(conn)",
    ]
    return run_miltertest("\n".join(lines) + "\n").stdout.strip()


def test_per_message_lists_as_opendkim(site: Path) -> None:
    """DontSignMailTo and ExemptDomains asked per message, both daemons over the wire:
    the same reply at the same stage, the same messages signed."""
    conn = sqlite3.connect(site / "dkim.db")
    conn.executescript(
        "CREATE TABLE nosign (k TEXT, v TEXT);"
        "INSERT INTO nosign VALUES ('carol@example.net', '');"
        "CREATE TABLE exempt (k TEXT, v TEXT);"
        "INSERT INTO exempt VALUES ('exempt.example', '');"
    )
    conn.commit()
    conn.close()
    key = genkey(site / "k", "example.com", "sel", bits=1024)
    options = {"DontSignMailTo": TABLE.format("nosign"), "ExemptDomains": TABLE.format("exempt")}
    common = {"domain": "example.com", "selector": "sel", "keyfile": key.private_key}
    with OpenDKIM(site / "od", dns_records=key.records, options=options, **common) as od:
        theirs = {(s, *r): _decision(od.socket_spec, s, r) for s, r in MESSAGES}
    with Dkimd(site / "dd", dns_records=key.records, options=options, **common) as dd:
        ours = {(s, *r): _decision(dd.socket_spec, s, r) for s, r in MESSAGES}
    assert theirs[("a@example.com", "r@example.net")] == "eom=a signed", theirs
    assert theirs[("a@example.com", "r@example.net", "carol@example.net")] == "eoh=a", theirs
    assert theirs[("x@exempt.example", "r@example.net")] == "eoh=a", theirs
    # Recorded difference: OpenDKIM asks the table with the recipient as written, so on a
    # case-sensitive column "Carol@" misses "carol@" (which a file list matches); dkimd
    # asks every case-blind list in lower case (docs/datasets.md, "Case").
    upper = ("a@example.com", "Carol@example.net")
    assert (ours.pop(upper), theirs.pop(upper)) == ("eoh=a", "eom=a signed")
    assert ours == theirs


def test_opendkim_refuses_a_macro_list_in_a_database(site: Path) -> None:
    """OpenDKIM 2.11 cannot take MacroList from a store (a dkimd extension): evidence."""
    conf = site / "macro.conf"
    conf.write_text(
        "Socket inet:21001@127.0.0.1\nMode v\n" + f"MacroList {TABLE.format('hosts')}\n"
    )
    done = subprocess.run(
        [require("opendkim"), "-n", "-x", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 78, done
    assert "invalid data set type for MacroList" in done.stderr
