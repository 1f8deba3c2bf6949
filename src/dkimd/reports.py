"""RFC 6651 DKIM failure reports, as OpenDKIM 2.11 sends them (SendReports).

When a message's signature fails verification (a bad b= or body hash), the signature asks
for reports (r=y) and the signing domain publishes `_report._domainkey.<d>` with an `ra=`
tag, OpenDKIM (opendkim.c `dkimf_sigreport`) writes an ARF report (RFC 5965, RFC 6591) to
`<MTACommand> -t -f<ReportAddress>` before it replies to the end of message. Here:

* `report_for` decides, from the outcome and the `_report` record, whether a report is due
  (tags ra=, rp=, rr=);
* `report_text` builds the report, byte for byte OpenDKIM's template (a pure function);
* `SendReport` is the request the server performs: the command runs in a subprocess fed
  the report on stdin, bounded by a timeout. Its failure is logged and never touches the
  message, which gets its reply either way.

The canonical header and body the report carries are the bytes the verifier hashed; the
session keeps a copy of the body only for a message that may need a report, and at most
`BODY_COPY_LIMIT` bytes of it (a longer message gets no report).
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import os
import random
import shlex
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from dkimd import __version__
from dkimd.dkim import HeaderField, VerifyError
from dkimd.dkim.errors import TagListError
from dkimd.dkim.tags import parse_tag_list
from dkimd.milter.handler import Request
from dkimd.policy import parse_address

__all__ = [
    "BODY_COPY_LIMIT",
    "FailureReport",
    "ReportOutcome",
    "SendReport",
    "report_address",
    "report_for",
    "report_record_name",
    "report_text",
    "wrapped_base64",
]

#: Body bytes kept for a possible report; a longer body is not reported.
BODY_COPY_LIMIT = 1 << 20
#: How long the report command may take.
COMMAND_TIMEOUT = 30.0
_REPORTED = {
    VerifyError.SIGNATURE_MISMATCH: ("signature (signature verification failed)", "signature"),
    VerifyError.BODY_HASH_MISMATCH: ("bodyhash", "bodyhash"),
}


def report_record_name(domain: str) -> str:
    return f"_report._domainkey.{domain}".rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class FailureReport:
    """What one report says about the failed signature."""

    recipient: str  # <ra>@<d>
    domain: str
    selector: str
    identity: str
    auth_failure: str
    dkim_failure: str


def report_for(
    error: VerifyError | None,
    tags: dict[str, str],
    record: bytes | None,
    *,
    rng: random.Random | None = None,
) -> FailureReport | None:
    """The report due for a signature with these `tags` that failed with `error`, given the
    signing domain's `_report` TXT record; None when none is due."""
    if error not in _REPORTED or tags.get("r", "").strip() != "y" or record is None:
        return None
    try:
        report_tags = parse_tag_list(record)
    except TagListError:
        return None
    ra = report_tags.get("ra", "").strip().split("@", 1)[0]
    if not ra:
        return None
    rp = report_tags.get("rp", "").strip()
    if rp:
        if not rp.isdigit() or int(rp) > 100:
            return None
        if (rng or random).randrange(100) > int(rp):
            return None
    rr = [o.strip() for o in report_tags.get("rr", "").split(":") if o.strip()]
    if rr and not {"all", "v"} & set(rr):
        return None
    domain = tags.get("d", "").strip()
    auth_failure, dkim_failure = _REPORTED[error]
    return FailureReport(
        recipient=f"{ra}@{domain}",
        domain=domain,
        selector=tags.get("s", "").strip(),
        identity=tags.get("i", "").strip() or "@" + domain,
        auth_failure=auth_failure,
        dkim_failure=dkim_failure,
    )


def report_address(configured: str | None) -> tuple[str, str, bool]:
    """(From: text, -f address, whether the configured value could not be parsed).

    Unset or unparseable, the address is the effective user's login at this host.
    """
    address = parse_address(configured.encode("utf-8", "surrogateescape")) if configured else None
    if address is not None:
        assert configured is not None
        return configured, address, False
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.geteuid())
    made_up = f"{user}@{socket.gethostname()}"
    return made_up, made_up, configured is not None


