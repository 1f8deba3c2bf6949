"""Locating the real programs the interop/e2e tests drive, and skipping (or failing) without them.

    from support.tools import require, find_tool, free_port, in_ci

    opendkim = require("opendkim")      # absolute path, or pytest.skip / pytest.fail
    port = free_port()                  # a TCP port on 127.0.0.1 that was free a moment ago
    wait_until_read(port)               # the server on `port` has read all we sent it

`require(tool)` skips the test with a message naming the apt package to install, except when the
environment variable CI is set (to anything but "" / "0" / "false"): then a missing peer is a
test failure, never a silent skip. `require_module(name)` does it for a Python module,
`unavailable(why)` for any other missing
precondition (root, a system user, IPv6 loopback); tests call it instead of `pytest.skip`.
Programs are looked up on PATH plus /usr/sbin, /usr/bin, /usr/lib/postfix/sbin (Debian keeps
postfix/opendkim in sbin, often absent from a user's PATH).

The waits read the kernel's TCP tables (/proc/net/tcp{,6}) rather than sleeping: whether a
port listens, whether a server has accepted a connection, read what was sent to it (a milter
owes no reply for most steps), or closed every connection it accepted.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import time
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = [
    "APT_PACKAGES",
    "find_tool",
    "free_port",
    "in_ci",
    "is_listening",
    "require",
    "require_module",
    "unavailable",
    "unread_bytes",
    "wait_for_accepted",
    "wait_for_all_closed",
    "wait_for_listen",
    "wait_for_port",
    "wait_until_read",
]

#: program -> Debian/Ubuntu package providing it
APT_PACKAGES: dict[str, str] = {
    "postfix": "postfix",
    "postconf": "postfix",
    "postmap": "postfix",
    "postqueue": "postfix",
    "postsuper": "postfix",
    "sendmail": "postfix",
    "opendkim": "opendkim",
    "opendkim-genkey": "opendkim-tools",
    "opendkim-testkey": "opendkim-tools",
    "miltertest": "miltertest",
    "systemd-analyze": "systemd",
    "systemd-socket-activate": "systemd",
    "nsd": "nsd",
    "unbound": "unbound",
    "ldns-keygen": "ldnsutils",
    "ldns-signzone": "ldnsutils",
    "ldns-key2ds": "ldnsutils",
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "memcached": "memcached",
    "memccp": "libmemcached-tools",
    "redis-server": "redis-server",
    "slapd": "slapd",
    "slapadd": "slapd",
}

_EXTRA_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/lib/postfix/sbin")


def in_ci() -> bool:
    value = os.environ.get("CI")
    return value is not None and value.strip().lower() not in ("", "0", "false", "no")


def find_tool(tool: str) -> str | None:
    """Absolute path of `tool` (PATH first, then the sbin directories), or None."""
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(_EXTRA_DIRS)
    return shutil.which(tool, path=path)


def unavailable(why: str) -> NoReturn:
    """Skip the test because `why` is missing here; under CI fail it instead.

    scripts/test.sh provides everything the suite needs, so in CI a missing precondition means
    the test command is broken, which must show as a failure rather than a quiet skip."""
    if in_ci():
        pytest.fail(f"{why} (CI is set: a missing precondition is a failure)", pytrace=False)
    pytest.skip(why)


def require(tool: str) -> str:
    """Return the path of `tool`; without it skip the test, or fail it when running under CI."""
    found = find_tool(tool)
    if found is not None:
        return found
    package = APT_PACKAGES.get(tool, tool)
    unavailable(f"{tool} not found; install it with: apt-get install {package}")


def require_module(name: str, extra: str = "test") -> ModuleType:
    """Import the Python module `name`; without it skip the test, or fail it under CI
    (`pytest.importorskip` skips under CI too)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"Python module {name} not installed; pip install -e '.[{extra}]'")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now (bind to 0 and release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """Poll until a TCP connect to host:port succeeds; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def is_listening(port: int) -> bool:
    """Whether some socket on this host is in LISTEN state on TCP `port` (IPv4 or IPv6).

    Reads /proc/net/tcp{,6} instead of connecting, so the listener never sees a probe."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if (
                        len(fields) > 3
                        and fields[3] == "0A"
                        and int(fields[1].rsplit(":", 1)[1], 16) == port
                    ):
                        return True
        except OSError:
            continue
    return False


def wait_for_listen(port: int, timeout: float = 10.0) -> bool:
    """Poll is_listening(port) until true; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(port):
            return True
        time.sleep(0.02)
    return False


_ESTABLISHED, _TIME_WAIT, _LISTEN = "01", "06", "0A"


def _server_side(port: int) -> list[tuple[str, int]]:
    """(state, receive-queue size) of each TCP socket whose local port is `port` and that is
    not the listener itself: the server side of the connections it accepted (IPv4 and IPv6).
    States are the kernel's hex codes (include/net/tcp_states.h)."""
    sockets: list[tuple[str, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if (
                        len(fields) > 4
                        and fields[3] != _LISTEN
                        and int(fields[1].rsplit(":", 1)[1], 16) == port
                    ):
                        sockets.append((fields[3], int(fields[4].split(":")[1], 16)))
        except OSError:
            continue
    return sockets


def _accepted(port: int) -> list[int]:
    """Receive-queue sizes of the established connections to `port`."""
    return [queue for state, queue in _server_side(port) if state == _ESTABLISHED]


def unread_bytes(port: int) -> int:
    """Bytes the kernel holds for the server side of connections to `port` that the server
    has not read yet."""
    return sum(_accepted(port))


def wait_for_accepted(port: int, count: int = 1, timeout: float = 10.0) -> bool:
    """Poll until at least `count` connections to `port` are established; False on timeout.

    For a peer that connects on its own (Postfix opening its milter connection)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_accepted(port)) >= count:
            return True
        time.sleep(0.01)
    return False


def wait_until_read(port: int, timeout: float = 10.0) -> bool:
    """Poll until the server on `port` has read everything sent to it; False on timeout.

    The signal that a server which sends no reply (milter no-reply steps) has taken in what a
    test wrote, instead of sleeping and hoping it has."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if unread_bytes(port) == 0:
            return True
        time.sleep(0.01)
    return False


def wait_for_all_closed(port: int, timeout: float = 10.0) -> bool:
    """Poll until the server on `port` has closed every connection it accepted (only
    TIME_WAIT, which holds no descriptor, may remain); False on timeout.

    The signal that a server has noticed its clients' hang-ups, e.g. before counting its
    file descriptors."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(state == _TIME_WAIT for state, _ in _server_side(port)):
            return True
        time.sleep(0.02)
    return False
