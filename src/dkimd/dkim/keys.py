"""DNS key records (RFC 6376 section 3.6.1, RFC 8463 section 4) and private keys.

Private keys are loaded from what signers actually have on disk:

* PEM PKCS#1 "BEGIN RSA PRIVATE KEY" (opendkim-genkey with OpenSSL 1.x),
* PEM PKCS#8 "BEGIN PRIVATE KEY" (OpenSSL 3, RSA or Ed25519),
* the base64 of a raw 32-byte Ed25519 seed (RFC 8463 Appendix A, dkimpy's dknewkey),
* DER of either PKCS form.

Nothing here puts key bytes into an exception message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from typing import Final, cast

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from dkimd.dkim.errors import KeyLoadError, KeyRecordError, TagListError
from dkimd.dkim.tags import parse_tag_list, strip_fws

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey

KEY_TYPES: Final = ("rsa", "ed25519")
# Stateless descriptors, shared by signing and verifying rather than made per signature.
HASHES: Final = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}
PKCS1V15: Final = padding.PKCS1v15()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A parsed DKIM key record. `public_key` is None when p= is empty (the key is revoked)."""

    key_type: str
    public_key: PublicKey | None = field(repr=False)
    key_bits: int
    hash_algorithms: tuple[str, ...] | None  # h=; None means any
    service_types: tuple[str, ...]  # s=; default ("*",)
    flags: tuple[str, ...]  # t=
    notes: str = ""

    @property
    def revoked(self) -> bool:
        return self.public_key is None

    @property
    def testing(self) -> bool:
        """t=y: the domain is testing DKIM (RFC 6376 3.6.1)."""
        return "y" in self.flags

    @property
    def strict(self) -> bool:
        """t=s: i= must be exactly d=, not a subdomain (RFC 6376 3.6.1)."""
        return "s" in self.flags

    def allows_hash(self, hash_name: str) -> bool:
        return self.hash_algorithms is None or hash_name in self.hash_algorithms

    def allows_email(self) -> bool:
        return "*" in self.service_types or "email" in self.service_types


def _colon_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip(" \t\r\n").lower() for item in value.split(":") if item.strip())


