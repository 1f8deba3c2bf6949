"""Signer and Verifier: round trips, RFC 8463 vectors, and every non-pass outcome."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim_helpers import DATA, ed_record, rsa_record, verify_message, wrap

from dkimd.dkim import (
    DkimResult,
    HeaderField,
    Signer,
    SigningError,
    SigningRequest,
    VerifyError,
    VerifyOptions,
    parse_signature,
    split_message,
)
from dkimd.dkim.canonicalization import canonicalize_body
from dkimd.dns.base import TxtResult, TxtStatus

MESSAGE = (
    b"Received: from a by b\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: hello\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"X-Other: no\r\n"
    b"\r\n"
    b"Hello  world \r\n\r\n"
)
NOW = 1_700_000_000


def sign(message: bytes, *requests: SigningRequest) -> bytes:
    headers, offset = split_message(message)
    signer = Signer(*requests)
    signer.feed_body(message[offset:])
    fields = signer.sign_all(headers)
    return b"".join(f.raw + b"\r\n" for f in reversed(fields)) + message


def rsa_req(key: rsa.RSAPrivateKey, **kw: object) -> SigningRequest:
    return SigningRequest("example.com", "rsa", wrap(key), timestamp=NOW, **kw)  # type: ignore[arg-type]


def ed_req(key: ed25519.Ed25519PrivateKey, **kw: object) -> SigningRequest:
    return SigningRequest("example.com", "ed", wrap(key), timestamp=NOW, **kw)  # type: ignore[arg-type]


@pytest.fixture()
def dns(rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey) -> dict[str, bytes]:
    return {
        "rsa._domainkey.example.com": rsa_record(rsa_key),
        "ed._domainkey.example.com": ed_record(ed_key),
    }


def results(message: bytes, dns: dict[str, bytes], **kw: object) -> list[tuple[str, str]]:
    opts = VerifyOptions(now=NOW, **kw)  # type: ignore[arg-type]
    return [(r.result.value, r.reason) for r in verify_message(message, dns, opts)]


# --- RFC 8463 Appendix A ---


def _rfc8463() -> tuple[bytes, dict[str, bytes]]:
    records = {}
    for line in (DATA / "rfc8463" / "dns.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split(" ", 1)
            records[name] = value.encode()
    return (DATA / "rfc8463" / "signed.eml").read_bytes(), records


@pytest.mark.parametrize("chunk", [0, 1, 7])
def test_rfc8463_both_signatures_verify(chunk: int) -> None:
    message, records = _rfc8463()
    got = verify_message(message, records, VerifyOptions(now=1528637909), chunk=chunk)
    assert [(r.result, r.algorithm, r.selector, r.key_bits) for r in got] == [
        (DkimResult.PASS, "ed25519-sha256", "brisbane", 256),
        (DkimResult.PASS, "rsa-sha256", "test", 1024),
    ]


def test_rfc8463_tampering_fails_both() -> None:
    message, records = _rfc8463()
    body = message.replace(b"hungry", b"angry")
    assert {r.reason for r in verify_message(body, records)} == {"body hash mismatch"}
    head = message.replace(b"dinner", b"lunch")
    assert {r.reason for r in verify_message(head, records)} == {"signature verification failed"}


def test_rfc8463_signer_reproduces_the_published_signatures() -> None:
    """Both algorithms are deterministic: our signer over the RFC's tags gives the RFC's b=."""
    from dkimd.dkim import header_hash_input, load_private_key_file
    from dkimd.dkim.algorithms import get_algorithm

    message, _ = _rfc8463()
    headers, _ = split_message(message)
    for f, keyfile in zip(headers[:2], ["ed25519.seed", "rsa.pem"], strict=True):
        sig = parse_signature(f.value)
        key = load_private_key_file(DATA / "rfc8463" / keyfile)
        algo = get_algorithm(sig.algorithm)
        assert algo is not None
        data = header_hash_input(headers, sig.signed_headers, f, sig.header_canon)
        assert base64.b64encode(algo.sign(key, data)).decode() == sig.b_value


# --- round trips ---


@pytest.mark.parametrize(
    "canon", ["simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed"]
)
def test_round_trip_all_canonicalizations(
    canon: str, rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey, dns: dict[str, bytes]
) -> None:
    hc, bc = canon.split("/")
    signed = sign(
        MESSAGE,
        rsa_req(rsa_key, header_canon=hc, body_canon=bc),
        ed_req(ed_key, header_canon=hc, body_canon=bc),
    )
    assert results(signed, dns) == [("pass", ""), ("pass", "")]


def test_default_header_list_and_oversigning(rsa_key: rsa.RSAPrivateKey) -> None:
    signed = sign(MESSAGE, rsa_req(rsa_key, ttl=3600, identity="alice@example.com"))
    headers, _ = split_message(signed)
    sig = parse_signature(headers[0].value)
    # OpenDKIM's default SignHeaders: no Received, Message-ID or X-Other; From once more.
    assert sig.signed_headers == ("From", "To", "Subject", "Date", "From")
    assert (sig.timestamp, sig.expiration, sig.identity) == (NOW, NOW + 3600, "alice@example.com")
    assert list(sig.tags) == ["v", "a", "c", "d", "s", "t", "x", "i", "bh", "h", "b"]
    assert headers[0].value.startswith(b" v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;")


def test_added_from_breaks_oversigned_signature(
    rsa_key: rsa.RSAPrivateKey, dns: dict[str, bytes]
) -> None:
    signed = sign(MESSAGE, rsa_req(rsa_key, oversign_headers=("from", "subject")))
    extra_subject = signed.replace(b"Subject: hello\r\n", b"Subject: hello\r\nSubject: buy\r\n")
    assert results(extra_subject, dns)[0] == ("fail", "signature verification failed")
    two_froms = signed.replace(b"To: Bob", b"From: Mallory <m@evil.example>\r\nTo: Bob")
    assert results(two_froms, dns)[0] == ("fail", "message has more than one From field")


def test_explicit_headers_each_occurrence(
    rsa_key: rsa.RSAPrivateKey, dns: dict[str, bytes]
) -> None:
    msg = MESSAGE.replace(b"X-Other: no\r\n", b"X-Other: 1\r\nx-other: 2\r\n")
    signed = sign(msg, rsa_req(rsa_key, signed_headers=["x-other", "subject"], oversign_headers=()))
    headers, _ = split_message(signed)
    # Message order, each instance, From added because RFC 6376 5.4 requires it.
    names = parse_signature(headers[0].value).signed_headers
    assert names == ("From", "Subject", "X-Other", "x-other")
    assert results(signed, dns) == [("pass", "")]
    assert results(signed.replace(b"x-other: 2", b"x-other: 3"), dns)[0][0] == "fail"


def test_body_length_tag(rsa_key: rsa.RSAPrivateKey, dns: dict[str, bytes]) -> None:
    signed = sign(MESSAGE, rsa_req(rsa_key, body_length=True))
    assert results(signed, dns) == [("pass", "")]
    appended = signed + b"appended by a list\r\n"
    got = verify_message(appended, dns, VerifyOptions(now=NOW))[0]
    assert got.result is DkimResult.PASS and got.body_length_extra == len(
        b"\r\nappended by a list\r\n"
    )
    assert results(appended, dns, body_length="fail")[0] == (
        "fail",
        "content beyond l= is not signed",
    )
    truncated = signed[: -len(b"\r\n\r\n")] + b"\r\n"
    assert results(truncated.replace(b"world", b"w"), dns)[0] == ("fail", "body shorter than l=")


def test_extension_tags_and_l_in_opendkim_s_places(
    rsa_key: rsa.RSAPrivateKey, dns: dict[str, bytes]
) -> None:
    """OpenDKIM 2.11: v a c d s t x i, its extension tags (atpsh, atps, r), bh, l, h, b."""
    tags = (("atpsh", "sha256"), ("atps", "example.net"), ("r", "y"))
    req = rsa_req(rsa_key, ttl=60, identity="a@example.com", body_length=True, extension_tags=tags)
    signed = sign(MESSAGE, req)
    headers, _ = split_message(signed)
    sig = parse_signature(headers[0].value)
    order = ["v", "a", "c", "d", "s", "t", "x", "i", "atpsh", "atps", "r", "bh", "l", "h", "b"]
    assert list(sig.tags) == order
    assert (sig.tags["atps"], sig.tags["r"]) == ("example.net", "y")
    assert results(signed, dns) == [("pass", "")]


@pytest.mark.parametrize("limit", [0, 5, 10_000])
def test_max_body_bytes_signs_a_prefix_with_l(
    rsa_key: rsa.RSAPrivateKey, dns: dict[str, bytes], limit: int
) -> None:
    """MaximumSignedBytes: at most `limit` canonical bytes signed, l= = what was signed
    (opendkim 2.11, MaximumSignedBytes 10 and 0: l=10 and l=0 for a 17-byte body)."""
    signed = sign(MESSAGE, rsa_req(rsa_key, max_body_bytes=limit))
    headers, offset = split_message(signed)
    sig = parse_signature(headers[0].value)
    canonical = canonicalize_body(signed[offset:], "relaxed")
    assert sig.body_length == min(limit, len(canonical))
    assert results(signed, dns) == [("pass", "")]


@pytest.mark.parametrize(
    "tag", [("b", "x"), ("1x", "y"), ("r", "a;b"), ("r", ""), ("r", "a b"), ("l", "5")]
)
def test_extension_tags_must_be_new_well_formed_tags(
    rsa_key: rsa.RSAPrivateKey, tag: tuple[str, str]
) -> None:
    with pytest.raises(SigningError, match="invalid extension tag"):
        rsa_req(rsa_key, extension_tags=(tag,))


def test_one_body_pass_for_two_signatures(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    signer = Signer(rsa_req(rsa_key), ed_req(ed_key))
    assert len(signer._bodies) == 1


def test_signing_request_validation(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    with pytest.raises(SigningError, match="needs a ed25519 key"):
        rsa_req(rsa_key, algorithm="ed25519-sha256")
    with pytest.raises(SigningError, match="cannot sign"):
        rsa_req(rsa_key, algorithm="rsa-sha1")
    with pytest.raises(SigningError, match="identity"):
        rsa_req(rsa_key, identity="a@example.net")
    with pytest.raises(SigningError, match="domain"):
        SigningRequest("bad domain", "s", wrap(ed_key))
    with pytest.raises(SigningError, match="canonicalization"):
        ed_req(ed_key, body_canon="nowsp")


# --- verifier outcomes ---


def test_no_signature_is_none(dns: dict[str, bytes]) -> None:
    assert results(MESSAGE, dns) == [("none", "no signatures")]


def test_dns_outcomes(rsa_key: rsa.RSAPrivateKey, dns: dict[str, bytes]) -> None:
    signed = sign(MESSAGE, rsa_req(rsa_key))
    name = "rsa._domainkey.example.com"
    cases: list[tuple[object, tuple[str, str]]] = [
        (TxtResult(name, TxtStatus.TIMEOUT), ("temperror", "key query failed: timeout")),
        (TxtResult(name, TxtStatus.SERVFAIL), ("temperror", "key query failed: servfail")),
        (TxtResult(name, TxtStatus.NXDOMAIN), ("permerror", "no key for signature")),
        (TxtResult(name, TxtStatus.ERROR), ("permerror", "key query failed: error")),
        # A revoked key is a fail, as OpenDKIM reports it, even in testing mode.
        (b"v=DKIM1; p=", ("fail", "key revoked")),
        (b"k=rsa; t=y; p=", ("fail", "key revoked")),
        (b"v=DKIM1; p=###", ("permerror", "p= is not valid base64")),
        (
            rsa_record(rsa_key, " h=sha1;"),
            ("permerror", "key h= does not allow the signature's hash"),
        ),
        (rsa_record(rsa_key, " s=tlsrpt;"), ("permerror", "key s= does not include email")),
        (dns["ed._domainkey.example.com"], ("permerror", "key type does not match a=")),
        (rsa_record(rsa_key, " t=y;"), ("pass", "")),
    ]
    for record, expected in cases:
        assert results(signed, {name: record}) == [expected], record  # type: ignore[dict-item]
    # Several TXT records: the first that parses wins.
    many = TxtResult(name, TxtStatus.OK, (b"v=spf1 -all", rsa_record(rsa_key)))
    assert results(signed, {name: many}) == [("pass", "")]  # type: ignore[dict-item]


def test_key_outcomes_carry_their_error(rsa_key: rsa.RSAPrivateKey) -> None:
    """What callers decide on is the error, with the variable part apart in `detail`."""
    signed = sign(MESSAGE, rsa_req(rsa_key))
    name = "rsa._domainkey.example.com"
    cases: list[tuple[TxtResult, VerifyError, str]] = [
        (TxtResult(name, TxtStatus.TIMEOUT), VerifyError.KEY_QUERY_TEMPFAIL, "timeout"),
        (TxtResult(name, TxtStatus.NXDOMAIN), VerifyError.KEY_NOT_FOUND, ""),
        (
            TxtResult(name, TxtStatus.ERROR, detail="at 192.0.2.1"),
            VerifyError.KEY_QUERY_FAILED,
            "error",
        ),
        (TxtResult(name, TxtStatus.OK, ()), VerifyError.KEY_MISSING, ""),
        (
            TxtResult(name, TxtStatus.OK, (b"v=DKIM1; p=###",)),
            VerifyError.KEY_SYNTAX,
            "p= is not valid base64",
        ),
    ]
    for txt, error, detail in cases:
        [got] = verify_message(signed, {name: txt}, VerifyOptions(now=NOW))
        assert (got.error, got.detail) == (error, detail), txt
    [passed] = verify_message(signed, {name: rsa_record(rsa_key)}, VerifyOptions(now=NOW))
    assert (passed.result, passed.error, passed.reason) == (DkimResult.PASS, None, "")
    [none] = verify_message(MESSAGE, {})
    assert (none.result, none.error) == (DkimResult.NONE, VerifyError.NO_SIGNATURE)
    unparsed = MESSAGE.replace(b"X-Other: no", b"DKIM-Signature: v=1; b=AAAA")
    [bad] = verify_message(unparsed, {})
    assert (bad.result, bad.error, bad.b) == (
        DkimResult.PERMERROR,
        VerifyError.SIGNATURE_SYNTAX,
        "AAAA",
    )
    assert bad.reason == bad.detail and bad.detail.startswith("missing required tag")


def test_testing_key_failure_is_neutral(rsa_key: rsa.RSAPrivateKey) -> None:
    signed = sign(MESSAGE, rsa_req(rsa_key)).replace(b"Hello", b"Jello")
    got = verify_message(signed, {"rsa._domainkey.example.com": rsa_record(rsa_key, " t=y;")})
    assert (got[0].result, got[0].testing) == (DkimResult.NEUTRAL, True)


def test_strict_key_needs_exact_identity_domain(rsa_key: rsa.RSAPrivateKey) -> None:
    signed = sign(MESSAGE, rsa_req(rsa_key, identity="a@sub.example.com"))
    dns = {"rsa._domainkey.example.com": rsa_record(rsa_key, " t=s;")}
    assert results(signed, dns) == [("permerror", "key t=s requires i= domain equal to d=")]


def test_rfc8301_sha1_and_small_keys(dns: dict[str, bytes]) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    # cryptography will not generate keys under 1024 bits; any 768-bit modulus will do, since
    # the size check comes before the signature check.
    tiny = rsa.RSAPublicNumbers(65537, (1 << 767) | 0x10001).public_key()
    dns = {"rsa._domainkey.example.com": rsa_record(small)}
    signed = sign(MESSAGE, rsa_req(small))
    assert results(signed, dns) == [("pass", "")]
    assert results(signed, dns, min_key_bits=2048) == [
        ("policy", "key shorter than the local minimum")
    ]
    # MinimumKeyBits judges a signature that verified; a tampered one stays a fail, as
    # OpenDKIM reports it ("signature verification failed" before the key size).
    tampered = signed.replace(b"Hello", b"Jello")
    assert results(tampered, dns, min_key_bits=2048)[0][0] == "fail"
    tiny_der = tiny.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tiny_record = b"v=DKIM1; p=" + base64.b64encode(tiny_der)
    assert results(signed, {"rsa._domainkey.example.com": tiny_record}) == [
        ("permerror", "RSA key shorter than 1024 bits (RFC 8301)")
    ]
    # An rsa-sha1 signature made by hand (we never sign with sha1).
    from dkimd.dkim import build_signature_field, header_hash_input

    headers, offset = split_message(MESSAGE)
    import hashlib

    from dkimd.dkim.canonicalization import BodyCanonicalizer

    body = BodyCanonicalizer("relaxed", "sha1")
    body.update(MESSAGE[offset:])
    tags = [
        ("v", "1"),
        ("a", "rsa-sha1"),
        ("c", "relaxed/relaxed"),
        ("d", "example.com"),
        ("s", "rsa"),
        ("h", "From"),
        ("bh", base64.b64encode(body.digest()).decode()),
    ]
    draft = build_signature_field([*tags, ("b", "")])
    data = header_hash_input(headers, ["From"], draft, "relaxed")
    b = base64.b64encode(wrap(small).sign(data, "sha1")).decode()
    field = build_signature_field([*tags, ("b", b)])
    sha1_msg = field.raw + b"\r\n" + MESSAGE
    assert results(sha1_msg, dns) == [
        ("permerror", "rsa-sha1 signatures are not accepted (RFC 8301)")
    ]
    assert results(sha1_msg, dns, allow_sha1=True) == [("pass", "")]
    assert hashlib.sha1(b"").digest()  # the sha1 hash itself is available


def test_expired_and_max_signatures(rsa_key: rsa.RSAPrivateKey, dns: dict[str, bytes]) -> None:
    signed = sign(MESSAGE, rsa_req(rsa_key, ttl=60))
    assert results(signed, dns) == [("pass", "")]
    late = verify_message(signed, dns, VerifyOptions(now=NOW + 60 + 301))
    assert (late[0].result, late[0].reason) == (DkimResult.PERMERROR, "signature expired")
    five = signed
    for _ in range(4):
        five = sign(five, rsa_req(rsa_key))
    # OpenDKIM verifies the top three and reports the others neutral (dkimf_prescreen).
    ignored = ("neutral", "signature not verified")
    assert results(five, dns) == [("pass", "")] * 3 + [ignored] * 2
    assert results(five, dns, max_signatures=5) == [("pass", "")] * 5


def test_unparseable_signature_is_permerror_with_reason(dns: dict[str, bytes]) -> None:
    msg = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; b=AAAA\r\n" + MESSAGE
    got = verify_message(msg, dns)
    assert (got[0].result, got[0].reason, got[0].b) == (
        DkimResult.PERMERROR,
        "missing required tag(s): bh= h= s=",
        "AAAA",
    )


def test_signatures_read_beforehand_verify_the_same(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey, dns: dict[str, bytes]
) -> None:
    # The milter reads the DKIM-Signature fields once, for its syntax check, and hands that
    # reading to the verifier: what the verifier finds must not depend on who read them.
    signed = sign(MESSAGE, rsa_req(rsa_key), ed_req(ed_key))
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; b=AAAA\r\n" + signed
    repeated = b"DKIM-Signature: v=1; v=1\r\n" + signed
    tampered = signed.replace(b"hello", b"help")
    for message in (signed, broken, repeated, tampered, MESSAGE):
        for limit in (1, 2, 3):
            opts = VerifyOptions(now=NOW, max_signatures=limit)
            by_itself = verify_message(message, dns, opts)
            assert verify_message(message, dns, opts, read_first=True) == by_itself
    assert [r.result for r in verify_message(signed, dns, read_first=True)] == [
        DkimResult.PASS,
        DkimResult.PASS,
    ]
    assert verify_message(repeated, dns, read_first=True)[0].reason == "duplicate tag 'v'"


def test_key_not_provided_is_temperror(rsa_key: rsa.RSAPrivateKey) -> None:
    from dkimd.dkim import Verifier

    signed = sign(MESSAGE, rsa_req(rsa_key))
    headers, offset = split_message(signed)
    v = Verifier(headers, VerifyOptions(now=NOW))
    assert v.key_queries() == ["rsa._domainkey.example.com"]
    v.feed_body(signed[offset:])
    assert [(r.result, r.reason) for r in v.results()] == [
        (DkimResult.TEMPERROR, "key not retrieved")
    ]


def test_header_field_helpers() -> None:
    from dkimd.dkim.headers import serialize_headers

    f = HeaderField(b"A", b" b")
    assert serialize_headers([f]) == b"A: b\r\n"
    assert (f.raw, f.key) == (b"A: b", b"a")
