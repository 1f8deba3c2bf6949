"""ARC chain validation (RFC 8617 section 5.2), sans-IO, in the shape of the DKIM `Verifier`:

    v = ArcVerifier(headers, ArcVerifyOptions())
    for name in v.key_queries(): v.provide_key(name, await lookup.lookup_txt(name))
    for chunk in body: v.feed_body(chunk)      # or share a BodyHashSet (`bodies=`)
    result = v.result()

The steps of 5.2, each visible in the result's `error`:

1. no ARC set: cv none;
2. the sets do not form a chain (gaps, duplicates, a set missing a field, an unparseable field,
   an instance out of range, more sets than the limit), or a seal says cv=fail, or the first
   seal says anything but cv=none or a later one anything but cv=pass: fail;
3. the newest AMS does not verify: fail;
4. older AMSs are verified down to the first that does not: `oldest_pass` is the lowest
   instance whose AMS and every newer one verify (0 when all of them do, as RFC 8617 writes
   header.oldest-pass=0);
5. any seal, newest first, does not verify: fail;
6. otherwise pass.

Keys are DKIM key records (selector._domainkey.domain), held to RFC 8301 as DKIM keys are:
only rsa-sha256 and ed25519-sha256, RSA keys of at least 1024 bits. A timestamp t= later than
now (plus `clock_skew`) or an AMS x= in the past fails that signature.
"""

from __future__ import annotations

import enum
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from dkimd.arc.fields import (
    MAX_INSTANCES,
    ArcMessageSignature,
    ArcSet,
    ChainState,
    Collected,
    collect_sets,
)
from dkimd.dkim.algorithms import SignatureAlgorithm, get_algorithm
from dkimd.dkim.canonicalization import BodyHashSet, canonicalize_header
from dkimd.dkim.errors import KeyRecordError
from dkimd.dkim.headers import HeaderField
from dkimd.dkim.keys import KeyRecord, parse_key_record
from dkimd.dkim.signature import header_hash_input, strip_b_value
from dkimd.dns.base import TxtResult

RSA_MIN_BITS = 1024  # RFC 8301 section 3.2


@dataclass(frozen=True, slots=True)
class ArcVerifyOptions:
    max_instances: int = MAX_INSTANCES  # a lower limit than RFC 8617's 50 refuses longer chains
    now: int | None = None  # Unix time for t= and x=; default: the clock at result()
    clock_skew: int = 300
    fix_crlf: bool = False  # bare CR and LF in the body count as CRLF (FixCRLF)


class ArcError(enum.Enum):
    """Why a chain is not `pass` (None on the result for a pass or a none)."""

    STRUCTURE = "structure"  # step 2: the fields do not form a chain; detail says how
    CV_FAIL = "cv-fail"  # a seal records a failed chain
    CV_INVALID = "cv-invalid"  # cv= not none at i=1 or not pass later
    AMS_FAIL = "ams-fail"  # step 3: the newest AMS does not verify
    SEAL_FAIL = "seal-fail"  # step 5


@dataclass(frozen=True, slots=True)
class ArcResult:
    """The chain validation outcome. `reason` is the text for A-R and logs."""

    state: ChainState
    error: ArcError | None = None
    detail: str = ""
    instances: int = 0  # ARC sets on the message (0 when they do not form a chain)
    highest: int = 0  # the largest instance claimed by any ARC field (a sealer's N)
    oldest_pass: int | None = None  # step 4; None unless the chain passed
    last_cv: ChainState | None = None  # cv= of the newest seal, when it parsed
    domain: str | None = None  # d= of the newest seal

    @property
    def passed(self) -> bool:
        return self.state is ChainState.PASS

    @property
    def reason(self) -> str:
        return self.detail


def _key_problem(txt: TxtResult | None) -> str | KeyRecord:
    if txt is None:
        return "key not retrieved"
    if not txt.ok:
        return "key query " + ("temporary failure" if txt.status.is_temporary else "failed")
    first = ""
    for raw in txt.records:
        try:
            return parse_key_record(raw)
        except KeyRecordError as exc:
            first = first or exc.reason
    return first or "no key record"


def _key_refused(record: KeyRecord, algo: SignatureAlgorithm) -> str | None:
    if record.revoked:
        return "key revoked"
    if record.key_type != algo.key_type:
        return "key type does not match a="
    if not record.allows_hash(algo.hash_name):
        return "key record does not allow the hash"
    if not record.allows_email():
        return "key record not for email"
    if record.key_type == "rsa" and record.key_bits < RSA_MIN_BITS:
        return "key shorter than 1024 bits"
    return None


def seal_hash_input(
    previous: Sequence[ArcSet],
    aar: HeaderField,
    ams: HeaderField,
    seal: HeaderField,
) -> bytes:
    """What an ARC-Seal's b= signs (RFC 8617 5.1.1): the sets before it, oldest first, each
    as AAR, AMS, AS in relaxed canonical form, then its own set's AAR and AMS, then the seal
    itself with b= empty and without the final CRLF. Each field's relaxed form is worked out
    once per field object (HeaderField), so checking N seals and sealing after them does not
    canonicalize set 1 N+1 times."""
    parts = [canonicalize_header(f, "relaxed") for s in previous for f in s.fields()]
    parts.append(canonicalize_header(aar, "relaxed"))
    parts.append(canonicalize_header(ams, "relaxed"))
    unsigned = HeaderField(seal.name, strip_b_value(seal.value))
    parts.append(canonicalize_header(unsigned, "relaxed", crlf=False))
    return b"".join(parts)


