"""`dsn:` data sets: a table in an SQL database, in OpenDKIM's syntax (opendkim(8)).

    dsn:backend://[user[:pwd]@][port+]host/dbase/table=T?keycol=K?datacol=A,B?filter=F

read as opendkim-db.c's dkimf_db_open() reads it: the back end runs to the first `:`, which
must be followed by `//`; then the text is cut at the punctuation `:` (after the user), `@`
(after the user or the password), `+` (after the port) and `/` (after the host, then after
the database); the rest is `?`-separated `name=value` pairs (names case-blind; `table`,
`keycol` and `datacol` are required, `filter` is optional). A character that would cut the
text is written in quoted-printable, `=XX` (`=2F` for `/`, `=40` for `@`): OpenDKIM does not
take `=XX` as punctuation, and we decode it in every part (OpenDKIM decodes only `filter`
and hands the other parts to OpenDBX as written).

Back ends: `sqlite3` (the stdlib module behind a bounded thread pool; the file is host
and dbase side by side, as OpenDBX's sqlite3 back end joins them), `pgsql` (psycopg 3 and
its async pool), `mysql` (PyMySQL behind a bounded thread pool; it logs in to caching_sha2_password
accounts, which OpenDBX cannot). All but sqlite3 need the `dkimd[sql]` extra.

The query is OpenDKIM's, `SELECT datacol FROM table WHERE keycol = <key> [AND (filter)]`,
except that the key is a bound parameter, never text in the query, and that the filter is
put in parentheses (OpenDKIM appends it bare, so a filter with OR widened the match). The
table and column names must be plain (optionally dotted) SQL identifiers: they are written
into the query, so anything else is refused when the configuration is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from dkimd.stores.base import MissingExtra, RemoteStore, Row, StoreError, StoreSpecError

__all__ = ["BACKENDS", "DsnSpec", "from_spec", "parse_dsn"]

BACKENDS = ("sqlite3", "pgsql", "mysql")

#: Seconds to connect and log in; the per-lookup timeout of the cache layer bounds the rest.
CONNECT_TIMEOUT = 5.0
#: Seconds a thread waits for one read or write of a MySQL connection: a server that stops
#: answering (stopped, partitioned) must not hold the pool's threads after the lookup's own
#: timeout has failed it, or the store stays unusable long after the server is back.
IO_TIMEOUT = 30.0
#: Connections (or threads holding one) per store.
POOL_SIZE = 4
#: Rows fetched per round trip when walking a table.
WALK_BATCH = 1000
#: Keys per `IN (...)` query of get_many (SQLite before 3.32 allows 999 parameters).
MANY_BATCH = 500

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?\Z")
_QP = re.compile(r"=([0-9A-Fa-f]{2})")
_CUTS = ":/@+?"


def _unqp(text: str) -> str:
    """Decode `=XX` escapes (quoted-printable), byte-wise, as UTF-8."""
    if "=" not in text:
        return text
    raw = _QP.sub(lambda m: chr(int(m.group(1), 16)), text)
    return raw.encode("latin-1", "surrogateescape").decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class DsnSpec:
    """A parsed `dsn:` URL (every part already decoded)."""

    backend: str
    host: str
    dbase: str
    table: str
    keycol: str
    datacol: tuple[str, ...]
    user: str = ""
    password: str = field(default="", repr=False)
    port: str = ""
    filter: str = ""
    text: str = field(default="", repr=False)  # the value as written (holds the password)

    def describe(self) -> str:
        """The URL with the password replaced by `***`."""
        who = ""
        if self.user:
            who = self.user + (":***" if self.password else "") + "@"
        port = f"{self.port}+" if self.port else ""
        tail = f"table={self.table}?keycol={self.keycol}?datacol={','.join(self.datacol)}"
        if self.filter:
            tail += "?filter=..."
        return f"dsn:{self.backend}://{who}{port}{self.host}/{self.dbase}/{tail}"

    def select(self, placeholder: str) -> str:
        """The lookup query with `placeholder` standing for the key."""
        query = f"SELECT {', '.join(self.datacol)} FROM {self.table} WHERE {self.keycol} = "
        query += placeholder
        if self.filter:
            query += f" AND ({self._filter_text(placeholder)})"
        return query

    def select_many(self, placeholder: str, count: int) -> str:
        """The lookup of `count` keys at once: the key column first, then the data."""
        marks = ", ".join([placeholder] * count)
        query = f"SELECT {self.keycol}, {', '.join(self.datacol)} FROM {self.table}"
        query += f" WHERE {self.keycol} IN ({marks})"
        if self.filter:
            query += f" AND ({self._filter_text(placeholder)})"
        return query

    def select_all(self, placeholder: str) -> str:
        """The walk query: every key with its data."""
        query = f"SELECT {self.keycol}, {', '.join(self.datacol)} FROM {self.table}"
        if self.filter:
            query += f" WHERE ({self._filter_text(placeholder)})"
        return query

    def _filter_text(self, placeholder: str) -> str:
        # Drivers using "%s" placeholders read every "%" in the text as a format character.
        return self.filter.replace("%", "%%") if placeholder == "%s" else self.filter


def _next_cut(text: str, start: int) -> int:
    """dkimf_db_nextpunct(): the next cutting character; `=` not followed by two hex digits
    is one too (it cannot start an escape, and OpenDKIM refuses it before the database)."""
    for i in range(start, len(text)):
        ch = text[i]
        if ch in _CUTS:
            return i
        if ch == "=" and not _QP.match(text, i):
            return i
    return -1


def parse_dsn(text: str) -> DsnSpec:
    """Parse a `dsn:` value (with or without the `dsn:` prefix); raises StoreSpecError."""
    body = text[4:] if text[:4].lower() == "dsn:" else text
    colon = body.find(":")
    if colon <= 0 or body[colon + 1 : colon + 3] != "//":
        raise StoreSpecError(
            f'"{_safe(text)}" is not a dsn: URL',
            "write dsn:backend://[user[:password]@][port+]host/database/table=...",
        )
    backend = body[:colon].lower()
    if backend not in BACKENDS:
        raise StoreSpecError(
            f'dsn: back end "{body[:colon]}" is not supported', f"use one of {', '.join(BACKENDS)}"
        )
    user = password = port = host = dbase = ""
    q = colon + 3
    found = False
    while not found:
        p = _next_cut(body, q)
        if p == -1:
            break
        part = body[q:p]
        ch = body[p]
        if ch == ":":
            if user:
                raise StoreSpecError(f'"{_safe(text)}": a second ":" before the host')
            user = part
        elif ch == "@":
            if user:
                password = part
            else:
                user = part
        elif ch == "+":
            port = part
        elif ch == "/":
            if not host:
                host = part
            else:
                dbase = part
                found = True
        else:
            raise StoreSpecError(
                f'"{_safe(text)}": unexpected "{ch}" before the table options',
                'write it as "=XX" (quoted-printable), e.g. "=2F" for "/"',
            )
        q = p + 1
    if not host:
        raise StoreSpecError(f'"{_safe(text)}": SQL host not defined')
    if not found:
        raise StoreSpecError(
            f'"{_safe(text)}": no database/table=...',
            "write .../database/table=T?keycol=K?datacol=A",
        )
    options: dict[str, str] = {}
    for item in body[q:].split("?"):
        name, eq, value = item.partition("=")
        if eq:
            options[name.lower()] = value  # the last one wins, as strlcpy() over it does
    table = _unqp(options.get("table", ""))
    keycol = _unqp(options.get("keycol", ""))
    datacol = tuple(c.strip() for c in _unqp(options.get("datacol", "")).split(","))
    if not table or not keycol or not any(datacol):
        raise StoreSpecError(
            f'"{_safe(text)}": table, keycol and datacol are all required',
            "e.g. .../table=dkim?keycol=domain?datacol=id",
        )
    for name in (table, keycol, *datacol):
        if not _IDENTIFIER.match(name):
            raise StoreSpecError(
                f'"{_safe(text)}": "{name}" is not a plain SQL table or column name',
                "names are written into the query: letters, digits, _ and $ only",
            )
    if port and not port.isdigit():
        raise StoreSpecError(f'"{_safe(text)}": port "{_unqp(port)}" is not a number')
    return DsnSpec(
        backend=backend,
        host=_unqp(host),
        dbase=_unqp(dbase),
        table=table,
        keycol=keycol,
        datacol=datacol,
        user=_unqp(user),
        password=_unqp(password),
        port=port,
        filter=_unqp(options.get("filter", "")),
        text=text,
    )


def _safe(text: str) -> str:
    """The value for an error message, without its password."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", text)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def _row(values: tuple[Any, ...] | list[Any]) -> Row:
    return tuple(_cell(v) for v in values)


