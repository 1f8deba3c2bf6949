"""One rule for header field names (RFC 6376 3.4.2: trailing WSP removed, lower-cased), at every
place the engine compares names: selection by h=, relaxed canonicalization, the signer's h=
list and the verifier's From count (RFC 6376 8.15)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from dkim_helpers import ed_record, verify_message, wrap

from dkimd.dkim import (
    DkimResult,
    HeaderField,
    Signer,
    SigningRequest,
    VerifyError,
    VerifyOptions,
    canonicalize_header,
    field_key,
    name_key,
    parse_signature,
    select_headers,
    split_message,
)
from dkimd.policy import count_fields

NOW = 1_700_000_000
BODY = b"Hello\r\n"


@pytest.mark.parametrize(
    ("name", "key"),
    [
        (b"From", b"from"),
        (b"From ", b"from"),
        (b"FROM\t \t", b"from"),
        (b"Subject ", b"subject"),
        (b" From", b" from"),  # WSP before the name is not WSP before the colon
        (b"X-\xc4\xb0d", b"x-\xc4\xb0d"),  # only ASCII letters fold
    ],
)
def test_field_key(name: bytes, key: bytes) -> None:
    assert field_key(name) == key
    assert HeaderField(name, b" x").key == key
    assert name_key(name.decode("utf-8")) == key


def test_name_key_of_text_is_its_utf8_bytes() -> None:
    assert name_key("Subject") == b"subject"
    assert name_key("X-\u0130d") == "x-\u0130d".encode()  # no Unicode case folding
    assert name_key("\udcff") == b"\xed\xb3\xbf"  # never raises, never matches ASCII


def test_select_headers_matches_names_with_wsp_before_the_colon() -> None:
    headers = [
        HeaderField(b"Subject ", b" one"),
        HeaderField(b"From", b" a@example.com"),
        HeaderField(b"SUBJECT\t", b" two"),
    ]
    chosen = select_headers(headers, ["subject", "From", "Subject", "subject"])
    assert chosen == [headers[2], headers[1], headers[0]]


def test_relaxed_canonical_name_is_the_key() -> None:
    field = HeaderField(b"SubJect \t", b" \tHi  there \r\n\tyou ")
    assert canonicalize_header(field, "relaxed") == b"subject:Hi there you\r\n"
    assert canonicalize_header(field, "simple") == b"SubJect \t: \tHi  there \r\n\tyou \r\n"


def _ed_request(key: ed25519.Ed25519PrivateKey, **kw: object) -> SigningRequest:
    return SigningRequest("example.com", "ed", wrap(key), timestamp=NOW, **kw)  # type: ignore[arg-type]


def _sign(message: bytes, request: SigningRequest) -> bytes:
    headers, offset = split_message(message)
    signer = Signer(request)
    signer.feed_body(message[offset:])
    [sig] = signer.sign_all(headers)
    return sig.raw + b"\r\n" + message


def test_signer_lists_and_signs_fields_with_wsp_before_the_colon(
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    message = b"From : a@example.com\r\nSUBJECT\t: hi\r\nX-Not: x\r\n\r\n" + BODY
    signed = _sign(message, _ed_request(ed_key, oversign_headers=("From ", "subject")))
    headers, _ = split_message(signed)
    sig = parse_signature(headers[0].value)
    # Spelled as in the message without the WSP; oversigned names match the same way.
    assert sig.signed_headers == ("From", "SUBJECT", "From", "SUBJECT")
    records = {"ed._domainkey.example.com": ed_record(ed_key)}
    opts = VerifyOptions(now=NOW)
    assert [r.result for r in verify_message(signed, records, opts)] == [DkimResult.PASS]
    # The Subject field is covered: changing it breaks the signature.
    forged = signed.replace(b"SUBJECT\t: hi", b"SUBJECT\t: ho")
    [result] = verify_message(forged, records, opts)
    assert result.error is VerifyError.SIGNATURE_MISMATCH


@pytest.mark.parametrize("extra_name", [b"From", b"From ", b"from\t", b"FROM  "])
def test_second_from_with_any_spelling_fails_every_signature(
    ed_key: ed25519.Ed25519PrivateKey, extra_name: bytes
) -> None:
    """RFC 6376 8.15: a From prepended in transit, however its name is spelled, fails the
    signature, and the verifier counts From fields as the policy does."""
    message = b"From: a@example.com\r\nSubject : hi\r\n\r\n" + BODY
    signed = _sign(message, _ed_request(ed_key, oversign_headers=()))
    records = {"ed._domainkey.example.com": ed_record(ed_key)}
    opts = VerifyOptions(now=NOW)
    assert [r.result for r in verify_message(signed, records, opts)] == [DkimResult.PASS]
    attacked = extra_name + b": mallory@evil.example\r\n" + signed
    headers, _ = split_message(attacked)
    assert count_fields(headers, b"from") == 2
    [result] = verify_message(attacked, records, opts)
    assert (result.result, result.error) == (DkimResult.FAIL, VerifyError.MULTIPLE_FROM)
    assert result.reason == "message has more than one From field"


def test_dkim_signature_field_with_wsp_before_the_colon_is_verified(
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    message = b"From: a@example.com\r\nSubject: hi\r\n\r\n" + BODY
    signed = _sign(message, _ed_request(ed_key, header_canon="relaxed"))
    spaced = signed.replace(b"DKIM-Signature:", b"DKIM-Signature :", 1)
    records = {"ed._domainkey.example.com": ed_record(ed_key)}
    [result] = verify_message(spaced, records, VerifyOptions(now=NOW))
    assert result.result is DkimResult.PASS
