"""Real SQL servers for the `dsn:` tests: PostgreSQL and MariaDB, each in its own data dir.

Started on loopback with a free port and a UNIX socket under the test's tmp_path, stopped
(and killed if need be) at the end. PostgreSQL and MariaDB refuse to run as root, so when
the tests run as root the server runs as the `postgres` / `mysql` system user that the
apt packages create, and the directories on the way to tmp_path get the search (x) bit
for others so that user can reach its data dir (nothing becomes listable or writable).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .tools import free_port, require, unavailable, wait_for_port

__all__ = ["MariaServer", "PgServer", "start_mariadb", "start_postgres"]

PG_BINDIRS = (
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
)

#: The account dkimd logs in with, and the admin password the tests use.
USER = "dkimd"
PASSWORD = "s3cret-pw"
DBNAME = "dkim"


def _pg_tool(name: str) -> str:
    for d in PG_BINDIRS:
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return require(name)


def _as_user(account: str) -> tuple[int, int] | None:
    """(uid, gid) to run a server as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(account)
    except KeyError:
        unavailable(f"no {account} user to run the server as (apt-get install the server)")
    return pw.pw_uid, pw.pw_gid


def _server_dir(base: Path, owner: tuple[int, int] | None) -> Path:
    """Where the server keeps its data: `base` itself when we are not root; as root, a
    fresh directory of the server's user under /tmp, because pytest keeps resetting
    /tmp/pytest-of-root to mode 0700 (any concurrent pytest run does), which would shut
    the server out of anything under tmp_path. Removed by `cleanup()`."""
    if owner is None:
        return base
    path = Path(tempfile.mkdtemp(prefix="dkimd-sql-", dir="/tmp"))
    path.chmod(0o700)
    os.chown(path, *owner)
    (base / "server-dir").write_text(str(path))  # for whoever debugs a failed run
    return path


