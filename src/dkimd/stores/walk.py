"""The tools' view of remote KeyTable/SigningTable: walks and test queries, on request only.

* `walk_problems`: `dkimd check --walk`, below.
* `keytable_entries`: every entry of a KeyTable, walked when it is remote, for `dkimd testkey`
  and `dkimd genzone` (which need every key). Each step of the walk is bounded by the data
  set's lookup timeout (DataSetTimeout, or LDAPTimeout for ldap:).
* `probe_queries`: `dkimd check` without --walk: one lookup of each remote set (a key no
  table holds), as a message would make, so that a login that works but a query that does
  not (no SELECT right, an LDAP ACL) is reported at the option's line before mail fails.

`dkimd check --walk`:

The daemon never walks a table (a million-row SigningTable would take minutes); this is
the on-demand equivalent of OpenDKIM's start-up check (`CheckSigningTable`): every
SigningTable row naming a key the KeyTable lacks, and every KeyTable row that is not
`domain:selector:key`, is a problem that fails the messages it concerns. The KeyTable's
names are read first (it is the small one), then the SigningTable streams past them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from dkimd.config.datasets import Dataset
from dkimd.config.keytable import (
    KeyTable,
    KeyTableAlgorithmError,
    KeyTableEntry,
    parse_keytable_value,
)
from dkimd.config.problems import Problem, Severity
from dkimd.stores.base import Row, StoreError
from dkimd.stores.cache import StoreCache
from dkimd.stores.dataset import RemoteDataset

__all__ = ["PROBE_KEY", "keytable_entries", "probe_queries", "walk_problems"]

#: The key `probe_queries` looks up: a reserved name (RFC 2606) no table should hold.
PROBE_KEY = "dkimd-check.invalid"

#: Problems reported per table at most: past that, a count.
MAX_REPORTED = 200


def _problem(where: str, message: str, option: str) -> Problem:
    # The daemon starts with such a row and tempfails its messages; to the admin asking
    # what is wrong it is an error all the same (as `dkimd check` counts file tables).
    return Problem(where, None, Severity.ERROR, message, option=option, fails_messages=True)


async def _key_names(dataset: Dataset, problems: list[Problem]) -> tuple[set[str], int]:
    if not isinstance(dataset, RemoteDataset):
        return {entry.key for entry in dataset.entries}, len(dataset.entries)
    names: set[str] = set()
    count = 0
    where = dataset.cache.describe()
    async for key, row in dataset.cache.walk():
        count += 1
        names.add(key)
        try:
            parsed = parse_keytable_value(key, ":".join(row), where, None)
        except KeyTableAlgorithmError as exc:
            parsed = str(exc)
        if isinstance(parsed, str) and len(problems) < MAX_REPORTED:
            problems.append(_problem(where, f'KeyTable row "{key}": {parsed}', "KeyTable"))
    return names, count


async def walk_problems(config: Any) -> tuple[list[Problem], list[str]]:
    """(problems, summary lines) for the remote tables of `config`. Never raises."""
    signing = getattr(config.signing_table, "dataset", None)
    keys = getattr(config.key_table, "dataset", None)
    if not isinstance(signing, RemoteDataset) and not isinstance(keys, RemoteDataset):
        return [], ["--walk: no KeyTable or SigningTable in a database; nothing to walk"]
    problems: list[Problem] = []
    summary: list[str] = []
    names: set[str] = set()
    try:
        if keys is not None:
            names, count = await _key_names(keys, problems)
            summary.append(f"KeyTable: {count} rows walked")
        if isinstance(signing, RemoteDataset):
            where = signing.cache.describe()
            count = missing = 0
            async for pattern, row in signing.cache.walk():
                count += 1
                key_name = ":".join(row).partition(":")[0]
                if key_name in ("%",) or (key_name and key_name in names):
                    continue
                missing += 1
                if len(problems) >= MAX_REPORTED:
                    continue
                why = (
                    "names no key"
                    if not key_name
                    else f'names key "{key_name}", which is not in the KeyTable'
                )
                problems.append(
                    _problem(
                        where,
                        f'SigningTable row "{pattern}" {why}; messages it matches are tempfailed',
                        "SigningTable",
                    )
                )
            summary.append(f"SigningTable: {count} rows walked, {missing} name a missing key")
        elif signing is not None and isinstance(keys, RemoteDataset):
            # A file SigningTable naming keys in a database: the loader could not check it.
            for entry in signing.entries:
                key_name = (entry.value or "").partition(":")[0]
                if key_name and key_name != "%" and key_name not in names:
                    problems.append(
                        Problem(
                            entry.file,
                            entry.line,
                            Severity.ERROR,
                            f'SigningTable entry "{entry.key}" names key "{key_name}", which '
                            "is not in the KeyTable; messages it matches are tempfailed",
                            option="SigningTable",
                            fails_messages=True,
                        )
                    )
    except StoreError as exc:
        problems.append(Problem(None, None, Severity.ERROR, f"--walk: {exc}"))
    finally:
        for dataset in (signing, keys):
            if isinstance(dataset, RemoteDataset):
                await dataset.cache.close()
    return problems, summary


async def _bounded_walk(cache: StoreCache) -> AsyncIterator[tuple[str, Row]]:
    """`cache.walk()`, each row within the set's lookup timeout: a server that stops
    answering mid-walk is a StoreError, not a tool that hangs."""
    timeout = cache.settings.timeout
    rows = cache.walk()
    try:
        while True:
            try:
                async with asyncio.timeout(timeout):
                    item = await anext(rows)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StoreError(f"{cache.describe()}: no answer within {timeout:g}s") from None
            yield item
    finally:
        close = getattr(rows, "aclose", None)
        if close is not None:
            await close()


async def keytable_entries(table: KeyTable) -> tuple[list[KeyTableEntry], list[str]]:
    """(every usable entry of `table`, notes on rows that are not) in the table's order.

    A file KeyTable is already read (its problems were the loader's); a remote one is
    walked now, and its connections closed after. The first row of a key name wins, as a
    lookup's does. Raises StoreError when the store cannot be read.
    """
    dataset = table.dataset
    if not isinstance(dataset, RemoteDataset):
        return list(table), []
    cache = dataset.cache
    where = cache.describe()
    entries: list[KeyTableEntry] = []
    notes: list[str] = []
    seen: set[str] = set()
    try:
        async for key, row in _bounded_walk(cache):
            if key in seen:
                notes.append(f'KeyTable row "{key}": a later row for the same name, not used')
                continue
            seen.add(key)
            try:
                parsed = parse_keytable_value(key, ":".join(row), where, None)
            except KeyTableAlgorithmError as exc:
                parsed = f'KeyTable entry "{key}": {exc}'
            if isinstance(parsed, str):
                notes.append(f"{parsed}; skipped")
                continue
            entries.append(parsed)
    finally:
        await cache.close()
    return entries, notes


async def probe_queries(config: Any) -> tuple[list[Problem], list[str]]:
    """(problems, summary lines): one lookup of each remote KeyTable/SigningTable, located
    at the option's file:line. Never raises. What it finds supersedes the warning a login
    that failed at load left (`RemoteDataset.load_problem`): the caller drops those."""
    problems: list[Problem] = []
    summary: list[str] = []
    raw = getattr(config, "raw", None)
    for option, table in (("KeyTable", config.key_table), ("SigningTable", config.signing_table)):
        dataset = getattr(table, "dataset", None)
        if not isinstance(dataset, RemoteDataset):
            continue
        setting = raw.get(option) if raw is not None else None
        where = (setting.file, setting.line) if setting is not None else (None, None)
        started = time.monotonic()
        timeout = dataset.cache.settings.timeout
        try:
            # The store itself, not the cache: the tool reports a failure here, the
            # daemon's outage log line would only repeat it.
            async with asyncio.timeout(timeout):
                await dataset.cache.store.get(PROBE_KEY)
        except (StoreError, TimeoutError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            reason = f"no answer within {timeout:g}s" if timed_out else str(exc)
            if dataset.load_problem is not None:
                # The login failed at load (SoftStart let it start): the daemon would
                # tempfail the messages that need this set until it answers.
                hint = "SoftStart starts the daemon anyway, but it tempfails that mail"
            elif timed_out:
                hint = "a lookup must answer within DataSetTimeout, or its mail is tempfailed"
            else:
                hint = (
                    "the server accepts the login but not the query: check the table or "
                    "base DN, the columns or attributes, and the account's read rights"
                )
            message = f"{option}: a lookup in {dataset.cache.describe()} fails: {reason}"
            problems.append(Problem(where[0], where[1], Severity.ERROR, message, hint, option))
            continue
        finally:
            await dataset.cache.close()
        took = (time.monotonic() - started) * 1000
        summary.append(
            f"{option} answers a test lookup in {took:.0f} ms ({dataset.cache.describe()})."
        )
    return problems, summary
