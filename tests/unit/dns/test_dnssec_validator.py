"""ChainValidator on answers that cannot be trusted, without any server: each gives a
status or ChainUnavailable, never another exception (the signed cases are in
tests/interop/test_dnssec.py, against nsd and unbound)."""

from __future__ import annotations

import asyncio

import dns.message
import dns.name
import dns.rdatatype
import pytest

from dkimd.dns.base import DnssecStatus
from dkimd.dns.dnssec import ChainUnavailable, ChainValidator
from dkimd.dns.trust_anchors import parse_trust_anchors

ANCHORS = parse_trust_anchors("example. IN DS 4242 13 2 " + "00" * 32 + "\n")
QNAME = dns.name.from_text("sel._domainkey.example.")
RRSIG = "RRSIG TXT 13 3 300 20300101000000 20200101000000 4242 {signer} AAAA"


def response(*answer: str) -> dns.message.Message:
    text = "id 1\nopcode QUERY\nrcode NOERROR\nflags QR RD RA\n;QUESTION\n"
    text += "sel._domainkey.example. IN TXT\n;ANSWER\n" + "\n".join(answer) + "\n"
    return dns.message.from_text(text)


async def unreachable(name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
    raise ChainUnavailable(f"{name} {rdtype}: no answer")


def status(answer: dns.message.Message, qname: dns.name.Name = QNAME) -> tuple[DnssecStatus, str]:
    validator = ChainValidator(ANCHORS, unreachable)
    return asyncio.run(validator.answer_status(qname, answer))


def test_a_name_no_anchor_covers_is_insecure() -> None:
    other = dns.name.from_text("sel._domainkey.example.org.")
    assert status(response(), other)[0] is DnssecStatus.INSECURE


def test_an_empty_answer_is_bogus() -> None:
    assert status(response())[0] is DnssecStatus.BOGUS


@pytest.mark.parametrize(
    ("rrsigs", "why"),
    [
        ([RRSIG.format(signer="example.org.")], "outside its chain"),
        ([RRSIG.format(signer="example."), RRSIG.format(signer="sub.example.")], "2 signers"),
    ],
)
def test_signatures_from_outside_the_chain_are_bogus(rrsigs: list[str], why: str) -> None:
    lines = ['sel._domainkey.example. 300 IN TXT "v=DKIM1; p=abc"']
    lines += [f"sel._domainkey.example. 300 IN {r}" for r in rrsigs]
    verdict, reason = status(response(*lines))
    assert verdict is DnssecStatus.BOGUS and why in reason


def test_a_chain_that_cannot_be_fetched_raises_chain_unavailable() -> None:
    lines = [
        'sel._domainkey.example. 300 IN TXT "v=DKIM1; p=abc"',
        f"sel._domainkey.example. 300 IN {RRSIG.format(signer='example.')}",
    ]
    with pytest.raises(ChainUnavailable):
        status(response(*lines))
    with pytest.raises(ChainUnavailable):  # unsigned: the walk down needs the anchor's keys
        status(response('sel._domainkey.example. 300 IN TXT "v=DKIM1; p=abc"'))
