"""The milter reply for a DKIM outcome, as OpenDKIM 2.11 chooses it (opendkim.c dkimf_libstatus).

OpenDKIM turns a libopendkim status into a reply in two steps:

1. the On-* option the status belongs to gives the action (`dkimf_miltercode`);
2. only for reject and tempfail, a reply text is set (`smfi_setreply`), so libmilter sends
   SMFIR_REPLYCODE "550 5.7.0 <text>" or "451 4.7.x <text>" instead of a bare r/t.
   A revoked key sets no text: its reject goes out bare.

Quarantine: OpenDKIM asks the MTA for SMFIF_QUARANTINE only with CaptureUnknownErrors,
so in Debian's 2.11 an On-* quarantine request fails silently and the message is
accepted. dkimd does not negotiate quarantine either and answers the same plain ACCEPT.

The texts never carry anything from the message or a key path: they are fixed strings.
Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from dkimd import milter
from dkimd.config import Action, Condition

__all__ = ["DkimStatus", "final_reply", "miltercode"]


class DkimStatus(enum.Enum):
    """The libopendkim DKIM_STAT_* values that reach dkimf_libstatus."""

    BADSIG = "badsig"
    CANTVRFY = "cantvrfy"
    INTERNAL = "internal"
    KEYFAIL = "keyfail"
    NOKEY = "nokey"
    NORESOURCE = "noresource"
    NOSIG = "nosig"
    REVOKED = "revoked"
    SIGGEN = "siggen"
    SYNTAX = "syntax"

    @property
    def condition(self) -> Condition:
        return _CONDITIONS[self]

    @property
    def text(self) -> str | None:
        """The SMTP reply text OpenDKIM sets, or None when it sets none."""
        return _TEXTS[self]

    @property
    def log_text(self) -> str:
        """The words of OpenDKIM's log line for this status (without its details)."""
        return _LOG_TEXTS[self]


_CONDITIONS: Final[Mapping[DkimStatus, Condition]] = MappingProxyType(
    {
        DkimStatus.BADSIG: Condition.BAD_SIGNATURE,
        DkimStatus.CANTVRFY: Condition.BAD_SIGNATURE,
        DkimStatus.INTERNAL: Condition.INTERNAL_ERROR,
        DkimStatus.KEYFAIL: Condition.DNS_ERROR,
        DkimStatus.NOKEY: Condition.KEY_NOT_FOUND,
        DkimStatus.NORESOURCE: Condition.INTERNAL_ERROR,
        DkimStatus.NOSIG: Condition.NO_SIGNATURE,
        DkimStatus.REVOKED: Condition.BAD_SIGNATURE,
        DkimStatus.SIGGEN: Condition.SIGNATURE_ERROR,
        DkimStatus.SYNTAX: Condition.BAD_SIGNATURE,
    }
)

_TEXTS: Final[Mapping[DkimStatus, str | None]] = MappingProxyType(
    {
        DkimStatus.BADSIG: "bad DKIM signature data",
        DkimStatus.CANTVRFY: "DKIM signature processing failed",
        DkimStatus.INTERNAL: "internal DKIM error",
        DkimStatus.KEYFAIL: "DKIM key retrieval failed",
        DkimStatus.NOKEY: "DKIM key retrieval failed",
        DkimStatus.NORESOURCE: "resource unavailable",
        DkimStatus.NOSIG: "no DKIM signature data",
        DkimStatus.REVOKED: None,
        DkimStatus.SIGGEN: "DKIM signing error",
        DkimStatus.SYNTAX: "DKIM signature syntax error",
    }
)

_LOG_TEXTS: Final[Mapping[DkimStatus, str]] = MappingProxyType(
    {
        DkimStatus.BADSIG: "bad signature data",
        DkimStatus.CANTVRFY: "signature processing failed",
        DkimStatus.INTERNAL: "internal error from libopendkim",
        DkimStatus.KEYFAIL: "key retrieval failed",
        DkimStatus.NOKEY: "key retrieval failed",
        DkimStatus.NORESOURCE: "resource unavailable",
        DkimStatus.NOSIG: "no signature data",
        DkimStatus.REVOKED: "key revoked",
        DkimStatus.SIGGEN: "signature generation error",
        DkimStatus.SYNTAX: "syntax error",
    }
)

# Key retrieval problems get RFC 3463's "4.7.5 cryptographic failure" when tempfailed.
_KEY_STATUSES: Final = frozenset({DkimStatus.KEYFAIL, DkimStatus.NOKEY})


def miltercode(action: Action) -> milter.FinalAction:
    """The bare reply for an action (dkimf_miltercode): no text, quarantine accepts."""
    if action is Action.REJECT:
        return milter.Reject()
    if action is Action.TEMPFAIL:
        return milter.TempFail()
    if action is Action.DISCARD:
        return milter.Discard()
    return milter.Accept()


def final_reply(action: Action, status: DkimStatus) -> milter.FinalAction:
    """The reply for `status` under `action` (dkimf_libstatus): text only on reject/tempfail."""
    text = status.text
    if text is None or action not in (Action.REJECT, Action.TEMPFAIL):
        return miltercode(action)
    if action is Action.REJECT:
        return milter.ReplyCode(550, "5.7.0", text)
    return milter.ReplyCode(451, "4.7.5" if status in _KEY_STATUSES else "4.7.0", text)
