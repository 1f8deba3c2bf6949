"""The verification options through MilterSession: the replies, header fields and log lines
OpenDKIM 2.11 gives for them (observed; docs/opendkim-behaviour.md section 5.4)."""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd import milter
from dkimd.dkim import HeaderField, Signer, SigningRequest, load_private_key
from support.negotiated import Mta

BODY = b"Hello,\r\nthis body is signed in part only by some signatures.\r\n"
HEADERS = [
    (b"From", b" Alice <alice@example.com>"),
    (b"To", b" bob@example.net"),
    (b"Subject", b" hello"),
    (b"Date", b" Thu, 26 Nov 2026 12:00:00 +0000"),
]


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.fixture(scope="module")
def records(key: rsa.RSAPrivateKey) -> dict[str, str]:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    txt = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    return {f"mail._domainkey.{d}": txt for d in ("example.com", "example.org")}


def signed(
    key: rsa.RSAPrivateKey,
    headers: list[tuple[bytes, bytes]],
    domain: str = "example.com",
    body: bytes = BODY,
    **kw: object,
) -> list[tuple[bytes, bytes]]:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    request = SigningRequest(domain, "mail", load_private_key(pem), **kw)  # type: ignore[arg-type]
    signer = Signer(request)
    signer.feed_body(body)
    sig = signer.sign([HeaderField(n, v) for n, v in headers])
    return [(sig.name, sig.value), *headers]


def ar(mta: Mta) -> str:
    found = [a for a in mta.at("eom") if isinstance(a, milter.InsertHeader)]
    assert len(found) == 1, mta.replies
    return " ".join(found[0].value.decode().split())


