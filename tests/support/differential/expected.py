"""The differences dkimd has with OpenDKIM on purpose, read from docs/differences.md.

The document is the one source of truth: its tables "Expected differences" (on purpose) and
"Known differences not yet fixed" have one row per difference, with an id, the cases it
covers (globs over case ids ``setting/mode/message``), the aspects (globs over the aspects of
support.differential.compare), what each filter does and why dkimd differs. A difference
the harness finds that no row covers fails the test.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from support.differential.client import Transcript
from support.differential.compare import Difference, compare

__all__ = [
    "DOC",
    "ExpectedDifference",
    "assert_same_as_opendkim",
    "expected_differences",
    "explain",
    "explained_by",
    "unexplained",
]

DOC = Path(__file__).resolve().parents[3] / "docs" / "differences.md"
#: The tables: differences on purpose, and known ones not yet fixed (kept apart in the doc).
HEADINGS = ("## Expected differences", "## Known differences not yet fixed")


@dataclass(frozen=True)
class ExpectedDifference:
    id: str
    cases: tuple[str, ...]
    aspects: tuple[str, ...]
    opendkim: str
    dkimd: str
    reason: str

    def covers(self, case_id: str, aspect: str) -> bool:
        return any(fnmatch.fnmatchcase(case_id, c) for c in self.cases) and any(
            fnmatch.fnmatchcase(aspect, a) for a in self.aspects
        )


def _cells(line: str) -> list[str]:
    # A `|` inside backticks is part of a glob, not a column break.
    cells, current, code = [], [], False
    for ch in line.strip().strip("|"):
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    cells.append("".join(current).strip())
    return cells


def parse(text: str) -> list[ExpectedDifference]:
    """The rows of the tables under HEADINGS in `text`."""
    rows: list[ExpectedDifference] = []
    in_section = False
    for line in text.splitlines():
        if line.startswith("## "):
            in_section = line.strip() in HEADINGS
            continue
        if not in_section or not line.startswith("|"):
            continue
        cells = _cells(line)
        if len(cells) != 6 or cells[0] in ("Id", "") or set(cells[0]) <= set("-: "):
            continue
        ident = cells[0].strip("`")
        cases = tuple(re.findall(r"`([^`]+)`", cells[1]))
        aspects = tuple(re.findall(r"`([^`]+)`", cells[2]))
        if not cases or not aspects:
            raise ValueError(f"{DOC.name}: row {ident!r} names no case or no aspect")
        rows.append(ExpectedDifference(ident, cases, aspects, cells[3], cells[4], cells[5]))
    ids = [r.id for r in rows]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{DOC.name}: duplicate ids in {ids}")
    return rows


@cache
def expected_differences() -> tuple[ExpectedDifference, ...]:
    return tuple(parse(DOC.read_text(encoding="utf-8")))


def explain(case_id: str, diff: Difference) -> str | None:
    """The id of the row that covers this difference, or None."""
    for row in expected_differences():
        if row.covers(case_id, diff.aspect):
            return row.id
    return None


def unexplained(case_id: str, diffs: Iterable[Difference]) -> list[Difference]:
    return [d for d in diffs if explain(case_id, d) is None]


def explained_by(case_id: str, diffs: Iterable[Difference]) -> set[str]:
    """The ids of the rows that cover these differences (None for an uncovered one left out)."""
    return {row for row in (explain(case_id, d) for d in diffs) if row is not None}


def assert_same_as_opendkim(case_id: str, theirs: Transcript, ours: Transcript) -> set[str]:
    """Fail on any difference docs/differences.md does not cover; return the ids of the rows
    that covered the others (so a test can say which difference on purpose it expects)."""
    diffs = compare(theirs, ours)
    left = unexplained(case_id, diffs)
    assert not left, (
        f"{case_id}: differences not in {DOC.name}:\n"
        + "\n".join(str(d) for d in left)
        + f"\nOpenDKIM: {theirs}\ndkimd: {ours}"
    )
    return explained_by(case_id, diffs)
