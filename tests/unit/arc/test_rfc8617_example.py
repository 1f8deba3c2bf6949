"""RFC 8617 Appendix B ("Example Usage"): a message that went through a mailing list
(lists.example.org, i=1), gmail.example (i=2) and clochette.example.org (i=3).

What can be checked here is checked; the signatures cannot be. The example's keys are
512-bit RSA keys that were never published with the RFC. The drafts' source repository
(kurta/arc-docs, appendix-keys-b512) publishes 512-bit keys under the same names, but they
did not make these signatures: the RSA public operation on each b= under them gives no
PKCS#1 v1.5 padding (`test_the_published_keys_did_not_make_the_signatures`). And RFC 8301
forbids a verifier to accept keys under 1024 bits, so a receiver applying it fails the chain
on the newest AMS whatever the keys. No test below claims a cryptographic pass.

Checked instead: the parse of every field, the set structure and cv= transitions of 4.2,
4.4 and 5.2 steps 1-3, the AAR contents (4.1.1), the body hashes (the AMS bh= and the
DKIM-Signature's rsa-sha1 bh= are reproducible from the body: they are), how the 5.2 rules
judge the example once it is broken in each of the ways they name, and a seal added on top
by dkimd as 5.1 and 5.1.2 say. Source of the text: tests/data/arc/README.md.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from dataclasses import replace

import pytest
from arc_helpers import DATA, record, verify
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from dkimd.arc import (
    ArcError,
    ArcResult,
    ArcSealer,
    ArcVerifier,
    ArcVerifyOptions,
    ChainState,
    SealRequest,
    collect_sets,
    parse_seal,
    seal_hash_input,
)
from dkimd.dkim import BodyHashSet, HeaderField, PrivateKey, parse_signature, split_message
from dkimd.dkim.algorithms import get_algorithm
from dkimd.dkim.keys import parse_key_record
from dkimd.dns.testdata import TestDnsFile

NOW = 20_000  # the example is sealed with t=12345


def message() -> bytes:
    text = (DATA / "rfc8617_appendix_b.eml").read_bytes()
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def headers() -> list[HeaderField]:
    return split_message(message())[0]


def body() -> bytes:
    m = message()
    return m[split_message(m)[1] :]


def published_keys() -> dict[str, bytes]:
    dns = TestDnsFile(DATA / "rfc8617_appendix_b_dns.txt")
    return {n: asyncio.run(dns.lookup_txt(n)).records[0] for n in dns.names}


def test_three_sets_parse_and_form_a_chain() -> None:
    collected = collect_sets(headers())
    assert collected.error == ""
    assert collected.highest == 3 and collected.field_count == 9
    seen = [
        (s.instance, s.seal.cv, s.seal.domain, s.seal.selector, s.seal.timestamp)
        for s in collected.sets
    ]
    assert seen == [
        (1, ChainState.NONE, "lists.example.org", "dk-lists", 12345),
        (2, ChainState.PASS, "gmail.example", "20120806", 12345),
        (3, ChainState.PASS, "clochette.example.org", "clochette", 12345),
    ]
    for s in collected.sets:
        sig = s.ams.sig
        assert (sig.algorithm, sig.header_canon, sig.body_canon) == (
            "rsa-sha256",
            "relaxed",
            "relaxed",
        )
        assert list(sig.signed_headers) == ["message-id", "date", "from", "to", "subject"]
        assert sig.timestamp == 12345
        # Each hop sealed with the key it signed with (4.1.2, 4.1.3: d= and s= as DKIM's).
        assert sig.key_name == s.seal.key_name
        assert s.seal.algorithm == "rsa-sha256" and len(s.seal.signature) == 64  # 512 bits


def test_aar_contents() -> None:
    """4.1.1: an AAR is the ADMD's Authentication-Results with an instance tag; the first
    hop found no chain (no arc= result), the later ones record arc=pass."""
    sets = collect_sets(headers()).sets
    assert [s.aar.authserv_id for s in sets] == [
        "lists.example.org",
        "gmail.example",
        "clochette.example.org",
    ]
    first, second, third = (s.aar.payload for s in sets)
    assert "spf=pass smtp.mfrom=jqd@d1.example" in first and "dmarc=pass" in first
    assert re.search(r"(^|[ ;])arc=", first) is None
    assert "arc=pass (as.1.lists.example.org=pass, ams.1.lists.example.org=pass)" in second
    assert "dkim=fail (512-bit key)" in second and "arc=pass" in third
    # clochette's AAR is a copy of its own Authentication-Results field.
    [ar] = [h for h in headers() if h.key == b"authentication-results"]
    assert " ".join(ar.value.decode().split()) == third


def test_body_hashes_are_reproduced() -> None:
    """The one cryptographic value verifiable without keys: every AMS bh= (relaxed,
    sha256) and the original DKIM-Signature's bh= (relaxed, rsa-sha1) match the body."""
    bodies = BodyHashSet()
    bodies.add(("relaxed", "sha256", None))
    bodies.add(("relaxed", "sha1", None))
    bodies.update(body())
    bodies.finish()
    sha256 = bodies[("relaxed", "sha256", None)].digest()
    assert base64.b64encode(sha256) == b"KWSe46TZKCcDbH4klJPo+tjk5LWJnVRlP5pvjXFZYLQ="
    for s in collect_sets(headers()).sets:
        assert s.ams.sig.body_hash == sha256
    [dkim] = [h for h in headers() if h.key == b"dkim-signature"]
    sig = parse_signature(dkim.value)
    assert sig.algorithm == "rsa-sha1"
    assert sig.body_hash == bodies[("relaxed", "sha1", None)].digest()


