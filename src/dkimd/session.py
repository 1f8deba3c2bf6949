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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dkimd import __version__, malformed, milter, reports
from dkimd.authres import forged_result_indexes
from dkimd.config import Action, Condition, Config
from dkimd.dkim import (
    AR_FIELD_NAME,
    DkimResult,
    HeaderField,
    SignatureResult,
    Signer,
    SigningRequest,
    Verifier,
    VerifyOptions,
    authentication_results_value,
    canonicalize_body,
)
from dkimd.dns.base import CachingTxtLookup, TxtLookup, TxtResult, TxtStatus
from dkimd.dns.keyrequest import KeyRecords, NeedKeys
from dkimd.log import QueueIdAdapter, get_logger
from dkimd.milter.handler import ConnectionInfo, HandlerResult, Prefetch, Step
from dkimd.policy import Client, Decision, MessagePlan, SigningPolicy
from dkimd.signing_keys import KeyProblem

_log = get_logger("session")

_DKIM_SIGNATURE = b"DKIM-Signature"
_DKIM_SIGNATURE_KEY = _DKIM_SIGNATURE.lower()
# Beyond the resolver's own timeout (DNSTimeout), how long the server may take to hand back
# key records before they count as timed out: a backstop, so no lookup can hold a message
# for ever.
_KEY_WAIT_MARGIN = 2.0

