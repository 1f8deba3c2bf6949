"""SMTPURI: failure reports over SMTP (dkimd.report_smtp, dkimd.smtp_uri)."""

from __future__ import annotations

import asyncio

import pytest

from dkimd.config import analyze_config_text, parse_config_text
from dkimd.report_smtp import SmtpReport, bcc_recipients, without_bcc
from dkimd.smtp_uri import SmtpTarget, parse_smtp_uri
from support.smtpsink import SmtpSink

REPORT = (
    b"From: dkimd <postmaster@example.org>\n"
    b"To: reports@example.com\n"
    b"Bcc: a@example.net,\n"
    b"\tb@example.net\n"
    b"Subject: DKIM failure report for X\n"
    b"\n"
    b"body line\n"
    b".leading dot\n"
)


@pytest.mark.parametrize(
    ("uri", "target"),
    [
        ("smtp://localhost", SmtpTarget("localhost", 25)),
        ("smtp://mail.example:2525", SmtpTarget("mail.example", 2525)),
        ("SMTP://[::1]:25/", SmtpTarget("::1", 25)),
    ],
)
def test_parse(uri: str, target: SmtpTarget) -> None:
    assert parse_smtp_uri(uri) == target


@pytest.mark.parametrize(
    "uri", ["http://localhost", "smtp://", "smtp://h:99999", "smtp://u@h", "smtp://h/x", "h"]
)
def test_parse_refuses(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_smtp_uri(uri)


def test_the_option() -> None:
    assert parse_config_text("SMTPURI smtp://localhost\n").smtp_uri == "smtp://localhost"
    [error] = analyze_config_text("SMTPURI http://localhost\n").errors
    assert "SMTPURI:" in error.message and error.line == 1


def test_bcc_becomes_envelope_recipients() -> None:
    assert b"Bcc" not in without_bcc(REPORT) and b"b@example.net" not in without_bcc(REPORT)
    assert without_bcc(REPORT).endswith(b"\n\nbody line\n.leading dot\n")
    assert bcc_recipients("a@example.net, b@example.net") == ["a@example.net", "b@example.net"]
    assert bcc_recipients(None) == []


def test_sends_the_report() -> None:
    with SmtpSink() as sink:
        request = SmtpReport(
            SmtpTarget("127.0.0.1", sink.port),
            "postmaster@example.org",
            ["reports@example.com", "a@example.net"],
            REPORT,
        )
        outcome = asyncio.run(request.perform())
    assert outcome.status == 0, outcome.error
    [(sender, rcpts, data)] = sink.messages
    assert sender == "postmaster@example.org"
    assert rcpts == ["reports@example.com", "a@example.net"]
    assert data.startswith(b"From: dkimd <postmaster@example.org>\r\nTo: reports@example.com\r\n")
    assert b"Bcc" not in data and data.endswith(b"body line\r\n.leading dot\r\n")


def test_failures_are_outcomes() -> None:
    with SmtpSink(reject_rcpt=True) as sink:
        target = SmtpTarget("127.0.0.1", sink.port)
        refused = asyncio.run(SmtpReport(target, "a@b", ["c@d"], REPORT).perform())
    assert refused.status is None and "c@d" in refused.error
    down = asyncio.run(SmtpReport(target, "a@b", ["c@d"], REPORT, timeout=2).perform())
    assert down.status is None and "Connection refused" in down.error
