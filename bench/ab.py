"""Two dkimd trees against each other on the real daemon, runs alternating.

    python bench/ab.py verify|sign ROUNDS NAME=SRC NAME=SRC [opendkim]

Each variant is a `src/` directory (e.g. `git archive OLD src | tar -x -C /tmp/old` gives
/tmp/old/src); `opendkim` adds OpenDKIM to the rotation. Every round starts each variant
in turn on bench/out/work/rsa.conf (run `python bench/run.py --quick` once first), pinned to
CPU 0, warms it with 200 messages, then sends 4000 4 KB messages at concurrency 64 from the
driver on CPU 1 and prints msgs/s and the milter's CPU ms/msg. Alternating is what makes a
comparison on a shared machine mean something: a slow spell hits every variant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from procs import CLOCK_TICKS, Milter, free_port, read_cpu_ticks
from run import run_driver

WORK = Path(__file__).resolve().parent / "out" / "work"
LOADS = {
    "verify": ("msg-4k-signed-by-opendkim.eml", "192.0.2.77"),
    "sign": ("msg-4k.eml", "127.0.0.1"),
}


def main(argv: list[str]) -> int:
    kind, rounds, variants = argv[0], int(argv[1]), argv[2:]
    name, client = LOADS[kind]
    message = WORK / name
    count = int(os.environ.get("N", "4000"))
    concurrency = int(os.environ.get("C", "64"))
    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for variant in variants:
            label, _, src = variant.partition("=")
            milter_kind = "opendkim" if label == "opendkim" else "dkimd"
            if src:
                os.environ["PYTHONPATH"] = src
            port = free_port()  # Milter.start passes it with -p, over the config's Socket
            log = Path(f"/tmp/dkimd-ab-{label}.log")
            milter = Milter.start(milter_kind, WORK / "rsa.conf", port, "0", log)
            try:
                target = f"127.0.0.1:{port}"
                run_driver(target, message, concurrency=concurrency, messages=200, client=client)
                ticks = read_cpu_ticks(milter.pid)
                rep = run_driver(
                    target, message, concurrency=concurrency, messages=count, client=client
                )
                cpu = (read_cpu_ticks(milter.pid) - ticks) * 1000 / CLOCK_TICKS / rep["messages"]
            finally:
                milter.stop()
            results.setdefault(label, []).append((rep["msgs_per_s"], cpu))
            print(f"{label:10s} {rep['msgs_per_s']:8.1f} msgs/s  CPU {cpu:.3f} ms/msg", flush=True)
    for label, runs in results.items():
        cpus = " / ".join(f"{c:.3f}" for _, c in runs)
        print(f"{label:10s} best {max(r for r, _ in runs):.1f} msgs/s; CPU ms/msg {cpus}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
