"""Pid file and user resolution: the daemon chores that run before the first message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dkimd.process import PidFile, ProcessError, resolve_user


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
