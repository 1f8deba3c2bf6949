"""Authentication-Results text in OpenDKIM's format, and its sanitizing."""

from __future__ import annotations

from dkimd.dkim import DkimResult, SignatureResult, VerifyError, authentication_results_value

PASS = SignatureResult(
    DkimResult.PASS,
    domain="example.com",
    identity="@example.com",
    selector="mail",
    algorithm="rsa-sha256",
    b="AbCdEfGhIjKl",
    key_bits=2048,
)


def test_pass_like_opendkim() -> None:
    value = authentication_results_value("mx.example.com", [PASS])
    assert value == (
        b"mx.example.com;\r\n\tdkim=pass (2048-bit key; unprotected) header.d=example.com "
        b"header.i=@example.com header.a=rsa-sha256 header.s=mail header.b=AbCdEfGh"
    )


def test_fail_like_opendkim_2_11() -> None:
    # opendkim 2.11 with TestDNSData (no DNSSEC word), captured with miltertest.
    fail = SignatureResult(
        DkimResult.FAIL,
        VerifyError.SIGNATURE_MISMATCH,
        domain="example.com",
        identity="alice@example.com",
        selector="mail",
        algorithm="rsa-sha256",
        b="fjFHs6RbtlOSowJy",
        key_bits=2048,
    )
    assert authentication_results_value("mx.example.com", [fail], dnssec=None) == (
        b'mx.example.com;\r\n\tdkim=fail reason="signature verification failed" (2048-bit key) '
        b"header.d=example.com header.i=alice@example.com header.a=rsa-sha256 header.s=mail "
        b"header.b=fjFHs6Rb"
    )


def test_none_fits_on_one_line() -> None:
    assert authentication_results_value("mx.example.com", []) == b"mx.example.com; dkim=none"


def test_several_results_and_b_disambiguation() -> None:
    other = SignatureResult(
        DkimResult.TEMPERROR,
        VerifyError.KEY_QUERY_TEMPFAIL,
        "timeout",
        domain="x.org",
        identity="@x.org",
        selector="s",
        algorithm="ed25519-sha256",
        b="AbCdEfGhXYZ",
    )
    value = authentication_results_value("mx", [PASS, other])
    lines = value.split(b";\r\n\t")
    assert lines[0] == b"mx"
    assert lines[1].endswith(b"header.b=AbCdEfGhI")
    assert lines[2].startswith(b'dkim=temperror reason="key query failed: timeout" header.d=x.org')
    assert lines[2].endswith(b"header.b=AbCdEfGhX")


def test_hostile_values_cannot_inject_lines() -> None:
    evil = SignatureResult(
        DkimResult.PERMERROR,
        VerifyError.SIGNATURE_SYNTAX,
        'bad\r\nX-Evil: yes "quoted"',
        domain="ex\r\nample.com",
        identity="a b@example.com",
        selector="s\x00",
        algorithm="rsa-sha256",
        b="abc\ndef",
    )
    value = authentication_results_value("mx\r\n", [evil])
    assert b"\n" not in value.replace(b";\r\n\t", b"") and b"\r" not in value.replace(
        b";\r\n\t", b""
    )
    assert b"\x00" not in value
    assert b'reason="bad??X-Evil: yes \\"quoted\\""' in value
    assert b'header.i="a b@example.com"' in value
    value.decode("ascii")


def test_reason_is_derived_from_the_error() -> None:
    assert PASS.reason == ""
    for error in VerifyError:
        text = SignatureResult(DkimResult.PERMERROR, error, "DETAIL {0} {detail}").reason
        assert text, error  # every error has words
        assert "{" not in text.replace("{0} {detail}", ""), error  # templates filled in
    mismatch = SignatureResult(DkimResult.FAIL, VerifyError.SIGNATURE_MISMATCH, "ignored")
    assert mismatch.reason == "signature verification failed"
    query = SignatureResult(DkimResult.TEMPERROR, VerifyError.KEY_QUERY_TEMPFAIL, "timeout")
    assert query.reason == "key query failed: timeout"
    syntax = SignatureResult(DkimResult.PERMERROR, VerifyError.SIGNATURE_SYNTAX, "bad b=")
    assert syntax.reason == "bad b="
