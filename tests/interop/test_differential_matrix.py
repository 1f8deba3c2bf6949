"""The differential matrix against the real OpenDKIM 2.11 (support.differential).

Every implemented option in its main settings x the awkward messages x the modes s, v and sv
(from inside and from outside): each configuration's pair of daemons starts once and gets
every message; every reply and header change is compared, and a difference that no row of
docs/differences.md covers fails the configuration's test.

The configurations run WORKERS at a time (a module fixture starts them all, in order, when
the first test asks; each test waits for its own). By default a deterministic sample runs
(the baseline in every mode, and about one configuration in SAMPLE_SHARE of the others);
CI=true or DKIMD_DIFF_FULL=1 runs all of it.
Under CI=true a missing opendkim or opendkim-genkey fails the tests instead of skipping them.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.differential import FilterPair, compare, explained_by, unexplained
from support.differential.compare import Difference
from support.differential.expected import expected_differences
from support.differential.matrix import (
    MODES,
    OTHER_SUITES,
    Config,
    Keys,
    build_messages,
    case_ids,
    config_options,
    configs,
    make_keys,
    missing_settings,
    sample,
    write_files,
)
from support.differential.pair import OneSidedStart
from support.tools import in_ci, require

pytestmark = pytest.mark.interop

SAMPLE_SHARE = 8
#: Configurations run at once (each is two daemons and a few client threads).
WORKERS = 3
ALL = list(configs())
FULL = in_ci() or os.environ.get("DKIMD_DIFF_FULL", "") not in ("", "0")
RUN = ALL if FULL else sample(ALL, SAMPLE_SHARE)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    require("opendkim-genkey")
    return make_keys(tmp_path_factory.mktemp("diff-keys"))


@pytest.fixture(scope="module")
def messages(keys: Keys) -> dict[str, bytes]:
    require("opendkim")
    return build_messages(keys)


@dataclass
class Outcome:
    """One configuration's differences: those no row covers, and the rows that covered the
    others."""

    problems: list[str] = field(default_factory=list)
    rows: set[str] = field(default_factory=set)

    def add(self, case: str, diffs: list[Difference]) -> None:
        self.problems += [f"{case}: {d}" for d in unexplained(case, diffs)]
        self.rows |= explained_by(case, diffs)


def run_config(config: Config, directory: Path, keys: Keys, messages: dict[str, bytes]) -> Outcome:
    """Every difference of this configuration, judged by docs/differences.md."""
    write_files(directory, keys)
    options = config_options(config, directory, keys)
    mode, envelope = MODES[config.mode_id]
    tables = {
        "key_table": {"mail": f"example.com:mail:{keys.mail.private_key}"},
        "signing_table": {"*@example.com": "mail"},
    }
    pair = FilterPair(
        directory,
        mode=mode,
        dns_records=keys.records,
        options=options,
        **({} if "Domain" in options else tables),
    )
    outcome = Outcome()
    try:
        pair.start()
    except OneSidedStart as refused:
        outcome.add(f"{config.id}/*", [Difference("start", refused.opendkim, refused.dkimd)])
        return outcome
    ids = list(messages)
    try:
        results = pair.exchange_all([(messages[m], envelope) for m in ids])
    finally:
        pair.stop()
    for message_id, (theirs, ours) in zip(ids, results, strict=True):
        outcome.add(config.case_id(message_id), compare(theirs, ours))
    return outcome


class Runner:
    """Runs the selected configurations WORKERS at a time, in test order, from the first
    test on; each test then waits for its own configuration's result."""

    def __init__(self, configs: list[Config], root: Path, keys: Keys, messages: dict[str, bytes]):
        self.pool = ThreadPoolExecutor(max_workers=WORKERS)
        self.futures: dict[str, Future[Outcome]] = {}
        for n, config in enumerate(configs):
            directory = root / f"c{n:03d}"
            self.futures[config.id] = self.pool.submit(
                run_config, config, directory, keys, messages
            )

    def outcome(self, config: Config) -> Outcome:
        return self.futures[config.id].result()

    def rows_used(self) -> set[str]:
        """The rows that covered a difference, over every configuration run."""
        return set().union(*(f.result().rows for f in self.futures.values()))

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()
        self.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def runner(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    keys: Keys,
    messages: dict[str, bytes],
) -> Iterator[Runner]:
    selected = [
        item.callspec.params["config"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname == "test_same_as_opendkim"
        and hasattr(item, "callspec")
    ]
    running = Runner(selected, tmp_path_factory.mktemp("matrix"), keys, messages)
    yield running
    running.close()


@pytest.mark.parametrize("config", RUN, ids=lambda c: c.id)
def test_same_as_opendkim(config: Config, runner: Runner) -> None:
    problems = runner.outcome(config).problems
    assert not problems, "differences not in docs/differences.md:\n" + "\n".join(problems)


@pytest.mark.skipif(not FULL, reason="only the full matrix meets every row")
def test_every_row_for_the_matrix_still_applies(runner: Runner) -> None:
    """A row of docs/differences.md that the full matrix no longer needs is stale (a known
    difference fixed, or a difference on purpose gone): take it out of the table."""
    matrix = list(case_ids())
    rows = {
        row.id
        for row in expected_differences()
        if any(fnmatch.fnmatchcase(case, glob) for glob in row.cases for case in matrix)
    }
    assert sorted(rows - runner.rows_used()) == []


def test_every_implemented_option_is_in_the_matrix() -> None:
    """An option that loses its "not implemented" mark needs settings (or a reason) in
    support.differential.matrix.SETTINGS."""
    assert missing_settings() == []


def test_every_row_of_the_differences_table_names_real_cases() -> None:
    """A row of docs/differences.md whose case globs match no case is stale (a renamed
    setting or message)."""
    matrix = list(case_ids())
    stale = [
        (row.id, glob)
        for row in expected_differences()
        for glob in row.cases
        if not glob.startswith(tuple(f"{s}/" for s in OTHER_SUITES))
        and not any(fnmatch.fnmatchcase(case, glob) for case in matrix)
    ]
    assert stale == []
