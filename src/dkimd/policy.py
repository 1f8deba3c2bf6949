"""Per-message decisions, made as OpenDKIM makes them (opendkim.c mlfi_connect / mlfi_eoh).

* PeerList clients are not processed at all.
* Mail is *originating* when the client is in InternalHosts or authenticated
  (`{auth_authen}` / `{auth_type}` macros). Originating mail whose sender (the first of
  SenderHeaders present, default From) matches the SigningTable — or Domain/SubDomains in
  single-key mode — is signed; with MultipleSignatures every match signs.
* A sender whose SigningTable match names a key that cannot be had (not in the KeyTable,
  a malformed KeyTable line, a key file that will not load) is tempfailed at end of headers
  (`Decision.TEMPFAIL`), as OpenDKIM does; it starts with such tables all the same.
* Everything not signed is verified when Mode includes v.
* Verification outcomes map onto the On-* conditions; the configured Action decides.

Pure: no asyncio, no sockets. Key files are read, and signing requests made, by
`SigningKeys` (one store per configuration).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from dkimd.body_length import BodyLengthDb
from dkimd.config import Action, Condition, Config, KeySource
from dkimd.dkim import (
    DEFAULT_SIGNED_HEADERS,
    DkimResult,
    HeaderField,
    SignatureResult,
    SigningRequest,
    VerifyError,
    field_key,
    name_key,
)
from dkimd.dkim.atps import atps_tags
from dkimd.mta import listed_mta
from dkimd.signing_keys import KeyProblem, RequestShape, SigningKeys

if TYPE_CHECKING:
    from dkimd.sender_macro import MacroAuthor

DEFAULT_OVERSIGN_HEADERS = ("from",)


_ANGLE_ADDR = re.compile(rb"<([^<>]*)>")
_COMMENT = re.compile(rb"\([^()]*\)")
_QUOTED = re.compile(rb'"(?:[^"\\]|\\.)*"')


class Decision(enum.Enum):
    SIGN = "sign"
    VERIFY = "verify"
    NOTHING = "nothing"
    # A key the tables name for this sender cannot be had (not in the KeyTable, a broken
    # entry, a key file that will not load): OpenDKIM replies a bare TEMPFAIL at EOH.
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class Client:
    """The SMTP client as the MTA described it at connect time, plus auth state."""

    address: str | None
    hostname: str | None
    authenticated: bool = False


@dataclass(slots=True)
class MessagePlan:
    """What to do with one message, and why (the why is logged under LogWhy)."""

    decision: Decision
    why: str
    sender: str | None = None
    # Ready to sign with, one per signature (the key file checked for this message).
    requests: list[SigningRequest] = field(default_factory=list)
    key_problems: list[KeyProblem] = field(default_factory=list)
    # An outside client sent as one of our signing domains: logged whatever LogWhy says.
    notable: bool = False


_FROM_KEY = name_key("from")


def sender_address(headers: Sequence[HeaderField], sender_headers: Sequence[str]) -> str | None:
    """The address in the first SenderHeaders field present (OpenDKIM: dkimf_findheader +
    dkim_mail_parse), lower-cased domain; None when there is no usable address. When the
    list does not name From and none of its fields is present, From is tried too, as
    mlfi_eoh does (observed: `SenderHeaders Sender` signs a message with no Sender by its
    From; dkimd.malformed.author_address follows the same order)."""
    wanted = [name_key(name) for name in sender_headers]
    if _FROM_KEY not in wanted:
        wanted.append(_FROM_KEY)
    for key in wanted:
        for h in headers:
            if h.key == key:
                return parse_address(h.value)
    return None


def parse_address(value: bytes) -> str | None:
    """The first mailbox of an address-list field value, enough for signing decisions."""
    text = value.replace(b"\r\n", b" ").replace(b"\n", b" ")
    text = _QUOTED.sub(b'""', text)
    text = _COMMENT.sub(b" ", text)
    angle = _ANGLE_ADDR.search(text)
    candidate = angle.group(1) if angle else text.split(b",")[0]
    candidate = candidate.strip().strip(b"<>").strip()
    if b"@" not in candidate:
        return None
    local, _, domain = candidate.rpartition(b"@")
    domain = domain.strip().rstrip(b".").lower()
    if not domain or not local or any(c in domain for c in b' \t;,<>"\\'):
        return None
    try:
        return f"{local.decode('utf-8')}@{domain.decode('utf-8')}"
    except UnicodeDecodeError:
        return None


def _recipient_address(recipient: str) -> str | None:
    """An envelope recipient as `user@domain` (brackets stripped), None if it does not parse
    (dkim_mail_parse in dkimf_checkbldb; OpenDKIM skips such a recipient)."""
    return parse_address(recipient.encode("utf-8", "surrogateescape"))


def count_fields(headers: Sequence[HeaderField], name: bytes) -> int:
    """How many of `headers` are `name` fields, by the one rule (`HeaderField.key`)."""
    key = field_key(name)
    return sum(1 for h in headers if h.key == key)


class SigningPolicy:
    """Everything the per-message decision needs from one loaded Config."""

    def __init__(self, config: Config, *, check_uid: int | None = None) -> None:
        self.config = config
        signed: tuple[str, ...] = DEFAULT_SIGNED_HEADERS
        if config.sign_headers is not None:
            signed = config.sign_headers.apply(DEFAULT_SIGNED_HEADERS)
        omit = set(config.effective_omit_headers())
        # RFC 6376 5.4: From is mandatory whatever OmitHeaders says.
        omit.discard("from")
        self.signed_headers: tuple[str, ...] = tuple(h for h in signed if h not in omit)
        # OpenDKIM oversigns nothing unless told; we oversign From unless OversignHeaders is
        # set, so a From field added in transit cannot ride on our signature (RFC 6376 8.15).
        explicit = config.raw is not None and config.raw.get("OversignHeaders") is not None
        self.oversign_headers: tuple[str, ...] = (
            config.oversign_headers if explicit else DEFAULT_OVERSIGN_HEADERS
        )
        shape = RequestShape(
            header_canon=config.canonicalization.header,
            body_canon=config.canonicalization.body,
            signed_headers=self.signed_headers,
            oversign_headers=self.oversign_headers,
            ttl=config.signature_ttl,
            rsa_algorithm=config.signature_algorithm,
            # RequestReports: r=y on every signature, after any atps= (observed order)
            extension_tags=(("r", "y"),) if config.request_reports else (),
            max_body_bytes=config.maximum_signed_bytes,
        )
        self.body_length_db = (
            BodyLengthDb(config.body_length_db) if config.body_length_db is not None else None
        )
        #: The key store: ready SigningRequests per sender (check_uid: judge key file
        #: safety for the daemon's user, not root).
        self.keys = SigningKeys(config, shape, check_uid=check_uid)

    # -- connection time --

    def is_peer(self, client: Client) -> bool:
        return len(self.config.peer_list) > 0 and self.config.peer_list.matches(
            client.address, client.hostname
        )

    def is_internal(self, client: Client) -> bool:
        return self.config.internal_hosts.matches(client.address, client.hostname)

    # -- end of headers --

    def local_by_macros(self, macro: Callable[[str], str | None]) -> bool:
        """MacroList: the MTA marked the sender as local (any listed macro satisfied)."""
        return any(req.satisfied_by(macro(req.name)) for req in self.config.macro_list)

    def plan(
        self,
        client: Client,
        headers: Sequence[HeaderField],
        macro: Callable[[str], str | None] = lambda name: None,
        recipients: Sequence[str] = (),
        author: MacroAuthor | None = None,
    ) -> MessagePlan:
        """What to do with one message. `recipients` are its envelope recipients (RCPT TO,
        in order); BodyLengthDB needs them. `author`: the SenderMacro value, which stands
        for the sender fields when the MTA sent it (dkimd.sender_macro)."""
        config = self.config
        originating = (
            client.authenticated
            or self.is_internal(client)
            or self.local_by_macros(macro)
            or (config.mta_names is not None and listed_mta(config, macro))
        )
        if author is not None:
            sender = author.address
        else:
            sender = sender_address(headers, config.sender_headers)
        if originating and config.signs:
            why_not = self._why_not_sign(headers, sender)
            if why_not is None:
                assert sender is not None
                requests, problems = self.keys.for_sender(sender)
                if problems:
                    why = "; ".join(p.message for p in problems)
                    if all(p.at_end for p in problems):
                        # OpenDKIM takes such a key at end of headers; signing with it
                        # fails at end of message, the whole message with it.
                        return MessagePlan(Decision.SIGN, why, sender, [], problems, notable=True)
                    # A key that cannot be loaded ends the SigningTable walk in OpenDKIM
                    # (dkimf_apply_signtable), whatever else matched.
                    return MessagePlan(Decision.TEMPFAIL, why, sender, [], problems, notable=True)
                if requests:
                    requests, note = self._message_tags(requests, sender, recipients)
                    if note is not None:  # logged whatever LogWhy says, as OpenDKIM does
                        return MessagePlan(Decision.SIGN, note, sender, requests, notable=True)
                    return MessagePlan(Decision.SIGN, "originating", sender, requests)
                why_not = (
                    f"every key for '{sender}' is unpublished (SkipUnpublishedKeys)"
                    if self.keys.only_unpublished(sender)
                    else f"no signing table match for '{sender}'"
                )
            if not config.verifies:
                return MessagePlan(Decision.NOTHING, why_not, sender)
            return MessagePlan(Decision.VERIFY, why_not, sender)
        if originating and sender is not None and self._signing_candidate(headers, sender):
            # OpenDKIM's mlfi_eoh looks the sender up whatever the Mode; a configuration
            # that does not sign accepts such a message as it is, unverified (observed).
            return MessagePlan(Decision.NOTHING, "Mode lacks s", sender)
        why = "external host" if not originating else "Mode lacks s"
        notable = (
            not originating and sender is not None and self._claims_signing_domain(client, sender)
        )
        if notable:
            assert sender is not None
            host = client.hostname or client.address or "unknown"
            why = f"external host {host} tried to send mail as {sender.rpartition('@')[2]}"
        if not config.verifies:
            return MessagePlan(Decision.NOTHING, f"{why}; Mode lacks v", sender, notable=notable)
        return MessagePlan(Decision.VERIFY, why, sender, notable=notable)

    def _signing_candidate(self, headers: Sequence[HeaderField], sender: str) -> bool:
        """Whether a signer would sign this originating sender's message (or tempfail it
        for a broken key)."""
        if self._why_not_sign(headers, sender) is not None:
            return False
        requests, problems = self.keys.for_sender(sender)
        return bool(requests or problems)

    def _message_tags(
        self, requests: list[SigningRequest], sender: str, recipients: Sequence[str]
    ) -> tuple[list[SigningRequest], str | None]:
        """The requests with this message's own tags (mlfi_eoh): atpsh=/atps= when the From
        domain is in ATPSDomains, l= when a recipient is in BodyLengthDB; and what to log.

        The requests as the key store made them are shared by messages: these copies are
        made only for a message that needs them.
        """
        config = self.config
        extra: tuple[tuple[str, str], ...] = ()
        domain = sender.rpartition("@")[2]
        if config.atps_domains is not None and domain in config.atps_domains:
            extra = atps_tags(domain, config.atps_hash)
        why: str | None = None
        body_length = False
        if self.body_length_db is not None:
            addresses = [a for a in map(_recipient_address, recipients) if a is not None]
            matched = self.body_length_db.match(addresses)
            if matched is not None:
                body_length = True
                why = f"BodyLengthDB matched {matched}, signing with l= requested"
        if not extra and not body_length:
            return requests, why
        return [
            replace(
                r,
                extension_tags=extra + r.extension_tags,
                body_length=r.body_length or body_length,
            )
            for r in requests
        ], why

    def _claims_signing_domain(self, client: Client, sender: str) -> bool:
        """An outside client sending as one of our signing domains (OpenDKIM logs this,
        unless the client is in ExternalIgnoreList)."""
        config = self.config
        if config.external_ignore_list.matches(client.address, client.hostname):
            return False
        if config.signing_table is not None:
            return bool(config.signing_table.lookup_address(sender))
        if config.single_key is not None:
            return sender.rpartition("@")[2] in config.single_key.domains
        return False

    def _why_not_sign(self, headers: Sequence[HeaderField], sender: str | None) -> str | None:
        if self.config.key_source is KeySource.NONE:
            return "no signing keys configured"
        if sender is None:
            names = ", ".join(self.config.sender_headers)
            return f"no sender address found in {names}"
        if count_fields(headers, b"from") > 1:
            return "multiple From fields; not signing (RFC 6376 section 8.15)"
        return None

    # -- end of message: verification outcome -> On-* condition --

    def condition_for(self, results: Sequence[SignatureResult]) -> Condition | None:
        """The On-* condition the results call for, or None when the message is fine."""
        if any(r.passed for r in results):
            return None
        if not results or results[0].result is DkimResult.NONE:
            return Condition.NO_SIGNATURE
        kinds = [r.result for r in results]
        if DkimResult.TEMPERROR in kinds:
            return Condition.DNS_ERROR
        first = results[0]
        if first.error is VerifyError.KEY_NOT_FOUND:
            return Condition.KEY_NOT_FOUND
        if first.result in (DkimResult.FAIL, DkimResult.PERMERROR):
            return Condition.BAD_SIGNATURE
        return None  # neutral (testing key) and policy results are delivered as they are

    def action_for(self, condition: Condition) -> Action:
        return self.config.action_for(condition)
