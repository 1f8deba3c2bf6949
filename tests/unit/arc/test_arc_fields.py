"""RFC 8617 section 4: the three ARC header fields and how they group into ARC Sets.

Each test names the rule it checks. A field or grouping that breaks a rule makes the chain
fail (5.2 step 2) before any key is fetched.
"""

from __future__ import annotations

import pytest
from arc_helpers import MESSAGE, seal, verify

from dkimd.arc import (
    ArcError,
    ArcFieldError,
    ArcVerifier,
    ChainState,
    collect_sets,
    parse_aar,
    parse_ams,
    parse_seal,
)
from dkimd.dkim import HeaderField, PrivateKey, split_message

SEAL = b" i=1; a=rsa-sha256; t=1; cv=none; d=hop.example; s=arc; b=AAAA"
AMS = b" i=1; a=rsa-sha256; c=relaxed/relaxed; d=hop.example; s=arc; bh=AAAA; h=from:to; b=AAAA"


def field(name: bytes, value: bytes) -> HeaderField:
    return HeaderField(name, value)


# --- 4.1.1 ARC-Authentication-Results ---


def test_aar_instance_and_authserv_id() -> None:
    aar = parse_aar(field(b"ARC-Authentication-Results", b" i=3; mx.example;\r\n\tspf=pass"))
    assert (aar.instance, aar.authserv_id) == (3, "mx.example")
    assert aar.payload == "mx.example; spf=pass"


@pytest.mark.parametrize(
    "value",
    [b" mx.example; i=1; spf=pass", b" i=1 mx.example", b" i=; mx.example", b" i=1;", b" i=x;"],
)
def test_aar_must_start_with_instance_then_authserv_id(value: bytes) -> None:
    with pytest.raises(ArcFieldError):
        parse_aar(field(b"ARC-Authentication-Results", value))


# --- 4.1.2 ARC-Message-Signature ---


def test_ams_i_is_the_instance_not_an_auid() -> None:
    ams = parse_ams(field(b"ARC-Message-Signature", AMS))
    assert ams.instance == 1 and ams.sig.identity is None


def test_ams_v_tag_is_ignored() -> None:
    # "if seen, a version tag MUST be ignored"; v=2 would be a DKIM permerror.
    ams = parse_ams(field(b"ARC-Message-Signature", b" v=2;" + AMS))
    assert ams.instance == 1


@pytest.mark.parametrize("tag", [b"i", b"a", b"d", b"s", b"bh", b"h", b"b"])
def test_ams_required_tags(tag: bytes) -> None:
    parts = [p for p in AMS.split(b";") if p.split(b"=")[0].strip() != tag]
    with pytest.raises(ArcFieldError):
        parse_ams(field(b"ARC-Message-Signature", b";".join(parts)))


def test_ams_h_must_not_contain_arc_seal() -> None:
    value = AMS.replace(b"h=from:to", b"h=from:to:ARC-Seal")
    with pytest.raises(ArcFieldError, match="ARC-Seal"):
        parse_ams(field(b"ARC-Message-Signature", value))


def test_ams_rsa_sha1_refused_rfc8301() -> None:
    with pytest.raises(ArcFieldError):
        parse_ams(field(b"ARC-Message-Signature", AMS.replace(b"rsa-sha256", b"rsa-sha1")))


# --- 4.1.3 ARC-Seal ---


def test_seal_tags() -> None:
    s = parse_seal(field(b"ARC-Seal", SEAL))
    assert (s.instance, s.cv, s.domain, s.selector, s.timestamp) == (
        1,
        ChainState.NONE,
        "hop.example",
        "arc",
        1,
    )
    assert s.key_name == "arc._domainkey.hop.example"


def test_seal_must_not_have_h() -> None:
    with pytest.raises(ArcFieldError, match="h="):
        parse_seal(field(b"ARC-Seal", SEAL + b"; h=from"))


@pytest.mark.parametrize("tag", [b"i", b"a", b"cv", b"d", b"s", b"b"])
def test_seal_required_tags(tag: bytes) -> None:
    parts = [p for p in SEAL.split(b";") if p.split(b"=")[0].strip() != tag]
    with pytest.raises(ArcFieldError):
        parse_seal(field(b"ARC-Seal", b";".join(parts)))


