"""BogusKey / UnprotectedKey over the DNSSEC status of key records (dkimd.key_trust), the
A-R item each status gives, and the session applying them (no DNS: the statuses are set
on the answers, as dkimd.dns.validating sets them; tests/interop/test_dnssec.py does the
same against a real signed zone and the real OpenDKIM)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_session import (
    BODY,
    OUTSIDE,
    Driver,
    FakeKeyTable,
    _signed_headers,
    inserted,
    make_config,
    run,
)

from dkimd import milter
from dkimd.config import KeyAction, parse_config_text
from dkimd.dkim import DkimResult, SignatureResult, VerifyError
from dkimd.dkim.results import authentication_results_value
from dkimd.dns.base import DnssecStatus, TxtResult, TxtStatus
from dkimd.key_trust import KeyTrust
from dkimd.session import Runtime

ANCHORS = Path(__file__).resolve().parents[1] / "data" / "dnssec" / "anchors.key"
SOCKET = "Socket inet:8891@127.0.0.1\n"

PASS = SignatureResult(
    DkimResult.PASS,
    None,
    domain="example.com",
    identity="@example.com",
    algorithm="rsa-sha256",
    selector="mail",
    b="AAAAAAAAAAAA",
    key_bits=2048,
)
FAIL = SignatureResult(
    DkimResult.FAIL,
    VerifyError.SIGNATURE_MISMATCH,
    domain="example.com",
    identity="@example.com",
    algorithm="rsa-sha256",
    selector="mail",
    b="BBBBBBBBBBBB",
    key_bits=2048,
)


def answer(status: DnssecStatus | None) -> TxtResult:
    return TxtResult("mail._domainkey.example.com", TxtStatus.OK, (b"v=DKIM1; p=x",), dnssec=status)


def trust(bogus: KeyAction = KeyAction.FAIL, unprotected: KeyAction = KeyAction.NONE) -> KeyTrust:
    return KeyTrust(bogus, unprotected, None)


@pytest.mark.parametrize(
    ("status", "bogus", "unprotected", "result", "word", "override", "bad"),
    [
        (DnssecStatus.SECURE, KeyAction.FAIL, KeyAction.FAIL, PASS, "secure", None, False),
        (DnssecStatus.INSECURE, KeyAction.FAIL, KeyAction.NONE, PASS, "unprotected", None, False),
        (
            DnssecStatus.INSECURE,
            KeyAction.FAIL,
            KeyAction.FAIL,
            PASS,
            "unprotected",
            DkimResult.POLICY,
            True,
        ),
        (
            DnssecStatus.INSECURE,
            KeyAction.FAIL,
            KeyAction.NEUTRAL,
            PASS,
            "unprotected",
            DkimResult.NEUTRAL,
            False,
        ),
        (
            DnssecStatus.INSECURE,
            KeyAction.FAIL,
            KeyAction.FAIL,
            FAIL,
            "unprotected",
            DkimResult.POLICY,
            True,
        ),
        (DnssecStatus.BOGUS, KeyAction.FAIL, KeyAction.NONE, PASS, "bogus", DkimResult.FAIL, True),
        (DnssecStatus.BOGUS, KeyAction.FAIL, KeyAction.NONE, FAIL, "bogus", None, True),
        (
            DnssecStatus.BOGUS,
            KeyAction.NEUTRAL,
            KeyAction.NONE,
            PASS,
            "bogus",
            DkimResult.NEUTRAL,
            False,
        ),
        (DnssecStatus.BOGUS, KeyAction.NONE, KeyAction.NONE, PASS, "bogus", None, False),
        (None, KeyAction.FAIL, KeyAction.FAIL, PASS, None, None, False),
    ],
)
def test_each_status_and_action(
    status: DnssecStatus | None,
    bogus: KeyAction,
    unprotected: KeyAction,
    result: SignatureResult,
    word: str | None,
    override: DkimResult | None,
    bad: bool,
) -> None:
    outcome = trust(bogus, unprotected).judge([result], [answer(status)])
    assert outcome.words == (word,)
    assert outcome.result_words == (override,)
    assert outcome.bad is bad
    assert outcome.bogus == (status is DnssecStatus.BOGUS,)


def test_the_last_signature_with_a_key_action_decides() -> None:
    """OpenDKIM sets the message status per signature in order: a neutral after a fail
    leaves the verification's own outcome."""
    t = trust(KeyAction.FAIL, KeyAction.NEUTRAL)
    first_bad = t.judge([PASS, PASS], [answer(DnssecStatus.BOGUS), answer(DnssecStatus.INSECURE)])
    assert not first_bad.bad
    last_bad = t.judge([PASS, PASS], [answer(DnssecStatus.INSECURE), answer(DnssecStatus.BOGUS)])
    assert last_bad.bad