# SMTP replies for the On-* actions (RFC 7372 section 3.1 DKIM enhanced status codes).
_REJECT_CODES: dict[Condition, tuple[int, str]] = {
    Condition.BAD_SIGNATURE: (550, "5.7.20"),
    Condition.KEY_NOT_FOUND: (550, "5.7.20"),
    Condition.NO_SIGNATURE: (550, "5.7.20"),
    Condition.SIGNATURE_ERROR: (550, "5.7.1"),
    Condition.SECURITY: (550, "5.7.1"),
    Condition.INTERNAL_ERROR: (550, "5.7.1"),
    Condition.DNS_ERROR: (550, "5.7.1"),
}
_CONDITION_TEXT: dict[Condition, str] = {
    Condition.BAD_SIGNATURE: "DKIM signature verification failed",
    Condition.KEY_NOT_FOUND: "DKIM key not found in DNS",
    Condition.NO_SIGNATURE: "message has no DKIM signature",
    Condition.SIGNATURE_ERROR: "message could not be DKIM-signed",
    Condition.SECURITY: "DKIM security concern",
    Condition.INTERNAL_ERROR: "internal error in DKIM filter",
    Condition.DNS_ERROR: "DKIM key lookup failed temporarily",
}


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
    # The resolver's memory, if it has one; a runtime Protocol check per message cost more
    # than the lookup it saves.
    cached_lookup: Callable[[str], TxtResult | None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if isinstance(self.resolver, CachingTxtLookup):
            object.__setattr__(self, "cached_lookup", self.resolver.cached)

    @classmethod
    def build(cls, config: Config, resolver: TxtLookup, *, check_uid: int | None = None) -> Runtime:
        options = VerifyOptions(
            max_signatures=config.maximum_signatures_to_verify,
            allow_sha1=config.allow_sha1,
            min_key_bits=config.minimum_key_bits,
        )
        # DNSTimeout 0 means "wait for ever" to OpenDKIM; the resolver then waits an hour.
        dns_timeout = float(config.dns_timeout) if config.dns_timeout > 0 else 3600.0
        policy = SigningPolicy(config, check_uid=check_uid)
        return cls(config, policy, resolver, options, dns_timeout + _KEY_WAIT_MARGIN)

    def key_request(self, names: Sequence[str]) -> NeedKeys:
        """Key records at `names`, as a request for the server to perform."""
        return NeedKeys(names, self.resolver, cached=self.cached_lookup, timeout=self.key_timeout)

    def authserv_id(self, mta_name: str | None) -> str:
        configured = self.config.authserv_id
        if configured is None:
            return mta_name or self.hostname
        if configured == "HOSTNAME":
            return self.hostname
        return configured


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
        "bad_format",
        "headers",
        "key_problems",
        "keys_wanted",
        "plan",
        "report_body",
        "report_records",
        "runtime",
        "settled",
        "signer",
        "signing",
        "started",
        "verifier",
    )

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.headers: list[HeaderField] = []
        self.plan: MessagePlan | None = None
        self.signer: Signer | None = None
        self.signing: list[SigningRequest] = []
        self.key_problems: list[KeyProblem] = []
        self.verifier: Verifier | None = None
        # Key records the verifier still needs: prefetched at end-of-headers, asked for
        # (the same request) at end-of-message.
        self.keys_wanted: NeedKeys | None = None
        # The header-only path (dkimd.malformed): nothing signed or verified.
        self.bad_format: malformed.BadFormat | None = None
        # A reply decided at end-of-headers when the MTA waited for none there: it is the
        # end-of-message reply, and the body is skipped.
        self.settled: milter.FinalAction | None = None
        # SendReports with a signature asking for reports (r=y): the body as received (for
        # its canonical form in a failure report; None once over the limit) and the
        # `_report` TXT records, fetched with the keys.
        self.report_body: bytearray | None = None
        self.report_records: dict[str, TxtResult] = {}
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
            return self._with_report(msg, self._finish_verifying(msg))
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

    def _message_state(self) -> _Message:
        if self._message is None:
            self._message = _Message(self._holder.current)
            self._log.queue_id = self._conn.macro("i") or "NOQUEUE"
        return self._message

    def _on_header(self, event: milter.Header) -> HandlerResult:
        msg = self._message_state()
        value = event.value
        rules = msg.runtime.config.replace_rules
        if rules is not None:  # ReplaceRules: only our copy changes, never the message
            value = rules.rewrite(event.name, value)
        msg.headers.append(HeaderField(event.name, _crlf(value)))
        return None

    def _on_eoh(self, event: milter.EndOfHeaders) -> Step:
        msg = self._message_state()
        self._log.queue_id = self._conn.macro("i") or self._log.queue_id
        runtime = msg.runtime
        bad = malformed.check_sender(msg.headers, runtime.config)
        if bad is not None:
            return self._bad_format(msg, bad)
        plan = runtime.policy.plan(self._client, msg.headers, self._conn.macro)
        msg.plan = plan
        if plan.notable:
            self._log.info(plan.why)  # no args: no %-formatting of the text itself
        if plan.decision is Decision.NOTHING:
            if runtime.config.log_why:
                self._log.info("%s; not signing or verifying", plan.why)
            self._drop_message()
            return milter.Accept()
        problem = malformed.check_processing(
            msg.headers, runtime.config, verifying=plan.decision is Decision.VERIFY
        )
        if isinstance(problem, malformed.BrokenSignature):
            return self._broken_signature(msg, problem)
        if problem is not None:
            return self._bad_format(msg, problem)
        if plan.decision is Decision.SIGN:
            self._start_signing(msg, plan)
        else:
            if runtime.config.log_why and plan.why and not plan.notable:
                self._log.info("%s; verifying", plan.why)
            wanted = self._start_verifying(msg)
            if wanted is not None:
                return Prefetch(wanted)
        return None

    def _on_body(self, event: milter.BodyChunk) -> HandlerResult:
        msg = self._message
        if msg is None:
            return None
        if msg.signer is not None:
            msg.signer.feed_body(event.data)
            return None
        if msg.verifier is not None:
            msg.verifier.feed_body(event.data)
            body = msg.report_body
            if body is not None:
                body += event.data
                if len(body) > reports.BODY_COPY_LIMIT:
                    msg.report_body = None
            if msg.verifier.needs_body():
                return None
        elif msg.bad_format is None and msg.settled is None:
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
        if msg is None or (msg.plan is None and msg.bad_format is None):
            # No headers at all (an empty message): nothing to sign; verify an empty header
            # block the same way as any other message.
            msg = self._message_state()
            self._on_eoh(milter.EndOfHeaders())
            msg = self._message
            if msg is None:
                return milter.Accept()
        if msg.settled is not None or msg.bad_format is not None:
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
            if msg.signer is not None or msg.key_problems:
                return self._finish_signing(msg)
            return self._with_report(msg, self._finish_verifying(msg))
        except Exception:
            return self._internal_error(msg)
        finally:
            self._drop_message()

    def _internal_error(self, msg: _Message) -> HandlerResult:
        self._stats.errors += 1
        self._log.exception("internal error while processing message")
        return self._apply(msg.runtime, Condition.INTERNAL_ERROR, "internal error")

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

    def _failure_report(self, msg: _Message) -> reports.SendReport | None:
        verifier = msg.verifier
        body = msg.report_body
        if verifier is None or body is None:
            return None
        results = verifier.results()
        if any(r.passed for r in results):
            return None
        first = results[0]
        found = verifier.signature(0)
        if found is None:
            return None
        sig, header_data = found
        record = msg.report_records.get(reports.report_record_name(sig.domain))
        txt = record.records[0] if record is not None and record.ok and record.records else None
        report = reports.report_for(first.error, sig.tags, txt)
        if report is None:
            return None
        config = msg.runtime.config
        from_text, address, unparsed = reports.report_address(config.report_address)
        if unparsed:
            self._log.warning("error parsing ReportAddress; using default")
        canonical_body = canonicalize_body(bytes(body), sig.body_canon)
        if sig.body_length is not None:
            canonical_body = canonical_body[: sig.body_length]
        negotiated = self._conn.negotiated
        text = reports.report_text(
            report,
            from_text=from_text,
            bcc=config.report_bcc_address,
            jobid=self._conn.macro("i") or "(unknown-jobid)",
            hostname=self._mta_name or self._conn.macro("j") or "unknown-host",
            envelope_sender=self._envelope_sender,
            client_ip=self._client.address or "",
            headers=msg.headers,
            canonical_header=header_data,
            canonical_body=canonical_body,
            leading_space=negotiated is not None and negotiated.leading_space,
        )
        self._log.info("sending failure report to %s", report.recipient)
        return reports.SendReport(config.mta_command, address, text)

    # -- stopped at end-of-headers (dkimd.malformed) --

    def _bad_format(self, msg: _Message, bad: malformed.BadFormat) -> HandlerResult:
        msg.bad_format = bad
        self._log.info("%s; bad message format", bad.reason)
        return None

    def _broken_signature(self, msg: _Message, broken: malformed.BrokenSignature) -> HandlerResult:
        action = msg.runtime.policy.action_for(Condition.BAD_SIGNATURE)
        self._log.info("syntax error: %s; action %s", broken.reason, action.value)
        reply = malformed.libstatus_reply(action, malformed.SYNTAX_ERROR_TEXT)
        if self._conn.reply_expected:
            self._drop_message()
            return reply
        msg.settled = reply
        return None

    def _finish_early(self, msg: _Message) -> HandlerResult:
        if msg.settled is not None:
            return msg.settled
        bad = msg.bad_format
        assert bad is not None
        config = msg.runtime.config
        if config.ignore_malformed_mail:
            return milter.Accept()
        authserv_id = msg.runtime.authserv_id(self._mta_name or self._conn.macro("j"))
        actions: list[milter.Action] = []
        if bad.verifying:
            actions += self._remove_forged_results(msg.headers, authserv_id)
        value = malformed.bad_format_ar_value(authserv_id)
        actions.append(_insert_at_top(AR_FIELD_NAME, value))
        actions.append(milter.Accept())
        return actions

    # -- signing --

    def _start_signing(self, msg: _Message, plan: MessagePlan) -> None:
        msg.key_problems = plan.key_problems
        msg.signing = plan.requests
        if plan.requests:
            msg.signer = Signer(*plan.requests)

    def _finish_signing(self, msg: _Message) -> HandlerResult:
        runtime = msg.runtime
        config = runtime.config
        for problem in msg.key_problems:
            self._log.error("%s", problem.message)
        if msg.signer is None:
            self._stats.errors += 1
            condition = (
                msg.key_problems[0].condition if msg.key_problems else Condition.INTERNAL_ERROR
            )
            # The reply names the key, not its file: paths and reasons stay in our log.
            detail = f"key {msg.key_problems[0].key_name}" if msg.key_problems else ""
            return self._apply(runtime, condition, detail)
        fields = msg.signer.sign_all(msg.headers)
        actions: list[milter.Action] = []
        if config.remove_old_signatures:
            count = sum(1 for h in msg.headers if h.key == _DKIM_SIGNATURE_KEY)
            actions += [milter.ChangeHeader(i, _DKIM_SIGNATURE, b"") for i in range(count, 0, -1)]
        # Insert in reverse so the first request's signature ends up on top.
        for request, sig in reversed(list(zip(msg.signing, fields, strict=True))):
            actions.append(_insert_at_top(sig.name, sig.value))
            if config.syslog_success:
                self._log.info(
                    "DKIM-Signature field added (s=%s, d=%s)", request.selector, request.domain
                )
        self._stats.signed += 1
        actions += self._software_header(runtime)
        actions.append(milter.Continue())
        return actions

    # -- verifying --

    def _start_verifying(self, msg: _Message) -> NeedKeys | None:
        """Build the verifier; the key records it still needs, if any, as a request."""
        runtime = msg.runtime
        verifier = Verifier(msg.headers, runtime.verify_options)
        msg.verifier = verifier
        names = verifier.key_queries()
        if not names:
            return None
        names += self._report_names(msg, verifier)
        wanted = runtime.key_request(names)
        known = wanted.answer_now()
        if known is not None:  # all cached, the usual case on a busy server
            self._take_keys(msg, known)
            return None
        msg.keys_wanted = wanted
        return wanted

    def _take_keys(self, msg: _Message, records: KeyRecords) -> None:
        verifier = msg.verifier
        assert verifier is not None
        for name, result in records.items():
            if not result.ok and result.detail:
                self._log.info("key lookup %s: %s (%s)", name, result.status.value, result.detail)
            verifier.provide_key(name, result)
            if msg.report_body is not None and name in msg.report_records:
                msg.report_records[name] = result
        msg.keys_wanted = None

    def _finish_verifying(self, msg: _Message) -> HandlerResult:
        runtime = msg.runtime
        config = runtime.config
        verifier = msg.verifier
        assert verifier is not None
        results = verifier.results()
        self._stats.verified += 1
        authserv_id = runtime.authserv_id(self._mta_name or self._conn.macro("j"))
        actions: list[milter.Action] = self._remove_forged_results(msg.headers, authserv_id)
        unsigned = results[0].result is DkimResult.NONE
        if not unsigned or config.always_add_ar_header:
            value = authentication_results_value(authserv_id, results)
            actions.append(_insert_at_top(AR_FIELD_NAME, value))
        actions += self._software_header(runtime)
        self._log_results(config, results)
        condition = runtime.policy.condition_for(results)
        if any(r.passed for r in results):
            self._stats.passed += 1
        elif not unsigned:
            self._stats.failed += 1
        if condition is None:
            actions.append(milter.Continue())
            return actions
        detail = _describe(results)
        final = self._apply(runtime, condition, detail)
        if final is None:
            return actions
        if isinstance(final, milter.Action):
            return [*actions, final]
        return [*actions, *final]

    def _remove_forged_results(
        self, headers: Sequence[HeaderField], authserv_id: str
    ) -> list[milter.Action]:
        """Delete incoming Authentication-Results that claim to be ours (RFC 8601 section 5).

        The index is the field's position among fields of the same name, as the milter
        protocol counts; deleting from the last one keeps earlier indexes valid whatever
        the MTA does with the gaps.
        """
        doomed = forged_result_indexes(headers, authserv_id)
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

    def _software_header(self, runtime: Runtime) -> list[milter.Action]:
        """SoftwareHeader: a DKIM-Filter field naming us, as OpenDKIM adds one naming itself."""
        if not runtime.config.software_header:
            return []
        text = f" dkimd v{__version__} {runtime.hostname} {self._log.queue_id}"
        return [_insert_at_top(b"DKIM-Filter", _one_line(text).encode("utf-8"))]

    def _apply(self, runtime: Runtime, condition: Condition, detail: str) -> HandlerResult:
        action = runtime.policy.action_for(condition)
        text = _CONDITION_TEXT[condition]
        if detail:
            text = f"{text}: {detail}"
        text = _one_line(text)
        if runtime.config.log_why or action is not Action.ACCEPT:
            self._log.info("%s; action %s", text, action.value)
        if action is Action.ACCEPT:
            return milter.Continue()
        if action is Action.REJECT:
            code, enhanced = _REJECT_CODES[condition]
            return milter.ReplyCode(code, enhanced, text)
        if action is Action.TEMPFAIL:
            return milter.ReplyCode(451, "4.7.1", text)
        if action is Action.DISCARD:
            return milter.Discard()
        return [milter.Quarantine(text), milter.Continue()]

    def _drop_message(self) -> None:
        self._message = None


