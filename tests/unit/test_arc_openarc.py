"""OpenARC's option names in dkimd (openarc.conf(5); dkimd.config.arc, dkimd.arc_filter),
through MilterSession: SealHeaderChecks, PermitAuthenticationOverrides, FinalReceiver,
AuthResIP, and which trusted Authentication-Results the ARC-Authentication-Results copies.
What leaves is checked by dkimpy's arc_verify, an independent implementation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from test_arc_session import chain_of, dkimpy_arc, leaving
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
from dkimd.arc import ArcResult, ArcSealer, ChainState, SealRequest, arc_ar_item
from dkimd.config import ConfigError, parse_config_text
from dkimd.dkim import HeaderField, load_private_key
from dkimd.dns.testdata import TestDnsFile

ARC_SV = "ArcMode sv\nArcKey mail._domainkey.example.com\n"
Headers = list[tuple[bytes, bytes]]


@pytest.fixture
def keys(tmp_path: Path) -> FakeKeyTable:
    k = FakeKeyTable(tmp_path)
    # The same key published for the first hop's domain: a chain with two sealing domains.
    k.records["mail._domainkey.first.example"] = k.records["mail._domainkey.example.com"]
    return k


def _fields(headers: Sequence[tuple[bytes, bytes]]) -> list[HeaderField]:
    return [HeaderField(n, v.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) for n, v in headers]


def first_hop(keys: FakeKeyTable, body: bytes = BODY) -> Headers:
    """The author's signed message with an ARC set i=1 by first.example on top."""
    key = load_private_key(keys.rsa_path.read_bytes())
    signed = _signed_headers(keys, body)
    sealer = ArcSealer(SealRequest("first.example", "mail", key, "mx.first.example"))
    sealer.feed_body(body)
    none = ArcResult(ChainState.NONE)
    new = sealer.seal(_fields(signed), none, "dkim=pass; " + arc_ar_item(none))
    return [(f.name, f.value) for f in new] + signed


def driver(tmp_path: Path, keys: FakeKeyTable, extra: str) -> Driver:
    return Driver(make_config(tmp_path, keys, extra), TestDnsFile.from_records(keys.records))


def arc_result(actions: Sequence[milter.Action]) -> bytes:
    return inserted(actions, b"Authentication-Results")[-1]


def aar(actions: Sequence[milter.Action]) -> bytes:
    [value] = inserted(actions, b"ARC-Authentication-Results")
    return b" ".join(value.split())


# -- SealHeaderChecks -----------------------------------------------------------------------


def checks_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "seal-checks"
    path.write_text(text)
    return path


def test_seal_header_checks_choose_the_messages_with_arc_work(
    tmp_path: Path, keys: FakeKeyTable
) -> None:
    path = checks_file(tmp_path, "# lists we relay\nList-Id:<dev\\.lists\\.example>\n")
    extra = ARC_SV + f"SealHeaderChecks {path}\n"
    plain = run(driver(tmp_path, keys, extra).message(first_hop(keys), BODY, client=OUTSIDE))
    # No ARC work at all (OpenARC: "only processed by the filter if ..."); DKIM as ever.
    [dkim_ar] = inserted(plain, b"Authentication-Results")
    assert b"dkim=pass" in dkim_ar and b"arc=" not in dkim_ar
    assert inserted(plain, b"ARC-Seal") == []
    listed = [(b"List-Id", b" Developers <dev.lists.example>"), *first_hop(keys)]
    actions = run(driver(tmp_path, keys, extra).message(listed, BODY, client=OUTSIDE))
    assert arc_result(actions).startswith(b" mx.test; arc=pass")
    [seal] = inserted(actions, b"ARC-Seal")
    assert seal.startswith(b" i=2;") and b"cv=pass" in seal
    assert dkimpy_arc(leaving(listed, BODY, actions), keys) == b"pass"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read"),
        ("List-Id lists\n", "line 1: not of the form name:regexp"),
        ("# only a comment\n", "has no checks"),
        ("List-Id:\\(x\n", "line 1: unmatched"),
        ("List-Id:a**\n", "line 1: a repetition of a repetition"),
    ],
)
def test_bad_seal_header_checks_refuse_to_start(
    tmp_path: Path, text: str | None, message: str
) -> None:
    path = tmp_path / "seal-checks"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        parse_config_text(f"ArcMode v\nSealHeaderChecks {path}\n")


