"""ARC in the milter (dkimd.arc_filter through MilterSession): the arc= A-R, the sealed set,
and what dkimpy (an independent implementation) makes of the message as it leaves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dkim
import pytest
from test_session import (
    BODY,
    MESSAGE_HEADERS,
    OUTSIDE,
    Driver,
    FakeKeyTable,
    _signed_headers,
    inserted,
    make_config,
    run,
)

from dkimd import milter
from dkimd.arc import ArcSealer, ArcVerifier, ArcVerifyOptions, ChainState, SealRequest, arc_ar_item
from dkimd.arc_filter import copied_results, outgoing_headers
from dkimd.config import ConfigError, parse_config_text
from dkimd.dkim import HeaderField, load_private_key, split_message
from dkimd.dns.base import TxtResult, TxtStatus
from dkimd.dns.testdata import TestDnsFile

ARC_SV = "ArcMode sv\nArcKey mail._domainkey.example.com\n"
TRUSTED_AR = (b"Authentication-Results", b" mx.test; spf=pass smtp.mailfrom=example.com")
FORGED_AR = (b"Authentication-Results", b" evil.example; spf=pass smtp.mailfrom=evil.example")


@pytest.fixture
def keys(tmp_path: Path) -> FakeKeyTable:
    return FakeKeyTable(tmp_path)


def leaving(
    headers: Sequence[tuple[bytes, bytes]], body: bytes, actions: Sequence[milter.Action]
) -> bytes:
    """The message as Postfix delivers it: each inserted field on top, bare LF folding
    back to CRLF."""
    fields = [n + b":" + v for n, v in headers]
    for a in actions:
        if isinstance(a, milter.InsertHeader):
            assert a.index == 0
            fields.insert(0, a.name + b":" + a.value)
    text = b"\r\n".join(f.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for f in fields)
    return text + b"\r\n\r\n" + body


def chain_of(message: bytes, keys: FakeKeyTable) -> ChainState:
    headers, offset = split_message(message)
    v = ArcVerifier(headers, ArcVerifyOptions())
    for name in v.key_queries():
        record = keys.records.get(name)
        v.provide_key(
            name,
            TxtResult(name, TxtStatus.OK, (record.encode(),))
            if record
            else TxtResult(name, TxtStatus.NXDOMAIN),
        )
    v.feed_body(message[offset:])
    return v.result().state


def dkimpy_arc(message: bytes, keys: FakeKeyTable) -> bytes:
    cv, _results, reason = dkim.arc_verify(message, dnsfunc=keys.dnsfunc)
    return cv or reason.encode()


def test_verify_only_adds_an_arc_result(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys, "ArcMode v\n"), TestDnsFile.from_records(keys.records))
    actions = run(d.message(_signed_headers(keys, BODY), BODY, client=OUTSIDE))
    dkim_ar, arc_ar = inserted(actions, b"Authentication-Results")
    assert b"dkim=pass" in dkim_ar and b"arc=" not in dkim_ar  # OpenDKIM's field unchanged
    assert arc_ar == b" mx.test; arc=none smtp.remote-ip=198.51.100.7"
    assert inserted(actions, b"ARC-Seal") == []
    assert isinstance(actions[-1], milter.Accept)


def test_seal_after_verification(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys, ARC_SV), TestDnsFile.from_records(keys.records))
    headers = [TRUSTED_AR, FORGED_AR, *_signed_headers(keys, BODY)]
    actions = run(d.message(headers, BODY, client=OUTSIDE))
    names = [a.name for a in actions if isinstance(a, milter.InsertHeader)]
    assert names[-3:] == [b"ARC-Authentication-Results", b"ARC-Message-Signature", b"ARC-Seal"]
    [aar] = inserted(actions, b"ARC-Authentication-Results")
    aar = b" ".join(aar.split())
    assert aar.startswith(b"i=1; mx.test; dkim=pass (1024-bit key) header.d=example.com")
    assert b"spf=pass smtp.mailfrom=example.com; arc=none smtp.remote-ip=198.51.100.7" in aar
    assert b"evil.example" not in aar  # only our own authserv-id's results are copied
    message = leaving(headers, BODY, actions)
    assert message.startswith(b"ARC-Seal: i=1;")
    assert chain_of(message, keys) is ChainState.PASS
    assert dkimpy_arc(message, keys) == b"pass"


def test_seal_continues_a_passing_chain(tmp_path: Path, keys: FakeKeyTable) -> None:
    key = load_private_key(keys.rsa_path.read_bytes())
    first = _signed_headers(keys, BODY)
    fields = [HeaderField(n, v.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) for n, v in first]
    sealer = ArcSealer(SealRequest("example.com", "mail", key, "first.example"))
    sealer.feed_body(BODY)
    from dkimd.arc import ArcResult

    new = sealer.seal(
        fields, ArcResult(ChainState.NONE), "dkim=pass; " + arc_ar_item(ArcResult(ChainState.NONE))
    )
    headers = [(f.name, f.value) for f in new] + first
    d = Driver(make_config(tmp_path, keys, ARC_SV), TestDnsFile.from_records(keys.records))
    actions = run(d.message(headers, BODY, client=OUTSIDE))
    arc_ar = inserted(actions, b"Authentication-Results")[-1]
    assert arc_ar == b" mx.test; arc=pass header.oldest-pass=0 smtp.remote-ip=198.51.100.7"
    [seal] = inserted(actions, b"ARC-Seal")
    assert seal.startswith(b" i=2;") and b"cv=pass" in seal
    message = leaving(headers, BODY, actions)
    assert chain_of(message, keys) is ChainState.PASS
    assert dkimpy_arc(message, keys) == b"pass"


def test_internal_mail_is_signed_and_sealed(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys, ARC_SV), TestDnsFile.from_records(keys.records))
    actions = run(d.message(MESSAGE_HEADERS, BODY))
    [sig] = inserted(actions, b"DKIM-Signature")
    [ams] = inserted(actions, b"ARC-Message-Signature")
    assert b"DKIM-Signature" in ams  # the AMS covers our own new signature
    message = leaving(MESSAGE_HEADERS, BODY, actions)
    assert dkim.verify(message, dnsfunc=keys.dnsfunc)
    assert chain_of(message, keys) is ChainState.PASS
    assert dkimpy_arc(message, keys) == b"pass"
    assert sig


def test_seal_hosts_choose_what_is_sealed(tmp_path: Path, keys: FakeKeyTable) -> None:
    extra = "ArcMode s\nArcKey mail._domainkey.example.com\nArcSealHosts csl:192.0.2.0/24\n"
    d = Driver(make_config(tmp_path, keys, extra), TestDnsFile.from_records(keys.records))
    outside = run(d.message(_signed_headers(keys, BODY), BODY, client=OUTSIDE))
    assert inserted(outside, b"ARC-Seal") == []
    assert len(inserted(outside, b"Authentication-Results")) == 1  # seal-only: no arc= field
    d = Driver(make_config(tmp_path, keys, extra), TestDnsFile.from_records(keys.records))
    listed = run(d.message(_signed_headers(keys, BODY), BODY, client="192.0.2.9"))
    assert len(inserted(listed, b"ARC-Seal")) == 1


def test_seal_mail_to_chooses_by_recipient(tmp_path: Path, keys: FakeKeyTable) -> None:
    extra = "ArcMode s\nArcKey mail._domainkey.example.com\nArcSealMailTo csl:example.net\n"
    d = Driver(make_config(tmp_path, keys, extra), TestDnsFile.from_records(keys.records))
    actions = run(d.message(_signed_headers(keys, BODY), BODY, client=OUTSIDE))
    assert len(inserted(actions, b"ARC-Seal")) == 1  # RCPT bob@example.net


def test_rejected_mail_is_not_sealed(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(
        make_config(tmp_path, keys, ARC_SV + "On-BadSignature reject\n"),
        TestDnsFile.from_records(keys.records),
    )
    actions = run(d.message(_signed_headers(keys, BODY), BODY + b"tampered\r\n", client=OUTSIDE))
    assert isinstance(actions[-1], milter.ReplyCode) and actions[-1].code == 550
    assert inserted(actions, b"ARC-Seal") == []


def test_tampered_chain_is_reported_and_sealed_with_cv_fail(
    tmp_path: Path, keys: FakeKeyTable
) -> None:
    d = Driver(make_config(tmp_path, keys, ARC_SV), TestDnsFile.from_records(keys.records))
    first = run(d.message(_signed_headers(keys, BODY), BODY, client=OUTSIDE))
    sealed = leaving(_signed_headers(keys, BODY), BODY, first)
    headers, _ = split_message(sealed)
    again = [(h.name, h.value) for h in headers]
    d = Driver(make_config(tmp_path, keys, ARC_SV), TestDnsFile.from_records(keys.records))
    actions = run(d.message(again, b"changed\r\n", client=OUTSIDE))
    arc_ar = inserted(actions, b"Authentication-Results")[-1]
    assert arc_ar.startswith(b' mx.test; arc=fail reason="AMS i=1: body hash mismatch"')
    [seal] = inserted(actions, b"ARC-Seal")
    assert b"cv=fail" in seal


def test_verify_only_leaves_mail_it_signs_alone(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys, "ArcMode v\n"), TestDnsFile.from_records(keys.records))
    actions = run(d.message(MESSAGE_HEADERS, BODY))
    assert inserted(actions, b"DKIM-Signature")
    assert inserted(actions, b"Authentication-Results") == []


def test_arc_key_must_be_in_the_key_table(tmp_path: Path, keys: FakeKeyTable) -> None:
    text = make_config(tmp_path, keys, "ArcMode s\nArcKey nope._domainkey.example.com\n")
    with pytest.raises(ConfigError, match="no usable KeyTable entry"):
        parse_config_text(text)


def test_copied_results_trust_only_our_authserv_id() -> None:
    headers = [
        HeaderField(
            b"Authentication-Results",
            b" MX.Test; spf=pass smtp.mailfrom=a.example (comment; with semicolon);\r\n"
            b'\tdkim=pass header.d=x; dmarc=fail reason="p=reject; test" header.from=a.example',
        ),
        HeaderField(b"Authentication-Results", b" other.example; spf=pass; dmarc=pass"),
        HeaderField(b"X-Not-AR", b" mx.test; spf=pass"),
    ]
    assert copied_results(headers, "mx.test") == [
        "spf=pass smtp.mailfrom=a.example (comment; with semicolon)",
        'dmarc=fail reason="p=reject; test" header.from=a.example',
    ]


def test_outgoing_headers_apply_deletions_and_insertions() -> None:
    headers = [
        HeaderField(b"Authentication-Results", b" a"),
        HeaderField(b"From", b" x@example.com"),
        HeaderField(b"Authentication-Results", b" b"),
    ]
    actions = [
        milter.ChangeHeader(2, b"Authentication-Results", b""),
        milter.InsertHeader(0, b"DKIM-Signature", b" v=1;\n\tb=x"),
        milter.InsertHeader(0, b"Authentication-Results", b" ours"),
        milter.Accept(),
    ]
    out = outgoing_headers(headers, actions)
    assert [(h.name, h.value) for h in out] == [
        (b"Authentication-Results", b" ours"),
        (b"DKIM-Signature", b" v=1;\r\n\tb=x"),
        (b"Authentication-Results", b" a"),
        (b"From", b" x@example.com"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ArcMode x\n", "unknown mode"),
        ("ArcMode s\n", "no key to seal with"),
        ("ArcMode v\nArcSignHeaders csl:from,arc-seal\n", "must not sign ARC-Seal"),
        ("ArcMode v\nArcMaximumSets 51\n", "out of range"),
    ],
)
def test_bad_arc_options_refuse_to_start(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config_text(text)


def test_arc_options_read(tmp_path: Path, keys: FakeKeyTable) -> None:
    config = parse_config_text(
        make_config(tmp_path, keys, ARC_SV + "ArcMaximumSets 7\nArcSignHeaders csl:From,Subject\n")
    )
    assert config.arc is not None and config.arc.seals and config.arc.verifies
    assert config.arc.maximum_sets == 7 and config.arc.sign_headers == ("from", "subject")


def test_without_arc_key_the_signing_tables_key_seals(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys, "ArcMode s\n"), TestDnsFile.from_records(keys.records))
    actions = run(d.message(MESSAGE_HEADERS, BODY))
    [seal] = inserted(actions, b"ARC-Seal")
    assert b"d=example.com" in seal and b"s=mail" in seal
    assert dkimpy_arc(leaving(MESSAGE_HEADERS, BODY, actions), keys) == b"pass"
    # Mail it only verifies has no SigningTable key and no single key: not sealed, logged.
    d = Driver(make_config(tmp_path, keys, "ArcMode s\n"), TestDnsFile.from_records(keys.records))
    outside = run(d.message(_signed_headers(keys, BODY), BODY, client=OUTSIDE))
    assert inserted(outside, b"ARC-Seal") == []


def test_check_summary_says_what_arc_does(tmp_path: Path, keys: FakeKeyTable) -> None:
    from dkimd.config.arc import arc_summary

    extra = ARC_SV + "ArcSealHosts csl:192.0.2.0/24\nArcMaximumSets 5\n"
    config = parse_config_text(make_config(tmp_path, keys, extra))
    assert config.arc is not None
    assert arc_summary(config.arc) == (
        "ARC chains of verified mail are checked (arc= in Authentication-Results); mail from "
        "ArcSealHosts (csl:192.0.2.0/24) is ARC-sealed with KeyTable entry "
        "mail._domainkey.example.com; chains of more than 5 sets fail."
    )


def test_chain_without_dkim_signature_keeps_the_body(tmp_path: Path, keys: FakeKeyTable) -> None:
    """No DKIM signature: the DKIM verifier wants no body, the chain does (no SKIP)."""
    key = load_private_key(keys.rsa_path.read_bytes())
    fields = [HeaderField(n, v.replace(b"\n", b"\r\n")) for n, v in MESSAGE_HEADERS]
    sealer = ArcSealer(SealRequest("example.com", "mail", key, "first.example"))
    sealer.feed_body(BODY)
    from dkimd.arc import ArcResult

    new = sealer.seal(fields, ArcResult(ChainState.NONE), "arc=none")
    headers = [(f.name, f.value) for f in new] + MESSAGE_HEADERS
    protocol = (
        milter.ProtocolFlag.HDR_LEADSPC | milter.ProtocolFlag.NR_HDR | milter.ProtocolFlag.SKIP
    )
    text = make_config(tmp_path, keys, "ArcMode v\n")
    d = Driver(text, TestDnsFile.from_records(keys.records), protocol=protocol)
    actions = run(d.message(headers, BODY, client=OUTSIDE))
    assert not any(isinstance(a, milter.Skip) for a in actions)
    arc_ar = inserted(actions, b"Authentication-Results")[-1]
    assert arc_ar == b" mx.test; arc=pass header.oldest-pass=0 smtp.remote-ip=198.51.100.7"
