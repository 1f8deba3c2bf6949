"""`dkimd check`, `testkey` and `genzone` with KeyTable/SigningTable in a database: SQLite
(no server), a real PostgreSQL and a real slapd. The tools see every row (the tables are
walked), `check` runs one lookup of each set without walking, and a store that cannot be
read is a clear error naming the option, with the tool's exit status for unreadable tables.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd.cli import check, genzone, testkey
from dkimd.keytools.generate import GeneratedKey, generate_ed25519, generate_rsa
from dkimd.keytools.record import KeyRecordOptions, record_value
from dkimd.keytools.testkey import EX_CONFIG, EX_DATAERR
from support.kvservers import READER_DN, SUFFIX, Slapd
from support.sqlservers import PASSWORD, PgServer, start_postgres

_KEYS: dict[str, GeneratedKey] = {}


def key(name: str) -> GeneratedKey:
    # RSA generation is the slow part: one key per name for the whole module.
    if name not in _KEYS:
        _KEYS[name] = generate_ed25519() if name.startswith("ed") else generate_rsa(1024)
    return _KEYS[name]


def inline(generated: GeneratedKey) -> str:
    """The key as a KeyTable row holds it inline: base64 of the DER (the PEM's body)."""
    lines = generated.private_pem.decode().strip().splitlines()
    return "".join(line for line in lines if not line.startswith("-----"))


def record(generated: GeneratedKey) -> str:
    return record_value(generated.public_key_b64, KeyRecordOptions(key_type=generated.key_type))


# Rows: key name -> (domain, selector, key). "bad" is not domain:selector:key.
ROWS = {
    "k-com": ("example.com", "s1", inline(key("rsa1"))),
    "k-org": ("example.org", "s2", inline(key("ed1"))),
}


def qp(path: Path) -> str:
    return str(path).replace("/", "=2F") + "=2F"  # OpenDBX: the host is the directory


@pytest.fixture
def site(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # Never read the host's /etc/opendkim.conf.
    root = Path(tempfile.mkdtemp(prefix="dkimd-remote-tools-"))
    monkeypatch.setattr("dkimd.keytools.context.DEFAULT_CONFIG", str(root / "absent.conf"))
    (root / "dns").write_text(
        f"s1._domainkey.example.com {record(key('rsa1'))}\n"
        f"s2._domainkey.example.org {record(key('ed1'))}\n"
    )
    yield root


def sqlite_tables(root: Path, extra_rows: dict[str, tuple[str, str, str]] | None = None) -> str:
    """A SQLite KeyTable and SigningTable under `root`; the configuration's two lines."""
    db = sqlite3.connect(root / "keys.db")
    db.execute("CREATE TABLE kt (name TEXT PRIMARY KEY, domain TEXT, selector TEXT, k TEXT)")
    db.execute("CREATE TABLE st (pattern TEXT PRIMARY KEY, keyname TEXT)")
    for name, (domain, selector, data) in {**ROWS, **(extra_rows or {})}.items():
        db.execute("INSERT INTO kt VALUES (?, ?, ?, ?)", (name, domain, selector, data))
        db.execute("INSERT INTO st VALUES (?, ?)", (domain, name))
    db.commit()
    db.close()
    base = f"dsn:sqlite3://{qp(root)}/keys.db"
    return (
        f"KeyTable {base}/table=kt?keycol=name?datacol=domain,selector,k\n"
        f"SigningTable {base}/table=st?keycol=pattern?datacol=keyname\n"
    )


def write_conf(root: Path, tables: str, extra: str = "") -> Path:
    path = root / "opendkim.conf"
    path.write_text(f"Socket inet:8891@127.0.0.1\n{tables}{extra}")
    return path


def zone_names(text: str) -> list[str]:
    return sorted(line.split("\t")[0] for line in text.splitlines() if "\tIN\tTXT\t" in line)


# -- SQLite: no server --


def test_testkey_walks_a_sqlite_keytable(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_conf(site, sqlite_tables(site))
    assert testkey.main(["-x", str(conf), "--dns-file", str(site / "dns"), "-vvv"]) == 0
    out = capsys.readouterr().out
    assert "key k-com: OK" in out and "key k-org: OK" in out
    assert "2 keys checked; 2 pass, 0 fail" in out


def test_testkey_remote_mismatch_and_bad_row(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {
        "k-net": ("example.net", "s3", inline(key("rsa2"))),  # published: rsa1's record
        "bad": ("example.edu", "s4", "not a key!"),
    }
    conf = write_conf(site, sqlite_tables(site, extra))
    with (site / "dns").open("a") as fh:
        fh.write(f"s3._domainkey.example.net {record(key('rsa1'))}\n")
    assert testkey.main(["-x", str(conf), "--dns-file", str(site / "dns")]) == EX_DATAERR
    captured = capsys.readouterr()
    assert "3 keys checked; 2 pass, 1 fail" in captured.out
    assert f'{conf}:2: warning: KeyTable entry "bad"' in captured.err
    assert "key k-net: keys do not match" in captured.err


def test_genzone_walks_a_sqlite_keytable(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = sqlite_tables(site)
    conf = write_conf(site, tables)
    assert genzone.main(["-x", str(conf), "-F"]) == 0
    out = capsys.readouterr().out
    assert zone_names(out) == ["s1._domainkey.example.com.", "s2._domainkey.example.org."]
    assert key("rsa1").public_key_b64[:40] in out.replace('"\n\t"', "")
    # -d keeps one domain's; the DATASET argument reads the same table without a config
    dataset = tables.splitlines()[0].split(" ", 1)[1]
    assert genzone.main(["-d", "example.org", "-F", dataset]) == 0
    assert zone_names(capsys.readouterr().out) == ["s2._domainkey.example.org."]


def test_genzone_names_a_dataset_argument_without_its_password(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = sqlite_tables(site, {"bad": ("example.net", "", "")})
    dataset = tables.splitlines()[0].split(" ", 1)[1]
    dataset = dataset.replace("sqlite3://", "sqlite3://dkim:S3cret-Pw@")  # sqlite ignores it
    assert genzone.main(["-F", dataset]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "dsn:sqlite3://dkim:***@" in err  # the bad row, told
    assert "S3cret" not in err


def test_unreadable_sqlite_keytable(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = sqlite_tables(site)
    # Without SoftStart the configuration does not load: the tools' EX_CONFIG.
    (site / "keys.db").rename(site / "away.db")
    conf = write_conf(site, tables)
    assert testkey.main(["-x", str(conf), "--dns-file", str(site / "dns")]) == EX_CONFIG
    assert f"{conf}:2: KeyTable: cannot use data set" in capsys.readouterr().err
    # With SoftStart it loads; the walk fails, naming the option's place.
    conf = write_conf(site, tables, "SoftStart yes\n")
    assert testkey.main(["-x", str(conf), "--dns-file", str(site / "dns")]) == EX_CONFIG
    assert f"{conf}:2: KeyTable: cannot read the table:" in capsys.readouterr().err
    assert genzone.main(["-x", str(conf)]) == genzone.EX_CONFIG
    err = capsys.readouterr().err
    assert f"{conf}:2: KeyTable: cannot read the table:" in err
    # given as DATASET: genzone's status for a table it cannot open
    assert genzone.main([tables.splitlines()[0].split(" ", 1)[1]]) == 1
    assert "KeyTable: cannot use data set" in capsys.readouterr().err


def test_check_runs_a_test_lookup_without_walking(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_conf(site, sqlite_tables(site))
    assert check.main(["-x", str(conf), "--no-postfix"]) == 0
    out = capsys.readouterr().out
    assert "KeyTable answers a test lookup in" in out
    assert "SigningTable answers a test lookup in" in out
    assert "a database table, read per message" in out
    assert "rows walked" not in out  # no walk without --walk
    assert check.main(["-x", str(conf), "--no-postfix", "--walk"]) == 0
    assert "KeyTable: 2 rows walked" in capsys.readouterr().out


# -- PostgreSQL --


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    server = start_postgres(tmp_path_factory.mktemp("pg"))
    server.execute(
        "CREATE TABLE kt (name TEXT PRIMARY KEY, domain TEXT, selector TEXT, k TEXT)",
        "CREATE TABLE st (pattern TEXT PRIMARY KEY, keyname TEXT)",
        "CREATE TABLE secret (pattern TEXT PRIMARY KEY, keyname TEXT)",
        "GRANT SELECT ON kt, st TO dkimd",
    )
    for name, (domain, selector, data) in ROWS.items():
        server.execute(
            "INSERT INTO kt VALUES (%s, %s, %s, %s)", params=(name, domain, selector, data)
        )
        server.execute("INSERT INTO st VALUES (%s, %s)", params=(domain, name))
    yield server
    server.cleanup()


def pg_tables(pg: PgServer, signing: str = "st") -> str:
    return (
        f"KeyTable {pg.dsn('kt', 'name', 'domain,selector,k')}\n"
        f"SigningTable {pg.dsn(signing, 'pattern', 'keyname')}\n"
    )


def test_tools_with_postgres(pg: PgServer, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_conf(site, pg_tables(pg))
    assert testkey.main(["-x", str(conf), "--dns-file", str(site / "dns"), "-v"]) == 0
    assert "2 keys checked; 2 pass, 0 fail" in capsys.readouterr().out
    assert genzone.main(["-x", str(conf), "-F"]) == 0
    out = capsys.readouterr().out
    assert zone_names(out) == ["s1._domainkey.example.com.", "s2._domainkey.example.org."]
    assert check.main(["-x", str(conf), "--no-postfix"]) == 0
    out = capsys.readouterr().out
    assert "KeyTable answers a test lookup" in out
    assert PASSWORD not in out


def test_check_reports_a_table_the_account_cannot_read(
    pg: PgServer, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The login works; the query does not (no SELECT right): at the SigningTable's line.
    conf = write_conf(site, pg_tables(pg, signing="secret"))
    assert check.main(["-x", str(conf), "--no-postfix", "-q"]) == check.EXIT_ERRORS
    out = capsys.readouterr().out
    assert f"{conf}:3: error: SigningTable: cannot use data set" in out
    assert "permission denied" in out


def test_postgres_down_is_a_clear_error(
    pg: PgServer, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_conf(site, pg_tables(pg), "SoftStart yes\n")
    pg.stop()
    try:
        assert testkey.main(["-x", str(conf), "--dns-file", str(site / "dns")]) == EX_CONFIG
        err = capsys.readouterr().err
        assert f"{conf}:2: KeyTable: cannot read the table:" in err
        assert PASSWORD not in err
        assert genzone.main(["-x", str(conf)]) == genzone.EX_CONFIG
        assert f"{conf}:2: KeyTable: cannot read the table:" in capsys.readouterr().err
        # check: an error at the option's line, SoftStart or not (the mail would be tempfailed)
        assert check.main(["-x", str(conf), "--no-postfix", "-q"]) == check.EXIT_ERRORS
        out = capsys.readouterr().out
        assert f"{conf}:2: error: KeyTable: a lookup in" in out
        assert "warning: KeyTable" not in out
    finally:
        pg.start()
    # The server back: the same check is clean (nothing left of the start-up warning).
    assert check.main(["-x", str(conf), "--no-postfix", "-q"]) == 0
    assert "KeyTable" not in capsys.readouterr().out


# -- slapd --

LDIF = f"dn: ou=keys,{SUFFIX}\nobjectClass: organizationalUnit\nou: keys\n\n" + "".join(
    f"dn: cn={name},ou=keys,{SUFFIX}\nobjectClass: dkimEntry\ncn: {name}\ndkimDomain: {domain}\n"
    f"dkimSelector: {selector}\ndkimKey: {data}\n\n"
    for name, (domain, selector, data) in ROWS.items()
)


def test_tools_with_ldap(tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Slapd(tmp_path / "ldap", LDIF) as sd:
        url = f"{sd.url}/ou=keys,{SUFFIX}?dkimDomain,dkimSelector,dkimKey?one?(cn=$d)"
        bind = f"LDAPBindUser {READER_DN}\nLDAPBindPassword {Slapd.reader_password}\n"
        conf = write_conf(site, f"KeyTable {url}\nSigningTable csl:example.com=k-com\n", bind)
        assert testkey.main(["-x", str(conf), "--dns-file", str(site / "dns"), "-v"]) == 0
        assert "2 keys checked; 2 pass, 0 fail" in capsys.readouterr().out
        assert genzone.main(["-x", str(conf), "-F"]) == 0
        names = zone_names(capsys.readouterr().out)
        assert names == ["s1._domainkey.example.com.", "s2._domainkey.example.org."]
        # Anonymous binds, but the ACL lets it read nothing: check's lookup finds that.
        anonymous = write_conf(site, f"KeyTable {url}\nSigningTable csl:example.com=k-com\n")
        assert check.main(["-x", str(anonymous), "--no-postfix", "-q"]) == check.EXIT_ERRORS
        out = capsys.readouterr().out
        assert f"{anonymous}:2: error: KeyTable: a lookup in" in out
        assert "insufficientAccessRights" in out


def test_file_signing_table_with_a_keytable_in_a_database(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The loader cannot check the names without lookups (it used to crash trying): it
    # loads, check says where keys are looked up, and --walk finds the missing one.
    keytable = sqlite_tables(site).splitlines()[0]
    conf = write_conf(site, f"{keytable}\nSigningTable csl:example.com=k-com,example.net=gone\n")
    assert check.main(["-x", str(conf), "--no-postfix"]) == 0
    out = capsys.readouterr().out
    assert 'example.com                  -> key "k-com" (looked up in dsn:sqlite3:' in out
    assert check.main(["-x", str(conf), "--no-postfix", "-q", "--walk"]) == check.EXIT_ERRORS
    out = capsys.readouterr().out
    assert f'{conf}:3: error: SigningTable entry "example.net" names key "gone"' in out
    assert "k-com" not in out


def test_check_signing_table_does_not_walk_a_server_at_start(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # CheckSigningTable yes asked the remote KeyTable at load for each name (a crash);
    # the daemon never walks a server at start: it starts, and check says where to look.
    keytable = sqlite_tables(site).splitlines()[0]
    tables = f"{keytable}\nSigningTable csl:example.com=k-com,example.net=gone\n"
    conf = write_conf(site, tables, "CheckSigningTable yes\n")
    run = subprocess.run(
        [sys.executable, "-m", "dkimd", "-x", str(conf), "-n"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (run.returncode, run.stderr) == (0, "")
    assert check.main(["-x", str(conf), "--no-postfix", "-q"]) == 0
    out = capsys.readouterr().out
    assert f"{conf}:4: warning: CheckSigningTable has no effect: tables on a server" in out


def test_walk_of_a_hung_server_ends_within_the_lookup_timeout(tmp_path: Path) -> None:
    from dkimd.config import parse_config_text
    from dkimd.stores.base import StoreError
    from dkimd.stores.walk import keytable_entries

    with Slapd(tmp_path / "ldap", LDIF) as sd:
        url = f"{sd.url}/ou=keys,{SUFFIX}?dkimDomain,dkimSelector,dkimKey?one?(cn=$d)"
        config = parse_config_text(
            f"Socket inet:8891@127.0.0.1\nKeyTable {url}\nSigningTable csl:example.com=k-com\n"
            f"LDAPBindUser {READER_DN}\nLDAPBindPassword {Slapd.reader_password}\n"
            "DataSetTimeout 1\n"
        )
        assert config.key_table is not None
        sd.pause()  # accepts connections, answers nothing
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="no answer within 1s"):
                asyncio.run(keytable_entries(config.key_table))
            assert time.monotonic() - started < 3.0
        finally:
            sd.resume()
        # and once it answers again, the same table walks
        entries, notes = asyncio.run(keytable_entries(config.key_table))
        assert sorted(e.name for e in entries) == ["k-com", "k-org"] and notes == []


def test_genzone_and_testkey_with_memcached(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from support.kvservers import Memcached

    with Memcached(tmp_path / "mc") as mc:
        for name, (domain, selector, data) in ROWS.items():
            mc.set(f"dkim-keys:{name}", f"{domain}:{selector}:{data}")
        mc.set("other:k-x", "example.net:s9:/nowhere")  # another prefix: not this table's
        tables = f"KeyTable memcache:127.0.0.1:{mc.port}/dkim-keys\nSigningTable csl:a=k-com\n"
        conf = write_conf(site, tables)
        assert genzone.main(["-x", str(conf), "-F"]) == 0
        names = zone_names(capsys.readouterr().out)
        assert names == ["s1._domainkey.example.com.", "s2._domainkey.example.org."]
        assert testkey.main(["-x", str(conf), "--dns-file", str(site / "dns"), "-v"]) == 0
        assert "2 keys checked; 2 pass, 0 fail" in capsys.readouterr().out


def test_genzone_loads_a_key_file_shared_by_many_rows_once(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One key file for 50 domains (a hosting fleet's usual KeyTable): loading an RSA key
    # checks it (tens of ms), so genzone loads it once, and every record carries its p=.
    shared = site / "shared.pem"
    shared.write_bytes(key("rsa1").private_pem)
    rows = {f"k{i}": (f"d{i}.example", "s1", str(shared)) for i in range(50)}
    conf = write_conf(site, sqlite_tables(site, rows))
    loads: list[str] = []
    real = genzone.load_private_key_file

    def counting(path: str) -> object:
        loads.append(path)
        return real(path)

    monkeypatch.setattr(genzone, "load_private_key_file", counting)
    assert genzone.main(["-x", str(conf), "-F"]) == 0
    out = capsys.readouterr().out
    assert len(zone_names(out)) == 52  # the two inline keys and the 50 rows
    assert loads == [str(shared)]
    assert out.replace('"\n\t"', "").count(key("rsa1").public_key_b64) == 51  # k-com too


def test_testkey_loads_a_key_file_shared_by_many_rows_once(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dkimd.keytools import testkey as checks

    shared = site / "shared.pem"
    shared.write_bytes(key("rsa1").private_pem)
    shared.chmod(0o600)
    rows = {f"k{i}": (f"d{i}.example", "s1", str(shared)) for i in range(30)}
    with (site / "dns").open("a") as fh:
        for i in range(30):
            fh.write(f"s1._domainkey.d{i}.example {record(key('rsa1'))}\n")
    conf = write_conf(site, sqlite_tables(site, rows), "RequireSafeKeys no\n")
    loads: list[bytes] = []
    real = checks.load_private_key

    def counting(data: bytes) -> object:
        loads.append(data)
        return real(data)

    checks._parsed_key.cache_clear()  # other tests loaded the same key bytes
    monkeypatch.setattr(checks, "load_private_key", counting)
    assert testkey.main(["-x", str(conf), "--dns-file", str(site / "dns"), "-v"]) == 0
    assert "32 keys checked; 32 pass, 0 fail" in capsys.readouterr().out
    # 32 rows, 3 distinct keys: k-com's DER, k-org's Ed25519, and the shared PEM file.
    assert len(loads) == 3
