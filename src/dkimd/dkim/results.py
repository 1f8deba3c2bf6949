"""Verification outcomes as values, and the Authentication-Results text OpenDKIM writes.

Result words are RFC 8601 section 2.7.1's dkim results. Observed from opendkim 2.11 (see
tests/unit/dkim/test_results.py for the exact strings)::

    unknown-host;
    \tdkim=pass (1024-bit key) header.d=example.com header.i=@example.com ...
    (the item goes on to header.a=rsa-sha256 header.s=test header.b=RNAhx6cV; on the same line)
    \tdkim-atps=neutral
    unknown-host; dkim=none; dkim-atps=neutral

header.b is the shortest prefix of b= (at least 8 characters) that tells the message's
signatures apart (libopendkim dkim_get_sigsubstring). The closing "dkim-atps=" item is the
RFC 6541 result Debian's OpenDKIM always writes ("neutral" when nothing was checked).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

AR_FIELD_NAME = b"Authentication-Results"
_MIN_B_PREFIX = 8
_HDR_MARGIN = 75  # libopendkim DKIM_HDRMARGIN


class DkimResult(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    NEUTRAL = "neutral"
    POLICY = "policy"
    PERMERROR = "permerror"
    TEMPERROR = "temperror"
    NONE = "none"


class VerifyError(enum.Enum):
    """Why a signature did not pass, or why there was none to verify: what callers decide on.

    The human reason (A-R `reason=`, log lines) is derived from it (`SignatureResult.reason`);
    a parse error or a DNS status adds its detail. Values name the error, they are not the text.
    """

    NO_SIGNATURE = "no-signature"
    SIGNATURE_SYNTAX = "signature-syntax"  # detail: the parser's reason
    SHA1_REFUSED = "sha1-refused"
    EXPIRED = "expired"
    FUTURE_TIMESTAMP = "future-timestamp"
    SIGNATURE_IGNORED = "signature-ignored"  # not chosen for verification (neutral)
    KEY_NOT_RETRIEVED = "key-not-retrieved"
    KEY_QUERY_TEMPFAIL = "key-query-tempfail"  # detail: the lookup status
    KEY_NOT_FOUND = "key-not-found"
    KEY_QUERY_FAILED = "key-query-failed"  # detail: the lookup status
    KEY_MISSING = "key-missing"
    KEY_SYNTAX = "key-syntax"  # detail: the key record parser's reason
    KEY_REVOKED = "key-revoked"
    KEY_TYPE_MISMATCH = "key-type-mismatch"
    KEY_HASH_REFUSED = "key-hash-refused"
    KEY_NOT_FOR_EMAIL = "key-not-for-email"
    KEY_STRICT_IDENTITY = "key-strict-identity"
    KEY_TOO_SHORT = "key-too-short"
    KEY_BELOW_MINIMUM = "key-below-minimum"
    MULTIPLE_FROM = "multiple-from"
    BODY_TRUNCATED = "body-truncated"
    BODY_HASH_MISMATCH = "body-hash-mismatch"
    SIGNATURE_MISMATCH = "signature-mismatch"
    UNSIGNED_CONTENT = "unsigned-content"
    MUST_BE_SIGNED = "must-be-signed"  # a MustBeSigned field is not in h=


# The reason text of each error, "{detail}" standing for the result's detail. The wording is
# what dkimd has always logged and put in A-R fields; keep it (logs are compared with OpenDKIM's).
_REASONS: Final[Mapping[VerifyError, str]] = {
    VerifyError.NO_SIGNATURE: "no signatures",
    VerifyError.SIGNATURE_SYNTAX: "{detail}",
    VerifyError.SHA1_REFUSED: "rsa-sha1 signatures are not accepted (RFC 8301)",
    VerifyError.EXPIRED: "signature expired",
    VerifyError.FUTURE_TIMESTAMP: "signature timestamp in the future",
    VerifyError.SIGNATURE_IGNORED: "signature not verified",
    VerifyError.KEY_NOT_RETRIEVED: "key not retrieved",
    VerifyError.KEY_QUERY_TEMPFAIL: "key query failed: {detail}",
    VerifyError.KEY_NOT_FOUND: "no key for signature",
    VerifyError.KEY_QUERY_FAILED: "key query failed: {detail}",
    VerifyError.KEY_MISSING: "no key record",
    VerifyError.KEY_SYNTAX: "{detail}",
    VerifyError.KEY_REVOKED: "key revoked",
    VerifyError.KEY_TYPE_MISMATCH: "key type does not match a=",
    VerifyError.KEY_HASH_REFUSED: "key h= does not allow the signature's hash",
    VerifyError.KEY_NOT_FOR_EMAIL: "key s= does not include email",
    VerifyError.KEY_STRICT_IDENTITY: "key t=s requires i= domain equal to d=",
    VerifyError.KEY_TOO_SHORT: "RSA key shorter than 1024 bits (RFC 8301)",
    VerifyError.KEY_BELOW_MINIMUM: "key shorter than the local minimum",
    VerifyError.MULTIPLE_FROM: "message has more than one From field",
    VerifyError.BODY_TRUNCATED: "body shorter than l=",
    VerifyError.BODY_HASH_MISMATCH: "body hash mismatch",
    VerifyError.SIGNATURE_MISMATCH: "signature verification failed",
    VerifyError.UNSIGNED_CONTENT: "content beyond l= is not signed",
    VerifyError.MUST_BE_SIGNED: "a MustBeSigned header field is not signed",
}


@dataclass(frozen=True, slots=True)
class SignatureResult:
    """The outcome for one signature (or NONE for a message without any).

    `error` is None for a pass and set for every other outcome; `detail` is the variable part
    of some errors' reasons (a parser's message, a DNS status).
    """

    result: DkimResult
    error: VerifyError | None = None
    detail: str = ""
    domain: str | None = None
    identity: str | None = None  # i=, or "@" + d= when absent
    selector: str | None = None
    algorithm: str | None = None
    b: str | None = None  # the b= value without whitespace
    key_bits: int | None = None
    testing: bool = False  # the key record has t=y
    body_length_extra: int | None = None  # canonical bytes beyond l= (None: no l=)

    @property
    def passed(self) -> bool:
        return self.result is DkimResult.PASS

    @property
    def reason(self) -> str:
        """Why, in words: empty for a pass."""
        if self.error is None:
            return ""
        return _REASONS[self.error].format(detail=self.detail)


# RFC 2045 tspecials plus SP and controls: anything else may stand as a bare token.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")
_BASE64 = re.compile(r"[A-Za-z0-9+/=]+\Z")
_UNSAFE = re.compile(r"[^\x20-\x7e]")


def _clean(text: str) -> str:
    """No CR, LF or other control or non-ASCII character may reach the header."""
    return _UNSAFE.sub("?", text)


def _quoted(text: str) -> str:
    text = _clean(text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(text: str) -> str:
    """A pvalue (RFC 8601 2.2): a bare token, or an address-like value, or a quoted string."""
    text = _clean(text)
    if _TOKEN.match(text):
        return text
    local, at, domain = text.rpartition("@")
    if at and (not local or _TOKEN.match(local)) and _TOKEN.match(domain):
        return text
    return _quoted(text)


def b_prefixes(results: Sequence[SignatureResult]) -> list[str | None]:
    """header.b of each result: the shortest prefix of its b= (at least 8 characters) that
    no other signature of the message shares (libopendkim dkim_get_sigsubstring)."""
    return _b_prefixes(results)


def _b_prefixes(results: Sequence[SignatureResult]) -> list[str | None]:
    bs = [r.b for r in results]
    values = [b for b in bs if b]
    n = _MIN_B_PREFIX
    for i, a in enumerate(values):
        for other in values[i + 1 :]:
            if a != other and a[:n] == other[:n]:
                common = 0
                for x, y in zip(a, other, strict=False):
                    if x != y:
                        break
                    common += 1
                n = max(n, common + 1)
    return [b[:n] if b else None for b in bs]


# What OpenDKIM's A-R says for each error (opendkim.c dkimf_ar_all_sigs): temperror for key
# lookups that failed or answered garbage (KEYFAIL, DNSSYNTAX), policy for a key that is too
# small, fail for every signature whose key was looked for, permerror for one rejected
# before that. Errors OpenDKIM does not have take the nearest of these.
_AR_RESULT_OF: Final[Mapping[VerifyError, DkimResult]] = {
    VerifyError.NO_SIGNATURE: DkimResult.NONE,
    VerifyError.SIGNATURE_SYNTAX: DkimResult.PERMERROR,
    VerifyError.SHA1_REFUSED: DkimResult.PERMERROR,
    VerifyError.EXPIRED: DkimResult.PERMERROR,
    VerifyError.FUTURE_TIMESTAMP: DkimResult.PERMERROR,
    VerifyError.SIGNATURE_IGNORED: DkimResult.NEUTRAL,
    VerifyError.KEY_NOT_RETRIEVED: DkimResult.TEMPERROR,
    VerifyError.KEY_QUERY_TEMPFAIL: DkimResult.TEMPERROR,
    VerifyError.KEY_QUERY_FAILED: DkimResult.TEMPERROR,
    VerifyError.KEY_MISSING: DkimResult.TEMPERROR,
    VerifyError.KEY_SYNTAX: DkimResult.TEMPERROR,
    VerifyError.KEY_TOO_SHORT: DkimResult.POLICY,
    VerifyError.KEY_BELOW_MINIMUM: DkimResult.POLICY,
}

# libopendkim's dkim_sig_geterrorstr() words, where OpenDKIM has the same error. The A-R
# carries them (only for fail and policy), and so does LogResults' line (`sigerror_text`);
# other logs keep dkimd's own wording (`reason`).
_AR_REASONS: Final[Mapping[VerifyError, str]] = {
    VerifyError.EXPIRED: "signature expired",
    VerifyError.FUTURE_TIMESTAMP: "signature timestamp in the future",
    VerifyError.KEY_NOT_RETRIEVED: "key DNS query failed",
    VerifyError.KEY_QUERY_TEMPFAIL: "key DNS query failed",
    VerifyError.KEY_QUERY_FAILED: "key DNS query failed",
    VerifyError.KEY_MISSING: "key DNS reply corrupt",
    VerifyError.KEY_SYNTAX: "key DNS reply corrupt",
    VerifyError.MUST_BE_SIGNED: "unprotected header field",
    VerifyError.KEY_NOT_FOUND: "key not found in DNS",
    VerifyError.KEY_REVOKED: "key revoked",
    VerifyError.KEY_TYPE_MISMATCH: "unknown key type",
    VerifyError.KEY_HASH_REFUSED: "signature-key hash mismatch",
    VerifyError.KEY_NOT_FOR_EMAIL: "not an e-mail key",
    VerifyError.KEY_STRICT_IDENTITY: "unauthorized subdomain",
    VerifyError.KEY_TOO_SHORT: "signing key too small",
    VerifyError.KEY_BELOW_MINIMUM: "signing key too small",
    # libopendkim reports a changed body the same way as a bad b= (observed, 2.11).
    VerifyError.BODY_HASH_MISMATCH: "signature verification failed",
    VerifyError.BODY_TRUNCATED: "signature verification failed",
    VerifyError.SIGNATURE_MISMATCH: "signature verification failed",
}


# Errors found in the key record before the key is put to use: libopendkim knows no key size
# then, and OpenDKIM's A-R has no "(N-bit key)" comment (observed for h= and s= mismatches).
_KEY_UNUSED: Final = frozenset(
    {
        VerifyError.KEY_TYPE_MISMATCH,
        VerifyError.KEY_HASH_REFUSED,
        VerifyError.KEY_NOT_FOR_EMAIL,
        VerifyError.KEY_STRICT_IDENTITY,
    }
)


# Errors libopendkim finds while it reads the signature's time tags, before it has stored
# a=: its A-R names the algorithm it starts with, rsa-sha1 (observed, ClockDrift cases).
_ALGORITHM_UNREAD: Final = frozenset({VerifyError.EXPIRED, VerifyError.FUTURE_TIMESTAMP})
_UNREAD_ALGORITHM = "rsa-sha1"


def sigerror_text(result: SignatureResult) -> str:
    """libopendkim's words for a signature's outcome (dkim_sig_geterrorstr), as OpenDKIM's
    LogResults line quotes them: "no signature error" for a pass."""
    if result.error is None:
        return "no signature error"
    return _AR_REASONS.get(result.error) or result.reason


def ar_result(result: SignatureResult) -> DkimResult:
    """The result word OpenDKIM's A-R gives this signature (a t=y key changes nothing)."""
    if result.error is None:
        return DkimResult.PASS
    return _AR_RESULT_OF.get(result.error, DkimResult.FAIL)