def _describe(results: Sequence[SignatureResult]) -> str:
    first = results[0]
    if first.result is DkimResult.NONE:
        return ""
    where = f"d={first.domain} s={first.selector}" if first.domain else "signature"
    return f"{where}: {first.result.value}, {first.reason}" if first.reason else where


def _one_line(text: str) -> str:
    # Reply text must not carry CR, LF or NUL from a hostile signature (header injection).
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return cleaned[:400]


def filter_options_for(config: Config) -> milter.FilterOptions:
    """What to ask the MTA for, given what this configuration can ever do.

    Every milter reply is a loopback round trip that wakes both processes, and a message
    that is only signed or verified needs none before end-of-message. So: no replies to
    HELO, MAIL, RCPT, DATA, unknown commands, headers or body chunks; no reply at
    connect unless a PeerList may turn a client away there; none at end-of-headers when
    Mode has v (with v every message is verified or signed, so we never accept early).
    Header values keep their leading space (v6), so simple canonicalization sees the field
    exactly as sent.
    """
    flags = milter.ProtocolFlag
    protocol = (
        flags.HDR_LEADSPC
        | flags.NOHELO
        | flags.NORCPT
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
    if len(config.peer_list) == 0:
        protocol |= flags.NR_CONN
    if config.verifies:
        # Body chunks are answered, so that a message with nothing (more) to verify is
        # skipped as OpenDKIM skips it.
        protocol = (protocol & ~flags.NR_BODY) | flags.SKIP
        if not malformed.eoh_reply_needed(config):
            protocol |= flags.NR_EOH
    actions = milter.ActionFlag.ADDHDRS | milter.ActionFlag.CHGHDRS | milter.ActionFlag.QUARANTINE
    return milter.FilterOptions(actions=actions, protocol=protocol)


def handler_factory(
    holder: RuntimeHolder, stats: SessionStats
) -> Callable[[ConnectionInfo], MilterSession]:
    def make(info: ConnectionInfo) -> MilterSession:
        return MilterSession(info, holder, stats)

    return make


__all__ = [
    "MilterSession",
    "Runtime",
    "RuntimeHolder",
    "SessionStats",
    "filter_options_for",
    "handler_factory",
]