# -- PermitAuthenticationOverrides ------------------------------------------------------------


def list_post(keys: FakeKeyTable, ours: Sequence[bytes]) -> tuple[Headers, bytes]:
    """A message that passed the ARC check of our inbound MTA (its A-R fields `ours`, under
    our authserv-id) and then had a footer added by the list software: the AMS of i=1 no
    longer verifies."""
    headers = [(b"Authentication-Results", v) for v in ours] + first_hop(keys)
    return headers, BODY + b"-- \r\nlist footer\r\n"


def test_override_lets_our_inbound_verdict_stand(tmp_path: Path, keys: FakeKeyTable) -> None:
    headers, body = list_post(keys, [b" mx.test; arc=pass smtp.remote-ip=192.0.2.1"])
    extra = ARC_SV + "PermitAuthenticationOverrides yes\n"
    actions = run(driver(tmp_path, keys, extra).message(headers, body, client=OUTSIDE))
    # No oldest-pass: which AMS verifies is not known from an A-R field (as OpenARC).
    assert arc_result(actions) == b" mx.test; arc=pass smtp.remote-ip=198.51.100.7"
    [seal] = inserted(actions, b"ARC-Seal")
    assert b"cv=pass" in seal
    assert aar(actions).endswith(b"arc=pass smtp.remote-ip=198.51.100.7")
    # Downstream, the chain passes: our AMS signs the message as the list changed it.
    message = leaving(headers, body, actions)
    assert chain_of(message, keys) is ChainState.PASS
    assert dkimpy_arc(message, keys) == b"pass"


def test_without_the_option_the_computed_state_stands(tmp_path: Path, keys: FakeKeyTable) -> None:
    headers, body = list_post(keys, [b" mx.test; arc=pass"])
    actions = run(driver(tmp_path, keys, ARC_SV).message(headers, body, client=OUTSIDE))
    assert arc_result(actions).startswith(b' mx.test; arc=fail reason="AMS i=1: body hash')
    [seal] = inserted(actions, b"ARC-Seal")
    assert b"cv=fail" in seal


def test_override_can_fail_a_passing_chain(tmp_path: Path, keys: FakeKeyTable) -> None:
    headers = [(b"Authentication-Results", b" mx.test; arc=fail"), *first_hop(keys)]
    extra = ARC_SV + "PermitAuthenticationOverrides yes\n"
    actions = run(driver(tmp_path, keys, extra).message(headers, BODY, client=OUTSIDE))
    assert arc_result(actions).startswith(b" mx.test; arc=fail")
    [seal] = inserted(actions, b"ARC-Seal")
    assert b"cv=fail" in seal
    message = leaving(headers, BODY, actions)
    assert chain_of(message, keys) is ChainState.FAIL
    assert dkimpy_arc(message, keys).startswith(b"ARC-Seal[2] reported failure")


def test_only_the_topmost_of_our_results_counts(tmp_path: Path, keys: FakeKeyTable) -> None:
    ours = [b" mx.test; arc=fail", b" mx.test; arc=pass"]
    headers, body = list_post(keys, ours)
    extra = ARC_SV + "PermitAuthenticationOverrides yes\n"
    actions = run(driver(tmp_path, keys, extra).message(headers, body, client=OUTSIDE))
    assert b"cv=fail" in inserted(actions, b"ARC-Seal")[0]


def test_other_authserv_ids_do_not_override(tmp_path: Path, keys: FakeKeyTable) -> None:
    headers = [(b"Authentication-Results", b" evil.example; arc=pass"), *first_hop(keys)]
    body = BODY + b"changed\r\n"
    extra = ARC_SV + "PermitAuthenticationOverrides yes\n"
    actions = run(driver(tmp_path, keys, extra).message(headers, body, client=OUTSIDE))
    assert b"cv=fail" in inserted(actions, b"ARC-Seal")[0]