def wrapped_base64(data: bytes, initial: int) -> str:
    """dkimf_base64_encode_file(lm=4, rm=75): after each 4 characters, a new line indented 4
    when the column has reached 71; the final padded group is checked before it is written."""
    encoded = base64.b64encode(data).decode("ascii")
    full, tail = divmod(len(data), 3)
    out: list[str] = []
    column = initial
    for i in range(full):
        out.append(encoded[4 * i : 4 * i + 4])
        column += 4
        if column >= 71:
            out.append("\n    ")
            column = 4
    if tail:
        if column >= 71:
            out.append("\n    ")
        out.append(encoded[4 * full :])
    return "".join(out)


def _field(h: HeaderField) -> str:
    value = h.value.replace(b"\r\n", b"\n").decode("utf-8", "surrogateescape")
    return h.name.decode("utf-8", "surrogateescape") + ":" + value


def report_text(
    report: FailureReport,
    *,
    from_text: str,
    bcc: str | None,
    jobid: str,
    hostname: str,
    envelope_sender: str,
    client_ip: str,
    headers: Sequence[HeaderField],
    canonical_header: bytes,
    canonical_body: bytes,
    leading_space: bool,
    now: float | None = None,
) -> bytes:
    """The report as OpenDKIM writes it to the command (LF line ends, its exact layout,
    including no blank line between the top header block and the first boundary)."""
    date = time.strftime("%a, %e %b %Y %H:%M:%S %z (%Z)", time.localtime(now))
    boundary = f"dkimreport/{hostname}/{jobid}"
    space = "" if leading_space else " "
    message_id = next((h for h in headers if h.key == b"message-id"), None)
    message_id_line = _field(message_id) if message_id is not None else f"Message-ID:{space}(none)"
    lines = [f"From: {from_text}", f"To: {report.recipient}"]
    if bcc:
        lines.append(f"Bcc: {bcc}")
    lines += [
        f"Date: {date}",
        f"Subject: DKIM failure report for {jobid}",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=feedback-report;",
        f'\tboundary="{boundary}"',
        f"--{boundary}",
        "Content-Type: text/plain",
        "",
        f"DKIM failure report for job {jobid} on {hostname}",
        "",
        "The canonicalized form of the failed message's header and body are",
        "attached.",
        "",
        f"--{boundary}",
        "Content-Type: message/feedback-report",
        "",
        f"User-Agent: dkimd/{__version__}",
        "Version: 0.1",
        f"Original-Envelope-Id: {jobid}",
        f"Original-Mail-From: {envelope_sender}",
        f"Reporting-MTA: {hostname}",
        f"Source-IP: {client_ip}",
        message_id_line,
        f"Arrival-Date: {date}",
        f"Reported-Domain: {report.domain}",
        "Delivery-Result: other",
        "Feedback-Type: auth-failure",
        f"Auth-Failure: {report.auth_failure}",
        f"DKIM-Failure: {report.dkim_failure}",
        f"DKIM-Domain: {report.domain}",
        f"DKIM-Selector: {report.selector}",
        f"DKIM-Identity: {report.identity}",
        "DKIM-Canonicalized-Header: " + wrapped_base64(canonical_header, 27),
        "DKIM-Canonicalized-Body: " + wrapped_base64(canonical_body, 25),
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
        *(_field(h) for h in headers),
        "",
        f"--{boundary}--",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """How the report command ended: its exit status, or why it did not run."""

    status: int | None
    error: str = ""


class SendReport(Request[ReportOutcome]):
    """Run `<command> -t -f<address>` through /bin/sh with the report on stdin."""

    __slots__ = ("command", "text", "timeout")

    def __init__(self, command: str, address: str, text: bytes, timeout: float = COMMAND_TIMEOUT):
        # As OpenDKIM's popen(): MTACommand may carry arguments; the address is quoted.
        self.command = f"{command} -t {shlex.quote('-f' + address)}"
        self.text = text
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SendReport({self.command!r})"

    async def perform(self) -> ReportOutcome:
        proc = await asyncio.create_subprocess_shell(
            self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await proc.communicate(self.text)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        return ReportOutcome(proc.returncode)

    def failed(self, error: BaseException) -> ReportOutcome:
        return ReportOutcome(None, str(error) or type(error).__name__)
