"""ChangeRootDirectory: chroot(2) after the configuration is loaded, before privileges drop.

As opendkim's `main`: a warning when root changes root without a UserID to become ("use of
ChangeRootDirectory without Userid not advised"), then `chdir(dir)` and `chroot(dir)`;
either failing stops the start with `<dir>: chdir(): <reason>` (or `chroot()`), exit 71
(EX_OSERR). The daemon changes root after it has loaded the configuration and built the
resolver, and before it loads the KeyTable keys, binds the socket, writes the PidFile and
drops to UserID, so from then on every path is one inside the new root: a `local:` Socket
and the PidFile (as opendkim, which opens both after the chroot), KeyTable key files
(read per message), and on reload the configuration file, its data sets and its keys.

A Python daemon cannot import modules once the interpreter's library is out of reach, so
`prepare()` imports, before the chroot, every module dkimd could otherwise import later
(dnspython's record types are loaded lazily when an answer is parsed; an IDNA name needs
its codec). What the new root must hold is only what the configuration names: the keys;
the configuration file, its data sets and `etc/resolv.conf` if it is to be reloaded (the
servers found at start are kept when the new root has no `etc/resolv.conf`); `dev/log` for
Syslog; the MTACommand program and its libraries for SendReports (or use SMTPURI).
"""

from __future__ import annotations

import importlib
import os
import pkgutil

__all__ = [
    "EX_OSERR",
    "ChrootError",
    "change_root",
    "path_in_root",
    "prepare",
    "syslog_warning",
    "without_user_warning",
]

EX_OSERR = 71  # sysexits.h; opendkim's exit when chdir() or chroot() fails

# Imported on first use somewhere below dkimd (the standard library or dnspython): after
# the chroot such an import would fail, so they are imported while they still can be.
_LATE_IMPORTS = (
    "encodings.idna",
    "encodings.punycode",
    "encodings.latin_1",
    "encodings.ascii",
    "encodings.utf_8",
    "stringprep",
    "unicodedata",
    "email.utils",
    "email.message",
    "email.policy",
    "logging.handlers",
    "smtplib",
    "subprocess",
    "concurrent.futures.thread",
    "dns.asyncbackend",
    "dns._asyncio_backend",
    "dns.edns",
    "dns.flags",
    "dns.rcode",
    "dns.renderer",
    "dns.tsig",
)


class ChrootError(Exception):
    """chdir or chroot failed; the message is opendkim's."""


def without_user_warning(running_as_root: bool, has_user: bool) -> str | None:
    """opendkim's warning for a root that keeps running as root, or None."""
    if running_as_root and not has_user:
        return "use of ChangeRootDirectory without Userid not advised"
    return None


def syslog_warning(root: str, syslog: bool) -> str | None:
    """A warning when Syslog is on and the new root has no syslog socket, or None."""
    socket_path = os.path.join(root, "dev", "log")
    if syslog and not os.path.exists(socket_path):
        return f"ChangeRootDirectory: no {socket_path}: log lines after the chroot are lost"
    return None


def prepare() -> None:
    """Import everything dkimd may need later, while the library is still reachable."""
    for name in _LATE_IMPORTS:
        importlib.import_module(name)
    import dns.rdtypes

    # every record type dnspython may meet in an answer (TXT, CNAME, SOA, OPT...)
    for info in pkgutil.walk_packages(dns.rdtypes.__path__, "dns.rdtypes."):
        importlib.import_module(info.name)


def change_root(path: str) -> None:
    """chdir(path) then chroot(path), as opendkim; raises ChrootError."""
    try:
        os.chdir(path)
    except OSError as exc:
        raise ChrootError(f"{path}: chdir(): {exc.strerror or exc}") from None
    try:
        os.chroot(path)
    except OSError as exc:
        raise ChrootError(f"{path}: chroot(): {exc.strerror or exc}") from None


def path_in_root(root: str | None, path: str) -> str:
    """Where `path`, as the daemon will open it after the chroot, is seen from outside."""
    if root is None:
        return path
    return os.path.join(root, path.lstrip("/"))
