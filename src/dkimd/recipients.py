"""Envelope recipients: when the filter needs them, how they are kept, DontSignMailTo.

OpenDKIM always receives RCPT, but stores recipients (opendkim.c mlfi_envrcpt) only when
an option reads them: DontSignMailTo, BodyLengthDB, RedirectFailuresTo, ResignMailTo (and
the Lua scripts, which dkimd does not run). dkimd goes one step further and asks the MTA
not to send RCPT at all (SMFIP_NORCPT) when none of those is set: the MTA's replies are
the same, and each RCPT would otherwise be a round trip for nothing.

Each recipient is kept as OpenDKIM keeps it: angle brackets stripped
(dkimf_stripbrackets), nothing else changed.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from dkimd.config import Config

__all__ = ["dont_sign_hit", "needs_recipients", "strip_brackets"]

# Options whose meaning depends on the envelope recipients (opendkim.c mlfi_envrcpt).
RECIPIENT_OPTIONS = (
    "DontSignMailTo",
    "BodyLengthDB",
    "RedirectFailuresTo",
    "ResignMailTo",
    "ArcSealMailTo",  # dkimd.arc_filter
    # the policy scripts may read them (odkim.get_rcpt, rcpt_count, get_rcptarray)
    "SetupPolicyScript",
    "ScreenPolicyScript",
    "StatisticsPolicyScript",
    "FinalPolicyScript",
)


def needs_recipients(config: Config) -> bool:
    """Whether any option that reads envelope recipients is set."""
    raw = config.raw
    if config.dont_sign_mail_to is not None or config.body_length_db is not None:
        return True
    return raw is not None and any(raw.get(name) is not None for name in RECIPIENT_OPTIONS)


def strip_brackets(address: str) -> str:
    """The address without its enclosing angle brackets (dkimf_stripbrackets).

    Only a leading "<" and a trailing ">" go; an address with neither is kept as sent.
    """
    if address.startswith("<"):
        address = address[1:]
    if address.endswith(">"):
        address = address[:-1]
    return address


def dont_sign_hit(config: Config, recipients: Iterable[str]) -> str | None:
    """The first recipient DontSignMailTo lists, or None.

    OpenDKIM looks up each whole address, case-insensitively, with no domain or wildcard
    fallback (mlfi_eoh).
    """
    table = config.dont_sign_mail_to
    if table is None:
        return None
    for address in recipients:
        if address in table:
            return address
    return None
