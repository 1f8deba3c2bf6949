"""The reply OpenDKIM 2.11's dkimf_libstatus sends for each status and On-* action."""

from __future__ import annotations

import pytest

from dkimd import milter
from dkimd.config import Action, Condition
from dkimd.replies import DkimStatus, final_reply, miltercode

# (status, the On-* condition it obeys, the text OpenDKIM sets) from opendkim.c.
TABLE = [
    (DkimStatus.BADSIG, Condition.BAD_SIGNATURE, "bad DKIM signature data"),
    (DkimStatus.CANTVRFY, Condition.BAD_SIGNATURE, "DKIM signature processing failed"),
    (DkimStatus.SYNTAX, Condition.BAD_SIGNATURE, "DKIM signature syntax error"),
    (DkimStatus.REVOKED, Condition.BAD_SIGNATURE, None),
    (DkimStatus.NOSIG, Condition.NO_SIGNATURE, "no DKIM signature data"),
    (DkimStatus.NOKEY, Condition.KEY_NOT_FOUND, "DKIM key retrieval failed"),
    (DkimStatus.KEYFAIL, Condition.DNS_ERROR, "DKIM key retrieval failed"),
    (DkimStatus.INTERNAL, Condition.INTERNAL_ERROR, "internal DKIM error"),
    (DkimStatus.NORESOURCE, Condition.INTERNAL_ERROR, "resource unavailable"),
    (DkimStatus.SIGGEN, Condition.SIGNATURE_ERROR, "DKIM signing error"),
]


def test_table_covers_every_status() -> None:
    assert {row[0] for row in TABLE} == set(DkimStatus)


@pytest.mark.parametrize(("status", "condition", "text"), TABLE)
def test_reject_and_tempfail_carry_opendkims_text(
    status: DkimStatus, condition: Condition, text: str | None
) -> None:
    assert status.condition is condition
    reject = final_reply(Action.REJECT, status)
    tempfail = final_reply(Action.TEMPFAIL, status)
    if text is None:  # no smfi_setreply: libmilter sends the bare code
        assert (reject, tempfail) == (milter.Reject(), milter.TempFail())
        return
    assert reject == milter.ReplyCode(550, "5.7.0", text)
    key = status in (DkimStatus.NOKEY, DkimStatus.KEYFAIL)
    assert tempfail == milter.ReplyCode(451, "4.7.5" if key else "4.7.0", text)
    assert reject.line() == f"550 5.7.0 {text}"  # what goes in SMFIR_REPLYCODE


@pytest.mark.parametrize("status", list(DkimStatus))
def test_other_actions_carry_no_text(status: DkimStatus) -> None:
    assert final_reply(Action.ACCEPT, status) == milter.Accept()
    assert final_reply(Action.DISCARD, status) == milter.Discard()
    # OpenDKIM's smfi_quarantine fails unless CaptureUnknownErrors negotiated it: accept.
    assert final_reply(Action.QUARANTINE, status) == milter.Accept()


def test_miltercode_is_bare() -> None:
    assert miltercode(Action.REJECT) == milter.Reject()
    assert miltercode(Action.TEMPFAIL) == milter.TempFail()