def test_cv_transitions_pass_the_structure_rules() -> None:
    """5.2 steps 1-3: no key or body is needed to see that the sets form a chain with
    cv=none at i=1 and cv=pass after: the validator goes on to ask for the keys."""
    verifier = ArcVerifier(headers(), ArcVerifyOptions(now=NOW))
    assert verifier.needs_body()
    assert verifier.key_queries() == [
        "clochette._domainkey.clochette.example.org",
        "20120806._domainkey.gmail.example",
        "dk-lists._domainkey.lists.example.org",
    ]


def test_rfc8301_refuses_the_examples_512_bit_keys() -> None:
    result = verify(message(), published_keys(), ArcVerifyOptions(now=NOW))
    assert result.state is ChainState.FAIL and result.error is ArcError.AMS_FAIL
    assert result.reason == "AMS i=3: key shorter than 1024 bits"
    assert result.instances == 3 and result.highest == 3


def test_the_published_keys_did_not_make_the_signatures() -> None:
    """Why no test verifies the example's b= values: under the keys kurta/arc-docs
    publishes for these selectors, s^e mod n is not an EMSA-PKCS1-v1_5 block (which starts
    00 01 FF ... FF 00) for any of the six signatures; those keys did not sign them."""
    keys = published_keys()
    collected = collect_sets(headers())
    checked = 0
    for s in collected.sets:
        for name, signature in (
            (s.seal.key_name, s.seal.signature),
            (s.ams.sig.key_name, s.ams.sig.signature),
        ):
            p = keys[name].split(b"p=")[1]
            public = load_der_public_key(base64.b64decode(p))
            assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 512
            numbers = public.public_numbers()
            block = pow(int.from_bytes(signature, "big"), numbers.e, numbers.n).to_bytes(64, "big")
            assert not block.startswith(b"\x00\x01\xff")
            checked += 1
    assert checked == 6


