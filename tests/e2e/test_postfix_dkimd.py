"""dkimd as the milter of a real, private Postfix: the seed admin's set-up, end to end.

Mail from 127.0.0.1 (SMTP) and from /usr/sbin/sendmail arrives signed and verifies with
OpenDKIM and dkimpy, for milter_protocol 2 and 6; mail from an outside client (XCLIENT)
carrying an OpenDKIM signature arrives with dkim=pass, tampered mail with dkim=fail, and
On-BadSignature reject makes Postfix answer 5xx. Forged Authentication-Results that claim
our authserv-id do not survive.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import pytest

from support.dkimd import Dkimd
from support.mail import by_subject, crlf, dnsfunc_for, header_values, message
from support.opendkim import DkimKey, opendkim_sign, opendkim_verify
from support.postfix import PrivatePostfix
from support.reference import REFERENCE, postfix_snippet, reference_user
from support.tools import free_port, require

pytestmark = [pytest.mark.e2e, pytest.mark.interop]

OUTSIDE = "198.51.100.77"  # TEST-NET-2: not in InternalHosts
AUTHSERV = "mx.test.example"  # the private Postfix's myhostname, sent as macro j


@pytest.fixture
def dkimd_for(tmp_path: Path, dkim_key: DkimKey) -> Iterator[Callable[..., Dkimd]]:
    """Start dkimd with the seed's table layout (KeyTable + refile: SigningTable)."""
    require("postfix")
    started: list[Dkimd] = []

    def start(**options: str) -> Dkimd:
        d = Dkimd(
            tmp_path / f"dkimd{len(started)}",
            mode="sv",
            key_table={"mail._domainkey.example.com": f"example.com:mail:{dkim_key.private_key}"},
            signing_table={
                "*@example.com": "mail._domainkey.example.com",
                "*@*.example.com": "mail._domainkey.example.com",
            },
            dns_records=dkim_key.records,
            internal_hosts=["127.0.0.1", "::1", "localhost"],
            options=options,
        ).start()
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.mark.parametrize("protocol", [2, 6])
def test_local_mail_is_signed_on_smtp_and_sendmail_paths(
    protocol: int,
    dkim_key: DkimKey,
    dkimd_for: Callable[..., Dkimd],
    private_postfix: Callable[..., PrivatePostfix],
) -> None:
    d = dkimd_for()
    pf = private_postfix(milter=d.postfix_milter, milter_protocol=protocol)

    code, reply = pf.send_smtp("alice@example.com", "bob@example.net", message("via smtp"))
    assert code == 250, reply
    folded = message("via sendmail", b"line one\r\n\r\n\r\n").replace(
        b"To: Bob", b"To: Bob\r\n\t(folded)"
    )
    pf.send_sendmail("alice@example.com", "bob@example.net", folded)
    got = by_subject(pf.wait_for_delivery(2, timeout=20))
    assert set(got) == {"via smtp", "via sendmail"}

    for subject, raw in got.items():
        # Folded fields reach the mailbox with plain line ends, never CR CR LF.
        assert b"\r\r" not in raw, raw
        sigs = header_values(raw, "DKIM-Signature")
        assert len(sigs) == 1, (subject, raw)
        assert "d=example.com" in sigs[0] and "s=mail" in sigs[0]
        assert "c=relaxed/relaxed" in sigs[0]
        assert dkim.verify(crlf(raw), dnsfunc=dnsfunc_for(dkim_key)), subject
        result = opendkim_verify(raw, dkim_key.records)
        assert "dkim=pass" in result, (subject, result)
        assert "header.d=example.com" in result
        # Signed, so not verified: no A-R from us on outgoing mail.
        assert header_values(raw, "Authentication-Results") == []
    log = d.log_text()
    assert "DKIM-Signature field added (s=mail, d=example.com)" in log
    assert [ln for ln in pf.log_text().splitlines() if "warning" in ln and "milter" in ln] == []
    assert pf.queue_count() == 0


def test_external_mail_is_verified(
    dkim_key: DkimKey,
    dkimd_for: Callable[..., Dkimd],
    private_postfix: Callable[..., PrivatePostfix],
) -> None:
    d = dkimd_for()
    pf = private_postfix(milter=d.postfix_milter, milter_protocol=6)
    good = opendkim_sign(message("presigned"), dkim_key.private_key, "example.com", "mail")
    tampered = opendkim_sign(message("tampered"), dkim_key.private_key, "example.com", "mail")
    tampered = tampered.replace(b"this is a test", b"this is a TEST")
    # A forged A-R claiming our authserv-id must be removed; one for another host kept.
    forged = (
        b"Authentication-Results: " + AUTHSERV.encode() + b"; dkim=pass header.d=example.com\r\n"
        b"Authentication-Results: other.example; spf=pass\r\n"
    )
    unsigned = forged + message("unsigned")
    for raw in (good, tampered, unsigned):
        code, reply = pf.send_smtp(
            "alice@example.com", "bob@example.net", raw, xclient_addr=OUTSIDE
        )
        assert code == 250, reply
    got = by_subject(pf.wait_for_delivery(3, timeout=20))

    [ar] = header_values(got["presigned"], "Authentication-Results")
    assert ar.startswith(f"{AUTHSERV};")
    assert "dkim=pass" in ar and "header.d=example.com" in ar and "header.s=mail" in ar
    assert len(header_values(got["presigned"], "DKIM-Signature")) == 1  # not signed again

    [ar] = header_values(got["tampered"], "Authentication-Results")
    assert "dkim=fail" in ar

    # Unsigned: no A-R of ours (AlwaysAddARHeader is off) and the forgery is gone.
    assert header_values(got["unsigned"], "Authentication-Results") == ["other.example; spf=pass"]


