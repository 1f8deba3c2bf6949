"""The milter listening socket: OpenDKIM's ``Socket`` value, parsed and bound.

* ``parse_socket_spec(text) -> SocketSpec``: syntax only, no lookups, so ``dkimd check``
  and the configuration loader can use it on any machine. It accepts what libmilter's
  ``mi_milteropen()`` (sendmail libmilter/listener.c) accepts for OpenDKIM's ``Socket``
  and ``-p`` (opendkim.conf(5), opendkim(8)):

  - ``local:PATH`` or ``unix:PATH`` (any case), ``:PATH``, and a value with no ``:`` at
    all, which is a path ("if neither socket type is specified, local is assumed");
  - ``inet:PORT[@HOST]`` and ``inet6:PORT[@HOST]``: PORT is a number (0 asks the kernel
    for a free one) or a service name; HOST is a name, an address, or an address in square
    brackets, which must be of the family the prefix names (libmilter reads ``inet``'s with
    inet_addr() and ``inet6``'s with inet_pton(AF_INET6)). No HOST means every address.

  Stricter than libmilter where libmilter would only fail later or silently truncate: a
  port must be all digits and at most 65535, a path must fit ``sun_path``, and text after
  a closing bracket is an error. A bad value raises ``ValueError`` whose text names it.
* ``resolve_port(spec) -> int``: the port, a service name looked up (``dkimd -n`` checks
  it this way without binding).
* ``bind_socket(spec, umask=None, reuse_port=False) -> socket.socket``: a bound,
  listening, non-blocking socket. Service and host names are resolved here. A stale UNIX
  socket file is removed (only if nothing answers on it); ``umask`` sets the socket file's
  permissions race-free.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import socket
import stat
from dataclasses import dataclass
from typing import Literal

__all__ = ["SocketSpec", "bind_socket", "parse_socket_spec", "resolve_port"]

# Linux's sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_SUN_PATH_MAX = 107
_SERVICE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


@dataclass(frozen=True, slots=True)
class SocketSpec:
    """A parsed ``Socket`` value; ``str()`` gives it back in OpenDKIM's form.

    ``local``: ``path`` only. ``inet``/``inet6``: ``port`` (a number, or a service name
    resolved when binding) and ``host`` (None for every address; an IP literal is kept
    without brackets, in its canonical form).
    """

    family: Literal["local", "inet", "inet6"]
    path: str = ""
    port: int | str = 0
    host: str | None = None

    def __str__(self) -> str:
        if self.family == "local":
            return f"local:{self.path}"
        if self.host is None:
            return f"{self.family}:{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.family}:{self.port}@{host}"


def parse_socket_spec(text: str) -> SocketSpec:
    """Parse an OpenDKIM ``Socket`` value; ``ValueError`` says what is wrong with it."""
    value = text.strip()
    if not value:
        raise ValueError("empty socket specification")
    prefix, colon, rest = value.partition(":")
    if not colon:
        return SocketSpec("local", path=_path(value, text))
    kind = prefix.lower()
    if kind in ("", "local", "unix"):
        return SocketSpec("local", path=_path(rest, text))
    if kind in ("inet", "inet6"):
        return _parse_inet("inet6" if kind == "inet6" else "inet", rest, text)
    raise ValueError(
        f'bad socket "{text}": unknown socket type "{prefix}"'
        " (expected local:/path, inet:PORT@HOST or inet6:PORT@HOST)"
    )


def _path(path: str, text: str) -> str:
    if not path:
        raise ValueError(f'bad socket "{text}": no socket path')
    if "\0" in path:
        raise ValueError(f'bad socket "{text}": NUL in the socket path')
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise ValueError(f'bad socket "{text}": path longer than {_SUN_PATH_MAX} bytes')
    return path


def _parse_inet(family: Literal["inet", "inet6"], rest: str, text: str) -> SocketSpec:
    port_text, at, host = rest.partition("@")
    port = _port(port_text, family, text)
    if not at:
        return SocketSpec(family, port=port)
    if not host:
        raise ValueError(f'bad socket "{text}": empty host after @')
    bracketed = host.startswith("[")
    if bracketed:
        # opendkim.conf(5): "A literal IP address must be enclosed in square brackets."
        if not host.endswith("]"):
            raise ValueError(f'bad socket "{text}": "{host}" does not end with "]"')
        candidate = host[1:-1]
    else:
        candidate = host
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        if bracketed or not _HOST_NAME.fullmatch(host):
            raise ValueError(
                f'bad socket "{text}": "{host}" is not a host name or IP address'
            ) from None
        return SocketSpec(family, port=port, host=host)
    want = 4 if family == "inet" else 6
    if address.version != want:
        other = "inet6" if family == "inet" else "inet"
        raise ValueError(
            f'bad socket "{text}": {candidate} is not an IPv{want} address (use {other}:)'
        )
    return SocketSpec(family, port=port, host=str(address))


def _port(port_text: str, family: str, text: str) -> int | str:
    if port_text.isascii() and port_text.isdigit():
        port = int(port_text)
        if port > 65535:
            raise ValueError(f'bad socket "{text}": port {port} is out of range')
        return port
    if _SERVICE_NAME.fullmatch(port_text):
        return port_text
    if ":" in port_text:
        # Postfix writes inet:HOST:PORT; OpenDKIM wants the port first.
        raise ValueError(f'bad socket "{text}": write {family}:PORT@HOST, not HOST:PORT')
    raise ValueError(f'bad socket "{text}": "{port_text}" is not a port')


def _remove_stale_unix_socket(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        # Nobody listens: left over from a crash. Same as OpenDKIM's start-up check.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError:
        pass
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "socket is in use by another process", path)


def resolve_port(spec: SocketSpec) -> int:
    """The TCP port number: a service name is looked up as libmilter does
    (getservbyname(name, "tcp")); ValueError if there is no such service."""
    if isinstance(spec.port, int):
        return spec.port
    try:
        return socket.getservbyname(spec.port, "tcp")
    except OSError:
        raise ValueError(
            f'bad socket "{spec}": bad port "{spec.port}" (not a number nor a TCP service name)'
        ) from None


def bind_socket(
    spec: SocketSpec | str,
    *,
    umask: int | None = None,
    reuse_port: bool = False,
    backlog: int = socket.SOMAXCONN,
) -> socket.socket:
    """Create, bind and listen; the socket is returned non-blocking.

    UNIX: a stale socket file (nothing accepting on it) is removed first; ``umask``
    applies while binding, so the file is created with ``0o777 & ~umask`` and never
    exists with wider permissions. TCP: SO_REUSEADDR always, SO_REUSEPORT on request
    (several worker processes on one port).
    """
    if isinstance(spec, str):
        spec = parse_socket_spec(spec)
    if spec.family == "local":
        _remove_stale_unix_socket(spec.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(umask) if umask is not None else None
            try:
                sock.bind(spec.path)
            finally:
                if old is not None:
                    os.umask(old)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    family = socket.AF_INET6 if spec.family == "inet6" else socket.AF_INET
    host = spec.host
    if host is None:
        host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    port = resolve_port(spec)
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    fam, type_, proto, _, address = infos[0]
    sock = socket.socket(fam, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