@pytest.mark.parametrize(
    ("edit", "error", "reason"),
    [
        # 5.2 step 3.3: i=1 must say cv=none.
        (
            lambda t: t.replace(b"cv=none; d=lists", b"cv=pass; d=lists"),
            ArcError.CV_INVALID,
            "AS i=1 has cv=pass, not none",
        ),
        # 5.2 step 2: the newest seal recording a failure ends it.
        (
            lambda t: t.replace(b"i=3; a=rsa-sha256; cv=pass", b"i=3; a=rsa-sha256; cv=fail"),
            ArcError.CV_FAIL,
            "AS i=3 has cv=fail",
        ),
        # 5.2 step 3.1: exactly one of each field per set.
        (
            lambda t: t.replace(b"ARC-Seal: i=2;", b"X-Removed-Seal: i=2;"),
            ArcError.STRUCTURE,
            "ARC set i=2 lacks AS",
        ),
        (
            lambda t: t.replace(
                b"ARC-Authentication-Results: i=2; gmail", b"ARC-Authentication-Results: i=1; gmail"
            ),
            ArcError.STRUCTURE,
            "duplicate ARC-Authentication-Results i=1",
        ),
        # 5.2 step 3.2: 1..N without gaps.
        (
            lambda t: (
                t.replace(b"ARC-Seal: i=3", b"ARC-Seal: i=4")
                .replace(b"ARC-Message-Signature: i=3", b"ARC-Message-Signature: i=4")
                .replace(b"ARC-Authentication-Results: i=3", b"ARC-Authentication-Results: i=4")
            ),
            ArcError.STRUCTURE,
            "gap in the chain: no ARC set i=3",
        ),
        # 4.1.3: h= in an ARC-Seal makes it invalid.
        (
            lambda t: t.replace(b"cv=pass; d=gmail.example;", b"cv=pass; h=from; d=gmail.example;"),
            ArcError.STRUCTURE,
            "AS i=2: h= is not allowed in an ARC-Seal",
        ),
        # 4.1.2: the AMS must not sign ARC-Seal.
        (
            lambda t: t.replace(
                b"d=\n        gmail.example; h=message-id:",
                b"d=\n        gmail.example; h=arc-seal:message-id:",
            ),
            ArcError.STRUCTURE,
            "AMS i=2: h= contains ARC-Seal",
        ),
    ],
)
def test_the_rules_of_5_2_on_the_example(
    edit: Callable[[bytes], bytes], error: ArcError, reason: str
) -> None:
    text = (DATA / "rfc8617_appendix_b.eml").read_bytes().replace(b"\r\n", b"\n")
    edited = edit(text)
    assert edited != text
    result = verify(edited.replace(b"\n", b"\r\n"), {}, ArcVerifyOptions(now=NOW))
    assert (result.state, result.error, result.reason) == (ChainState.FAIL, error, reason)


def test_a_seal_on_top_of_the_example(rsa_key: PrivateKey) -> None:
    """5.1: a sealer that cannot validate the chain (here: no usable keys) adds i=N+1 with
    cv=fail, and 5.1.2: its seal covers its own set only, as if it were the only one."""
    chain = verify(message(), {}, ArcVerifyOptions(now=NOW))
    assert chain.state is ChainState.FAIL and chain.highest == 3
    sealer = ArcSealer(SealRequest("hop.example", "arc", rsa_key, "mx.hop.example", timestamp=NOW))
    sealer.feed_body(body())
    seal, ams, aar = sealer.seal(headers(), chain, "arc=fail")
    assert (seal.name, ams.name, aar.name) == (
        b"ARC-Seal",
        b"ARC-Message-Signature",
        b"ARC-Authentication-Results",
    )
    parsed = parse_seal(seal)
    assert parsed.instance == 4 and parsed.cv is ChainState.FAIL
    assert aar.value.startswith(b" i=4; mx.hop.example; arc=fail")
    algo = get_algorithm("rsa-sha256")
    assert algo is not None
    public = parse_key_record(record(rsa_key)).public_key
    assert public is not None
    own_only = seal_hash_input((), aar, ams, seal)
    everything = seal_hash_input(collect_sets(headers()).sets, aar, ams, seal)
    assert algo.verify(public, parsed.signature, own_only)
    assert not algo.verify(public, parsed.signature, everything)
    # And no one seals after a cv=fail (5.1 step 2).
    after = [seal, ams, aar, *headers()]
    again = ArcSealer(SealRequest("next.example", "arc", rsa_key, "mx.next.example"))
    again.feed_body(body())
    failed = replace(ArcResult(ChainState.FAIL), highest=4, last_cv=ChainState.FAIL)
    assert again.seal(after, failed, "arc=fail") == []
    assert again.refusal == "the newest ARC-Seal already has cv=fail"