def test_a_forged_result_we_delete_does_not_override(tmp_path: Path, keys: FakeKeyTable) -> None:
    """Our authserv-id with a dkim= result on incoming mail is a forgery dkimd deletes
    (KeepAuthResults no, as OpenDKIM); its arc= claim goes with it."""
    headers, body = list_post(keys, [b" mx.test; dkim=pass header.d=example.com; arc=pass"])
    extra = ARC_SV + "PermitAuthenticationOverrides yes\n"
    actions = run(driver(tmp_path, keys, extra).message(headers, body, client=OUTSIDE))
    deleted = [a for a in actions if isinstance(a, milter.ChangeHeader) and not a.value]
    assert [(a.name, a.index) for a in deleted] == [(b"Authentication-Results", 1)]
    assert b"cv=fail" in inserted(actions, b"ARC-Seal")[0]


def test_a_dead_chain_cannot_be_revived(tmp_path: Path, keys: FakeKeyTable) -> None:
    """RFC 8617 5.1.3: once broken, a chain cannot be continued; an A-R field saying pass
    does not change that (OpenARC: "the chain is dead because it came in as failed")."""
    key = load_private_key(keys.rsa_path.read_bytes())
    fields = _fields(first_hop(keys))
    sealer = ArcSealer(SealRequest("first.example", "mail", key, "mx.first.example"))
    sealer.feed_body(BODY)
    failed = ArcResult(ChainState.FAIL, highest=1)
    second = sealer.seal(fields, failed, "arc=fail")
    headers = [
        (b"Authentication-Results", b" mx.test; arc=pass"),
        *[(f.name, f.value) for f in second],
        *first_hop(keys),
    ]
    extra = ARC_SV + "PermitAuthenticationOverrides yes\n"
    actions = run(driver(tmp_path, keys, extra).message(headers, BODY, client=OUTSIDE))
    assert arc_result(actions).startswith(b' mx.test; arc=fail reason="AS i=2 has cv=fail"')
    assert inserted(actions, b"ARC-Seal") == []  # RFC 8617 5.1 step 2: no new set


def test_no_chain_stays_none(tmp_path: Path, keys: FakeKeyTable) -> None:
    headers = [(b"Authentication-Results", b" mx.test; arc=pass"), *_signed_headers(keys, BODY)]
    extra = ARC_SV + "PermitAuthenticationOverrides yes\n"
    actions = run(driver(tmp_path, keys, extra).message(headers, BODY, client=OUTSIDE))
    [seal] = inserted(actions, b"ARC-Seal")
    assert seal.startswith(b" i=1;") and b"cv=none" in seal


# -- FinalReceiver, AuthResIP -----------------------------------------------------------------


def two_hops(keys: FakeKeyTable) -> Headers:
    key = load_private_key(keys.rsa_path.read_bytes())
    fields = _fields(first_hop(keys))
    sealer = ArcSealer(SealRequest("example.com", "mail", key, "mx.example.com"))
    sealer.feed_body(BODY)
    passed = ArcResult(ChainState.PASS, instances=1, highest=1, oldest_pass=0)
    second = sealer.seal(fields, passed, arc_ar_item(passed))
    return [(f.name, f.value) for f in second] + first_hop(keys)


def test_final_receiver_names_the_chain(tmp_path: Path, keys: FakeKeyTable) -> None:
    extra = "ArcMode v\nFinalReceiver yes\n"
    actions = run(driver(tmp_path, keys, extra).message(two_hops(keys), BODY, client=OUTSIDE))
    assert arc_result(actions) == (
        b" mx.test; arc=pass header.oldest-pass=0 smtp.remote-ip=198.51.100.7"
        b' arc.chain="example.com:first.example"'
    )
    one = run(driver(tmp_path, keys, extra).message(first_hop(keys), BODY, client=OUTSIDE))
    assert arc_result(one).endswith(b" arc.chain=first.example")  # a token needs no quotes
    broken = run(
        driver(tmp_path, keys, extra).message(first_hop(keys), BODY + b"x\r\n", client=OUTSIDE)
    )
    assert b"arc.chain" not in arc_result(broken)  # only a passing chain names its custody
    off = run(driver(tmp_path, keys, "ArcMode v\n").message(two_hops(keys), BODY, client=OUTSIDE))
    assert b"arc.chain" not in arc_result(off)


def test_auth_res_ip_no_leaves_out_the_client(tmp_path: Path, keys: FakeKeyTable) -> None:
    extra = ARC_SV + "AuthResIP no\n"
    actions = run(driver(tmp_path, keys, extra).message(first_hop(keys), BODY, client=OUTSIDE))
    assert arc_result(actions) == b" mx.test; arc=pass header.oldest-pass=0"
    assert aar(actions).endswith(b"arc=pass header.oldest-pass=0")
    assert b"198.51.100.7" not in aar(actions)


# -- what the AAR copies from our own A-R fields (AuthservID) ---------------------------------

TRUSTED = (
    b" mx.test; dkim=pass header.d=origin.example; iprev=pass policy.iprev=192.0.2.1;"
    b" auth=pass smtp.auth=alice; x-local=pass; spf=pass smtp.mailfrom=origin.example"
)


def test_aar_records_every_registered_result_of_our_adm(tmp_path: Path, keys: FakeKeyTable) -> None:
    """A sealer that only signs (mail from an internal host, e.g. a list's outbound MTA)
    records the dkim= results its inbound side wrote under the same authserv-id."""
    headers = [(b"Authentication-Results", TRUSTED), *MESSAGE_HEADERS]
    actions = run(driver(tmp_path, keys, "ArcMode s\n").message(headers, BODY))
    text = aar(actions)
    assert text.startswith(b"i=1; mx.test; dkim=pass header.d=origin.example; iprev=pass")
    assert b"auth=pass smtp.auth=alice" in text and b"spf=pass" in text
    assert b"x-local" not in text  # not a registered method: not copied (as OpenARC)


def test_aar_dkim_results_are_ours_when_we_verify(tmp_path: Path, keys: FakeKeyTable) -> None:
    """On mail dkimd verifies, an A-R field of ours with a dkim= result is a forgery it
    deletes (as OpenDKIM): nothing of it is recorded; the other fields of ours are."""
    headers = [
        (b"Authentication-Results", b" mx.test; dkim=neutral header.d=x; spf=fail"),
        (b"Authentication-Results", b" mx.test; iprev=pass policy.iprev=192.0.2.1"),
        *_signed_headers(keys, BODY),
    ]
    actions = run(driver(tmp_path, keys, ARC_SV).message(headers, BODY, client=OUTSIDE))
    text = aar(actions)
    assert b"dkim=pass (1024-bit key)" in text
    assert b"dkim=neutral" not in text and b"spf=fail" not in text
    assert b"iprev=pass policy.iprev=192.0.2.1" in text


def test_arc_sign_headers_may_not_list_authentication_results() -> None:
    with pytest.raises(ConfigError, match="must not sign Authentication-Results"):
        parse_config_text("ArcMode v\nArcSignHeaders csl:from,authentication-results\n")


def test_openarc_options_need_arc_mode(tmp_path: Path) -> None:
    from dkimd.config.load import analyze_config_text

    report = analyze_config_text("Mode v\nPermitAuthenticationOverrides yes\n")
    assert [w.message for w in report.warnings] == [
        "PermitAuthenticationOverrides has no effect without ArcMode"
    ]


def test_summary_names_the_openarc_options(tmp_path: Path, keys: FakeKeyTable) -> None:
    from dkimd.config.arc import arc_summary

    path = checks_file(tmp_path, "List-Id:x\n")
    extra = ARC_SV + f"SealHeaderChecks {path}\nPermitAuthenticationOverrides yes\n"
    config = parse_config_text(make_config(tmp_path, keys, extra))
    assert config.arc is not None
    summary = arc_summary(config.arc)
    assert f"SealHeaderChecks line of {path}" in summary
    assert "overrides the chain state" in summary


@pytest.mark.parametrize(
    ("value", "state"),
    [
        (b" mx.test; arc=pass", ChainState.PASS),
        (b" mx.test; arc = fail (chain broken) smtp.remote-ip=192.0.2.1", ChainState.FAIL),
        (b" mx.test; arc=pass(comment)", ChainState.PASS),
        (b" mx.test; arc=none", None),
        (b" mx.test; arc=neutral", None),
        (b" mx.test; arc=", None),
        (b" mx.test; spf=pass; arc=PASS", ChainState.PASS),
        (b' mx.test; spf=pass reason="arc=fail"', None),  # inside a quoted string
        (b" other.test; arc=pass", None),
    ],
)
def test_the_arc_result_an_override_reads(value: bytes, state: ChainState | None) -> None:
    from dkimd.arc_filter import override_state

    assert override_state([HeaderField(b"Authentication-Results", value)], "mx.test") is state