@pytest.mark.parametrize("value", [b"cv=maybe", b"t=soon", b"a=rsa-sha1", b"d=bad..domain"])
def test_seal_bad_values(value: bytes) -> None:
    name = value.split(b"=")[0]
    parts = [p for p in SEAL.split(b";") if p.split(b"=")[0].strip() != name]
    with pytest.raises(ArcFieldError):
        parse_seal(field(b"ARC-Seal", b";".join([*parts, b" " + value])))


# --- 4.2.1 instance tags: 1..50, one set per instance, no gaps ---


@pytest.mark.parametrize("instance", [b"0", b"51", b"999"])
def test_instance_outside_1_to_50(instance: bytes) -> None:
    with pytest.raises(ArcFieldError):
        parse_seal(field(b"ARC-Seal", SEAL.replace(b"i=1", b"i=" + instance)))


def chain_of(n: int, key: PrivateKey, records: dict[str, bytes]) -> bytes:
    message = MESSAGE
    for _ in range(n):
        message = seal(message, key, records)
    return message


def arc_lines(message: bytes) -> tuple[list[HeaderField], bytes]:
    headers, offset = split_message(message)
    return headers, message[offset:]


def rebuild(headers: list[HeaderField], body: bytes) -> bytes:
    return b"".join(h.raw + b"\r\n" for h in headers) + b"\r\n" + body


def test_duplicate_instance_fails(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    headers, body = arc_lines(chain_of(1, rsa_key, records))
    seal_field = next(h for h in headers if h.key == b"arc-seal")
    result = verify(rebuild([seal_field, *headers], body), records)
    assert result.state is ChainState.FAIL and result.error is ArcError.STRUCTURE
    assert "duplicate" in result.reason


def test_gap_fails(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    headers, body = arc_lines(chain_of(3, rsa_key, records))
    # Take away the whole set i=2: three complete sets become 1 and 3.
    kept = [h for h in headers if not (h.key.startswith(b"arc-") and b"i=2;" in h.value[:6])]
    assert len(kept) == len(headers) - 3
    result = verify(rebuild(kept, body), records)
    assert result.state is ChainState.FAIL and "gap" in result.reason


@pytest.mark.parametrize(
    "kind", [b"arc-seal", b"arc-message-signature", b"arc-authentication-results"]
)
def test_set_missing_a_field_fails(
    kind: bytes, rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    headers, body = arc_lines(chain_of(2, rsa_key, records))
    removed = False
    kept = []
    for h in headers:
        if h.key == kind and not removed:
            removed = True  # the newest one (i=2): the chain still starts at 1
            continue
        kept.append(h)
    result = verify(rebuild(kept, body), records)
    assert result.state is ChainState.FAIL and "lacks" in result.reason


def test_configured_limit_lower_than_50(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    from arc_helpers import NOW

    from dkimd.arc import ArcVerifyOptions

    message = chain_of(3, rsa_key, records)
    assert verify(message, records, ArcVerifyOptions(now=NOW, max_instances=3)).passed
    result = verify(message, records, ArcVerifyOptions(now=NOW, max_instances=2))
    assert result.state is ChainState.FAIL and "limit 2" in result.reason


def test_instance_bomb_refused_without_parsing() -> None:
    # 10,000 ARC-Seal fields: refused on the count, no tag-list parsed, no key asked for.
    bomb = [field(b"ARC-Seal", SEAL.replace(b"i=1", b"i=%d" % (n % 50 + 1))) for n in range(10_000)]
    headers = [*bomb, field(b"From", b" a@example.com")]
    collected = collect_sets(headers)
    assert collected.error.startswith("10000 ARC header fields")
    verifier = ArcVerifier(headers)
    assert verifier.key_queries() == [] and not verifier.needs_body()
    assert verifier.result().state is ChainState.FAIL


def test_instance_not_first_tag_is_found() -> None:
    # RFC 8617 does not fix the tag order; the ValiMail vectors put i= last.
    value = b" a=rsa-sha256; cv=none; d=hop.example; s=arc; b=AAAA; i=1"
    headers = [
        field(b"ARC-Seal", value),
        field(b"ARC-Message-Signature", AMS),
        field(b"ARC-Authentication-Results", b" i=1; mx.example; spf=pass"),
    ]
    collected = collect_sets(headers)
    assert collected.error == "" and len(collected.sets) == 1


def test_no_arc_fields_is_none() -> None:
    result = ArcVerifier([field(b"From", b" a@example.com")]).result()
    assert result.state is ChainState.NONE and result.error is None
