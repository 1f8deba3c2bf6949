"""Milter processes for the benchmark: start pinned, wait until listening, watch memory, stop.

Only processes started here are ever signalled, by their own pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


class MilterStartError(Exception):
    """The milter did not come up; the message says why (its last log lines)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pin_self(cpus: set[int]) -> bool:
    """Pin this process (and so the children it starts) to `cpus`, if the machine has them."""
    try:
        os.sched_setaffinity(0, cpus)
        return True
    except (OSError, AttributeError):
        return False


def opendkim_path() -> str | None:
    """opendkim lives in /usr/sbin on Debian, which a non-login PATH may lack."""
    return shutil.which("opendkim", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def milter_command(kind: str, conf: Path, listen: str | None = None) -> list[str]:
    """How each milter is started: the same flags, the same config file. `listen` (a
    Socket value such as inet:8891@127.0.0.1) overrides the config's Socket with -p, which
    both take, so the two milters can run side by side on one config."""
    extra = ["-p", listen] if listen else []
    if kind == "opendkim":
        return [opendkim_path() or "opendkim", "-f", "-x", str(conf), *extra]
    if kind == "dkimd":
        return [sys.executable, "-m", "dkimd", "-x", str(conf), "-f", *extra]
    raise ValueError(kind)


def taskset(cpus: str | None, cmd: list[str]) -> list[str]:
    if cpus is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", cpus, *cmd]


class Milter:
    """A running milter (opendkim or dkimd) listening on 127.0.0.1:port."""

    def __init__(self, kind: str, cmd: list[str], port: int, log: Path) -> None:
        self.kind = kind
        self.cmd = cmd
        self.port = port
        self.log = log
        self._logf = log.open("wb")
        # taskset execs the milter, so this pid is the milter's own.
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT)

    @classmethod
    def start(
        cls, kind: str, conf: Path, port: int, cpus: str | None, log: Path, wait: float = 20.0
    ) -> Milter:
        listen = f"inet:{port}@127.0.0.1"
        milter = cls(kind, taskset(cpus, milter_command(kind, conf, listen)), port, log)
        milter.wait_listening(wait)
        return milter

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listening(self, wait: float) -> None:
        """Return once the port accepts; raise MilterStartError (with the log's tail) if
        the process exits first or `wait` seconds pass, then it is stopped."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._logf.close()
                raise MilterStartError(
                    f"{self.kind} exited with status {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise MilterStartError(f"{self.kind} not listening after {wait:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def memory_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in kB from /proc, or (0, 0) once the process is gone."""
        return read_memory_kb(self.pid)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; waits so the port is free again."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        _wait_port_free(self.port, grace)


def _wait_port_free(port: int, wait: float) -> None:
    # OpenDKIM can take a second or more to close its listener after SIGTERM; the next milter
    # binding the same port would otherwise fail with EADDRINUSE.
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
        except OSError:
            return
        time.sleep(0.1)


def read_cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, its threads and its live descendants (a dkimd
    supervisor's workers), in clock ticks."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone between listing and reading
        # After the command: state is [0], so utime and stime (14th, 15th) are [11], [12].
        total += int(fields[11]) + int(fields[12])
        todo += _children(p)
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return out


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def read_memory_kb(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


class RssSampler:
    """Polls a pid's VmRSS in a thread; `peak_kb` is the largest value seen."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, _ = read_memory_kb(self.pid)
            self.peak_kb = max(self.peak_kb, rss)
            self._stop.wait(self.interval)