def format_result(
    result: SignatureResult,
    b_prefix: str | None = None,
    dnssec: str | None = None,
    word: DkimResult | None = None,
) -> str:
    """One "dkim=..." resinfo, as OpenDKIM 2.11 writes it:

        dkim=<result>[ reason="<why>"][ (<bits>-bit key[; <dnssec>])] header.d=<d>
        header.i=<i> header.a=<a> header.s=<s>[ header.b=<b prefix>]

    on one line (the item is never folded inside). The reason is given for fail and policy
    only; the key size only when the key was put to use. `word` replaces the result word
    (BogusKey/UnprotectedKey, dkimd.key_trust); a reason the item had stays.
    """
    own = ar_result(result)
    if word is None:
        word = own
    parts = [f"dkim={word.value}"]
    if word is DkimResult.NONE:
        return parts[0]
    if own in (DkimResult.FAIL, DkimResult.POLICY) and result.error is not None:
        reason = _AR_REASONS.get(result.error) or result.reason
        parts.append(f"reason={_quoted(reason)}")
    if result.key_bits and result.error not in _KEY_UNUSED:
        comment = f"{result.key_bits}-bit key"
        if dnssec:
            comment += f"; {_clean(dnssec)}"
        parts.append(f"({comment})")
    if result.domain is not None:
        parts.append(f"header.d={_value(result.domain)}")
    if result.identity is not None:
        parts.append(f"header.i={_value(result.identity)}")
    if result.error in _ALGORITHM_UNREAD:
        parts.append(f"header.a={_UNREAD_ALGORITHM}")
    elif result.algorithm is not None:
        parts.append(f"header.a={_value(result.algorithm)}")
    if result.selector is not None:
        parts.append(f"header.s={_value(result.selector)}")
    if b_prefix:
        # OpenDKIM writes the base64 prefix bare even with "/" or "+" in it; parsers expect that.
        bare = _BASE64.match(b_prefix)
        parts.append(f"header.b={b_prefix if bare else _value(b_prefix)}")
    return " ".join(parts)


