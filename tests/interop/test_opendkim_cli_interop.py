"""dkimd's DKIM engine (the `dkimd sign` / `dkimd verify` CLI) against the real OpenDKIM 2.11.

Both directions, for the four canonicalizations and three keys (RSA 2048 and 1024 from the real
opendkim-genkey, Ed25519 from `dkimd genkey --ed25519`):

* OpenDKIM signs (a private daemon driven by miltertest) -> `dkimd verify --dns-file` passes;
* `dkimd sign` signs -> a verifying OpenDKIM (TestDNSData) says dkim=pass.

OpenDKIM 2.11 verifies ed25519-sha256 and signs with it (signing needs `SignatureAlgorithm
ed25519-sha256`; it does not pick the algorithm from the key), so Ed25519 is in the matrix --
except that OpenDKIM's own Ed25519 signatures with *simple* header canonicalization verify
with nobody, OpenDKIM included (an OpenDKIM 2.11 bug, documented by a test below).
A one-byte change to the body or to the signed Subject makes both verifiers fail, and a few
awkward messages (folding, no final CRLF, trailing blank lines, 8-bit header, 2 MB body) pass
both ways.

The OpenDKIM daemons are started once per module: per canonicalization one RSA signer
(KeyTable/SigningTable pick the key from the From address) and one Ed25519 signer, and one
verifier. Without opendkim/miltertest the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from support.opendkim import (
    OpenDKIM,
    genkey,
    milter_transaction,
    parse_genkey_txt,
    write_test_dns_data,
)
from support.tools import require

pytestmark = pytest.mark.interop

CANONS = ["relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"]
KEYS = ["rsa2048", "rsa1024", "ed25519"]
DOMAIN = "example.com"
AUTHSERV_ID = "verifier.test.example"
DKIMD = [sys.executable, "-m", "dkimd"]
# libmilter (OpenDKIM) drops the connection on a body chunk over 65535 bytes (MILTER_CHUNK_SIZE);
# support.opendkim.milter_transaction's default of 65536 is one too many for it.
CHUNK = 65535


@dataclass(frozen=True)
class Key:
    name: str
    selector: str
    private_key: Path
    txt: str
    sender: str  # From address that makes the RSA signer pick this key
    algorithm: str
    bits: int | None


@dataclass
class Peers:
    keys: dict[str, Key]
    dns_file: Path
    signers: dict[tuple[str, str], OpenDKIM]  # (canon, "rsa" | "ed") -> signing OpenDKIM
    verifier: OpenDKIM


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    require("opendkim")
    require("miltertest")
    base = tmp_path_factory.mktemp("od-cli")
    keys: dict[str, Key] = {}
    for bits in (2048, 1024):
        k = genkey(base / f"keys-{bits}", DOMAIN, f"rsa{bits}", bits=bits)
        keys[f"rsa{bits}"] = Key(
            f"rsa{bits}",
            k.selector,
            k.private_key,
            k.txt,
            f"rsa{bits}@{DOMAIN}",
            "rsa-sha256",
            bits,
        )
    ed_dir = base / "keys-ed"
    ed_dir.mkdir(mode=0o700)
    done = subprocess.run(
        [*DKIMD, "genkey", "--ed25519", "-d", DOMAIN, "-s", "ed", "-D", str(ed_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    keys["ed25519"] = Key(
        "ed25519",
        "ed",
        ed_dir / "ed.private",
        parse_genkey_txt((ed_dir / "ed.txt").read_text()),
        f"ed@{DOMAIN}",
        "ed25519-sha256",
        None,
    )
    assert "k=ed25519" in keys["ed25519"].txt
    records = {f"{k.selector}._domainkey.{DOMAIN}": k.txt for k in keys.values()}
    dns_file = write_test_dns_data(base / "dns.data", records)

    with contextlib.ExitStack() as stack:
        signers: dict[tuple[str, str], OpenDKIM] = {}
        for i, canon in enumerate(CANONS):
            signers[(canon, "rsa")] = stack.enter_context(
                OpenDKIM(
                    base / f"sign-rsa-{i}",
                    mode="s",
                    canonicalization=canon,
                    key_table={
                        n: f"{DOMAIN}:{keys[n].selector}:{keys[n].private_key}"
                        for n in ("rsa2048", "rsa1024")
                    },
                    signing_table={keys[n].sender: n for n in ("rsa2048", "rsa1024")},
                    dns_records=records,
                )
            )
            signers[(canon, "ed")] = stack.enter_context(
                OpenDKIM(
                    base / f"sign-ed-{i}",
                    mode="s",
                    canonicalization=canon,
                    domain=DOMAIN,
                    selector="ed",
                    keyfile=keys["ed25519"].private_key,
                    dns_records=records,
                    options={"SignatureAlgorithm": "ed25519-sha256"},
                )
            )
        verifier = stack.enter_context(
            OpenDKIM(
                base / "verify",
                mode="v",
                test_dns_data=dns_file,
                authserv_id=AUTHSERV_ID,
                options={"MinimumKeyBits": "1024"},
            )
        )
        yield Peers(keys, dns_file, signers, verifier)


# ---- helpers ----------------------------------------------------------------------------------


def message(
    sender: str,
    *,
    subject: bytes = b"interop test",
    body: bytes = b"Hello,\r\n\r\nthis is a test message.\r\n  With  odd   spacing.\t\r\n",
    extra_headers: bytes = b"",
) -> bytes:
    return (
        b"From: Sender <" + sender.encode() + b">\r\n"
        b"To: Recipient <rcpt@example.net>\r\n"
        b"Subject: " + subject + b"\r\n"
        b"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <interop.1@example.com>\r\n" + extra_headers + b"\r\n" + body
    )


def opendkim_signs(od: OpenDKIM, msg: bytes) -> bytes:
    """`msg` (CRLF) with the DKIM-Signature the OpenDKIM signer `od` adds on top."""
    result = milter_transaction(od.socket_spec, msg, collect=("DKIM-Signature",), body_chunk=CHUNK)
    sigs = result.headers("DKIM-Signature")
    assert result.reply in ("a", "c"), (result.reply, result.output, od.log_text())
    assert len(sigs) == 1, (result.output, od.log_text())
    value = sigs[0].replace("\r\n", "\n").replace("\n", "\r\n")
    return b"DKIM-Signature:" + value.encode("latin-1") + b"\r\n" + msg


def opendkim_verifies(peers: Peers, msg: bytes) -> str:
    """OpenDKIM's Authentication-Results value (one line) for `msg` from an outside client."""
    result = milter_transaction(
        peers.verifier.socket_spec,
        msg,
        client_host="mx.outside.example",
        client_addr="192.0.2.200",
        collect=("Authentication-Results",),
        body_chunk=CHUNK,
    )
    found = result.headers("Authentication-Results")
    assert found, f"OpenDKIM added no Authentication-Results:\n{result.output}"
    return " ".join(found[0].split())


