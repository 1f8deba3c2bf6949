"""Process-level chores of a Unix daemon: pid file, privilege drop, detaching.

Kept apart from daemon.py (the life cycle) because each piece is small, synchronous and
testable on its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path


class ProcessError(Exception):
    """A daemon chore failed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class RunAs:
    uid: int
    gid: int
    user: str
    home: str
    # The supplementary groups, found while /etc/group is reachable (ChangeRootDirectory
    # comes between resolve_user and drop_privileges); empty: initgroups then.
    groups: tuple[int, ...] = ()


def resolve_user(spec: str) -> RunAs:
    """`user`, `user:group`, or numeric forms, as opendkim's UserID and -u take them."""
    user, _, group = spec.partition(":")
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ProcessError(f"UserID: no such user {user!r}") from None
    gid = pw.pw_gid
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ProcessError(f"UserID: no such group {group!r}") from None
    groups = tuple(os.getgrouplist(pw.pw_name, gid))
    return RunAs(uid=pw.pw_uid, gid=gid, user=pw.pw_name, home=pw.pw_dir, groups=groups)


def drop_privileges(target: RunAs) -> None:
    """Switch to `target` for good; called after the listening socket is bound."""
    if os.getuid() == target.uid and os.getgid() == target.gid:
        return
    if os.geteuid() != 0:
        raise ProcessError(f"cannot switch to user {target.user!r}: not running as root")
    # Order matters: supplementary groups and gid must change while we still may.
    if target.groups:
        os.setgroups(list(target.groups))
    else:
        os.initgroups(target.user, target.gid)
    os.setgid(target.gid)
    os.setuid(target.uid)
    if os.getuid() != target.uid:
        raise ProcessError(f"privilege drop to {target.user!r} did not take effect")


class PidFile:
    """Writes our pid on start and removes the file on exit, only if it is still ours."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._written = False

    def write(self) -> None:
        existing = self._read()
        if existing is not None and existing != os.getpid() and _alive(existing):
            raise ProcessError(f"PidFile {self.path}: another instance is running (pid {existing})")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(f"{os.getpid()}\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise ProcessError(f"PidFile {self.path}: {exc.strerror}") from None
        self._written = True

    def remove(self) -> str | None:
        """Remove the file if it is still ours; returns why it could not be, or None.

        After dropping privileges the directory may not let us (a root-owned directory):
        the caller logs that, as the file then outlives the daemon.
        """
        problem = None
        if self._written and self._read() == os.getpid():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                problem = f"PidFile {self.path}: cannot remove: {exc.strerror}"
        self._written = False
        return problem

    def _read(self) -> int | None:
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(signum: int, parent: int) -> bool:
    """Have the kernel send this process `signum` when its parent exits (Linux's
    prctl(PR_SET_PDEATHSIG), through ctypes); True if that is set up.

    For a worker just forked by the supervisor, whose pid is `parent`: if the supervisor
    died before this call, the signal is sent now. Elsewhere (not Linux, no prctl) the
    caller must look at ``os.getppid()`` now and then instead (``orphaned``); a worker
    does both. The setting is not inherited by our own children (fork clears it) and a
    change of credentials clears it, so it is made after privileges are dropped (workers
    are forked after that).
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if orphaned(parent):  # died between fork and prctl: nobody will send it
        os.kill(os.getpid(), signum)
    return armed


def orphaned(parent: int) -> bool:
    """Whether the process that forked us (pid `parent`) is gone: we were re-parented."""
    return os.getppid() != parent


class StartupChannel:
    """The detached daemon's line back to the process that started it.

    The parent of `detach` waits on a pipe until the daemon says `ready()` (socket bound,
    pid file written, privileges dropped) and only then exits 0, or prints the reason
    given to `failed()` and exits 1. If the daemon dies before either, the pipe closes
    empty and the parent exits 1. So `dkimd -x CONF` in a shell or under systemd
    (Type=forking) returns success only for a daemon that is really serving, and the
    PidFile exists by then.
    """

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def ready(self) -> None:
        self._finish(b"ok\n")

    def failed(self, message: str) -> None:
        self._finish(b"error " + message.encode("utf-8", "replace") + b"\n")

    def _finish(self, data: bytes) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(fd, data)
        with contextlib.suppress(OSError):
            os.close(fd)


def _wait_for_daemon(fd: int) -> int:
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(fd, 4096)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        if not data:
            break
        chunks.append(data)
        if b"\n" in data:  # one line is the whole report (workers may hold the pipe open)
            break
    report = b"".join(chunks).decode("utf-8", "replace").strip()
    if report == "ok":
        return 0
    if report.startswith("error "):
        sys.stderr.write(f"dkimd: {report[6:]}\n")
    else:
        sys.stderr.write("dkimd: the daemon exited during start-up (see the log)\n")
    return 1


def detach(*, keep_directory: bool = False) -> StartupChannel:
    """Go to the background the classic way (fork, setsid, fork), as opendkim does by default.

    The daemon then works in `/` (it holds no directory busy), unless `keep_directory`:
    with BaseDirectory it stays there, as opendkim does, since relative KeyTable key paths
    are read from it per message.

    Returns, in the daemon, the channel on which it reports start-up success or failure;
    the calling process waits for that report and exits with 0 or 1 (`StartupChannel`).
    """
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_wait_for_daemon(read_fd))
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    if not keep_directory:
        os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - replaces the closed stream for good
    return StartupChannel(write_fd)
