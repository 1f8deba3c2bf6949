"""Authentication-Results text in OpenDKIM's format, and its sanitizing."""

from __future__ import annotations

from dkimd.dkim import (
    DkimResult,
    SignatureResult,
    VerifyError,
    authentication_results_value,
    bad_format_value,
)
from dkimd.dkim.results import fold_tokens

PASS = SignatureResult(
    DkimResult.PASS,
    domain="example.com",
    identity="@example.com",
    selector="mail",
    algorithm="rsa-sha256",
    b="AbCdEfGhIjKl",
    key_bits=2048,
)


def _observed(
    result: DkimResult, error: VerifyError | None, b: str, **kw: object
) -> SignatureResult:
    """A signature as the suite's fixture message carries it (example.com, selector test)."""
    fields: dict[str, object] = {
        "domain": "example.com",
        "identity": "@example.com",
        "selector": "test",
        "algorithm": "rsa-sha256",
        "b": b,
        "key_bits": 1024,
        **kw,
    }
    return SignatureResult(result, error, **fields)  # type: ignore[arg-type]


def test_pass_byte_for_byte_as_opendkim_2_11() -> None:
    # Observed from /usr/sbin/opendkim 2.11 (TestPublicKeys, so no DNSSEC word).
    good = _observed(DkimResult.PASS, None, "RNAhx6cVrest")
    assert authentication_results_value("unknown-host", [good], dnssec=None) == (
        b"unknown-host;\r\n\tdkim=pass (1024-bit key) header.d=example.com "
        b"header.i=@example.com header.a=rsa-sha256 header.s=test header.b=RNAhx6cV;"
        b"\r\n\tdkim-atps=neutral"
    )


def test_failures_byte_for_byte_as_opendkim_2_11() -> None:
    bad = _observed(DkimResult.FAIL, VerifyError.SIGNATURE_MISMATCH, "AiGrvHu2xyz")
    assert authentication_results_value("unknown-host", [bad], dnssec=None) == (
        b'unknown-host;\r\n\tdkim=fail reason="signature verification failed" (1024-bit key) '
        b"header.d=example.com header.i=@example.com header.a=rsa-sha256 header.s=test "
        b"header.b=AiGrvHu2;\r\n\tdkim-atps=neutral"
    )
    # No key size when no key was read; the verifier's own words stay in the logs.
    revoked = _observed(
        DkimResult.PERMERROR,
        VerifyError.KEY_REVOKED,
        "sF59xX14abc",
        selector="revoked",
        key_bits=None,
    )
    assert authentication_results_value("unknown-host", [revoked], dnssec=None) == (
        b'unknown-host;\r\n\tdkim=fail reason="key revoked" header.d=example.com '
        b"header.i=@example.com header.a=rsa-sha256 header.s=revoked header.b=sF59xX14;"
        b"\r\n\tdkim-atps=neutral"
    )
    nokey = _observed(DkimResult.PERMERROR, VerifyError.KEY_NOT_FOUND, "RNAhx6cVabc", key_bits=None)
    assert b'dkim=fail reason="key not found in DNS" header.d=' in authentication_results_value(
        "unknown-host", [nokey], dnssec=None
    )
    # A body changed in transit reads as a bad signature, as libopendkim reports it.
    body = _observed(DkimResult.FAIL, VerifyError.BODY_HASH_MISMATCH, "AiGrvHu2xyz")
    assert b'reason="signature verification failed"' in authentication_results_value("h", [body])


def test_unsigned_fits_on_one_line() -> None:
    assert authentication_results_value("unknown-host", []) == (
        b"unknown-host; dkim=none; dkim-atps=neutral"
    )
    assert authentication_results_value("unknown-host", [], atps=None) == (
        b"unknown-host; dkim=none"
    )


def test_bad_format_value() -> None:
    assert bad_format_value("unknown-host") == (
        b"unknown-host; dkim=permerror (bad message/signature format)"
    )


def test_several_signatures_one_line_each_in_header_order() -> None:
    # Observed: two passing signatures, d=example.net on top.
    net = _observed(
        DkimResult.PASS,
        None,
        "NcDshKflAAA",
        domain="example.net",
        identity="@example.net",
        selector="test2",
    )
    com = _observed(DkimResult.PASS, None, "dC98hajYBBB")
    assert authentication_results_value("unknown-host", [net, com], dnssec=None) == (
        b"unknown-host;\r\n\tdkim=pass (1024-bit key) header.d=example.net "
        b"header.i=@example.net header.a=rsa-sha256 header.s=test2 header.b=NcDshKfl;"
        b"\r\n\tdkim=pass (1024-bit key) header.d=example.com header.i=@example.com "
        b"header.a=rsa-sha256 header.s=test header.b=dC98hajY;\r\n\tdkim-atps=neutral"
    )


def test_result_words_and_b_disambiguation() -> None:
    first = _observed(DkimResult.PASS, None, "AbCdEfGhIjKl")
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
    value = authentication_results_value("mx", [first, other], header_b=True)
    lines = value.split(b"\r\n\t")
    assert lines[0] == b"mx;"
    assert lines[1].endswith(b"header.b=AbCdEfGhI;")
    # temperror carries no reason in OpenDKIM's A-R (dkimf_ar_all_sigs).
    assert lines[2].startswith(b"dkim=temperror header.d=x.org")
    assert lines[2].endswith(b"header.b=AbCdEfGhX;")
    no_b = authentication_results_value("mx", [first], header_b=False)
    assert b"header.b=" not in no_b
    small = SignatureResult(DkimResult.POLICY, VerifyError.KEY_BELOW_MINIMUM, key_bits=512)
    assert b'dkim=policy reason="signing key too small" (512-bit key' in (
        authentication_results_value("mx", [small])
    )


def test_short_tokens_share_a_line_until_column_75() -> None:
    # The fold comes before the token that would reach column 75 (DKIM_HDRMARGIN), with the
    # column counted from 25 ("Authentication-Results: " as OpenDKIM counts it).
    assert fold_tokens(["a" * 48 + ";", "b"]) == "a" * 48 + ";\r\n\tb"  # 25 + 49 + 1 = 75
    assert fold_tokens(["a" * 47 + ";", "b"]) == "a" * 47 + "; b"


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
    # A syntax error is a permerror: OpenDKIM gives no reason for it, so none can leak.
    assert b"X-Evil" not in value
    assert b"\x00" not in value
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
