"""`dsn:` URLs read as OpenDKIM's dkimf_db_open() reads them (opendkim(8) DATA SETS)."""

from __future__ import annotations

import pytest

from dkimd.stores import open_store, scheme_of
from dkimd.stores.base import StoreSpecError
from dkimd.stores.dsn import parse_dsn


def test_full_url() -> None:
    spec = parse_dsn(
        "dsn:pgsql://dkim:pa=40ss@5433+db.example.net/mail/table=dkim?keycol=domain"
        "?datacol=id,selector?filter=enabled=3D1"
    )
    assert spec.backend == "pgsql"
    assert (spec.user, spec.password, spec.port, spec.host) == (
        "dkim",
        "pa@ss",
        "5433",
        "db.example.net",
    )
    assert spec.dbase == "mail"
    assert (spec.table, spec.keycol, spec.datacol) == ("dkim", "domain", ("id", "selector"))
    assert spec.filter == "enabled=1"
    assert spec.select("%s") == "SELECT id, selector FROM dkim WHERE domain = %s AND (enabled=1)"


def test_user_without_password_and_no_port() -> None:
    spec = parse_dsn("dsn:mysql://reader@localhost/db/table=t?keycol=k?datacol=v")
    assert (spec.user, spec.password, spec.port, spec.host) == ("reader", "", "", "localhost")


def test_sqlite_path_in_quoted_printable() -> None:
    # The form the issue reports OpenDKIM accepting: the directory is the "host".
    spec = parse_dsn("dsn:sqlite3://=2Fvar=2Flib=2Fdkim=2F/keys.db/table=k?keycol=a?datacol=b")
    assert spec.host == "/var/lib/dkim/"
    assert spec.dbase == "keys.db"


def test_option_names_are_case_blind_and_order_free() -> None:
    spec = parse_dsn("dsn:sqlite3://h/d/DataCol=x?KEYCOL=y?Table=z")
    assert (spec.table, spec.keycol, spec.datacol) == ("z", "y", ("x",))


def test_describe_hides_the_password() -> None:
    spec = parse_dsn("dsn:pgsql://u:topsecret@h/d/table=t?keycol=k?datacol=v")
    assert "topsecret" not in spec.describe()
    assert "u:***@" in spec.describe()
    assert "topsecret" not in repr(spec)


@pytest.mark.parametrize(
    "text",
    [
        "dsn:pgsql:/h/d/table=t?keycol=k?datacol=v",  # no //
        "dsn:oracle://h/d/table=t?keycol=k?datacol=v",  # unknown back end
        "dsn:pgsql://h/d/keycol=k?datacol=v",  # no table
        "dsn:pgsql://h/d/table=t?datacol=v",  # no keycol
        "dsn:pgsql://h/d/table=t?keycol=k",  # no datacol
        "dsn:pgsql:///d/table=t?keycol=k?datacol=v",  # no host
        "dsn:pgsql://h",  # nothing after the host
        "dsn:pgsql://a:b:c@h/d/table=t?keycol=k?datacol=v",  # two colons
        "dsn:pgsql://x+h/d/table=t?keycol=k?datacol=v",  # port not a number
        "dsn:pgsql://h/d/table=t;drop table x?keycol=k?datacol=v",  # not an identifier
        "dsn:pgsql://h/d/table=t?keycol=k?datacol=v)--",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(StoreSpecError):
        parse_dsn(text)


def test_error_message_hides_the_password() -> None:
    with pytest.raises(StoreSpecError) as info:
        parse_dsn("dsn:pgsql://u:topsecret@h/d/table=t?keycol=k")
    assert "topsecret" not in info.value.message


def test_registry_picks_the_module_by_scheme(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert scheme_of("DSN:sqlite3://x") == "dsn"
    directory = str(tmp_path).replace("/", "=2F") + "=2F"
    store = open_store(f"dsn:sqlite3://{directory}/k.db/table=t?keycol=k?datacol=v")
    assert store.describe().startswith("dsn:sqlite3://")
    with pytest.raises(StoreSpecError):
        open_store("gopher://x")


def test_sqlite_file_is_host_and_database_side_by_side() -> None:
    # OpenDBX's sqlite3 back end (and so OpenDKIM) joins them with no "/" between.
    from dkimd.stores.dsn import SqliteStore

    spec = parse_dsn("dsn:sqlite3://=2Fvar=2Flib=2Fdkim=2F/keys.db/table=k?keycol=a?datacol=b")
    assert SqliteStore(spec).path == "/var/lib/dkim/keys.db"
    spec = parse_dsn("dsn:sqlite3://dk/im.db/table=k?keycol=a?datacol=b")
    assert SqliteStore(spec).path == "dkim.db"
