"""RFC 8617 section 5.1: adding the next ARC set."""

from __future__ import annotations

import base64

import pytest
from arc_helpers import MESSAGE, NOW, record, seal, verify

from dkimd.arc import (
    ArcResult,
    ArcSealer,
    ChainState,
    SealRequest,
    collect_sets,
    parse_seal,
    seal_hash_input,
)
from dkimd.dkim import (
    BodyHashSet,
    PrivateKey,
    Signer,
    SigningError,
    SigningRequest,
    get_algorithm,
    parse_key_record,
    split_message,
)


def new_set(message: bytes) -> list[bytes]:
    """The names of the fields above the original message, top-down."""
    headers, _ = split_message(message)
    return [h.name for h in headers[: len(headers) - len(split_message(MESSAGE)[0])]]


def test_first_set_is_instance_1_with_cv_none(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    message = seal(MESSAGE, rsa_key, records)
    assert new_set(message) == [
        b"ARC-Seal",
        b"ARC-Message-Signature",
        b"ARC-Authentication-Results",
    ]
    sets = collect_sets(split_message(message)[0]).sets
    assert [s.instance for s in sets] == [1]
    assert sets[0].seal.cv is ChainState.NONE
    assert sets[0].aar.authserv_id == "mx.hop.example"
    assert "spf=pass smtp.mailfrom=origin.example; arc=none" in sets[0].aar.payload


def test_next_set_follows_the_highest_and_records_cv_pass(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    message = seal(seal(MESSAGE, rsa_key, records), rsa_key, records)
    sets = collect_sets(split_message(message)[0]).sets
    assert [s.instance for s in sets] == [1, 2]
    assert sets[1].seal.cv is ChainState.PASS
    assert "arc=pass header.oldest-pass=0" in sets[1].aar.payload


def test_ams_never_signs_arc_seal(rsa_key: PrivateKey) -> None:
    with pytest.raises(SigningError, match="ARC-Seal"):
        SealRequest("hop.example", "arc", rsa_key, "mx", signed_headers=("from", "arc-seal"))


def test_ams_signs_dkim_signatures_present(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    signer = Signer(SigningRequest("origin.example", "s", rsa_key))
    headers, offset = split_message(MESSAGE)
    signer.feed_body(MESSAGE[offset:])
    signed = signer.sign(headers).raw + b"\r\n" + MESSAGE
    ams = collect_sets(split_message(seal(signed, rsa_key, records))[0]).sets[0].ams
    assert "DKIM-Signature" in ams.sig.signed_headers


def test_failed_chain_is_sealed_with_cv_fail_over_its_own_set_only(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    broken = seal(MESSAGE, rsa_key, records).replace(b"See you", b"See them")
    assert verify(broken, records).state is ChainState.FAIL
    message = seal(broken, rsa_key, records)
    headers, _ = split_message(message)
    new_seal = parse_seal(headers[0])
    assert new_seal.instance == 2 and new_seal.cv is ChainState.FAIL
    # 5.1.2: the seal signs AAR 2, AMS 2 and itself, not set 1.
    data = seal_hash_input((), headers[2], headers[1], headers[0])
    key = parse_key_record(record(rsa_key)).public_key
    assert key is not None
    assert get_algorithm("rsa-sha256").verify(key, new_seal.signature, data)  # type: ignore[union-attr]
    # And a verifier then sees the cv=fail.
    assert verify(message, records).reason == "AS i=2 has cv=fail"


def test_no_set_after_a_seal_with_cv_fail(rsa_key: PrivateKey, records: dict[str, bytes]) -> None:
    broken = seal(MESSAGE, rsa_key, records).replace(b"See you", b"See them")
    message = seal(broken, rsa_key, records)  # cv=fail at i=2
    headers, offset = split_message(message)
    sealer = ArcSealer(SealRequest("hop.example", "arc", rsa_key, "mx.hop.example"))
    sealer.feed_body(message[offset:])
    assert sealer.seal(headers, verify(message, records), "") == []
    assert "cv=fail" in sealer.refusal


def test_no_set_past_instance_50(rsa_key: PrivateKey) -> None:
    headers, _ = split_message(MESSAGE)
    sealer = ArcSealer(SealRequest("hop.example", "arc", rsa_key, "mx"))
    chain = ArcResult(ChainState.PASS, instances=50, highest=50, last_cv=ChainState.PASS)
    assert sealer.seal(headers, chain, "") == []
    assert "50" in sealer.refusal


def test_aar_payload_cannot_inject_header_lines(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    message = seal(MESSAGE, rsa_key, records, results="spf=pass\r\nX-Evil: 1")
    assert b"\r\nX-Evil" not in message and verify(message, records).passed


def test_authserv_id_is_checked(rsa_key: PrivateKey) -> None:
    for bad in ("", "two words", "a;b", "line\r\nbreak"):
        with pytest.raises(SigningError):
            SealRequest("hop.example", "arc", rsa_key, bad)


def test_timestamp_is_written_to_both_signatures(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    message = seal(MESSAGE, rsa_key, records, timestamp=NOW - 5)
    sets = collect_sets(split_message(message)[0]).sets
    assert sets[0].seal.timestamp == NOW - 5 and sets[0].ams.sig.timestamp == NOW - 5


def test_one_body_hash_shared_with_dkim_signing(
    rsa_key: PrivateKey, records: dict[str, bytes]
) -> None:
    """The DKIM signature and the AMS of one message cost one body pass."""
    headers, offset = split_message(MESSAGE)
    bodies = BodyHashSet()
    signer = Signer(SigningRequest("origin.example", "s", rsa_key), bodies=bodies)
    sealer = ArcSealer(
        SealRequest("hop.example", "arc", rsa_key, "mx.hop.example", timestamp=NOW), bodies=bodies
    )
    assert len(bodies) == 1  # relaxed/sha256 for both
    signer.feed_body(MESSAGE[offset:])
    sealer.feed_body(MESSAGE[offset:])  # a no-op: the signer owns the shared set
    dkim = signer.sign(headers)
    signed_headers = [dkim, *headers]
    fields = sealer.seal(signed_headers, ArcResult(ChainState.NONE), "dkim=pass")
    message = b"".join(f.raw + b"\r\n" for f in [*fields, dkim]) + MESSAGE
    assert verify(message, records).passed
    dkim_bh = dict(
        p.strip().split("=", 1) for p in dkim.value.decode().replace("\r\n", "").split(";")
    )["bh"]
    ams = collect_sets(split_message(message)[0]).sets[0].ams
    assert base64.b64decode(dkim_bh) == ams.sig.body_hash
