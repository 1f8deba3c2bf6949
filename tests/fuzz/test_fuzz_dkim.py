"""Hostile DKIM input: tag-lists, DKIM-Signature values, key records, header blocks, bodies
and Authentication-Results fields. Parsers return a value or raise their one documented
error (TagListError, SignatureError, KeyRecordError, MessageError); outputs keep their
invariants (see fuzz_targets for each)."""

from __future__ import annotations

import base64

from fuzz_targets import (
    auth_results,
    authserv_id,
    body_canon,
    check_ar_value,
    examples,
    header_block,
    key_record,
    signature,
    tag_list,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dkimd.dkim import (
    DkimResult,
    HeaderField,
    SignatureResult,
    Verifier,
    VerifyError,
    VerifyOptions,
    authentication_results_value,
)
from dkimd.dns.base import TxtResult, TxtStatus

FUZZ = settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HOSTILE = '\0\r\n\t ;=:@.\x7f\x80\xff\u2028"\\()'
TEXT = st.text(
    alphabet=st.characters(codec="latin-1") | st.sampled_from(list(HOSTILE)), max_size=40
)
B64 = st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())
FWS = st.sampled_from(["", " ", "\t", "\r\n ", "\r\n\t", "\r\n", "\n ", "  "])

SIG_VALUES = {
    "v": ["1", "2", "", "1 1"],
    "a": ["rsa-sha256", "rsa-sha1", "ed25519-sha256", "RSA-SHA256", "hmac-sha256", ""],
    "c": ["relaxed/relaxed", "simple", "relaxed/", "/simple", "bogus/simple", "relaxed/simple/x"],
    "d": ["example.com", "EXAMPLE.com.", "-bad.com", "a..b", "x" * 70 + ".com", "", "ex ample.com"],
    "s": ["mail", "2024._sel", "", "a b", "..", "s" * 300],
    "h": ["from:to", "From", "to:subject", "from::to", ":", "from : to", "from:x\0y"],
    "i": ["@example.com", "user@sub.example.com", "@evil.com", "noat", "@", "@EXAMPLE.COM."],
    "t": ["1700000000", "0", "99999999999999", "-1", "1e9", ""],
    "x": ["1600000000", "1800000000", "x", ""],
    "l": ["0", "10", "9" * 80, "-5", ""],
    "q": ["dns/txt", "dns", "http", "dns/txt:foo", ""],
    "z": ["From:a|To:b", "", "=3D"],
}


def _tag_list(pool: dict[str, list[str]], required: tuple[str, ...]) -> st.SearchStrategy[str]:
    names = sorted(pool)

    @st.composite
    def build(draw: st.DrawFn) -> str:
        chosen = [n for n in required if draw(st.booleans()) or draw(st.booleans())]
        chosen += draw(
            st.lists(st.sampled_from([*names, "X", "unknown_tag", "1x", ""]), max_size=5)
        )
        draw(st.randoms()).shuffle(chosen)
        specs = []
        for name in chosen:
            value = draw(st.sampled_from(pool[name]) | TEXT | B64) if name in pool else draw(TEXT)
            specs.append(f"{draw(FWS)}{name}{draw(FWS)}={draw(FWS)}{value}{draw(FWS)}")
        sep = draw(st.sampled_from([";", "; ", ";\r\n\t", ";;", ","]))
        return sep.join(specs) + draw(st.sampled_from(["", ";", "; ", ";;"]))

    return build()


SIGNATURE_POOL = {**SIG_VALUES, "b": ["", "!!!", "A" * 8000, "YWJj", "YWJj\r\n ZGVm"]}
SIGNATURE_POOL["bh"] = ["", "YWJj", "====", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]
SIGNATURES = _tag_list(SIGNATURE_POOL, ("v", "a", "b", "bh", "d", "h", "s"))

KEY_POOL = {
    "v": ["DKIM1", "DKIM2", ""],
    "k": ["rsa", "ed25519", "RSA", "dsa", ""],
    "h": ["sha256", "sha1:sha256", "md5", ""],
    "s": ["email", "*", "email:*", "ftp", ""],
    "t": ["y", "s", "y:s", "q", ""],
    "p": [
        "",
        "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ",
        "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        "AAAA",
        "@@@",
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
    ],
    "n": ["notes", '"quoted"'],
}
KEY_RECORDS = _tag_list(KEY_POOL, ("v", "k", "p"))


@FUZZ
@given(st.binary(max_size=300) | SIGNATURES.map(lambda s: s.encode("utf-8")))
@example(b"a=b;a=c")
@example(b"=x")
@example(b";;")
@example(b"a=\r\nb")
@example(b"a=b\r\n")
def test_tag_list(data: bytes) -> None:
    tag_list(data)


@FUZZ
@given(SIGNATURES.map(lambda s: s.encode("utf-8")) | st.binary(max_size=300))
@example(b"v=1; a=rsa-sha256; d=example.com; s=mail; h=to; bh=YWJj; b=YWJj")  # h= without from
@example(b"v=1; a=rsa-sha256; d=example.com; s=mail; h=from; bh=YWJj; b=YWJj; t=10; x=5")
@example(b"v=1; a=rsa-sha256; d=example.com; s=mail; h=from; bh=YWJj; b=YWJj; i=@evil.com")
@example(b"v=1; a=rsa-sha512; d=example.com; s=mail; h=from; bh=YWJj; b=YWJj")
@example(b"v=1; a=rsa-sha256; d=example.com; s=mail; h=from; bh=YWJj; b=" + b"A" * 100000)
@example(b"v=1; a=rsa-sha256; d=example.com; s=mail; h=from; bh=YWJj; b=YW!j")
def test_signature(data: bytes) -> None:
    signature(data)


