"""Telling the running daemon to re-read its tables: SIGHUP to the pid in PidFile.

The same signal the packaged unit's `ExecReload=/bin/kill -HUP $MAINPID` sends; the daemon
builds a new runtime from the files and keeps the old one if the new files are broken.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    sent: bool
    message: str


def reload_daemon(pid_file: str | None) -> ReloadOutcome:
    """SIGHUP the daemon whose pid `pid_file` holds. Never raises."""
    if pid_file is None:
        return ReloadOutcome(
            False, "no PidFile in the configuration: reload the daemon yourself (SIGHUP)"
        )
    try:
        with open(pid_file, encoding="ascii") as fh:
            pid = int(fh.read().split()[0])
    except FileNotFoundError:
        return ReloadOutcome(False, f"{pid_file} does not exist: is the daemon running?")
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return ReloadOutcome(False, f"{pid_file} holds no process id")
    if pid <= 1:
        return ReloadOutcome(False, f"{pid_file} holds pid {pid}; not signalling it")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return ReloadOutcome(False, f"no process {pid} (from {pid_file}): is the daemon running?")
    except PermissionError:
        return ReloadOutcome(False, f"not allowed to signal process {pid} (from {pid_file})")
    return ReloadOutcome(True, f"reload sent to process {pid}")
