"""DKIM-Signature parsing/validation (RFC 6376 6.1.1), b= stripping, and OpenDKIM's folding."""

from __future__ import annotations

import pytest
from dkim_helpers import DATA
from hypothesis import given
from hypothesis import strategies as st

from dkimd.dkim import (
    HeaderField,
    SignatureError,
    build_signature_field,
    fold_b_value,
    fold_signature,
    parse_signature,
    select_headers,
    strip_b_value,
)
from dkimd.dkim.headers import parse_field
from dkimd.dkim.tags import strip_fws

GOOD = (
    "v=1; a=rsa-sha256; c=relaxed/simple; d=example.com; s=mail; t=100; x=200; "
    "i=joe@sub.example.com; l=42; q=dns/txt; h=From:To; bh=AAAA; b=BBBB; zz=unknown"
)


def test_parses_all_tags_and_ignores_unknown() -> None:
    sig = parse_signature(GOOD)
    assert sig.algorithm == "rsa-sha256"
    assert (sig.header_canon, sig.body_canon) == ("relaxed", "simple")
    assert (sig.domain, sig.selector) == ("example.com", "mail")
    assert sig.identity == "joe@sub.example.com"
    assert (sig.timestamp, sig.expiration, sig.body_length) == (100, 200, 42)
    assert sig.signed_headers == ("From", "To")
    assert sig.key_name == "mail._domainkey.example.com"
    assert sig.tags["zz"] == "unknown"


def test_defaults() -> None:
    sig = parse_signature("v=1; a=ed25519-sha256; d=Example.COM; s=s1; h=from; bh=AAAA; b=BBBB")
    assert (sig.header_canon, sig.body_canon) == ("simple", "simple")
    assert sig.auid == "@Example.COM"
    assert sig.key_name == "s1._domainkey.example.com"
    assert parse_signature(GOOD.replace("c=relaxed/simple", "c=relaxed")).body_canon == "simple"


def _bad(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_bad("v=1", "v=2"), "unsupported signature version v="),
        (_bad("a=rsa-sha256", "a=rsa-md5"), "unknown signature algorithm a="),
        (_bad("c=relaxed/simple", "c=relaxed/fancy"), "unknown canonicalization c="),
        (_bad("bh=AAAA", "bh=A!AA"), "bh= is not valid base64"),
        (_bad("b=BBBB", "b=B"), "b= is not valid base64"),
        (_bad("b=BBBB", "b="), "b= is empty"),
        (_bad("i=joe@sub.example.com", "i=joe@example.net"), "identity i= is not within d="),
        (_bad("i=joe@sub.example.com", "i=joe@badexample.com"), "identity i= is not within d="),
        (_bad("i=joe@sub.example.com", "i=nobody"), "malformed identity i="),
        (_bad("x=200", "x=99"), "x= is earlier than t="),
        (_bad("t=100", "t=1e3"), "t= is not a valid number"),
        (_bad("l=42", "l=-1"), "l= is not a valid number"),
        (_bad("h=From:To", "h=To:Subject"), "From field not signed (h= lacks from)"),
        (_bad("h=From:To", "h=From::To"), "malformed header list h="),
        (_bad("q=dns/txt", "q=http"), "no supported query method q="),
        (_bad("d=example.com", "d=exa mple.com"), "malformed domain d="),
        (_bad("s=mail", "s=mail;s=again"), "duplicate tag 's'"),
        (_bad("d=example.com; ", ""), "missing required tag(s): d="),
        ("v=1; a=rsa-sha256", "missing required tag(s): b= bh= d= h= s="),
        (_bad("v=1;", "v=1;;"), "empty tag-spec"),
    ],
)
def test_invalid_signatures_raise_with_reason(value: str, reason: str) -> None:
    with pytest.raises(SignatureError) as info:
        parse_signature(value)
    assert info.value.reason == reason


def test_hostile_values() -> None:
    with pytest.raises(SignatureError, match="too long"):
        parse_signature(_bad("b=BBBB", "b=" + "A" * 1_000_000))
    with pytest.raises(SignatureError):
        parse_signature(_bad("s=mail", "s=ma\x00il"))
    with pytest.raises(SignatureError):
        parse_signature(b"\xff\xfe" * 1000)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_raise_signature_error(data: bytes) -> None:
    try:
        parse_signature(data)
    except SignatureError as exc:
        assert exc.reason


def test_strip_b_value_uses_tag_boundaries() -> None:
    # "b=" occurs inside the bh= base64 value; only the b= tag's value goes.
    value = b" v=1; bh=Zb=; h=from;\r\n\tb=abc\r\n\t def ; x=1"
    assert strip_b_value(value) == b" v=1; bh=Zb=; h=from;\r\n\tb=; x=1"
    assert strip_b_value(b" b = xyz") == b" b ="


def test_select_headers_bottom_up() -> None:
    headers = [
        HeaderField(b"To", b" 1"),
        HeaderField(b"From", b" f"),
        HeaderField(b"to", b" 2"),
    ]
    picked = select_headers(headers, ["to", "TO", "to", "from", "subject"])
    assert [f.value for f in picked] == [b" 2", b" 1", b" f"]


@pytest.mark.parametrize("name", ["alice", "longdomain", "manyheaders"])
def test_folding_matches_opendkim(name: str) -> None:
    """Fields written by opendkim 2.11 (captured with miltertest) are rebuilt byte for byte."""
    raw = (DATA / "opendkim_fold" / f"{name}.txt").read_bytes().replace(b"\n", b"\r\n")
    original = parse_field(raw.rstrip(b"\r\n"))
    sig = parse_signature(original.value)
    rebuilt = build_signature_field([(k, strip_fws(v)) for k, v in sig.tags.items()])
    assert rebuilt == original


def test_folded_lines_stay_within_margin() -> None:
    tags = [("v", "1"), ("a", "rsa-sha256"), ("d", "sub.example.com"), ("s", "s")]
    tags += [("h", ":".join(["Header-Name-" + str(i) for i in range(30)])), ("b", "A" * 700)]
    value = build_signature_field(tags).raw
    lines = value.split(b"\r\n")
    assert all(len(line.expandtabs(8)) <= 76 for line in lines[1:])
    assert strip_fws(value.decode()) == strip_fws(
        "DKIM-Signature:" + "; ".join(f"{k}={v}" for k, v in tags)
    )


_TAG_VALUES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-/+=:", max_size=90)


@given(
    values=st.lists(_TAG_VALUES, min_size=1, max_size=11),
    b=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/=", max_size=700),
)
def test_signer_layout_is_the_one_pass_layout(values: list[str], b: str) -> None:
    """The signer lays the field out once with b= empty and appends fold_b_value(b): that
    must be exactly the field laid out with b= in it, and emptying its b= must give back
    what was hashed (RFC 6376 3.7)."""
    names = ["v", "a", "c", "d", "s", "t", "x", "i", "l", "bh", "h"]
    tags = list(zip(names, values, strict=False))
    unsigned = fold_signature([*tags, ("b", "")])
    signed = unsigned + fold_b_value(b)
    assert signed == fold_signature([*tags, ("b", b)])
    assert strip_b_value(signed) == unsigned
