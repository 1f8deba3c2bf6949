"""The three ARC header fields (RFC 8617 section 4.1) and their grouping into ARC Sets (4.2).

* ARC-Authentication-Results (AAR, 4.1.1): ``i=N; authserv-id; results`` (an RFC 8601
  payload behind the instance tag).
* ARC-Message-Signature (AMS, 4.1.2): a DKIM-Signature in all but name, except that there is
  no v= (one present is ignored) and i= is the instance, not the AUID.
* ARC-Seal (AS, 4.1.3): tags i, cv, a, d, s, b and an optional t; no h= (one present makes the
  seal invalid: the seal always covers the ARC sets, never a list of fields).

Everything here parses hostile input: each parser returns a value or raises `ArcFieldError`.
`collect_sets` groups the fields by instance and says why the group is not a valid chain
(gaps, duplicates, a set missing a field, instances out of 1..50, too many ARC fields) without
parsing more than it has to: an instance bomb costs one cheap i= scan per field, once.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from dkimd.dkim.errors import ParseError, SignatureError, TagListError
from dkimd.dkim.headers import HeaderField, field_key, name_key
from dkimd.dkim.signature import DkimSignature, _b64, _domain_ok, _number, signature_from_tags
from dkimd.dkim.tags import TagList, parse_tag_list

AAR_NAME: Final = b"ARC-Authentication-Results"
AMS_NAME: Final = b"ARC-Message-Signature"
AS_NAME: Final = b"ARC-Seal"
AAR_KEY: Final = field_key(AAR_NAME)
AMS_KEY: Final = field_key(AMS_NAME)
AS_KEY: Final = field_key(AS_NAME)
ARC_KEYS: Final = frozenset({AAR_KEY, AMS_KEY, AS_KEY})

#: RFC 8617 4.2.1: "The 'i' tag value can range from 1-50 (inclusive)."
MAX_INSTANCES: Final = 50

_INSTANCE = re.compile(rb"[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]{1,3})[ \t\r\n]*(?:;|\Z)")
_AAR_HEAD = re.compile(rb"[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]{1,3})[ \t\r\n]*;")
_DIGITS = re.compile(r"[0-9]{1,3}\Z")


class ArcFieldError(ParseError):
    """An ARC header field, or the group of them on a message, is invalid (chain: fail)."""


class ChainState(enum.Enum):
    """The chain validation status (RFC 8617 4.4): the cv= of a seal, the arc= of an A-R."""

    NONE = "none"
    PASS = "pass"
    FAIL = "fail"


_CV: Final = {s.value: s for s in ChainState}


@dataclass(frozen=True, slots=True)
class ArcAuthResults:
    """One ARC-Authentication-Results field."""

    header: HeaderField
    instance: int
    authserv_id: str
    payload: str  # everything after "i=N;", the authserv-id first, unfolded and trimmed


@dataclass(frozen=True, slots=True)
class ArcMessageSignature:
    """One ARC-Message-Signature: its instance and the DKIM signature semantics it has."""

    header: HeaderField
    instance: int
    sig: DkimSignature


@dataclass(frozen=True, slots=True)
class ArcSeal:
    """One ARC-Seal field (RFC 8617 4.1.3)."""

    header: HeaderField
    instance: int
    cv: ChainState
    algorithm: str
    domain: str
    selector: str
    signature: bytes = field(repr=False)
    timestamp: int | None = None

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}".rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class ArcSet:
    """The three fields of one instance."""

    instance: int
    aar: ArcAuthResults
    ams: ArcMessageSignature
    seal: ArcSeal

    def fields(self) -> tuple[HeaderField, HeaderField, HeaderField]:
        """The set in the order the seal hashes it (RFC 8617 5.1.1): AAR, AMS, AS."""
        return (self.aar.header, self.ams.header, self.seal.header)


def _instance(tags: TagList) -> int:
    value = tags.get("i")
    if value is None:
        raise ArcFieldError("no instance tag i=")
    value = value.strip(" \t\r\n")
    if not _DIGITS.match(value):
        raise ArcFieldError("instance i= is not a number")
    instance = int(value)
    if not 1 <= instance <= MAX_INSTANCES:
        raise ArcFieldError(f"instance i={instance} outside 1..{MAX_INSTANCES}")
    return instance


def _tags(header: HeaderField, what: str) -> TagList:
    try:
        return parse_tag_list(header.value)
    except TagListError as exc:
        raise ArcFieldError(f"{what}: {exc.reason}") from None


def parse_aar(header: HeaderField) -> ArcAuthResults:
    """An ARC-Authentication-Results field (RFC 8617 4.1.1). Raises ArcFieldError."""
    match = _AAR_HEAD.match(header.value)
    if match is None:
        raise ArcFieldError("AAR does not start with an instance tag i=N;")
    instance = int(match[1])
    if not 1 <= instance <= MAX_INSTANCES:
        raise ArcFieldError(f"AAR instance i={instance} outside 1..{MAX_INSTANCES}")
    # Unfolded, every run of WSP one space: the payload as relaxed canonicalization reads it.
    rest = " ".join(header.value[match.end() :].decode("latin-1").split())
    authserv_id = re.split(r"[ \t;]", rest, maxsplit=1)[0]
    if not authserv_id:
        raise ArcFieldError("AAR has no authserv-id")
    return ArcAuthResults(header, instance, authserv_id, rest)


def parse_ams(header: HeaderField) -> ArcMessageSignature:
    """An ARC-Message-Signature field (RFC 8617 4.1.2). Raises ArcFieldError."""
    tags = _tags(header, "AMS")
    instance = _instance(tags)
    # The DKIM semantics without DKIM's v= and i=: give the DKIM parser a v=1 and no AUID.
    dkim_tags = {k: v for k, v in tags.items() if k not in ("v", "i")}
    dkim_tags["v"] = "1"
    try:
        sig = signature_from_tags(dkim_tags)
    except SignatureError as exc:
        raise ArcFieldError(f"AMS i={instance}: {exc.reason}") from None
    if sig.algorithm not in ("rsa-sha256", "ed25519-sha256"):
        # RFC 8617 4.1.2 takes DKIM's algorithms as RFC 8301 and RFC 8463 leave them.
        raise ArcFieldError(f"AMS i={instance}: algorithm {sig.algorithm} not allowed")
    if name_key("ARC-Seal") in (name_key(n) for n in sig.signed_headers):
        # RFC 8617 4.1.2: ARC-Seal fields MUST NOT be included in the AMS h= list.
        raise ArcFieldError(f"AMS i={instance}: h= contains ARC-Seal")
    return ArcMessageSignature(header, instance, sig)


def parse_seal(header: HeaderField) -> ArcSeal:
    """An ARC-Seal field (RFC 8617 4.1.3). Raises ArcFieldError."""
    tags = _tags(header, "AS")
    instance = _instance(tags)
    what = f"AS i={instance}"
    missing = [t for t in ("a", "b", "cv", "d", "s") if t not in tags]
    if missing:
        raise ArcFieldError(f"{what}: missing " + " ".join(f"{t}=" for t in missing))
    if "h" in tags:
        raise ArcFieldError(f"{what}: h= is not allowed in an ARC-Seal")
    cv = _CV.get(tags["cv"].strip(" \t\r\n").lower())
    if cv is None:
        raise ArcFieldError(f"{what}: unknown cv= value")
    algorithm = tags["a"].strip(" \t\r\n").lower()
    if algorithm not in ("rsa-sha256", "ed25519-sha256"):
        raise ArcFieldError(f"{what}: algorithm not allowed")
    domain = tags["d"].strip(" \t\r\n")
    selector = tags["s"].strip(" \t\r\n")
    if not _domain_ok(domain) or not _domain_ok(selector):
        raise ArcFieldError(f"{what}: malformed d= or s=")
    try:
        signature = _b64(tags, "b")
        timestamp = _number(tags, "t", 12)
    except SignatureError as exc:
        raise ArcFieldError(f"{what}: {exc.reason}") from None
    return ArcSeal(header, instance, cv, algorithm, domain, selector, signature, timestamp)


def field_instance(header: HeaderField) -> int | None:
    """The instance an ARC field claims, read cheaply (i= must be its first tag, as every
    implementation writes it); None when it does not start with a readable i=."""
    match = _INSTANCE.match(header.value)
    return int(match[1]) if match else None


def _claimed_instance(header: HeaderField) -> int | None:
    """`field_instance`, or for an AMS or AS whose i= is not the first tag, the i= of its
    tag-list (RFC 8617 does not fix the tag order of those two)."""
    found = field_instance(header)
    if found is not None or header.key == AAR_KEY:
        return found
    try:
        value = parse_tag_list(header.value).get("i", "").strip(" \t\r\n")
    except TagListError:
        return None
    return int(value) if _DIGITS.match(value) else None


@dataclass(frozen=True, slots=True)
class Collected:
    """The ARC sets of a message, or why they do not form a chain.

    `sets` is ordered by instance, 1 first. `error` set means the chain is invalid
    (RFC 8617 5.2 step 2): the chain state is fail. `highest` is the largest instance
    seen on any ARC field (a sealer numbers its set after it), 0 when there is none.
    """

    sets: tuple[ArcSet, ...]
    error: str = ""
    highest: int = 0
    field_count: int = 0


_KINDS: Final = ((b"AAR", AAR_KEY), (b"AMS", AMS_KEY), (b"AS", AS_KEY))


def arc_fields(headers: Sequence[HeaderField]) -> list[HeaderField]:
    return [h for h in headers if h.key in ARC_KEYS]


def collect_sets(headers: Sequence[HeaderField], max_instances: int = MAX_INSTANCES) -> Collected:
    """Group the ARC fields of `headers` into sets and check the structure (RFC 8617 4.2,
    5.2 steps 1-2). Never raises."""
    fields = arc_fields(headers)
    if not fields:
        return Collected(())
    count = len(fields)
    limit = min(max_instances, MAX_INSTANCES)
    if count > 3 * limit:
        # More fields than the largest allowed chain has: an instance bomb is refused before
        # a single tag-list of it is parsed.
        claimed = [field_instance(f) for f in fields]
        highest = max((i for i in claimed if i is not None and i <= MAX_INSTANCES), default=0)
        return Collected((), f"{count} ARC header fields (limit {limit} sets)", highest, count)
    claimed = [_claimed_instance(f) for f in fields]
    highest = max((i for i in claimed if i is not None and i <= MAX_INSTANCES), default=0)
    by_instance: dict[int, dict[bytes, HeaderField]] = {}
    for f, i in zip(fields, claimed, strict=True):
        if i is None:
            return Collected((), "ARC field without a leading instance tag", highest, count)
        if not 1 <= i <= MAX_INSTANCES:
            return Collected((), f"instance i={i} outside 1..{MAX_INSTANCES}", highest, count)
        slot = by_instance.setdefault(i, {})
        if f.key in slot:
            # RFC 8617 4.2.1: exactly one field of each kind per instance.
            return Collected((), f"duplicate {f.name.decode('latin-1')} i={i}", highest, count)
        slot[f.key] = f
    top = max(by_instance)
    if top > limit:
        return Collected((), f"{top} ARC sets (limit {limit})", highest, count)
    sets: list[ArcSet] = []
    for i in range(1, top + 1):
        if i not in by_instance:
            return Collected((), f"gap in the chain: no ARC set i={i}", highest, count)
        slot = by_instance[i]
        missing = [n for n, k in _KINDS if k not in slot]
        if missing:
            return Collected(
                (), f"ARC set i={i} lacks {b', '.join(missing).decode()}", highest, count
            )
        try:
            aar = parse_aar(slot[AAR_KEY])
            ams = parse_ams(slot[AMS_KEY])
            seal = parse_seal(slot[AS_KEY])
        except ArcFieldError as exc:
            return Collected((), exc.reason, highest, count)
        if not aar.instance == ams.instance == seal.instance == i:
            return Collected((), f"ARC set i={i}: instance tags disagree", highest, count)
        sets.append(ArcSet(i, aar, ams, seal))
    return Collected(tuple(sets), "", highest, count)
