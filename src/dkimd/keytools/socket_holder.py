"""Whether the program holding a milter socket is the dkimd this configuration runs.

`dkimd check` probes the Socket by binding it (or, for a unix socket, connecting to it).
On a host being switched over, "in use" usually means OpenDKIM still runs; on a host where
dkimd already serves this configuration it means dkimd itself, which is as it should be.
The two are told apart only when it can be shown, from Linux's /proc:

* the configuration's PidFile names a live process,
* that process runs dkimd (its command line runs a `dkimd` program or `-m dkimd`),
* and one of its descriptors is a listening socket on the address: /proc/net/tcp, tcp6 and
  unix give each listening socket's inode, /proc/PID/fd/N links read `socket:[INODE]`.

When the process is dkimd but its descriptors cannot be read (check run by a user other
than the daemon's), the answer is "unconfirmed" and the caller still warns.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import struct
from collections.abc import Iterable

__all__ = ["Holder", "dkimd_holder", "tcp_listeners", "unix_listeners"]

_TCP_LISTEN = "0A"  # include/net/tcp_states.h: TCP_LISTEN, as /proc/net/tcp prints it
_SO_ACCEPTCON = 0x10000  # /proc/net/unix Flags of a listening socket


class Holder(enum.Enum):
    """What the PidFile says about a socket found in use."""

    NOT_DKIMD = "not dkimd"  # no PidFile, no such process, another program, or not its socket
    DKIMD = "dkimd"  # the PidFile's live dkimd process holds the listening socket
    UNCONFIRMED = "unconfirmed"  # the PidFile names a live dkimd whose sockets we cannot see


def tcp_listeners(host: str, port: int, proc: str = "/proc") -> set[int]:
    """Inodes of the TCP sockets listening where a bind to host:port would collide."""
    wanted = ipaddress.ip_address(host.split("%", 1)[0])  # no IPv6 scope
    found: set[int] = set()
    for name in ("tcp", "tcp6"):
        for fields in _table(os.path.join(proc, "net", name)):
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            address_hex, _, port_hex = fields[1].partition(":")
            try:
                address = _proc_address(address_hex)
                listening_port = int(port_hex, 16)
                inode = int(fields[9])
            except ValueError:
                continue
            if listening_port == port and _collides(address, wanted):
                found.add(inode)
    return found


def unix_listeners(path: str, proc: str = "/proc") -> set[int]:
    """Inodes of the unix sockets listening at `path`."""
    wanted = {path, os.path.realpath(path)}
    found: set[int] = set()
    for fields in _table(os.path.join(proc, "net", "unix")):
        if len(fields) < 8:
            continue
        try:
            listening = int(fields[3], 16) & _SO_ACCEPTCON
            inode = int(fields[6])
        except ValueError:
            continue
        if listening and fields[7] in wanted:
            found.add(inode)
    return found


def dkimd_holder(pid_file: str | None, inodes: Iterable[int], proc: str = "/proc") -> Holder:
    """Whether the live dkimd named by `pid_file` holds one of the sockets `inodes`."""
    pid = _read_pid(pid_file)
    if pid is None or not _is_dkimd(pid, proc):
        return Holder.NOT_DKIMD
    links = {f"socket:[{inode}]" for inode in inodes}
    if not links:
        return Holder.NOT_DKIMD
    fd_dir = os.path.join(proc, str(pid), "fd")
    try:
        names = os.listdir(fd_dir)
    except PermissionError:
        return Holder.UNCONFIRMED
    except OSError:
        return Holder.NOT_DKIMD  # exited meanwhile
    for name in names:
        try:
            if os.readlink(os.path.join(fd_dir, name)) in links:
                return Holder.DKIMD
        except PermissionError:
            return Holder.UNCONFIRMED
        except OSError:
            continue  # closed meanwhile
    return Holder.NOT_DKIMD


def _table(path: str) -> list[list[str]]:
    """The rows of a /proc/net table, header dropped; none when it cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    return [line.split() for line in lines]


def _proc_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host byte order, hex."""
    if len(text) not in (8, 32):
        raise ValueError(text)
    raw = b"".join(struct.pack("=I", int(text[i : i + 8], 16)) for i in range(0, len(text), 8))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _collides(
    listening: ipaddress.IPv4Address | ipaddress.IPv6Address,
    wanted: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> bool:
    # A wildcard bind collides with every address of its family, and the other way round.
    if listening.version != wanted.version:
        return False
    return listening == wanted or listening.is_unspecified or wanted.is_unspecified


def _read_pid(pid_file: str | None) -> int | None:
    if pid_file is None:
        return None
    try:
        with open(pid_file, encoding="ascii") as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None
    return pid if pid > 0 else None


def _is_dkimd(pid: int, proc: str) -> bool:
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as f:
            argv = [arg.decode("utf-8", "replace") for arg in f.read().split(b"\0") if arg]
    except OSError:
        return False  # no such process
    # The program itself (an installed entry point), or a Python interpreter running it:
    # `python3 /usr/local/bin/dkimd ...` or `python3 [-u ...] -m dkimd ...`.
    if not argv:
        return False
    if os.path.basename(argv[0]) == "dkimd":
        return True
    if not os.path.basename(argv[0]).startswith("python"):
        return False
    rest = argv[1:]
    while rest and rest[0].startswith("-") and rest[0] != "-m":
        rest = rest[1:]  # interpreter options (-u, -O, ...)
    if rest[:2] == ["-m", "dkimd"]:
        return True
    return bool(rest) and os.path.basename(rest[0]) == "dkimd"
