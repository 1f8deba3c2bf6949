"""JSON log lines (``LogFormat json``, a dkimd extension): one object per line, for shippers.

The fields are those of the text line (``2026-12-05 03:14:49,123 dkimd[PID]: QUEUEID: text``),
taken apart so a shipper need not parse them back out:

    {"time": "2026-12-05T03:14:49.123+00:00", "level": "info", "ident": "dkimd",
     "pid": 4242, "queue_id": "4F2xyz", "message": "DKIM-Signature field added ..."}

* ``time``: ISO 8601, local time with its UTC offset, milliseconds (the text line's clock);
* ``level``: debug, info, warning, error or critical;
* ``ident`` and ``pid``: ``SyslogName`` and the process (workers differ);
* ``queue_id``: only on lines about a message (``NOQUEUE`` before the MTA has named one),
  and then no longer in front of ``message``;
* ``exception``: the traceback, when the line has one.

Only what goes to stderr/stdout takes this form: syslog lines stay text (syslog adds its
own framing, and mail.log readers expect OpenDKIM's lines).
"""

from __future__ import annotations

import json
import logging
import time

__all__ = ["JsonFormatter"]

_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (json.dumps escapes newlines in values)."""

    def __init__(self, ident: str = "dkimd") -> None:
        super().__init__()
        self._ident = ident
        self._second = -1
        self._stamp = ""
        self._offset = ""

    def _time(self, created: float, msecs: float) -> str:
        # The date part and offset change once a second at most: render them then.
        second = int(created)
        if second != self._second:
            local = time.localtime(second)
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", local)
            offset = time.strftime("%z", local)  # +0100
            self._offset = f"{offset[:3]}:{offset[3:]}" if len(offset) == 5 else "+00:00"
            self._second = second
        return f"{self._stamp}.{int(msecs):03d}{self._offset}"

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "time": self._time(record.created, record.msecs),
            "level": _LEVELS.get(record.levelno, record.levelname.lower()),
            "ident": self._ident,
            "pid": record.process,
        }
        queue_id = getattr(record, "queue_id", None)
        if isinstance(queue_id, str):
            entry["queue_id"] = queue_id
            prefix = f"{queue_id}: "
            if message.startswith(prefix):  # QueueIdAdapter's text-line prefix
                message = message[len(prefix) :]
        entry["message"] = message
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, separators=(", ", ": "))