def test_bad_signature_reject_gives_5xx(
    dkim_key: DkimKey,
    dkimd_for: Callable[..., Dkimd],
    private_postfix: Callable[..., PrivatePostfix],
) -> None:
    d = dkimd_for(**{"On-BadSignature": "reject"})
    pf = private_postfix(milter=d.postfix_milter, milter_protocol=2)
    signed = opendkim_sign(message("to reject"), dkim_key.private_key, "example.com", "mail")
    code, reply = pf.send_smtp(
        "alice@example.com",
        "bob@example.net",
        signed.replace(b"this is a test", b"this is not a test"),
        xclient_addr=OUTSIDE,
    )
    assert code == 550, (code, reply)
    assert b"5.7.0" in reply and b"bad DKIM signature data" in reply  # as OpenDKIM
    assert pf.queue_count() == 0
    assert pf.delivered() == []
    # the good one still goes through on the same daemon
    good = opendkim_sign(message("fine"), dkim_key.private_key, "example.com", "mail")
    code, reply = pf.send_smtp("alice@example.com", "bob@example.net", good, xclient_addr=OUTSIDE)
    assert code == 250, reply


def test_seed_reference_config_served_as_is(
    tmp_path: Path,
    dkim_key: DkimKey,
    private_postfix: Callable[..., PrivatePostfix],
) -> None:
    """The reference opendkim.conf, data sets and Postfix snippet, with only the paths (and
    the port) pointed at test files."""
    reference = REFERENCE
    etc = tmp_path / "etc"
    keys = etc / "keys"
    keys.mkdir(parents=True)
    shutil.copy(dkim_key.private_key, keys / "mail.private")
    port = free_port()
    for name in ("KeyTable", "SigningTable", "TrustedHosts"):
        text = (reference / name).read_text().replace("/etc/opendkim", str(etc))
        (etc / name).write_text(text)
    conf = (reference / "opendkim.conf").read_text()
    conf = conf.replace("/etc/opendkim/", f"{etc}/").replace("/var/run/opendkim/", f"{tmp_path}/")
    conf = conf.replace("inet:8891@localhost", f"inet:{port}@127.0.0.1")
    # Keys below pytest's /tmp are "unsafe" by OpenDKIM's rules (a world-writable parent);
    # the reference config itself is otherwise untouched.
    conf += "RequireSafeKeys no\nTestDNSData file:" + str(tmp_path / "dns.data") + "\n"
    if reference_user() is None:
        conf = conf.replace("UserID                  opendkim:opendkim\n", "")
    (tmp_path / "dns.data").write_text(f"{dkim_key.dns_name} {dkim_key.txt}\n")
    (etc / "opendkim.conf").write_text(conf)
    # The opendkim user must be able to read what it serves, as on a real system.
    subprocess.run(["chown", "-R", "opendkim:opendkim", str(etc)], check=False)
    tmp_path.chmod(0o755)
    d = Dkimd.from_config(tmp_path / "run", etc / "opendkim.conf", port=port).start()
    try:
        # The snippet's milter settings as they are; only its milter address is our port.
        snippet = postfix_snippet()
        assert snippet["smtpd_milters"] == snippet["non_smtpd_milters"] == "inet:localhost:8891"
        pf = private_postfix(
            milter=d.postfix_milter,
            milter_protocol=int(snippet["milter_protocol"]),
            milter_default_action=snippet["milter_default_action"],
        )
        code, reply = pf.send_smtp("alice@example.com", "bob@example.net", message("seed"))
        assert code == 250, reply
        pf.send_sendmail(
            "carol@sub.example.net",
            "bob@example.net",
            message("seed sub").replace(b"alice@example.com", b"carol@sub.example.net"),
        )
        got = by_subject(pf.wait_for_delivery(2, timeout=20))
        for subject in ("seed", "seed sub"):
            [sig] = header_values(got[subject], "DKIM-Signature")
            assert "d=example.com" in sig and "s=mail" in sig
            assert dkim.verify(crlf(got[subject]), dnsfunc=dnsfunc_for(dkim_key)), subject
    finally:
        d.stop()
