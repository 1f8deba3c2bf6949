#!/usr/bin/env bash
# Shared by run-demo.sh and test.sh: system packages and the project's virtualenv.
# Usage: source scripts/bootstrap.sh [runtime|test]
set -euo pipefail

DKIMD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DKIMD_VENV:-$DKIMD_ROOT/.venv}"
profile="${1:-runtime}"

apt_packages=(python3 python3-venv python3-pip ca-certificates)
if [ "$profile" = "test" ]; then
    # The real peers the tests run against: Postfix (SMTP and sendmail paths),
    # OpenDKIM and its tools (genkey, testkey, miltertest) as the interop oracle.
    apt_packages+=(postfix opendkim opendkim-tools miltertest procps)
fi

missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Postfix asks how to configure itself; the tests run private instances, so none.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
if [ "$profile" = "test" ]; then
    "$VENV/bin/python" -m pip install -q -e "$DKIMD_ROOT[test]"
else
    "$VENV/bin/python" -m pip install -q "$DKIMD_ROOT"
fi
export PATH="$VENV/bin:$PATH"
