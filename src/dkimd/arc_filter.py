"""ARC in the milter (RFC 8617; options in dkimd.config.arc): one `ArcMessage` per message
the session hands over at end-of-headers, sans-IO like the session itself.

* Verify: the chain is validated with the key records the session fetches with the DKIM
  keys (one request), and a second Authentication-Results field carries the result:
  ``arc=pass header.oldest-pass=0 smtp.remote-ip=192.0.2.1``. The DKIM field stays as
  OpenDKIM writes it.
* Seal: after our own verification, the next ARC set goes on top of the message as it leaves
  (our DKIM-Signature and A-R fields included, fields we delete left out). Its
  ARC-Authentication-Results records our dkim= results, the spf= and dmarc= results the MTA's
  other filters wrote under our own authserv-id (the only A-R fields we trust), and the arc=
  result. The key is the KeyTable entry `ArcKey` names, or Domain/Selector/KeyFile's.
* One body pass: the chain's AMS hashes, the seal's AMS hash and the hashes of the DKIM
  signer or verifier live in one `BodyHashSet`, fed by that signer or verifier.
* OpenARC's options (dkimd.config.arc): SealHeaderChecks chooses the messages that get ARC
  work at all; PermitAuthenticationOverrides lets the arc= result of our own authserv-id's
  A-R field stand for the chain state when sealing; FinalReceiver adds arc.chain to the
  arc= result; AuthResIP (default yes) its smtp.remote-ip.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from dkimd import milter
from dkimd.arc import (
    ArcError,
    ArcResult,
    ArcSealer,
    ArcSet,
    ArcVerifier,
    ArcVerifyOptions,
    ChainState,
    SealRequest,
    arc_ar_item,
)
from dkimd.arc.header_checks import first_match
from dkimd.authres import authserv_id_of, plain_marks
from dkimd.config import Config
from dkimd.config.arc import ArcSettings
from dkimd.dkim import (
    AR_FIELD_NAME,
    BodyHashSet,
    DkimError,
    HeaderField,
    SignatureResult,
    SigningRequest,
    b_prefixes,
    format_result,
)
from dkimd.dns.base import TxtResult

__all__ = [
    "ArcMessage",
    "chain_domains",
    "copied_results",
    "outgoing_headers",
    "override_state",
    "start",
]

_AR_KEY = AR_FIELD_NAME.lower()
#: What a sealer copies from trusted A-R fields into its AAR (RFC 8617 4.1.1: "the combined
#: authres-payload with all of the authentication results from within the participating
#: ADMD"): the methods of IANA's Email Authentication Methods registry, as OpenARC copies the
#: methods its parser knows. arc= is ours to say; dkim= too when dkimd verified the message.
_COPIED_METHODS = frozenset(
    {
        "auth",
        "dkim",
        "dkim-adsp",
        "dkim-atps",
        "dmarc",
        "dnswl",
        "domainkeys",
        "iprev",
        "rrvs",
        "sender-id",
        "smime",
        "spf",
        "vbr",
    }
)
#: Chain failures an Authentication-Results arc= result may not overturn: no chain, or one
#: dead on arrival (RFC 8617 5.1.3: "Once broken, the chain cannot be continued").
_FINAL = frozenset({ArcError.STRUCTURE, ArcError.CV_FAIL, ArcError.CV_INVALID})
#: Body hashes a new AMS can share (canonicalization, hash, no l=), in order of preference.
_SHAREABLE_BODIES: tuple[tuple[str, str, int | None], ...] = (
    ("relaxed", "sha256", None),
    ("simple", "sha256", None),
)
_RESULT = re.compile(r"\s*([A-Za-z]+)")
_MAX_COPIED = 8  # items taken from trusted fields: a flood of them is not a record
_MAX_ITEM = 512  # characters of one copied item


class ArcMessage:
    """One message's ARC work. `seal` says whether it is to be sealed."""

    def __init__(
        self,
        settings: ArcSettings,
        config: Config,
        headers: Sequence[HeaderField],
        *,
        seal: bool,
        report: bool,
    ) -> None:
        """`seal`: add the next set; `report`: add the arc= A-R field (ArcMode v, on a
        message dkimd verifies)."""
        self.settings = settings
        self.seal = seal
        self.report = report
        self.bodies = BodyHashSet(fix_crlf=config.fix_crlf)
        self._shared = False
        self._seal_body: tuple[str, str, int | None] | None = None
        options = ArcVerifyOptions(
            max_instances=settings.maximum_sets,
            clock_skew=config.clock_drift,
            fix_crlf=config.fix_crlf,
        )
        self.verifier = ArcVerifier(headers, options, bodies=self.bodies)

    def seal_body_key(self) -> tuple[str, str, int | None]:
        """The body hash the new AMS uses: one the DKIM signer, the DKIM verifier or the
        chain already computes if there is one (relaxed, else simple, sha256, whole body),
        so that sealing adds no body pass; else relaxed, registered now. Called before the
        first body byte (the session hands each chunk to ArcMessage first)."""
        if self._seal_body is None:
            for key in _SHAREABLE_BODIES:
                try:
                    self.bodies[key]
                except KeyError:
                    continue
                self._seal_body = key
                break
            else:
                self._seal_body = _SHAREABLE_BODIES[0]
                self.bodies.add(self._seal_body)
        return self._seal_body

    def shared_bodies(self) -> BodyHashSet | None:
        """The body hash set, for the first DKIM signer or verifier that asks to feed (and
        share) from now on; None to any later one, which hashes for itself: two feeders of
        one set would hash the body twice over."""
        if self._shared:
            return None
        self._shared = True
        return self.bodies

    def key_queries(self) -> list[str]:
        return self.verifier.key_queries()

    def provide_key(self, name: str, result: TxtResult) -> None:
        self.verifier.provide_key(name, result)

    def feed_body(self, chunk: bytes) -> None:
        if self.seal:
            self.seal_body_key()  # before the first byte reaches any hasher
        if not self._shared:
            self.bodies.update(chunk)

    def result(self) -> ArcResult:
        return self.verifier.result()

    def needs_body(self) -> bool:
        """Whether the body still matters: always to a seal (its AMS hashes it), and to the
        chain unless it failed on its fields alone."""
        return self.seal or self.verifier.needs_body()

    def finish(
        self,
        actions: list[milter.Action],
        headers: Sequence[HeaderField],
        *,
        authserv_id: str,
        trusted_id: str,
        remote_ip: str | None,
        dkim_results: Sequence[SignatureResult] | None,
        seal_key: Callable[[], SigningRequest | str],
        log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
    ) -> list[milter.Action]:
        """`actions` (the session's reply, its final action last) with the arc= A-R field
        and, when sealing, the new ARC set inserted before the final action. A reply that
        does not deliver the message is returned as it is."""
        if not actions or not isinstance(actions[-1], milter.Accept | milter.Continue):
            return actions
        chain = self.result()
        if chain.reason:
            log.info("ARC chain %s: %s", chain.state.value, chain.reason)
        # The header block as the MTA keeps it: forged A-R fields we delete are not trusted.
        kept = outgoing_headers(headers, [a for a in actions if isinstance(a, milter.ChangeHeader)])
        settings = self.settings
        if self.seal and settings.permit_overrides:
            # OpenARC applies an override only where it seals (mlfi_eom, ARC_MODE_SIGN).
            chain = self._override(chain, kept, trusted_id, log)
        item = arc_ar_item(chain, remote_ip if settings.auth_res_ip else None)
        added: list[milter.Action] = []
        if self.report:
            reported = item
            if settings.final_receiver and chain.state is ChainState.PASS:
                domains = chain_domains(self.verifier.collected.sets)
                if domains and all("!" <= c <= "~" and c not in '"\\' for c in domains):
                    reported += " arc.chain=" + (f'"{domains}"' if ":" in domains else domains)
            added.append(_insert(AR_FIELD_NAME, f"{authserv_id}; {reported}".encode("ascii")))
        if self.seal:
            added += self._seal(actions, kept, chain, item, trusted_id, dkim_results, seal_key, log)
        return [*actions[:-1], *added, actions[-1]]

    def _override(
        self,
        chain: ArcResult,
        kept: Sequence[HeaderField],
        trusted_id: str,
        log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
    ) -> ArcResult:
        """PermitAuthenticationOverrides: the chain state our own A-R field records."""
        claimed = override_state(kept, trusted_id)
        if claimed is None or claimed is chain.state:
            return chain
        if chain.state is ChainState.NONE or chain.error in _FINAL:
            log.info(
                "ARC: Authentication-Results says arc=%s; not applied to a chain that is %s",
                claimed.value,
                "absent" if chain.state is ChainState.NONE else "broken",
            )
            return chain
        log.info(
            "ARC chain state forced to %s by a prior Authentication-Results (was %s%s)",
            claimed.value,
            chain.state.value,
            f": {chain.reason}" if chain.reason else "",
        )
        if claimed is ChainState.PASS:
            # Which AMS still verifies is not known from an A-R field: no oldest-pass.
            return replace(chain, state=claimed, error=None, detail="", oldest_pass=None)
        return replace(
            chain, state=claimed, detail=f"{trusted_id} Authentication-Results", oldest_pass=None
        )

    def _seal(
        self,
        actions: Sequence[milter.Action],
        headers: Sequence[HeaderField],
        chain: ArcResult,
        item: str,
        trusted_id: str,
        dkim_results: Sequence[SignatureResult] | None,
        seal_key: Callable[[], SigningRequest | str],
        log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
    ) -> list[milter.Action]:
        key = seal_key()
        if isinstance(key, str):
            log.warning("ARC: not sealed: %s", key)
            return []
        try:
            request = SealRequest(
                key.domain,
                key.selector,
                key.key,
                trusted_id,
                signed_headers=self.settings.sign_headers,
                body_canon=self.seal_body_key()[0],
            )
        except DkimError as exc:
            log.warning("ARC: not sealed: %s", exc.reason)
            return []
        items: list[str] = []
        if dkim_results is not None:
            prefixes = b_prefixes(dkim_results)
            items += [format_result(r, p) for r, p in zip(dkim_results, prefixes, strict=True)]
        items += copied_results(headers, trusted_id, own_dkim=dkim_results is not None)
        items.append(item)
        sealer = ArcSealer(request, bodies=self.bodies)
        inserted = [a for a in actions if isinstance(a, milter.InsertHeader)]
        fields = sealer.seal(
            outgoing_headers(headers, inserted),
            chain,
            "; ".join(items),
            sets=self.verifier.collected.sets,
        )
        if not fields:
            log.info("ARC: not sealed: %s", sealer.refusal)
            return []
        log.info(
            "ARC set i=%d added (d=%s, s=%s, cv=%s)",
            chain.highest + 1,
            key.domain,
            key.selector,
            chain.state.value,
        )
        # Each goes on top: AAR first, so that AS ends on top (top-down AS, AMS, AAR).
        return [_insert(f.name, f.value) for f in reversed(fields)]


