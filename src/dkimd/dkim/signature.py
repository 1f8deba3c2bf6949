"""The DKIM-Signature field: parse with validation, build with OpenDKIM's folding, and the
header hash input shared by signer and verifier (RFC 6376 sections 3.5, 3.7, 5.4.2, 6.1.1).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from dkimd.dkim.algorithms import get_algorithm
from dkimd.dkim.canonicalization import CANONS, canonicalize_header
from dkimd.dkim.errors import SignatureError, TagListError
from dkimd.dkim.headers import HeaderField, field_key, name_key
from dkimd.dkim.tags import TagList, parse_tag_list, strip_fws

FIELD_NAME = b"DKIM-Signature"
FIELD_KEY = field_key(FIELD_NAME)
REQUIRED_TAGS = ("v", "a", "b", "bh", "d", "h", "s")
# A 16384-bit RSA signature is 2732 base64 characters; anything far beyond is hostile.
MAX_SIGNATURE_BYTES = 4096

_DOMAIN = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?\Z"
)
_DIGITS = re.compile(r"[0-9]+\Z")
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")


@dataclass(frozen=True, slots=True)
class DkimSignature:
    """A validated DKIM-Signature. Domain names are kept as written; compare lowercased."""

    algorithm: str
    domain: str
    selector: str
    signed_headers: tuple[str, ...]  # h=, names as written
    body_hash: bytes
    signature: bytes = field(repr=False)
    b_value: str = field(repr=False)  # b= without FWS, for header.b in A-R
    header_canon: str = "simple"
    body_canon: str = "simple"
    identity: str | None = None  # i= as written
    body_length: int | None = None  # l=
    timestamp: int | None = None  # t=
    expiration: int | None = None  # x=
    query_methods: tuple[str, ...] = ("dns/txt",)
    copied_headers: str | None = None  # z=, not decoded
    tags: TagList = field(default_factory=dict, repr=False, compare=False)

    @property
    def auid(self) -> str:
        """i=, or its default "@" + d= (RFC 6376 3.5)."""
        return self.identity if self.identity is not None else "@" + self.domain

    @property
    def key_name(self) -> str:
        """The DNS name of the key record: selector._domainkey.domain (RFC 6376 3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}".rstrip(".").lower()

    @property
    def hash_name(self) -> str:
        algo = get_algorithm(self.algorithm)
        return algo.hash_name if algo else "sha256"


def _b64(tags: TagList, name: str) -> bytes:
    value = strip_fws(tags[name])
    if not value:
        raise SignatureError(f"{name}= is empty")
    if len(value) > MAX_SIGNATURE_BYTES * 4 // 3 + 4:
        raise SignatureError(f"{name}= is too long")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{name}= is not valid base64") from None


def _number(tags: TagList, name: str, max_digits: int) -> int | None:
    if name not in tags:
        return None
    value = tags[name].strip()
    if not _DIGITS.match(value) or len(value) > max_digits:
        raise SignatureError(f"{name}= is not a valid number")
    return int(value)


def _domain_ok(domain: str) -> bool:
    return bool(domain) and len(domain) <= 255 and bool(_DOMAIN.match(domain))


def parse_signature(value: bytes | str) -> DkimSignature:
    """Parse and validate a DKIM-Signature value (RFC 6376 6.1.1). Raises SignatureError.

    Unknown tags are ignored (3.2: "Unrecognized tags MUST be ignored"). Expiry against the
    clock is the verifier's business; here x= only has to be later than t= (3.5).
    """
    try:
        tags = parse_tag_list(value)
    except TagListError as exc:
        raise SignatureError(exc.reason) from None
    return signature_from_tags(tags)


