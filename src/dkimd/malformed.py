"""Messages OpenDKIM 2.11 stops at end of headers, and what it sends for them.

Two outcomes, as in opendkim.c `mlfi_eoh` (observed with the Debian 2.11 binary):

* **Bad format** (`BadFormat`, OpenDKIM's DKIMF_STATUS_BADFORMAT "header-only" mode): no
  usable author address in the sender fields, or, with StrictHeaders, header field counts
  that break RFC 5322 section 3.6. Nothing is signed or verified: body chunks are answered
  with SKIP, and at end of message one Authentication-Results field
  `<authserv-id>; dkim=permerror (bad message/signature format)` is added (none with
  IgnoreMalformedMail) and the message is accepted. No On-* action applies.
* **Broken signature field** (`BrokenSignature`): a DKIM-Signature whose tag-list
  libopendkim cannot read (or a field name with a byte outside printable ASCII). The
  On-BadSignature action is the reply at end of headers, with the text "DKIM signature
  syntax error"; the message is not processed further and gets no header field.

Pure: the session asks, and builds the milter replies from what is decided here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dkimd.config import Action, Condition, Config
from dkimd.dkim import HeaderField, SignatureField, name_key
from dkimd.dkim.syntax import header_syntax_error, strict_header_error
from dkimd.policy import parse_address
from dkimd.sender_macro import MacroAuthor

__all__ = [
    "BadFormat",
    "BrokenSignature",
    "author_address",
    "check_processing",
    "check_sender",
    "eoh_reply_needed",
]

#: dkimf_libstatus's reply text for DKIM_STAT_SYNTAX.
#: dkimf_statusstrings[DKIMF_STATUS_BADFORMAT].
_FROM = name_key("from")


@dataclass(frozen=True, slots=True)
class BadFormat:
    """The header-only path: permerror Authentication-Results, body skipped."""

    reason: str  # for the log
    #: Whether the message had got as far as verification (OpenDKIM then still removes
    #: Authentication-Results fields that claim our authserv-id).
    verifying: bool = False


@dataclass(frozen=True, slots=True)
class BrokenSignature:
    """A field libopendkim refuses while reading the header: On-BadSignature at EOH."""

    reason: str  # for the log


def _author_field(
    headers: Sequence[HeaderField], sender_headers: Sequence[str]
) -> HeaderField | None:
    """The field OpenDKIM takes the sender from: the first SenderHeaders name that has a
    field wins (its first field); when the list does not name From and none is present,
    From is tried too (mlfi_eoh)."""
    wanted = [name_key(n) for n in sender_headers]
    if _FROM not in wanted:
        wanted.append(_FROM)
    for key in wanted:
        for h in headers:
            if h.key == key:
                return h
    return None


def author_address(headers: Sequence[HeaderField], sender_headers: Sequence[str]) -> str | None:
    """The address OpenDKIM takes the sender from, or None when there is no usable one (no
    field, or no local part and domain in it: dkim_mail_parse)."""
    field = _author_field(headers, sender_headers)
    return None if field is None else parse_address(field.value)


def check_sender(
    headers: Sequence[HeaderField],
    config: Config,
    sender: str | None = None,
    author: MacroAuthor | None = None,
) -> BadFormat | None:
    """The first test of end of headers: its outcome stands whatever else is decided.

    `sender`: the address `policy.sender_address` found in the SenderHeaders fields, when
    the caller has it. Both look at the first SenderHeaders field present first, so with
    such an address there is an author; only without one is the search taken further.
    `author`: the SenderMacro value the MTA sent, which replaces the header fields.
    """
    if author is not None:
        reason = author.bad_format_reason(config)
        if reason is not None:
            return BadFormat(reason)
        if author.address is not None:
            return None
        # A filter that does not sign leaves an unparseable macro value aside, and the
        # header fields decide (observed with 2.11: no From is still a bad format there).
    if sender is None and author_address(headers, config.sender_headers) is None:
        if (
            config.weak_syntax_checks
            and not config.signs
            and _author_field(headers, config.sender_headers) is not None
        ):
            # WeakSyntaxChecks (libopendkim's BADSIGHANDLES): a verifier goes on without
            # an author domain. Only a verify-only filter gets that far: mlfi_eoh itself
            # stops a From it cannot parse when Mode has s.
            return None
        return BadFormat("can't determine message sender")
    return None


def check_processing(
    headers: Sequence[HeaderField],
    config: Config,
    *,
    verifying: bool,
    signatures: Sequence[SignatureField] | None = None,
) -> BadFormat | BrokenSignature | None:
    """The tests libopendkim makes once the message is signed or verified, in its order:
    every field as it is read, then the header block as a whole (StrictHeaders).

    `signatures`: the DKIM-Signature fields as `dkimd.dkim.signature.signature_fields`
    reads them, when the caller has them (to hand the same reading to the verifier)."""
    problem = header_syntax_error(headers, signatures)
    if problem is not None:
        return BrokenSignature(problem)
    if config.strict_headers:
        author_ok = any(h.key == _FROM for h in headers) and (
            author_address(headers, ("from",)) is not None
        )
        problem = strict_header_error(headers, author_ok)
        if problem is not None:
            return BadFormat(problem, verifying=verifying)
    return None


def eoh_reply_needed(config: Config) -> bool:
    """Whether a verifying configuration must answer at end of headers.

    A broken signature field gets the On-BadSignature action there. When that action is
    accept, the session can give the same outcome at end of message instead (skipping the
    body), so the MTA need not wait for a reply to every message's headers.
    """
    return config.action_for(Condition.BAD_SIGNATURE) is not Action.ACCEPT
