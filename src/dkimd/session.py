"""Glue between milter events and DKIM work, one `MilterSession` per milter connection.

The session keeps what one SMTP session told us (client, auth, macros) and, per message,
the header fields, then at end-of-headers asks the policy what to do:

* sign: a `Signer` is fed body chunks as they arrive; at end-of-message its
  DKIM-Signature fields are inserted at the top;
* verify: a `Verifier` is built from the headers; key records already cached are taken at
  once, the others are asked for as a `Prefetch` of a `NeedKeys` request, which the server
  starts so that DNS overlaps the body transfer. At end-of-message the session returns the
  same request, the server hands the answer back through `provide`, and the results
  become an Authentication-Results field and, through the On-* actions, the final reply.

Before either, as OpenDKIM does (dkimd.malformed): a message without a usable sender, or
breaking StrictHeaders, takes the bad-format path (body skipped, a permerror
Authentication-Results field); a DKIM-Signature field libopendkim cannot read gets the
On-BadSignature action at end-of-headers. A failure report (dkimd.reports) is one more
request at end-of-message, before the reply.

Synchronous and sans-IO (dkimd.milter.handler): nothing here awaits, and nothing buffers
the body. Runtime objects (config, policy, keys, resolver) come from
a `RuntimeHolder`, read at the start of each message, so a reload applies from the next
message on and never changes one half-way.
"""

from __future__ import annotations

import socket as socket_module
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dkimd import (
    __version__,
    arc_filter,
    capture,
    header_limit,
    identity_header,
    malformed,
    metrics,
    milter,
    redirect,
    reports,
    resign,
    verify_log,
)
from dkimd.authres import forged_result_indexes
from dkimd.config import Action, Condition, Config
from dkimd.dkim import (
    AR_FIELD_NAME,
    DkimResult,
    HeaderField,
    SignatureField,
    SignatureResult,
    Signer,
    SigningRequest,
    Verifier,
    VerifyError,
    VerifyOptions,
    authentication_results_value,
    bad_format_value,
    name_key,
    signature_fields,
)
from dkimd.dkim.atps import AtpsSignature, atps_queries, atps_result
from dkimd.dns.base import CachingTxtLookup, TxtLookup, TxtResult, TxtStatus
from dkimd.dns.keyrequest import KeyRecords, NeedKeys
from dkimd.dns.testdata import TestDnsFile
from dkimd.exempt import exempt_domain
from dkimd.failure_report import ReportEnvelope, failure_report_request
from dkimd.key_trust import KeyTrust, TrustOutcome, key_records_from_files, validates_keys
from dkimd.log import QueueIdAdapter, get_logger
from dkimd.milter.handler import ConnectionInfo, HandlerResult, MilterHandler, Prefetch, Step
from dkimd.mta import no_match_note
from dkimd.policy import Client, Decision, MessagePlan, SigningPolicy
from dkimd.recipients import dont_sign_hit, needs_recipients, strip_brackets
from dkimd.replies import DkimStatus, final_reply
from dkimd.report_smtp import SmtpReport
from dkimd.required_headers import header_count_error
from dkimd.required_headers import rejection as required_headers_rejection
from dkimd.sender_macro import macro_author
from dkimd.signing_keys import KeyProblem
from dkimd.stores.base import StoreError  # the exception class only: no driver

if TYPE_CHECKING:
    from dkimd.lua.message import LuaMessage

_log = get_logger("session")

_DKIM_SIGNATURE = b"DKIM-Signature"
_DKIM_SIGNATURE_KEY = _DKIM_SIGNATURE.lower()
_LEADSPC = milter.ProtocolFlag.HDR_LEADSPC.value
# Beyond the resolver's own timeout (DNSTimeout), how long the server may take to hand back
# key records before they count as timed out: a backstop, so no lookup can hold a message
# for ever.
_KEY_WAIT_MARGIN = 2.0

# The authserv-id and report host when the MTA sends no "j" macro (OpenDKIM's HOSTUNKNOWN),
# and the job id when it sends no "i" (JOBIDUNKNOWN).
UNKNOWN_HOST = "unknown-host"
UNKNOWN_JOB_ID = "(unknown-jobid)"

# The libopendkim status OpenDKIM's dkim_eom reports for a failed verification, by why
# the first signature failed. Anything not listed is "signature processing failed".
_STATUS_OF_ERROR: dict[VerifyError, DkimStatus] = {
    VerifyError.NO_SIGNATURE: DkimStatus.NOSIG,
    VerifyError.SIGNATURE_SYNTAX: DkimStatus.SYNTAX,
    VerifyError.KEY_NOT_FOUND: DkimStatus.NOKEY,
    VerifyError.KEY_NOT_RETRIEVED: DkimStatus.KEYFAIL,
    VerifyError.KEY_QUERY_TEMPFAIL: DkimStatus.KEYFAIL,
    VerifyError.KEY_QUERY_FAILED: DkimStatus.KEYFAIL,
    VerifyError.KEY_REVOKED: DkimStatus.REVOKED,
    VerifyError.SIGNATURE_MISMATCH: DkimStatus.BADSIG,
    VerifyError.BODY_HASH_MISMATCH: DkimStatus.BADSIG,
    VerifyError.BODY_TRUNCATED: DkimStatus.BADSIG,
    VerifyError.MULTIPLE_FROM: DkimStatus.BADSIG,
    VerifyError.UNSIGNED_CONTENT: DkimStatus.BADSIG,
}


# Statuses whose log line names the key (s=, d=), as OpenDKIM's does.
_KEYED = frozenset({DkimStatus.KEYFAIL, DkimStatus.NOKEY, DkimStatus.REVOKED})


# A key record that does not parse, or does not fit the signature (h=, s=, t=s, k=): OpenDKIM
# adds its A-R (temperror or fail) and applies no On-* action (observed: delivered under
# On-BadSignature reject; tests/interop/test_authres_differential.py). The same for a
# signature that fails MustBeSigned ("unprotected header field") and for one whose t= is too
# far ahead or x= too far behind (ClockDrift; tests/interop/test_verifyopts_interop.py).
_NO_ACTION = frozenset(
    {
        VerifyError.MUST_BE_SIGNED,
        VerifyError.EXPIRED,
        VerifyError.FUTURE_TIMESTAMP,
        VerifyError.KEY_SYNTAX,
        VerifyError.KEY_MISSING,
        VerifyError.KEY_TYPE_MISMATCH,
        VerifyError.KEY_HASH_REFUSED,
        VerifyError.KEY_NOT_FOR_EMAIL,
        VerifyError.KEY_STRICT_IDENTITY,
    }
)


