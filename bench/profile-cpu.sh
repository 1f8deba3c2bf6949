#!/usr/bin/env bash
# CPU milliseconds the dkimd process spends per message (user + system, /proc/PID/stat).
# Usage: bench/profile-cpu.sh MSG CLIENT N   (MSG in bench/out/work/, made by run.py --quick)
#   bench/profile-cpu.sh msg-4k-signed-by-opendkim.eml 192.0.2.77 3000   # verify
#   bench/profile-cpu.sh msg-4k.eml 127.0.0.1 3000                       # sign
set -euo pipefail
cd "$(dirname "$0")/.."
work=bench/out/work
[ -f "$work/rsa.conf" ] || python bench/run.py --quick --out /dev/null >/dev/null
PORT=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
python -m dkimd -x "$work/rsa.conf" -f -p "inet:$PORT@127.0.0.1" >"$work/profile-cpu.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true' EXIT
sleep 1.5
drive() {
    python bench/driver.py --target "127.0.0.1:$PORT" --message "$work/$1" --concurrency 16 \
        --messages "$3" --client-addr "$2"
}
drive "$1" "$2" 300 >/dev/null
T0=$(awk '{print $14+$15}' "/proc/$PID/stat")
drive "$1" "$2" "$3" | sed -n 2,3p
T1=$(awk '{print $14+$15}' "/proc/$PID/stat")
python -c "print('CPU ms/msg', round(($T1 - $T0) * 1000 / $(getconf CLK_TCK) / $3, 3))"
