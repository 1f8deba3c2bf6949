"""The verification options in the DKIM engine, as OpenDKIM 2.11 applies them (observed;
docs/opendkim-behaviour.md section 5.4): ClockDrift, MustBeSigned, TrustSignaturesFrom with
MaximumSignaturesToVerify, FixCRLF, Minimum, and the A-R items and log words they give."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim_helpers import rsa_record, wrap

from dkimd.dkim import (
    DkimResult,
    SignatureResult,
    Signer,
    SigningRequest,
    Verifier,
    VerifyError,
    VerifyOptions,
    authentication_results_value,
    sigerror_text,
    split_message,
)
from dkimd.dkim.canonicalization import BodyHashSet, CrlfFixer, canonicalize_body
from dkimd.dkim.minimum import BodyMinimum, MinimumKind, parse_minimum
from dkimd.dns.base import TxtResult, TxtStatus

NOW = 1_700_000_000
MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: hello\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"\r\n"
    b"Hello world, this body is long enough to sign only part of it.\r\n"
)


def sign(
    message: bytes, key: rsa.RSAPrivateKey, domain: str = "example.com", **kw: object
) -> bytes:
    headers, offset = split_message(message)
    kw.setdefault("timestamp", NOW)
    signer = Signer(SigningRequest(domain, "sel", wrap(key), **kw))  # type: ignore[arg-type]
    signer.feed_body(message[offset:])
    return signer.sign(headers).raw + b"\r\n" + message


def verify(
    message: bytes,
    key: rsa.RSAPrivateKey,
    *,
    author: str | None = None,
    chunks: int = 0,
    **kw: object,
) -> tuple[Verifier, list[tuple[str, VerifyError | None, str | None]]]:
    headers, offset = split_message(message)
    kw.setdefault("now", NOW)
    verifier = Verifier(headers, VerifyOptions(**kw), author_domain=author)  # type: ignore[arg-type]
    record = rsa_record(key)
    for name in verifier.key_queries():
        verifier.provide_key(name, TxtResult(name, TxtStatus.OK, (record,)))
    body = message[offset:]
    step = chunks or len(body) or 1
    for i in range(0, len(body), step):
        verifier.feed_body(body[i : i + step])
    return verifier, [(r.result.value, r.error, r.domain) for r in verifier.results()]


# --- ClockDrift ---


@pytest.mark.parametrize(
    ("offset", "drift", "expected"),
    [
        (200, 300, None),  # t= 200 s ahead, within the default 300
        (1000, 300, VerifyError.FUTURE_TIMESTAMP),
        (200, 100, VerifyError.FUTURE_TIMESTAMP),
        (1000, 2000, None),
        (-10, -1, None),  # OpenDKIM's negative drift (observed with -1 and -100)
        (-10, -100, VerifyError.FUTURE_TIMESTAMP),
    ],
)
def test_clock_drift_bounds_a_timestamp_in_the_future(
    rsa_key: rsa.RSAPrivateKey, offset: int, drift: int, expected: VerifyError | None
) -> None:
    signed = sign(MESSAGE, rsa_key, timestamp=NOW + offset)
    _, got = verify(signed, rsa_key, clock_skew=drift)
    assert got[0][1] is expected


@pytest.mark.parametrize(("ago", "drift", "expired"), [(200, 300, False), (200, 100, True)])
def test_clock_drift_bounds_an_expired_signature(
    rsa_key: rsa.RSAPrivateKey, ago: int, drift: int, expired: bool
) -> None:
    signed = sign(MESSAGE, rsa_key, timestamp=NOW - 1000, ttl=1000 - ago)
    _, got = verify(signed, rsa_key, clock_skew=drift)
    assert (got[0][1] is VerifyError.EXPIRED) is expired


def test_time_errors_name_rsa_sha1_in_the_ar_as_opendkim_does(rsa_key: rsa.RSAPrivateKey) -> None:
    # libopendkim has not stored a= yet when it checks t= and x= (observed, 2.11).
    signed = sign(MESSAGE, rsa_key, timestamp=NOW + 1000)
    verifier, _ = verify(signed, rsa_key)
    value = authentication_results_value("mx", verifier.results(), dnssec=None).decode()
    assert "dkim=permerror header.d=example.com header.i=@example.com header.a=rsa-sha1 " in value
    assert sigerror_text(verifier.results()[0]) == "signature timestamp in the future"


# --- MustBeSigned ---


def test_must_be_signed_fails_a_signature_that_leaves_the_field_out(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    signed = sign(MESSAGE, rsa_key, signed_headers=["From", "To", "Date"], oversign_headers=())
    wanted = frozenset({b"subject"})
    verifier, got = verify(signed, rsa_key, must_be_signed=wanted)
    assert got == [("fail", VerifyError.MUST_BE_SIGNED, "example.com")]
    value = authentication_results_value("mx", verifier.results(), dnssec=None).decode()
    # OpenDKIM 2.11, observed: the key was used, so its size is given.
    assert 'dkim=fail reason="unprotected header field" (2048-bit key)' in value
    # A name the message does not have, or one h= lists, changes nothing.
    assert verify(signed, rsa_key, must_be_signed=frozenset({b"reply-to"}))[1][0][0] == "pass"
    assert verify(signed, rsa_key, must_be_signed=frozenset({b"to"}))[1][0][0] == "pass"


def test_must_be_signed_comes_before_every_mismatch(rsa_key: rsa.RSAPrivateKey) -> None:
    # libopendkim reports the unprotected field, not the damage (observed, 2.11).
    signed = sign(MESSAGE, rsa_key, signed_headers=["From", "Date"], oversign_headers=())
    wanted = frozenset({b"subject"})
    body = signed.replace(b"Hello world", b"Hello there")
    header = signed.replace(b"2024 00:00:00", b"2024 00:00:01")
    for tampered in (body, header):
        assert verify(tampered, rsa_key)[1][0][0] == "fail"
        _, got = verify(tampered, rsa_key, must_be_signed=wanted)
        assert got[0][1] is VerifyError.MUST_BE_SIGNED


# --- TrustSignaturesFrom and MaximumSignaturesToVerify (dkimf_prescreen) ---


@pytest.fixture()
def two_signed(rsa_key: rsa.RSAPrivateKey) -> bytes:
    """Signed by example.com (the author), then by example.org on top."""
    return sign(sign(MESSAGE, rsa_key), rsa_key, "example.org")


def test_default_limit_verifies_both(rsa_key: rsa.RSAPrivateKey, two_signed: bytes) -> None:
    trusted = {"example.net"}.__contains__
    for options in ({}, {"trusted": trusted}):
        _, got = verify(two_signed, rsa_key, **options)
        assert [g[0] for g in got] == ["pass", "pass"]


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        (None, ["pass", "neutral"]),  # top-down within the limit
        ({"example.net"}, ["pass", "neutral"]),
        ({"example.com"}, ["neutral", "pass"]),  # a trusted d= goes first
    ],
)
def test_limit_one(
    rsa_key: rsa.RSAPrivateKey,
    two_signed: bytes,
    trusted: set[str] | None,
    expected: list[str],
) -> None:
    verifier, got = verify(
        two_signed,
        rsa_key,
        max_signatures=1,
        trusted=None if trusted is None else trusted.__contains__,
    )
    assert [g[0] for g in got] == expected
    assert len(verifier.ignored_domains()) == 1
    ignored = next(r for r in verifier.results() if r.error is VerifyError.SIGNATURE_IGNORED)
    value = authentication_results_value("mx", verifier.results(), dnssec=None).decode()
    # OpenDKIM lists it, neutral, with no key size.
    assert f"dkim=neutral header.d={ignored.domain} header.i=@{ignored.domain} " in value


def test_trusted_signatures_may_exceed_the_limit(
    rsa_key: rsa.RSAPrivateKey, two_signed: bytes
) -> None:
    both = {"example.com", "example.org"}.__contains__
    _, got = verify(two_signed, rsa_key, max_signatures=1, trusted=both)
    assert [g[0] for g in got] == ["pass", "pass"]


def test_limit_zero_keeps_the_author_domain_and_trusted_ones(
    rsa_key: rsa.RSAPrivateKey, two_signed: bytes
) -> None:
    _, got = verify(two_signed, rsa_key, max_signatures=0, author="Example.COM")
    assert [(g[0], g[2]) for g in got] == [("neutral", "example.org"), ("pass", "example.com")]
    trusted = {"example.org"}.__contains__
    _, got = verify(two_signed, rsa_key, max_signatures=0, author="example.com", trusted=trusted)
    assert [g[0] for g in got] == ["pass", "pass"]


def test_all_ignored_is_no_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    third_party = sign(MESSAGE, rsa_key, "example.org")
    verifier, got = verify(third_party, rsa_key, max_signatures=0, author="example.com")
    assert got == [("none", VerifyError.NO_SIGNATURE, None)]
    assert verifier.key_queries() == []
    assert not verifier.needs_body()
    value = authentication_results_value("mx", verifier.results()).decode()
    assert value == "mx; dkim=none; dkim-atps=neutral"  # observed with AlwaysAddARHeader


# --- FixCRLF ---


@pytest.mark.parametrize(
    ("body", "fixed"),
    [
        (b"line1\nline2\r\nline3\n", b"line1\r\nline2\r\nline3\r\n"),
        (b"a\rb\r\nc\r", b"a\r\nb\r\nc\r\n"),
        (b"a\r\r\nb\r\n", b"a\r\n\r\nb\r\n"),
        (b"x\n\ny\r\r\n\r\n\n", b"x\r\n\r\ny\r\n\r\n\r\n\r\n"),
        (b"plain text", b"plain text"),
    ],
)
def test_crlf_fixer_in_every_chunking(body: bytes, fixed: bytes) -> None:
    for size in range(1, len(body) + 1):
        fixer = CrlfFixer()
        out = b"".join(fixer.feed(body[i : i + size]) for i in range(0, len(body), size))
        assert out + fixer.finish() == fixed, size


# bh= of OpenDKIM 2.11 with FixCRLF yes for these bodies (observed, miltertest, both
# canonicalizations give the same value here).
OPENDKIM_FIXCRLF_BH = {
    b"line1\nline2\r\nline3\n": "luTWbFpC0XHoqhBwWerK9S08LAlcu6Exa1kKc5JJdxg=",
    b"a\rb\r\nc\r": "ohJJaB4M4iQyuge6YXkWUd/7aON3nTvTwbA0gDXyMyg=",
    b"a\r\r\nb\r\n": "zCIZgM59A4jZIcXrGIzhpoD2WhSv0BLiYnkKxFCegn8=",
    b"x\n\ny\r\r\n\r\n\n": "/oA7q/ba2Ub+Ru9W7KY49ZRGJgXCBH99FA2TTPVimM0=",
}


@pytest.mark.parametrize("canon", ["simple", "relaxed"])
@pytest.mark.parametrize(("body", "bh"), list(OPENDKIM_FIXCRLF_BH.items()))
def test_fix_crlf_body_hash_is_opendkims(body: bytes, bh: str, canon: str) -> None:
    bodies = BodyHashSet([(canon, "sha256", None)], fix_crlf=True)
    for i in range(0, len(body), 3):
        bodies.update(body[i : i + 3])
    bodies.finish()
    assert base64.b64encode(bodies[(canon, "sha256", None)].digest()).decode() == bh


def test_fix_crlf_signs_and_verifies_what_an_mta_will_deliver(rsa_key: rsa.RSAPrivateKey) -> None:
    bare = MESSAGE.replace(b"part of it.\r\n", b"part of it.\nSecond line\rthird\n")
    headers, offset = split_message(bare)
    request = SigningRequest("example.com", "sel", wrap(rsa_key), timestamp=NOW)
    signer = Signer(request, fix_crlf=True)
    signer.feed_body(bare[offset:])
    field = signer.sign(headers).raw + b"\r\n"
    # what a later MTA delivers: every line end a CRLF
    crlf_only = bare.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    delivered = field + crlf_only
    signed = field + bare
    assert verify(delivered, rsa_key)[1][0][0] == "pass"
    assert verify(signed, rsa_key, fix_crlf=True, chunks=5)[1][0][0] == "pass"
    assert verify(signed, rsa_key)[1][0][0] == "fail"
    assert canonicalize_body(b"a\rb", "simple") != canonicalize_body(b"a\r\nb", "simple")


# --- Minimum ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50", BodyMinimum(50)),
        ("50%", BodyMinimum(50, MinimumKind.PERCENT)),
        ("100%", BodyMinimum(100, MinimumKind.PERCENT)),
        ("5+", BodyMinimum(5, MinimumKind.MAX_ADDED)),
        ("+", BodyMinimum(0, MinimumKind.MAX_ADDED)),
        ("", BodyMinimum(0)),
        (" 7", BodyMinimum(7)),
    ],
)
def test_minimum_values_opendkim_takes(text: str, expected: BodyMinimum) -> None:
    assert parse_minimum(text) == expected


@pytest.mark.parametrize("text", ["-5", " -1", "101%", "10x", "abc", "4294967296", " ", "5 %"])
def test_minimum_values_opendkim_refuses(text: str) -> None:
    with pytest.raises(ValueError, match='illegal value for "Minimum"'):
        parse_minimum(text)


@pytest.mark.parametrize(
    ("minimum", "signed", "body", "covered"),
    [
        (BodyMinimum(50), 10, 66, False),
        (BodyMinimum(50), 10, 10, True),  # a short body signed whole
        (BodyMinimum(50, MinimumKind.PERCENT), 33, 66, True),
        (BodyMinimum(51, MinimumKind.PERCENT), 33, 66, False),
        (BodyMinimum(50, MinimumKind.PERCENT), 0, 0, True),  # OpenDKIM divides by zero here
        (BodyMinimum(5, MinimumKind.MAX_ADDED), 10, 15, True),
        (BodyMinimum(5, MinimumKind.MAX_ADDED), 10, 16, False),
    ],
)
def test_minimum_coverage(minimum: BodyMinimum, signed: int, body: int, covered: bool) -> None:
    assert minimum.covered(signed, body) is covered


def test_below_minimum_names_the_passing_partial_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    signed = sign(MESSAGE, rsa_key, max_body_bytes=10)
    verifier, got = verify(signed, rsa_key)
    assert got[0][0] == "pass"  # OpenDKIM 2.11 keeps dkim=pass for PARTIAL (observed)
    partial = verifier.below_minimum(BodyMinimum(50))
    assert partial is not None
    assert partial[1:] == (10, len(MESSAGE.split(b"\r\n\r\n", 1)[1]))
    assert verifier.below_minimum(BodyMinimum(10)) is None
    assert verifier.below_minimum(BodyMinimum(100, MinimumKind.MAX_ADDED)) is None


def test_result_words_for_log_results() -> None:
    assert sigerror_text(SignatureResult(DkimResult.PASS)) == "no signature error"
    fail = SignatureResult(DkimResult.FAIL, VerifyError.BODY_HASH_MISMATCH)
    assert sigerror_text(fail) == "signature verification failed"