def verification_status(results: Sequence[SignatureResult]) -> DkimStatus | None:
    """The status OpenDKIM applies an On-* action for: None when a signature passed, or when
    the first signature's key record could not be parsed."""
    if any(r.passed for r in results):
        return None
    # Signatures OpenDKIM did not choose to verify decide nothing.
    chosen = [r for r in results if r.error is not VerifyError.SIGNATURE_IGNORED]
    first = chosen[0] if chosen else None
    if first is None or first.error is None:
        return DkimStatus.NOSIG
    if first.error in _NO_ACTION:
        return None
    return _STATUS_OF_ERROR.get(first.error, DkimStatus.CANTVRFY)


@dataclass(frozen=True)
class Runtime:
    """Everything built from one Config that messages use; replaced whole on reload."""

    config: Config
    policy: SigningPolicy
    resolver: TxtLookup
    verify_options: VerifyOptions
    #: Seconds the server may wait for key records (NeedKeys.timeout).
    key_timeout: float = 5.0 + _KEY_WAIT_MARGIN
    hostname: str = field(default_factory=socket_module.gethostname)
    #: The DNSSEC word after the key size in A-R items when no key is validated: None when
    #: keys come from test data (OpenDKIM knows no DNSSEC state there), else "unprotected".
    dnssec_word: str | None = "unprotected"
    #: Whether RCPT is asked for and recipients are kept (dkimd.recipients).
    keeps_recipients: bool = False
    #: BogusKey/UnprotectedKey over the key records' DNSSEC status (dkimd.key_trust); None
    #: when that status can change nothing, so messages pay nothing for it.
    key_trust: KeyTrust | None = None
    #: TestDNSData: a name it does not hold is a failed lookup to OpenDKIM, which leaves
    #: the ATPS result neutral where DNS's NXDOMAIN would make it fail (dkimd.dkim.atps).
    atps_missing_is_error: bool = False
    # The resolver's memory, if it has one; a runtime Protocol check per message cost more
    # than the lookup it saves.
    cached_lookup: Callable[[str], TxtResult | None] | None = field(init=False, default=None)
    #: Whether a table is behind a server (dkimd.stores): sessions are wrapped to fetch rows.
    remote_tables: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if isinstance(self.resolver, CachingTxtLookup):
            object.__setattr__(self, "cached_lookup", self.resolver.cached)
        from dkimd.stores.dataset import remote_datasets  # names only: no driver loaded

        object.__setattr__(self, "remote_tables", bool(remote_datasets(self.config)))

    @classmethod
    def build(cls, config: Config, resolver: TxtLookup, *, check_uid: int | None = None) -> Runtime:
        trusted = config.trust_signatures_from
        options = VerifyOptions(
            max_signatures=config.maximum_signatures_to_verify,
            allow_sha1=config.allow_sha1,
            min_key_bits=config.minimum_key_bits,
            clock_skew=config.clock_drift,
            must_be_signed=frozenset(name_key(h) for h in config.must_be_signed),
            trusted=None if trusted is None else trusted.__contains__,
            fix_crlf=config.fix_crlf,
        )
        # DNSTimeout 0 means "wait for ever" to OpenDKIM; the resolver then waits an hour.
        dns_timeout = float(config.dns_timeout) if config.dns_timeout > 0 else 3600.0
        policy = SigningPolicy(config, check_uid=check_uid)
        return cls(
            config,
            policy,
            resolver,
            options,
            dns_timeout + _KEY_WAIT_MARGIN,
            # Key records from a file (TestDNSData, TestPublicKeys) have no DNSSEC state, and
            # OpenDKIM writes no word for them (observed).
            dnssec_word=None
            if isinstance(resolver, TestDnsFile) or key_records_from_files(config)
            else "unprotected",
            keeps_recipients=needs_recipients(config),
            key_trust=KeyTrust.for_config(
                config, validating=validates_keys(config), test_data=key_records_from_files(config)
            ),
            atps_missing_is_error=config.test_dns_data is not None,
        )

    def key_request(self, names: Sequence[str]) -> NeedKeys:
        """Key records at `names`, as a request for the server to perform."""
        return NeedKeys(names, self.resolver, cached=self.cached_lookup, timeout=self.key_timeout)

    def authserv_id(
        self, mta_name: str | None, job_id: Callable[[], str | None] | None = None
    ) -> str:
        """AuthservID, else the MTA's name ("j"), else "unknown-host", as OpenDKIM picks it;
        "/<job id>" appended under AuthservIDWithJobID (the only case `job_id` is asked)."""
        chosen = self.base_authserv_id(mta_name)
        if self.config.authserv_id_with_job_id:
            job = job_id() if job_id is not None else None
            chosen = f"{chosen}/{job or UNKNOWN_JOB_ID}"
        return chosen

    def base_authserv_id(self, mta_name: str | None) -> str:
        """The authserv-id without AuthservIDWithJobID's "/<job id>": what OpenDKIM matches
        incoming Authentication-Results against, and writes on its malformed-message path."""
        configured = self.config.authserv_id
        if configured is None:
            return mta_name or UNKNOWN_HOST
        return self.hostname if configured == "HOSTNAME" else configured


class RuntimeHolder:
    """The current Runtime; `server` swaps it on SIGHUP/SIGUSR1."""

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime


@dataclass(slots=True)
class SessionStats:
    """Counters across all sessions of one process (exposed in logs and, later, metrics)."""

    messages: int = 0
    signed: int = 0
    verified: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0


