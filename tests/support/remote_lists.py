"""A session driven through the milter wire with remote data sets (tests/unit/stores,
tests/interop/test_hostlist_differential.py): one connection and message per call, as
Postfix sends them, with the NeedRows rounds counted."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.dns.testdata import TestDnsFile
from dkimd.milter.handler import ConnectionInfo, MilterHandler, Prefetch, Request, Step
from dkimd.server import perform_request
from dkimd.session import Runtime, RuntimeHolder, SessionStats, handler_factory
from dkimd.stores.dataset import PINS, Pins, RowsMissing, remote_datasets
from dkimd.stores.lookups import NeedRows
from support.milterwire import macro, pkt

T = TypeVar("T")


def sqlite_url(db: Path, table: str, keycol: str = "k", datacol: str = "v") -> str:
    """A `dsn:` for an SQLite file, as OpenDBX spells it (the directory with its /)."""
    where = str(db.parent).replace("/", "=2F") + "=2F"
    return f"dsn:sqlite3://{where}/{db.name}/table={table}?keycol={keycol}?datacol={datacol}"


def sqlite_table(db: Path, table: str, rows: Sequence[tuple[str, str]]) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (k TEXT PRIMARY KEY, v TEXT)")
    conn.executemany(f"INSERT INTO {table} VALUES (?, ?)", rows)
    conn.commit()
    conn.close()


def sqlite_exec(db: Path, statement: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute(statement)
    conn.commit()
    conn.close()


def key_file(directory: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = directory / "sel.private"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def base_config(directory: Path) -> str:
    """Signs example.com with a file key; every list option comes from the test."""
    return (
        "Mode sv\nAuthservID mx.test\nSocket inet:21000@127.0.0.1\n"
        f"Domain example.com\nSelector sel\nKeyFile {key_file(directory)}\n"
        "DataSetCacheTTL 0\nDataSetNegativeCacheTTL 0\n"
    )


class Outcome:
    """What the MTA saw for one connection and message."""

    def __init__(self, actions: list[milter.Action], stage: str, requests: int) -> None:
        self.actions = actions
        self.stage = stage  # the event the final reply came at: C (connect), EOH, EOM
        self.requests = requests  # NeedRows rounds the handler asked for

    @property
    def final(self) -> milter.Action | None:
        return self.actions[-1] if self.actions else None

    @property
    def signed(self) -> bool:
        return any(
            isinstance(a, milter.InsertHeader | milter.AddHeader) and a.name == b"DKIM-Signature"
            for a in self.actions
        )

    @property
    def tempfailed(self) -> bool:
        final = self.final
        if isinstance(final, milter.TempFail):
            return True
        return isinstance(final, milter.ReplyCode) and str(final.code).startswith("4")

    def __repr__(self) -> str:
        return f"Outcome({self.stage}, {self.actions!r})"


class Mta:
    """One configuration's sessions, driven as Postfix drives them (one event at a time)."""

    def __init__(self, config_text: str) -> None:
        self.config = parse_config_text(config_text)
        self.holder = RuntimeHolder(Runtime.build(self.config, TestDnsFile.from_records({})))

    async def message(
        self,
        address: str = "127.0.0.1",
        hostname: str = "localhost",
        *,
        sender: str = "alice@example.com",
        recipients: Sequence[str] = ("bob@example.net",),
        eoh_macros: dict[str, str] | None = None,
    ) -> Outcome:
        conn = milter.Connection(
            milter.FilterOptions(
                actions=milter.ActionFlag(0x1FF),
                protocol=milter.ProtocolFlag.HDR_LEADSPC | milter.ProtocolFlag.NR_HDR,
            )
        )
        handler: MilterHandler = handler_factory(self.holder, SessionStats())(
            ConnectionInfo(conn, "t")
        )
        family = b"6" if ":" in address else b"4"
        stream = pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
        stream += macro(b"C", {"j": "mx.test"})
        stream += pkt(
            b"C",
            hostname.encode() + b"\0" + family + struct.pack(">H", 25) + address.encode() + b"\0",
        )
        stream += macro(b"M", {"i": "QID"}) + pkt(b"M", f"<{sender}>".encode() + b"\0")
        for rcpt in recipients:
            stream += pkt(b"R", f"<{rcpt}>".encode() + b"\0")
        headers = [(b"From", f" <{sender}>".encode()), (b"To", b" bob@example.net")]
        for name, value in headers:
            stream += pkt(b"L", name + b"\0" + value + b"\0")
        if eoh_macros:
            stream += macro(b"N", eoh_macros)
        stream += pkt(b"N") + pkt(b"B", b"Hello.\r\n") + pkt(b"E")
        conn.receive_data(stream)
        out: list[milter.Action] = []
        requests = 0
        stage = "EOM"
        while True:
            event = conn.next_event()
            if event is milter.NEED_DATA:
                break
            if isinstance(event, milter.OptionNegotiation):
                conn.send(milter.Continue())
                continue
            step: Step = handler.handle(event)
            while isinstance(step, Request):  # as the server does (support.handler.settle)
                if isinstance(step, NeedRows):
                    requests += 1
                answer = step.answer_now()
                if answer is None:
                    answer = await perform_request(step)
                step = handler.provide(answer)
            result = None if isinstance(step, Prefetch) else step
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
                stage = {milter.Connect: "C", milter.EndOfHeaders: "EOH"}.get(type(event), "EOM")
                break
        handler.close()
        return Outcome([a for a in out if not isinstance(a, milter.Continue)], stage, requests)

    async def close(self) -> None:
        for dataset in remote_datasets(self.holder.current.config):
            await dataset.cache.close()

    def run(self, *args: object, **kw: object) -> Outcome:
        async def once() -> Outcome:
            try:
                return await self.message(*args, **kw)  # type: ignore[arg-type]
            finally:
                await self.close()

        return asyncio.run(once())


async def ask(call: Callable[[], T]) -> tuple[T, int]:
    """Run `call` as the session's wrapper would: fetch what it misses, run it again.
    Returns its answer and the number of rounds it took."""
    pins: Pins = {}
    rounds = 0
    while True:
        token = PINS.set(pins)
        try:
            return call(), rounds
        except RowsMissing as need:
            wanted = need.wanted
        finally:
            PINS.reset(token)
        rounds += 1
        if rounds > 3:
            raise AssertionError("more than 3 rounds")
        pins.update(await NeedRows(wanted).perform())
