"""ATPS (RFC 6541): the signer's tags, the query label, and the verifier's result."""

from __future__ import annotations

import base64
import hashlib

import pytest

from dkimd.dkim.atps import (
    AtpsResult,
    AtpsSignature,
    atps_answer,
    atps_label,
    atps_queries,
    atps_query_name,
    atps_result,
    atps_tags,
)
from dkimd.dns.base import TxtResult, TxtStatus


def test_tags_in_opendkim_s_order() -> None:
    assert atps_tags("Example.NET") == (("atpsh", "sha256"), ("atps", "example.net"))
    assert atps_tags("example.net", "none") == (("atpsh", "none"), ("atps", "example.net"))
    with pytest.raises(ValueError, match="unknown ATPS hash"):
        atps_tags("example.net", "md5")


def test_label_is_upper_case_base32_with_padding() -> None:
    # The name OpenDKIM's own tests publish (tests/pubkeys) for d=example.com.
    assert atps_label("example.com") == "UN42N5XOV642KXRXRQIYANHCOUPGQL5LT4WTBKYT2IJFLBWODFDQ===="
    # Hashed as written, as libopendkim does (observed against OpenDKIM 2.11).
    assert atps_label("Example.COM") != atps_label("example.com")
    assert len(atps_label("example.com", "sha1")) == 32
    assert atps_label("example.com", "none") == "example.com"


# -- verifying (opendkim.c mlfi_eom, libopendkim dkim_atps_check) --------------------------

# The record name OpenDKIM's suite publishes (tests/pubkeys) for d=example.com, From example.net.
SHA256_NAME = "UN42N5XOV642KXRXRQIYANHCOUPGQL5LT4WTBKYT2IJFLBWODFDQ====._atps.example.net"
THIRD_PARTY = {"atpsh": "sha256", "atps": "example.net"}


def ok(name: str, *records: bytes) -> TxtResult:
    return TxtResult(name, TxtStatus.OK, records)


def third_party(passed: bool = True, **tags: str) -> AtpsSignature:
    return AtpsSignature("example.com", {**THIRD_PARTY, **tags}, passed)


def test_query_name_for_each_hash() -> None:
    assert atps_query_name("example.com", THIRD_PARTY, "example.net") == SHA256_NAME
    sha1 = atps_query_name("example.com", {"atpsh": "SHA1", "atps": "Example.NET"}, "example.net")
    label = base64.b32encode(hashlib.sha1(b"example.com").digest()).decode()
    assert sha1 == f"{label}._atps.example.net"
    assert len(label) == 32 and "=" not in label  # 160 bits: no padding needed
    assert (
        atps_query_name("example.com", {"atpsh": "none", "atps": "example.net"}, "example.net")
        == "example.com._atps.example.net"
    )


@pytest.mark.parametrize(
    "tags",
    [
        {"atps": "example.net"},  # no atpsh=
        {"atpsh": "sha256"},  # no atps=
        {"atpsh": "md5", "atps": "example.net"},  # a hash libopendkim does not know
        {"atpsh": "sha256", "atps": "example.org"},  # not the author domain
    ],
)
def test_query_name_refused(tags: dict[str, str]) -> None:
    assert atps_query_name("example.com", tags, "example.net") is None


def test_answers() -> None:
    assert atps_answer(ok(SHA256_NAME, b"v=ATPS1")) is AtpsResult.PASS
    # libopendkim compares the whole payload with strcmp: anything else is not found.
    assert atps_answer(ok(SHA256_NAME, b"foo=bar")) is AtpsResult.FAIL
    assert atps_answer(ok(SHA256_NAME, b"v=ATPS1; d=example.com")) is AtpsResult.FAIL
    assert atps_answer(ok(SHA256_NAME, b"v=ATPS1\0trailing")) is AtpsResult.PASS
    assert atps_answer(ok(SHA256_NAME)) is AtpsResult.FAIL  # no answer records
    assert atps_answer(ok(SHA256_NAME, b"v=ATPS1", b"v=ATPS1")) is None  # several: an error
    nx = TxtResult(SHA256_NAME, TxtStatus.NXDOMAIN)
    assert atps_answer(nx) is AtpsResult.FAIL
    assert atps_answer(nx, missing_is_error=True) is None  # TestDNSData's missing name
    assert atps_answer(TxtResult(SHA256_NAME, TxtStatus.SERVFAIL)) is None
    assert atps_answer(TxtResult(SHA256_NAME, TxtStatus.TIMEOUT)) is None


