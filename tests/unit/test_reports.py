"""RFC 6651 failure reports (dkimd.reports), and the session sending one as OpenDKIM does.

The end-to-end case is OpenDKIM's own t-verify-report: the same message, records and
configuration, the report command a script that records its arguments and stdin; the
result must equal OpenDKIM's expected file except the lines its runner ignores too.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from dkimd import milter
from dkimd.dkim import VerifyError
from dkimd.reports import (
    FailureReport,
    ReportOutcome,
    SendReport,
    report_address,
    report_for,
    report_text,
    wrapped_base64,
)
from support.negotiated import Mta

DATA = Path(__file__).resolve().parents[1] / "data" / "reports"
TAGS = {"d": "example.com", "s": "test", "r": "y"}
BAD = VerifyError.SIGNATURE_MISMATCH


def _records() -> dict[str, str]:
    out = {}
    for line in (DATA / "records.txt").read_text().splitlines():
        name, _, value = line.partition("\t") if "\t" in line else line.partition(" ")
        out[name.strip()] = value.strip()
    return out


def test_report_is_due_only_for_a_bad_signature_asking_for_it() -> None:
    due = report_for(BAD, TAGS, b"ra=dkim-feedbacks")
    assert due == FailureReport(
        "dkim-feedbacks@example.com",
        "example.com",
        "test",
        "@example.com",
        "signature (signature verification failed)",
        "signature",
    )
    bodyhash = report_for(VerifyError.BODY_HASH_MISMATCH, TAGS, b"ra=x@elsewhere")
    assert bodyhash is not None and bodyhash.recipient == "x@example.com"  # @... dropped
    assert (bodyhash.auth_failure, bodyhash.dkim_failure) == ("bodyhash", "bodyhash")
    assert report_for(BAD, {**TAGS, "r": "n"}, b"ra=x") is None  # no r=y
    assert report_for(VerifyError.KEY_REVOKED, TAGS, b"ra=x") is None  # not a BAD status
    assert report_for(VerifyError.KEY_NOT_FOUND, TAGS, b"ra=x") is None
    assert report_for(BAD, TAGS, None) is None  # no _report record
    assert report_for(BAD, TAGS, b"rp=100") is None  # no ra=
    assert report_for(BAD, TAGS, b"ra=x; rr=s:x") is None  # not asked for bad signatures
    assert report_for(BAD, TAGS, b"ra=x; rr=s:v") is not None
    assert report_for(BAD, TAGS, b"ra=x; rr=all") is not None
    assert report_for(BAD, TAGS, b"ra=x; rp=101") is None
    assert report_for(BAD, TAGS, b"ra=x;; broken") is None


def test_rp_is_a_percentage() -> None:
    rng = random.Random(1)
    sent = sum(report_for(BAD, TAGS, b"ra=x; rp=10", rng=rng) is not None for _ in range(2000))
    assert 100 < sent < 350  # about 11% (OpenDKIM sends unless random() % 100 > rp)


def test_report_address() -> None:
    assert report_address('"Mail Admin" <postmaster@example.org>') == (
        '"Mail Admin" <postmaster@example.org>',
        "postmaster@example.org",
        False,
    )
    text, address, unparsed = report_address("not an address")
    assert text == address and "@" in address and unparsed
    assert report_address(None)[2] is False


def test_base64_wrapping_matches_opendkim() -> None:
    expected = (DATA / "t-verify-report.txt").read_text()
    block = re.search(r"DKIM-Canonicalized-Header: (.*?)\nDKIM-Canon", expected, re.S)
    assert block is not None
    data = __import__("base64").b64decode("".join(block.group(1).split()))
    assert "DKIM-Canonicalized-Header: " + wrapped_base64(data, 27) == (
        "DKIM-Canonicalized-Header: " + block.group(1)
    )


# t-verify-report's message: signed for From user@example.com, which now reads ex4mple.com.
_T_VERIFY_REPORT_SIGNATURE = (
    b" v=1; a=rsa-sha256; c=simple/simple; d=example.com; s=test;\n"
    b"\tt=1329113412; r=y; bh=3VWGQGY+cSNYd1MGM+X6hRXU0stl8JCaQtl4mbX/j2I=;\n"
    b"\th=From:Date:Subject;\n"
    b"\tb=J4DYccKlZx8+EFXvnUEZyiQn2JNpQ0JSvTT1PeyGfrYPAux//SHXb/K/Z6jYzqH5z\n"
    b"\t ZkiQ5UutfDjkkW2WsRCilkvodnp0PGrLK5fDFHBK7vGTLzXyhI/zubkeYVZufd+9U7\n"
    b"\t kuVE9jz2Vb4YDL8DC9EZJ5SyAY8uNnsrky8gQ948="
)
_T_VERIFY_REPORT_HEADERS = [
    (b"From", b" user@ex4mple.com"),
    (b"Date", b" Tue, 22 Dec 2009 13:04:12 -0800"),
    (b"Subject", b" Signing test"),
    (b"Message-ID", b" <184510.abcdefg@example.com>"),
]


def _comparable(text: str) -> list[str]:
    # What OpenDKIM's runner compares: everything but these lines.
    return [
        line
        for line in text.splitlines()
        if not line.startswith(("User-Agent:", "Date:", "Arrival-Date:"))
    ]


def test_the_session_sends_opendkim_s_report(tmp_path: Path) -> None:
    out = tmp_path / "report.out"
    mta_script = tmp_path / "testmta"
    mta_script.write_text(f'#!/bin/sh\nfor a in "$@"; do echo "$a" >> {out}; done\ncat >> {out}\n')
    mta_script.chmod(0o755)
    config = (
        "Mode v\nSendReports yes\n"
        'ReportAddress "Mail Admin" <postmaster@example.org>\n'
        'ReportBccAddress postmaster@example.net, tom@example.net, "hary" <hary@example.net>\n'
        f"MTACommand {mta_script}\n"
    )
    mta = Mta(config, client="127.0.0.1", records=_records(), mail_macros={"i": "t-verify-report"})
    mta.run(
        [(b"DKIM-Signature", _T_VERIFY_REPORT_SIGNATURE), *_T_VERIFY_REPORT_HEADERS],
        b"This is a test!\r\n",
    )
    ar = [a.value for a in mta.at("eom") if isinstance(a, milter.InsertHeader)]
    assert ar and b"signature verification failed" in ar[0]
    expected = (DATA / "t-verify-report.txt").read_text()
    assert _comparable(out.read_text()) == _comparable(expected)


def test_a_failing_report_command_changes_nothing_for_the_message(tmp_path: Path) -> None:
    mta = Mta(
        "Mode v\nSendReports yes\nOn-BadSignature reject\nMTACommand exit 1; :\n",
        client="127.0.0.1",
        records=_records(),
    )
    signature = _T_VERIFY_REPORT_SIGNATURE
    mta.run([(b"DKIM-Signature", signature), *_T_VERIFY_REPORT_HEADERS], b"This is a test!\r\n")
    eom = mta.at("eom")
    assert [a.name for a in eom if isinstance(a, milter.InsertHeader)] == [
        b"Authentication-Results"
    ]
    assert isinstance(eom[-1], milter.ReplyCode) and eom[-1].code == 550


def test_no_report_without_send_reports(tmp_path: Path) -> None:
    out = tmp_path / "report.out"
    mta = Mta(
        f"Mode v\nMTACommand touch {out}; true\n",
        client="127.0.0.1",
        records=_records(),
    )
    mta.run([(b"From", b" user@example.com")])
    assert not out.exists()


def test_send_report_runs_the_command_and_survives_its_failure(tmp_path: Path) -> None:
    import asyncio

    out = tmp_path / "args"
    ok = SendReport(f"sh -c 'echo \"$@\" > {out}; cat > /dev/null' x", "a@b.example", b"text")
    assert asyncio.run(ok.perform()) == ReportOutcome(0)
    assert out.read_text().split() == ["-t", "-fa@b.example"]
    failing = SendReport("exit 3; :", "a@b.example", b"text")
    assert asyncio.run(failing.perform()).status == 3
    assert SendReport("true", "x@y", b"").failed(TimeoutError()).status is None


@pytest.mark.parametrize("leading_space", [True, False])
def test_report_without_message_id(leading_space: bool) -> None:
    report = report_for(BAD, TAGS, b"ra=x")
    assert report is not None
    text = report_text(
        report,
        from_text="a@b",
        bcc=None,
        jobid="J",
        hostname="H",
        envelope_sender="s@x",
        client_ip="",
        headers=[],
        canonical_header=b"",
        canonical_body=b"",
        leading_space=leading_space,
        now=0,
    ).decode()
    assert ("Message-ID:(none)" if leading_space else "Message-ID: (none)") in text
    assert "\nBcc:" not in text and "Source-IP: \n" in text


def test_the_session_sends_the_report_over_smtp_with_smtpuri() -> None:
    from support.smtpsink import SmtpSink

    with SmtpSink() as sink:
        config = (
            "Mode v\nSendReports yes\nReportAddress postmaster@example.org\n"
            "ReportBccAddress postmaster@example.net\n"
            f"SMTPURI smtp://127.0.0.1:{sink.port}\nMTACommand /nonexistent/sendmail\n"
        )
        mta = Mta(config, client="127.0.0.1", records=_records(), mail_macros={"i": "t-smtp"})
        mta.run(
            [(b"DKIM-Signature", _T_VERIFY_REPORT_SIGNATURE), *_T_VERIFY_REPORT_HEADERS],
            b"This is a test!\r\n",
        )
    [(sender, rcpts, data)] = sink.messages
    assert sender == "postmaster@example.org"
    assert rcpts[1:] == ["postmaster@example.net"] and "@" in rcpts[0]
    assert b"Subject: DKIM failure report for t-smtp\r\n" in data and b"Bcc:" not in data
    assert b"Feedback-Type: auth-failure\r\n" in data
