"""CaptureUnknownErrors and quarantine requests, as OpenDKIM 2.11 makes them.

* **CaptureUnknownErrors**: OpenDKIM asks the MTA for the right to quarantine
  (SMFIF_QUARANTINE, mlfi_negotiate) and, when verification ends in an internal error
  (libopendkim's INTERNAL or NORESOURCE) at end of message, requests quarantine with the
  reason "capture requested" and accepts the message, whatever On-InternalError says.
  dkimd does the same for its own internal errors at end of message.
* **The On-\\* action "quarantine"** (dkimf_miltercode) calls smfi_quarantine with the
  program's name and accepts. The MTA grants that only where SMFIF_QUARANTINE was
  negotiated, i.e. with CaptureUnknownErrors, and only at end of message; anywhere else
  the request fails and the message is simply accepted (observed with the Debian binary:
  no SMFIR_QUARANTINE without CaptureUnknownErrors, `SMFIR_QUARANTINE "opendkim"` then
  ACCEPT with it). dkimd names itself, "dkimd".
* **Quarantine** (`-q`, "quarantine messages that fail to verify"): accepted and without
  effect in OpenDKIM 2.11, even with CaptureUnknownErrors (observed: a bad signature gets
  its Authentication-Results field and ACCEPT, no quarantine). Doing what the man page
  says would change replies that 2.11 gives, so dkimd reads the option and, like 2.11,
  does nothing with it; On-BadSignature quarantine (with CaptureUnknownErrors) is the way
  to hold failing mail.

Pure: no I/O.
"""

from __future__ import annotations

from dkimd import milter
from dkimd.config import Action, Config

__all__ = [
    "CAPTURE_REASON",
    "PROGRAM_NAME",
    "captured_internal_error",
    "quarantine_request",
    "required_actions",
]

CAPTURE_REASON = "capture requested"
PROGRAM_NAME = "dkimd"


def required_actions(config: Config) -> milter.ActionFlag:
    """What the MTA must allow (mlfi_negotiate): quarantine, with CaptureUnknownErrors."""
    if config.capture_unknown_errors:
        return milter.ActionFlag.QUARANTINE
    return milter.ActionFlag.NONE


def captured_internal_error(
    config: Config, allowed: milter.ActionFlag
) -> list[milter.Action] | None:
    """The end-of-message reply to an internal error under CaptureUnknownErrors (quarantine,
    then accept), or None when the option is off and On-InternalError decides."""
    if not config.capture_unknown_errors:
        return None
    if not allowed & milter.ActionFlag.QUARANTINE:
        return [milter.Accept()]  # negotiated before a reload turned the option on
    return [milter.Quarantine(CAPTURE_REASON), milter.Accept()]


def quarantine_request(action: Action, allowed: milter.ActionFlag) -> list[milter.Action]:
    """The quarantine request an On-* "quarantine" action adds at end of message, when the
    MTA granted quarantining on this connection (else none: the message is accepted)."""
    if action is Action.QUARANTINE and allowed & milter.ActionFlag.QUARANTINE:
        return [milter.Quarantine(PROGRAM_NAME)]
    return []
