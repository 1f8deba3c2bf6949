"""Glue between milter events and DKIM work, one `MilterSession` per milter connection.

The session keeps what one SMTP session told us (client, auth, macros) and, per message,
the header fields, then at end-of-headers asks the policy what to do:

* sign: a `Signer` is fed body chunks as they arrive; at end-of-message its
  DKIM-Signature fields are inserted at the top;
* verify: a `Verifier` is built from the headers and its key lookups start at once, as
  asyncio tasks, so DNS overlaps the body transfer; at end-of-message the results become
  an Authentication-Results field and, through the On-* actions, the final reply.

Nothing here buffers the body. Runtime objects (config, policy, keys, resolver) come from
a `RuntimeHolder`, read at the start of each message, so a reload applies from the next
message on and never changes one half-way.
"""

from __future__ import annotations

import asyncio
import socket as socket_module
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dkimd import __version__, milter
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
)
from dkimd.dns.base import CachingTxtLookup, TxtLookup, TxtResult, TxtStatus
from dkimd.log import QueueIdAdapter, get_logger
from dkimd.policy import Client, Decision, MessagePlan, SigningPolicy
from dkimd.server import DEFER, ConnectionInfo, Defer, HandlerResult
from dkimd.signing_keys import KeyProblem, SigningKeys

_log = get_logger("session")

