"""A remote store as a data set option's value (KeyTable, SigningTable, ...).

`RemoteDataset` is a `Dataset` whose lookups are answered from memory without awaiting:
first the rows fetched for the message being handled ("pins", set by
`dkimd.stores.lookups.RemoteRowsHandler` around each call into the session), then the
store's cache. A key found in neither raises `RowsMissing`: the handler wrapper turns it
into a `NeedRows` request that the server performs, then runs the same event again with
the rows pinned. A key whose lookup failed raises `StoreError`, which ends the message with
the On-InternalError action.

A row's columns are joined with ":" into the entry's value, the column separator of
OpenDKIM's file data sets, so a KeyTable row `(domain, selector, key)` reads exactly as
the file line `name domain:selector:key` does. Only the first row of a key is used, as
OpenDKIM's dkimf_db_get() does for SQL.

Such a set answers lookups but cannot be listed: the options dkimd reads whole at load
(header lists, MacroList, Domain, ...) refuse it, as they refuse `lua:`.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

from dkimd.config.datasets import Dataset, DatasetEntry, DatasetKind, ascii_lower
from dkimd.config.problems import Problem, Severity
from dkimd.config.softstart import failure_severity
from dkimd.stores.base import MissingExtra, RemoteStore, Row, StoreError, StoreSpecError
from dkimd.stores.cache import CacheSettings, StoreCache
from dkimd.stores.ldap import LdapSettings

__all__ = [
    "PINS",
    "REMOTE_OPTIONS",
    "RemoteDataset",
    "RowsMissing",
    "close_stores",
    "close_stores_later",
    "open_remote_dataset",
    "pin_key",
    "remote_datasets",
    "run_apart",
]

_T = TypeVar("_T")

#: Rows fetched for the current message: (id of the StoreCache, key) -> rows or the error.
Pins = dict[tuple[int, str], "list[Row] | StoreError"]
PINS: contextvars.ContextVar[Pins | None] = contextvars.ContextVar("dkimd_store_pins", default=None)

#: The options a remote data set may be used for: those whose lookups go through
#: `Dataset.match` while a message is handled, with their keys fetched before the session
#: needs them (host lists: dkimd.stores.hostlist; per-message keys: dkimd.stores.prefetch).
#: The list options read whole at load are dkimd.stores.snapshot's; others are refused.
REMOTE_OPTIONS = frozenset(
    {"keytable", "signingtable", "peerlist", "internalhosts", "externalignorelist"}
    | {"arcsealhosts", "arcsealmailto", "exemptdomains", "dontsignmailto", "mta"}
    | {"bodylengthdb", "atpsdomains", "resignmailto"}
)

#: Seconds a configuration load waits to log in to a store (the start-up check).
OPEN_TIMEOUT = 5.0


def pin_key(cache: StoreCache, key: str) -> tuple[int, str]:
    return (id(cache), key)


class RowsMissing(Exception):
    """Lookups that need the store: (cache, key) pairs not in memory yet."""

    def __init__(self, wanted: Sequence[tuple[StoreCache, str]]) -> None:
        super().__init__(f"{len(wanted)} remote lookups needed")
        self.wanted = tuple(wanted)


class RemoteDataset(Dataset):
    """A data set answered by a remote store through its cache."""

    __slots__ = ("cache", "load_problem")

    def __init__(self, spec: str, cache: StoreCache, *, case_insensitive: bool = True) -> None:
        super().__init__(spec, DatasetKind.REMOTE, (), case_insensitive=case_insensitive)
        self.cache = cache
        #: The warning a failed login at load left (SoftStart), which `dkimd check`
        #: replaces with what a lookup says now.
        self.load_problem: Problem | None = None

    def describe(self) -> str:
        return self.cache.describe()  # never the password the URL may hold

    def __repr__(self) -> str:
        return f"RemoteDataset({self.describe()!r})"

    def _key(self, key: str) -> str:
        # Case-blind options (SigningTable, host lists) ask with the key in lower case:
        # the table is expected to hold its keys so (docs/datasets.md).
        return ascii_lower(key) if self.case_insensitive else key

    def _rows(self, key: str) -> list[Row] | None:
        pins = PINS.get()
        if pins is not None:
            pinned = pins.get(pin_key(self.cache, key))
            if isinstance(pinned, StoreError):
                raise pinned
            if pinned is not None:
                return pinned
        return self.cache.cached(key)

    def prefetch(self, keys: Sequence[str]) -> None:
        """Raise RowsMissing for every key of `keys` not in memory (one round trip for all)."""
        missing: list[tuple[StoreCache, str]] = []
        for key in keys:
            if not self._query_ok(key):
                continue
            folded = self._key(key)
            if self._rows(folded) is None:
                missing.append((self.cache, folded))
        if missing:
            raise RowsMissing(missing)

    def match(self, key: str) -> DatasetEntry | None:
        if not self._query_ok(key):
            return None
        folded = self._key(key)
        rows = self._rows(folded)
        if rows is None:
            raise RowsMissing([(self.cache, folded)])
        if not rows:
            return None
        value = ":".join(rows[0])
        return DatasetEntry(key, value or None, self.cache.describe(), None)

    def match_all(self, key: str) -> list[DatasetEntry]:
        entry = self.match(key)
        return [] if entry is None else [entry]

    def __len__(self) -> int:
        return 1  # not listable, but not empty: users that skip an empty set must ask it

    def __iter__(self) -> Iterator[DatasetEntry]:
        return iter(())

    def _identity(self) -> tuple[object, ...]:
        return (self.spec, self.kind, id(self))


def run_apart(work: Callable[[], Awaitable[_T]], timeout: float, *, what: str, name: str) -> _T:
    """`work()` on a loop and thread of its own, within `timeout` seconds; for the
    configuration load, which is synchronous and may run where a loop is already running.

    Past the timeout: StoreError "`what` within N s". Whatever else `work` raises is raised
    here, in the caller's thread.
    """
    results: list[_T] = []
    errors: list[BaseException] = []

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            results.append(await work())

    def run() -> None:
        try:
            asyncio.run(bounded())
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join(timeout + 2.0)
    if worker.is_alive() or (errors and isinstance(errors[0], TimeoutError)):
        raise StoreError(f"{what} within {timeout:g}s")
    if errors:
        raise errors[0]
    return results[0]


def _probe(make_store: Callable[[], RemoteStore], timeout: float = OPEN_TIMEOUT) -> None:
    """Log in once with a throw-away store; the daemon's own store connects lazily, in the
    worker process that uses it."""

    async def attempt() -> None:
        store = make_store()
        try:
            await store.open()
        finally:
            await store.close()

    run_apart(attempt, timeout, what="no answer", name="dkimd-store-probe")


def open_remote_dataset(
    text: str,
    *,
    case_insensitive: bool,
    origin: tuple[str, int] | None,
    option: str | None,
    soft_start: bool,
    settings: CacheSettings | None = None,
    check: bool = True,
    options: Callable[[str], Any] | None = None,
) -> tuple[Dataset | None, list[Problem]]:
    """Open a remote data set for `option`; never raises.

    `options` looks up the configuration's options by name (a loader's `get`): the
    DataSet* options and, for `ldap:` sets, the LDAP* ones (dkimd.stores.settings); they
    replace `settings`. With `check`, log in once now: a store that refuses (wrong
    password, no such table, unreachable) stops the start (exit 78), or with SoftStart is
    a warning and every lookup tries again.
    """
    from dkimd.stores import open_store
    from dkimd.stores.settings import store_settings

    where_file, where_line = origin if origin is not None else (None, None)

    def problem(severity: Severity, message: str, hint: str | None = None) -> Problem:
        text_ = f"{option}: {message}" if option else message
        return Problem(where_file, where_line, severity, text_, hint, option)

    from dkimd.stores.snapshot import SNAPSHOT_OPTIONS, open_snapshot_dataset

    if option is not None and option.lower() in SNAPSHOT_OPTIONS:
        return open_snapshot_dataset(
            text,
            case_insensitive=case_insensitive,
            origin=origin,
            option=option,
            soft_start=soft_start,
            options=options,
        )
    if option is not None and option.lower() not in REMOTE_OPTIONS:
        return None, [
            problem(
                Severity.ERROR,
                f"a data set behind a server cannot be used for {option}",
                "keep this one in a file (docs/datasets.md lists the options that can be)",
            )
        ]
    ldap: LdapSettings | None = None
    if options is not None:
        settings, ldap, problems = store_settings(text, options)
        if problems:
            return None, problems
    try:
        store = open_store(text, ldap=ldap)
    except MissingExtra as exc:
        return None, [problem(Severity.ERROR, exc.message, exc.hint)]
    except StoreSpecError as exc:
        return None, [problem(Severity.ERROR, exc.message, exc.hint)]
    problems = []
    load_problem: Problem | None = None
    if check:
        # An LDAP login is connect + StartTLS + bind, each bounded by LDAPTimeout.
        budget = OPEN_TIMEOUT if ldap is None else max(OPEN_TIMEOUT, 3.0 * ldap.timeout + 1)
        try:
            _probe(lambda: open_store(text, ldap=ldap), budget)
        except (StoreError, StoreSpecError, OSError) as exc:
            severity = failure_severity(DatasetKind.REMOTE.value, soft_start)
            message = f"cannot use data set {store.describe()}: {exc or type(exc).__name__}"
            if severity is Severity.ERROR:
                problems.append(problem(severity, message, "SoftStart yes starts anyway"))
                return None, problems
            load_problem = problem(severity, message)
            problems.append(load_problem)
    cache = StoreCache(store, settings)
    dataset = RemoteDataset(text, cache, case_insensitive=case_insensitive)
    dataset.load_problem = load_problem
    return dataset, problems


_closing: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps weak refs)


async def close_stores(config: Any) -> None:
    """Close the connections of a configuration's remote data sets (at stop)."""
    for dataset in remote_datasets(config):
        await dataset.cache.close()


def close_stores_later(config: Any, delay: float = 60.0) -> None:
    """After a reload: close the replaced configuration's stores once the messages that
    started under it are done (a message is bounded by the MTA's milter timeouts)."""
    if not remote_datasets(config):
        return
    loop = asyncio.get_running_loop()

    def close() -> None:
        task = loop.create_task(close_stores(config))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    loop.call_later(delay, close)


def remote_datasets(config: Any) -> list[RemoteDataset]:
    """The remote data sets a configuration uses (for the handler wrapper and shutdown)."""
    from dkimd.stores.prefetch import remote_datasets_of

    return remote_datasets_of(config)
