#!/usr/bin/env bash
# Installs everything the tests need (Postfix, OpenDKIM, miltertest, dkimpy, ...) and runs
# every check: ruff, mypy --strict, and the whole pytest suite (unit, interop, e2e, fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh test

echo "== ruff"
ruff check src tests bench
ruff format --check src tests bench
echo "== mypy --strict"
mypy
echo "== pytest"
# CI=true makes every test that cannot find its real peer fail instead of skip.
exec python -m pytest -q -p no:cacheprovider "$@"
