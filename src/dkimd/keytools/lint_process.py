"""`dkimd check` for the process and resolver options: what would stop the start or lose
messages with ChangeRootDirectory or ResolverConfiguration, found before the daemon runs.

With ChangeRootDirectory, the KeyTable keys are read inside the new root (dkimd.chroot):
a key that exists outside it but not inside fails every message it signs. The checks
look at the paths the daemon will open, as seen from outside (`path_in_root`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from dkimd.chroot import EX_OSERR, path_in_root, syslog_warning
from dkimd.config import Config, Problem, Severity
from dkimd.dns.options import EX_SOFTWARE
from dkimd.dns.unbound_conf import UnboundConfError, read_unbound_conf

__all__ = ["process_problems"]

Place = Callable[[str], tuple[str | None, int | None]]


def _problem(
    place: Place, option: str, severity: Severity, message: str, hint: str | None = None
) -> Problem:
    file, line = place(option)
    return Problem(file, line, severity, message, hint, option)


def _new_root(config: Config, place: Place) -> list[Problem]:
    root = config.change_root_directory
    if root is None:
        return []
    if not os.path.isdir(root):
        return [
            _problem(
                place,
                "ChangeRootDirectory",
                Severity.ERROR,
                f"ChangeRootDirectory: {root} is not a directory: the daemon would exit {EX_OSERR}",
            )
        ]
    out = []
    warning = syslog_warning(root, config.syslog)
    if warning is not None:
        out.append(_problem(place, "Syslog", Severity.WARNING, warning, "bind-mount /dev/log"))
    if config.key_table is not None:
        for entry in config.key_table:
            path = entry.key_path
            if path is None or "%" in path or os.path.exists(path_in_root(root, path)):
                continue
            out.append(
                Problem(
                    entry.file,
                    entry.line,
                    Severity.ERROR,
                    f'key "{entry.name}": {path_in_root(root, path)} does not exist: the key '
                    "is read inside ChangeRootDirectory",
                    f"copy the key to {path_in_root(root, path)}",
                    "KeyTable",
                )
            )
    return out


def _resolver(config: Config, place: Place) -> list[Problem]:
    path = config.resolver.configuration
    if path is None:
        return []
    try:
        settings = read_unbound_conf(path)
    except UnboundConfError as exc:
        return [
            _problem(
                place,
                "ResolverConfiguration",
                Severity.ERROR,
                f"ResolverConfiguration: {exc}: the daemon would exit {EX_SOFTWARE}",
            )
        ]
    if not settings.ignored:
        return []
    return [
        _problem(
            place,
            "ResolverConfiguration",
            Severity.WARNING,
            "ResolverConfiguration: not applied by dkimd: " + ", ".join(settings.ignored),
            "dkimd applies forward-addr of the '.' forward-zone and tcp-upstream/do-udp",
        )
    ]


def process_problems(config: Config, place: Place) -> list[Problem]:
    """Problems of ChangeRootDirectory and ResolverConfiguration; `place(option)` gives
    the file:line of an option's setting."""
    return _new_root(config, place) + _resolver(config, place)
