"""Actions: what the filter tells the MTA (SMFIR_*).

Two kinds (libmilter mfapi.h; Postfix milter8.c ``milter8_event``):

* ``FinalAction``: ends the MTA's wait for one event. ``Continue``, ``Accept``,
  ``Reject``, ``TempFail``, ``Discard``, ``ReplyCode``, ``Skip``.
* ``Modification``: only at end of message, before its final action, and only when the
  matching SMFIF_* action flag was negotiated. ``AddHeader``, ``InsertHeader``,
  ``ChangeHeader`` (empty value deletes), ``Quarantine``, ``AddRecipient``,
  ``AddRecipientWithArgs``, ``DeleteRecipient``, ``ChangeSender``, ``ReplaceBody``.

``Progress`` is neither: it may be sent any number of times while the MTA waits for a
reply, and only resets the MTA's timer.

Header values use the project convention: everything after the colon, leading space
included (``AddHeader(b"X-Test", b" yes")``). ``Connection`` adapts it to what was
negotiated (SMFIP_HDR_LEADSPC).

Actions are frozen, slotted dataclasses; bad values raise ``LocalProtocolError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from .constants import Action as ActionFlag
from .constants import Reply
from .errors import LocalProtocolError

__all__ = [
    "Accept",
    "Action",
    "AddHeader",
    "AddRecipient",
    "AddRecipientWithArgs",
    "ChangeHeader",
    "ChangeSender",
    "Continue",
    "DeleteRecipient",
    "Discard",
    "FinalAction",
    "InsertHeader",
    "Modification",
    "Progress",
    "Quarantine",
    "Reject",
    "ReplaceBody",
    "ReplyCode",
    "Skip",
    "TempFail",
]


def _check_header_name(name: bytes) -> None:
    # The name goes out NUL-terminated and Postfix writes "name:" into the queue file,
    # so NUL, colon, and line breaks would corrupt the message (RFC 5322 section 2.2:
    # printable US-ASCII except colon).
    if not name or any(c in name for c in b"\0:\r\n \t"):
        raise LocalProtocolError(f"bad header name {name!r}")


def _check_text(what: str, value: str | bytes) -> None:
    # Every string on the wire is NUL-terminated (milter8.c MILTER8_DATA_STRING).
    if (b"\0" in value) if isinstance(value, bytes) else ("\0" in value):
        raise LocalProtocolError(f"NUL byte in {what}")


@dataclass(frozen=True, slots=True)
class Action:
    """Base class of everything ``Connection.send`` accepts."""

    reply: ClassVar[int] = 0


@dataclass(frozen=True, slots=True)
class FinalAction(Action):
    """An action that answers one event."""


@dataclass(frozen=True, slots=True)
class Modification(Action):
    """A message modification, only valid at end of message before the final action."""

    #: The SMFIF_* flag that must have been negotiated.
    requires: ClassVar[ActionFlag] = ActionFlag.NONE


@dataclass(frozen=True, slots=True)
class Continue(FinalAction):
    """SMFIR_CONTINUE: carry on (at end of message: accept the message as modified)."""

    reply: ClassVar[int] = Reply.CONTINUE


@dataclass(frozen=True, slots=True)
class Accept(FinalAction):
    """SMFIR_ACCEPT: accept; no more events for this message (or, at connect, session)."""

    reply: ClassVar[int] = Reply.ACCEPT


@dataclass(frozen=True, slots=True)
class Reject(FinalAction):
    """SMFIR_REJECT: 5xx for this recipient, message, or (at connect/helo) session."""

    reply: ClassVar[int] = Reply.REJECT


@dataclass(frozen=True, slots=True)
class TempFail(FinalAction):
    """SMFIR_TEMPFAIL: 4xx for this recipient, message, or session."""

    reply: ClassVar[int] = Reply.TEMPFAIL


@dataclass(frozen=True, slots=True)
class Discard(FinalAction):
    """SMFIR_DISCARD: accept and silently drop the message (not valid at connect/helo)."""

    reply: ClassVar[int] = Reply.DISCARD


@dataclass(frozen=True, slots=True)
class Skip(FinalAction):
    """SMFIR_SKIP: send no more events of this type (needs SMFIP_SKIP; v6)."""

    reply: ClassVar[int] = Reply.SKIP


# Postfix milter8.c checks the reply: first digit 4 or 5, two more digits, then space
# or hyphen; an enhanced code, if present, must start with the same class digit.
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")


@dataclass(frozen=True, slots=True)
class ReplyCode(FinalAction):
    """SMFIR_REPLYCODE: an explicit SMTP reply, e.g. ``ReplyCode(550, "5.7.1", "no")``.

    On the wire: ``"550 5.7.1 no\\0"``. Sendmail uses the text as a format string, so
    ``%`` is sent doubled (Postfix undoes that: milter8.c).
    """

    reply: ClassVar[int] = Reply.REPLYCODE
    code: int
    enhanced: str = ""
    text: str = ""

    def __post_init__(self) -> None:
        if not (400 <= self.code <= 599):
            raise LocalProtocolError(f"reply code {self.code} is not 4xx or 5xx")
        if self.enhanced and (
            not _ENHANCED.match(self.enhanced) or self.enhanced[0] != str(self.code)[0]
        ):
            raise LocalProtocolError(f"bad enhanced status code {self.enhanced!r}")
        if any(c in self.text for c in "\0\r\n"):
            raise LocalProtocolError("reply text must be one line without NUL")

    def line(self) -> str:
        """The reply line as sent, ``%`` doubled."""
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        if self.text:
            parts.append(self.text.replace("%", "%%"))
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Progress(Action):
    """SMFIR_PROGRESS: still working; the MTA resets its timeout and keeps waiting."""

    reply: ClassVar[int] = Reply.PROGRESS


@dataclass(frozen=True, slots=True)
class AddHeader(Modification):
    """SMFIR_ADDHEADER: append a header field at the end of the header."""

    reply: ClassVar[int] = Reply.ADDHEADER
    requires: ClassVar[ActionFlag] = ActionFlag.ADDHDRS
    name: bytes
    value: bytes

    def __post_init__(self) -> None:
        _check_header_name(self.name)
        _check_text("header value", self.value)


@dataclass(frozen=True, slots=True)
class InsertHeader(Modification):
    """SMFIR_INSHEADER: insert a header field before the field at ``index``.

    ``index`` 0 is the very top (where a DKIM-Signature goes). Postfix counts its own
    Received: header, which the milter never saw, so 0 is the only index that means the
    same thing everywhere.
    """

    reply: ClassVar[int] = Reply.INSHEADER
    requires: ClassVar[ActionFlag] = ActionFlag.ADDHDRS
    index: int
    name: bytes
    value: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 0x7FFFFFFF:
            raise LocalProtocolError(f"bad header index {self.index}")
        _check_header_name(self.name)
        _check_text("header value", self.value)


@dataclass(frozen=True, slots=True)
class ChangeHeader(Modification):
    """SMFIR_CHGHEADER: replace the ``index``-th (1-based) field called ``name``.

    An empty ``value`` deletes the field (milter8.c: ``del_header`` when the value is
    empty). Postfix treats index 0 as 1 for Sendmail compatibility.
    """

    reply: ClassVar[int] = Reply.CHGHEADER
    requires: ClassVar[ActionFlag] = ActionFlag.CHGHDRS
    index: int
    name: bytes
    value: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 0x7FFFFFFF:
            raise LocalProtocolError(f"bad header index {self.index}")
        _check_header_name(self.name)
        _check_text("header value", self.value)


@dataclass(frozen=True, slots=True)
class Quarantine(Modification):
    """SMFIR_QUARANTINE: put the message on hold with a reason."""

    reply: ClassVar[int] = Reply.QUARANTINE
    requires: ClassVar[ActionFlag] = ActionFlag.QUARANTINE
    reason: str

    def __post_init__(self) -> None:
        _check_text("quarantine reason", self.reason)


@dataclass(frozen=True, slots=True)
class AddRecipient(Modification):
    """SMFIR_ADDRCPT: add an envelope recipient."""

    reply: ClassVar[int] = Reply.ADDRCPT
    requires: ClassVar[ActionFlag] = ActionFlag.ADDRCPT
    address: str

    def __post_init__(self) -> None:
        _check_text("recipient", self.address)


@dataclass(frozen=True, slots=True)
class AddRecipientWithArgs(Modification):
    """SMFIR_ADDRCPT_PAR: add an envelope recipient with ESMTP arguments (v6)."""

    reply: ClassVar[int] = Reply.ADDRCPT_PAR
    requires: ClassVar[ActionFlag] = ActionFlag.ADDRCPT_PAR
    address: str
    args: str = ""

    def __post_init__(self) -> None:
        _check_text("recipient", self.address)
        _check_text("ESMTP arguments", self.args)


@dataclass(frozen=True, slots=True)
class DeleteRecipient(Modification):
    """SMFIR_DELRCPT: remove an envelope recipient."""

    reply: ClassVar[int] = Reply.DELRCPT
    requires: ClassVar[ActionFlag] = ActionFlag.DELRCPT
    address: str

    def __post_init__(self) -> None:
        _check_text("recipient", self.address)


@dataclass(frozen=True, slots=True)
class ChangeSender(Modification):
    """SMFIR_CHGFROM: replace the envelope sender, optionally with ESMTP args (v6)."""

    reply: ClassVar[int] = Reply.CHGFROM
    requires: ClassVar[ActionFlag] = ActionFlag.CHGFROM
    address: str
    args: str = ""

    def __post_init__(self) -> None:
        _check_text("sender", self.address)
        _check_text("ESMTP arguments", self.args)


@dataclass(frozen=True, slots=True)
class ReplaceBody(Modification):
    """SMFIR_REPLBODY: the new body (CRLF line ends); sent in <= 65535-byte packets.

    Several ``ReplaceBody`` actions in a row concatenate (libmilter smfi_replacebody).
    """

    reply: ClassVar[int] = Reply.REPLBODY
    requires: ClassVar[ActionFlag] = ActionFlag.CHGBODY
    data: bytes
