"""Pid file and user resolution: the daemon chores that run before the first message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dkimd.process import PidFile, ProcessError, StartupChannel, resolve_user


def test_pid_file_written_and_removed(tmp_path: Path) -> None:
    pid_path = tmp_path / "run" / "dkimd.pid"
    pid = PidFile(pid_path)
    pid.write()
    assert pid_path.read_text() == f"{os.getpid()}\n"
    pid.remove()
    assert not pid_path.exists()


def test_pid_file_refuses_a_live_other_instance(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pid_path = tmp_path / "dkimd.pid"
        pid_path.write_text(f"{other.pid}\n")
        with pytest.raises(ProcessError, match="another instance is running"):
            PidFile(pid_path).write()
        assert pid_path.read_text() == f"{other.pid}\n"
    finally:
        other.kill()
        other.wait()


def test_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_path = tmp_path / "dkimd.pid"
    pid_path.write_text(f"{dead.pid}\n")
    PidFile(pid_path).write()
    assert pid_path.read_text() == f"{os.getpid()}\n"


def test_pid_file_not_removed_when_another_process_owns_it(tmp_path: Path) -> None:
    pid_path = tmp_path / "dkimd.pid"
    pid = PidFile(pid_path)
    pid.write()
    pid_path.write_text("1\n")  # a successor took over the file
    pid.remove()
    assert pid_path.read_text() == "1\n"


def test_resolve_user_forms() -> None:
    root = resolve_user("root")
    assert (root.uid, root.gid) == (0, 0)
    assert resolve_user("0:0").user == "root"
    with pytest.raises(ProcessError, match="no such user"):
        resolve_user("no-such-user-dkimd")
    with pytest.raises(ProcessError, match="no such group"):
        resolve_user("root:no-such-group-dkimd")


_DETACH = """
import sys
from dkimd.process import detach
channel = detach()
how = sys.argv[1]
if how == "ready":
    channel.ready()
    import time; time.sleep(0.2)
elif how == "failed":
    channel.failed("cannot start: PidFile /x: Permission denied")
# "die": exit without a word
"""


@pytest.mark.parametrize(
    ("how", "code", "stderr"),
    [
        ("ready", 0, ""),
        ("failed", 1, "dkimd: cannot start: PidFile /x: Permission denied\n"),
        ("die", 1, "dkimd: the daemon exited during start-up (see the log)\n"),
    ],
)
def test_detach_parent_exits_with_the_daemons_report(how: str, code: int, stderr: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _DETACH, how], capture_output=True, text=True, timeout=10
    )
    assert (proc.returncode, proc.stderr) == (code, stderr)


def test_startup_channel_reports_once() -> None:
    read_fd, write_fd = os.pipe()
    channel = StartupChannel(write_fd)
    channel.ready()
    channel.failed("too late")  # no-op: already reported, fd closed
    with os.fdopen(read_fd, "rb") as r:
        assert r.read() == b"ok\n"


# The supervisor (middle) forks a worker (child) and dies; the worker reports on a pipe.
_ORPHAN = """
import os, signal, sys, time
from dkimd.process import die_with_parent, orphaned
late = sys.argv[1] == "late"
r, w = os.pipe()
middle = os.fork()
if middle == 0:
    parent = os.getpid()
    if os.fork() == 0:
        got = []
        signal.signal(signal.SIGTERM, lambda *_: got.append(1))
        if late:  # the parent is already gone when the worker arms
            while not orphaned(parent):
                time.sleep(0.01)
        armed = die_with_parent(signal.SIGTERM, parent)
        os.write(w, b"armed " + str(armed).encode() + b"\\n")
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        os.write(w, b"signalled " + str(len(got)).encode() + b"\\n")
        os._exit(0)
    if not late:
        time.sleep(0.5)
    os._exit(0)
os.close(w)
os.waitpid(middle, 0)
out = b""
while chunk := os.read(r, 100):
    out += chunk
print(out.decode(), end="")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("when", ["before", "late"])
def test_a_worker_is_signalled_when_its_parent_dies(when: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _ORPHAN, when], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "armed True\nsignalled 1\n"


def test_orphaned_compares_with_the_parent() -> None:
    from dkimd.process import orphaned

    assert not orphaned(os.getppid())
    assert orphaned(os.getppid() + 1)