_AR_NAME_LOWER = AR_FIELD_NAME.lower()
_DKIM_SIGNATURE = b"DKIM-Signature"

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
    hostname: str = field(default_factory=socket_module.gethostname)
    # The resolver's memory, if it has one; a runtime Protocol check per message cost more
    # than the lookup it saves.
    cached_lookup: Callable[[str], TxtResult | None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if isinstance(self.resolver, CachingTxtLookup):
            object.__setattr__(self, "cached_lookup", self.resolver.cached)

    @classmethod
    def build(cls, config: Config, resolver: TxtLookup, *, check_uid: int | None = None) -> Runtime:
        keys = SigningKeys(config, check_uid=check_uid)
        options = VerifyOptions(
            max_signatures=config.maximum_signatures_to_verify,
            allow_sha1=config.allow_sha1,
            min_key_bits=config.minimum_key_bits,
        )
        return cls(config, SigningPolicy(config, keys), resolver, options)

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
        "headers",
        "key_problems",
        "lookups",
        "plan",
        "runtime",
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
        self.lookups: dict[str, asyncio.Task[TxtResult]] = {}
        self.started = time.monotonic()

    def cancel(self) -> None:
        for task in self.lookups.values():
            task.cancel()
        self.lookups.clear()


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
    """One milter connection (see dkimd.server.MilterHandler for the contract)."""

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
        self._handlers: dict[type[milter.Event], Callable[..., object]] = {
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

    async def handle(self, event: milter.Event) -> HandlerResult:
        handler = self._handlers.get(type(event))
        if handler is None:
            return None
        if isinstance(event, milter.EndOfMessage):
            return await self._on_eom(event)
        return handler(event)  # type: ignore[return-value]

    def handle_now(self, event: milter.Event) -> HandlerResult | Defer:
        """``handle`` without a coroutine for every event but end of message (DNS)."""
        handler = self._handlers.get(type(event))
        if handler is None:
            return None
        if isinstance(event, milter.EndOfMessage):
            return DEFER
        return handler(event)  # type: ignore[return-value]

    async def close(self) -> None:
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
        self._message_state().headers.append(HeaderField(event.name, _crlf(event.value)))
        return None

    def _on_eoh(self, event: milter.EndOfHeaders) -> HandlerResult:
        msg = self._message_state()
        self._log.queue_id = self._conn.macro("i") or self._log.queue_id
        runtime = msg.runtime
        plan = runtime.policy.plan(self._client, msg.headers, self._conn.macro)
        msg.plan = plan
        if plan.notable:
            self._log.info(plan.why)  # no args: no %-formatting of the text itself
        if plan.decision is Decision.NOTHING:
            if runtime.config.log_why:
                self._log.info("%s; not signing or verifying", plan.why)
            self._drop_message()
            return milter.Accept()
        if plan.decision is Decision.SIGN:
            self._start_signing(msg, plan)
        else:
            if runtime.config.log_why and plan.why and not plan.notable:
                self._log.info("%s; verifying", plan.why)
            self._start_verifying(msg)
        return None

    def _on_body(self, event: milter.BodyChunk) -> HandlerResult:
        msg = self._message
        if msg is None:
            return None
        if msg.signer is not None:
            msg.signer.feed_body(event.data)
        elif msg.verifier is not None:
            msg.verifier.feed_body(event.data)
        return None

    def _on_abort(self, event: milter.Event) -> HandlerResult:
        self._drop_message()
        return None

    async def _on_eom(self, event: milter.EndOfMessage) -> HandlerResult:
        msg = self._message
        if msg is None or msg.plan is None:
            # No headers at all (an empty message): nothing to sign; verify an empty header
            # block the same way as any other message.
            msg = self._message_state()
            self._on_eoh(milter.EndOfHeaders())
            msg = self._message
            if msg is None:
                return milter.Accept()
        if event.data:
            self._on_body(milter.BodyChunk(event.data))
        self._stats.messages += 1
        try:
            if msg.signer is not None or msg.key_problems:
                return self._finish_signing(msg)
            return await self._finish_verifying(msg)
        except Exception:
            self._stats.errors += 1
            self._log.exception("internal error while processing message")
            return self._apply(msg.runtime, Condition.INTERNAL_ERROR, "internal error")
        finally:
            self._drop_message()

    # -- signing --

    def _start_signing(self, msg: _Message, plan: MessagePlan) -> None:
        policy = msg.runtime.policy
        msg.key_problems = list(plan.key_problems)
        for key in plan.keys:
            try:
                msg.signing.append(policy.request_for(key))
            except Exception as exc:  # a bad request is a config/key problem, not a crash
                msg.key_problems.append(
                    KeyProblem(key.key_name, Condition.SIGNATURE_ERROR, str(exc))
                )
        if msg.signing:
            msg.signer = Signer(*msg.signing)

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
            count = sum(1 for h in msg.headers if h.name.strip().lower() == b"dkim-signature")
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

    def _start_verifying(self, msg: _Message) -> None:
        runtime = msg.runtime
        verifier = Verifier(msg.headers, runtime.verify_options)
        msg.verifier = verifier
        resolver = runtime.resolver
        cached = runtime.cached_lookup
        for name in verifier.key_queries():
            known = cached(name) if cached is not None else None
            if known is not None:
                verifier.provide_key(name, known)
            elif name not in msg.lookups:
                # Started now, so the lookup overlaps the body transfer.
                msg.lookups[name] = asyncio.ensure_future(resolver.lookup_txt(name))

    async def _finish_verifying(self, msg: _Message) -> HandlerResult:
        runtime = msg.runtime
        config = runtime.config
        verifier = msg.verifier
        assert verifier is not None
        for name, task in list(msg.lookups.items()):
            try:
                result = await task
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a resolver bug must not lose the message
                self._log.error("key lookup for %s failed: %s", name, exc)
                result = TxtResult(name, TxtStatus.ERROR, detail="lookup failed")
            if not result.ok and result.detail:
                self._log.info("key lookup %s: %s (%s)", name, result.status.value, result.detail)
            verifier.provide_key(name, result)
        msg.lookups.clear()
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
        ours = authserv_id.lower()
        doomed: list[int] = []
        index = 0
        for h in headers:
            if h.name.strip().lower() != _AR_NAME_LOWER:
                continue
            index += 1
            if _authserv_id_of(h.value) == ours:
                doomed.append(index)
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
        if self._message is not None:
            self._message.cancel()
            self._message = None


def _authserv_id_of(value: bytes) -> str:
    """The authserv-id of an Authentication-Results value, lower-cased (RFC 8601 2.2).

    The id is a token or a quoted-string, after optional CFWS. Any CR or LF counts as
    folding whitespace: Postfix passes bare ones through, and a forger must not be able to
    hide our id behind one.
    """
    text = value.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ").lstrip()
    while text.startswith("("):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                text = text[i + 1 :].lstrip()
                break
        else:
            return ""
    if text.startswith('"'):
        out: list[str] = []
        escaped = False
        for ch in text[1:]:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                return "".join(out).strip().lower()
            else:
                out.append(ch)
        return ""
    end = len(text)
    for stop in (";", " ", "\t", "("):
        pos = text.find(stop)
        if pos != -1:
            end = min(end, pos)
    return text[:end].lower()


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