# -- blocking drivers behind a bounded thread pool --------------------------------------


class _Cursor(Protocol):
    def execute(self, query: str, params: tuple[Any, ...] = ...) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int) -> list[Any]: ...
    def close(self) -> None: ...


class _Connection(Protocol):
    def cursor(self) -> Any: ...
    def close(self) -> None: ...


class _ThreadedStore:
    """A blocking DB-API driver in its own small thread pool, one connection per thread.

    A connection that failed is dropped, so the next lookup on that thread connects again:
    that is how the store recovers when the server comes back.
    """

    placeholder = "?"

    def __init__(self, spec: DsnSpec, *, pool_size: int = POOL_SIZE) -> None:
        self.spec = spec
        self._pool_size = pool_size
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._all_lock = threading.Lock()
        self._query = spec.select(self.placeholder)

    def describe(self) -> str:
        return self.spec.describe()

    def _connect(self) -> _Connection:
        raise NotImplementedError

    def _errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def _conn(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _drop(self) -> None:
        conn: _Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._all_lock:
                if conn in self._all:
                    self._all.remove(conn)
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                conn.close()

    def _run(self, work: Callable[[], Any]) -> Any:
        try:
            return work()
        except self._errors() as exc:
            self._drop()
            raise StoreError(f"{self.describe()}: {_reason(exc)}") from None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._pool_size, thread_name_prefix=f"dkimd-{self.spec.backend}"
            )
        return self._executor

    async def _in_thread(self, work: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self._run, work)

    async def open(self) -> None:
        def check() -> None:
            cur = self._conn().cursor()
            try:
                cur.execute(self._query, ("",))
                cur.fetchall()
            finally:
                cur.close()

        await self._in_thread(check)

    async def get(self, key: str) -> list[Row]:
        def lookup() -> list[Row]:
            cur = self._conn().cursor()
            try:
                cur.execute(self._query, (key,))
                return [_row(r) for r in cur.fetchall()]
            finally:
                cur.close()

        rows: list[Row] = await self._in_thread(lookup)
        return rows

    async def get_many(self, keys: list[str]) -> dict[str, list[Row]]:
        """The rows of many keys, by the key column as the database returns it."""

        def lookup() -> dict[str, list[Row]]:
            found: dict[str, list[Row]] = {}
            cur = self._conn().cursor()
            try:
                for start in range(0, len(keys), MANY_BATCH):
                    chunk = tuple(keys[start : start + MANY_BATCH])
                    cur.execute(self.spec.select_many(self.placeholder, len(chunk)), chunk)
                    for r in cur.fetchall():
                        row = _row(r)
                        found.setdefault(row[0], []).append(row[1:])
            finally:
                cur.close()
            return found

        found: dict[str, list[Row]] = await self._in_thread(lookup)
        return found

    async def walk(self) -> AsyncIterator[tuple[str, Row]]:
        # A connection of its own: a walk must not hold a lookup thread's cursor open.
        conn = await self._in_thread(self._connect)
        try:
            cur = await self._in_thread(conn.cursor)
            await self._in_thread(lambda: cur.execute(self.spec.select_all(self.placeholder)))
            while True:
                batch = await self._in_thread(lambda: cur.fetchmany(WALK_BATCH))
                if not batch:
                    break
                for r in batch:
                    row = _row(r)
                    yield row[0], row[1:]
        finally:
            await asyncio.get_running_loop().run_in_executor(self._pool(), conn.close)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        with self._all_lock:
            conns, self._all = self._all, []
        self._local = threading.local()
        for conn in conns:
            with contextlib.suppress(Exception):  # closing a dead connection: best effort
                conn.close()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _reason(exc: BaseException) -> str:
    """The driver's message, first line only (never the DSN, which may hold a password)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class SqliteStore(_ThreadedStore):
    """`dsn:sqlite3://DIR/FILE/...`: the file opened read-only."""

    placeholder = "?"

    @property
    def path(self) -> str:
        # OpenDBX's sqlite3 back end puts host and database side by side, no "/" between
        # (host is "the directory, with its trailing slash"): `=2Fvar=2Flib=2F/keys.db` is
        # /var/lib/keys.db, `dk/im.db` is dkim.db in the working directory. Observed with
        # Debian's OpenDKIM 2.11 + libopendbx1-sqlite3 (docs/differences.md).
        return self.spec.host + self.spec.dbase

    def _connect(self) -> _Connection:
        import sqlite3
        import urllib.parse

        # Read-only and never created: a mistyped path is an error, not a new empty file.
        uri = "file:" + urllib.parse.quote(self.path) + "?mode=ro"
        conn = sqlite3.connect(
            uri, uri=True, timeout=CONNECT_TIMEOUT, check_same_thread=False, isolation_level=None
        )
        return conn

    def _errors(self) -> tuple[type[BaseException], ...]:
        import sqlite3

        return (sqlite3.Error,)


class MysqlStore(_ThreadedStore):
    """`dsn:mysql://...`: MariaDB or MySQL through PyMySQL (caching_sha2_password works).

    A host starting with `/` is the server's UNIX socket.
    """

    placeholder = "%s"

    def __init__(self, spec: DsnSpec, *, pool_size: int = POOL_SIZE) -> None:
        try:
            import pymysql  # noqa: F401
        except ImportError:
            raise MissingExtra("dsn:mysql", "sql", "pymysql") from None
        super().__init__(spec, pool_size=pool_size)

    def _connect(self) -> _Connection:
        import pymysql

        spec = self.spec
        where: dict[str, Any] = (
            {"unix_socket": spec.host}
            if spec.host.startswith("/")
            else {"host": spec.host, "port": int(spec.port or 3306)}
        )
        conn: _Connection = pymysql.connect(
            user=spec.user or None,
            password=spec.password,
            database=spec.dbase,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=IO_TIMEOUT,
            write_timeout=IO_TIMEOUT,
            charset="utf8mb4",
            autocommit=True,
            **where,
        )
        return conn

    def _errors(self) -> tuple[type[BaseException], ...]:
        import pymysql

        return (pymysql.err.Error, OSError)


class PgsqlStore:
    """`dsn:pgsql://...`: PostgreSQL through psycopg 3's async connection pool.

    A host starting with `/` is the directory of the server's UNIX socket. The pool checks
    a connection before lending it, so one broken by a server restart is replaced.
    """

    def __init__(self, spec: DsnSpec, *, pool_size: int = POOL_SIZE) -> None:
        try:
            import psycopg  # noqa: F401
            import psycopg_pool  # noqa: F401
        except ImportError:
            raise MissingExtra("dsn:pgsql", "sql", "psycopg, psycopg_pool") from None
        self.spec = spec
        self._pool_size = pool_size
        self._pool: Any = None
        self._query = spec.select("%s")

    def describe(self) -> str:
        return self.spec.describe()

    def _conninfo(self) -> dict[str, Any]:
        spec = self.spec
        info: dict[str, Any] = {
            "host": spec.host,
            "dbname": spec.dbase,
            "connect_timeout": max(1, int(CONNECT_TIMEOUT)),
            "application_name": "dkimd",
        }
        if spec.port:
            info["port"] = spec.port
        if spec.user:
            info["user"] = spec.user
        if spec.password:
            info["password"] = spec.password
        return info

    def _make_pool(self) -> Any:
        from psycopg_pool import AsyncConnectionPool

        return AsyncConnectionPool(
            kwargs={**self._conninfo(), "autocommit": True},
            min_size=1,
            max_size=self._pool_size,
            open=False,
            timeout=CONNECT_TIMEOUT,
            check=AsyncConnectionPool.check_connection,
            reconnect_timeout=0,  # keep trying for ever: the server may come back later
            name=f"dkimd-{self.spec.table}",
        )

    async def open(self) -> None:
        import psycopg

        # One direct connection first: its error says why (wrong password, no such
        # database, TLS required), where the pool would only say "timed out".
        try:
            conn = await psycopg.AsyncConnection.connect(**self._conninfo(), autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"{self.describe()}: {_reason(exc)}") from None
        try:
            async with conn.cursor() as cur:
                await cur.execute(self._query, ("",))
        except psycopg.Error as exc:
            raise StoreError(f"{self.describe()}: {_reason(exc)}") from None
        finally:
            await conn.close()
        await self._ensure_pool()

    async def _ensure_pool(self) -> Any:
        if self._pool is None:
            pool = self._make_pool()
            await pool.open(wait=False)
            self._pool = pool
        return self._pool

    async def get(self, key: str) -> list[Row]:
        import psycopg
        import psycopg_pool

        pool = await self._ensure_pool()
        try:
            async with pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(self._query, (key,))
                return [_row(r) for r in await cur.fetchall()]
        except (psycopg.Error, psycopg_pool.PoolTimeout, OSError) as exc:
            raise StoreError(f"{self.describe()}: {_reason(exc)}") from None

    async def get_many(self, keys: list[str]) -> dict[str, list[Row]]:
        """The rows of many keys, by the key column as the database returns it."""
        import psycopg
        import psycopg_pool

        pool = await self._ensure_pool()
        found: dict[str, list[Row]] = {}
        try:
            async with pool.connection() as conn, conn.cursor() as cur:
                for start in range(0, len(keys), MANY_BATCH):
                    chunk = tuple(keys[start : start + MANY_BATCH])
                    await cur.execute(self.spec.select_many("%s", len(chunk)), chunk)
                    for r in await cur.fetchall():
                        row = _row(r)
                        found.setdefault(row[0], []).append(row[1:])
        except (psycopg.Error, psycopg_pool.PoolTimeout, OSError) as exc:
            raise StoreError(f"{self.describe()}: {_reason(exc)}") from None
        return found

    async def walk(self) -> AsyncIterator[tuple[str, Row]]:
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(**self._conninfo())
        except psycopg.Error as exc:
            raise StoreError(f"{self.describe()}: {_reason(exc)}") from None
        try:
            # A named (server-side) cursor inside a transaction: a million rows stream.
            async with conn.transaction(), conn.cursor(name="dkimd_walk") as cur:
                cur.itersize = WALK_BATCH
                await cur.execute(self.spec.select_all("%s"))
                async for r in cur:
                    row = _row(r)
                    yield row[0], row[1:]
        except psycopg.Error as exc:
            raise StoreError(f"{self.describe()}: {_reason(exc)}") from None
        finally:
            await conn.close()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(timeout=1.0)


def from_spec(text: str, *, pool_size: int = POOL_SIZE) -> RemoteStore:
    """The store a `dsn:` value names (not yet opened); raises StoreSpecError/MissingExtra."""
    spec = parse_dsn(text)
    if spec.backend == "sqlite3":
        return SqliteStore(spec, pool_size=pool_size)
    if spec.backend == "pgsql":
        return PgsqlStore(spec, pool_size=pool_size)
    return MysqlStore(spec, pool_size=pool_size)
