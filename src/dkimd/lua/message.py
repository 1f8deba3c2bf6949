"""What the policy scripts do to one message: the session's side of dkimd.lua.

`LuaMessage` is made at end-of-headers for a message under a configuration with scripts
(never otherwise: no cost per message without scripts). The session calls `setup` there,
`screen` before the signatures are verified, and `finish` with its end-of-message actions,
which runs the statistics and final scripts and applies what they ask for.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from dkimd import milter
from dkimd.config import Condition, Config
from dkimd.dkim import (
    DkimResult,
    HeaderField,
    SignatureField,
    SignatureResult,
    SigningRequest,
    VerifyError,
)
from dkimd.lua.api import (
    SIGBH_MATCH,
    SIGBH_MISMATCH,
    SMFIS,
    Effects,
    HookKind,
    MessageFacts,
    SigInfo,
    SignSpec,
)
from dkimd.lua.hooks import HookFailure, PolicyScripts
from dkimd.policy import Client, Decision, MessagePlan, SigningPolicy
from dkimd.replies import DkimStatus, final_reply

__all__ = ["LuaMessage", "sig_error_of"]

# DKIM_SIGERROR_* (libopendkim dkim.h) for the verifier's outcomes.
_SIG_ERRORS: dict[VerifyError, int] = {
    VerifyError.SIGNATURE_SYNTAX: 32,
    VerifyError.EXPIRED: 3,
    VerifyError.KEY_NOT_FOUND: 22,
    VerifyError.KEY_NOT_RETRIEVED: 24,
    VerifyError.KEY_QUERY_TEMPFAIL: 24,
    VerifyError.KEY_QUERY_FAILED: 24,
    VerifyError.KEY_SYNTAX: 23,
    VerifyError.KEY_MISSING: 43,
    VerifyError.KEY_REVOKED: 42,
    VerifyError.KEY_TYPE_MISMATCH: 41,
    VerifyError.KEY_HASH_REFUSED: 37,
    VerifyError.KEY_NOT_FOR_EMAIL: 38,
    VerifyError.KEY_STRICT_IDENTITY: 29,
    VerifyError.KEY_TOO_SHORT: 46,
    VerifyError.KEY_BELOW_MINIMUM: 46,
    VerifyError.SIGNATURE_MISMATCH: 28,
    VerifyError.SHA1_REFUSED: 10,
    VerifyError.MULTIPLE_FROM: 28,
    VerifyError.BODY_TRUNCATED: 33,
    VerifyError.UNSIGNED_CONTENT: 28,
}

_SMFIS_ACTIONS: dict[int, Callable[[], milter.FinalAction]] = {
    SMFIS["SMFIS_ACCEPT"]: milter.Accept,
    SMFIS["SMFIS_REJECT"]: milter.Reject,
    SMFIS["SMFIS_DISCARD"]: milter.Discard,
    SMFIS["SMFIS_TEMPFAIL"]: milter.TempFail,
}


def sig_error_of(result: SignatureResult) -> tuple[int, int]:
    """(DKIM_SIGERROR_*, DKIM_SIGBH_*) for a verified signature."""
    if result.passed:
        return 0, SIGBH_MATCH
    if result.error is VerifyError.BODY_HASH_MISMATCH:
        return 28, SIGBH_MISMATCH  # observed: DKIM_SIGERROR_BADSIG, DKIM_SIGBH_MISMATCH
    if result.error is None:
        return 0, SIGBH_MATCH
    if result.error is VerifyError.SIGNATURE_MISMATCH:
        return 28, SIGBH_MATCH  # the body hash was checked first, and held
    return _SIG_ERRORS.get(result.error, -1), -1


class LuaMessage:
    """The scripts' view of one message and what they asked for so far."""

    __slots__ = ("effects", "facts", "log", "scripts")

    def __init__(
        self,
        scripts: PolicyScripts,
        facts: MessageFacts,
        log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
    ) -> None:
        self.scripts = scripts
        self.facts = facts
        self.effects = Effects()
        self.log = log

    @classmethod
    def start(
        cls,
        config: Config,
        policy: SigningPolicy,
        plan: MessagePlan,
        headers: list[HeaderField],
        client: Client,
        envelope_sender: str,
        recipients: list[str],
        macro: Callable[[str], str | None],
        log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
    ) -> LuaMessage:
        """The scripts' view of a message at end-of-headers: `headers` is the session's own
        list (odkim.replace_header edits it), `plan` what the tables decided."""
        scripts = config.policy_scripts
        assert scripts is not None
        sender_domain = plan.sender.rpartition("@")[2] if plan.sender else None

        def resolve_key(name: str | None, signer: str | None) -> object | None:
            made = policy.keys.for_key_name(name, signer, sender_domain or "")
            return made if isinstance(made, SigningRequest) else None

        facts = MessageFacts(
            headers,
            config,
            client_address=client.address,
            client_hostname=client.hostname,
            envelope_sender=envelope_sender,
            recipients=recipients,
            macro=macro,
            internal=policy.is_internal(client),
            from_domain=sender_domain,
            resolve_key=resolve_key,
        )
        return cls(scripts, facts, log)

    def _run(self, kind: str) -> HookFailure | None:
        failure = self.scripts.run(kind, self.facts, self.effects, self._script_log)
        if failure is not None:
            self.log.error(
                "dkimf_lua_%s_hook() failed: %s (%s)",
                kind,
                failure.message,
                self.scripts.path(kind),
            )
        return failure

    def _script_log(self, text: str) -> None:
        self.log.info("%s", text)

    def _failed(self, failure: HookFailure, policy: SigningPolicy) -> milter.FinalAction:
        if failure.limit:
            return milter.TempFail()
        return final_reply(policy.action_for(Condition.INTERNAL_ERROR), DkimStatus.INTERNAL)

    # -- setup (end of headers) --

    def setup(
        self, plan: MessagePlan, policy: SigningPolicy
    ) -> tuple[MessagePlan, milter.FinalAction | None]:
        """Run the setup script: the message's plan as it leaves it, or a verdict."""
        if not self.scripts.has(HookKind.SETUP):
            return plan, None
        failure = self._run(HookKind.SETUP)
        if failure is not None:
            return plan, self._failed(failure, policy)
        effects = self.effects
        if effects.result is not None:
            return plan, _SMFIS_ACTIONS[effects.result]()
        if effects.requests:
            # Script requests replace the SigningTable's (OpenDKIM applies the table only
            # when the setup script asked for no signature).
            requests = [
                self._shaped(i, made, spec) for i, (made, spec) in enumerate(effects.requests)
            ]
            return MessagePlan(Decision.SIGN, "setup script", plan.sender, requests), None
        if effects.use_ltag and plan.decision is Decision.SIGN:
            # l= on every signature, the SigningTable's included (OpenDKIM's mctx_ltag).
            requests = [dataclasses.replace(r, body_length=True) for r in plan.requests]
            plan = MessagePlan(Decision.SIGN, plan.why, plan.sender, requests)
        if effects.verify and plan.decision is not Decision.VERIFY:
            why = "setup script asked for verification"
            return MessagePlan(Decision.VERIFY, why, plan.sender), None
        return plan, None

    def _shaped(self, index: int, made: object, spec: SignSpec) -> SigningRequest:
        """Request `index` with what the script added: l= (use_ltag, a length), xtags."""
        assert isinstance(made, SigningRequest)
        effects = self.effects
        length = spec.length
        changes: dict[str, object] = {}
        if effects.use_ltag or length is not None:
            changes["body_length"] = True
        if length is not None:
            changes["max_body_bytes"] = length
        xtags = tuple((tag, value) for tag, value, count in effects.xtags if index < count)
        if xtags:
            changes["extension_tags"] = made.extension_tags + xtags
        return dataclasses.replace(made, **changes) if changes else made  # type: ignore[arg-type]

    # -- screen (before verification) --

    def screen(
        self, signatures: Sequence[SignatureField], policy: SigningPolicy
    ) -> tuple[list[SignatureField], milter.FinalAction | None]:
        """Run the screen script: the signatures left to verify, or a verdict."""
        kept = list(signatures)
        if not self.scripts.has(HookKind.SCREEN):
            return kept, None
        self.facts.signatures = [_screen_info(i, s) for i, s in enumerate(signatures)]
        failure = self._run(HookKind.SCREEN)
        if failure is not None:
            return kept, self._failed(failure, policy)
        ignored = self.effects.ignored
        return [s for i, s in enumerate(kept) if i not in ignored], None

    # -- statistics and final (end of message) --

    def finish(
        self,
        actions: list[milter.Action],
        results: Sequence[SignatureResult],
        policy: SigningPolicy,
    ) -> list[milter.Action]:
        """Run the statistics and final scripts over the end-of-message `actions` (the
        last one final), and apply what they ask for."""
        scripts = self.scripts
        if not (scripts.has(HookKind.STATISTICS) or scripts.has(HookKind.FINAL)):
            return actions
        self.facts.signatures = [
            _result_info(i, r) for i, r in enumerate(results) if r.result is not DkimResult.NONE
        ]
        if scripts.has(HookKind.STATISTICS):
            failure = self._run(HookKind.STATISTICS)
            for name, value in self.effects.stats:
                self.log.info("statistic %s=%s", name, value)
            if failure is not None:
                return [self._failed(failure, policy)]
        if not scripts.has(HookKind.FINAL):
            return actions
        failure = self._run(HookKind.FINAL)
        if failure is not None:
            return [self._failed(failure, policy)]
        return self._apply_final(actions)

    def _apply_final(self, actions: list[milter.Action]) -> list[milter.Action]:
        effects = self.effects
        *changes, final = actions
        assert isinstance(final, milter.FinalAction)
        if effects.result is not None:
            final = _SMFIS_ACTIONS[effects.result]()
        if effects.reply is not None and isinstance(
            final, (milter.Reject, milter.TempFail, milter.ReplyCode)
        ):
            rcode, xcode, text = effects.reply
            final = milter.ReplyCode(int(rcode), xcode, text)
        for name, value in effects.add_headers:
            changes.append(milter.AddHeader(name.encode("latin-1"), b" " + value.encode("latin-1")))
        for name, n in effects.del_headers:
            if n >= 0:
                changes.append(milter.ChangeHeader(n + 1, name.encode("latin-1"), b""))
        for address in effects.add_rcpts:
            changes.append(milter.AddRecipient(address))
        for address in effects.del_rcpts:
            changes.append(milter.DeleteRecipient(address))
            changes.append(
                milter.AddHeader(b"X-Original-Recipient", b" " + address.encode("latin-1"))
            )
        return [*changes, final]


def _screen_info(index: int, sig: SignatureField) -> SigInfo:
    tags = sig.tags or {}
    domain = tags.get("d")
    identity = tags.get("i")
    return SigInfo(
        index,
        domain.strip() if isinstance(domain, str) else None,
        identity.strip() if isinstance(identity, str) else None,
    )


def _result_info(index: int, result: SignatureResult) -> SigInfo:
    error, bh = sig_error_of(result)
    identity = result.identity
    return SigInfo(
        index,
        result.domain,
        identity if identity and not identity.startswith("@") else None,
        sig_error=error,
        bh_result=bh,
    )
