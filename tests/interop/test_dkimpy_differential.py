"""Differential tests against dkimpy (an independent implementation), in both directions.

We sign and dkimpy verifies; dkimpy signs and we verify: every canonicalization pair, RSA and
Ed25519, over inputs chosen to hit the corners of canonicalization. A one-byte change to the
body or to a signed header must fail in both directions.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dkimd.dkim import (
    DkimResult,
    LineEndingNormalizer,
    PrivateKey,
    Signer,
    SigningRequest,
    Verifier,
    VerifyOptions,
    split_message,
)
from dkimd.dns.base import TxtResult, TxtStatus

pytestmark = pytest.mark.interop

DOMAIN = "example.com"
CANONS = ["simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed"]
ALGOS = ["rsa-sha256", "ed25519-sha256"]

HEAD = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: test\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
)
MESSAGES: dict[str, bytes] = {
    "plain": HEAD + b"\r\nHello.\r\n",
    "empty-body": HEAD + b"\r\n",
    "no-body-separator": HEAD,
    "no-final-crlf": HEAD + b"\r\nno newline at the end",
    "bare-lf-in-body": HEAD + b"\r\nline one\nline two\r\nthree\n",
    "trailing-whitespace-and-blank-lines": HEAD + b"\r\ntext \t \r\n \r\n\t\r\n\r\n\r\n",
    "only-blank-lines": HEAD + b"\r\n\r\n\r\n\r\n",
    "inner-whitespace": HEAD + b"\r\n a \t  b\t\tc  \r\n\r\n  x\r\n",
    "folded-headers": (
        b"From: Alice\r\n <alice@example.com>\r\n"
        b"To: a@example.net,\r\n\tb@example.net ,\r\n   c@example.net\r\n"
        b"Subject:   folded   \r\n  subject\t\r\n"
        b"\r\nbody\r\n"
    ),
    "duplicate-headers": (
        HEAD + b"To: second@example.net\r\nSubject: second subject\r\n\r\nbody\r\n"
    ),
    "8bit-headers": (
        b"From: =?utf-8?q?x?= J\xc3\xb6rg <j@example.com>\r\n"
        b"To: caf\xc3\xa9@example.net\r\n"
        b"Subject: \xe2\x82\xac 100 \xff\r\n\r\nbody \xc3\xa9\r\n"
    ),
    "very-long-lines": HEAD + b"\r\n" + b"x" * 100_000 + b"\r\n" + b"y " * 50_000 + b"\r\n",
}


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[PrivateKey, bytes, bytes]]:
    """algorithm -> (our key, the key in dkimpy's format, the DNS record)."""
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ed25519.Ed25519PrivateKey.generate()
    r_pem = r.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    r_spki = r.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    e_seed = e.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    e_pub = e.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "rsa-sha256": (
            PrivateKey(r),
            r_pem,
            b"v=DKIM1; k=rsa; p=" + base64.b64encode(r_spki),
        ),
        "ed25519-sha256": (
            PrivateKey(e),
            base64.b64encode(e_seed),
            b"v=DKIM1; k=ed25519; p=" + base64.b64encode(e_pub),
        ),
    }


def _selector(algo: str) -> str:
    return "rsa" if algo.startswith("rsa") else "ed"


def _dnsfunc(records: dict[str, bytes]) -> Callable[..., bytes]:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip(".").lower(), b"")

    return lookup


def _records(keys: dict[str, tuple[PrivateKey, bytes, bytes]]) -> dict[str, bytes]:
    return {f"{_selector(a)}._domainkey.{DOMAIN}": keys[a][2] for a in ALGOS}


def _crlf(message: bytes) -> bytes:
    """What the CLI and Postfix hand the engine: every line end CRLF (dkimpy does the same)."""
    n = LineEndingNormalizer()
    return n.feed(message) + n.flush()


def our_sign(message: bytes, key: PrivateKey, algo: str, canon: str, chunk: int = 4096) -> bytes:
    message = _crlf(message)
    hc, bc = canon.split("/")
    req = SigningRequest(
        DOMAIN, _selector(algo), key, header_canon=hc, body_canon=bc, algorithm=algo
    )
    headers, offset = split_message(message)
    signer = Signer(req)
    body = message[offset:]
    for i in range(0, len(body), chunk):
        signer.feed_body(body[i : i + chunk])
    return signer.sign(headers).raw + b"\r\n" + message