def dkimd_signs(key: Key, canon: str, msg: bytes) -> bytes:
    done = subprocess.run(
        [*DKIMD, "sign", "-c", canon, "-d", DOMAIN, "-s", key.selector, "-k", key.private_key],
        input=msg,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.startswith(b"DKIM-Signature:"), done.stdout[:200]
    assert done.stdout.endswith(msg), "dkimd sign changed the message"
    return done.stdout


def dkimd_verifies(peers: Peers, msg: bytes) -> tuple[int, str]:
    done = subprocess.run(
        [*DKIMD, "verify", "--dns-file", str(peers.dns_file), "--authserv-id", AUTHSERV_ID],
        input=msg,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr.decode(errors="replace")
    return done.returncode, done.stdout.decode(errors="replace")


def signer_for(peers: Peers, key: Key, canon: str) -> OpenDKIM:
    return peers.signers[(canon, "ed" if key.name == "ed25519" else "rsa")]


def tag(signature_message: bytes, name: bytes) -> bytes:
    head = signature_message.split(b"\r\n\r\n", 1)[0]
    field = head.split(b"\r\n", 1)[0] if head.startswith(b"DKIM-Signature:") else b""
    rest = head.split(b"\r\n")[1:]
    for line in rest:  # unfold the first field
        if line[:1] in (b" ", b"\t"):
            field += line
        else:
            break
    for part in field.split(b":", 1)[1].split(b";"):
        k, _, v = part.strip().partition(b"=")
        if k == name:
            return b"".join(v.split())
    raise AssertionError(f"no {name!r}= in {field!r}")


def assert_dkimd_pass(peers: Peers, msg: bytes, key: Key) -> None:
    code, out = dkimd_verifies(peers, msg)
    assert code == 0, out
    assert f"dkim=pass d={DOMAIN}" in out and f"s={key.selector}" in out, out
    assert f"a={key.algorithm}" in out, out
    assert f"header.d={DOMAIN}" in out and f"header.a={key.algorithm}" in out, out


def assert_opendkim_pass(ar: str, key: Key) -> None:
    assert ar.startswith(f"{AUTHSERV_ID}; dkim=pass"), ar
    assert f"header.d={DOMAIN}" in ar and f"header.s={key.selector}" in ar, ar
    assert f"header.a={key.algorithm}" in ar, ar
    if key.bits:
        assert f"({key.bits}-bit key)" in ar, ar


# ---- the matrix -------------------------------------------------------------------------------


OPENDKIM_ED25519_BROKEN = {"simple/simple", "simple/relaxed"}


@pytest.mark.parametrize(
    ("canon", "key_name"),
    [
        (c, k)
        for c in CANONS
        for k in KEYS
        # OpenDKIM 2.11 makes bad Ed25519 simple-header signatures (test below)
        if not (k == "ed25519" and c in OPENDKIM_ED25519_BROKEN)
    ],
)
def test_opendkim_signs_dkimd_verifies(peers: Peers, canon: str, key_name: str) -> None:
    key = peers.keys[key_name]
    signed = opendkim_signs(signer_for(peers, key, canon), message(key.sender))
    assert tag(signed, b"c") == canon.encode()
    assert tag(signed, b"a") == key.algorithm.encode()
    assert tag(signed, b"s") == key.selector.encode()
    assert_dkimd_pass(peers, signed, key)


@pytest.mark.parametrize("key_name", KEYS)
@pytest.mark.parametrize("canon", CANONS)
def test_dkimd_signs_opendkim_verifies(peers: Peers, canon: str, key_name: str) -> None:
    key = peers.keys[key_name]
    signed = dkimd_signs(key, canon, message(key.sender))
    assert tag(signed, b"c") == canon.encode()
    assert tag(signed, b"a") == key.algorithm.encode()
    assert_opendkim_pass(opendkim_verifies(peers, signed), key)


def dkimpy_verifies(peers: Peers, msg: bytes) -> bool:
    records = {f"{k.selector}._domainkey.{DOMAIN}": k.txt for k in peers.keys.values()}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records[name.decode().rstrip(".")].encode()

    return bool(dkim.verify(msg, dnsfunc=dnsfunc))


@pytest.mark.parametrize("canon", sorted(OPENDKIM_ED25519_BROKEN))
def test_opendkim_ed25519_simple_header_signature_fails_dkimd_and_dkimpy(
    peers: Peers, canon: str
) -> None:
    """OpenDKIM 2.11's Ed25519 signatures with simple header canonicalization are wrong.

    dkimd, dkimpy and OpenDKIM itself all reject them (the same message and key pass with
    relaxed header canonicalization). dkimd's simple-header Ed25519
    signatures pass OpenDKIM (test_dkimd_signs_opendkim_verifies), so dkimd is right; if this
    test starts failing, a fixed OpenDKIM is installed: add the cases back to the matrix."""
    key = peers.keys["ed25519"]
    msg = message(key.sender)
    signed = opendkim_signs(signer_for(peers, key, canon), msg)
    assert tag(signed, b"c") == canon.encode()
    code, out = dkimd_verifies(peers, signed)
    assert code == 1 and "dkim=fail" in out, out
    assert not dkimpy_verifies(peers, signed)
    ar = opendkim_verifies(peers, signed)  # OpenDKIM does not pass its own signature either
    assert ar.startswith(f"{AUTHSERV_ID}; dkim=fail"), ar
    relaxed = opendkim_signs(signer_for(peers, key, "relaxed/" + canon.split("/")[1]), msg)
    assert_dkimd_pass(peers, relaxed, key)
    assert dkimpy_verifies(peers, relaxed)


# ---- tampering --------------------------------------------------------------------------------


def _tamper_body(msg: bytes) -> bytes:
    head, body = msg.split(b"\r\n\r\n", 1)
    i = body.index(b"test")
    return head + b"\r\n\r\n" + body[:i] + b"b" + body[i + 1 :]  # "test" -> "best"


def _tamper_subject(msg: bytes) -> bytes:
    assert msg.count(b"Subject: interop test") == 1
    return msg.replace(b"Subject: interop test", b"Subject: interop tesT")


@pytest.mark.parametrize("tamper", [_tamper_body, _tamper_subject], ids=["body", "subject"])
@pytest.mark.parametrize("signer", ["opendkim", "dkimd"])
@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple"])
def test_one_byte_change_fails_both_verifiers(
    peers: Peers, canon: str, signer: str, tamper: object
) -> None:
    key = peers.keys["rsa1024"]
    msg = message(key.sender)
    if signer == "opendkim":
        signed = opendkim_signs(signer_for(peers, key, canon), msg)
    else:
        signed = dkimd_signs(key, canon, msg)
    # the same message, canon and key pass both verifiers untampered (the matrix above)
    bad = tamper(signed)  # type: ignore[operator]
    assert bad != signed and len(bad) == len(signed)
    code, out = dkimd_verifies(peers, bad)
    assert code == 1, out
    assert "dkim=fail" in out and "dkim=pass" not in out, out
    ar = opendkim_verifies(peers, bad)
    assert ar.startswith(f"{AUTHSERV_ID}; dkim=fail"), ar


def test_ed25519_tampered_fails_both_verifiers(peers: Peers) -> None:
    key = peers.keys["ed25519"]
    signed = dkimd_signs(key, "relaxed/relaxed", message(key.sender))
    bad = _tamper_body(signed)
    code, out = dkimd_verifies(peers, bad)
    assert code == 1 and "dkim=fail" in out, out
    assert opendkim_verifies(peers, bad).startswith(f"{AUTHSERV_ID}; dkim=fail")


def test_wrong_key_in_dns_fails_both_verifiers(peers: Peers, tmp_path: Path) -> None:
    """Guard: the verifiers really check the key (rsa1024's signature vs rsa2048's record)."""
    key = peers.keys["rsa1024"]
    signed = dkimd_signs(key, "relaxed/relaxed", message(key.sender))
    other = peers.keys["rsa2048"].txt
    dns = write_test_dns_data(tmp_path / "dns.data", {f"rsa1024._domainkey.{DOMAIN}": other})
    done = subprocess.run(
        [*DKIMD, "verify", "--dns-file", str(dns)],
        input=signed,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert b"dkim=fail" in done.stdout


# ---- awkward messages -------------------------------------------------------------------------

_TWO_MB = b"".join(
    b"line %07d of a large body, with  some  spaces \t\r\n" % i for i in range(40000)
)
assert len(_TWO_MB) > 2_000_000

AWKWARD: dict[str, dict[str, bytes]] = {
    "folded-headers": {
        "subject": b"a long subject that is folded\r\n over two lines\r\n\tand a third",
        "extra_headers": b"X-Folded: one,\r\n    two,\r\n\tthree\r\n",
    },
    "no-final-crlf": {"body": b"first line\r\nlast line without a line end"},
    "trailing-blank-lines": {"body": b"text\r\n\r\n\r\n  \r\n\r\n"},
    "empty-body": {"body": b""},
    "8bit-header": {"subject": "Grüße aus Köln \u2013 \u2713".encode()},
    "2mb-body": {"body": _TWO_MB},
}


# Cases where OpenDKIM fed by miltertest is the odd one out (dkimd and dkimpy agree):
# * no final CRLF, relaxed body: OpenDKIM neither signs (accepts without a signature) nor
#   verifies (no Authentication-Results). Postfix always ends the body with CRLF, so this
#   only shows with miltertest.
# * empty body (no SMFIC_BODY at all): OpenDKIM's bh= is neither RFC 6376's simple
#   (sha256 of CRLF) nor relaxed (sha256 of nothing) value; it passes only against itself.
OPENDKIM_ODD = {("no-final-crlf", "relaxed/relaxed"), ("empty-body", "relaxed/relaxed"),
                ("empty-body", "simple/simple")}  # fmt: skip
EMPTY_BODY_HASH = {
    "relaxed/relaxed": b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "simple/simple": b"frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=",
}


@pytest.mark.parametrize(
    ("case", "canon"),
    [
        (case, canon)
        for case in AWKWARD
        for canon in ("relaxed/relaxed", "simple/simple")
        if (case, canon) not in OPENDKIM_ODD  # test_opendkim_odd_cases_documented
    ],
)
def test_awkward_messages_both_ways(peers: Peers, case: str, canon: str) -> None:
    key = peers.keys["rsa2048"]
    msg = message(key.sender, **AWKWARD[case])
    by_dkimd = dkimd_signs(key, canon, msg)
    assert dkimpy_verifies(peers, by_dkimd)
    by_opendkim = opendkim_signs(signer_for(peers, key, canon), msg)
    assert_dkimd_pass(peers, by_opendkim, key)
    assert_opendkim_pass(opendkim_verifies(peers, by_dkimd), key)
    # same canonicalized body -> same body hash from both signers
    assert tag(by_dkimd, b"bh") == tag(by_opendkim, b"bh")


def test_opendkim_odd_cases_documented(peers: Peers) -> None:
    """What OpenDKIM 2.11 + miltertest actually do with the OPENDKIM_ODD messages."""
    key = peers.keys["rsa2048"]
    no_crlf = message(key.sender, **AWKWARD["no-final-crlf"])
    od = signer_for(peers, key, "relaxed/relaxed")
    result = milter_transaction(od.socket_spec, no_crlf, collect=("DKIM-Signature",))
    assert result.reply == "a" and not result.headers("DKIM-Signature"), result.output
    by_dkimd = dkimd_signs(key, "relaxed/relaxed", no_crlf)
    assert_dkimd_pass(peers, by_dkimd, key)
    verified = milter_transaction(peers.verifier.socket_spec, by_dkimd, client_addr="192.0.2.200")
    assert not verified.headers("Authentication-Results"), verified.output

    for canon, body_hash in EMPTY_BODY_HASH.items():
        empty = message(key.sender, body=b"")
        by_dkimd = dkimd_signs(key, canon, empty)
        assert tag(by_dkimd, b"bh") == body_hash  # RFC 6376 section 3.4.3 / 3.4.4
        assert_dkimd_pass(peers, by_dkimd, key)
        by_opendkim = opendkim_signs(signer_for(peers, key, canon), empty)
        assert tag(by_opendkim, b"bh") != body_hash
        assert not dkimpy_verifies(peers, by_opendkim)
        assert dkimd_verifies(peers, by_opendkim)[0] == 1
