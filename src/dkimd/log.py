"""Logging set-up: syslog (SyslogFacility, default mail) and stderr in the foreground.

Lines about one message carry its queue ID first, as OpenDKIM's do
(`4F2xyz: DKIM-Signature field added (s=mail, d=example.com)`), so an admin's existing
grep habits and log parsers keep working.

Syslog goes straight to the local socket (``/dev/log``), the way libc's syslog(3) does,
through `SyslogSocketHandler` rather than the standard library's SysLogHandler: that one
prints a traceback on stderr for every line when nothing listens on /dev/log, and falls
back to UDP port 514 when the socket is absent. Ours behaves like libc: when the socket
is absent or dead, lines are dropped quietly (stderr still has them in the foreground)
and every later line tries to reconnect, so a syslog daemon started after dkimd, or
restarted under it, receives the lines from then on. The pid in ``dkimd[PID]:`` is the
pid of the process that logs, so pre-forked workers are told apart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import MutableMapping
from typing import Any

LOGGER_NAME = "dkimd"
SYSLOG_SOCKET = "/dev/log"

# syslog(3) facility codes (<syslog.h>), as SyslogFacility names them.
FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "security": 4,  # the old name of auth
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}
_SEVERITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def _severity(levelno: int) -> int:
    for level, severity in sorted(_SEVERITY.items(), reverse=True):
        if levelno >= level:
            return severity
    return 7


class SyslogSocketHandler(logging.Handler):
    """RFC 3164 lines (``<PRI>ident[pid]: message``) to the local syslog socket.

    Never raises and never prints: a line that cannot be delivered is counted in
    `dropped` and the next line tries a fresh connection.
    """

    def __init__(
        self, *, facility: str = "mail", ident: str = "dkimd", address: str = SYSLOG_SOCKET
    ) -> None:
        super().__init__()
        self.facility = FACILITIES.get(facility.lower(), FACILITIES["mail"])
        self.ident = ident
        self.address = address
        self.dropped = 0
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket | None:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(socket.AF_UNIX, kind)
            sock.settimeout(1.0)  # a wedged syslog daemon must not stall the milter for long
            try:
                sock.connect(self.address)
            except OSError:
                sock.close()
                continue
            return sock
        return None

    def _send(self, data: bytes) -> bool:
        if self._sock is None:
            self._sock = self._connect()
            if self._sock is None:
                return False
        try:
            if self._sock.type == socket.SOCK_STREAM:
                self._sock.sendall(data + b"\0")
            else:
                self._sock.send(data)
        except OSError:
            self._sock.close()
            self._sock = None
            return False
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            pri = self.facility * 8 + _severity(record.levelno)
            data = f"<{pri}>{self.ident}[{record.process or os.getpid()}]: {text}".encode(
                "utf-8", "replace"
            )
            # One retry on a fresh connection: syslogd may have been restarted.
            if not (self._send(data) or self._send(data)):
                self.dropped += 1
        except Exception:
            self.dropped += 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        super().close()


def setup_logging(
    *,
    syslog: bool,
    facility: str = "mail",
    stderr: bool = True,
    verbose: bool = False,
    ident: str = "dkimd",
    syslog_address: str = SYSLOG_SOCKET,
    log_format: str = "text",
) -> None:
    """Route the `dkimd` logger hierarchy; safe to call again (after detaching, on reload).

    ``log_format`` "json" writes stderr lines as JSON objects (dkimd.log_json); syslog
    lines stay text.
    """
    # Logging HOWTO, "Optimization": our lines show no thread or multiprocessing names.
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger(LOGGER_NAME)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    if stderr:
        err = logging.StreamHandler(sys.stderr)
        if log_format == "json":
            from dkimd.log_json import JsonFormatter

            err.setFormatter(JsonFormatter(ident))
        else:
            err.setFormatter(StderrFormatter(ident))
        root.addHandler(err)
    if syslog:
        handler = SyslogSocketHandler(facility=facility, ident=ident, address=syslog_address)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)


class StderrFormatter(logging.Formatter):
    """``2026-11-27 02:23:12,345 dkimd[PID]: text``, rendered cheaply.

    A busy milter writes a line or two per message; the generic Formatter re-parses its
    format string and calls strftime for every one, which costs more than the rest of
    the line. The date is rendered once per second instead.
    """

    def __init__(self, ident: str = "dkimd") -> None:
        super().__init__(f"%(asctime)s {ident}[%(process)d]: %(message)s")
        self._ident = ident
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        return f"{self.formatTime(record)} {self._ident}[{record.process}]: {record.message}"


def flush_logging() -> None:
    """Flush every handler (before os._exit in a worker)."""
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()


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
        # The queue ID also travels on its own, for JSON lines (dkimd.log_json).
        extra = kwargs.get("extra")
        kwargs["extra"] = (
            {"queue_id": self.queue_id} if extra is None else {**extra, "queue_id": self.queue_id}
        )
        return f"{self.queue_id}: {msg}", kwargs