class _Message:
    """Per-message state; dropped at abort, end of message or a new MAIL FROM."""

    __slots__ = (
        "arc",
        "atps_records",
        "bad_format",
        "header_budget",
        "headers",
        "keys_wanted",
        "lua",
        "plan",
        "recipients",
        "report_body",
        "report_records",
        "resign",
        "runtime",
        "signer",
        "signing",
        "started",
        "verdict",
        "verifier",
    )

    def __init__(self, runtime: Runtime, *, leading_space: bool = True) -> None:
        self.runtime = runtime
        self.headers: list[HeaderField] = []
        self.header_budget = header_limit.HeaderBudget(
            runtime.config.maximum_headers, leading_space=leading_space
        )
        self.plan: MessagePlan | None = None
        self.signer: Signer | None = None
        self.signing: list[SigningRequest] = []
        self.verifier: Verifier | None = None
        # Key records the verifier still needs: prefetched at end-of-headers, asked for
        # (the same request) at end-of-message.
        self.keys_wanted: NeedKeys | None = None
        # Envelope recipients, brackets stripped, when the configuration reads them.
        self.recipients: list[str] = []
        # A reply decided at end-of-headers (or at a header field, MaximumHeaders) while the
        # MTA expected none there (SMFIP_NR_EOH, NR_HDR): given at the next stage answered
        # instead, which ends the message the same way; the body is skipped meanwhile.
        self.verdict: milter.FinalAction | None = None
        # The header-only path (dkimd.malformed): nothing signed or verified.
        self.bad_format: malformed.BadFormat | None = None
        # SendReports with a signature asking for reports (r=y): the body as received (for
        # its canonical form in a failure report; None once over the limit) and the
        # `_report` TXT records, fetched with the keys.
        self.report_body: bytearray | None = None
        self.report_records: dict[str, TxtResult] = {}
        # ATPS (RFC 6541): the `_atps` TXT records a third-party signature asks to be
        # checked against, fetched with the keys; empty for mail without atps= tags.
        self.atps_records: dict[str, TxtResult] = {}
        # The policy scripts' view of this message (dkimd.lua), when there are scripts.
        self.lua: LuaMessage | None = None
        # ResignMailTo: verified, and signed as well (dkimd.resign).
        self.resign = False
        # ARC verification and sealing (dkimd.arc_filter), when ArcMode asks for it.
        self.arc: arc_filter.ArcMessage | None = None
        self.started = time.monotonic()


def _insert_at_top(name: bytes, value: bytes) -> milter.InsertHeader:
    """A field for the MTA to insert above all others.

    The milter protocol folds header values with bare LF (smfi_insheader(3)); Postfix splits
    stored lines at LF only, so a CR left in would reach the wire as CR CR LF.
    """
    return milter.InsertHeader(0, name, b" " + value.lstrip(b" ").replace(b"\r\n", b"\n"))


