"""The LDAP* options of opendkim.conf reach `ldap:` data sets (dkimd.stores.settings), against
a real slapd on loopback: bind, StartTLS, timeout, cache, SoftStart, and bad values reported
at their own file:line by the loader, `dkimd check` and the daemon (exit 78)."""

from __future__ import annotations

import asyncio
import base64
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd import milter
from dkimd.cli import check
from dkimd.config import ConfigError, Severity, analyze_config_text, parse_config_text
from dkimd.dns.testdata import TestDnsFile
from dkimd.milter.handler import ConnectionInfo
from dkimd.session import Runtime, RuntimeHolder, SessionStats, handler_factory
from dkimd.stores.base import StoreError
from dkimd.stores.dataset import RemoteDataset, close_stores
from dkimd.stores.ldap import LdapStore
from support.handler import settle
from support.kvservers import READER_DN, SUFFIX, Slapd, ThrowawayCa
from support.milterwire import macro, pkt


def _new_key() -> tuple[str, str]:
    """(base64 DER private key, as a KeyTable row holds it inline; its DNS record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode(), "v=DKIM1; k=rsa; p=" + base64.b64encode(pub).decode()


KEY_DATA, KEY_RECORD = _new_key()

LDIF = f"""\
dn: ou=keys,{SUFFIX}
objectClass: organizationalUnit
ou: keys

dn: cn=k1,ou=keys,{SUFFIX}
objectClass: dkimEntry
cn: k1
dkimDomain: example.com
dkimSelector: sel
dkimKey: /keys/example.com.pem

dn: ou=signing,{SUFFIX}
objectClass: organizationalUnit
ou: signing

dn: cn=example.com,ou=signing,{SUFFIX}
objectClass: dkimEntry
cn: example.com
dkimIdentity: k1

dn: cn=k2,ou=keys,{SUFFIX}
objectClass: dkimEntry
cn: k2
dkimDomain: example.net
dkimSelector: net
dkimKey: {KEY_DATA}

