"""Helpers for the ARC engine tests: keys, a dict standing in for DNS, seal and verify.

Imported by name: pytest puts this directory on sys.path (rootdir import mode).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path

from dkimd.arc import (
    ArcResult,
    ArcSealer,
    ArcVerifier,
    ArcVerifyOptions,
    SealRequest,
    arc_ar_item,
)
from dkimd.dkim import HeaderField, PrivateKey, split_message
from dkimd.dns.base import TxtResult, TxtStatus

DATA = Path(__file__).resolve().parents[2] / "data" / "arc"
NOW = 1_700_000_000

MESSAGE = (
    b"From: Alice <alice@origin.example>\r\n"
    b"To: list@lists.example\r\n"
    b"Subject: plans for Tuesday\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <1@origin.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"See you  there.\r\n"
    b"\r\n"
)


def record(key: PrivateKey, extra: str = "") -> bytes:
    p = base64.b64encode(key.dns_public_key()).decode()
    return f"v=DKIM1; k={key.key_type};{extra} p={p}".encode()


def seal(
    message: bytes,
    key: PrivateKey,
    records: Mapping[str, bytes | TxtResult],
    *,
    domain: str = "hop.example",
    selector: str = "arc",
    authserv_id: str = "mx.hop.example",
    results: str = "spf=pass smtp.mailfrom=origin.example",
    timestamp: int = NOW,
    signed_headers: Sequence[str] | None = None,
    received: bytes | None = None,
) -> bytes:
    """`message` with the next ARC set prepended, as a hop that verified it first would add:
    the chain is the one of `received` (the message as it came in, before the hop changed
    it; default `message` itself)."""
    headers, offset = split_message(message)
    chain = verify(message if received is None else received, records)
    extra = {} if signed_headers is None else {"signed_headers": signed_headers}
    request = SealRequest(domain, selector, key, authserv_id, timestamp=timestamp, **extra)
    sealer = ArcSealer(request)
    sealer.feed_body(message[offset:])
    fields = sealer.seal(headers, chain, f"{results}; {arc_ar_item(chain)}")
    assert fields, sealer.refusal
    return serialize(fields) + message


def serialize(fields: Sequence[HeaderField]) -> bytes:
    return b"".join(f.raw + b"\r\n" for f in fields)


def verify(
    message: bytes,
    records: Mapping[str, bytes | TxtResult],
    options: ArcVerifyOptions | None = None,
    chunk: int = 0,
) -> ArcResult:
    headers, offset = split_message(message)
    verifier = ArcVerifier(headers, options or ArcVerifyOptions(now=NOW))
    for name in verifier.key_queries():
        value = records.get(name)
        if isinstance(value, TxtResult):
            verifier.provide_key(name, value)
        elif value is None:
            verifier.provide_key(name, TxtResult(name, TxtStatus.NXDOMAIN))
        else:
            verifier.provide_key(name, TxtResult(name, TxtStatus.OK, (value,)))
    body = message[offset:]
    step = chunk or max(len(body), 1)
    for i in range(0, len(body), step):
        verifier.feed_body(body[i : i + step])
    return verifier.result()
