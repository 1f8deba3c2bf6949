"""Signature algorithms behind one interface, looked up by their a= name.

* rsa-sha256 (RFC 6376 3.3.2): RSASSA-PKCS1-v1_5 with SHA-256 over the header hash input.
* rsa-sha1 (RFC 6376 3.3.1): verify only; RFC 8301 section 3.1 says verifiers MUST NOT consider
  it valid, so the verifier only uses it when the operator explicitly allows it.
* ed25519-sha256 (RFC 8463 section 3): PureEdDSA over the SHA-256 digest of the header hash
  input, i.e. Ed25519(SHA-256(data)), not Ed25519(data).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dkimd.dkim.keys import HASHES, PKCS1V15, PrivateKey, PublicKey


@dataclass(frozen=True, slots=True)
class SignatureAlgorithm:
    name: str  # the a= value
    key_type: str  # the k= value it needs
    hash_name: str  # hashlib name, also the h= name of key records
    can_sign: bool

    def sign(self, key: PrivateKey, data: bytes) -> bytes:
        if not self.can_sign:
            raise ValueError(f"{self.name} is verify-only")
        if key.key_type != self.key_type:
            raise ValueError(f"{self.name} needs a {self.key_type} key")
        if self.key_type == "ed25519":
            return key.sign(hashlib.sha256(data).digest())
        return key.sign(data, self.hash_name)

    def verify(self, public_key: PublicKey, signature: bytes, data: bytes) -> bool:
        try:
            kind = _key_kind(public_key)
            if kind == "ed25519":
                if self.key_type != "ed25519":
                    return False
                ed_key = cast(ed25519.Ed25519PublicKey, public_key)
                ed_key.verify(signature, hashlib.sha256(data).digest())
                return True
            if self.key_type != "rsa" or kind != "rsa":
                return False
            rsa_key = cast(rsa.RSAPublicKey, public_key)
            rsa_key.verify(signature, data, PKCS1V15, HASHES[self.hash_name])
            return True
        except (InvalidSignature, ValueError):
            return False


# Concrete key class -> "rsa", "ed25519" or "" (neither). The key classes are ABCs, and
# an isinstance() against an ABC runs Python code on every call; the answer per concrete
# class never changes.
_KINDS: dict[type, str] = {}


def _key_kind(key: object) -> str:
    cls = type(key)
    kind = _KINDS.get(cls)
    if kind is None:
        if isinstance(key, ed25519.Ed25519PublicKey):
            kind = "ed25519"
        elif isinstance(key, rsa.RSAPublicKey):
            kind = "rsa"
        else:
            kind = ""
        _KINDS[cls] = kind
    return kind


ALGORITHMS: Final[dict[str, SignatureAlgorithm]] = {
    a.name: a
    for a in (
        SignatureAlgorithm("rsa-sha256", "rsa", "sha256", can_sign=True),
        SignatureAlgorithm("rsa-sha1", "rsa", "sha1", can_sign=False),
        SignatureAlgorithm("ed25519-sha256", "ed25519", "sha256", can_sign=True),
    )
}


def get_algorithm(name: str) -> SignatureAlgorithm | None:
    """The algorithm for an a= value (case-insensitive), or None if unknown."""
    return ALGORITHMS.get(name.lower())
