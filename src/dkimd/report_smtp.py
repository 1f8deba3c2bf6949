"""SMTPURI: failure reports (dkimd.reports) sent over SMTP instead of through MTACommand.

opendkim.conf(5): "Specifies a URI (e.g., "smtp://localhost") to which mail should be sent
via SMTP when notifications are generated." Debian's opendkim is built without it (its
2.11 binary calls the option unrecognized); dkimd implements it as the man page says, for
sites whose filter host has no sendmail program (a ChangeRootDirectory without one, say).

The URI is `smtp://HOST[:PORT]` (port 25 by default; `[ADDR]` for an IPv6 address). The
report is the one MTACommand would get, minus its Bcc field: `sendmail -t` removes that
field and sends to its addresses, so here they are envelope recipients and the field is
dropped. The envelope sender is ReportAddress's address, as `-f` gives it. The exchange
runs in a worker thread with the report timeout; a failure is logged by the session and
never touches the message.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
from collections.abc import Sequence

from dkimd.milter.handler import Request
from dkimd.reports import COMMAND_TIMEOUT, ReportOutcome
from dkimd.smtp_uri import SmtpTarget

__all__ = ["SmtpReport", "bcc_recipients", "without_bcc"]


def without_bcc(text: bytes) -> bytes:
    """The report with its Bcc field (and its continuation lines) removed."""
    head, sep, body = text.partition(b"\n\n")
    kept: list[bytes] = []
    dropping = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.lower().startswith(b"bcc:")
        if not dropping:
            kept.append(line)
    return b"\n".join(kept) + sep + body


def bcc_recipients(bcc: str | None) -> list[str]:
    return [a.strip() for a in (bcc or "").split(",") if a.strip()]


class SmtpReport(Request[ReportOutcome]):
    """Send one report to `target` over SMTP."""

    __slots__ = ("recipients", "sender", "target", "text", "timeout")

    def __init__(
        self,
        target: SmtpTarget,
        sender: str,
        recipients: Sequence[str],
        text: bytes,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        self.target = target
        self.sender = sender
        self.recipients = list(recipients)
        # SMTP wants CRLF line ends; the report is written with LF, as for sendmail -t
        self.text = re.sub(rb"\r?\n", b"\r\n", without_bcc(text))
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SmtpReport({self.target}, to={self.recipients!r})"

    async def perform(self) -> ReportOutcome:
        return await asyncio.to_thread(self._send)

    def _send(self) -> ReportOutcome:
        try:
            with smtplib.SMTP(
                self.target.host,
                self.target.port,
                local_hostname=socket.gethostname(),
                timeout=self.timeout,
            ) as smtp:
                refused = smtp.sendmail(self.sender, self.recipients, self.text)
        except (smtplib.SMTPException, OSError) as exc:
            return ReportOutcome(None, f"{self.target}: {exc}")
        if refused:
            return ReportOutcome(None, f"{self.target}: refused {', '.join(sorted(refused))}")
        return ReportOutcome(0)

    def failed(self, error: BaseException) -> ReportOutcome:
        return ReportOutcome(None, f"{self.target}: {error or type(error).__name__}")
