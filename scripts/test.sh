#!/usr/bin/env bash
# Installs everything the tests need (Postfix, OpenDKIM, miltertest, dkimpy, ...) and runs
# every check: ruff, mypy --strict, and the whole pytest suite (unit, interop, e2e, fuzz,
# bench smoke). All three run even when one fails; the exit status is non-zero if any did.
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
# CI=true makes every test that cannot find its real peer fail instead of skip.
python -m pytest -q -p no:cacheprovider "$@" || status=1
exit $status
