"""The manager's side of systemd's service protocols, for tests: what PID 1 would do.

This machine's PID 1 is not systemd (``systemctl`` says "System has not been booted with
systemd as init system", and ``systemd --user`` refuses: "Trying to run as user instance,
but the system has not been booted with systemd"), so the tests play the manager:

* ``NotifySocket``: the datagram socket systemd gives a service as ``NOTIFY_SOCKET``
  (a path, or ``@name`` in the abstract namespace), with SO_PASSCRED so each notification
  carries its sender's pid, as systemd's manager checks it against NotifyAccess=main.
  ``wait_for(key)`` returns notifications as ``Notification(time, pid, fields)``.
* ``spawn_activated(argv, sockets, env)``: start a service with listening sockets passed
  as systemd does (sd_listen_fds(3)): descriptors 3, 4, ... in the child, LISTEN_FDS,
  LISTEN_FDNAMES and LISTEN_PID equal to the child's own pid. A child cannot know its pid
  before it exists, so a small exec wrapper (``listen_fds_exec.py``, the same trick as
  systemd-socket-activate's exec step) moves the descriptors into place, sets LISTEN_PID
  to ``getpid()`` and execs the service: the service sees exactly what systemd gives it.
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Notification",
    "NotifySocket",
    "connect_unix",
    "listening_tcp",
    "listening_unix",
    "spawn_activated",
]

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
EXEC_WRAPPER = Path(__file__).with_name("listen_fds_exec.py")


@dataclass(frozen=True)
class Notification:
    time: float  # time.monotonic() when received
    pid: int  # the sender's, from SCM_CREDENTIALS
    fields: dict[str, str]
    raw: bytes


class NotifySocket:
    """A NOTIFY_SOCKET to hand a service; collects what it says."""

    def __init__(self, path: Path | None = None, *, abstract: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract is not None:
            self.sock.bind(b"\0" + abstract.encode())
            self.env_value = "@" + abstract
        else:
            assert path is not None
            self.sock.bind(str(path))
            self.env_value = str(path)
        self.received: list[Notification] = []
        self._seen = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _receive(self, timeout: float) -> Notification | None:
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return None
        data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _UCRED.unpack(payload[: _UCRED.size])[0]
        fields: dict[str, str] = {}
        # sd_notify(3): newline-separated VARIABLE=VALUE assignments.
        for line in data.decode("utf-8").split("\n"):
            if line:
                key, eq, value = line.partition("=")
                assert eq, f"not an assignment: {line!r} in {data!r}"
                fields[key] = value
        note = Notification(time.monotonic(), pid, fields, data)
        self.received.append(note)
        return note

    def wait_for(self, key: str, value: str | None = None, timeout: float = 15.0) -> Notification:
        """The next notification (after those already returned) that sets ``key``."""
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.received):
                note = self.received[self._seen]
                self._seen += 1
                if key in note.fields and (value is None or note.fields[key] == value):
                    return note
            if self._receive(deadline - time.monotonic()) is None:
                said = [n.fields for n in self.received]
                raise AssertionError(f"no {key}={value or '*'} within {timeout}s; got {said}")

    def drain(self, seconds: float) -> list[Notification]:
        """Everything that arrives within ``seconds`` (marked as returned)."""
        deadline = time.monotonic() + seconds
        start = len(self.received)
        while self._receive(deadline - time.monotonic()) is not None:
            pass
        self._seen = len(self.received)
        return self.received[start:]


def spawn_activated(
    argv: Sequence[str],
    sockets: Sequence[tuple[socket.socket, str]],
    env: Mapping[str, str],
    *,
    pid_variables: Sequence[str] = (),
    **popen: object,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with ``sockets`` (and their FileDescriptorName) passed as systemd does;
    each of ``pid_variables`` (WATCHDOG_PID) is set to the service's pid."""
    fds = [s.fileno() for s, _ in sockets]
    child_env = dict(env)
    if sockets:
        child_env["LISTEN_FDNAMES"] = ":".join(name for _, name in sockets)
    wrapper = [
        sys.executable,
        str(EXEC_WRAPPER),
        ",".join(map(str, fds)),
        *(f"{name}=pid" for name in pid_variables),
        "--",
        *argv,
    ]
    return subprocess.Popen(wrapper, pass_fds=fds, env=child_env, **popen)  # type: ignore[call-overload, no-any-return]


def listening_unix(path: Path) -> socket.socket:
    """A listening UNIX stream socket at ``path``, as a .socket unit's ListenStream= makes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    return sock


def listening_tcp(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(16)
    return sock


def connect_unix(path: Path | str, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock
