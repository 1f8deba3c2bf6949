"""ATPS, Authorized Third-Party Signatures (RFC 6541): the signer's side.

A signature by d=example.com on mail whose From domain is example.net is a third-party
signature. With the tag `atps=example.net` (and `atpsh=`, the hash that names d= in DNS)
the signer asks verifiers to look for example.net's authorisation of example.com under
`<label>._atps.example.net`, where the label is the base32 of the hash of d= (RFC 6541
4.2/4.3), or d= itself with `atpsh=none`.

OpenDKIM (mlfi_eoh, `_FFR_ATPS` as Debian builds it): when the From domain is in
`ATPSDomains`, every signature of the message gets `atpsh=<ATPSHashAlgorithm>` and
`atps=<From domain>`, in that order, whatever its d= (it does not check that d= differs).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

__all__ = ["ATPS_HASHES", "atps_label", "atps_tags"]

#: ATPSHashAlgorithm values OpenDKIM accepts; the first is its default.
ATPS_HASHES: Final = ("sha256", "sha1", "none")


def atps_tags(author_domain: str, hash_name: str = "sha256") -> tuple[tuple[str, str], ...]:
    """The extension tags of a signature made for mail from `author_domain`."""
    if hash_name not in ATPS_HASHES:
        raise ValueError(f"unknown ATPS hash {hash_name!r}")
    return (("atpsh", hash_name), ("atps", author_domain.lower()))


def atps_label(signing_domain: str, hash_name: str = "sha256") -> str:
    """The first label of the ATPS query name for d= (RFC 6541 4.3): upper-case base32 of
    the hash of the lower-cased domain, `=` padding kept as libopendkim keeps it; the
    domain itself for `none`."""
    domain = signing_domain.rstrip(".").lower()
    if hash_name == "none":
        return domain
    if hash_name not in ATPS_HASHES:
        raise ValueError(f"unknown ATPS hash {hash_name!r}")
    digest = hashlib.new(hash_name, domain.encode("ascii", "replace")).digest()
    return base64.b32encode(digest).decode("ascii")