def our_verify(message: bytes, records: dict[str, bytes], chunk: int = 4096) -> DkimResult:
    message = _crlf(message)
    headers, offset = split_message(message)
    v = Verifier(headers, VerifyOptions(max_signatures=1))
    for name in v.key_queries():
        rec = records.get(name)
        status = TxtStatus.OK if rec else TxtStatus.NXDOMAIN
        v.provide_key(name, TxtResult(name, status, (rec,) if rec else ()))
    body = message[offset:]
    for i in range(0, len(body), chunk):
        v.feed_body(body[i : i + chunk])
    return v.results()[0].result


def dkimpy_sign(message: bytes, keydata: bytes, algo: str, canon: str) -> bytes:
    hc, bc = canon.split("/")
    sig = dkim.sign(
        message,
        _selector(algo).encode(),
        DOMAIN.encode(),
        keydata,
        canonicalize=(hc.encode(), bc.encode()),
        signature_algorithm=algo.encode(),
        include_headers=[b"from", b"to", b"subject", b"date"],
    )
    return sig + message


def dkimpy_verify(message: bytes, records: dict[str, bytes]) -> bool:
    return bool(dkim.verify(message, dnsfunc=_dnsfunc(records)))


def _tamper_body(message: bytes) -> bytes:
    _, offset = split_message(message)
    body = message[offset:]
    if not body.strip(b"\r\n \t"):
        return message + b"x\r\n" if offset < len(message) else message + b"\r\nx\r\n"
    i = max(i for i, c in enumerate(body) if c not in b"\r\n \t")
    return message[: offset + i] + bytes([body[i] ^ 1]) + message[offset + i + 1 :]


def _tamper_subject(message: bytes) -> bytes:
    # The bottom-most Subject is the one every h= with "subject" covers (RFC 6376 5.4.2).
    i = message.rindex(b"Subject:") + len(b"Subject:") + 3
    return message[:i] + bytes([message[i] ^ 1]) + message[i + 1 :]


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("canon", CANONS)
@pytest.mark.parametrize("name", list(MESSAGES))
def test_we_sign_dkimpy_verifies(
    name: str, canon: str, algo: str, keys: dict[str, tuple[PrivateKey, bytes, bytes]]
) -> None:
    records = _records(keys)
    signed = our_sign(MESSAGES[name], keys[algo][0], algo, canon)
    assert dkimpy_verify(signed, records)
    assert not dkimpy_verify(_tamper_subject(signed), records)
    assert not dkimpy_verify(_tamper_body(signed), records)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("canon", CANONS)
@pytest.mark.parametrize("name", list(MESSAGES))
def test_dkimpy_signs_we_verify(
    name: str, canon: str, algo: str, keys: dict[str, tuple[PrivateKey, bytes, bytes]]
) -> None:
    records = _records(keys)
    signed = dkimpy_sign(MESSAGES[name], keys[algo][1], algo, canon)
    assert our_verify(signed, records) is DkimResult.PASS
    assert our_verify(signed, records, chunk=1 if len(signed) < 5000 else 997) is DkimResult.PASS
    assert our_verify(_tamper_subject(signed), records) is DkimResult.FAIL
    assert our_verify(_tamper_body(signed), records) is DkimResult.FAIL


def _big_body() -> bytes:
    line = b"Lorem ipsum dolor sit amet,  consectetur\tadipiscing elit. \r\n"
    return (line * (20 * 1024 * 1024 // len(line))) + b"\r\n\r\n"


@pytest.mark.slow
@pytest.mark.parametrize("canon", ["simple/simple", "relaxed/relaxed"])
def test_twenty_megabyte_body_both_directions(
    canon: str, keys: dict[str, tuple[PrivateKey, bytes, bytes]]
) -> None:
    records = _records(keys)
    message = HEAD + b"\r\n" + _big_body()
    ours = our_sign(message, keys["rsa-sha256"][0], "rsa-sha256", canon, chunk=65536)
    assert dkimpy_verify(ours, records)
    theirs = dkimpy_sign(message, keys["ed25519-sha256"][1], "ed25519-sha256", canon)
    assert our_verify(theirs, records, chunk=65536) is DkimResult.PASS
    assert our_verify(_tamper_body(theirs), records, chunk=65536) is DkimResult.FAIL