def _insert(name: bytes, value: bytes) -> milter.InsertHeader:
    """As the session inserts its fields: at the top, folded with bare LF (smfi_insheader)."""
    return milter.InsertHeader(0, name, b" " + value.lstrip(b" ").replace(b"\r\n", b"\n"))


def outgoing_headers(
    headers: Sequence[HeaderField], actions: Sequence[milter.Action]
) -> list[HeaderField]:
    """The header block as the MTA will have it after `actions`: fields changed or deleted
    (ChangeHeader, by name and 1-based index) and fields inserted at the top."""
    fields = list(headers)
    top: list[HeaderField] = []
    for action in actions:
        if isinstance(action, milter.ChangeHeader):
            key = action.name.lower()
            positions = [i for i, f in enumerate(fields) if f.key == key]
            index = max(action.index, 1) - 1  # Postfix reads 0 as 1
            if index < len(positions):
                at = positions[index]
                if action.value:
                    fields[at] = HeaderField(fields[at].name, _crlf(action.value))
                else:
                    del fields[at]
        elif isinstance(action, milter.InsertHeader) and action.index == 0:
            top.insert(0, HeaderField(action.name, _crlf(action.value)))
    return [*top, *fields]


def _crlf(value: bytes) -> bytes:
    return value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def copied_results(
    headers: Sequence[HeaderField], trusted_id: str, *, own_dkim: bool = True
) -> list[str]:
    """The resinfo items of registered methods (spf=, dmarc=, iprev=, ...) in the A-R fields
    whose authserv-id is ours, top-down, comments and all, each on one line. `own_dkim`:
    dkimd verified the message, and its dkim= results are the ones to record."""
    ours = trusted_id.lower()
    skipped = {"dkim"} if own_dkim else set()
    out: list[str] = []
    for h in headers:
        if h.key != _AR_KEY or authserv_id_of(h.value) != ours:
            continue
        for resinfo in _resinfos(h.value)[1:]:
            method = _method(resinfo)
            if (
                method in _COPIED_METHODS
                and method not in skipped
                and "=" in resinfo
                and len(resinfo) <= _MAX_ITEM
            ):
                out.append(resinfo)
                if len(out) >= _MAX_COPIED:
                    return out
    return out


