"""What dkimd asks the MTA for at option negotiation, given what a configuration can do.

Every milter reply is a loopback round trip that wakes both processes, so dkimd asks for
no reply at the stages where its configuration can never decide anything, and for no
recipients unless an option reads them. The actions are OpenDKIM's (mlfi_negotiate).
"""

from __future__ import annotations

from dkimd import capture, header_limit, malformed, milter, redirect
from dkimd.config import Config
from dkimd.recipients import needs_recipients

__all__ = ["decides_at_eoh", "filter_options_for"]


def decides_at_eoh(config: Config) -> bool:
    """Whether a message can get its final reply at end-of-headers under `config`.

    OpenDKIM's mlfi_eoh accepts early when Mode lacks what the message needs, when a
    DontSignMailTo recipient is seen or the author's domain is in ExemptDomains, rejects
    what RequiredHeaders refuses, and tempfails a sender whose SigningTable (or
    ResignMailTo) entry names a key that cannot be had: the tables' broken entries are
    known at load, so only such a configuration asks for the reply. A DKIM-Signature field
    it cannot read gets the On-BadSignature action there (dkimd.malformed), which needs the
    reply unless that action is accept. A key file that stops loading later is
    unforeseeable: when the MTA expects no reply at end-of-headers, that verdict goes out at
    end-of-message instead (the outcome for the message is the same).
    """
    return (
        not config.verifies
        or config.dont_sign_mail_to is not None
        or config.exempt_domains is not None
        or config.required_headers
        or config.resign_mail_to is not None
        or (config.signs and any(p.fails_messages for p in config.warnings))
        or (config.verifies and malformed.eoh_reply_needed(config))
        # a setup script may end the message there (odkim.set_result), as OpenDKIM replies
        or (config.policy_scripts is not None and config.policy_scripts.has("setup"))
    )


def filter_options_for(config: Config) -> milter.FilterOptions:
    """What to ask the MTA for, given what this configuration can ever do.

    Every milter reply is a loopback round trip that wakes both processes, and a message
    that is only signed or verified needs none before end-of-message. So: no replies to
    HELO, MAIL, RCPT, DATA, unknown commands, headers or body chunks; no reply at
    connect unless a PeerList may turn a client away there; none at end-of-headers
    unless an option can decide there (`decides_at_eoh`); no RCPT at all unless an
    option reads recipients (dkimd.recipients). Header values keep their leading space
    (v6), so simple canonicalization sees the field exactly as sent, and the values we
    add start with one space, as OpenDKIM's do.

    Actions are OpenDKIM's (mlfi_negotiate): add headers, and change them when incoming A-R
    or old signatures may be removed (KeepAuthResults no, the default); change recipients
    for RedirectFailuresTo; quarantine only with CaptureUnknownErrors, so that without it
    an On-* quarantine ends as a plain accept, as in OpenDKIM (dkimd.capture).
    """
    flags = milter.ProtocolFlag
    protocol = (
        flags.HDR_LEADSPC
        | flags.NOHELO
        | flags.NODATA
        | flags.NOUNKNOWN
        | flags.NR_HELO
        | flags.NR_MAIL
        | flags.NR_RCPT
        | flags.NR_DATA
        | flags.NR_UNKN
        | flags.NR_HDR
        | flags.NR_BODY
    )
    if not needs_recipients(config):
        protocol |= flags.NORCPT
    if len(config.peer_list) == 0:
        protocol |= flags.NR_CONN
    if config.verifies and not config.signs:
        # Body chunks are answered, so that a message with nothing (more) to verify is
        # skipped as OpenDKIM skips it. Not in a configuration that also signs: there every
        # signed message would pay a round trip per body chunk (measured with bench/run.py:
        # 1 MB signing fell from 1.46x to 1.01x OpenDKIM's rate), while SKIP only spares the
        # MTA sending a body that would be ignored; the outcome is the same.
        protocol = (protocol & ~flags.NR_BODY) | flags.SKIP
    if not decides_at_eoh(config):
        protocol |= flags.NR_EOH
    if header_limit.replies_at_header(config):
        protocol &= ~flags.NR_HDR
    actions = milter.ActionFlag.ADDHDRS
    if (
        config.remove_ar_all
        or not config.keep_auth_results
        or config.remove_old_signatures
        or config.identity_header_remove
    ):
        actions |= milter.ActionFlag.CHGHDRS
    actions |= redirect.required_actions(config) | capture.required_actions(config)
    if config.policy_scripts is not None:
        actions |= config.policy_scripts.milter_actions()
    return milter.FilterOptions(actions=actions, protocol=protocol)
