"""Adding the next ARC set (RFC 8617 section 5.1), sans-IO.

    sealer = ArcSealer(SealRequest(domain, selector, key, authserv_id))   # or bodies=shared
    for chunk in body: sealer.feed_body(chunk)
    fields = sealer.seal(headers, chain, results)  # [AS, AMS, AAR]: prepend in this order

The new set is instance N+1, N the highest instance on the message. Its AAR records the
sealer's own results (`results`: the RFC 8601 resinfo items, "dkim=pass ...; arc=pass ...");
its AMS signs the message like a DKIM-Signature (never ARC-Seal, RFC 8617 4.1.2); its AS
carries cv= the chain state and signs every set, oldest first, or only the new one when the
chain failed (5.1.2). A message whose newest seal already says cv=fail is not sealed again,
nor one whose next instance would pass the limit: `seal` returns [] and `refusal` says why.

The three fields are given top-down: AS, AMS, AAR, as every implementation writes them
(dkimpy, Mail::DKIM, OpenARC), so that a milter prepending them one at a time at index 0
inserts AAR first.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from dkimd.arc.fields import (
    AAR_NAME,
    AMS_NAME,
    AS_NAME,
    MAX_INSTANCES,
    ArcSet,
    ChainState,
    collect_sets,
)
from dkimd.arc.verifier import ArcResult, seal_hash_input
from dkimd.dkim.algorithms import get_algorithm
from dkimd.dkim.canonicalization import BodyHashSet
from dkimd.dkim.errors import SigningError
from dkimd.dkim.headers import HeaderField, name_key
from dkimd.dkim.keys import PrivateKey
from dkimd.dkim.results import fold_tokens
from dkimd.dkim.signature import fold_b_value, fold_signature, unsigned_header_hash_input
from dkimd.dkim.signer import SigningRequest

#: The fields an AMS signs by default: OpenDKIM's SignHeaders list plus what a mailing list
#: or forwarder must not be able to change unseen (the DKIM signatures themselves among them,
#: RFC 8617 5.1: the AMS "SHOULD include any DKIM-Signature header fields already present").
DEFAULT_AMS_HEADERS: Final = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "dkim-signature",
    "list-id",
    "list-post",
    "list-unsubscribe",
)
#: RFC 8617 4.1.2: the ARC fields and Authentication-Results never go in an AMS h= list.
NEVER_SIGNED: Final = {
    name_key(n): n
    for n in (
        "ARC-Seal",
        "ARC-Message-Signature",
        "ARC-Authentication-Results",
        "Authentication-Results",
    )
}


def _clean(text: str) -> str:
    """The AAR payload on one line of printable ASCII: nothing a message could smuggle in
    (CR, LF, controls) reaches the header the seal signs."""
    return "".join(c if " " <= c <= "~" else " " for c in text.replace("\r\n", " ")).strip()


@dataclass(frozen=True, slots=True)
class SealRequest:
    """Who seals, with what. Validated on construction (raises SigningError)."""

    domain: str
    selector: str
    key: PrivateKey
    authserv_id: str
    signed_headers: Sequence[str] = DEFAULT_AMS_HEADERS
    header_canon: str = "relaxed"
    body_canon: str = "relaxed"
    timestamp: int | None = None
    # The DKIM request that checks d=, s=, the key and the h= list, and picks the fields.
    _dkim: SigningRequest = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        banned = [n for n in self.signed_headers if name_key(n) in NEVER_SIGNED]
        if banned:
            raise SigningError(
                f"the ARC-Message-Signature must not sign {NEVER_SIGNED[name_key(banned[0])]}"
                " (RFC 8617 4.1.2)"
            )
        if (
            not self.authserv_id
            or _clean(self.authserv_id) != self.authserv_id
            or any(c in self.authserv_id for c in " ;")
        ):
            raise SigningError("invalid authserv-id")
        dkim = SigningRequest(
            domain=self.domain,
            selector=self.selector,
            key=self.key,
            header_canon=self.header_canon,
            body_canon=self.body_canon,
            signed_headers=self.signed_headers,
            oversign_headers=(),
        )
        object.__setattr__(self, "_dkim", dkim)

    @property
    def body_hash_key(self) -> tuple[str, str, int | None]:
        return self._dkim.body_hash_key


class ArcSealer:
    def __init__(
        self,
        request: SealRequest,
        *,
        bodies: BodyHashSet | None = None,
    ) -> None:
        """`bodies`: a body hash set shared with DKIM (its owner feeds it)."""
        self.request = request
        self._own_bodies = bodies is None
        self._bodies = BodyHashSet() if bodies is None else bodies
        self._bodies.add(request.body_hash_key)
        self.refusal = ""

    def feed_body(self, chunk: bytes) -> None:
        if self._own_bodies:
            self._bodies.update(chunk)

    def seal(
        self,
        headers: Sequence[HeaderField],
        chain: ArcResult,
        results: str,
        *,
        sets: Sequence[ArcSet] | None = None,
    ) -> list[HeaderField]:
        """The new set [AS, AMS, AAR] for `headers` (the message as it will leave, minus the
        new set), or [] when RFC 8617 says not to seal (`refusal` says why). `sets`: the
        chain's sets as the verifier collected them from these same fields (else parsed
        again here)."""
        if chain.last_cv is ChainState.FAIL:
            self.refusal = "the newest ARC-Seal already has cv=fail"
            return []
        instance = chain.highest + 1
        if instance > MAX_INSTANCES:
            self.refusal = f"the chain has {chain.highest} sets already"
            return []
        if chain.state is ChainState.FAIL and chain.highest == 0:
            # A broken chain whose instances are all unreadable: there is no N to follow.
            self.refusal = "the ARC fields carry no usable instance number"
            return []
        if not any(h.key == b"from" for h in headers):
            # The AMS must sign From (RFC 8617 4.1.2 takes RFC 6376 5.4): nothing to sign.
            self.refusal = "the message has no From field"
            return []
        self.refusal = ""
        self._bodies.finish()  # idempotent, as for a shared set its owner finished
        req = self.request
        dkim = req._dkim
        algo = get_algorithm(dkim.algorithm or "")
        assert algo is not None
        now = int(time.time()) if req.timestamp is None else req.timestamp
        payload = _clean(results)
        aar_text = f"i={instance}; {req.authserv_id}" + (f"; {payload}" if payload else "")
        # Folded at spaces as OpenDKIM folds its A-R: relaxed canonicalization (what the
        # seal hashes) reads a fold as the space it replaced.
        folded = fold_tokens([t for t in aar_text.split(" ") if t])
        aar = HeaderField(AAR_NAME, b" " + folded.encode("ascii"))

        names = dkim.header_names(headers)
        body = self._bodies[dkim.body_hash_key]
        ams_tags = [
            ("i", str(instance)),
            ("a", algo.name),
            ("c", f"{req.header_canon}/{req.body_canon}"),
            ("d", req.domain),
            ("s", req.selector),
            ("t", str(now)),
            ("bh", base64.b64encode(body.digest()).decode("ascii")),
            ("h", ":".join(names)),
        ]
        unsigned_ams = HeaderField(
            AMS_NAME, fold_signature([*ams_tags, ("b", "")], len(AMS_NAME) + 2)
        )
        data = unsigned_header_hash_input(headers, names, unsigned_ams, req.header_canon)
        b = base64.b64encode(algo.sign(req.key, data)).decode("ascii")
        ams = HeaderField(AMS_NAME, unsigned_ams.value + fold_b_value(b))

        cv = chain.state
        seal_tags = [
            ("i", str(instance)),
            ("a", algo.name),
            ("t", str(now)),
            ("cv", cv.value),
            ("d", req.domain),
            ("s", req.selector),
        ]
        unsigned_seal = HeaderField(
            AS_NAME, fold_signature([*seal_tags, ("b", "")], len(AS_NAME) + 2)
        )
        # 5.1.2: a failed chain's seal covers only its own set.
        previous: Sequence[ArcSet] = ()
        if cv is ChainState.PASS:
            previous = collect_sets(headers).sets if sets is None else sets
        data = seal_hash_input(previous, aar, ams, unsigned_seal)
        b = base64.b64encode(algo.sign(req.key, data)).decode("ascii")
        seal = HeaderField(AS_NAME, unsigned_seal.value + fold_b_value(b))
        return [seal, ams, aar]


__all__ = ["DEFAULT_AMS_HEADERS", "NEVER_SIGNED", "ArcSealer", "SealRequest"]
