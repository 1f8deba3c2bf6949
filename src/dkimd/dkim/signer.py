"""Signing: a `SigningRequest` says what to sign with; a `Signer` hashes the body as it streams
and produces the DKIM-Signature field(s) at the end (RFC 6376 section 5).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from dkimd.dkim.algorithms import get_algorithm
from dkimd.dkim.canonicalization import CANONS, BodyHashSet
from dkimd.dkim.errors import SigningError
from dkimd.dkim.headers import WSP, HeaderField, name_key
from dkimd.dkim.keys import PrivateKey
from dkimd.dkim.signature import (
    FIELD_NAME,
    _domain_ok,
    fold_b_value,
    fold_signature,
    unsigned_header_hash_input,
)

# OpenDKIM's default SignHeaders: libopendkim's dkim_should_signhdrs, the fields RFC 6376
# section 5.4.1 says SHOULD be signed (plus Resent-Sender, which OpenDKIM adds). Verified against
# opendkim 2.11: a message with Message-ID, MIME-Version, Content-Type, Received and X-Foo was
# signed with h=From:To:Cc:Subject:Date:Reply-To:From (From oversigned).
DEFAULT_SIGNED_HEADERS: Final = (
    "from",
    "reply-to",
    "subject",
    "date",
    "to",
    "cc",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
)
# RFC 6376 5.4: From MUST be signed, whatever the configuration says.
REQUIRED_SIGNED_HEADERS: Final = ("from",)

_TAG_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_TAG_VALUE: Final = re.compile(r"[\x21-\x3a\x3c-\x7e]+")  # VALCHAR, no WSP
# The tags the signer writes itself: an extension tag must not repeat one (RFC 6376 3.2).
_OWN_TAGS: Final = frozenset({"v", "a", "c", "d", "s", "t", "x", "i", "bh", "l", "h", "b"})


@dataclass(frozen=True, slots=True)
class SigningRequest:
    """One signature to make. Validated on construction (raises SigningError).

    `signed_headers` None means OpenDKIM's default list; names are matched case-insensitively
    and listed in h= as spelled in the message, in message order, once per instance.
    `oversign_headers` are listed once more than they occur (OpenDKIM's OversignHeaders), so
    that a field added in transit breaks the signature. `ttl` adds x= = t= + ttl; `body_length`
    adds l=; `timestamp` fixes t= (default: now). `extension_tags` are more (name, value)
    tags, written in order after i= and before bh=, where OpenDKIM writes the tags of
    dkim_add_xtag (RFC 6541 atpsh=/atps=, RFC 6651 r=y). `max_body_bytes` signs at most
    that many canonical body bytes and always writes l= (OpenDKIM's MaximumSignedBytes).
    """

    domain: str
    selector: str
    key: PrivateKey
    header_canon: str = "relaxed"
    body_canon: str = "relaxed"
    signed_headers: Sequence[str] | None = None
    oversign_headers: Sequence[str] = ("from",)
    omit_headers: Sequence[str] = ()
    identity: str | None = None
    body_length: bool = False
    ttl: int | None = None
    timestamp: int | None = None
    algorithm: str | None = None
    extension_tags: tuple[tuple[str, str], ...] = ()
    max_body_bytes: int | None = None
    hash_name: str = field(init=False, default="sha256")
    # The keys (`name_key`) of the fields h= takes, worked out once: a request is shared by
    # messages.
    _wanted: frozenset[bytes] = field(init=False, repr=False, compare=False, default=frozenset())

    def __post_init__(self) -> None:
        if not _domain_ok(self.domain):
            raise SigningError("invalid signing domain")
        if not _domain_ok(self.selector):
            raise SigningError("invalid selector")
        if self.header_canon not in CANONS or self.body_canon not in CANONS:
            raise SigningError("canonicalization must be simple or relaxed")
        name = self.algorithm or self.key.algorithm
        algo = get_algorithm(name)
        if algo is None or not algo.can_sign:
            raise SigningError(f"cannot sign with algorithm {name!r}")
        if algo.key_type != self.key.key_type:
            raise SigningError(f"{algo.name} needs a {algo.key_type} key, not {self.key.key_type}")
        object.__setattr__(self, "algorithm", algo.name)
        object.__setattr__(self, "hash_name", algo.hash_name)
        if self.identity is not None:
            _, at, idomain = self.identity.rpartition("@")
            sdid = self.domain.lower().rstrip(".")
            idomain = idomain.lower().rstrip(".")
            if not at or (idomain != sdid and not idomain.endswith("." + sdid)):
                raise SigningError("identity must be in the signing domain or a subdomain")
        if self.ttl is not None and self.ttl <= 0:
            raise SigningError("signature TTL must be positive")
        if self.max_body_bytes is not None and self.max_body_bytes < 0:
            raise SigningError("the body length limit cannot be negative")
        for tag, value in self.extension_tags:
            # RFC 6376 3.2: tag-name ALPHA *ALNUMPUNC; a value without ";" or line breaks.
            if not _TAG_NAME.fullmatch(tag) or tag in _OWN_TAGS or not _TAG_VALUE.fullmatch(value):
                raise SigningError(f"invalid extension tag {tag!r}")
        base = DEFAULT_SIGNED_HEADERS if self.signed_headers is None else self.signed_headers
        wanted = {name_key(n) for n in base} - {name_key(n) for n in self.omit_headers}
        required = {name_key(n) for n in REQUIRED_SIGNED_HEADERS}
        object.__setattr__(self, "_wanted", frozenset(wanted | required))

    @property
    def body_hash_key(self) -> tuple[str, str, int | None]:
        return (self.body_canon, self.hash_name, self.max_body_bytes)

    def header_names(self, headers: Sequence[HeaderField]) -> list[str]:
        """The h= list for these headers (see the class docstring)."""
        wanted = self._wanted
        names: list[str] = []
        spelling: dict[bytes, str] = {}
        for f in headers:
            key = f.key
            if key in wanted:
                # h= lists the name as the message spells it, without the WSP before the colon.
                name = f.name.rstrip(WSP).decode("latin-1")
                names.append(name)
                spelling[key] = name
        seen: set[bytes] = set()
        for over in self.oversign_headers:
            key = name_key(over)
            if key not in seen:
                seen.add(key)
                names.append(spelling.get(key, over))
        return names


class Signer:
    """Streams the body once for any number of requests, then signs the header block.

    Requests with the same body canonicalization and hash share one canonicalizer (an RSA and
    an Ed25519 signature over the same body cost one body pass).
    """

    def __init__(
        self,
        request: SigningRequest,
        *more: SigningRequest,
        fix_crlf: bool = False,
        bodies: BodyHashSet | None = None,
    ) -> None:
        """`fix_crlf`: bare CR and LF in the body are signed as CRLF (OpenDKIM's FixCRLF).
        `bodies`: a body hash set shared with other users of the body (ARC, dkimd.arc); the
        signer feeds it, so the others hash nothing twice."""
        self.requests: tuple[SigningRequest, ...] = (request, *more)
        if bodies is None:
            bodies = BodyHashSet(fix_crlf=fix_crlf)
        for r in self.requests:
            bodies.add(r.body_hash_key)
        self._bodies = bodies

    def feed_body(self, chunk: bytes) -> None:
        self._bodies.update(chunk)

    def sign(self, headers: Sequence[HeaderField]) -> HeaderField:
        """The DKIM-Signature field of the (first) request; prepend it to the message."""
        return self.sign_all(headers)[0]

    def sign_all(self, headers: Sequence[HeaderField]) -> list[HeaderField]:
        """One field per request, in request order. May be called once the body is complete."""
        self._bodies.finish()
        return [self._sign_one(r, headers) for r in self.requests]

    def _sign_one(self, req: SigningRequest, headers: Sequence[HeaderField]) -> HeaderField:
        body = self._bodies[req.body_hash_key]
        algo = get_algorithm(req.algorithm or "")
        assert algo is not None  # checked in SigningRequest.__post_init__
        names = req.header_names(headers)
        now = int(time.time()) if req.timestamp is None else req.timestamp
        # Tag order as OpenDKIM 2.11 writes it: v a c d s t x i, the extension tags (atpsh,
        # atps, r), bh l h b (observed; see issue 14's spec, t-sign-atps and t-sign-ss-ltag).
        tags: list[tuple[str, str]] = [
            ("v", "1"),
            ("a", algo.name),
            ("c", f"{req.header_canon}/{req.body_canon}"),
            ("d", req.domain),
            ("s", req.selector),
            ("t", str(now)),
        ]
        if req.ttl is not None:
            tags.append(("x", str(now + req.ttl)))
        if req.identity is not None:
            tags.append(("i", req.identity))
        tags += req.extension_tags
        tags.append(("bh", base64.b64encode(body.digest()).decode("ascii")))
        if req.body_length or req.max_body_bytes is not None:
            tags.append(("l", str(body.hashed)))  # what was signed, as libopendkim counts
        tags.append(("h", ":".join(names)))
        # Lay the field out once, with b= empty: that is the form the signature covers
        # (RFC 6376 3.7), and b= is the last tag, alone on its new line, so the signature
        # itself is then only appended, folded from that line's column.
        unsigned = HeaderField(FIELD_NAME, fold_signature([*tags, ("b", "")]))
        data = unsigned_header_hash_input(headers, names, unsigned, req.header_canon)
        signature = base64.b64encode(algo.sign(req.key, data)).decode("ascii")
        return HeaderField(FIELD_NAME, unsigned.value + fold_b_value(signature))
