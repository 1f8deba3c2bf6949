#!/usr/bin/env bash
# Soak run: 100k messages at concurrency 64 through one dkimd (tests/soak/test_soak.py), with
# RSS and open descriptors sampled every few seconds. Takes several minutes (~8 on 2 CPUs).
#
#   bash scripts/soak.sh                       # 100k messages, results in bench/out/soak/
#   DKIMD_SOAK_MESSAGES=20000 bash scripts/soak.sh   # a shorter run
#
# Writes bench/out/soak/{samples.csv,summary.json,soak.log}; exits non-zero if the daemon's
# memory or descriptors were not flat after the warm-up, or any message failed.
set -euo pipefail
cd "$(dirname "$0")/.."
# The first Python that has dkimd and the test dependencies (bash scripts/test.sh installs them).
PY=""
for candidate in "${PYTHON:-}" python3 .venv/bin/python; do
    if [ -n "$candidate" ] && "$candidate" -c "import dkimd, dkim, pytest" 2>/dev/null; then
        PY="$candidate"; break
    fi
done
[ -n "$PY" ] || { echo "soak: no Python with dkimd, dkimpy and pytest; run scripts/test.sh once" >&2; exit 2; }
export DKIMD_SOAK=1
export DKIMD_SOAK_MESSAGES="${DKIMD_SOAK_MESSAGES:-100000}"
export DKIMD_SOAK_INTERVAL="${DKIMD_SOAK_INTERVAL:-3}"
export DKIMD_SOAK_OUT="${DKIMD_SOAK_OUT:-$PWD/bench/out/soak}"
mkdir -p "$DKIMD_SOAK_OUT"
echo "soak: $DKIMD_SOAK_MESSAGES messages, sampling every ${DKIMD_SOAK_INTERVAL}s, output in $DKIMD_SOAK_OUT"
"$PY" -m pytest -p no:cacheprovider -s -q --timeout 7200 tests/soak "$@" 2>&1 | tee "$DKIMD_SOAK_OUT/soak.log"
exit "${PIPESTATUS[0]}"