dn: cn=example.net,ou=signing,{SUFFIX}
objectClass: dkimEntry
cn: example.net
dkimIdentity: k2
"""

KEYS = f"/ou=keys,{SUFFIX}?dkimDomain,dkimSelector,dkimKey?one?(cn=$d)"
SIGNING = f"/ou=signing,{SUFFIX}?dkimIdentity?one?(cn=$d)"
BIND = f"LDAPBindUser {READER_DN}\nLDAPBindPassword {Slapd.reader_password}\n"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCa:
    return ThrowawayCa(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory, ca: ThrowawayCa) -> Iterator[Slapd]:
    with Slapd(tmp_path_factory.mktemp("ldap"), LDIF, ca=ca, loglevel="stats") as server:
        yield server


def conf(sd: Slapd, extra: str = "") -> str:
    return (
        "Mode sv\nSocket inet:8891@127.0.0.1\n"
        f"KeyTable {sd.url}{KEYS}\nSigningTable {sd.url}{SIGNING}\n" + extra
    )


def key_table(config: object) -> RemoteDataset:
    dataset = config.key_table.dataset  # type: ignore[attr-defined]
    assert isinstance(dataset, RemoteDataset)
    return dataset


def get(dataset: RemoteDataset, key: str, times: int = 1) -> list[object]:
    async def run() -> list[object]:
        try:
            return [await dataset.cache.get(key) for _ in range(times)]
        finally:
            await dataset.cache.close()

    return asyncio.run(run())


def test_bind_from_the_config_reads_what_anonymous_may_not(sd: Slapd) -> None:
    config = parse_config_text(conf(sd, BIND))
    # implemented: no "dkimd does not implement" warning for any of them
    assert not [w for w in config.warnings if (w.option or "").startswith("LDAP")]
    store = key_table(config).cache.store
    assert isinstance(store, LdapStore) and store.settings.bind_user == READER_DN
    assert get(key_table(config), "k1") == [[("example.com", "sel", "/keys/example.com.pem")]]
    # The fixture's ACL lets anonymous read nothing: the rows above came through the bind.
    anonymous = parse_config_text(conf(sd))
    with pytest.raises(StoreError, match="insufficientAccessRights"):
        get(key_table(anonymous), "k1")


def test_wrong_password_stops_the_start_unless_soft_start(sd: Slapd) -> None:
    text = conf(sd, f"LDAPBindUser {READER_DN}\nLDAPBindPassword wrong-secret\n")
    with pytest.raises(ConfigError) as info:
        parse_config_text(text)
    errors = [p for p in info.value.errors if p.option == "KeyTable"]
    assert errors and "invalidCredentials" in errors[0].message
    assert errors[0].line == 3  # the KeyTable line
    assert "wrong-secret" not in str(info.value)  # never a password in a message
    config = parse_config_text(text + "SoftStart yes\n")
    failed = [w for w in config.warnings if w.option in ("KeyTable", "SigningTable")]
    assert len(failed) == 2 and all("cannot use data set" in w.message for w in failed)


def test_wrong_password_daemon_exits_78(sd: Slapd, tmp_path: Path) -> None:
    path = tmp_path / "opendkim.conf"
    path.write_text(conf(sd, f"LDAPBindUser {READER_DN}\nLDAPBindPassword wrong-secret\n"))
    run = subprocess.run(
        [sys.executable, "-m", "dkimd", "-x", str(path), "-n"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 78, run.stderr
    assert f"{path}:3: KeyTable: cannot use data set" in run.stderr
    assert "wrong-secret" not in run.stderr
    path.write_text(path.read_text() + "SoftStart yes\n")
    run = subprocess.run(
        [sys.executable, "-m", "dkimd", "-x", str(path), "-n"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr


def test_use_tls_does_starttls_with_the_libldap_ca(
    sd: Slapd, ca: ThrowawayCa, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = conf(sd, BIND + "LDAPUseTLS yes\n")
    # Not trusting the test CA (an empty ldap.conf, no LDAPTLS_CACERT): StartTLS is tried
    # and the certificate refused, so the start fails (no silent plain-text fallback).
    (tmp_path / "ldap.conf").write_text("")
    monkeypatch.delenv("LDAPTLS_CACERT", raising=False)
    monkeypatch.setenv("LDAPCONF", str(tmp_path / "ldap.conf"))
    with pytest.raises(ConfigError, match=r"(?i)certificate|StartTLS"):
        parse_config_text(text)
    # Trusting it as libldap (so OpenDKIM) would: the same StartTLS session signs in.
    monkeypatch.setenv("LDAPTLS_CACERT", str(ca.ca_cert))
    config = parse_config_text(text)
    assert get(key_table(config), "k1") == [[("example.com", "sel", "/keys/example.com.pem")]]


def test_timeout_bounds_start_and_lookups(sd: Slapd) -> None:
    config = parse_config_text(conf(sd, BIND + "LDAPTimeout 1\n"))
    # without DataSetTimeout, LDAPTimeout is how long an ldap: lookup may take
    assert key_table(config).cache.settings.timeout == 1.0
    explicit = parse_config_text(conf(sd, BIND + "LDAPTimeout 1\nDataSetTimeout 7\n"))
    assert key_table(explicit).cache.settings.timeout == 7.0
    sd.pause()
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match="cannot use data set"):
            parse_config_text(conf(sd, BIND + "LDAPTimeout 1\n"))
        # Two sets, one bind each bounded by LDAPTimeout (the default would take 5 s each).
        assert time.monotonic() - started < 6.0
    finally:
        sd.resume()


def test_disable_cache_asks_the_server_every_time(sd: Slapd) -> None:
    def searches() -> int:
        return sum("k1" in f for f in sd.searched_filters())

    cached = parse_config_text(conf(sd, BIND))
    before = searches()
    get(key_table(cached), "k1", times=3)
    assert searches() - before == 1
    uncached = parse_config_text(conf(sd, BIND + "LDAPDisableCache yes\n"))
    settings = key_table(uncached).cache.settings
    assert (settings.ttl, settings.negative_ttl) == (0.0, 0.0)
    before = searches()
    get(key_table(uncached), "k1", times=3)
    assert searches() - before == 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("LDAPTimeout 0", "LDAPTimeout: 0 is out of range (at least 1)"),
        ("LDAPKeepaliveIdle -5", "LDAPKeepaliveIdle: -5 is out of range (at least 1)"),
        ("LDAPAuthMechanism GSSAPI", 'LDAPAuthMechanism: "GSSAPI" is not supported'),
    ],
)
def test_bad_value_is_an_error_at_its_line(sd: Slapd, line: str, message: str) -> None:
    report = analyze_config_text(conf(sd, BIND + line + "\n"), source="t.conf")
    errors = [p for p in report.problems if p.severity is Severity.ERROR]
    # Reported once, at the option's own line (the seventh here), though both sets read it.
    assert [(p.file, p.line, p.message) for p in errors] == [("t.conf", 7, message)]


def test_ldap_options_without_an_ldap_set_are_not_checked() -> None:
    # OpenDKIM ignores them then; so does dkimd (no ldap: set reads them).
    config = parse_config_text("Socket inet:8891@127.0.0.1\nLDAPTimeout 0\nLDAPUseTLS yes\n")
    assert config.warnings == ()


def test_check_reports_bad_value_and_failed_bind_at_file_line(
    sd: Slapd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "opendkim.conf"
    path.write_text(conf(sd, BIND + "LDAPTimeout -1\n"))
    assert check.main(["-x", str(path), "--no-postfix", "-q"]) == check.EXIT_ERRORS
    out = capsys.readouterr().out
    assert f"{path}:7: error: LDAPTimeout: -1 is out of range (at least 1)" in out
    path.write_text(conf(sd, f"LDAPBindUser {READER_DN}\nLDAPBindPassword nope\nSoftStart yes\n"))
    assert check.main(["-x", str(path), "--no-postfix", "-q"]) == check.EXIT_ERRORS
    out = capsys.readouterr().out
    # SoftStart would start the daemon; check says the sets fail now, as errors, once each.
    assert f"{path}:3: error: KeyTable: a lookup in" in out
    assert f"{path}:4: error: SigningTable: a lookup in" in out
    assert out.count("invalidCredentials") == 2
    assert "warning:" not in out and "nope" not in out


# -- through a session, as the daemon runs them --


def sign_one(holder: RuntimeHolder) -> bytes | None:
    """One message from alice@example.net through a milter session; its DKIM-Signature."""

    async def go() -> bytes | None:
        conn = milter.Connection(
            milter.FilterOptions(
                actions=milter.ActionFlag(0x1FF),
                protocol=milter.ProtocolFlag.HDR_LEADSPC | milter.ProtocolFlag.NR_HDR,
            )
        )
        handler = handler_factory(holder, SessionStats())(ConnectionInfo(conn, "t"))
        stream = pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
        stream += macro(b"C", {"j": "mx.test"})
        stream += pkt(b"C", b"client\x004" + struct.pack(">H", 25) + b"127.0.0.1\0")
        stream += pkt(b"M", b"<alice@example.net>\0") + pkt(b"R", b"<bob@example.org>\0")
        stream += pkt(b"L", b"From\0 alice@example.net\0") + pkt(b"L", b"To\0 bob@example.org\0")
        stream += pkt(b"N") + pkt(b"B", b"Hello.\r\n") + pkt(b"E")
        conn.receive_data(stream)
        found = None
        while (event := conn.next_event()) is not milter.NEED_DATA:
            if isinstance(event, milter.OptionNegotiation):
                conn.send(milter.Continue())
                continue
            result = await settle(handler, handler.handle(event))
            actions = (
                []
                if result is None
                else [result]
                if isinstance(result, milter.Action)
                else list(result)
            )
            for action in actions:
                is_header = isinstance(action, milter.InsertHeader | milter.AddHeader)
                if is_header and action.name == b"DKIM-Signature":
                    found = action.value
            conn.send_many(actions or [milter.Continue()])
        handler.close()
        return found

    return asyncio.run(go())


@pytest.mark.parametrize("disable_cache", [False, True])
def test_session_signs_through_the_bound_store_cache_or_not(sd: Slapd, disable_cache: bool) -> None:
    extra = BIND + ("LDAPDisableCache yes\n" if disable_cache else "")
    config = parse_config_text(conf(sd, "AuthservID mx.test\n" + extra))
    records = TestDnsFile.from_records({"net._domainkey.example.net": [KEY_RECORD]})
    holder = RuntimeHolder(Runtime.build(config, records))

    def searches() -> int:
        return sum("k2" in f or "example.net" in f for f in sd.searched_filters())

    before = searches()
    try:
        for _ in range(3):
            sig = sign_one(holder)
            assert sig is not None and b"d=example.net" in sig and b"s=net" in sig
    finally:
        asyncio.run(close_stores(config))  # as the daemon does at stop
    # Counted per message: the SigningTable candidates alice@example.net and example.net,
    # then the KeyTable's k2 (the other candidates' filters name neither). Cached, only the
    # first message asks; with LDAPDisableCache every message does.
    assert searches() - before == (3 * 3 if disable_cache else 3)


def test_keepalive_options_reach_the_connections(sd: Slapd) -> None:
    import socket

    extra = BIND + "LDAPKeepaliveIdle 31\nLDAPKeepaliveProbes 4\nLDAPKeepaliveInterval 7\n"
    config = parse_config_text(conf(sd, extra))
    dataset = key_table(config)
    store = dataset.cache.store
    assert isinstance(store, LdapStore)

    async def run() -> list[int]:
        try:
            await dataset.cache.get("k1")
            (conn,) = store._connections  # the one connection the lookup opened
            sock = conn.socket
            return [
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            ]
        finally:
            await dataset.cache.close()

    assert asyncio.run(run()) == [1, 31, 4, 7]


def test_sasl_external_over_ldapi_from_the_config(sd: Slapd) -> None:
    # The fixture maps this process's uid on ldapi to the reader: no password at all.
    text = (
        "Mode sv\nSocket inet:8891@127.0.0.1\n"
        f"KeyTable {sd.ldapi_url}{KEYS}\nSigningTable {sd.ldapi_url}{SIGNING}\n"
        "LDAPAuthMechanism EXTERNAL\n"
    )
    config = parse_config_text(text)
    assert get(key_table(config), "k1") == [[("example.com", "sel", "/keys/example.com.pem")]]


def test_a_list_read_whole_binds_as_the_config_says(sd: Slapd) -> None:
    """Lists dkimd reads whole at load (TrustSignaturesFrom here; SignHeaders, MacroList...)
    walk the directory with the same LDAP* options as the per-message tables."""
    trusted = f"TrustSignaturesFrom {sd.url}{SIGNING}\n"
    config = parse_config_text(conf(sd, BIND + trusted))
    assert config.trust_signatures_from is not None
    keys = sorted(e.key for e in config.trust_signatures_from.entries)
    assert keys == ["example.com", "example.net"]
    # Before this, the walk bound anonymously, which the fixture's ACL lets read nothing.
    anonymous = parse_config_text(conf(sd, trusted))
    assert anonymous.trust_signatures_from is not None
    assert list(anonymous.trust_signatures_from.entries) == []
