"""MTA: mail that came in through one of the listed MTA daemons is originating.

OpenDKIM (opendkim.c mlfi_eoh) reads the `{daemon_name}` macro (sendmail's
DaemonPortOptions Name=, Postfix's milter_macro_daemon_name) and looks it up in the MTA
data set. A hit makes the message "origin OK", as InternalHosts or SMTP AUTH do: its
author is then looked up in the signing tables. A miss only means this test did not
pass; InternalHosts and `{auth_type}` are still tried. Under LogWhy a miss is logged as
"no MTA name match (host=<j>, MTA=<daemon_name or ?>)". Without the option, the MTA's
name plays no part.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from dkimd.config import Config

__all__ = ["DAEMON_NAME", "listed_mta", "no_match_note"]

DAEMON_NAME = "{daemon_name}"

Macros = Callable[[str], str | None]


def listed_mta(config: Config, macro: Macros) -> bool:
    """Whether the MTA option lists the daemon the message came in through."""
    table = config.mta_names
    if table is None:
        return False
    name = macro(DAEMON_NAME)
    return name is not None and name in table


def no_match_note(config: Config, macro: Macros) -> str | None:
    """OpenDKIM's LogWhy line when the MTA option is set and did not match, else None."""
    if config.mta_names is None or listed_mta(config, macro):
        return None
    name = macro(DAEMON_NAME)
    host = macro("j")
    return f"no MTA name match (host={host or '(null)'}, MTA={name if name is not None else '?'})"
