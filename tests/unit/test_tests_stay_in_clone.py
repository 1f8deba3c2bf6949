"""The suite reads its fixtures from inside the repository only (tests/data), so that a fresh
clone with nothing beside it passes: no path built from ``Path(__file__)`` climbs out of the
repository (``parents[4] / "shared"``), and no literal names an absolute path of the machine a
test was written on (``/work/shared/reference``).

.ci/run checks the same dynamically by running the suite in a clone inside an empty directory;
this test names the offending line at once, on every run."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent

# Top-level directories a test may name: the system's, never a fixture's. /nonexistent is
# the conventional path that must not exist.
SYSTEM = frozenset(
    [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib64",
        "nonexistent",
        "proc",
        "run",
        "sbin",
        "sys",
        "tmp",
        "usr",
        "var",
    ]
)


def _path_of(node: ast.expr, source: Path) -> Path | None:
    """The path `node` evaluates to when it is built from ``Path(__file__)`` with
    .resolve(), .absolute(), .parent, .parents[k] and ``/ "literal"``; None otherwise."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Path"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "__file__"
    ):
        return source
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.args:
        if node.func.attr in ("resolve", "absolute"):
            return _path_of(node.func.value, source)
        return None
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        base = _path_of(node.value, source)
        return None if base is None else base.parent
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "parents"
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, int)
    ):
        base = _path_of(node.value.value, source)
        if base is None:
            return None
        # Path.parents stops at the filesystem root; climbing past it is out of the clone too.
        parents = base.parents
        return parents[node.slice.value] if node.slice.value < len(parents) else Path("/")
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Div)
        and isinstance(node.right, ast.Constant)
        and isinstance(node.right.value, str)
    ):
        base = _path_of(node.left, source)
        return None if base is None else base / node.right.value
    return None


def _inside(path: Path, root: Path) -> bool:
    # Normalise "a/../b" without touching the filesystem: the path need not exist.
    resolved = Path(*_normalised(path.parts))
    return resolved == root or root in resolved.parents


def _normalised(parts: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if part == "..":
            if len(out) > 1:
                out.pop()
        elif part != ".":
            out.append(part)
    return out


def escapes(source: Path, text: str, root: Path, system: frozenset[str] = SYSTEM) -> Iterator[str]:
    """`line: reason` for each place in `text` (the Python file `source`) that names a path
    outside `root` (literal paths under the `system` top-level directories excepted)."""
    reported: set[int] = set()
    # ast.walk goes breadth-first, so the outermost expression of a line comes first; its
    # sub-expressions (the prefixes of the same path) are not reported again.
    for node in ast.walk(ast.parse(text, str(source))):
        if not isinstance(node, ast.expr) or node.lineno in reported:
            continue
        built = _path_of(node, source)
        if built is not None and not _inside(built, root):
            reported.add(node.lineno)
            yield f"{node.lineno}: {ast.unparse(node)} is {built}, outside {root}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            literal = node.value
            if not literal.startswith("/") or any(c.isspace() for c in literal):
                continue
            top = literal.split("/")[1]
            if (
                top
                and top not in system
                and Path(literal).exists()
                and not _inside(Path(literal), root)
            ):
                reported.add(node.lineno)
                yield f"{node.lineno}: {literal!r} is a path of this machine, not of the clone"


def test_no_path_outside_the_repository() -> None:
    sources = sorted(TESTS.rglob("*.py"))
    assert len(sources) > 50  # the whole suite was scanned, not an empty glob
    found = [
        f"{source.relative_to(ROOT)}:{where}"
        for source in sources
        for where in escapes(source, source.read_text(), ROOT)
    ]
    assert not found, "tests that reach outside the clone:\n" + "\n".join(found)


def test_the_check_finds_what_issue_13_found(tmp_path: Path) -> None:
    """The three ways the suite once reached outside the clone are each reported, and the
    paths inside it or of the system are not."""
    root = tmp_path / "clone"
    (tmp_path / "shared" / "reference").mkdir(parents=True)
    check = root / "tests" / "unit" / "keytools" / "test_check.py"
    e2e = root / "tests" / "e2e" / "test_postfix_dkimd.py"
    climbs = 'R = Path(__file__).resolve().parents[4] / "shared" / "reference"\n'
    [found] = escapes(check, climbs, root)
    assert found == (
        f"1: Path(__file__).resolve().parents[4] / 'shared' / 'reference' is "
        f"{tmp_path}/shared/reference, outside {root}"
    )
    climbs = 'R = Path(__file__).resolve().parents[2].parent / "shared" / "reference"\n'
    assert [f.split(":")[0] for f in escapes(e2e, climbs, root)] == ["1"]
    # The machine's own path: tmp_path stands for /work here, so /tmp is not a system root.
    absolute = f'R = Path("{tmp_path}/shared/reference")\n'
    [found] = escapes(check, absolute, root, system=SYSTEM - {"tmp"})
    assert found == f"1: '{tmp_path}/shared/reference' is a path of this machine, not of the clone"
    fine = (
        'D = Path(__file__).resolve().parents[2] / "data" / "config"\n'
        'E = Path(__file__).resolve().parents[3] / "tests" / "data"\n'
        f'F = ("/etc/passwd", "/nonexistent/x", "relaxed/simple", "/33", "{root}/tests")\n'
    )
    assert list(escapes(check, fine, root, system=SYSTEM - {"tmp"})) == []