def signature_from_tags(tags: TagList) -> DkimSignature:
    """`parse_signature` of a value whose tag-list is read already. Raises SignatureError."""
    missing = [t for t in REQUIRED_TAGS if t not in tags]
    if missing:
        raise SignatureError("missing required tag(s): " + " ".join(f"{t}=" for t in missing))
    if tags["v"] != "1":
        raise SignatureError("unsupported signature version v=")
    algo = get_algorithm(tags["a"])
    if algo is None:
        raise SignatureError("unknown signature algorithm a=")
    header_canon, _, body_canon = tags.get("c", "simple/simple").lower().partition("/")
    body_canon = body_canon or "simple"
    if header_canon not in CANONS or body_canon not in CANONS:
        raise SignatureError("unknown canonicalization c=")
    domain = tags["d"].strip()
    if not _domain_ok(domain):
        raise SignatureError("malformed domain d=")
    selector = tags["s"].strip()
    if not _domain_ok(selector):
        raise SignatureError("malformed selector s=")
    signed = tuple(name.strip(" \t\r\n") for name in tags["h"].split(":"))
    if any(not _FIELD_NAME.match(name) for name in signed):
        raise SignatureError("malformed header list h=")
    # 5.4: "The From header field MUST be signed"; 6.1.1 makes its absence a PERMFAIL.
    if b"from" not in (name_key(name) for name in signed):
        raise SignatureError("From field not signed (h= lacks from)")
    identity: str | None = None
    if "i" in tags:
        identity = tags["i"].strip()
        _local, at, idomain = identity.rpartition("@")
        if not at:
            raise SignatureError("malformed identity i=")
        idomain = idomain.lower().rstrip(".")
        sdid = domain.lower().rstrip(".")
        # 6.1.1: the i= domain must be the same as or a subdomain of d=.
        if idomain != sdid and not idomain.endswith("." + sdid):
            raise SignatureError("identity i= is not within d=")
    timestamp = _number(tags, "t", 12)
    expiration = _number(tags, "x", 12)
    if timestamp is not None and expiration is not None and expiration < timestamp:
        raise SignatureError("x= is earlier than t=")
    body_length = _number(tags, "l", 76)
    query_methods: tuple[str, ...] = ("dns/txt",)
    if "q" in tags:
        query_methods = tuple(q.strip(" \t\r\n").lower() for q in tags["q"].split(":"))
        if "dns/txt" not in query_methods and "dns" not in query_methods:
            raise SignatureError("no supported query method q=")
    body_hash = _b64(tags, "bh")
    signature = _b64(tags, "b")
    return DkimSignature(
        algorithm=algo.name,
        domain=domain,
        selector=selector,
        signed_headers=signed,
        body_hash=body_hash,
        signature=signature,
        b_value=strip_fws(tags["b"]),
        header_canon=header_canon,
        body_canon=body_canon,
        identity=identity,
        body_length=body_length,
        timestamp=timestamp,
        expiration=expiration,
        query_methods=query_methods,
        copied_headers=tags.get("z"),
        tags=tags,
    )


@dataclass(frozen=True, slots=True)
class SignatureField:
    """A DKIM-Signature field with its tag-list read once (RFC 6376 3.2).

    At end of headers two readers judge every such field: libopendkim's syntax check
    (`dkimd.dkim.syntax`) and then the verifier (`parse`). Both start from this reading, so
    the milter reads each signature once, not once per reader.
    """

    header: HeaderField
    tags: TagList | None  # None: the value is not a tag-list, `error` says why
    error: str = ""

    def parse(self) -> DkimSignature:
        """The validated signature, as `parse_signature` gives it. Raises SignatureError."""
        if self.tags is None:
            raise SignatureError(self.error)
        return signature_from_tags(self.tags)


def read_signature_field(header: HeaderField) -> SignatureField:
    """One DKIM-Signature field's tag-list, or why it is not one (never raises)."""
    try:
        return SignatureField(header, parse_tag_list(header.value))
    except TagListError as exc:
        return SignatureField(header, None, exc.reason)


def signature_fields(headers: Iterable[HeaderField]) -> list[SignatureField]:
    """The DKIM-Signature fields of a header block, top-down, each read once."""
    return [read_signature_field(h) for h in headers if h.key == FIELD_KEY]


def strip_b_value(value: bytes) -> bytes:
    """The signature value with the b= tag's value deleted (RFC 6376 3.7: "treated as the
    empty string"). Everything else, folding included, stays, so simple canonicalization of the
    result is what the signer hashed. Tag boundaries are found by the tag-list grammar, not by
    searching for "b=", which also occurs inside base64 values.
    """
    parts = value.split(b";")
    for i, part in enumerate(parts):
        name, eq, _ = part.partition(b"=")
        if eq and name.strip(b" \t\r\n") == b"b":
            parts[i] = part[: len(name) + 1]
            break
    return b";".join(parts)


def select_headers(headers: Sequence[HeaderField], names: Sequence[str]) -> list[HeaderField]:
    """The fields h= names, in h= order, each taken bottom-up (RFC 6376 5.4.2): the n-th
    occurrence of a name in h= is the n-th instance of that field counting from the bottom.
    Names with no instance left contribute nothing (nonexistent fields are allowed in h=).
    """
    by_name: dict[bytes, list[HeaderField]] = {}
    for f in headers:
        by_name.setdefault(f.key, []).append(f)
    chosen: list[HeaderField] = []
    for name in names:
        stack = by_name.get(name_key(name))
        if stack:
            chosen.append(stack.pop())
    return chosen


