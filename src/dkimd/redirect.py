"""RedirectFailuresTo: mail whose signature failed goes to one address instead.

OpenDKIM (opendkim.c mlfi_eom; observed with the Debian 2.11 binary) acts when the
verification status is BAD (a signature that did not verify: bad b=, body hash mismatch;
not a missing or revoked key), whatever On-BadSignature then replies. For each stored
recipient, newest first (its list is built by prepending at RCPT), it deletes the
recipient and appends `Original-Recipient: rfc822;<recipient>` (no leading space, even
under SMFIP_HDR_LEADSPC); then it adds the configured address as the only recipient.
These changes come after the Authentication-Results field and before the final reply.

The filter needs the MTA to let it add and delete recipients (SMFIF_ADDRCPT,
SMFIF_DELRCPT) and to send RCPT (dkimd.recipients keeps them).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from dkimd import milter
from dkimd.config import Config

__all__ = ["HEADER_NAME", "redirect_actions", "required_actions"]

HEADER_NAME = b"Original-Recipient"


def redirect_actions(
    config: Config, recipients: Sequence[str], allowed: milter.ActionFlag
) -> list[milter.Action]:
    """The envelope and header changes that send a failed message to RedirectFailuresTo.

    `allowed`: the actions negotiated on this connection. One negotiated before a reload
    set the option cannot change recipients; its mail is left as it is (OpenDKIM's
    smfi_delrcpt would fail there the same way).
    """
    target = config.redirect_failures_to
    if target is None or (allowed & required_actions(config)) != required_actions(config):
        return []
    actions: list[milter.Action] = []
    for address in reversed(recipients):
        actions.append(milter.DeleteRecipient(address))
        value = b"rfc822;" + address.encode("utf-8", "surrogateescape")
        actions.append(milter.AddHeader(HEADER_NAME, value))
    actions.append(milter.AddRecipient(target))
    return actions


def required_actions(config: Config) -> milter.ActionFlag:
    """What the MTA must allow for RedirectFailuresTo (mlfi_negotiate)."""
    if config.redirect_failures_to is None:
        return milter.ActionFlag.NONE
    return milter.ActionFlag.ADDRCPT | milter.ActionFlag.DELRCPT
