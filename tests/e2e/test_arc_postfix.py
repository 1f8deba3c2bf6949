"""ARC end to end through three real Postfix instances, each with its own dkimd (issue 19).

Hop 1 (mail.example.com's outbound) signs alice@example.com's message with DKIM. Hop 2 is
a mailing list at lists.example: its Postfix rewrites the Subject (header_checks REPLACE,
as list software tags it) and its dkimd verifies and seals (ArcMode sv, ArcKey). Hop 3 is
the final receiver (ArcMode v): the list's change broke the author's DKIM signature, but the
ARC chain vouches for what hop 2 saw: dkim=fail, arc=pass. dkimpy agrees on both.

Each hop delivers to its Maildir; the next hop receives that file over SMTP from an outside
address (XCLIENT), as a forwarder's relay would. Key records come from TestDNSData files.

The second test is docs/arc.md's list recipe with separate inbound and outbound MTAs and
PermitAuthenticationOverrides (OpenARC's option), with and without it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import pytest

from support.dkimd import Dkimd
from support.mail import crlf, header_values, message
from support.opendkim import DkimKey
from support.postfix import PrivatePostfix
from support.tools import require

pytestmark = [pytest.mark.e2e, pytest.mark.interop]

HOP1_CLIENT = "127.0.0.1"  # internal: signed
HOP2_CLIENT = "198.51.100.21"  # hop 1's relay, as the list sees it
HOP3_CLIENT = "198.51.100.22"  # the list's relay, as the receiver sees it


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory Postfix's unprivileged daemons can read (tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="dkimd-arc-e2e-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_mailing_list_hop_breaks_dkim_arc_passes(
    tmp_path: Path,
    shared_dir: Path,
    make_dkim_key: Callable[..., DkimKey],
    private_postfix: Callable[..., PrivatePostfix],
) -> None:
    require("postfix")
    author = make_dkim_key("example.com", "mail")
    lists = make_dkim_key("lists.example", "arc")
    records = {**author.records, **lists.records}
    started: list[Dkimd] = []

    def dkimd(name: str, mode: str, **kw: object) -> Dkimd:
        d = Dkimd(tmp_path / name, mode=mode, dns_records=records, **kw).start()  # type: ignore[arg-type]
        started.append(d)
        return d

    try:
        hop1 = dkimd(
            "hop1",
            "s",
            key_table={"mail._domainkey.example.com": f"example.com:mail:{author.private_key}"},
            signing_table={"*@example.com": "mail._domainkey.example.com"},
            internal_hosts=["127.0.0.1"],
            authserv_id="mx.example.com",
        )
        hop2 = dkimd(
            "hop2",
            "v",
            key_table={"arc._domainkey.lists.example": f"lists.example:arc:{lists.private_key}"},
            internal_hosts=["192.0.2.1"],
            authserv_id="mx.lists.example",
            options={"ArcMode": "sv", "ArcKey": "arc._domainkey.lists.example"},
        )
        hop3 = dkimd(
            "hop3",
            "v",
            internal_hosts=["192.0.2.1"],
            authserv_id="mx.example.net",
            options={"ArcMode": "v"},
        )
        checks = shared_dir / "subject_checks"
        checks.write_text("/^Subject: (.*)$/ REPLACE Subject: [list] ${1}\n")
        pf1 = private_postfix(milter=hop1.postfix_milter, domains=("lists.example",))
        pf2 = private_postfix(
            milter=hop2.postfix_milter,
            domains=("example.net",),
            main_cf={"header_checks": f"regexp:{checks}"},
        )
        pf3 = private_postfix(milter=hop3.postfix_milter, domains=("example.net",))

        original = message("plans").replace(b"To: Bob <bob@example.net>", b"To: list@lists.example")
        code, reply = pf1.send_smtp("alice@example.com", "list@lists.example", original)
        assert code == 250, reply
        [at_list] = pf1.wait_for_delivery(1, timeout=30)
        assert header_values(at_list, "DKIM-Signature"), "hop 1 did not sign"

        code, reply = pf2.send_smtp(
            "list-bounces@lists.example", "bob@example.net", crlf(at_list), xclient_addr=HOP2_CLIENT
        )
        assert code == 250, reply
        [relayed] = pf2.wait_for_delivery(1, timeout=30)
        assert header_values(relayed, "Subject") == ["[list] plans"]
        assert header_values(relayed, "ARC-Seal"), f"hop 2 did not seal:\n{hop2.log_text()}"

        code, reply = pf3.send_smtp(
            "list-bounces@lists.example", "bob@example.net", crlf(relayed), xclient_addr=HOP3_CLIENT
        )
        assert code == 250, reply
        [final] = pf3.wait_for_delivery(1, timeout=30)
    finally:
        for d in started:
            d.stop()

    results = header_values(final, "Authentication-Results")
    ours = [r for r in results if r.startswith("mx.example.net;")]
    assert any("dkim=fail" in r for r in ours), results
    assert f"mx.example.net; arc=pass header.oldest-pass=0 smtp.remote-ip={HOP3_CLIENT}" in ours
    # The list's AAR recorded what it saw, including the chain (none: it is the first hop).
    [aar] = header_values(final, "ARC-Authentication-Results")
    assert aar.startswith("i=1; mx.lists.example;") and f"smtp.remote-ip={HOP2_CLIENT}" in aar

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        found = records.get(name.decode().rstrip("."))
        return found.encode() if found else None

    wire = crlf(final)
    assert not dkim.verify(wire, dnsfunc=dnsfunc)
    cv, _results, reason = dkim.arc_verify(wire, dnsfunc=dnsfunc)
    assert cv == b"pass", reason


HOP2_REINJECT = "198.51.100.30"  # the list software's re-injection, as the outbound MTA sees it


@pytest.mark.parametrize("override", [True, False], ids=["override", "no-override"])
def test_list_recipe_inbound_verdict_carries_the_chain(
    tmp_path: Path,
    shared_dir: Path,
    make_dkim_key: Callable[..., DkimKey],
    private_postfix: Callable[..., PrivatePostfix],
    override: bool,
) -> None:
    """docs/arc.md's list recipe, four Postfix instances: hop 1 (example.com) signs and
    seals; the list's inbound MTA verifies the chain (ArcMode v); the list software adds a
    footer and re-injects into the list's outbound MTA, which seals (ArcMode s) under the
    same AuthservID; hop 3 receives. With PermitAuthenticationOverrides the outbound seal
    takes the inbound arc=pass (cv=pass) though the list's footer broke AMS i=1, and hop 3
    finds arc=pass with header.oldest-pass=2; without it the chain ends with cv=fail."""
    require("postfix")
    author = make_dkim_key("example.com", "mail")
    lists = make_dkim_key("lists.example", "arc")
    records = {**author.records, **lists.records}
    started: list[Dkimd] = []

    def dkimd(name: str, mode: str, **kw: object) -> Dkimd:
        d = Dkimd(tmp_path / name, mode=mode, dns_records=records, **kw).start()  # type: ignore[arg-type]
        started.append(d)
        return d

    try:
        hop1 = dkimd(
            "hop1",
            "s",
            key_table={"mail._domainkey.example.com": f"example.com:mail:{author.private_key}"},
            signing_table={"*@example.com": "mail._domainkey.example.com"},
            internal_hosts=["127.0.0.1"],
            authserv_id="mx.example.com",
            options={"ArcMode": "s"},
        )
        inbound = dkimd(
            "inbound",
            "v",
            internal_hosts=["192.0.2.1"],
            authserv_id="mx.lists.example",
            options={"ArcMode": "v"},
        )
        outbound_options = {"ArcMode": "s", "ArcKey": "arc._domainkey.lists.example"}
        if override:
            outbound_options["PermitAuthenticationOverrides"] = "yes"
        outbound = dkimd(
            "outbound",
            "v",
            key_table={"arc._domainkey.lists.example": f"lists.example:arc:{lists.private_key}"},
            internal_hosts=["192.0.2.1"],
            authserv_id="mx.lists.example",
            options=outbound_options,
        )
        hop3 = dkimd(
            "hop3",
            "v",
            internal_hosts=["192.0.2.1"],
            authserv_id="mx.example.net",
            options={"ArcMode": "v"},
        )
        pf1 = private_postfix(milter=hop1.postfix_milter, domains=("lists.example",))
        pf_in = private_postfix(milter=inbound.postfix_milter, domains=("lists.example",))
        pf_out = private_postfix(milter=outbound.postfix_milter, domains=("example.net",))
        pf3 = private_postfix(milter=hop3.postfix_milter, domains=("example.net",))

        original = message("plans").replace(b"To: Bob <bob@example.net>", b"To: list@lists.example")
        code, reply = pf1.send_smtp("alice@example.com", "list@lists.example", original)
        assert code == 250, reply
        [sent] = pf1.wait_for_delivery(1, timeout=30)
        assert header_values(sent, "ARC-Seal"), "hop 1 did not seal"

        code, reply = pf_in.send_smtp(
            "alice@example.com", "list@lists.example", crlf(sent), xclient_addr=HOP2_CLIENT
        )
        assert code == 250, reply
        [received] = pf_in.wait_for_delivery(1, timeout=30)
        inbound_results = header_values(received, "Authentication-Results")
        assert any(r.startswith("mx.lists.example; arc=pass") for r in inbound_results)

        # The list software: a footer (breaks DKIM and AMS i=1), then re-injection.
        posted = crlf(received) + b"-- \r\nlist@lists.example\r\n"
        code, reply = pf_out.send_smtp(
            "list-bounces@lists.example", "bob@example.net", posted, xclient_addr=HOP2_REINJECT
        )
        assert code == 250, reply
        [relayed] = pf_out.wait_for_delivery(1, timeout=30)
        seals = header_values(relayed, "ARC-Seal")
        assert len(seals) == 2, f"the list did not seal:\n{outbound.log_text()}"
        newest = [s for s in seals if s.startswith("i=2;")]
        assert newest and ("cv=pass" if override else "cv=fail") in newest[0]

        code, reply = pf3.send_smtp(
            "list-bounces@lists.example", "bob@example.net", crlf(relayed), xclient_addr=HOP3_CLIENT
        )
        assert code == 250, reply
        [final] = pf3.wait_for_delivery(1, timeout=30)
    finally:
        for d in started:
            d.stop()

    ours = [
        r for r in header_values(final, "Authentication-Results") if r.startswith("mx.example.net;")
    ]
    assert any("dkim=fail" in r for r in ours), ours

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        found = records.get(name.decode().rstrip("."))
        return found.encode() if found else None

    cv, _results, reason = dkim.arc_verify(crlf(final), dnsfunc=dnsfunc)
    if override:
        assert f"mx.example.net; arc=pass header.oldest-pass=2 smtp.remote-ip={HOP3_CLIENT}" in ours
        assert cv == b"pass", reason
    else:
        assert any(r.startswith("mx.example.net; arc=fail") for r in ours), ours
        assert cv != b"pass"
