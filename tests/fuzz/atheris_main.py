"""Coverage-guided fuzzing of one fuzz_targets target with atheris (libFuzzer), optional.

    python tests/fuzz/atheris_main.py TARGET [libFuzzer flags...] [CORPUS_DIR...]
    python tests/fuzz/atheris_main.py milter_stream -runs=1000000 corpus/milter_stream

atheris is not a test dependency: scripts/fuzz-long.sh runs this when `import atheris`
works and falls back to hypothesis otherwise. The documented exceptions are caught inside
each target, so every exception libFuzzer reports is a finding; copy its crash-* file into
tests/fuzz/regressions/TARGET/ and it is replayed by every pytest run from then on.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> int:
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    import fuzz_targets

    import dkimd.session  # noqa: F401  (imported before instrumenting, so it is covered too)

    atheris.instrument_all()
    name = argv[1]
    target = fuzz_targets.TARGETS.get(name)
    if target is None:
        print(f"unknown target {name!r}; one of {', '.join(fuzz_targets.TARGETS)}", file=sys.stderr)
        return 2
    if name == "session":
        fuzz_targets.world()  # build keys and runtimes before fuzzing starts
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
