"""The harness proves itself with the real thing: OpenDKIM as the milter of a private Postfix.

These tests do not involve dkimd; they show that support.postfix / support.opendkim work, so
that when the same tests run dkimd in OpenDKIM's place, a failure means dkimd, not the harness.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from dkimd.dns.base import TxtStatus
from dkimd.dns.testdata import TestDnsFile
from support.mail import by_subject, crlf, dnsfunc_for, header_values, message
from support.opendkim import (
    DkimKey,
    OpenDKIM,
    milter_transaction,
    opendkim_sign,
    opendkim_verify,
    split_message,
    write_test_dns_data,
)
from support.postfix import PrivatePostfix
from support.tools import find_tool, require, unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.interop]

OUTSIDE = "198.51.100.77"  # TEST-NET-2: not in OpenDKIM's InternalHosts (default 127.0.0.1)


@pytest.mark.parametrize("protocol", [2, 6])
def test_postfix_mail_is_signed_by_opendkim(
    protocol: int,
    dkim_key: DkimKey,
    opendkim: Callable[..., OpenDKIM],
    private_postfix: Callable[..., PrivatePostfix],
) -> None:
    od = opendkim(
        mode="sv",
        domain=dkim_key.domain,
        selector=dkim_key.selector,
        keyfile=dkim_key.private_key,
        canonicalization="relaxed/simple",
        dns_records=dkim_key.records,
    )
    pf = private_postfix(milter=od.postfix_milter, milter_protocol=protocol)

    code, reply = pf.send_smtp("alice@example.com", "bob@example.net", message("via smtp"))
    assert code == 250, reply
    pf.send_sendmail("alice@example.com", "bob@example.net", message("via sendmail"))
    got = by_subject(pf.wait_for_delivery(2, timeout=20))
    assert set(got) == {"via smtp", "via sendmail"}

    for subject, raw in got.items():
        sigs = header_values(raw, "DKIM-Signature")
        assert len(sigs) == 1, (subject, raw)
        assert "d=example.com" in sigs[0] and "s=mail" in sigs[0]
        assert dkim.verify(crlf(raw), dnsfunc=dnsfunc_for(dkim_key)), subject
        result = opendkim_verify(raw, dkim_key.records)
        assert "dkim=pass" in result, (subject, result)
        assert "header.d=example.com" in result
    milter_warnings = [
        line for line in pf.log_text().splitlines() if "warning" in line and "milter" in line
    ]
    assert milter_warnings == []
    assert pf.queue_count() == 0


def test_external_signed_mail_is_verified(
    dkim_key: DkimKey,
    opendkim: Callable[..., OpenDKIM],
    private_postfix: Callable[..., PrivatePostfix],
) -> None:
    od = opendkim(
        mode="sv",
        domain=dkim_key.domain,
        selector=dkim_key.selector,
        keyfile=dkim_key.private_key,
        dns_records=dkim_key.records,
        authserv_id="mx.test.example",
    )
    pf = private_postfix(milter=od.postfix_milter, milter_protocol=6)

    good = opendkim_sign(message("presigned"), dkim_key.private_key, "example.com", "mail")
    tampered = opendkim_sign(message("tampered"), dkim_key.private_key, "example.com", "mail")
    tampered = tampered.replace(b"this is a test", b"this is a TEST")
    for raw in (good, tampered):
        code, reply = pf.send_smtp(
            "alice@example.com", "bob@example.net", raw, xclient_addr=OUTSIDE
        )
        assert code == 250, reply
    got = by_subject(pf.wait_for_delivery(2, timeout=20))

    ar = header_values(got["presigned"], "Authentication-Results")
    assert len(ar) == 1
    assert ar[0].startswith("mx.test.example;")
    assert "dkim=pass" in ar[0] and "header.d=example.com" in ar[0]
    # from outside: verified, not signed again
    assert len(header_values(got["presigned"], "DKIM-Signature")) == 1

    ar = header_values(got["tampered"], "Authentication-Results")
    assert len(ar) == 1 and "dkim=fail" in ar[0]
    assert f"client=unknown[{OUTSIDE}]" in pf.log_text()


def test_milter_reject_is_visible_in_the_data_reply(
    dkim_key: DkimKey,
    opendkim: Callable[..., OpenDKIM],
    private_postfix: Callable[..., PrivatePostfix],
) -> None:
    od = opendkim(mode="v", dns_records=dkim_key.records, options={"On-BadSignature": "reject"})
    pf = private_postfix(milter=od.postfix_milter, milter_protocol=6)
    signed = opendkim_sign(message("to reject"), dkim_key.private_key, "example.com", "mail")
    code, reply = pf.send_smtp(
        "alice@example.com",
        "bob@example.net",
        signed.replace(b"this is a test", b"this is not a test"),
        xclient_addr=OUTSIDE,
    )
    assert 500 <= code < 600, (code, reply)
    assert pf.queue_count() == 0
    assert pf.delivered() == []


def test_unreachable_milter_tempfails_with_default_action(
    private_postfix: Callable[..., PrivatePostfix],
) -> None:
    from support.tools import free_port

    pf = private_postfix(milter=f"inet:127.0.0.1:{free_port()}", milter_default_action="tempfail")
    code, reply = pf.send_smtp("alice@example.com", "bob@example.net", message("no milter"))
    assert 400 <= code < 500, (code, reply)


def test_miltertest_transaction_signs_and_reports(
    dkim_key: DkimKey, opendkim: Callable[..., OpenDKIM]
) -> None:
    od = opendkim(
        mode="s",
        domain="example.com",
        selector="mail",
        keyfile=dkim_key.private_key,
        unix_socket=True,
    )
    result = milter_transaction(od.socket_spec, message("miltertest"))
    assert result.reply in ("a", "c")
    [sig] = result.headers("DKIM-Signature")
    assert sig.startswith(" v=1; a=rsa-sha256;")
    signed = (
        b"DKIM-Signature:" + sig.replace("\n", "\r\n").encode() + b"\r\n" + message("miltertest")
    )
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(dkim_key))


@pytest.mark.parametrize("canon", ["simple/simple", "relaxed/relaxed", "simple/relaxed"])
def test_opendkim_sign_and_verify_helpers(dkim_key: DkimKey, canon: str) -> None:
    folded = message("folded", b"line one\r\n\r\n\r\n").replace(
        b"Subject: folded", b"Subject: folded\r\n\tcontinued"
    )
    signed = opendkim_sign(folded, dkim_key.private_key, "example.com", "mail", canon)
    assert f"c={canon};".encode() in signed
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(dkim_key))
    assert "dkim=pass" in opendkim_verify(signed, dkim_key.records)
    broken = signed.replace(b"line one", b"line 1")
    assert "dkim=fail" in opendkim_verify(broken, dkim_key.records)


def test_test_dns_data_file_is_read_alike_by_opendkim_and_dkimd(
    tmp_path: Path, dkim_key: DkimKey
) -> None:
    import asyncio

    path = write_test_dns_data(
        tmp_path / "dns.data", {**dkim_key.records, "other._domainkey.example.org": "v=DKIM1; p="}
    )
    source = TestDnsFile(path)
    found = asyncio.run(source.lookup_txt(dkim_key.dns_name))
    assert found.records == (dkim_key.txt.encode(),)
    missing = asyncio.run(source.lookup_txt("nope._domainkey.example.com"))
    assert missing.status is TxtStatus.NXDOMAIN
    signed = opendkim_sign(message("dns data"), dkim_key.private_key, "example.com", "mail")
    with OpenDKIM(tmp_path / "od", mode="v", test_dns_data=path, authserv_id="x.test") as od:
        result = milter_transaction(od.socket_spec, signed, client_addr=OUTSIDE)
    [ar] = result.headers("Authentication-Results")
    assert "dkim=pass" in ar


def test_split_message_follows_the_mta_convention() -> None:
    headers, body = split_message(b"A: 1\nB:two\n\tfolded\nC:   x\n\nbody\n")
    assert headers == [("A", b"1"), ("B", b"two\r\n\tfolded"), ("C", b"x")]
    assert body == b"body\r\n"


def test_require_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_tool("postfix") is not None or find_tool("sh") is not None
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install"):
        require("no-such-tool-dkimd")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool-dkimd"):
        require("no-such-tool-dkimd")


def test_unavailable_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^no frobnicator$"):
        unavailable("no frobnicator")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no frobnicator"):
        unavailable("no frobnicator")
