"""sd_notify(3): state changes sent as datagrams to the socket systemd names in NOTIFY_SOCKET.

The protocol (sd_notify(3), systemd's src/libsystemd/sd-daemon/sd-daemon.c): one
``AF_UNIX``/``SOCK_DGRAM`` datagram per notification, newline-separated ``KEY=VALUE``
assignments. ``NOTIFY_SOCKET`` is a file system path (``/run/systemd/notify``) or, with a
leading ``@``, a name in the abstract namespace. (``vsock:`` addresses, for virtual
machines, are not supported: the notifier is then off, with a warning.)

Sending never blocks and never raises: the socket is non-blocking, and a notification
that cannot be delivered (systemd gone, queue full) is dropped and counted, as libsystemd
does; the milter must not stall or die for its supervisor's sake.

``WATCHDOG_USEC`` asks for ``WATCHDOG=1`` at least that often; when ``WATCHDOG_PID`` is
set the request is for that process only (sd_watchdog_enabled(3)), so a process that is
not the one named sends none.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

__all__ = ["Notifier", "notify_address", "stderr_is_journal", "watchdog_interval"]

log = logging.getLogger("dkimd.systemd")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


def notify_address(value: str) -> str | bytes | None:
    """The address to send to for a ``NOTIFY_SOCKET`` value; None if unusable."""
    if value.startswith("@"):
        # Abstract namespace: sun_path starts with NUL (sd-daemon.c turns '@' into '\0').
        return b"\0" + value[1:].encode("utf-8", "surrogateescape")
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between required WATCHDOG=1 pings (WATCHDOG_USEC), or None when none are
    asked of this process (unset, malformed, zero, or WATCHDOG_PID names another one)."""
    usec_text = environ.get(WATCHDOG_USEC)
    if not usec_text:
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        log.warning("systemd: ignoring malformed WATCHDOG_USEC=%r", usec_text)
        return None
    if usec <= 0:
        return None
    pid_text = environ.get(WATCHDOG_PID)
    if pid_text:
        try:
            wanted = int(pid_text)
        except ValueError:
            log.warning("systemd: ignoring malformed WATCHDOG_PID=%r", pid_text)
            return None
        if wanted != (os.getpid() if pid is None else pid):
            return None
    return usec / 1_000_000


class Notifier:
    """A sender of sd_notify datagrams to one address; ``send`` never blocks or raises."""

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self.dropped = 0  # notifications that could not be delivered
        self._sock: socket.socket | None = None

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier | None:
        """The notifier ``NOTIFY_SOCKET`` asks for, or None when there is none.

        With ``unset`` the variable is removed (sd_notify's ``unset_environment``), so that
        programs dkimd starts (MTACommand, a Lua script's os calls) do not inherit it and
        talk to systemd in dkimd's name.
        """
        env = os.environ if environ is None else environ
        value = env.get(NOTIFY_SOCKET)
        if unset:
            env.pop(NOTIFY_SOCKET, None)
        if not value:
            return None
        address = notify_address(value)
        if address is None:
            log.warning("systemd: unsupported NOTIFY_SOCKET %r; not notifying", value)
            return None
        return cls(address)

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; False when it could not be delivered."""
        data = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(data, self.address)
        except OSError as exc:
            self.dropped += 1
            log.debug("systemd: notification not delivered: %s", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        # MONOTONIC_USEC lets systemd (253+, Type=notify-reload) tell this reload from an
        # older one; earlier versions ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *_status(status))

    def status(self, status: str) -> bool:
        return self.send(*_status(status))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(status: str | None) -> tuple[str, ...]:
    if status is None:
        return ()
    # One line: a newline would start another assignment.
    return ("STATUS=" + " ".join(status.split()),)


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether ``fd`` is systemd's journal stream: JOURNAL_STREAM names its device and
    inode (systemd.exec(5)), which a redirection or a pipe to another program changes."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, colon, inode = value.partition(":")
    if not colon:
        return False
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False
