"""AuthservIDWithJobID: "/<job id>" goes only into the A-R dkimd writes for a verified
message; incoming A-R fields are matched against the authserv-id without it, and the
malformed-message A-R carries none (OpenDKIM 2.11, observed by the differential matrix)."""

from __future__ import annotations

from dkimd import milter
from support.negotiated import Mta

CONFIG = "Mode v\nAuthservIDWithJobID yes\n"
JOB = {"i": "QID7"}
FORGED = (b"Authentication-Results", b"unknown.example; dkim=pass header.d=example.com")


def test_incoming_result_with_our_id_is_removed_whatever_the_job_id() -> None:
    mta = Mta(CONFIG, mail_macros=JOB)
    mta.run([FORGED, (b"From", b"user@example.com"), (b"Subject", b"hi")])
    assert milter.ChangeHeader(1, b"Authentication-Results", b"") in mta.at("eom")


def test_malformed_message_result_has_no_job_id() -> None:
    mta = Mta(CONFIG, mail_macros=JOB)
    mta.run([(b"Subject", b"no From at all")])
    inserted = [a for a in mta.at("eom") if isinstance(a, milter.InsertHeader)]
    assert [a.value for a in inserted] == [
        b" unknown.example; dkim=permerror (bad message/signature format)"
    ]
