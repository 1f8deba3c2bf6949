#!/usr/bin/env bash
# Long local fuzzing run (not for CI): every target in tests/fuzz/fuzz_targets.py.
#
#   scripts/fuzz-long.sh                 # 1M inputs per target (atheris if installed)
#   RUNS=200000 scripts/fuzz-long.sh     # fewer
#   TARGETS="milter_stream session" scripts/fuzz-long.sh
#   ENGINE=hypothesis scripts/fuzz-long.sh   # force hypothesis (max_examples = RUNS)
#
# With atheris (pip install atheris): coverage-guided, corpus kept in build/fuzz/corpus/TARGET
# (under build/, which git ignores), crashes written as
# build/fuzz/artifacts/TARGET/crash-*; the script stops at the first crash and says where. Copy the
# file to tests/fuzz/regressions/TARGET/ so pytest replays it forever.
# Without atheris: the hypothesis tests in tests/fuzz with DKIMD_FUZZ_EXAMPLES=RUNS.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-1000000}"
PY="${PYTHON:-python3}"
ALL="milter_stream milter_mutation tag_list signature key_record header_block body_canon auth_results authserv_id config_text dataset session"
TARGETS="${TARGETS:-$ALL}"
ENGINE="${ENGINE:-auto}"
if [ "$ENGINE" = auto ]; then
    if "$PY" -c "import atheris" 2>/dev/null; then ENGINE=atheris; else ENGINE=hypothesis; fi
fi
echo "fuzz-long: engine=$ENGINE runs=$RUNS targets: $TARGETS"
if [ "$ENGINE" = atheris ]; then
    for t in $TARGETS; do
        mkdir -p "build/fuzz/corpus/$t" "build/fuzz/artifacts/$t"
        # Seed each corpus with the regression inputs of that target.
        if [ -d "tests/fuzz/regressions/$t" ]; then cp -n tests/fuzz/regressions/"$t"/* "build/fuzz/corpus/$t/" 2>/dev/null || true; fi
        echo "== $t"
        if ! "$PY" tests/fuzz/atheris_main.py "$t" -runs="$RUNS" -max_len=65536 -timeout=20 \
                -rss_limit_mb=4096 -dict=tests/fuzz/dkim.dict -artifact_prefix="build/fuzz/artifacts/$t/" "build/fuzz/corpus/$t"; then
            echo "fuzz-long: $t found a crash; see build/fuzz/artifacts/$t/ and copy it to tests/fuzz/regressions/$t/" >&2
            exit 1
        fi
    done
else
    DKIMD_FUZZ_EXAMPLES="$RUNS" "$PY" -m pytest tests/fuzz -q -p no:cacheprovider \
        -o timeout=0 -x
fi
echo "fuzz-long: done, no crash"
