"""ATPS, Authorized Third-Party Signatures (RFC 6541), both sides, as OpenDKIM 2.11 does them.

A signature by d=example.com on mail whose From domain is example.net is a third-party
signature. With the tag `atps=example.net` (and `atpsh=`, the hash that names d= in DNS)
the signer asks verifiers to look for example.net's authorisation of example.com under
`<label>._atps.example.net`, where the label is the base32 of the hash of d= (RFC 6541
4.2/4.3), or d= itself with `atpsh=none`.

Signing (opendkim.c mlfi_eoh, `_FFR_ATPS` as Debian builds it): when the From domain is in
`ATPSDomains`, every signature of the message gets `atpsh=<ATPSHashAlgorithm>` and
`atps=<From domain>`, in that order, whatever its d= (it does not check that d= differs).

Verifying (mlfi_eom and libopendkim dkim_atps_check): unless a passing signature is an
author signature (d= is the From domain), each passing third-party signature is checked in
header order until one is authorised. The answer is the `dkim-atps=` item of the
Authentication-Results field:

* `pass`: the TXT record at the query name is exactly `v=ATPS1` (DKIM_ATPS_FOUND);
* `fail`: the name does not exist, has no TXT record, or its record is anything else
  (DKIM_ATPS_NOTFOUND);
* `neutral`: nothing was checked, or a lookup failed or answered several records
  (DKIM_ATPS_UNKNOWN). A signature without both tags, with `atps=` other than the From
  domain, or with a hash libopendkim does not know stops the walk and keeps the answer so
  far (dkim_atps_check returns DKIM_STAT_INVALID without setting one).

The lookups are made by the caller (`atps_queries` names them while the body arrives;
`atps_result` judges the answers), so the engine stays sans-IO.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from dkimd.dns.base import TxtResult, TxtStatus

__all__ = [
    "ATPS_HASHES",
    "AtpsResult",
    "AtpsSignature",
    "atps_answer",
    "atps_label",
    "atps_queries",
    "atps_query_name",
    "atps_result",
    "atps_tags",
]

#: ATPSHashAlgorithm values OpenDKIM accepts; the first is its default.
ATPS_HASHES: Final = ("sha256", "sha1", "none")
# The whole payload of an authorising record (libopendkim DKIM_ATPS_VALID, compared with strcmp).
_VALID: Final = b"v=ATPS1"
_BLANKS: Final = " \t\r\n"


class AtpsResult(enum.Enum):
    """The `dkim-atps=` result word."""

    PASS = "pass"
    FAIL = "fail"
    NEUTRAL = "neutral"


@dataclass(frozen=True, slots=True)
class AtpsSignature:
    """What the ATPS walk needs of one verified signature, in header order."""

    domain: str  # d=
    tags: Mapping[str, str]  # the signature's tag-list (atps=, atpsh=)
    passed: bool  # verified, body hash included


def atps_tags(author_domain: str, hash_name: str = "sha256") -> tuple[tuple[str, str], ...]:
    """The extension tags of a signature made for mail from `author_domain`."""
    if hash_name not in ATPS_HASHES:
        raise ValueError(f"unknown ATPS hash {hash_name!r}")
    return (("atpsh", hash_name), ("atps", author_domain.lower()))


def atps_label(signing_domain: str, hash_name: str = "sha256") -> str:
    """The first label of the ATPS query name for d= (RFC 6541 4.3): upper-case base32 of
    the hash of the domain, `=` padding kept as libopendkim keeps it; the domain itself
    for `none`. The domain is hashed as the signature spells it: libopendkim does not
    lower-case it (observed: d=Example.COM is looked for under the hash of "Example.COM").
    Tag values are Latin-1 text (dkimd.dkim.tags), so this hashes the signature's bytes."""
    if hash_name == "none":
        return signing_domain
    if hash_name not in ATPS_HASHES:
        raise ValueError(f"unknown ATPS hash {hash_name!r}")
    digest = hashlib.new(hash_name, signing_domain.encode("latin-1", "replace")).digest()
    return base64.b32encode(digest).decode("ascii")