def test_temporary_failures_and_unsigned_messages_have_no_status() -> None:
    t = KeyTrust(KeyAction.FAIL, KeyAction.FAIL, DnssecStatus.INSECURE)
    failed = TxtResult("x", TxtStatus.TIMEOUT)
    none = SignatureResult(DkimResult.NONE, VerifyError.NO_SIGNATURE)
    outcome = t.judge([FAIL, none, PASS], [failed, None, answer(None)])
    # The third: plain DNS without validation is insecure, as libunbound without an anchor.
    assert outcome.words == (None, None, "unprotected")
    assert outcome.bad


def test_nothing_to_do_per_message_unless_an_option_asks() -> None:
    plain = parse_config_text(SOCKET)
    assert KeyTrust.for_config(plain, validating=False, test_data=False) is None
    assert Runtime.build(plain, _NoDns()).key_trust is None
    fail = parse_config_text(SOCKET + "UnprotectedKey fail\n")
    assert KeyTrust.for_config(fail, validating=False, test_data=True) is None
    judged = KeyTrust.for_config(fail, validating=False, test_data=False)
    assert judged == KeyTrust(KeyAction.FAIL, KeyAction.FAIL, DnssecStatus.INSECURE)
    anchored = parse_config_text(SOCKET + f"TrustAnchorFile {ANCHORS}\n")
    assert Runtime.build(anchored, _NoDns()).key_trust == KeyTrust(
        KeyAction.FAIL, KeyAction.NONE, None
    )


class _NoDns:
    async def lookup_txt(self, name: str) -> TxtResult:
        return TxtResult(name, TxtStatus.SERVFAIL)


def test_ar_items_carry_the_word_and_the_replaced_result() -> None:
    value = authentication_results_value(
        "mx.example",
        [PASS, FAIL],
        dnssec_words=["secure", "unprotected"],
        result_words=[None, DkimResult.POLICY],
    ).decode()
    assert "dkim=pass (2048-bit key; secure) header.d=example.com" in value
    # A reason the item had stays with the replaced word, as in OpenDKIM's comment buffer.
    assert 'dkim=policy reason="signature verification failed" (2048-bit key; unprotected)' in value
    plain = authentication_results_value("mx.example", [PASS]).decode()
    assert "dkim=pass (2048-bit key; unprotected)" in plain


# -- the session --


@pytest.fixture
def key_table(tmp_path: Path) -> FakeKeyTable:
    return FakeKeyTable(tmp_path)


class _StatusedRecords:
    """Key records with a DNSSEC status, as a ValidatingResolver answers."""

    def __init__(self, records: dict[str, str], status: DnssecStatus) -> None:
        self.records = records
        self.status = status

    async def lookup_txt(self, name: str) -> TxtResult:
        record = self.records.get(name)
        if record is None:
            return TxtResult(name, TxtStatus.NXDOMAIN)
        return TxtResult(name, TxtStatus.OK, (record.encode(),), dnssec=self.status)


@pytest.mark.parametrize(
    ("status", "extra", "item", "reply"),
    [
        (DnssecStatus.SECURE, "", b"dkim=pass (1024-bit key; secure)", milter.Accept()),
        (DnssecStatus.INSECURE, "", b"dkim=pass (1024-bit key; unprotected)", milter.Accept()),
        (
            DnssecStatus.BOGUS,
            "On-BadSignature reject\n",
            b"dkim=fail (1024-bit key; bogus)",
            milter.ReplyCode(550, "5.7.0", "bad DKIM signature data"),
        ),
        (
            DnssecStatus.BOGUS,
            "BogusKey none\n",
            b"dkim=pass (1024-bit key; bogus)",
            milter.Accept(),
        ),
        (
            DnssecStatus.INSECURE,
            "UnprotectedKey fail\nOn-BadSignature reject\n",
            b"dkim=policy (1024-bit key; unprotected)",
            milter.ReplyCode(550, "5.7.0", "bad DKIM signature data"),
        ),
    ],
)
def test_session_writes_the_status_and_applies_the_action(
    tmp_path: Path,
    key_table: FakeKeyTable,
    status: DnssecStatus,
    extra: str,
    item: bytes,
    reply: milter.Action,
) -> None:
    config = make_config(tmp_path, key_table, f"TrustAnchorFile {ANCHORS}\n{extra}")
    d = Driver(config, _StatusedRecords(key_table.records, status))
    actions = run(d.message(_signed_headers(key_table, BODY), BODY, client=OUTSIDE))
    [ar] = inserted(actions, b"Authentication-Results")
    assert item in b" ".join(ar.split())
    assert actions[-1] == reply