def test_log_results_line(
    key: rsa.RSAPrivateKey, records: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dkimd")
    two = signed(key, signed(key, HEADERS), "example.org")
    mta = Mta("Mode v\nLogResults yes\n", records=records, mail_macros={"i": "QID9"})
    mta.run(two, BODY)
    b_top = ar(mta).split("header.b=")[1][:8]
    lines = [r.getMessage() for r in caplog.records if "signature=" in r.getMessage()]
    assert len(lines) == 1
    # the queue id, then OpenDKIM's words
    assert lines[0].startswith(f"QID9: signature={b_top} domain=example.org selector=mail ")
    assert lines[0].count('result="no signature error"') == 2
    assert "; signature=" in lines[0]
    caplog.clear()
    Mta("Mode v\n", records=records).run(two, BODY)
    assert not [r for r in caplog.records if "signature=" in r.getMessage()]


def test_must_be_signed_fails_but_applies_no_action(
    key: rsa.RSAPrivateKey, records: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dkimd")
    message = signed(key, HEADERS, signed_headers=["From", "To", "Date"], oversign_headers=())
    mta = Mta(
        "Mode v\nMustBeSigned Subject\nOn-BadSignature reject\nLogResults yes\n", records=records
    )
    mta.run(message, BODY)
    assert 'dkim=fail reason="unprotected header field" (1024-bit key)' in ar(mta)
    assert mta.final() == milter.Accept()  # observed: no On-BadSignature reject
    assert any('result="unprotected header field"' in r.getMessage() for r in caplog.records)


def test_trust_signatures_from_with_a_limit_of_one(
    key: rsa.RSAPrivateKey, records: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dkimd")
    two = signed(key, signed(key, HEADERS), "example.org")
    conf = "Mode v\nMaximumSignaturesToVerify 1\nTrustSignaturesFrom csl:example.com\n"
    mta = Mta(conf, records=records)
    mta.run(two, BODY)
    value = ar(mta)
    assert "dkim=neutral header.d=example.org header.i=@example.org header.a=rsa-sha256" in value
    assert "dkim=pass (1024-bit key) header.d=example.com" in value
    assert any(r.getMessage().endswith(": ignoring 1 signature") for r in caplog.records)


def test_limit_zero_ignores_third_party_signatures(
    key: rsa.RSAPrivateKey, records: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dkimd")
    third = signed(key, HEADERS, "example.org")
    conf = "Mode v\nMaximumSignaturesToVerify 0\nAlwaysAddARHeader yes\nOn-NoSignature reject\n"
    mta = Mta(conf, records=records)
    mta.run(third, BODY)
    # observed: as an unsigned message, and AlwaysAddARHeader keeps On-NoSignature away
    assert ar(mta) == "unknown.example; dkim=none; dkim-atps=neutral"
    assert mta.final() == milter.Accept()
    assert any(
        r.getMessage().endswith(": ignoring signature from example.org") for r in caplog.records
    )
    trusted = Mta(conf + "TrustSignaturesFrom csl:example.org\n", records=records)
    trusted.run(third, BODY)
    assert "dkim=pass" in ar(trusted)


@pytest.mark.parametrize(("drift", "word"), [("0", "pass"), ("100", "permerror")])
def test_clock_drift(
    key: rsa.RSAPrivateKey, records: dict[str, str], drift: str, word: str
) -> None:
    ahead = signed(key, HEADERS, timestamp=int(time.time()) + 200)
    mta = Mta(f"Mode v\nClockDrift {drift}\nOn-BadSignature reject\n", records=records)
    mta.run(ahead, BODY)
    assert f"dkim={word}" in ar(mta)
    assert mta.final() == milter.Accept()  # a time error gets no On-* action (observed)


def test_minimum_logs_but_changes_nothing_else(
    key: rsa.RSAPrivateKey, records: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dkimd")
    partial = signed(key, HEADERS, max_body_bytes=10)
    for setting in ("", "Minimum 50\n"):
        mta = Mta(f"Mode v\nOn-BadSignature reject\n{setting}", records=records)
        mta.run(partial, BODY)
        assert "dkim=pass (1024-bit key)" in ar(mta)
        assert mta.final() == milter.Accept()
    [line] = [r.getMessage() for r in caplog.records if "Minimum" in r.getMessage()]
    assert line.endswith(
        f": signature d=example.com covers 10 of {len(BODY)} body bytes, less than Minimum 50"
    )


def test_weak_syntax_checks_verifies_despite_an_unparseable_from(
    key: rsa.RSAPrivateKey, records: dict[str, str]
) -> None:
    message = signed(key, HEADERS)
    mangled = [(n, b" Alice <<alice@@>" if n == b"From" else v) for n, v in message]
    strict = Mta("Mode v\n", records=records)
    strict.run(mangled, BODY)
    assert ar(strict) == "unknown.example; dkim=permerror (bad message/signature format)"
    weak = Mta("Mode v\nWeakSyntaxChecks yes\n", records=records)
    weak.run(mangled, BODY)
    assert 'dkim=fail reason="signature verification failed"' in ar(weak)
    # No From at all, or a filter that also signs: the bad-format path all the same.
    no_from = [(n, v) for n, v in message if n != b"From"]
    weak_again = Mta("Mode v\nWeakSyntaxChecks yes\n", records=records)
    weak_again.run(no_from, BODY)
    assert "bad message/signature format" in ar(weak_again)
    signer = Mta("Mode sv\nWeakSyntaxChecks yes\n", records=records)
    signer.run(mangled, BODY)
    assert "bad message/signature format" in ar(signer)


def test_fix_crlf_verifies_a_body_signed_with_bare_line_ends(
    key: rsa.RSAPrivateKey, records: dict[str, str]
) -> None:
    bare = b"one\ntwo\rthree\r\n"
    crlf = b"one\r\ntwo\r\nthree\r\n"
    message = signed(key, HEADERS, body=crlf)
    for fix, word in (("no", "fail"), ("yes", "pass")):
        mta = Mta(f"Mode v\nFixCRLF {fix}\n", records=records)
        mta.run(message, bare)
        assert f"dkim={word}" in ar(mta), fix


def test_select_canonicalization_header_does_not_choose_the_canonicalization(
    key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "mail.private"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    conf = (
        f"Mode s\nDomain example.com\nSelector mail\nKeyFile {path}\nRequireSafeKeys no\n"
        "Canonicalization simple/simple\nSelectCanonicalizationHeader X-Canon\n"
    )
    mta = Mta(conf, client="127.0.0.1")
    mta.run([*HEADERS, (b"X-Canon", b" relaxed/relaxed")], BODY)
    [sig] = [a.value for a in mta.at("eom") if isinstance(a, milter.InsertHeader)]
    assert b"c=simple/simple;" in sig  # as OpenDKIM 2.11 signs it (observed)
