"""Logging set-up: syslog (SyslogFacility, default mail) and stderr in the foreground.

Lines about one message carry its queue ID first, as OpenDKIM's do
(`4F2xyz: DKIM-Signature field added (s=mail, d=example.com)`), so an admin's existing
grep habits and log parsers keep working.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from collections.abc import MutableMapping
from typing import Any

LOGGER_NAME = "dkimd"

_FACILITIES = logging.handlers.SysLogHandler.facility_names


def valid_facility(name: str) -> bool:
    return name.lower() in _FACILITIES


def setup_logging(
    *,
    syslog: bool,
    facility: str = "mail",
    stderr: bool = True,
    verbose: bool = False,
    ident: str = "dkimd",
) -> None:
    """Route the `dkimd` logger hierarchy; safe to call again on reload."""
    root = logging.getLogger(LOGGER_NAME)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    if stderr:
        err = logging.StreamHandler(sys.stderr)
        err.setFormatter(logging.Formatter(f"%(asctime)s {ident}[%(process)d]: %(message)s"))
        root.addHandler(err)
    if syslog:
        address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
        try:
            handler = logging.handlers.SysLogHandler(
                address=address, facility=_FACILITIES.get(facility.lower(), _FACILITIES["mail"])
            )
        except OSError as exc:
            root.warning("syslog unavailable (%s); logging to stderr only", exc)
        else:
            handler.ident = f"{ident}[{os.getpid()}]: "
            handler.setFormatter(logging.Formatter("%(message)s"))
            root.addHandler(handler)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


class QueueIdAdapter(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the message's queue ID (or NOQUEUE before one is known)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self.queue_id = "NOQUEUE"

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.queue_id}: {msg}", kwargs
