"""Make DKIM key pairs: RSA (any size OpenDKIM accepts) and Ed25519 (RFC 8463).

Private keys are written as PKCS#8 PEM ("BEGIN PRIVATE KEY"), which is what Debian 12's
opendkim-genkey produces (it shells out to `openssl genrsa`, and OpenSSL 3 writes PKCS#8)
and what `openssl genpkey -algorithm ed25519` writes for upstream's `--ed25519`.
OpenDKIM, dkimpy and our own engine all load that form.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

KeyType = Literal["rsa", "ed25519"]

# RFC 8301 section 3.2: signers MUST use RSA keys of at least 1024 bits.
# Below that we still generate (test rigs need short keys) but warn; below 512 OpenSSL 3
# itself refuses, and such a key is trivially factored, so we refuse too.
RSA_RECOMMENDED_MIN_BITS = 1024
RSA_MIN_BITS = 512
# Upper bound only to keep a typo (-b 20480) from burning minutes of CPU; the p= value of a
# 16384-bit key (about 2.8 kB) still fits comfortably in one TXT record.
RSA_MAX_BITS = 16384


class KeyGenerationError(Exception):
    """The key could not be generated with the parameters given."""


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A fresh key pair. `private_pem` is secret: never print or log it."""

    key_type: KeyType
    bits: int
    private_pem: bytes
    public_key_b64: str  # the p= value for the DNS record

    def __repr__(self) -> str:
        # Keep the private half out of tracebacks, logs and test failure output.
        return f"GeneratedKey(key_type={self.key_type!r}, bits={self.bits})"


def public_key_b64(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The p= value for `key`: RFC 6376 section 3.6.1 for RSA, RFC 8463 section 4 for Ed25519.

    RSA publishes the DER SubjectPublicKeyInfo (what `openssl rsa -pubout` prints between
    the PEM armour lines, which is what opendkim-genkey copies). Ed25519 publishes the raw
    32-byte public key, not an SPKI structure.
    """
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    else:
        raw = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return base64.b64encode(raw).decode("ascii")


def _pkcs8_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _generate_short_rsa(bits: int) -> rsa.RSAPrivateKey:
    # `cryptography` refuses to generate RSA keys under 1024 bits, while opendkim-genkey
    # happily makes them (with a warning) through the openssl binary. Do the same, so that
    # `-b 512` behaves as admins expect; the key only travels through a pipe.
    openssl = shutil.which("openssl")
    if openssl is None:
        raise KeyGenerationError(
            f"RSA keys under {RSA_RECOMMENDED_MIN_BITS} bits need the openssl program, "
            "which is not installed"
        )
    proc = subprocess.run(
        [openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise KeyGenerationError(
            f"openssl could not make a {bits}-bit RSA key (exit status {proc.returncode})"
        )
    key = serialization.load_pem_private_key(proc.stdout, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):  # pragma: no cover - openssl misbehaving
        raise KeyGenerationError("openssl returned something other than an RSA key")
    return key


def generate_rsa(bits: int) -> GeneratedKey:
    """A new RSA key of `bits` bits (public exponent 65537, as `openssl genrsa` uses)."""
    if bits < RSA_MIN_BITS:
        raise KeyGenerationError(
            f"{bits}-bit RSA keys are refused: the minimum is {RSA_MIN_BITS}, "
            f"and RFC 8301 requires at least {RSA_RECOMMENDED_MIN_BITS}"
        )
    if bits > RSA_MAX_BITS:
        raise KeyGenerationError(f"{bits}-bit RSA keys are refused: the maximum is {RSA_MAX_BITS}")
    if bits < RSA_RECOMMENDED_MIN_BITS:
        key = _generate_short_rsa(bits)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return GeneratedKey("rsa", key.key_size, _pkcs8_pem(key), public_key_b64(key))


def generate_ed25519() -> GeneratedKey:
    """A new Ed25519 key (RFC 8463): always 256 bits."""
    key = ed25519.Ed25519PrivateKey.generate()
    return GeneratedKey("ed25519", 256, _pkcs8_pem(key), public_key_b64(key))