def _crlf(value: bytes) -> bytes:
    """Postfix passes folded header values with bare LF; the DKIM engine works in CRLF."""
    if b"\n" not in value:
        return value
    return value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class MilterSession:
    """One milter connection (the contract: dkimd.milter.handler.MilterHandler)."""

    def __init__(
        self, info: ConnectionInfo, holder: RuntimeHolder, stats: SessionStats | None = None
    ) -> None:
        self._conn = info.connection
        self._holder = holder
        self._stats = stats if stats is not None else SessionStats()
        self._log = QueueIdAdapter(_log)
        self._client = Client(None, None)
        # The MTA's name ("j", for the A-R authserv-id): a connect-stage macro, read once
        # per SMTP connection while only that stage is there to search.
        self._mta_name: str | None = None
        self._message: _Message | None = None
        # The message whose end-of-message reply waits for `provide` (key records).
        self._owed: _Message | None = None
        # The end-of-message reply held back while a failure report is being sent.
        self._after_report: HandlerResult = None
        self._reporting = False
        self._envelope_sender = ""
        self._handlers: dict[type[milter.Event], Callable[..., Step]] = {
            milter.Connect: self._on_connect,
            milter.MailFrom: self._on_mail,
            milter.RcptTo: self._on_rcpt,
            milter.Header: self._on_header,
            milter.EndOfHeaders: self._on_eoh,
            milter.BodyChunk: self._on_body,
            milter.EndOfMessage: self._on_eom,
            milter.Abort: self._on_abort,
            milter.QuitNewConnection: self._on_abort,
        }

    # -- MilterHandler --

    def handle(self, event: milter.Event) -> Step:
        handler = self._handlers.get(type(event))
        if handler is None:
            return None
        return handler(event)

    def provide(self, answer: object) -> Step:
        """The key records asked for at end-of-message: the reply to it."""
        if self._reporting:
            return self._report_sent(answer)
        msg = self._owed
        if msg is None:
            raise RuntimeError("provide() without a pending request")
        self._owed = None
        try:
            if not isinstance(answer, dict):
                raise TypeError(f"key records expected, got {type(answer).__name__}")
            self._take_keys(msg, answer)
            return self._arc_finish(msg, self._finish_message(msg))
        except Exception:
            return self._internal_error(msg)
        finally:
            self._drop_message()

    def close(self) -> None:
        self._owed = None
        self._reporting = False
        self._after_report = None
        self._drop_message()

    # -- events --

    def _on_connect(self, event: milter.Connect) -> HandlerResult:
        self._drop_message()
        address = event.address or None
        hostname = event.hostname.strip("[]") if event.hostname else None
        self._client = Client(address, hostname)
        self._mta_name = self._conn.macro("j")
        runtime = self._holder.current
        if runtime.policy.is_peer(self._client):
            if runtime.config.log_why:
                self._log.info("ignoring connection from %s (PeerList)", event.hostname)
            return milter.Accept()
        return None

    def _on_mail(self, event: milter.MailFrom) -> HandlerResult:
        self._drop_message()
        sender = event.address
        if sender.startswith("<") and sender.endswith(">"):
            sender = sender[1:-1]
        self._envelope_sender = sender
        auth = self._conn.macro("{auth_authen}") or self._conn.macro("{auth_type}")
        client = self._client
        self._client = Client(client.address, client.hostname, authenticated=bool(auth))
        return None

    def _on_rcpt(self, event: milter.RcptTo) -> HandlerResult:
        msg = self._message_state()
        if msg.runtime.keeps_recipients:
            msg.recipients.append(strip_brackets(event.address))
        return None

    @property
    def recipients(self) -> tuple[str, ...]:
        """The current message's envelope recipients, brackets stripped, in RCPT order.

        Empty unless the configuration reads recipients (dkimd.recipients.needs_recipients).
        """
        msg = self._message
        return tuple(msg.recipients) if msg is not None else ()

    def _message_state(self) -> _Message:
        if self._message is None:
            negotiated = self._conn.negotiated
            # Plain ints: a Flag operation builds a Flag member, a cost per message.
            leading_space = negotiated is None or bool(negotiated.protocol.value & _LEADSPC)
            self._message = _Message(self._holder.current, leading_space=leading_space)
            self._log.queue_id = self._conn.macro("i") or "NOQUEUE"
        return self._message

    def _on_header(self, event: milter.Header) -> HandlerResult:
        msg = self._message_state()
        if msg.verdict is not None:  # stopped (MaximumHeaders): nothing more is kept
            return None
        budget = msg.header_budget
        budget.raw += len(event.name) + len(event.value) + 2  # inline: a call per field costs
        if (budget.raw > budget.limit or not budget.leading_space) and not budget.take(
            event.name, event.value
        ):
            self._log.warning(header_limit.LOG_TEXT)
            config = msg.runtime.config
            metrics.recorder.on_action(Condition.SECURITY, config.action_for(Condition.SECURITY))
            metrics.recorder.message_stopped(verdict := header_limit.verdict(config))
            return self._eoh_verdict(msg, verdict)
        value = event.value
        rules = msg.runtime.config.replace_rules
        if rules is not None:  # ReplaceRules: only our copy changes, never the message
            value = rules.rewrite(event.name, value)
        msg.headers.append(HeaderField(event.name, _crlf(value)))
        return None

    def _on_eoh(self, event: milter.EndOfHeaders) -> Step:
        msg = self._message_state()
        if msg.verdict is not None:
            return self._eoh_verdict(msg, msg.verdict)
        self._log.queue_id = self._conn.macro("i") or self._log.queue_id
        runtime = msg.runtime
        config = runtime.config
        if runtime.remote_tables:  # this message's remote rows, in one round, before any log
            from dkimd.stores.prefetch import prefetch_message

            who = self._client
            prefetch_message(config, who.address, who.hostname, msg.recipients, self._conn.macro)
        author = None if config.sender_macro is None else macro_author(config, self._conn.macro)
        # The plan first, for the sender address it finds (the author check needs no second
        # look then); a plan without a sender has had no effect but to be made.
        plan = runtime.policy.plan(
            self._client, msg.headers, self._conn.macro, recipients=msg.recipients, author=author
        )
        bad = malformed.check_sender(msg.headers, config, plan.sender, author)
        if bad is not None:
            return self._bad_format(msg, bad)
        exempt = None if config.exempt_domains is None else exempt_domain(config, plan.sender)
        if exempt is not None:
            if config.log_why:
                self._log.info("domain '%s' exempted, accepting", exempt)
            metrics.recorder.message_ignored()
            return self._eoh_verdict(msg, milter.Accept())
        if config.resign_mail_to is not None:
            plan = self._resign_plan(msg, plan)
        if config.policy_scripts is not None:
            plan, verdict = self._lua_setup(msg, plan)
            if verdict is not None:
                metrics.recorder.message_stopped(verdict)
                return self._eoh_verdict(msg, verdict)
        msg.plan = plan
        if config.log_why and config.mta_names is not None:
            note = no_match_note(config, self._conn.macro)
            if note is not None:
                self._log.info(note)  # no args: no %-formatting of the text itself
        if plan.notable:
            self._log.info(plan.why)  # no args: no %-formatting of the text itself
        if plan.decision is Decision.TEMPFAIL:
            # OpenDKIM (mlfi_eoh): a key the SigningTable names that cannot be had (not in
            # the KeyTable, a broken line, a file that will not load) tempfails the message
            # at end-of-headers, with no reply text.
            self._stats.errors += 1
            metrics.recorder.message_failed()
            return self._eoh_verdict(msg, milter.TempFail())
        if plan.decision is Decision.NOTHING:
            if runtime.config.log_why:
                self._log.info("%s; not signing or verifying", plan.why)
            metrics.recorder.message_ignored()
            # Through _eoh_verdict: a connection negotiated before a reload changed Mode may
            # have asked for no reply here.
            return self._eoh_verdict(msg, milter.Accept())
        if plan.decision is Decision.SIGN:
            hit = dont_sign_hit(runtime.config, msg.recipients)
            if hit is not None:
                if runtime.config.log_why:
                    self._log.info("skipping signing of mail to '%s'", hit)
                metrics.recorder.message_ignored()
                return self._eoh_verdict(msg, milter.Accept())
        if config.required_headers:
            reason = header_count_error(msg.headers)
            if reason is not None:
                self._log.info("RFC5322 header requirement error: %s", reason)
                metrics.recorder.message_stopped(rejection := required_headers_rejection(reason))
                return self._eoh_verdict(msg, rejection)
        # Each DKIM-Signature is read once, for the syntax check and then the verifier.
        signatures = signature_fields(msg.headers)
        problem = malformed.check_processing(
            msg.headers,
            runtime.config,
            verifying=plan.decision is Decision.VERIFY or msg.resign,
            signatures=signatures,
        )
        if isinstance(problem, malformed.BrokenSignature):
            return self._broken_signature(msg, problem)
        if problem is not None:
            return self._bad_format(msg, problem)
        client = (self._client.address, self._client.hostname)
        verifying = plan.decision is Decision.VERIFY or msg.resign
        msg.arc = arc_filter.start(
            config,
            msg.headers,
            client=client,
            recipients=msg.recipients,
            verifying=verifying,
            log=self._log,
        )
        if plan.decision is Decision.SIGN:
            self._start_signing(msg, plan)
            if msg.resign and not signatures:  # nothing to verify: simply signed
                msg.resign = False
            elif msg.resign or (msg.lua is not None and msg.lua.effects.verify):
                # ResignMailTo, or odkim.verify in a message a script signs: verified as well.
                wanted = self._start_verifying(msg, signatures)
                if wanted is not None:
                    return Prefetch(wanted)
        else:
            if runtime.config.log_why and plan.why and not plan.notable:
                self._log.info("%s; verifying", plan.why)
            wanted = self._start_verifying(msg, signatures)
            if wanted is not None:
                return Prefetch(wanted)
        if msg.arc is not None and msg.verifier is None:
            # Signing only: the chain's keys are asked for on their own.
            wanted = self._start_verifying(msg, (), only_arc=True)
            if wanted is not None:
                return Prefetch(wanted)
        return None

    def _eoh_verdict(self, msg: _Message, final: milter.FinalAction) -> HandlerResult:
        """End the message with `final` now, or at end-of-message when the MTA asked for no
        reply at end-of-headers (the outcome for the message is the same)."""
        if self._conn.reply_expected:
            self._drop_message()
            return final
        msg.verdict = final
        return None

    def _on_body(self, event: milter.BodyChunk) -> HandlerResult:
        msg = self._message
        if msg is None:
            return None
        if msg.verdict is not None:
            return self._skip_body()
        if msg.arc is not None:
            msg.arc.feed_body(event.data)
        if msg.signer is not None:
            msg.signer.feed_body(event.data)
            if msg.verifier is None:
                return None
        if msg.verifier is not None:
            msg.verifier.feed_body(event.data)
            body = msg.report_body
            if body is not None:
                body += event.data
                if len(body) > reports.BODY_COPY_LIMIT:
                    msg.report_body = None
            if msg.signer is not None or msg.verifier.needs_body():
                return None
            if msg.arc is not None and msg.arc.needs_body():
                return None
        elif msg.bad_format is None:
            return None
        # OpenDKIM answers SKIP once no handle wants more of the body (dkim_minbody() 0).
        return self._skip_body()

    def _skip_body(self) -> HandlerResult:
        negotiated = self._conn.negotiated
        if (
            self._conn.reply_expected
            and negotiated is not None
            and negotiated.protocol & milter.ProtocolFlag.SKIP
        ):
            return milter.Skip()
        return None

    def _on_abort(self, event: milter.Event) -> HandlerResult:
        self._drop_message()
        return None

    def _on_eom(self, event: milter.EndOfMessage) -> Step:
        msg = self._message
        if msg is None or (msg.plan is None and msg.bad_format is None and msg.verdict is None):
            # No headers at all (an empty message): nothing to sign; verify an empty header
            # block the same way as any other message.
            msg = self._message_state()
            self._on_eoh(milter.EndOfHeaders())
            msg = self._message
            if msg is None:
                return milter.Accept()
        if msg.verdict is not None or msg.bad_format is not None:
            self._drop_message()
            return self._finish_early(msg)
        if event.data:
            self._on_body(milter.BodyChunk(event.data))
        self._stats.messages += 1
        if msg.keys_wanted is not None:
            # Owed a reply until the server provides the records.
            self._owed = msg
            return msg.keys_wanted
        try:
            return self._arc_finish(msg, self._finish_message(msg))
        except Exception:
            return self._internal_error(msg)
        finally:
            self._drop_message()

    def _finish_message(self, msg: _Message) -> Step:
        """The end-of-message reply: signatures, or the verification's A-R and verdict, or
        both when a policy script asked to verify a message it signs."""
        plan = msg.plan
        if plan is not None and plan.decision is Decision.SIGN and plan.key_problems:
            # A key libopendkim takes at end of headers and refuses to sign with now.
            return self._lua_finish(msg, self._libstatus(msg.runtime, DkimStatus.SIGGEN))
        if msg.signer is None or msg.resign:
            # A re-signed message (ResignMailTo) is signed by the verification's own reply.
            return self._with_report(msg, self._lua_finish(msg, self._finish_verifying(msg)))
        if msg.verifier is None:
            return self._lua_finish(msg, self._finish_signing(msg, msg.signer))
        checked = _as_list(self._finish_verifying(msg))
        if not isinstance(checked[-1], milter.Accept):
            return self._lua_finish(msg, checked)
        signed = _as_list(self._finish_signing(msg, msg.signer))
        return self._lua_finish(msg, [*checked[:-1], *signed])

    def store_unavailable(self, event: milter.Event) -> Step:
        """A remote data set cannot answer for this message (dkimd.stores.lookups): the
        On-InternalError action, with no traceback (the store's cache logs the outage once)."""
        msg = self._message_state()
        self._stats.errors += 1
        metrics.recorder.message_failed()
        captured = capture.captured_internal_error(msg.runtime.config, self._allowed_actions())
        if captured is not None:
            return captured
        action = self._libstatus(msg.runtime, DkimStatus.INTERNAL)
        if isinstance(event, milter.EndOfHeaders):
            return self._eoh_verdict(msg, action)
        return action

    def _internal_error(self, msg: _Message) -> HandlerResult:
        self._stats.errors += 1
        metrics.recorder.message_failed()
        if not isinstance(sys.exc_info()[1], StoreError):  # a store's outage is logged once
            self._log.exception("internal error while processing message")
        captured = capture.captured_internal_error(msg.runtime.config, self._allowed_actions())
        if captured is not None:
            return captured
        return self._libstatus(msg.runtime, DkimStatus.INTERNAL)

    # -- policy scripts (dkimd.lua) --

    def _lua_setup(
        self, msg: _Message, plan: MessagePlan
    ) -> tuple[MessagePlan, milter.FinalAction | None]:
        # Imported on first use: a configuration without scripts never loads dkimd.lua.
        from dkimd.lua.message import LuaMessage

        msg.lua = LuaMessage.start(
            msg.runtime.config,
            msg.runtime.policy,
            plan,
            msg.headers,
            self._client,
            self._envelope_sender,
            msg.recipients,
            self._conn.macro,
            self._log,
        )
        return msg.lua.setup(plan, msg.runtime.policy)

    def _lua_finish(self, msg: _Message, result: HandlerResult) -> HandlerResult:
        """The statistics and final scripts over the end-of-message reply."""
        if msg.lua is None or result is None:
            return result
        actions = _as_list(result)
        results = msg.verifier.results() if msg.verifier is not None else []
        return msg.lua.finish(actions, results, msg.runtime.policy)

    def _allowed_actions(self) -> milter.ActionFlag:
        """The message changes the MTA granted on this connection."""
        negotiated = self._conn.negotiated
        return negotiated.actions if negotiated is not None else milter.ActionFlag.NONE

    # -- failure reports (dkimd.reports) --

    def _report_names(self, msg: _Message, verifier: Verifier) -> list[str]:
        """The `_report` TXT names to fetch with the keys, when a report may be due."""
        if not msg.runtime.config.send_reports:
            return []
        names: list[str] = []
        for index in range(verifier.signature_count()):
            found = verifier.signature(index)
            if found is not None and found[0].tags.get("r", "").strip() == "y":
                name = reports.report_record_name(found[0].domain)
                if name not in names:
                    names.append(name)
        if names:
            msg.report_body = bytearray()
            msg.report_records = dict.fromkeys(names, TxtResult(names[0], TxtStatus.ERROR))
        return names

    # -- ATPS (dkimd.dkim.atps) --

    def _author_domain(
        self, msg: _Message, sender_headers: Sequence[str] | None = None
    ) -> str | None:
        names = msg.runtime.config.sender_headers if sender_headers is None else sender_headers
        address = malformed.author_address(msg.headers, names)
        return address.rpartition("@")[2] if address else None

    def _atps_names(self, msg: _Message, verifier: Verifier) -> list[str]:
        """The `_atps` TXT names to fetch with the keys, when a check can be due."""
        for index in range(verifier.signature_count()):
            parsed = verifier.signature(index)
            if parsed is not None and "atps" in parsed[0].tags:
                break
        else:
            return []  # the usual case: nothing built, no From parsed again, nothing asked
        names = atps_queries(_atps_signatures(verifier), self._author_domain(msg))
        failed = TxtResult("", TxtStatus.ERROR, detail="not fetched")
        msg.atps_records = dict.fromkeys(names, failed)
        return names

    def _atps_outcome(
        self, msg: _Message, verifier: Verifier, results: Sequence[SignatureResult]
    ) -> str:
        if not msg.atps_records:
            return "neutral"
        outcome = atps_result(
            _atps_signatures(verifier, results),
            self._author_domain(msg),
            msg.atps_records,
            missing_is_error=msg.runtime.atps_missing_is_error,
        )
        return outcome.value

    def _with_report(self, msg: _Message, result: HandlerResult) -> Step:
        """`result`, after a failure report is sent when one is due (before the reply, as
        OpenDKIM does); a report that cannot be sent changes nothing for the message."""
        try:
            request = self._failure_report(msg)
        except Exception:
            self._log.exception("failure report not sent")
            request = None
        if request is None:
            return result
        self._after_report = result
        self._reporting = True
        return request

    def _report_sent(self, answer: object) -> HandlerResult:
        result, self._after_report, self._reporting = self._after_report, None, False
        if isinstance(answer, reports.ReportOutcome) and answer.status != 0:
            if answer.status is None:
                self._log.error("failure report: %s", answer.error)
            else:
                self._log.error("pclose(): returned status %d", answer.status)
        return result

    def _failure_report(self, msg: _Message) -> reports.SendReport | SmtpReport | None:
        if msg.report_body is None:  # no report can be due (SendReports off, or too long)
            return None
        negotiated = self._conn.negotiated
        envelope = ReportEnvelope(
            jobid=self._job_id() or UNKNOWN_JOB_ID,
            hostname=self._mta_host() or UNKNOWN_HOST,
            envelope_sender=self._envelope_sender,
            client_ip=self._client.address or "",
            leading_space=negotiated is not None and negotiated.leading_space,
        )
        return failure_report_request(
            msg.verifier,
            msg.report_body,
            msg.report_records,
            msg.headers,
            msg.runtime.config,
            envelope,
            self._log,
        )

    # -- stopped at end-of-headers (dkimd.malformed) --

    def _bad_format(self, msg: _Message, bad: malformed.BadFormat) -> HandlerResult:
        msg.bad_format = bad
        self._log.info("%s; bad message format", bad.reason)
        metrics.recorder.message_stopped(milter.Accept())  # with an A-R saying so, at the end
        return None

    def _broken_signature(self, msg: _Message, broken: malformed.BrokenSignature) -> HandlerResult:
        # OpenDKIM (mlfi_eoh): dkimf_libstatus(SYNTAX), the On-BadSignature action with its
        # reply text, and the parser's reason in the log.
        action = msg.runtime.policy.action_for(DkimStatus.SYNTAX.condition)
        metrics.recorder.on_action(DkimStatus.SYNTAX.condition, action)
        self._log.info("syntax error: %s", _one_line(broken.reason))
        metrics.recorder.message_stopped(final := final_reply(action, DkimStatus.SYNTAX))
        return self._eoh_verdict(msg, final)

    def _finish_early(self, msg: _Message) -> HandlerResult:
        if msg.verdict is not None:
            return msg.verdict
        bad = msg.bad_format
        assert bad is not None
        config = msg.runtime.config
        if config.ignore_malformed_mail:
            return milter.Accept()
        authserv_id = msg.runtime.base_authserv_id(self._mta_host())
        actions: list[milter.Action] = []
        if bad.verifying:
            actions += self._remove_forged_results(config, msg.headers, authserv_id)
        value = bad_format_value(authserv_id)
        actions.append(_insert_at_top(AR_FIELD_NAME, value))
        actions.append(milter.Accept())
        return actions

    # -- signing --

    def _start_signing(self, msg: _Message, plan: MessagePlan) -> None:
        requests = plan.requests
        config = msg.runtime.config
        if config.identity_header is not None and plan.sender is not None:
            requests = self._with_identity(msg, requests, plan.sender)
        msg.signing = requests
        if requests:
            # One body pass for the DKIM signatures and the ARC hashes (dkimd.arc_filter).
            bodies = None if msg.arc is None else msg.arc.shared_bodies()
            msg.signer = Signer(*requests, fix_crlf=config.fix_crlf, bodies=bodies)

    def _with_identity(
        self, msg: _Message, requests: list[SigningRequest], sender: str
    ) -> list[SigningRequest]:
        config = msg.runtime.config
        identity = identity_header.identity_for(config, msg.headers, sender)
        if identity is None:
            return requests
        if not identity.found:
            self._log.info("cannot find identity header %s", config.identity_header)
        requests, refused = identity_header.with_identity(requests, identity.value)
        for domain in refused:
            self._log.warning("identity %s is not within d=%s; i= left out", identity.value, domain)
        return requests

    def _finish_signing(self, msg: _Message, signer: Signer) -> HandlerResult:
        actions = self._signature_actions(msg, signer)
        actions += self._software_header(msg.runtime)
        actions.append(milter.Accept())
        return actions

    def _signature_actions(
        self, msg: _Message, signer: Signer, added: Sequence[HeaderField] = ()
    ) -> list[milter.Action]:
        """The DKIM-Signature fields and the changes that go with them. `added`: fields
        this filter puts on top of the message first (a re-signed message's A-R)."""
        config = msg.runtime.config
        fields = signer.sign_all([*added, *identity_header.signed_fields(config, msg.headers)])
        actions: list[milter.Action] = []
        if config.remove_old_signatures:
            count = sum(1 for h in msg.headers if h.key == _DKIM_SIGNATURE_KEY)
            actions += [milter.ChangeHeader(i, _DKIM_SIGNATURE, b"") for i in range(count, 0, -1)]
        actions += identity_header.removal(config, msg.headers)
        # In request order, each at the top, as OpenDKIM: the last request's ends up on top.
        for request, sig in zip(msg.signing, fields, strict=True):
            actions.append(_insert_at_top(sig.name, sig.value))
            if config.syslog_success:
                self._log.info(
                    "DKIM-Signature field added (s=%s, d=%s)", request.selector, request.domain
                )
        self._stats.signed += 1
        metrics.recorder.message_signed(msg.started, msg.signing)
        return actions

    def _resign_plan(self, msg: _Message, plan: MessagePlan) -> MessagePlan:
        """ResignMailTo: the plan for a message to a listed recipient (dkimd.resign)."""
        config = msg.runtime.config
        hit = resign.resign_hit(config, msg.recipients)
        if hit is None or plan.sender is None:
            return plan
        sender = plan.sender
        if not config.signs or not config.verifies:
            return MessagePlan(Decision.NOTHING, "re-signing needs Mode sv", sender)
        made = msg.runtime.policy.keys.for_key(hit.key_name, sender.rpartition("@")[2])
        if made is None:
            return plan
        if isinstance(made, KeyProblem):
            return MessagePlan(Decision.TEMPFAIL, made.message, sender, [], [made], notable=True)
        msg.resign = True
        return MessagePlan(Decision.SIGN, f"re-signing mail to '{hit.recipient}'", sender, [made])

    # -- verifying --

    def _start_verifying(
        self, msg: _Message, signatures: Sequence[SignatureField], *, only_arc: bool = False
    ) -> NeedKeys | None:
        """Build the verifier; the key records it (and the ARC chain) still needs, if any,
        as a request. `only_arc`: no DKIM verification, the ARC chain's keys alone."""
        runtime = msg.runtime
        arc_names = [] if msg.arc is None else msg.arc.key_queries()
        if only_arc:
            return self._key_request(msg, arc_names)
        if msg.lua is not None:
            signatures, verdict = msg.lua.screen(signatures, runtime.policy)
            if verdict is not None:
                msg.verdict = verdict
                return None
        author = None
        if runtime.verify_options.max_signatures == 0:  # only then does the author matter
            author = self._author_domain(msg, ("from",))
        # One body pass for DKIM and ARC: the DKIM verifier feeds the ARC hashes too.
        bodies = None if msg.arc is None else msg.arc.shared_bodies()
        verifier = Verifier(
            msg.headers, runtime.verify_options, signatures, author_domain=author, bodies=bodies
        )
        msg.verifier = verifier
        self._log_ignored(runtime, verifier)
        names = verifier.key_queries()
        if names:
            names += self._report_names(msg, verifier)
            names += self._atps_names(msg, verifier)
        return self._key_request(msg, [*names, *(n for n in arc_names if n not in names)])

    def _key_request(self, msg: _Message, names: list[str]) -> NeedKeys | None:
        if not names:
            return None
        wanted = msg.runtime.key_request(names)
        known = wanted.answer_now()
        if known is not None:  # all cached, the usual case on a busy server
            self._take_keys(msg, known)
            return None
        msg.keys_wanted = wanted
        return wanted

    def _take_keys(self, msg: _Message, records: KeyRecords) -> None:
        verifier = msg.verifier
        for name, result in records.items():
            if not result.ok and result.detail:
                self._log.info("key lookup %s: %s (%s)", name, result.status.value, result.detail)
            if verifier is not None:
                verifier.provide_key(name, result)
            if msg.arc is not None:
                msg.arc.provide_key(name, result)
            if msg.report_body is not None and name in msg.report_records:
                msg.report_records[name] = result
            if name in msg.atps_records:
                msg.atps_records[name] = result
        msg.keys_wanted = None

    def _finish_verifying(self, msg: _Message) -> HandlerResult:
        """The A-R field and the final reply, as OpenDKIM's mlfi_eom gives them.

        One difference on purpose: after a key lookup error OpenDKIM 2.11 adds no A-R and
        accepts whatever On-DNSError says (mlfi_eom stores dkimf_libstatus's answer in the
        wrong variable). dkimd applies On-DNSError as opendkim.conf(5) documents it, after
        an A-R with dkim=temperror, so a DNS outage delays mail instead of passing it on
        unverified.
        """
        runtime = msg.runtime
        config = runtime.config
        verifier = msg.verifier
        assert verifier is not None
        results = verifier.results()
        self._stats.verified += 1
        metrics.recorder.message_verified(msg.started, results)
        self._log_results(config, results)
        verify_log.log_outcome(self._log, config, verifier, results)
        status = verification_status(results)
        trust = None if runtime.key_trust is None else self._judge_keys(runtime, verifier, results)
        if trust is not None and trust.bad:
            status = DkimStatus.BADSIG
        if any(r.passed for r in results):
            self._stats.passed += 1
        elif results[0].result is not DkimResult.NONE:
            self._stats.failed += 1
        authserv_id = runtime.authserv_id(self._mta_host(), self._job_id)
        actions = self._remove_forged_results(
            config, msg.headers, runtime.base_authserv_id(self._mta_host())
        )
        added = status is not DkimStatus.NOSIG or config.always_add_ar_header
        value = b""
        if added:
            value = authentication_results_value(
                authserv_id,
                results,
                dnssec=runtime.dnssec_word,
                atps=self._atps_outcome(msg, verifier, results),
                header_b=not config.no_header_b,
                dnssec_words=None if trust is None else trust.words,
                result_words=None if trust is None else trust.result_words,
            )
            actions.append(_insert_at_top(AR_FIELD_NAME, value))
        if status is DkimStatus.BADSIG and config.redirect_failures_to is not None:
            actions += self._redirect(msg)
        if (
            msg.resign
            and msg.signer is not None
            and resign.should_sign(config, any(r.passed for r in results))
        ):
            ours = [HeaderField(AR_FIELD_NAME, b" " + _crlf(value))] if added else []
            actions += self._signature_actions(msg, msg.signer, ours)
        actions += self._software_header(runtime)
        if status is None or (status is DkimStatus.NOSIG and config.always_add_ar_header):
            # With AlwaysAddARHeader an unsigned message gets dkim=none and On-NoSignature
            # never applies (mlfi_eom calls dkimf_libstatus only when no A-R was added).
            actions.append(milter.Accept())
            return actions
        final = self._libstatus(runtime, status, results[0])
        action = runtime.policy.action_for(status.condition)
        actions += capture.quarantine_request(action, self._allowed_actions())
        if status is DkimStatus.BADSIG and any(r.testing for r in results):
            # A key published with t=y only tests: OpenDKIM delivers what it would refuse.
            final = milter.Accept()
        return [*actions, final]

    def _arc_finish(self, msg: _Message, step: Step) -> Step:
        """The end-of-message reply with the ARC result and set added (dkimd.arc_filter);
        a reply held back for a failure report gets them where it waits."""
        arc = msg.arc
        if arc is None:
            return step
        if self._reporting:
            self._after_report = self._arc_actions(msg, arc, self._after_report)
            return step
        if isinstance(step, milter.Action | list | tuple) or step is None:
            return self._arc_actions(msg, arc, step)
        return step

    def _arc_actions(
        self, msg: _Message, arc: arc_filter.ArcMessage, result: HandlerResult
    ) -> list[milter.Action]:
        runtime = msg.runtime
        sender = msg.plan.sender if msg.plan is not None else None
        domain = (sender or "").rpartition("@")[2]

        def seal_key() -> SigningRequest | str:
            if not arc.settings.key_name and msg.signing:
                return msg.signing[0]  # the signing domain's key, as the SigningTable chose
            made = runtime.policy.keys.for_key(arc.settings.key_name, domain)
            if made is None or isinstance(made, KeyProblem):
                return made.message if made is not None else "no sealing key"
            return made

        return arc.finish(
            _as_list(result),
            msg.headers,
            authserv_id=runtime.authserv_id(self._mta_host(), self._job_id),
            trusted_id=runtime.base_authserv_id(self._mta_host()),
            remote_ip=self._client.address,
            dkim_results=None if msg.verifier is None else msg.verifier.results(),
            seal_key=seal_key,
            log=self._log,
        )

    def _redirect(self, msg: _Message) -> list[milter.Action]:
        allowed = self._allowed_actions()
        actions = redirect.redirect_actions(msg.runtime.config, msg.recipients, allowed)
        if not actions:
            self._log.warning("RedirectFailuresTo: recipients cannot be changed on this connection")
        return actions

    def _judge_keys(
        self, runtime: Runtime, verifier: Verifier, results: Sequence[SignatureResult]
    ) -> TrustOutcome:
        """BogusKey/UnprotectedKey over the DNSSEC status of each signature's key record;
        a bogus one is logged (a forged or broken key record is worth an admin's look)."""
        assert runtime.key_trust is not None
        answers = [verifier.key_answer(i) for i in range(len(results))]
        outcome = runtime.key_trust.judge(results, answers)
        for result, answer, bogus, word in zip(
            results, answers, outcome.bogus, outcome.words, strict=True
        ):
            if bogus:
                self._log.warning(
                    "key record s=%s, d=%s: DNSSEC validation failed (bogus)%s",
                    result.selector,
                    result.domain,
                    f": {_one_line(answer.detail)}" if answer is not None and answer.detail else "",
                )
            elif word is not None and runtime.config.log_why:
                self._log.info(
                    "key record s=%s, d=%s: DNSSEC %s", result.selector, result.domain, word
                )
        return outcome

    def _remove_forged_results(
        self, config: Config, headers: Sequence[HeaderField], authserv_id: str
    ) -> list[milter.Action]:
        """Delete incoming Authentication-Results that claim to be ours (RFC 8601 section 5).

        The index is the field's position among fields of the same name, as the milter
        protocol counts; deleting from the last one keeps earlier indexes valid whatever
        the MTA does with the gaps.
        """
        if config.keep_auth_results:
            return []
        doomed = forged_result_indexes(
            headers, authserv_id, hosts=config.remove_ar_from, any_method=config.remove_ar_all
        )
        if doomed:
            self._log.info(
                "removing %d Authentication-Results field(s) claiming authserv-id %s",
                len(doomed),
                authserv_id,
            )
        return [milter.ChangeHeader(i, AR_FIELD_NAME, b"") for i in reversed(doomed)]

    def _log_results(self, config: Config, results: Sequence[SignatureResult]) -> None:
        for r in results:
            if r.result is DkimResult.NONE:
                if config.log_why:
                    self._log.info("no signature data")
                continue
            if r.passed:
                if config.syslog_success:
                    self._log.info(
                        "DKIM verification successful (d=%s, s=%s, a=%s)",
                        r.domain,
                        r.selector,
                        r.algorithm,
                    )
                continue
            self._log.info(
                "DKIM verification: %s (d=%s, s=%s): %s",
                r.result.value,
                r.domain,
                r.selector,
                r.reason,
            )
            if r.body_length_extra:
                self._log.info(
                    "signature d=%s covers only part of the body (l=): %d bytes unsigned",
                    r.domain,
                    r.body_length_extra,
                )

    # -- actions --

    def _log_ignored(self, runtime: Runtime, verifier: Verifier) -> None:
        ignored = verifier.ignored_domains()
        if ignored:
            verify_log.log_ignored(self._log, runtime.verify_options.max_signatures, ignored)

    def _mta_host(self) -> str | None:
        """The MTA's name, the "j" macro (sent with connect by sendmail, later by others)."""
        return self._mta_name or self._conn.macro("j")

    def _job_id(self) -> str | None:
        return self._conn.macro("i")

    def _software_header(self, runtime: Runtime) -> list[milter.Action]:
        """SoftwareHeader: a DKIM-Filter field naming us, as OpenDKIM adds one naming itself
        ("<product> v<version> <MTA host> <job id>")."""
        if not runtime.config.software_header:
            return []
        host = self._mta_host() or UNKNOWN_HOST
        job = self._job_id() or UNKNOWN_JOB_ID
        text = f" dkimd v{__version__} {host} {job}"
        return [_insert_at_top(b"DKIM-Filter", _one_line(text).encode("utf-8"))]

    def _libstatus(
        self, runtime: Runtime, status: DkimStatus, about: SignatureResult | None = None
    ) -> milter.FinalAction:
        """The On-* action for `status`, as the reply OpenDKIM's dkimf_libstatus sends, and
        its log line ("no signature data" here only when it is not accepted: under LogWhy
        `_log_results` has written it already)."""
        action = runtime.policy.action_for(status.condition)
        metrics.recorder.on_action(status.condition, action)
        if status is not DkimStatus.NOSIG or action is not Action.ACCEPT:
            where = ""
            if about is not None and about.domain is not None and status in _KEYED:
                where = f" (s={about.selector}, d={about.domain})"
            self._log.info("%s%s", status.log_text, _one_line(where))
        return final_reply(action, status)

    def _drop_message(self) -> None:
        self._message = None


