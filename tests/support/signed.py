"""A message signed by dkimd's own signer with a fresh key, and the key's DNS record."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd.dkim import HeaderField, Signer, SigningRequest, load_private_key

Fields = list[tuple[bytes, bytes]]


def signed_message(
    headers: Sequence[tuple[bytes, bytes]], body: bytes, *, domain: str = "example.com"
) -> tuple[Fields, dict[str, str]]:
    """`headers` with a DKIM-Signature (s=test) over them and `body` on top, and the TXT
    record that verifies it, by name."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    signer = Signer(SigningRequest(domain, "test", load_private_key(pem)))
    signer.feed_body(body)
    sig = signer.sign([HeaderField(n, v) for n, v in headers])
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()
    return [(sig.name, sig.value), *headers], {f"test._domainkey.{domain}": record}
