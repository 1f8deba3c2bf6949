"""RFC 8617 section 5.2: validating an ARC chain, each step and rule with its own test."""

from __future__ import annotations

import re

import pytest
from arc_helpers import DATA, MESSAGE, NOW, record, seal, verify

from dkimd.arc import ArcError, ArcVerifyOptions, ChainState
from dkimd.dkim import PrivateKey, load_private_key
from dkimd.dns.base import TxtResult, TxtStatus


def hops(n: int, key: PrivateKey, records: dict[str, bytes], message: bytes = MESSAGE) -> bytes:
    for i in range(1, n + 1):
        message = seal(message, key, records, domain=f"hop{i}.example")
    return message


@pytest.mark.parametrize("n", [1, 2, 3])
def test_chain_of_n_hops_passes(n: int, rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    result = verify(hops(n, rsa_key, records), records)
    assert result.state is ChainState.PASS and result.instances == n
    assert result.oldest_pass == 0 and result.domain == f"hop{n}.example"


def test_ed25519_chain_passes(ed_key: PrivateKey, records: dict[str, bytes]) -> None:
    message = seal(MESSAGE, ed_key, records, domain="ed.example")
    message = seal(message, ed_key, records, domain="ed.example")
    assert b"a=ed25519-sha256" in message
    assert verify(message, records).passed


def test_body_fed_in_chunks_gives_the_same_result(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    message = hops(2, rsa_key, records)
    for chunk in (1, 2, 3, 7):
        assert verify(message, records, chunk=chunk).passed


def test_step1_no_sets_is_none(records: dict[str, bytes]) -> None:
    result = verify(MESSAGE, records)
    assert result.state is ChainState.NONE and result.instances == 0


def _set_cv(message: bytes, instance: int, cv: bytes) -> bytes:
    return re.sub(rb"(ARC-Seal: i=%d;[^\r]*?cv=)\w+" % instance, rb"\g<1>" + cv, message, count=1)


def test_step2_a_seal_with_cv_fail_fails_the_chain(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    message = _set_cv(hops(2, rsa_key, records), 2, b"fail")
    result = verify(message, records)
    assert result.state is ChainState.FAIL and result.error is ArcError.CV_FAIL


def test_step2_first_seal_must_say_cv_none(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    message = _set_cv(hops(1, rsa_key, records), 1, b"pass")
    result = verify(message, records)
    assert result.error is ArcError.CV_INVALID and "i=1" in result.reason


def test_step2_later_seal_must_say_cv_pass(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    message = _set_cv(hops(2, rsa_key, records), 2, b"none")
    result = verify(message, records)
    assert result.error is ArcError.CV_INVALID and "i=2" in result.reason


def test_step2_asks_no_key_when_the_structure_fails(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    from dkimd.arc import ArcVerifier
    from dkimd.dkim import split_message

    headers, _ = split_message(_set_cv(hops(2, rsa_key, records), 1, b"fail"))
    assert ArcVerifier(headers).key_queries() == []


def test_step3_newest_ams_failing_fails_the_chain(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    message = hops(2, rsa_key, records).replace(b"See you  there.", b"See you there!")
    result = verify(message, records)
    assert result.state is ChainState.FAIL and result.error is ArcError.AMS_FAIL
    assert result.reason == "AMS i=2: body hash mismatch"


def test_step4_oldest_pass_after_a_mailing_list_change(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    # Hop 1 seals; the list then rewrites the Subject (breaking AMS 1) and seals as hop 2.
    one = hops(1, rsa_key, records)
    changed = one.replace(b"Subject: plans", b"Subject: [list] plans")
    two = seal(changed, rsa_key, records, domain="hop2.example", received=one)
    result = verify(two, records)
    assert result.state is ChainState.PASS and result.oldest_pass == 2


def test_step5_every_seal_must_verify(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    # The AAR of instance 1 is covered by both seals: changing it breaks AS 2 first.
    message = re.sub(
        rb"(ARC-Authentication-Results: i=1;[^:]*?)spf=pass",
        rb"\1spf=fail",
        hops(2, rsa_key, records),
    )
    assert b"spf=fail" in message
    result = verify(message, records)
    assert result.state is ChainState.FAIL and result.error is ArcError.SEAL_FAIL
    assert result.reason.startswith("AS i=2:")


def test_removed_arc_header_fails(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    message = hops(2, rsa_key, records)
    lines = message.split(b"\r\n")
    start = next(
        i for i, line in enumerate(lines) if line.startswith(b"ARC-Authentication-Results: i=1")
    )
    end = start + 1
    while lines[end][:1] in (b" ", b"\t"):
        end += 1
    result = verify(b"\r\n".join(lines[:start] + lines[end:]), records)
    assert result.state is ChainState.FAIL


# --- timestamps ---


def test_ams_timestamp_in_the_future_fails(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    message = seal(MESSAGE, rsa_key, records, timestamp=NOW + 3600)
    result = verify(message, records)
    assert result.error is ArcError.AMS_FAIL and "future" in result.reason


def test_timestamp_within_clock_skew_passes(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    message = seal(MESSAGE, rsa_key, records, timestamp=NOW + 200)
    assert verify(message, records, ArcVerifyOptions(now=NOW, clock_skew=300)).passed


def test_seal_timestamp_in_the_future_fails(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    # A verifier whose clock is behind the sealer's: the AMS is checked first and fails too,
    # so ask about the seal alone by giving the AMS an older t= is not possible without
    # re-signing; instead check that a passing chain sealed "now" fails an hour earlier.
    message = seal(MESSAGE, rsa_key, records, timestamp=NOW)
    result = verify(message, records, ArcVerifyOptions(now=NOW - 3600))
    assert result.state is ChainState.FAIL and "future" in result.reason


# --- keys: RFC 8301, records ---


def test_rsa_key_under_1024_bits_fails(records: dict[str, bytes]) -> None:
    short = load_private_key((DATA / "rsa512.pem").read_bytes())
    local = {**records, "arc._domainkey.short.example": record(short)}
    message = seal(MESSAGE, short, local, domain="short.example")
    result = verify(message, local)
    assert result.state is ChainState.FAIL and "1024" in result.reason


def test_revoked_key_fails(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    message = hops(1, rsa_key, records)
    local = {**records, "arc._domainkey.hop1.example": b"v=DKIM1; k=rsa; p="}
    assert "revoked" in verify(message, local).reason


def test_missing_key_fails(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    message = hops(1, rsa_key, records)
    local = {k: v for k, v in records.items() if "hop1" not in k}
    assert verify(message, local).state is ChainState.FAIL


def test_temporary_dns_failure_fails_with_its_reason(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    message = hops(1, rsa_key, records)
    name = "arc._domainkey.hop1.example"
    local = {**records, name: TxtResult(name, TxtStatus.TIMEOUT)}
    result = verify(message, local)
    assert result.state is ChainState.FAIL and "temporary" in result.reason


def test_key_of_the_wrong_type_fails(
    rsa_key: PrivateKey, ed_key: PrivateKey, records: dict[str, bytes]
) -> None:
    message = hops(1, rsa_key, records)
    local = {**records, "arc._domainkey.hop1.example": record(ed_key)}
    assert "type" in verify(message, local).reason


def test_key_hash_restriction_applies(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    message = hops(1, rsa_key, records)
    local = {**records, "arc._domainkey.hop1.example": record(rsa_key, " h=sha1;")}
    assert verify(message, local).state is ChainState.FAIL