def _atps_signatures(
    verifier: Verifier, results: Sequence[SignatureResult] | None = None
) -> list[AtpsSignature]:
    """The verified signatures that parsed, in header order, for the ATPS walk; `passed`
    from `results` (all False before they are known)."""
    found: list[AtpsSignature] = []
    for index in range(verifier.signature_count()):
        parsed = verifier.signature(index)
        if parsed is None:
            continue  # cannot pass, names no domain
        passed = results is not None and index < len(results) and results[index].passed
        found.append(AtpsSignature(parsed[0].domain, parsed[0].tags, passed))
    return found


def _as_list(result: HandlerResult) -> list[milter.Action]:
    if result is None:
        return []
    return list(result) if isinstance(result, Sequence) else [result]


def _one_line(text: str) -> str:
    # Reply text must not carry CR, LF or NUL from a hostile signature (header injection).
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return cleaned[:400]


def handler_factory(
    holder: RuntimeHolder, stats: SessionStats
) -> Callable[[ConnectionInfo], MilterHandler]:
    def make(info: ConnectionInfo) -> MilterHandler:
        session = MilterSession(info, holder, stats)
        if not holder.current.remote_tables:
            return session
        from dkimd.stores.lookups import RemoteRowsHandler  # remote data sets only

        return RemoteRowsHandler(session, session.store_unavailable)

    return make


__all__ = [
    "UNKNOWN_HOST",
    "UNKNOWN_JOB_ID",
    "MilterSession",
    "Runtime",
    "RuntimeHolder",
    "SessionStats",
    "handler_factory",
    "verification_status",
]
