#!/usr/bin/env bash
# Installs everything the tests need (Postfix, OpenDKIM, miltertest, dkimpy, ...) and runs
# every check: ruff, mypy --strict, the whole pytest suite (unit, interop, e2e, fuzz, bench
# smoke) and, where it is there, OpenDKIM's own regression suite (scripts/conformance.sh).
# All of them run even when one fails; the exit status is non-zero if any did. Arguments go
# to pytest; with arguments (a chosen subset) the regression suite is not run.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh test || exit 1
set +e

status=0
echo "== ruff"
ruff check src tests bench || status=1
ruff format --check src tests bench || status=1
echo "== mypy --strict"
mypy || status=1
echo "== pytest"
# CI=true makes every test that cannot find its real peer fail instead of skip. The 25
# slowest tests are listed: the whole suite must stay under 15 minutes on 2 cores.
python -m pytest -q -p no:cacheprovider --durations=25 "$@" || status=1
if [ "$#" -eq 0 ]; then
    echo "== OpenDKIM's regression suite"
    bash scripts/conformance.sh || status=1
fi
exit $status
