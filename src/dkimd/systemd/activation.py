"""Socket activation (sd_listen_fds(3)): the milter socket systemd opened for us.

systemd passes listening sockets as file descriptors 3, 4, ... and says so in the
environment: ``LISTEN_PID`` (the process they are for: a variable inherited by some other
process must be ignored), ``LISTEN_FDS`` (how many) and ``LISTEN_FDNAMES`` (their
``FileDescriptorName=``s, colon-separated; the socket unit's name by default).

Which one is the milter socket (``milter_socket``), in this order:

1. the one whose address is the configured ``Socket`` (or ``-p``): the same path for
   ``local:``; for ``inet``/``inet6`` the same family and port (any port for port 0) and,
   when the Socket names a host, one of its addresses;
2. else the one named ``milter`` (``FileDescriptorName=milter``);
3. else the only stream socket passed, with a warning when a Socket was configured and
   it is elsewhere (systemd's unit is what the admin runs; the Socket line may be OpenDKIM's
   old one).

Several sockets and none of these is a start-up error: guessing could serve milter on a
socket meant for something else. A UNIX socket taken from systemd is never unlinked by
dkimd (systemd made it and removes it when the socket unit stops).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

from dkimd.sockets import SocketSpec, resolve_port

__all__ = [
    "LISTEN_FDS_START",
    "ActivatedSocket",
    "ActivationError",
    "describe",
    "listen_fds",
    "milter_socket",
]

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
MILTER_FD_NAME = "milter"


class ActivationError(ValueError):
    """The sockets systemd passed cannot be used as the configuration asks."""


@dataclass(frozen=True, slots=True)
class ActivatedSocket:
    sock: socket.socket
    name: str  # its LISTEN_FDNAMES entry ("unknown" when systemd gave none)

    @property
    def fd(self) -> int:
        return self.sock.fileno()


def listen_fds(
    environ: MutableMapping[str, str] | None = None, *, pid: int | None = None, unset: bool = True
) -> list[ActivatedSocket]:
    """The sockets systemd passed to this process ([] when none were).

    The variables are removed with ``unset`` (sd_listen_fds(unset_environment=1)), and each
    descriptor gets FD_CLOEXEC, as libsystemd does: programs dkimd starts must not inherit
    them. A descriptor that is not a socket is an ``ActivationError``.
    """
    env = os.environ if environ is None else environ
    pid_text = env.get("LISTEN_PID", "")
    count_text = env.get("LISTEN_FDS", "")
    names_text = env.get("LISTEN_FDNAMES")
    if unset:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(name, None)
    if not pid_text or not count_text:
        return []
    try:
        listen_pid = int(pid_text)
        count = int(count_text)
    except ValueError:
        raise ActivationError(
            f"malformed LISTEN_PID={pid_text!r} or LISTEN_FDS={count_text!r}"
        ) from None
    if listen_pid != (os.getpid() if pid is None else pid):
        return []  # meant for another process (e.g. our parent); not ours to take
    if count <= 0:
        return []
    names = names_text.split(":") if names_text else []
    if len(names) != count:
        names = ["unknown"] * count
    result: list[ActivatedSocket] = []
    for index in range(count):
        fd = LISTEN_FDS_START + index
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ActivationError(
                f"LISTEN_FDS: descriptor {fd} ({names[index]}) is not a socket: {exc.strerror}"
            ) from None
        result.append(ActivatedSocket(sock, names[index]))
    return result


def describe(sock: socket.socket) -> str:
    """The socket's address in OpenDKIM's Socket syntax (for log lines)."""
    try:
        address = sock.getsockname()
    except OSError:
        return f"fd {sock.fileno()}"
    if sock.family == socket.AF_UNIX:
        if isinstance(address, bytes):  # abstract namespace
            return "local:@" + address[1:].decode("utf-8", "replace")
        return f"local:{address}"
    host, port = address[0], address[1]
    if sock.family == socket.AF_INET6:
        return f"inet6:{port}@[{host}]"
    return f"inet:{port}@{host}"


def _is_stream_listener(sock: socket.socket) -> bool:
    try:
        return sock.type == socket.SOCK_STREAM and bool(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        )
    except OSError:
        return False


def _host_addresses(host: str, family: socket.AddressFamily) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    except OSError:
        return set()
    return {str(ipaddress.ip_address(info[4][0])) for info in infos}


def matches(sock: socket.socket, spec: SocketSpec) -> bool:
    """Whether ``sock`` listens where ``spec`` says."""
    try:
        address = sock.getsockname()
    except OSError:
        return False
    if spec.family == "local":
        if sock.family != socket.AF_UNIX or not isinstance(address, str) or not address:
            return False
        return os.path.abspath(address) == os.path.abspath(spec.path)
    family = socket.AF_INET6 if spec.family == "inet6" else socket.AF_INET
    if sock.family != family:
        return False
    try:
        port = resolve_port(spec)
    except ValueError:
        return False
    if port != 0 and address[1] != port:
        return False
    if spec.host is None:
        return True
    bound = str(ipaddress.ip_address(address[0].partition("%")[0]))
    return bound in _host_addresses(spec.host, family)


def milter_socket(
    sockets: Sequence[ActivatedSocket], spec: SocketSpec | None
) -> tuple[socket.socket, str | None]:
    """The milter socket among ``sockets`` (module docstring) and a warning, or None.

    The socket returned is non-blocking, as ``bind_socket``'s are.
    """
    listeners = [s for s in sockets if _is_stream_listener(s.sock)]
    if not listeners:
        raise ActivationError(
            "systemd passed no listening stream socket"
            f" ({', '.join(s.name for s in sockets) or 'none'}); check ListenStream= in the"
            " socket unit"
        )
    chosen: ActivatedSocket | None = None
    warning = None
    if spec is not None:
        chosen = next((s for s in listeners if matches(s.sock, spec)), None)
    if chosen is None:
        chosen = next((s for s in listeners if s.name == MILTER_FD_NAME), None)
    if chosen is None:
        if len(listeners) > 1:
            raise ActivationError(
                f"systemd passed {len(listeners)} sockets"
                f" ({', '.join(f'{s.name}={describe(s.sock)}' for s in listeners)}) and none"
                f" is {spec if spec is not None else 'named'} nor named {MILTER_FD_NAME!r}"
                f" (FileDescriptorName={MILTER_FD_NAME} in the socket unit picks one)"
            )
        chosen = listeners[0]
    if spec is not None and not matches(chosen.sock, spec):
        warning = (
            f"Socket {spec} is not where systemd's socket is; serving on"
            f" {describe(chosen.sock)} ({chosen.name}) from systemd"
        )
    chosen.sock.setblocking(False)
    return chosen.sock, warning