def test_result_pass_fail_neutral_as_observed() -> None:
    sigs = [third_party()]
    assert atps_result(sigs, "example.net", {SHA256_NAME: ok(SHA256_NAME, b"v=ATPS1")}) is (
        AtpsResult.PASS
    )
    assert atps_result(sigs, "example.net", {SHA256_NAME: ok(SHA256_NAME, b"foo=bar")}) is (
        AtpsResult.FAIL
    )
    missing = {SHA256_NAME: TxtResult(SHA256_NAME, TxtStatus.NXDOMAIN)}
    assert atps_result(sigs, "example.net", missing) is AtpsResult.FAIL
    assert atps_result(sigs, "example.net", missing, missing_is_error=True) is AtpsResult.NEUTRAL
    assert atps_result(sigs, "example.net", {}) is AtpsResult.NEUTRAL  # never fetched
    # A third-party signature without atps= asks for nothing.
    plain = [AtpsSignature("example.com", {}, True)]
    assert atps_queries(plain, "example.net") == []
    assert atps_result(plain, "example.net", {}) is AtpsResult.NEUTRAL


def test_result_needs_a_passing_third_party_signature_and_no_author_signature() -> None:
    found = {SHA256_NAME: ok(SHA256_NAME, b"v=ATPS1")}
    assert atps_result([third_party(passed=False)], "example.net", found) is AtpsResult.NEUTRAL
    author = AtpsSignature("Example.NET", {}, True)
    assert atps_result([third_party(), author], "example.net", found) is AtpsResult.NEUTRAL
    failed_author = AtpsSignature("example.net", {}, False)
    assert atps_result([failed_author, third_party()], "example.net", found) is AtpsResult.PASS
    assert atps_result([third_party()], None, found) is AtpsResult.NEUTRAL


def test_walk_stops_where_libopendkim_stops() -> None:
    other = AtpsSignature("example.org", {"atpsh": "none", "atps": "example.net"}, True)
    other_name = "example.org._atps.example.net"
    answers = {
        SHA256_NAME: ok(SHA256_NAME, b"nope"),
        other_name: ok(other_name, b"v=ATPS1"),
    }
    # In header order until one is authorised.
    assert atps_result([third_party(), other], "example.net", answers) is AtpsResult.PASS
    # A signature dkim_atps_check refuses ends the walk, keeping the result so far.
    refused = AtpsSignature("example.biz", {"atps": "example.net"}, True)
    assert atps_result([third_party(), refused, other], "example.net", answers) is (AtpsResult.FAIL)
    assert atps_result([refused, other], "example.net", answers) is AtpsResult.NEUTRAL
    # A lookup error ends it neutral.
    broken = {**answers, SHA256_NAME: TxtResult(SHA256_NAME, TxtStatus.SERVFAIL)}
    assert atps_result([third_party(), other], "example.net", broken) is AtpsResult.NEUTRAL


def test_queries_are_named_before_results_are_known() -> None:
    other = AtpsSignature("example.org", {"atpsh": "none", "atps": "example.net"}, False)
    author = AtpsSignature("example.net", {"atpsh": "sha256", "atps": "example.net"}, False)
    sigs = [third_party(passed=False), other, third_party(passed=False), author]
    assert atps_queries(sigs, "example.net") == [SHA256_NAME, "example.org._atps.example.net"]
    assert atps_queries(sigs, None) == []