def _method(resinfo: str) -> str:
    return resinfo.split("=", 1)[0].strip().split("/", 1)[0].strip().lower()


def override_state(headers: Sequence[HeaderField], trusted_id: str) -> ChainState | None:
    """The arc= result (pass or fail) of the topmost A-R field with our authserv-id that
    has one: what PermitAuthenticationOverrides lets stand for the chain state (OpenARC:
    "Only the most recent A-R header should matter"). None when there is none."""
    ours = trusted_id.lower()
    for h in headers:
        if h.key != _AR_KEY or authserv_id_of(h.value) != ours:
            continue
        for resinfo in _resinfos(h.value)[1:]:
            if _method(resinfo) != "arc" or "=" not in resinfo:
                continue
            # The result is a token, maybe followed by a comment or properties.
            result = _RESULT.match(resinfo.split("=", 1)[1])
            word = result[1].lower() if result else ""
            if word in ("pass", "fail"):
                return ChainState(word)
            return None  # an arc= result that is neither: no override from this field
    return None


def chain_domains(sets: Sequence[ArcSet]) -> str:
    """FinalReceiver's arc.chain value: the AMS d= of each set, newest first, ":"-separated
    (OpenARC's arc_chain_custody_str)."""
    return ":".join(s.ams.sig.domain.lower() for s in reversed(sets))