@FUZZ
@given(KEY_RECORDS.map(lambda s: s.encode("utf-8")) | st.binary(max_size=300))
@example(b"k=dsa; p=AAAA")
@example(b"p=AAAA; v=DKIM1")
@example(b"v=DKIM1; p=")
@example(b"v=DKIM1; k=ed25519; p=AAAA")
@example(b"v=DKIM1; p=" + base64.b64encode(b"\x30" * 3000))
def test_key_record(data: bytes) -> None:
    key_record(data)


HEADER_LINES = st.lists(
    st.one_of(
        st.builds(
            lambda n, v: n + b":" + v,
            st.sampled_from(
                [b"From", b"To", b"Subject ", b"DKIM-Signature", b"", b"X\x80", b"a b"]
            ),
            st.binary(max_size=40),
        ),
        st.builds(lambda v: b" " + v, st.binary(max_size=20)),
        st.binary(max_size=30),
    ),
    max_size=10,
)


@FUZZ
@given(HEADER_LINES.map(b"\r\n".join) | st.binary(max_size=300))
@example(b" starts folded")
@example(b"From: a\rb")
@example(b"From: a\nb")
@example(b"Subject:\0\0")
@example(b"X:\xff\xfe")
def test_header_block(data: bytes) -> None:
    header_block(data)


@FUZZ
@given(
    st.integers(0, 255),
    st.lists(
        st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\t", b"x", b"\0", b"\xff"]), max_size=60
    ),
)
@example(3, [b"\r"])
@example(0, [b" ", b"\r"])
@example(1, [b"\r\n"] * 5)
def test_body_canonicalization(cut: int, parts: list[bytes]) -> None:
    body_canon(bytes([cut]) + b"".join(parts))


@FUZZ
@given(st.binary(max_size=300))
def test_body_canonicalization_binary(data: bytes) -> None:
    body_canon(data)


@FUZZ
@given(st.binary(max_size=400))
@example(b"mx\r\n; dkim=pass\xfereason\r\nX-Evil: 1\xfeevil.com\n\xfe\0\xfesel\r\xfeAAAA")
def test_authentication_results_bytes(data: bytes) -> None:
    auth_results(data)


@FUZZ
@given(
    TEXT,
    st.lists(
        st.builds(
            SignatureResult,
            st.sampled_from(list(DkimResult)),
            st.sampled_from(list(VerifyError)) | st.none(),
            TEXT,
            TEXT | st.none(),
            TEXT | st.none(),
            TEXT | st.none(),
            TEXT | st.none(),
            TEXT | st.none(),
            st.integers(0, 20000) | st.none(),
        ),
        max_size=5,
    ),
    st.sampled_from(["unprotected", "secure", None, "x\r\ny"]),
)
@example("mx.example.com\r\nX-Injected: yes", [], "unprotected")
@example(
    "",
    [
        SignatureResult(
            DkimResult.FAIL,
            VerifyError.SIGNATURE_SYNTAX,
            'a"\\\r\n\0b',
            "d\r\n",
            "@d",
            "s;",
            "a",
            "b\n",
        )
    ],
    None,
)
def test_authentication_results_structured(
    authserv: str, results: list[SignatureResult], dnssec: str | None
) -> None:
    value = authentication_results_value(authserv, results, dnssec=dnssec)
    check_ar_value(value)


@FUZZ
@given(st.binary(max_size=200))
@example(b"(comment (nested) \r\n) mx.example.com; dkim=pass")
@example(b"((((((")
@example(b"")
@example(b"\xff\xfe; x")
@example(b'"("')
@example(b' "mx;a b"; dkim=pass')
def test_authserv_id_of(data: bytes) -> None:
    authserv_id(data)


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from([b"From", b"DKIM-Signature", b"To", b"dkim-signature "]), TEXT),
        max_size=6,
    ),
    st.lists(st.binary(max_size=50), max_size=4),
    st.sampled_from(list(TxtStatus)),
    st.lists(KEY_RECORDS.map(lambda s: s.encode("utf-8")), max_size=3),
)
def test_verifier_never_raises(
    headers: list[tuple[bytes, str]],
    body: list[bytes],
    status: TxtStatus,
    records: list[bytes],
) -> None:
    """The verifier turns every hostile signature and key record into a result value."""
    fields = [HeaderField(n, b" " + v.encode("utf-8")) for n, v in headers]
    verifier = Verifier(fields, VerifyOptions(now=1_700_000_000))
    for name in verifier.key_queries():
        verifier.provide_key(name, TxtResult(name, status, tuple(records)))
    for chunk in body:
        verifier.feed_body(chunk)
    results = verifier.results()
    assert results
    for r in results:
        # Typed outcome: an error for everything but a pass, and words for every error.
        assert (r.error is None) == r.passed, r
        assert r.error is None or r.reason, r
    check_ar_value(authentication_results_value("mx.example.com", results))
