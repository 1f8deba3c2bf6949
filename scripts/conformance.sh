#!/usr/bin/env bash
# OpenDKIM's own regression suite (its miltertest scripts) against the installed dkimd.
# Usage: scripts/conformance.sh [SUITE_DIR]   (default: $DKIMD_CONFORMANCE, else
#        ../shared/conformance/opendkim beside the repository)
#
# The suite is not part of this repository. Where it is absent, this says so and exits 0.
# Where it is present, every test named in tests/conformance/opendkim-passing.txt must pass:
# that list only grows (a test that passes and is not listed is reported, to be added), so a
# change that breaks a test OpenDKIM's own suite checks fails the run.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
suite="${1:-${DKIMD_CONFORMANCE:-$root/../shared/conformance/opendkim}}"
expected="$root/tests/conformance/opendkim-passing.txt"

if [ ! -x "$suite/run.sh" ]; then
    echo "conformance: OpenDKIM's regression suite not found at $suite: not run"
    exit 0
fi
binary="$(command -v dkimd)" || { echo "conformance: dkimd is not on PATH" >&2; exit 1; }
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
echo "conformance: $suite/run.sh against $binary"
ODKSUITE_RUN="$scratch/run" bash "$suite/run.sh" -v "$binary" | tee "$scratch/out"
[ "${PIPESTATUS[0]}" -le 1 ] || { echo "conformance: the runner could not start" >&2; exit 1; }

status=0
mapfile -t want < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$expected")
for t in "${want[@]}"; do
    if ! grep -qx "PASS $t" "$scratch/out"; then
        echo "conformance: REGRESSION: $t passed before and does not now" >&2
        status=1
    fi
done
for t in $(sed -n 's/^PASS \(t-[^ ]*\).*/\1/p' "$scratch/out"); do
    printf '%s\n' "${want[@]}" | grep -qx "$t" ||
        echo "conformance: $t passes now: add it to tests/conformance/opendkim-passing.txt"
done
echo "conformance: $(grep -c '^PASS ' "$scratch/out") of 35 pass (OpenDKIM 2.11 passes 35); ${#want[@]} are required"
exit $status