def _resinfos(value: bytes) -> list[str]:
    """An A-R value split at the ";" outside comments and quoted strings, each part on one
    line of printable ASCII (the authserv-id part first)."""
    text = "".join(c if " " <= c <= "~" else " " for c in value.decode("latin-1"))
    parts: list[str] = []
    current: list[str] = []
    for ch, plain in plain_marks(text):
        if ch == ";" and plain:
            parts.append(" ".join("".join(current).split()))
            current = []
        else:
            current.append(ch)
    parts.append(" ".join("".join(current).split()))
    return [p for p in parts if p]


def start(
    config: Config,
    headers: Sequence[HeaderField],
    *,
    client: tuple[str | None, str | None],
    recipients: Sequence[str],
    verifying: bool,
    log: logging.LoggerAdapter[logging.Logger] | logging.Logger | None = None,
) -> ArcMessage | None:
    """The ARC work for a message at end-of-headers, or None when there is none: ARC off,
    a message this configuration does not seal and dkimd does not verify (`verifying`:
    the DKIM verification path; mail dkimd only signs gets no arc= result), or one that no
    SealHeaderChecks line matches."""
    settings = config.arc
    if settings is None:
        return None
    seal = settings.seals and _sealed(settings, client, recipients)
    report = settings.verifies and verifying
    if not seal and not report:
        return None
    checks = settings.header_checks
    if checks is not None and first_match(checks, headers) is None:
        # OpenARC: "messages will only be processed by the filter if" a check matches.
        if log is not None:
            log.info("ARC: no seal header check matched; no ARC processing")
        return None
    return ArcMessage(settings, config, headers, seal=seal, report=report)


def _sealed(
    settings: ArcSettings, client: tuple[str | None, str | None], recipients: Sequence[str]
) -> bool:
    hosts, mail_to = settings.seal_hosts, settings.seal_mail_to
    if hosts is None and mail_to is None:
        return True
    if hosts is not None and hosts.matches(*client):
        return True
    if mail_to is not None:
        # The whole address, else its domain (what a forwarder lists: the domains it relays to).
        return any(r in mail_to or r.rpartition("@")[2] in mail_to for r in recipients)
    return False
