"""Instructions per message of the real daemon, counted by valgrind's callgrind.

    python bench/instructions.py verify|sign SRC [MESSAGES]

Starts `python -m dkimd` from the tree SRC (a `src/` directory) under callgrind on
bench/out/work/rsa.conf (run `python bench/run.py --quick` once first), warms it with 20
messages, zeroes the counters, sends MESSAGES (default 200) 4 KB messages at concurrency 8
and prints the user-space instructions per message. Unlike CPU time, the count hardly moves
with the other load on a shared machine (PYTHONHASHSEED is fixed; +-0.5% between runs), so
it shows a 1-2% change that timing cannot. It does not see the kernel's share, nor cache
misses: a change that saves memory traffic gains more time than instructions.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from ab import LOADS, WORK
from procs import Milter, free_port, milter_command, taskset
from run import run_driver


def _interpreter(path: str) -> str:
    """The program valgrind should start: a wrapper script (a pyenv shim) would be what gets
    traced, so a script is resolved to its target; a virtualenv's symlink is kept as it is,
    because the interpreter finds the venv (and its site-packages) through that path."""
    with open(path, "rb") as f:
        if f.read(4) == b"\x7fELF":
            return path
    return os.path.realpath(path)


def main(argv: list[str]) -> int:
    kind, src = argv[0], argv[1]
    count = int(argv[2]) if len(argv) > 2 else 200
    name, client = LOADS[kind]
    message = WORK / name
    port = free_port()
    out = f"/tmp/dkimd-cg-{port}"
    os.environ.update(PYTHONPATH=src, PYTHONHASHSEED="0")
    daemon = milter_command("dkimd", WORK / "rsa.conf", f"inet:{port}@127.0.0.1")
    daemon[0] = _interpreter(daemon[0])
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", *daemon]
    milter = Milter("dkimd", taskset("0", cmd), port, Path(f"{out}.log"))
    try:
        milter.wait_listening(300)  # the interpreter starts slowly under valgrind
        target = f"127.0.0.1:{port}"

        def dump() -> int:
            # Writes the counts so far to a new file and zeroes them.
            subprocess.run(["callgrind_control", "-d", str(milter.pid)], capture_output=True)
            time.sleep(1)
            files = sorted(glob.glob(f"{out}.{milter.pid}*"), key=os.path.getmtime)
            found = re.search(r"^(?:summary|totals): (\d+)", Path(files[-1]).read_text(), re.M)
            return int(found.group(1)) if found else 0

        run_driver(target, message, concurrency=8, messages=20, client=client, max_seconds=3000)
        dump()
        rep = run_driver(
            target, message, concurrency=8, messages=count, client=client, max_seconds=3000
        )
        total = dump()
        print(f"{kind} {src}: {total / rep['messages']:.0f} instructions/message")
    finally:
        milter.stop()
        for f in glob.glob(f"{out}.*"):
            os.unlink(f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