def _same_domain(a: str, b: str) -> bool:
    return a.strip(_BLANKS).lower() == b.strip(_BLANKS).lower()


def atps_query_name(signing_domain: str, tags: Mapping[str, str], author_domain: str) -> str | None:
    """Where dkim_atps_check looks for the author domain's authorisation of d=, or None
    when it refuses the signature (a tag missing, `atps=` not the author domain, a hash
    it does not know). Hash names are case-insensitive, as libopendkim's table lookup."""
    atps = tags.get("atps")
    atpsh = tags.get("atpsh")
    if atps is None or atpsh is None or not signing_domain or not author_domain:
        return None
    if not _same_domain(atps, author_domain):
        return None
    hash_name = atpsh.strip(_BLANKS).lower()
    if hash_name not in ATPS_HASHES:
        return None
    label = atps_label(signing_domain.strip(_BLANKS), hash_name)
    return f"{label}._atps.{author_domain.strip(_BLANKS).rstrip('.').lower()}"


def atps_answer(result: TxtResult, *, missing_is_error: bool = False) -> AtpsResult | None:
    """What one answer says: PASS or FAIL, or None for a lookup that failed (the walk
    stops and the result is neutral).

    `missing_is_error`: OpenDKIM's TestDNSData reports a name it does not hold as a
    failed lookup, not as NXDOMAIN (observed: neutral, where DNS would give fail).
    """
    if result.status is TxtStatus.NXDOMAIN:
        return None if missing_is_error else AtpsResult.FAIL
    if not result.ok:
        return None
    if not result.records:
        return AtpsResult.FAIL
    if len(result.records) > 1:
        return None  # DKIM_STAT_MULTIDNSREPLY
    # The payload is read as a C string: a NUL ends it.
    payload = result.records[0].split(b"\0", 1)[0]
    return AtpsResult.PASS if payload == _VALID else AtpsResult.FAIL


def _third_party(signatures: Sequence[AtpsSignature], author_domain: str | None) -> bool:
    """Whether a check can be due: no passing author signature (dkimf_authorsigok)."""
    if author_domain is None:
        return False
    return not any(s.passed and _same_domain(s.domain, author_domain) for s in signatures)


def atps_queries(signatures: Sequence[AtpsSignature], author_domain: str | None) -> list[str]:
    """The names the walk may ask for, before anyone knows which signatures pass: one per
    third-party signature that asks for ATPS, each once. Empty for mail without atps=."""
    names: list[str] = []
    if author_domain is None:
        return names
    for sig in signatures:
        if "atps" not in sig.tags or _same_domain(sig.domain, author_domain):
            continue
        name = atps_query_name(sig.domain, sig.tags, author_domain)
        if name is not None and name not in names:
            names.append(name)
    return names


def atps_result(
    signatures: Sequence[AtpsSignature],
    author_domain: str | None,
    answers: Mapping[str, TxtResult],
    *,
    missing_is_error: bool = False,
) -> AtpsResult:
    """The `dkim-atps=` word for a verified message (mlfi_eom's walk; see the module doc).

    `answers` holds the TXT results for the names `atps_queries` gave; a name without
    one counts as a failed lookup.
    """
    if not _third_party(signatures, author_domain):
        return AtpsResult.NEUTRAL
    assert author_domain is not None
    outcome = AtpsResult.NEUTRAL
    for sig in signatures:
        if not sig.passed or _same_domain(sig.domain, author_domain):
            continue
        name = atps_query_name(sig.domain, sig.tags, author_domain)
        if name is None:
            break  # DKIM_STAT_INVALID: the result so far stands
        answer = answers.get(name)
        found = None if answer is None else atps_answer(answer, missing_is_error=missing_is_error)
        if found is None:
            return AtpsResult.NEUTRAL
        outcome = found
        if found is AtpsResult.PASS:
            break
    return outcome