def load_public_key(key_type: str, der: bytes) -> PublicKey:
    """The p= bytes of a record as a public key object. Raises KeyRecordError."""
    if key_type == "ed25519":
        # RFC 8463 section 4: p= is the raw 32-byte public key, not a SubjectPublicKeyInfo.
        if len(der) != 32:
            raise KeyRecordError("ed25519 public key is not 32 bytes")
        return ed25519.Ed25519PublicKey.from_public_bytes(der)
    key: object
    try:
        # RFC 6376 3.6.1: an RSA p= is a SubjectPublicKeyInfo...
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        try:
            # ...but bare PKCS#1 RSAPublicKey is published in the wild and OpenDKIM accepts it.
            pem = (
                b"-----BEGIN RSA PUBLIC KEY-----\n"
                + base64.encodebytes(der)
                + b"-----END RSA PUBLIC KEY-----\n"
            )
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise KeyRecordError("p= is not a valid RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyRecordError("p= holds a key of another type than k=")
    return key


def parse_key_record(data: bytes | str) -> KeyRecord:
    """Parse a TXT key record (its strings already joined). Raises KeyRecordError."""
    try:
        tags = parse_tag_list(data)
    except TagListError as exc:
        raise KeyRecordError(f"key record: {exc.reason}") from None
    # 3.6.1: v= is optional, but if present it MUST be the first tag and be "DKIM1".
    if "v" in tags:
        if next(iter(tags)) != "v":
            raise KeyRecordError("v= is not the first tag")
        if tags["v"] != "DKIM1":
            raise KeyRecordError("unsupported key record version")
    key_type = tags.get("k", "rsa").strip().lower()
    if key_type not in KEY_TYPES:
        raise KeyRecordError("unknown key type k=")
    if "p" not in tags:
        raise KeyRecordError("key record has no p=")
    p = strip_fws(tags["p"])
    hash_algorithms = _colon_list(tags["h"]) if "h" in tags else None
    service_types = _colon_list(tags["s"]) if "s" in tags else ("*",)
    flags = _colon_list(tags.get("t", ""))
    if not p:
        # 3.6.1: "An empty value means that this public key has been revoked."
        return KeyRecord(
            key_type, None, 0, hash_algorithms, service_types, flags, tags.get("n", "")
        )
    try:
        der = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        raise KeyRecordError("p= is not valid base64") from None
    public_key = load_public_key(key_type, der)
    bits = public_key.key_size if isinstance(public_key, rsa.RSAPublicKey) else 256
    return KeyRecord(
        key_type, public_key, bits, hash_algorithms, service_types, flags, tags.get("n", "")
    )


class PrivateKey:
    """A signing key. `key_type` is "rsa" or "ed25519"; `algorithm` the default a= for it."""

    __slots__ = ("_key", "bits", "key_type")

    def __init__(self, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        if isinstance(key, rsa.RSAPrivateKey):
            self.key_type = "rsa"
            self.bits = key.key_size
        else:
            self.key_type = "ed25519"
            self.bits = 256

    @property
    def algorithm(self) -> str:
        return "rsa-sha256" if self.key_type == "rsa" else "ed25519-sha256"

    def __repr__(self) -> str:
        return f"<PrivateKey {self.key_type} {self.bits} bits>"

    def sign(self, data: bytes, hash_name: str = "sha256") -> bytes:
        """Raw signature primitive: RSASSA-PKCS1-v1_5 over `data` with `hash_name`, or Ed25519
        over `data` itself (the caller, `algorithms`, passes the SHA-256 digest per RFC 8463)."""
        # key_type, set once from the key, rather than an isinstance() against an ABC
        # (Python code) for every signature.
        if self.key_type == "rsa":
            return cast(rsa.RSAPrivateKey, self._key).sign(data, PKCS1V15, HASHES[hash_name])
        return cast(ed25519.Ed25519PrivateKey, self._key).sign(data)

    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def public_key_der(self) -> bytes:
        """SubjectPublicKeyInfo DER, for either type."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def dns_public_key(self) -> bytes:
        """What the p= of this key's DNS record decodes to (SPKI for RSA, raw for Ed25519)."""
        pub = self._key.public_key()
        if isinstance(pub, ed25519.Ed25519PublicKey):
            return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return self.public_key_der()

    def matches(self, record: KeyRecord) -> bool:
        """True when `record` publishes this key's public half."""
        if record.public_key is None or record.key_type != self.key_type:
            return False
        pub = record.public_key
        if isinstance(pub, ed25519.Ed25519PublicKey):
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return raw == self.dns_public_key()
        der = pub.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return der == self.public_key_der()


def _from_object(key: object) -> PrivateKey:
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return PrivateKey(key)
    raise KeyLoadError("unsupported private key type (want RSA or Ed25519)")


# What base64 text (with line breaks) is made of: bytes.translate(None, this) leaves
# nothing of it.
_BASE64_TEXT: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    """Load a private key from PEM, DER or a base64 Ed25519 seed. Raises KeyLoadError."""
    if data[:1] == b"\x30":
        # DER (a SEQUENCE) is binary: its last bytes may well be 0x20 or 0x0a, so it is
        # tried unstripped. 0x30 is also "0", so base64 text may start with it too (one
        # Ed25519 seed in 64): text that is not DER goes on to the base64 forms below.
        try:
            return _from_object(serialization.load_der_private_key(data, password))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            if data.translate(None, _BASE64_TEXT):
                raise KeyLoadError("private key could not be decoded") from None
    stripped = data.strip()
    if not stripped:
        raise KeyLoadError("private key file is empty")
    if stripped.startswith(b"-----BEGIN"):
        try:
            return _from_object(serialization.load_pem_private_key(stripped, password))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # The library's message may quote parts of the input; say only what failed.
            raise KeyLoadError("private key could not be decoded") from None
    try:
        raw = base64.b64decode(b"".join(stripped.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KeyLoadError("private key is neither PEM, DER nor a base64 seed") from None
    if len(raw) == 64:
        # libsodium layout: seed || public key. Keep the seed; check the public half agrees.
        key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
        pub = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        if pub != raw[32:]:
            raise KeyLoadError("ed25519 key: public half does not match the seed")
        return PrivateKey(key)
    if len(raw) == 32:
        return PrivateKey(ed25519.Ed25519PrivateKey.from_private_bytes(raw))
    if raw[:1] == b"\x30":
        # Base64 of DER without PEM armour (what some OpenDKIM set-ups keep in the KeyTable).
        try:
            return _from_object(serialization.load_der_private_key(raw, password))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyLoadError("private key could not be decoded") from None
    raise KeyLoadError("base64 private key is not a 32-byte Ed25519 seed")


def load_private_key_file(path: str | os.PathLike[str]) -> PrivateKey:
    """Read and load a key file. The only I/O in `dkimd.dkim`. Raises KeyLoadError."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except OSError as exc:
        raise KeyLoadError(f"cannot read key file {os.fspath(path)!r}: {exc.strerror}") from None
    return load_private_key(data)
