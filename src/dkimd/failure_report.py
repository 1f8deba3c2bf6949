"""Whether a verified message gets an RFC 6651 failure report, and the request that sends it.

The session hands over what it saw (the verifier, the copy of the body it kept, the
`_report._domainkey` records it fetched, the envelope); this module chooses the signature
to report on as OpenDKIM does (the first one it did not ignore, and only when none passed),
asks `dkimd.reports` whether the signing domain wants a report, and builds the request:
MTACommand by default, SMTPURI when that is set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dkimd import reports
from dkimd.config import Config
from dkimd.dkim import HeaderField, Verifier, VerifyError, canonicalize_body
from dkimd.dns.base import TxtResult
from dkimd.report_smtp import SmtpReport, bcc_recipients
from dkimd.smtp_uri import parse_smtp_uri

__all__ = ["ReportEnvelope", "failure_report_request"]


@dataclass(frozen=True, slots=True)
class ReportEnvelope:
    """What the report says of the message's way in."""

    jobid: str
    hostname: str
    envelope_sender: str
    client_ip: str
    #: The MTA sends header values with their leading space (SMFIP_HDR_LEADSPC).
    leading_space: bool


def failure_report_request(
    verifier: Verifier | None,
    body: bytes | bytearray | None,
    records: Mapping[str, TxtResult],
    headers: Sequence[HeaderField],
    config: Config,
    envelope: ReportEnvelope,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> reports.SendReport | SmtpReport | None:
    """The request that sends the message's failure report, or None when none is due."""
    if verifier is None or body is None:
        return None
    results = verifier.results()
    if any(r.passed for r in results):
        return None
    # The first signature OpenDKIM verified (one it ignored has nothing to report).
    index = next(
        (i for i, r in enumerate(results) if r.error is not VerifyError.SIGNATURE_IGNORED), 0
    )
    found = verifier.signature(index)
    if found is None:
        return None
    sig, header_data = found
    record = records.get(reports.report_record_name(sig.domain))
    txt = record.records[0] if record is not None and record.ok and record.records else None
    report = reports.report_for(results[index].error, sig.tags, txt)
    if report is None:
        return None
    from_text, address, unparsed = reports.report_address(config.report_address)
    if unparsed:
        log.warning("error parsing ReportAddress; using default")
    canonical_body = canonicalize_body(bytes(body), sig.body_canon)
    if sig.body_length is not None:
        canonical_body = canonical_body[: sig.body_length]
    text = reports.report_text(
        report,
        from_text=from_text,
        bcc=config.report_bcc_address,
        jobid=envelope.jobid,
        hostname=envelope.hostname,
        envelope_sender=envelope.envelope_sender,
        client_ip=envelope.client_ip,
        headers=headers,
        canonical_header=header_data,
        canonical_body=canonical_body,
        leading_space=envelope.leading_space,
    )
    log.info("sending failure report to %s", report.recipient)
    if config.smtp_uri is not None:  # SMTPURI instead of MTACommand
        recipients = [report.recipient, *bcc_recipients(config.report_bcc_address)]
        return SmtpReport(parse_smtp_uri(config.smtp_uri), address, recipients, text)
    return reports.SendReport(config.mta_command, address, text)
