"""Verifier.needs_body(): when the milter may answer SMFIR_SKIP to a body chunk.

OpenDKIM 2.11 skips once dkim_minbody() is 0: an l= signature needs no body past its l=
bytes (observed by the differential matrix: SKIP after the first chunk of a message whose
only signature has l=)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa
from dkim_helpers import wrap

from dkimd.dkim import Signer, SigningRequest, VerifyOptions
from dkimd.dkim.headers import split_message
from dkimd.dkim.verifier import Verifier

MESSAGE = b"From: Alice <alice@example.com>\r\nSubject: hi\r\n\r\n" + b"line of body\r\n" * 20


def _signed(key: rsa.RSAPrivateKey, **kw: object) -> bytes:
    headers, offset = split_message(MESSAGE)
    signer = Signer(SigningRequest("example.com", "rsa", wrap(key), **kw))  # type: ignore[arg-type]
    signer.feed_body(MESSAGE[offset:])
    [field] = signer.sign_all(headers)
    return field.raw + b"\r\n" + MESSAGE


def _verifier(message: bytes, **options: object) -> tuple[Verifier, bytes]:
    headers, offset = split_message(message)
    return Verifier(headers, VerifyOptions(**options)), message[offset:]  # type: ignore[arg-type]


def test_l_signature_needs_no_body_past_its_length(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier, body = _verifier(_signed(rsa_key, max_body_bytes=30))
    assert verifier.needs_body()
    verifier.feed_body(body[:20])
    assert verifier.needs_body()  # 20 of the 30 signed bytes
    verifier.feed_body(body[20:60])
    assert not verifier.needs_body()


def test_without_l_the_whole_body_is_needed(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier, body = _verifier(_signed(rsa_key))
    verifier.feed_body(body[:-1])
    assert verifier.needs_body()


def test_failing_content_beyond_l_needs_the_whole_body(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier, body = _verifier(_signed(rsa_key, max_body_bytes=30), body_length="fail")
    verifier.feed_body(body[:60])
    assert verifier.needs_body()


def test_unsigned_message_needs_no_body() -> None:
    verifier, _ = _verifier(MESSAGE)
    assert not verifier.needs_body()