def _run(cmd: list[str], owner: tuple[int, int] | None, **kw: object) -> None:
    user = None if owner is None else owner[0]
    group = None if owner is None else owner[1]
    done = subprocess.run(cmd, user=user, group=group, capture_output=True, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        out = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {out}")


@dataclass
class PgServer:
    """A private PostgreSQL: admin over its UNIX socket (trust), dkimd over TCP (password)."""

    datadir: Path
    sockdir: Path
    port: int
    owner: tuple[int, int] | None
    log: Path
    running: bool = field(default=False)

    def dsn(
        self,
        table: str = "keys",
        keycol: str = "id",
        datacol: str = "data",
        *,
        user: str = USER,
        password: str = PASSWORD,
        extra: str = "",
    ) -> str:
        return (
            f"dsn:pgsql://{user}:{password}@{self.port}+127.0.0.1/{DBNAME}/"
            f"table={table}?keycol={keycol}?datacol={datacol}{extra}"
        )

    def execute(self, *statements: str, params: tuple[object, ...] = ()) -> None:
        import psycopg

        with psycopg.connect(
            host=str(self.sockdir), port=self.port, user="postgres", dbname=DBNAME, autocommit=True
        ) as conn:
            for sql in statements:
                conn.execute(sql, params or None)  # type: ignore[arg-type]

    def copy_rows(
        self, table: str, columns: tuple[str, ...], rows: Iterator[tuple[str, ...]]
    ) -> None:
        import psycopg

        with (
            psycopg.connect(
                host=str(self.sockdir),
                port=self.port,
                user="postgres",
                dbname=DBNAME,
                autocommit=True,
            ) as conn,
            conn.cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp,
        ):
            for row in rows:
                cp.write_row(row)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run(
            [
                _pg_tool("pg_ctl"),
                "-D",
                str(self.datadir),
                "-o",
                opts,
                "-l",
                str(self.log),
                "-w",
                "-t",
                "30",
                "start",
            ],
            self.owner,
        )
        self.running = True

    def cleanup(self) -> None:
        """Stop and remove the data (the directory outside tmp_path when run as root)."""
        self.stop()
        if self.owner is not None:
            shutil.rmtree(self.datadir.parent, ignore_errors=True)

    def reload(self) -> None:
        """Re-read pg_hba.conf and postgresql.conf (pg_ctl reload), and wait for it."""
        _run([_pg_tool("pg_ctl"), "-D", str(self.datadir), "reload"], self.owner)
        time.sleep(0.5)  # the postmaster re-reads on SIGHUP, asynchronously

    def stop(self) -> None:
        if self.running:
            _run(
                [_pg_tool("pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"],
                self.owner,
            )
            self.running = False


def start_postgres(base: Path) -> PgServer:
    owner = _as_user("postgres")
    base.mkdir(parents=True, exist_ok=True)
    base = _server_dir(base, owner)
    datadir, sockdir = base / "pgdata", base / "pgsock"
    for d in (datadir, sockdir):
        d.mkdir()
        if owner is not None:
            os.chown(d, *owner)
    _run(
        [
            _pg_tool("initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        owner,
    )
    (datadir / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    log = base / "pg.log"
    log.touch()
    if owner is not None:
        os.chown(log, *owner)
    server = PgServer(datadir, sockdir, free_port(), owner, log)
    server.start()
    if not wait_for_port("127.0.0.1", server.port, 30):
        raise RuntimeError(f"postgres did not listen: {log.read_text()[-2000:]}")
    import psycopg

    with psycopg.connect(
        host=str(sockdir), port=server.port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f"CREATE DATABASE {DBNAME} OWNER {USER}")
    return server


@dataclass
class MariaServer:
    """A private MariaDB: root over its UNIX socket, dkimd over TCP with a password."""

    datadir: Path
    socket: Path
    port: int
    owner: tuple[int, int] | None
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def dsn(
        self,
        table: str = "dkimkeys",
        keycol: str = "id",
        datacol: str = "data",
        *,
        user: str = USER,
        password: str = PASSWORD,
    ) -> str:
        return (
            f"dsn:mysql://{user}:{password}@{self.port}+127.0.0.1/{DBNAME}/"
            f"table={table}?keycol={keycol}?datacol={datacol}"
        )

    def execute(self, *statements: str) -> None:
        import pymysql

        conn = pymysql.connect(
            unix_socket=str(self.socket), user="root", database=DBNAME, autocommit=True
        )
        try:
            with conn.cursor() as cur:
                for sql in statements:
                    cur.execute(sql)
        finally:
            conn.close()

    def start(self) -> None:
        cmd = [
            shutil.which("mariadbd", path="/usr/sbin:/usr/bin") or require("mariadbd"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.datadir}/mariadb.pid",
            f"--log-error={self.log}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
        ]
        if self.owner is not None:
            cmd.append("--user=mysql")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port("127.0.0.1", self.port, 60):
            self.stop()
            raise RuntimeError(f"mariadbd did not listen: {self.log.read_text()[-2000:]}")

    def cleanup(self) -> None:
        self.stop()
        if self.owner is not None:
            shutil.rmtree(self.datadir.parent, ignore_errors=True)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_mariadb(base: Path) -> MariaServer:
    owner = _as_user("mysql")
    require("mariadbd")
    install = require("mariadb-install-db")
    base.mkdir(parents=True, exist_ok=True)
    base = _server_dir(base, owner)
    datadir = base / "mdata"
    datadir.mkdir()
    if owner is not None:
        os.chown(datadir, *owner)
    log = base / "mariadb.log"
    log.touch()
    if owner is not None:
        os.chown(log, *owner)
    cmd = [
        install,
        "--no-defaults",
        f"--datadir={datadir}",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
    ]
    if owner is not None:
        cmd.append("--user=mysql")
    subprocess.run(cmd, check=True, capture_output=True)
    server = MariaServer(datadir, base / "mysqld.sock", free_port(), owner, log)
    server.start()
    deadline = time.monotonic() + 30
    while not server.socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    import pymysql

    conn = pymysql.connect(unix_socket=str(server.socket), user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DBNAME}")
            cur.execute(f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'")
            cur.execute(f"GRANT SELECT ON {DBNAME}.* TO '{USER}'@'127.0.0.1'")
    finally:
        conn.close()
    return server
