"""Every input the fuzzers ever tripped over, replayed on each run.

Corpus layout: tests/fuzz/regressions/<target>/<name>.bin holds one input for the target of
that name in fuzz_targets.TARGETS (atheris crash files can be dropped in as they are; see
docs/fuzzing.md). Findings about the code under test also get a named test below.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from fuzz_targets import TARGETS

from dkimd.config.datasets import glob_to_regex, open_dataset

CORPUS = Path(__file__).parent / "regressions"
CASES = sorted(p for p in CORPUS.glob("*/*") if p.is_file() and not p.name.startswith("."))


def test_corpus_names_known_targets() -> None:
    assert CASES, "the regression corpus is empty"
    for path in CASES:
        assert path.parent.name in TARGETS, f"{path}: no fuzz target {path.parent.name!r}"


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replay(path: Path) -> None:
    TARGETS[path.parent.name](path.read_bytes())


def test_refile_star_run_is_not_exponential(tmp_path: Path) -> None:
    """Found by test_fuzz_config: a refile: pattern of many `*` took exponential time
    against a key it does not match (`.*.*.*...$` backtracking). Runs of `*` now compile
    to one `.*`; matching stays the same."""
    assert glob_to_regex("**@example.com") == glob_to_regex("*@example.com")
    table = tmp_path / "SigningTable"
    table.write_text("*" * 60 + "@example.com key\n" + "*@*.org other\n")
    ds, problems = open_dataset(f"refile:{table}")
    assert ds is not None and not problems
    started = time.monotonic()
    assert ds.lookup("x" * 200 + "@example.net") is None
    assert time.monotonic() - started < 1.0
    assert ds.lookup("alice@example.com") == "key"
    assert ds.lookup("bob@mail.example.org") == "other"
    assert re.compile(glob_to_regex("a*b")).search("a-anything-b")


def test_authserv_id_quoted_string() -> None:
    from dkimd.authres import authserv_id_of

    assert authserv_id_of(b' "mx.test.example"; dkim=pass') == "mx.test.example"


def test_authserv_id_bare_cr() -> None:
    from dkimd.authres import authserv_id_of

    assert authserv_id_of(b" mx.test.example\r; dkim=pass") == "mx.test.example"
    assert authserv_id_of(b" mx.test.example\n\t; dkim=pass") == "mx.test.example"