class ArcVerifier:
    def __init__(
        self,
        headers: Sequence[HeaderField],
        options: ArcVerifyOptions | None = None,
        *,
        bodies: BodyHashSet | None = None,
    ) -> None:
        """`bodies`: a body hash set shared with DKIM verification or signing (its owner
        feeds it; it must not have seen body bytes yet). Without it the verifier hashes the
        body it is fed itself."""
        self.options = options or ArcVerifyOptions()
        self._headers = list(headers)
        self._own_bodies = bodies is None
        self._bodies = BodyHashSet(fix_crlf=self.options.fix_crlf) if bodies is None else bodies
        self._keys: dict[str, TxtResult] = {}
        self._result: ArcResult | None = None
        self.collected: Collected = collect_sets(self._headers, self.options.max_instances)
        self._early = self._structure_result()
        if self._early is None:
            for s in self.collected.sets:
                sig = s.ams.sig
                self._bodies.add((sig.body_canon, sig.hash_name, sig.body_length))

    def _structure_result(self) -> ArcResult | None:
        """Steps 1 and 2: a result that needs no key and no body, or None."""
        c = self.collected
        if c.field_count == 0:
            return ArcResult(ChainState.NONE)
        if c.error:
            return ArcResult(ChainState.FAIL, ArcError.STRUCTURE, c.error, highest=c.highest)
        newest = c.sets[-1].seal
        base = ArcResult(
            ChainState.FAIL, instances=len(c.sets), highest=c.highest, last_cv=newest.cv
        )
        for s in reversed(c.sets):
            cv = s.seal.cv
            if cv is ChainState.FAIL:
                return replace(
                    base, error=ArcError.CV_FAIL, detail=f"AS i={s.instance} has cv=fail"
                )
            want = ChainState.NONE if s.instance == 1 else ChainState.PASS
            if cv is not want:
                return replace(
                    base,
                    error=ArcError.CV_INVALID,
                    detail=f"AS i={s.instance} has cv={cv.value}, not {want.value}",
                )
        return None

    def key_queries(self) -> list[str]:
        """The DNS names of the keys the chain needs, each once (none for a chain that has
        already failed or is absent)."""
        if self._early is not None:
            return []
        names: list[str] = []
        for s in reversed(self.collected.sets):
            for name in (s.ams.sig.key_name, s.seal.key_name):
                if name not in names:
                    names.append(name)
        return names

    def provide_key(self, name: str, result: TxtResult) -> None:
        self._keys[name.rstrip(".").lower()] = result

    def feed_body(self, chunk: bytes) -> None:
        if self._own_bodies:
            self._bodies.update(chunk)

    def needs_body(self) -> bool:
        return self._early is None

    def result(self) -> ArcResult:
        if self._result is None:
            self._result = self._early or self._validate()
        return self._result

    # --- steps 3-6 ---

    def _validate(self) -> ArcResult:
        # Idempotent: a shared set its owner finished already is left as it is.
        self._bodies.finish()
        now = self.options.now if self.options.now is not None else int(time.time())
        sets = self.collected.sets
        newest = sets[-1]
        base = ArcResult(
            ChainState.FAIL,
            instances=len(sets),
            highest=self.collected.highest,
            last_cv=newest.seal.cv,
            domain=newest.seal.domain,
        )
        problem = self._ams_problem(newest.ams, now)
        if problem is not None:
            return replace(
                base, error=ArcError.AMS_FAIL, detail=f"AMS i={newest.instance}: {problem}"
            )
        oldest_pass = newest.instance
        for s in reversed(sets[:-1]):
            if self._ams_problem(s.ams, now) is not None:
                break
            oldest_pass = s.instance
        for k in range(len(sets) - 1, -1, -1):
            seal = sets[k].seal
            problem = self._seal_problem(sets[:k], sets[k], now)
            if problem is not None:
                return replace(
                    base, error=ArcError.SEAL_FAIL, detail=f"AS i={seal.instance}: {problem}"
                )
        return replace(
            base, state=ChainState.PASS, oldest_pass=0 if oldest_pass == 1 else oldest_pass
        )

    def _key(self, key_name: str, algo: SignatureAlgorithm) -> KeyRecord | str:
        record = _key_problem(self._keys.get(key_name))
        if isinstance(record, str):
            return record
        refused = _key_refused(record, algo)
        return refused if refused is not None else record

    def _ams_problem(self, ams: ArcMessageSignature, now: int) -> str | None:
        sig = ams.sig
        skew = self.options.clock_skew
        if sig.timestamp is not None and sig.timestamp > now + skew:
            return "t= is in the future"
        if sig.expiration is not None and sig.expiration + skew < now:
            return "signature expired (x=)"
        algo = get_algorithm(sig.algorithm)
        assert algo is not None  # parse_ams admits only known algorithms
        record = self._key(sig.key_name, algo)
        if isinstance(record, str):
            return record
        body = self._bodies[(sig.body_canon, sig.hash_name, sig.body_length)]
        if sig.body_length is not None and body.length < sig.body_length:
            return "body shorter than l="
        if not hmac.compare_digest(body.digest(), sig.body_hash):
            return "body hash mismatch"
        data = header_hash_input(self._headers, sig.signed_headers, ams.header, sig.header_canon)
        assert record.public_key is not None
        if not algo.verify(record.public_key, sig.signature, data):
            return "signature mismatch"
        return None

    def _seal_problem(self, previous: Sequence[ArcSet], own: ArcSet, now: int) -> str | None:
        seal = own.seal
        if seal.timestamp is not None and seal.timestamp > now + self.options.clock_skew:
            return "t= is in the future"
        algo = get_algorithm(seal.algorithm)
        assert algo is not None
        record = self._key(seal.key_name, algo)
        if isinstance(record, str):
            return record
        assert record.public_key is not None
        data = seal_hash_input(previous, own.aar.header, own.ams.header, seal.header)
        if not algo.verify(record.public_key, seal.signature, data):
            return "signature mismatch"
        return None
