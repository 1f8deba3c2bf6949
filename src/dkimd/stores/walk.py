"""`dkimd check --walk`: read remote KeyTable/SigningTable rows whole, on request only.

The daemon never walks a table (a million-row SigningTable would take minutes); this is
the on-demand equivalent of OpenDKIM's start-up check (`CheckSigningTable`): every
SigningTable row naming a key the KeyTable lacks, and every KeyTable row that is not
`domain:selector:key`, is a problem that fails the messages it concerns. The KeyTable's
names are read first (it is the small one), then the SigningTable streams past them.
"""

from __future__ import annotations

from typing import Any

from dkimd.config.datasets import Dataset
from dkimd.config.keytable import KeyTableAlgorithmError, parse_keytable_value
from dkimd.config.problems import Problem, Severity
from dkimd.stores.base import StoreError
from dkimd.stores.dataset import RemoteDataset

__all__ = ["walk_problems"]

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
    except StoreError as exc:
        problems.append(Problem(None, None, Severity.ERROR, f"--walk: {exc}"))
    finally:
        for dataset in (signing, keys):
            if isinstance(dataset, RemoteDataset):
                await dataset.cache.close()
    return problems, summary