def fold_tokens(tokens: Sequence[str]) -> str:
    """Join A-R tokens as OpenDKIM does (opendkim.c, DKIM_HDRMARGIN).

    The column starts after "Authentication-Results: " (25, counting as OpenDKIM does);
    a token that would reach column 75 starts a new line (CRLF TAB, column 8), any other
    follows a space. A token is never split, however long.
    """
    column = len(AR_FIELD_NAME) + 3
    out: list[str] = []
    for i, token in enumerate(tokens):
        if i:
            if column + len(token) >= _HDR_MARGIN:
                out.append("\r\n\t")
                column = 8
            else:
                out.append(" ")
        out.append(token)
        column += len(token)
    return "".join(out)


def authentication_results_value(
    authserv_id: str,
    results: Sequence[SignatureResult],
    *,
    dnssec: str | None = "unprotected",
    atps: str | None = "neutral",
    header_b: bool = True,
    dnssec_words: Sequence[str | None] | None = None,
    result_words: Sequence[DkimResult | None] | None = None,
) -> bytes:
    """The value of an Authentication-Results field (no leading space, no trailing CRLF),
    byte for byte as OpenDKIM 2.11 writes it, e.g.::

        unknown-host; dkim=none; dkim-atps=neutral
        mx.example.org;
        \tdkim=pass (1024-bit key) header.d=example.com ... header.b=RNAhx6cV;
        \tdkim-atps=neutral

    One item per signature, in header order. `dnssec` is the word after the key size
    ("unprotected" for a key from an unsigned zone, None when unknown, as with test
    keys). `atps` is the RFC 6541 result Debian's build (_FFR_ATPS) always reports,
    "neutral" when no ATPS check was made; None leaves the item out. `header_b=False`
    is NoHeaderB. `dnssec_words` and `result_words`, when given, hold one entry per
    signature: its own DNSSEC word (instead of `dnssec`) and a replacement result word
    (None: unchanged), as dkimd.key_trust judges them.
    """
    if not results:
        results = [SignatureResult(DkimResult.NONE, VerifyError.NO_SIGNATURE)]
    prefixes = _b_prefixes(results) if header_b else [None] * len(results)
    if dnssec_words is None and result_words is None:
        items = [format_result(r, p, dnssec) for r, p in zip(results, prefixes, strict=True)]
    else:
        count = len(results)
        words = list(dnssec_words) if dnssec_words is not None else [dnssec] * count
        overrides = list(result_words) if result_words is not None else [None] * count
        items = [
            format_result(r, p, d, w)
            for r, p, d, w in zip(results, prefixes, words, overrides, strict=True)
        ]
    if atps is not None:
        items.append(f"dkim-atps={_value(atps)}")
    tokens = [f"{_clean(authserv_id) or 'localhost'};"]
    tokens += [f"{item};" for item in items[:-1]] + items[-1:]
    return fold_tokens(tokens).encode("ascii")


def bad_format_value(authserv_id: str) -> bytes:
    """The A-R OpenDKIM writes for a message it cannot process (its BADFORMAT status: no or
    unparseable From, StrictHeaders): one line, no ATPS item."""
    authserv = _clean(authserv_id) or "localhost"
    return f"{authserv}; dkim=permerror (bad message/signature format)".encode("ascii")