def header_hash_input(
    headers: Sequence[HeaderField], names: Sequence[str], signature_field: HeaderField, canon: str
) -> bytes:
    """The data signed by b= (RFC 6376 3.7): the canonical selected fields, then the canonical
    DKIM-Signature field with b= emptied and without a trailing CRLF.
    """
    unsigned = HeaderField(signature_field.name, strip_b_value(signature_field.value))
    return unsigned_header_hash_input(headers, names, unsigned, canon)


def unsigned_header_hash_input(
    headers: Sequence[HeaderField], names: Sequence[str], unsigned_field: HeaderField, canon: str
) -> bytes:
    """``header_hash_input`` for a DKIM-Signature field whose b= is already empty (the
    signer lays it out that way, so it has nothing to strip)."""
    parts = [canonicalize_header(f, canon) for f in select_headers(headers, names)]
    parts.append(canonicalize_header(unsigned_field, canon, crlf=False))
    return b"".join(parts)


# --- building: OpenDKIM's layout (libopendkim dkim_getsighdr_d, margin 75) ---

MARGIN = 75


def fold_signature(tags: Sequence[tuple[str, str]], initial: int = len(FIELD_NAME) + 2) -> bytes:
    """Lay out tags the way OpenDKIM 2.11 does, so our signatures look like its signatures.

    Observed from opendkim 2.11 (see tests/data/opendkim_fold/): tags are joined with "; " and
    each ends with ";" except the last; `initial` is the column after "DKIM-Signature: ". A tag
    that would pass column 75 starts a new line (CRLF TAB, which counts as 8 columns). On a new
    line, h= breaks after a colon with CRLF TAB SP, b= and bh= break at exactly column 75. The
    first tag always stays on the first line. Returns the value with its leading space.
    """
    out: list[str] = []
    col = initial
    last = len(tags) - 1
    for i, (name, value) in enumerate(tags):
        text = f"{name}={value}" + (";" if i != last else "")
        if i == 0:
            out.append(text)
            col += len(text)
        elif name != "b" and col + len(text) <= MARGIN:
            out.append(" " + text)
            col += len(text) + 1
        else:
            # OpenDKIM always wraps before an RSA b=; since no signature fits on the rest of a
            # line anyway, "always" is the same as "when it does not fit" for every key.
            out.append("\r\n\t")
            col = 8
            if name == "h":
                pieces = text[2:].split(":")
                out.append("h=" + pieces[0])
                col += 2 + len(pieces[0])
                for piece in pieces[1:]:
                    if col + len(piece) + 1 > MARGIN:
                        out.append(":\r\n\t " + piece)
                        col = 9 + len(piece)
                    else:
                        out.append(":" + piece)
                        col += len(piece) + 1
            elif name in ("b", "bh", "z"):
                prefix = name + "="
                out.append(prefix)
                col = _break_at_margin(text[len(prefix) :], col + len(prefix), out)
            else:
                out.append(text)
                col += len(text)
    return (" " + "".join(out)).encode("latin-1")


def _break_at_margin(rest: str, col: int, out: list[str]) -> int:
    """Append `rest` (a b=, bh= or z= value) to `out` from column `col`, broken at column 75
    onto continuation lines (CRLF TAB SP, 9 columns); return the column it ends at."""
    while rest:
        room = max(MARGIN - col, 1)
        piece, rest = rest[:room], rest[room:]
        out.append(piece)
        col += len(piece)
        if rest:
            out.append("\r\n\t ")
            col = 9
    return col


#: Where fold_signature leaves the b= value: b= is the last tag and always starts a new
#: line, "CRLF TAB b=", so its value begins at column 8 + 2.
_B_VALUE_COLUMN: Final = 10


def fold_b_value(value: str) -> bytes:
    """The text fold_signature would put after the "b=" it ends a field with, when the
    field is laid out with an empty b= (RFC 6376 3.7's form of the field): so
    ``fold_signature([*tags, ("b", "")]) + fold_b_value(b)`` is
    ``fold_signature([*tags, ("b", b)])``, laid out once instead of twice."""
    out: list[str] = []
    _break_at_margin(value, _B_VALUE_COLUMN, out)
    return "".join(out).encode("ascii")


def build_signature_field(tags: Sequence[tuple[str, str]]) -> HeaderField:
    """A DKIM-Signature HeaderField from ordered (tag, value) pairs, folded like OpenDKIM."""
    return HeaderField(FIELD_NAME, fold_signature(tags))
