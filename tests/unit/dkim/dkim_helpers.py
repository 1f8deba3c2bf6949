"""Helpers shared by the DKIM engine tests.

Imported by name: pytest puts this directory on sys.path (rootdir import mode).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dkimd.dkim import (
    HeaderField,
    PrivateKey,
    Verifier,
    VerifyOptions,
    signature_fields,
    split_message,
)
from dkimd.dkim.results import SignatureResult
from dkimd.dns.base import TxtResult, TxtStatus

DATA = Path(__file__).resolve().parents[2] / "data"


def rsa_record(key: rsa.RSAPrivateKey, extra: str = "") -> bytes:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa;{extra} p={base64.b64encode(der).decode()}".encode()


def ed_record(key: ed25519.Ed25519PrivateKey, extra: str = "") -> bytes:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519;{extra} p={base64.b64encode(raw).decode()}".encode()


def verify_message(
    message: bytes,
    records: Mapping[str, bytes | TxtResult],
    options: VerifyOptions | None = None,
    chunk: int = 0,
    read_first: bool = False,
) -> list[SignatureResult]:
    """Run the sans-IO verifier over a CRLF message with a dict standing in for DNS.

    `read_first`: hand it the DKIM-Signature fields read beforehand, as the milter does."""
    headers, offset = split_message(message)
    given = signature_fields(headers) if read_first else None
    verifier = Verifier(headers, options or VerifyOptions(), given)
    for name in verifier.key_queries():
        value = records.get(name)
        if isinstance(value, TxtResult):
            verifier.provide_key(name, value)
        elif value is None:
            verifier.provide_key(name, TxtResult(name, TxtStatus.NXDOMAIN))
        else:
            verifier.provide_key(name, TxtResult(name, TxtStatus.OK, (value,)))
    body = message[offset:]
    step = chunk or len(body) or 1
    for i in range(0, len(body), step):
        verifier.feed_body(body[i : i + step])
    return verifier.results()


def wrap(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> PrivateKey:
    return PrivateKey(key)


def field(name: str, value: str) -> HeaderField:
    return HeaderField(name.encode(), value.encode())
