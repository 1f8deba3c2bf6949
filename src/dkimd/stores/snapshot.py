"""List options behind a server, read whole at load: OpenDKIM's dkimf_db_mkarray().

Some data set options are not looked up by a key the message brings but used as a list:
MacroList (every macro named is asked of the MTA), and the header name lists. OpenDKIM
reads those once, when the configuration is loaded (dkimf_config_load calls
dkimf_db_mkarray, which walks an SQL, LDAP or other data set row by row), and uses the
list until the next reload. dkimd does the same: the store is walked at load (on a loop and
thread of its own: loading is synchronous and may run where a loop is already running),
and the option gets an ordinary in-memory data set built from the rows, exactly as if they
had been lines of a `file:` (key = the key column, value = the data columns joined with
`:`; the first row of a key wins). A reload (SIGHUP, `dkimd reload`) reads it again.

Bounded: at most MAX_ROWS rows (these lists are short; a longer one is a mistake and
refused with a message) and WALK_TIMEOUT seconds. A store that cannot be walked stops the
start (exit 78), or with SoftStart is a warning and the option is left unset (its default)
until a reload.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dkimd.config.datasets import Dataset, DatasetEntry, DatasetKind, ascii_lower
from dkimd.config.problems import Problem, Severity
from dkimd.config.softstart import failure_severity
from dkimd.stores.base import MissingExtra, StoreError, StoreSpecError
from dkimd.stores.dataset import run_apart

if TYPE_CHECKING:
    from dkimd.stores.ldap import LdapSettings

__all__ = [
    "MAX_ROWS",
    "SNAPSHOT_OPTIONS",
    "WALK_TIMEOUT",
    "SnapshotDataset",
    "open_snapshot_dataset",
]

#: Options (lower case) whose remote data set is read whole at load.
SNAPSHOT_OPTIONS = frozenset(
    {
        "macrolist",
        "signheaders",
        "omitheaders",
        "oversignheaders",
        "senderheaders",
        "mustbesigned",
        "replaceheaders",
        "arcsignheaders",
        # looked up by a key in OpenDKIM, but read as a list by dkimd: a snapshot keeps
        # the lookups in memory (a row added shows after a reload)
        "domain",
        "removearfrom",
        "trustsignaturesfrom",
    }
)

#: Rows read at most: these are lists of macro or header names, a few dozen at the most.
MAX_ROWS = 10_000

#: Seconds the whole walk may take at load (as long as the log-in check of the other
#: stores, dkimd.stores.dataset.OPEN_TIMEOUT: a reload waits for it).
WALK_TIMEOUT = 5.0


class _TooLong(Exception):
    pass


def _walk(text: str, ldap: LdapSettings | None) -> tuple[str, list[tuple[str, tuple[str, ...]]]]:
    """(the store's description, its rows) read on a throw-away loop and thread."""
    from dkimd.stores import open_store

    store = open_store(text, ldap=ldap)
    description = store.describe()
    rows: list[tuple[str, tuple[str, ...]]] = []

    async def read() -> None:
        try:
            await store.open()
            async for key, row in store.walk():
                if len(rows) >= MAX_ROWS:
                    raise _TooLong
                rows.append((key, row))
        finally:
            await store.close()

    run_apart(read, WALK_TIMEOUT, what="not read", name="dkimd-store-snapshot")
    return description, rows


def open_snapshot_dataset(
    text: str,
    *,
    case_insensitive: bool,
    origin: tuple[str, int] | None,
    option: str | None,
    soft_start: bool,
    options: Callable[[str], Any] | None = None,
) -> tuple[Dataset | None, list[Problem]]:
    """Read a list option's remote data set whole now; never raises. `options` looks up
    the configuration's options by name: an `ldap:` set binds as the LDAP* ones say."""
    from dkimd.stores.settings import store_settings

    where_file, where_line = origin if origin is not None else (None, None)

    def problem(severity: Severity, message: str, hint: str | None = None) -> Problem:
        said = f"{option}: {message}" if option else message
        return Problem(where_file, where_line, severity, said, hint, option)

    _, ldap, problems = store_settings(text, options)
    if problems:
        return None, problems
    try:
        description, rows = _walk(text, ldap)
    except (MissingExtra, StoreSpecError) as exc:
        return None, [problem(Severity.ERROR, exc.message, exc.hint)]
    except _TooLong:
        return None, [
            problem(
                Severity.ERROR,
                f"more than {MAX_ROWS} rows; this option is read whole at load",
                "keep only the names the option needs in that table",
            )
        ]
    except (StoreError, OSError) as exc:
        severity = failure_severity(DatasetKind.REMOTE.value, soft_start)
        message = f"cannot read data set {_safe(text)}: {exc}"
        if severity is Severity.ERROR:
            return None, [problem(severity, message, "SoftStart yes starts anyway")]
        # As if the option were not set (its default: SignHeaders' list, no MacroList...),
        # not an empty list: an empty SignHeaders would sign no header at all.
        return None, [problem(severity, message + "; the option is not set until a reload")]
    entries: list[DatasetEntry] = []
    seen: set[str] = set()
    for key, row in rows:
        folded = ascii_lower(key) if case_insensitive else key
        if not key or folded in seen:
            continue  # the first row of a key wins, as for file lines
        seen.add(folded)
        value = ":".join(row)
        entries.append(DatasetEntry(key, value or None, description, None))
    dataset = SnapshotDataset(text, DatasetKind.FILE, entries, case_insensitive=case_insensitive)
    dataset.description = description
    return dataset, []


class SnapshotDataset(Dataset):
    """The rows read at load; `spec` keeps the value as written (it may hold a password),
    so what output shows is the store's own description."""

    __slots__ = ("description",)

    description: str

    def describe(self) -> str:
        return self.description

    def __repr__(self) -> str:
        return f"SnapshotDataset({self.description!r}, {len(self.entries)} entries)"


def _safe(text: str) -> str:
    """The store as logs may show it (no password)."""
    from dkimd.stores import open_store

    try:
        return open_store(text).describe()
    except Exception:  # the URL was fine a moment ago; never echo it raw
        return text.partition(":")[0] + ":..."
