"""DNSSEC-validated key records against a real signed zone: nsd serving it, unbound
validating it (support.dnssec_zones), dkimd and the real OpenDKIM 2.11 reading it.

* secure (signed zone, DS in the parent):   `dkim=pass (1024-bit key; secure)`, both;
* insecure (unsigned delegation; its absent DS proven by NSEC, by a matching NSEC3, or by
  an NSEC3 opt-out span): `dkim=pass (1024-bit key; unprotected)`, both;
  UnprotectedKey fail: `dkim=policy (...; unprotected)` and On-BadSignature (reject here),
  UnprotectedKey neutral: `dkim=neutral (...; unprotected)`, accepted, both;
* bogus (tampered RRSIG, expired RRSIG, RRSIG stripped in a signed zone): dkimd writes
  `dkim=fail (1024-bit key; bogus)` and applies On-BadSignature (BogusKey fail, the
  default), `neutral` with BogusKey neutral, `pass (...; bogus)` with BogusKey none.
  OpenDKIM 2.11 is observed to wait DNSTimeout and
  add no A-R (its libunbound callback never completes a bogus answer): a difference on
  purpose (README, dkimd.key_trust).

dkimd is run both ways: validating itself from `TrustAnchorFile` (queries with CD through
unbound) and believing unbound's AD bit (`TrustResolverAD yes`, EDE for bogus). OpenDKIM is
pointed at nsd through `ResolverConfiguration` (a libunbound config with the stub zones),
with the same `TrustAnchorFile`. No test leaves loopback.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dkimd.dkim import Signer, SigningRequest, load_private_key_file
from dkimd.dkim.headers import HeaderField
from dkimd.dns.base import DnssecStatus, TxtStatus
from dkimd.dns.trust_anchors import load_trust_anchors
from dkimd.dns.validating import ValidatingResolver
from support.dkimd import Dkimd
from support.dnssec_zones import DnssecTree
from support.opendkim import DkimKey, OpenDKIM, genkey, milter_transaction
from support.tools import free_port, require

pytestmark = pytest.mark.interop

EXPECTED = {
    "signed": DnssecStatus.SECURE,
    "unsigned": DnssecStatus.INSECURE,
    "tampered": DnssecStatus.BOGUS,
    "expired": DnssecStatus.BOGUS,
    "stripped": DnssecStatus.BOGUS,
    "unsigned.nsec3": DnssecStatus.INSECURE,
    "unsigned.optout": DnssecStatus.INSECURE,
}


@dataclass
class Setup:
    tree: DnssecTree
    key: DkimKey
    workdir: Path

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.tree.unbound_port}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("dnssec")
    key = genkey(workdir / "key", "unused.example", "sel", 1024)
    with DnssecTree(workdir / "tree", key.txt) as tree:
        yield Setup(tree, key, workdir)


def signed_message(setup: Setup, domain: str) -> bytes:
    headers = [
        HeaderField(b"From", b" sender@" + domain.encode()),
        HeaderField(b"To", b" rcpt@example.net"),
        HeaderField(b"Subject", b" DNSSEC"),
    ]
    body = b"Hello.\r\n"
    key = load_private_key_file(str(setup.key.private_key))
    signer = Signer(SigningRequest(domain, "sel", key))
    signer.feed_body(body)
    field = signer.sign(headers)
    lines = [field, *headers]
    return b"".join(h.name + b":" + h.value + b"\r\n" for h in lines) + b"\r\n" + body


# -- the resolver edge --


@pytest.mark.parametrize("mode", ["anchor", "resolver-ad"])
def test_key_records_get_their_dnssec_status(setup: Setup, mode: str) -> None:
    async def run() -> None:
        if mode == "anchor":
            anchors = load_trust_anchors(str(setup.tree.anchor_file))
            resolver = ValidatingResolver([setup.nameserver], 5.0, anchors=anchors)
        else:
            resolver = ValidatingResolver([setup.nameserver], 5.0, trust_resolver_ad=True)
        for child, expected in EXPECTED.items():
            name = setup.tree.key_name(child)
            result = await resolver.lookup_txt(name)
            assert result.status is TxtStatus.OK, (child, result)
            assert result.dnssec is expected, (child, result.detail)
            assert result.records == (setup.key.txt.encode(),), child
            # Cached with the record: no query the second time, the same status.
            sent = resolver.queries
            again = await resolver.lookup_txt(name)
            assert resolver.queries == sent
            assert again.dnssec is expected

    asyncio.run(run())


@pytest.mark.parametrize(
    ("alias", "expected"),
    [("secure-alias", DnssecStatus.SECURE), ("insecure-alias", DnssecStatus.INSECURE)],
)
def test_a_cname_chain_is_as_secure_as_its_weakest_link(
    setup: Setup, alias: str, expected: DnssecStatus
) -> None:
    async def run() -> DnssecStatus | None:
        anchors = load_trust_anchors(str(setup.tree.anchor_file))
        resolver = ValidatingResolver([setup.nameserver], 5.0, anchors=anchors)
        result = await resolver.lookup_txt(f"{alias}._domainkey.signed.dkimtest")
        assert result.records == (setup.key.txt.encode(),)
        return result.dnssec

    assert asyncio.run(run()) is expected


def test_chain_is_walked_once_per_ttl(setup: Setup) -> None:
    async def run() -> None:
        anchors = load_trust_anchors(str(setup.tree.anchor_file))
        resolver = ValidatingResolver([setup.nameserver], 5.0, anchors=anchors, cache_size=0)
        await resolver.lookup_txt(setup.tree.key_name("signed"))
        first = resolver.queries  # TXT, DS signed, DNSKEY signed, DNSKEY dkimtest
        await resolver.lookup_txt(setup.tree.key_name("signed"))
        assert resolver.queries - first == 1  # the TXT only: the chain is remembered
        assert first == 4

    asyncio.run(run())


def test_a_wrong_trust_anchor_makes_signed_records_bogus(setup: Setup, tmp_path: Path) -> None:
    other = tmp_path / "other.ds"
    other.write_text(
        "dkimtest. IN DS 4242 13 2 "
        "0000000000000000000000000000000000000000000000000000000000000000\n"
    )

    async def run() -> None:
        resolver = ValidatingResolver(
            [setup.nameserver], 5.0, anchors=load_trust_anchors(str(other))
        )
        result = await resolver.lookup_txt(setup.tree.key_name("signed"))
        assert result.dnssec is DnssecStatus.BOGUS
        assert "matches its DS or trust anchor" in result.detail

    asyncio.run(run())


# -- the milter: dkimd and the real OpenDKIM --


def _dkimd(setup: Setup, workdir: Path, options: dict[str, str]) -> Dkimd:
    port = free_port()
    conf = workdir / "opendkim.conf"
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {
        "Mode": "v",
        "Socket": f"inet:{port}@127.0.0.1",
        "PidFile": str(workdir / "dkimd.pid"),
        "Syslog": "no",
        "LogWhy": "yes",
        "Nameservers": setup.nameserver,
        "DNSTimeout": "3",
        **options,
    }
    conf.write_text("".join(f"{k} {v}\n" for k, v in settings.items()))
    return Dkimd.from_config(workdir, conf, port=port)


def _opendkim(setup: Setup, workdir: Path, options: dict[str, str]) -> OpenDKIM:
    workdir.mkdir(parents=True, exist_ok=True)
    libunbound = workdir / "libunbound.conf"
    libunbound.write_text(setup.tree.resolver_config(None).replace("    do-daemonize: no\n", ""))
    settings = {
        "ResolverConfiguration": str(libunbound),
        "TrustAnchorFile": str(setup.tree.anchor_file),
        "DNSTimeout": "2",
        **options,
    }
    od = OpenDKIM(workdir, mode="v", options=settings)
    # Its key records come from DNS here, not from the fixture's TestDNSData.
    od.conf_path.write_text(
        "".join(
            line + "\n"
            for line in od.conf_path.read_text().splitlines()
            if not line.startswith("TestDNSData")
        )
    )
    return od


def _outcome(spec: str, message: bytes) -> tuple[str, list[str]]:
    result = milter_transaction(spec, message)
    return result.reply, result.headers("Authentication-Results")


def _item(ar: list[str]) -> str:
    """The dkim= item of the one A-R field, up to header.d."""
    assert len(ar) == 1, ar
    start = ar[0].index("dkim=")
    return ar[0][start:].split(" header.d=")[0]


RESOLVER_AD = {"TrustResolverAD": "yes"}


@pytest.mark.parametrize("how", ["anchor", "resolver-ad"])
def test_authentication_results_carry_the_status(setup: Setup, tmp_path: Path, how: str) -> None:
    require("miltertest")
    options = {"TrustAnchorFile": str(setup.tree.anchor_file)} if how == "anchor" else RESOLVER_AD
    options = {**options, "On-BadSignature": "reject"}
    with _dkimd(setup, tmp_path / "dk", options) as dk:
        seen = {
            c: _outcome(dk.socket_spec, signed_message(setup, f"{c}.dkimtest")) for c in EXPECTED
        }
        log = dk.log_text()
    assert (
        seen["signed"][0] == "a" and _item(seen["signed"][1]) == "dkim=pass (1024-bit key; secure)"
    )
    assert seen["unsigned"][0] == "a"
    assert _item(seen["unsigned"][1]) == "dkim=pass (1024-bit key; unprotected)"
    for bogus in ("tampered", "expired", "stripped"):
        reply, ar = seen[bogus]
        assert reply == "y", (bogus, reply)  # On-BadSignature reject: 550 5.7.0
        assert _item(ar) == "dkim=fail (1024-bit key; bogus)", bogus
        assert f"s=sel, d={bogus}.dkimtest: DNSSEC validation failed (bogus)" in log


@pytest.mark.parametrize(
    ("options", "unsigned_item", "unsigned_reply"),
    [
        ({"UnprotectedKey": "fail", "On-BadSignature": "reject"}, "dkim=policy", "y"),
        ({"UnprotectedKey": "neutral"}, "dkim=neutral", "a"),
    ],
)
def test_unprotected_key_as_opendkim(
    setup: Setup, tmp_path: Path, options: dict[str, str], unsigned_item: str, unsigned_reply: str
) -> None:
    """Observed OpenDKIM 2.11 with libunbound: the same item and reply as dkimd."""
    require("miltertest")
    message = signed_message(setup, "unsigned.dkimtest")
    secure = signed_message(setup, "signed.dkimtest")
    dk_options = {"TrustAnchorFile": str(setup.tree.anchor_file), **options}
    with (
        _dkimd(setup, tmp_path / "dk", dk_options) as dk,
        _opendkim(setup, tmp_path / "od", options) as od,
    ):
        for spec in (dk.socket_spec, od.socket_spec):
            reply, ar = _outcome(spec, message)
            assert reply == unsigned_reply, (spec, reply)
            assert _item(ar) == f"{unsigned_item} (1024-bit key; unprotected)", spec
            reply, ar = _outcome(spec, secure)
            assert (reply, _item(ar)) == ("a", "dkim=pass (1024-bit key; secure)"), spec


@pytest.mark.parametrize(
    ("bogus_key", "item", "reply"),
    [
        ("neutral", "dkim=neutral (1024-bit key; bogus)", "a"),
        ("none", "dkim=pass (1024-bit key; bogus)", "a"),
    ],
)
def test_bogus_key_options(
    setup: Setup, tmp_path: Path, bogus_key: str, item: str, reply: str
) -> None:
    require("miltertest")
    options = {
        "TrustAnchorFile": str(setup.tree.anchor_file),
        "BogusKey": bogus_key,
        "On-BadSignature": "reject",
    }
    with _dkimd(setup, tmp_path / "dk", options) as dk:
        seen = _outcome(dk.socket_spec, signed_message(setup, "tampered.dkimtest"))
    assert (seen[0], _item(seen[1])) == (reply, item)


def test_opendkim_times_out_on_a_bogus_key(setup: Setup, tmp_path: Path) -> None:
    """The observation behind the difference: OpenDKIM 2.11 waits DNSTimeout, then accepts
    with no A-R (a key retrieval failure), whatever BogusKey says."""
    require("miltertest")
    with _opendkim(setup, tmp_path / "od", {"BogusKey": "fail"}) as od:
        assert _outcome(od.socket_spec, signed_message(setup, "tampered.dkimtest")) == ("a", [])


def test_testkey_reports_the_dnssec_status(setup: Setup, tmp_path: Path) -> None:
    """`dkimd testkey` says what DNSSEC makes of each record, in opendkim-testkey's words
    (observed: "key signed secure", "key unsigned not secure"); a bogus record fails its key
    (opendkim-testkey's query times out there, which fails it too)."""
    table = tmp_path / "KeyTable"
    table.write_text(
        "".join(
            f"{c} {c}.dkimtest:sel:{setup.key.private_key}\n"
            for c in ("signed", "unsigned", "tampered")
        )
    )
    conf = tmp_path / "opendkim.conf"
    conf.write_text(
        f"KeyTable file:{table}\nRequireSafeKeys no\nNameservers {setup.nameserver}\n"
        f"TrustAnchorFile {setup.tree.anchor_file}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "dkimd", "testkey", "-x", str(conf), "-v"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 69, done.stderr  # EX_UNAVAILABLE, as for a missing record
    assert "key signed secure" in done.stderr
    assert "key unsigned not secure" in done.stderr
    assert "key tampered: record is bogus (DNSSEC failed)" in done.stderr
    assert "3 keys checked; 2 pass, 1 fail" in done.stdout


def test_keys_from_test_public_keys_carry_no_word(setup: Setup, tmp_path: Path) -> None:
    """A key record from TestPublicKeys has no DNSSEC state: no word after the key size,
    on both (observed: OpenDKIM writes `(1024-bit key)`)."""
    require("miltertest")
    pubkeys = tmp_path / "pubkeys"
    pubkeys.write_text(f"sel._domainkey.files.example {setup.key.txt}\n")
    message = signed_message(setup, "files.example")
    items = []
    for name, cls in (("od", OpenDKIM), ("dk", Dkimd)):
        with cls(tmp_path / name, mode="v", options={"TestPublicKeys": str(pubkeys)}) as f:
            items.append(_item(_outcome(f.socket_spec, message)[1]))
    assert items == ["dkim=pass (1024-bit key)"] * 2
