"""CaptureUnknownErrors, the On-* quarantine action and Quarantine (dkimd.capture), as
OpenDKIM 2.11 behaves (observed with the Debian binary, a bad signature):

* without CaptureUnknownErrors no quarantine is negotiated, and On-BadSignature quarantine
  is a plain ACCEPT after the Authentication-Results field;
* with it, SMFIF_QUARANTINE is negotiated, On-BadSignature quarantine sends
  SMFIR_QUARANTINE naming the filter, then ACCEPT; an internal error at end of message is
  quarantined with "capture requested" and accepted;
* Quarantine yes changes nothing, with or without CaptureUnknownErrors.
"""

from __future__ import annotations

import pytest

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.dkim import Verifier
from dkimd.negotiation import filter_options_for
from support.negotiated import Mta
from support.signed import Fields, signed_message

HEADERS = [
    (b"From", b" user@example.com"),
    (b"Date", b" Tue, 22 Dec 2009 13:04:12 -0800"),
    (b"Subject", b" Signing test"),
]

CHANGED = b"This is a changed test!\r\n"
Signed = tuple[Fields, dict[str, str]]


@pytest.fixture(scope="module")
def signed() -> Signed:
    return signed_message(HEADERS, b"This is a test!\r\n")


def eom(config: str, signed: Signed, body: bytes = CHANGED) -> list[milter.Action]:
    headers, records = signed
    mta = Mta(config, records=records)
    mta.run(headers, body)
    return [a for a in mta.at("eom") if not isinstance(a, milter.InsertHeader)]


def test_quarantine_is_negotiated_only_for_capture_unknown_errors() -> None:
    flag = milter.ActionFlag.QUARANTINE
    assert flag in filter_options_for(parse_config_text("CaptureUnknownErrors yes\n")).actions
    for text in ("", "Quarantine yes\n", "On-BadSignature quarantine\n"):
        assert flag not in filter_options_for(parse_config_text(text)).actions


def test_on_bad_signature_quarantine(signed: Signed) -> None:
    config = "Mode v\nOn-BadSignature quarantine\n"
    assert eom(config, signed) == [milter.Accept()]
    assert eom(config + "CaptureUnknownErrors yes\n", signed) == [
        milter.Quarantine("dkimd"),
        milter.Accept(),
    ]
    # A message that verifies is not held.
    assert eom(config + "CaptureUnknownErrors yes\n", signed, b"This is a test!\r\n") == [
        milter.Accept()
    ]


@pytest.mark.parametrize("capture", ["", "CaptureUnknownErrors yes\n"])
def test_quarantine_option_changes_nothing(signed: Signed, capture: str) -> None:
    base = "Mode v\n" + capture
    assert eom(base + "Quarantine yes\n", signed) == eom(base, signed) == [milter.Accept()]


def test_internal_error_is_captured(signed: Signed, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Verifier) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Verifier, "results", broken)
    assert eom("Mode v\n", signed) == [milter.ReplyCode(451, "4.7.0", "internal DKIM error")]
    assert eom("Mode v\nCaptureUnknownErrors yes\n", signed) == [
        milter.Quarantine("capture requested"),
        milter.Accept(),
    ]
