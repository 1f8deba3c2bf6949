"""Verification (RFC 6376 section 6), sans-IO.

    v = Verifier(headers, VerifyOptions())
    for name in v.key_queries(): v.provide_key(name, await lookup.lookup_txt(name))
    for chunk in body: v.feed_body(chunk)
    results = v.results()

The caller does the DNS lookups (they may run while the body is still arriving). Every outcome
is a `SignatureResult` value; nothing raises on hostile input.

Choices where the RFCs leave room, each visible in the result's error (and its reason text):

* Which signatures are verified is OpenDKIM's choice (opendkim.c dkimf_prescreen, observed
  with 2.11): with a positive `max_signatures` (MaximumSignaturesToVerify, default 3), those
  whose d= is `trusted` (TrustSignaturesFrom) first, whatever their number, then the others
  from the top while the limit allows; with 0, only those whose d= is the author domain or
  trusted. The others are ignored: reported `neutral`, or, when every signature is ignored,
  as if the message had none.
* t= later than now and x= earlier than now are tolerated by `clock_skew` seconds
  (ClockDrift, default 300).
* `must_be_signed` (MustBeSigned): a field of one of these names in the message that the
  signature's h= does not list makes an otherwise good signature fail.
* Several TXT records at a key name: the first one that parses as a key record is used, the
  others are ignored (RFC 6376 3.6.2.2 leaves this to the verifier; OpenDKIM uses the first).
* RFC 8301: rsa-sha1 signatures are permerror unless `allow_sha1`; RSA keys under 1024 bits
  are permerror; keys of at least 1024 but under `min_key_bits` are "policy", once the
  signature has verified (a failing one stays a fail, as in OpenDKIM).
* A key record with t=y (testing): a failing signature is reported neutral, not fail (3.6.1:
  verifiers must not treat testing-mode failures differently from unsigned mail). A revoked
  key (empty p=, 3.6.1) is a fail even so, as in OpenDKIM: there is no key to test with.
* l=: content after the signed length is reported in `body_length_extra`; with
  `body_length="fail"` such a signature fails. A body shorter than l= fails (6.1.3).
* More than one From field: every signature fails (RFC 6376 8.15, the classic From-prepending
  attack; RFC 5322 allows exactly one From).
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from dkimd.dkim.algorithms import SignatureAlgorithm, get_algorithm
from dkimd.dkim.canonicalization import BodyHashSet
from dkimd.dkim.errors import KeyRecordError, SignatureError
from dkimd.dkim.headers import HeaderField, name_key
from dkimd.dkim.keys import KeyRecord, parse_key_record
from dkimd.dkim.minimum import BodyMinimum
from dkimd.dkim.results import DkimResult, SignatureResult, VerifyError
from dkimd.dkim.signature import (
    DkimSignature,
    SignatureField,
    header_hash_input,
    signature_fields,
)
from dkimd.dns.base import TxtResult, TxtStatus

RSA_MIN_BITS = 1024  # RFC 8301 section 3.2: verifiers MUST NOT consider smaller keys valid


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    max_signatures: int = 3
    allow_sha1: bool = False
    min_key_bits: int = 1024
    body_length: Literal["report", "fail"] = "report"
    now: int | None = None  # Unix time for t= and x= checks; default: the clock at results()
    clock_skew: int = 300  # seconds of grace on t= and x= (RFC 6376 3.5 allows verifiers some)
    must_be_signed: frozenset[bytes] = frozenset()  # field keys (`name_key`) h= must cover
    trusted: Callable[[str], bool] | None = None  # d= always verified (TrustSignaturesFrom)
    fix_crlf: bool = False  # bare CR and LF in the body count as CRLF (FixCRLF)


@dataclass(slots=True)
class _Pending:
    """One signature being verified."""

    header: HeaderField
    sig: DkimSignature | None = None
    error: str = ""  # parse error -> permerror
    header_data: bytes = b""
    key: TxtResult | None = None
    body_key: tuple[str, str, int | None] | None = None
    ignored: bool = False  # not chosen for verification (`_choose`)


_PERM = DkimResult.PERMERROR
# What each error makes of a signature. The FAIL ones are reported NEUTRAL when the key record
# has t=y (RFC 6376 3.6.1).
_RESULT_OF: Final[Mapping[VerifyError, DkimResult]] = {
    VerifyError.NO_SIGNATURE: DkimResult.NONE,
    VerifyError.SIGNATURE_SYNTAX: _PERM,
    VerifyError.SHA1_REFUSED: _PERM,
    VerifyError.EXPIRED: _PERM,
    VerifyError.FUTURE_TIMESTAMP: _PERM,
    VerifyError.SIGNATURE_IGNORED: DkimResult.NEUTRAL,
    VerifyError.KEY_NOT_RETRIEVED: DkimResult.TEMPERROR,
    VerifyError.KEY_QUERY_TEMPFAIL: DkimResult.TEMPERROR,
    VerifyError.KEY_NOT_FOUND: _PERM,
    VerifyError.KEY_QUERY_FAILED: _PERM,
    VerifyError.KEY_MISSING: _PERM,
    VerifyError.KEY_SYNTAX: _PERM,
    # OpenDKIM: dkim=fail reason="key revoked" (DKIMF_STATUS_REVOKED), never neutral.
    VerifyError.KEY_REVOKED: DkimResult.FAIL,
    VerifyError.KEY_TYPE_MISMATCH: _PERM,
    VerifyError.KEY_HASH_REFUSED: _PERM,
    VerifyError.KEY_NOT_FOR_EMAIL: _PERM,
    VerifyError.KEY_STRICT_IDENTITY: _PERM,
    VerifyError.KEY_TOO_SHORT: _PERM,
    VerifyError.KEY_BELOW_MINIMUM: DkimResult.POLICY,
    VerifyError.MULTIPLE_FROM: DkimResult.FAIL,
    VerifyError.BODY_TRUNCATED: DkimResult.FAIL,
    VerifyError.BODY_HASH_MISMATCH: DkimResult.FAIL,
    VerifyError.SIGNATURE_MISMATCH: DkimResult.FAIL,
    VerifyError.UNSIGNED_CONTENT: DkimResult.FAIL,
    VerifyError.MUST_BE_SIGNED: DkimResult.FAIL,
}


@dataclass(frozen=True, slots=True)
class _KeyProblem:
    """Why a signature has no usable key record."""

    error: VerifyError
    detail: str = ""


class Verifier:
    def __init__(
        self,
        headers: Sequence[HeaderField],
        options: VerifyOptions | None = None,
        signatures: Sequence[SignatureField] | None = None,
        *,
        author_domain: str | None = None,
        bodies: BodyHashSet | None = None,
    ) -> None:
        """`signatures`: the DKIM-Signature fields of `headers` as `signature_fields` reads
        them, when the caller has read them already (the milter checks their syntax first).
        `author_domain`: the From domain, which only `max_signatures` 0 asks about.
        `bodies`: a body hash set shared with ARC (dkimd.arc), fed by this verifier."""
        self.options = options or VerifyOptions()
        self._headers = list(headers)
        self._bodies = BodyHashSet(fix_crlf=self.options.fix_crlf) if bodies is None else bodies
        self._keys: dict[str, TxtResult] = {}
        self._from_count = [f.key for f in self._headers].count(b"from")
        self._results: list[SignatureResult] | None = None
        if signatures is None:
            signatures = signature_fields(self._headers)
        self._pending = [_read(s) for s in signatures]
        self._choose(author_domain)
        for p in self._pending:
            if p.sig is not None and not p.ignored:
                self._prepare(p, p.sig)

    def _choose(self, author_domain: str | None) -> None:
        """Mark the signatures OpenDKIM would not verify (dkimf_prescreen)."""
        limit = self.options.max_signatures
        trusted = self.options.trusted
        if limit > 0 and trusted is None and len(self._pending) <= limit:
            return  # the usual case: every signature is verified
        domains = [p.sig.domain.lower() if p.sig is not None else None for p in self._pending]
        if limit == 0:
            author = (author_domain or "").lower()
            for p, d in zip(self._pending, domains, strict=True):
                p.ignored = d is None or (d != author and not (trusted and trusted(d)))
            return
        # A negative MaximumSignaturesToVerify is a huge unsigned number to OpenDKIM.
        room = limit if limit > 0 else len(self._pending)
        chosen = [d is not None and trusted is not None and trusted(d) for d in domains]
        room -= sum(chosen)
        for i in range(len(chosen)):
            if room <= 0:
                break
            if not chosen[i]:
                chosen[i] = True
                room -= 1
        for p, verified in zip(self._pending, chosen, strict=True):
            p.ignored = not verified

    def _prepare(self, p: _Pending, sig: DkimSignature) -> None:
        p.body_key = (sig.body_canon, sig.hash_name, sig.body_length)
        self._bodies.add(p.body_key)
        p.header_data = header_hash_input(
            self._headers, sig.signed_headers, p.header, sig.header_canon
        )

    def key_queries(self) -> list[str]:
        """The DNS names whose TXT records are needed, each once, in signature order."""
        names: list[str] = []
        for p in self._pending:
            if p.sig is not None and not p.ignored and p.sig.key_name not in names:
                names.append(p.sig.key_name)
        return names

    def provide_key(self, name: str, result: TxtResult) -> None:
        self._keys[name.rstrip(".").lower()] = result

    def feed_body(self, chunk: bytes) -> None:
        self._bodies.update(chunk)

    def needs_body(self) -> bool:
        """Whether any signature still hashes the body: none does on an unsigned message, and
        an l= signature stops wanting it once its l= bytes are in (OpenDKIM's dkim_minbody()),
        unless content beyond l= fails the signature (`body_length="fail"`)."""
        for p in self._pending:
            if p.sig is None or p.ignored:
                continue
            limit = p.sig.body_length
            if limit is None or p.body_key is None or self.options.body_length == "fail":
                return True
            if self._bodies[p.body_key].hashed < limit:
                return True
        return False

    def results(self) -> list[SignatureResult]:
        """One result per verified signature, top-down; [none] if the message has none.

        Worked out once (after the whole body and every key record); later calls repeat it.
        """
        if self._results is not None:
            return list(self._results)
        if all(p.ignored for p in self._pending):
            # OpenDKIM: a message whose signatures are all ignored has none (dkim=none).
            return [SignatureResult(DkimResult.NONE, VerifyError.NO_SIGNATURE)]
        self._bodies.finish()
        now = self.options.now if self.options.now is not None else int(time.time())
        self._results = [self._result(p, now) for p in self._pending]
        return list(self._results)

    def signature_count(self) -> int:
        """How many signatures the message has (as many as `results()` has, when any)."""
        return len(self._pending)

    def ignored_domains(self) -> list[str]:
        """d= of each signature not verified (`VerifyError.SIGNATURE_IGNORED`), in order."""
        return [p.sig.domain if p.sig else "" for p in self._pending if p.ignored]

    def below_minimum(self, minimum: BodyMinimum) -> tuple[SignatureResult, int, int] | None:
        """The first passing signature, the canonical body bytes it signed and the body's,
        when it signs less than `minimum` allows (OpenDKIM's PARTIAL); else None.

        Call after `results()`.
        """
        for p, result in zip(self._pending, self.results(), strict=False):
            if result.passed and p.body_key is not None:
                body = self._bodies[p.body_key]
                if minimum.covered(body.hashed, body.length):
                    return None
                return result, body.hashed, body.length
        return None

    def key_answer(self, index: int) -> TxtResult | None:
        """The key record answer signature `index` (as in `results()`) was checked with,
        or None if it did not parse or none was provided (its DNSSEC status, for
        dkimd.key_trust)."""
        sig = self._pending[index].sig if index < len(self._pending) else None
        return None if sig is None else self._keys.get(sig.key_name)

    def signature(self, index: int) -> tuple[DkimSignature, bytes] | None:
        """The parsed signature `index` (as in `results()`) and the header bytes its b=
        covers (what a failure report carries), or None if it did not parse."""
        p = self._pending[index]
        return None if p.sig is None else (p.sig, p.header_data)

    # --- one signature: each step either finds the error or hands on to the next ---

    def _result(self, p: _Pending, now: int) -> SignatureResult:
        sig = p.sig
        if sig is None:
            if p.ignored:
                return SignatureResult(
                    DkimResult.NEUTRAL, VerifyError.SIGNATURE_IGNORED, b=_raw_b(p.header)
                )
            return SignatureResult(_PERM, VerifyError.SIGNATURE_SYNTAX, p.error, b=_raw_b(p.header))
        if p.ignored:
            return self._report(p, sig, VerifyError.SIGNATURE_IGNORED)
        algo = get_algorithm(sig.algorithm)
        assert algo is not None  # a parsed signature has a known algorithm
        refused = _signature_refused(sig, algo, self.options, now)
        if refused is not None:
            return self._report(p, sig, refused)
        record = self._key_record(sig)
        if isinstance(record, _KeyProblem):
            return self._report(p, sig, record.error, record.detail)
        error = _key_refused(record, sig, algo, self.options)
        if error is None:
            error = self._mismatch(p, sig, algo, record)
        if error is None and _below_local_minimum(record, self.options):
            error = VerifyError.KEY_BELOW_MINIMUM
        return self._report(p, sig, error, record=record)

    def _key_record(self, sig: DkimSignature) -> KeyRecord | _KeyProblem:
        """The signature's key record, or why there is none to use (RFC 6376 6.1.2)."""
        txt = self._keys.get(sig.key_name)
        if txt is None:
            return _KeyProblem(VerifyError.KEY_NOT_RETRIEVED)
        if not txt.ok:
            # The resolver's own detail (server addresses, library messages) is for the
            # filter's log, not for a reason that ends up in A-R fields and SMTP replies.
            if txt.status.is_temporary:
                return _KeyProblem(VerifyError.KEY_QUERY_TEMPFAIL, txt.status.value)
            if txt.status is TxtStatus.NXDOMAIN:
                return _KeyProblem(VerifyError.KEY_NOT_FOUND)
            return _KeyProblem(VerifyError.KEY_QUERY_FAILED, txt.status.value)
        return _first_key_record(txt.records)

    def _mismatch(
        self, p: _Pending, sig: DkimSignature, algo: SignatureAlgorithm, record: KeyRecord
    ) -> VerifyError | None:
        """The message against the signature (RFC 6376 6.1.3), cheapest check first.

        MustBeSigned comes before them all: once the key is in hand, libopendkim reports
        "unprotected header field" whatever else is wrong (observed: with a changed body,
        a changed signed field, and a body shorter than l=)."""
        if self.options.must_be_signed and self._unprotected(sig):
            return VerifyError.MUST_BE_SIGNED
        if self._from_count > 1:
            return VerifyError.MULTIPLE_FROM
        assert p.body_key is not None
        body = self._bodies[p.body_key]
        if sig.body_length is not None and body.length < sig.body_length:
            return VerifyError.BODY_TRUNCATED
        if not hmac.compare_digest(body.digest(), sig.body_hash):
            return VerifyError.BODY_HASH_MISMATCH
        assert record.public_key is not None
        if not algo.verify(record.public_key, sig.signature, p.header_data):
            return VerifyError.SIGNATURE_MISMATCH
        if (
            self.options.body_length == "fail"
            and sig.body_length is not None
            and body.beyond_limit > 0
        ):
            return VerifyError.UNSIGNED_CONTENT
        return None

    def _unprotected(self, sig: DkimSignature) -> bool:
        """Whether a MustBeSigned field is in the message but not in h=."""
        covered = {name_key(h) for h in sig.signed_headers}
        wanted = self.options.must_be_signed
        return any(f.key in wanted and f.key not in covered for f in self._headers)

    def _report(
        self,
        p: _Pending,
        sig: DkimSignature,
        error: VerifyError | None,
        detail: str = "",
        record: KeyRecord | None = None,
    ) -> SignatureResult:
        testing = record.testing if record is not None else False
        result = DkimResult.PASS if error is None else _RESULT_OF[error]
        if result is DkimResult.FAIL and testing and error is not VerifyError.KEY_REVOKED:
            result = DkimResult.NEUTRAL
        extra = None
        if sig.body_length is not None and p.body_key is not None:
            extra = self._bodies[p.body_key].beyond_limit
        return SignatureResult(
            result,
            error,
            detail,
            domain=sig.domain,
            identity=sig.auid,
            selector=sig.selector,
            algorithm=sig.algorithm,
            b=sig.b_value,
            key_bits=record.key_bits if record is not None and record.key_bits else None,
            testing=testing,
            body_length_extra=extra,
        )


def _signature_refused(
    sig: DkimSignature, algo: SignatureAlgorithm, options: VerifyOptions, now: int
) -> VerifyError | None:
    """A signature this verifier does not accept whatever its key says."""
    if algo.name == "rsa-sha1" and not options.allow_sha1:
        return VerifyError.SHA1_REFUSED  # RFC 8301 section 3.1
    if sig.expiration is not None and sig.expiration + options.clock_skew < now:
        return VerifyError.EXPIRED  # RFC 6376 section 3.5, x=
    if sig.timestamp is not None and sig.timestamp > now + options.clock_skew:
        return VerifyError.FUTURE_TIMESTAMP  # RFC 6376 section 3.5, t=
    return None


def _key_refused(
    record: KeyRecord, sig: DkimSignature, algo: SignatureAlgorithm, options: VerifyOptions
) -> VerifyError | None:
    """A key record that may not verify this signature (RFC 6376 3.6.1, RFC 8301 3.2)."""
    if record.revoked:
        return VerifyError.KEY_REVOKED
    if record.key_type != algo.key_type:
        return VerifyError.KEY_TYPE_MISMATCH
    if not record.allows_hash(algo.hash_name):
        return VerifyError.KEY_HASH_REFUSED
    if not record.allows_email():
        return VerifyError.KEY_NOT_FOR_EMAIL
    if record.strict and not _same_domain(sig.auid.rpartition("@")[2], sig.domain):
        return VerifyError.KEY_STRICT_IDENTITY
    if record.key_type == "rsa" and record.key_bits < RSA_MIN_BITS:
        return VerifyError.KEY_TOO_SHORT
    return None


def _below_local_minimum(record: KeyRecord, options: VerifyOptions) -> bool:
    """MinimumKeyBits: asked only of a signature that verified. OpenDKIM checks the key's
    size after the signature, so a tampered message signed with a short key is a `fail`
    (signature verification failed), not a `policy` result."""
    return record.key_type == "rsa" and record.key_bits < options.min_key_bits


def _same_domain(a: str, b: str) -> bool:
    return a.lower().rstrip(".") == b.lower().rstrip(".")


@functools.lru_cache(maxsize=1024)
def _parse_record(raw: bytes) -> KeyRecord:
    # The same few records come back for message after message (DNS answers are cached
    # too); decoding the base64 and loading the key each time was ~4% of a verification.
    # KeyRecord is immutable, so sharing one between messages is safe.
    return parse_key_record(raw)


def _read(field: SignatureField) -> _Pending:
    p = _Pending(field.header)
    try:
        p.sig = field.parse()
    except SignatureError as exc:
        p.error = exc.reason
    return p


def _first_key_record(records: Sequence[bytes]) -> KeyRecord | _KeyProblem:
    first_error: KeyRecordError | None = None
    for raw in records:
        try:
            return _parse_record(raw)
        except KeyRecordError as exc:
            first_error = first_error or exc
    if first_error is None:
        return _KeyProblem(VerifyError.KEY_MISSING)
    return _KeyProblem(VerifyError.KEY_SYNTAX, first_error.reason)


def _raw_b(f: HeaderField) -> str | None:
    """b= of a signature that did not parse, for header.b (best effort, never raises)."""
    for part in f.value.split(b";"):
        name, eq, value = part.partition(b"=")
        if eq and name.strip(b" \t\r\n") == b"b":
            text = bytes(c for c in value if c > 32).decode("latin-1")
            return text or None
    return None
