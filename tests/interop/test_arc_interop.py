"""ARC interop both ways with two independent implementations: dkimpy (`arc_sign`,
`arc_verify`, with `authres`) and Perl's Mail::DKIM (`Mail::DKIM::ARC::Signer` /
`::Verifier`, apt libmail-dkim-perl, driven by tests/interop/arc/mail_dkim_arc.pl).

Chains of 1, 2 and 3 hops, each hop sealed by any of the three, verify under all three; a
tampered body or a removed ARC header fails under all three. Keys come from a dict (dkimpy's
`dnsfunc`, our verifier) and a records file (the Perl script replaces Mail::DKIM's DNS query):
no DNS. Under CI=true a missing Mail::DKIM or authres fails instead of skipping.

Each hop does what a forwarder does: it verifies the chain it received with its own
implementation, writes an Authentication-Results field with the result under its own
authserv-id (dkimpy and Mail::DKIM read the cv= to seal from there), then seals.
"""

from __future__ import annotations

import base64
import functools
import itertools
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd.arc import ArcResult, ArcSealer, ArcVerifier, ArcVerifyOptions, SealRequest, arc_ar_item
from dkimd.dkim import PrivateKey, split_message
from dkimd.dns.base import TxtResult, TxtStatus
from support.tools import require, unavailable

SCRIPT = Path(__file__).resolve().parent / "arc" / "mail_dkim_arc.pl"
NOW = 1_700_000_000
IMPLEMENTATIONS = ("dkimd", "dkimpy", "perl")
MESSAGE = (
    b"From: Alice <alice@origin.example>\r\n"
    b"To: list@lists.example\r\n"
    b"Subject: the plan\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <arc-interop@origin.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Meet at  noon.\r\n"
    b"\r\n"
)


@dataclass(frozen=True)
class Keys:
    pem: bytes  # PKCS#1 PEM, for dkimpy and Mail::DKIM
    ours: PrivateKey
    records: dict[str, bytes]
    dir: Path  # key.pem and dns.txt, for the Perl script


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """One 2048-bit RSA key (PKCS#1 PEM, which all three load), published for hop1..hop3."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    ours = PrivateKey(key)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(ours.dns_public_key())
    records = {f"arc._domainkey.hop{n}.example": record for n in (1, 2, 3)}
    directory = tmp_path_factory.mktemp("arc-keys")
    (directory / "key.pem").write_bytes(pem)
    (directory / "dns.txt").write_bytes(
        b"".join(n.encode() + b" " + r + b"\n" for n, r in records.items())
    )
    return Keys(pem, ours, records, directory)


@functools.cache
def _dkimpy() -> Any:
    import dkim

    try:
        import authres  # noqa: F401  (dkimpy's arc_sign needs it)
    except ImportError:
        unavailable("authres not installed; pip install -e '.[test]'")
    return dkim


@functools.cache
def _perl_ok() -> bool:
    perl = require("perl")
    probe = subprocess.run(
        [perl, "-MMail::DKIM::ARC::Verifier", "-MMail::DKIM::ARC::Signer", "-e", "1"],
        capture_output=True,
        timeout=60,
    )
    return probe.returncode == 0


def _perl(*args: str, stdin: bytes) -> bytes:
    if not _perl_ok():
        unavailable("Mail::DKIM's ARC modules not found; apt-get install libmail-dkim-perl")
    out = subprocess.run(
        [require("perl"), str(SCRIPT), *args], input=stdin, capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


# --- the three verifiers: "pass", "fail" or "none" ---


def verify_dkimd(message: bytes, keys: Keys) -> str:
    return _dkimd_chain(message, keys).state.value


def _dkimd_chain(message: bytes, keys: Keys) -> ArcResult:
    headers, offset = split_message(message)
    v = ArcVerifier(headers, ArcVerifyOptions(now=NOW + 60))
    for name in v.key_queries():
        found = keys.records.get(name)
        status = TxtStatus.OK if found else TxtStatus.NXDOMAIN
        v.provide_key(name, TxtResult(name, status, (found,) if found else ()))
    v.feed_body(message[offset:])
    return v.result()


def verify_dkimpy(message: bytes, keys: Keys) -> str:
    records = keys.records
    dkim = _dkimpy()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip(".").lower(), b"")

    cv, _results, _reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
    return (cv or b"fail").decode()


def verify_perl(message: bytes, keys: Keys) -> str:
    out = _perl("verify", str(keys.dir / "dns.txt"), stdin=message).decode()
    return out.split()[0]


VERIFIERS: dict[str, Callable[[bytes, Keys], str]] = {
    "dkimd": verify_dkimd,
    "dkimpy": verify_dkimpy,
    "perl": verify_perl,
}


# --- the three sealers ---


def hop(impl: str, n: int, message: bytes, keys: Keys, body_canon: str = "relaxed") -> bytes:
    """Hop `n` (domain hopN.example, authserv-id mx.hopN.example) receives and seals.
    `body_canon`: the AMS body canonicalization dkimd uses (the milter picks simple when the
    DKIM signer hashes the body simple, to share that hash)."""
    srv = f"mx.hop{n}.example"
    domain = f"hop{n}.example"
    cv = VERIFIERS[impl](message, keys)
    received = f"Authentication-Results: {srv}; spf=pass smtp.mailfrom=origin.example; arc={cv}\r\n"
    message = received.encode() + message
    if impl == "dkimd":
        headers, offset = split_message(message)
        chain = _dkimd_chain(message, keys)
        request = SealRequest(domain, "arc", keys.ours, srv, timestamp=NOW, body_canon=body_canon)
        sealer = ArcSealer(request)
        sealer.feed_body(message[offset:])
        fields = sealer.seal(
            headers, chain, f"spf=pass smtp.mailfrom=origin.example; {arc_ar_item(chain)}"
        )
        assert fields, sealer.refusal
        return b"".join(f.raw + b"\r\n" for f in fields) + message
    if impl == "dkimpy":
        dkim = _dkimpy()
        new = dkim.arc_sign(message, b"arc", domain.encode(), keys.pem, srv.encode(), timestamp=NOW)
        assert new, "dkimpy did not seal"
        return b"".join(new) + message
    directory = keys.dir
    return _perl(
        "seal",
        str(directory / "dns.txt"),
        str(directory / "key.pem"),
        domain,
        "arc",
        srv,
        str(NOW),
        stdin=message,
    )


def chain(impls: tuple[str, ...], keys: Keys, body_canon: str = "relaxed") -> bytes:
    message = MESSAGE
    for n, impl in enumerate(impls, start=1):
        message = hop(impl, n, message, keys, body_canon)
    return message


CHAINS = [
    *((i,) for i in IMPLEMENTATIONS),
    *itertools.product(IMPLEMENTATIONS, repeat=2),
    *((i, i, i) for i in IMPLEMENTATIONS),
    *itertools.permutations(IMPLEMENTATIONS),
]


@pytest.mark.parametrize("impls", CHAINS, ids=lambda c: "-".join(c))
def test_chain_verifies_everywhere(impls: tuple[str, ...], keys: Keys) -> None:
    message = chain(impls, keys)
    assert message.count(b"ARC-Seal:") == len(impls)
    assert {name: v(message, keys) for name, v in VERIFIERS.items()} == dict.fromkeys(
        VERIFIERS, "pass"
    )


@pytest.mark.parametrize(
    "impls", list(itertools.product(IMPLEMENTATIONS, repeat=2)), ids=lambda c: "-".join(c)
)
def test_tampered_body_fails_everywhere(impls: tuple[str, ...], keys: Keys) -> None:
    message = chain(impls, keys).replace(b"Meet at  noon.", b"Meet at  dawn.")
    assert {name: v(message, keys) for name, v in VERIFIERS.items()} == dict.fromkeys(
        VERIFIERS, "fail"
    )


@pytest.mark.parametrize(
    "kind", [b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results"]
)
@pytest.mark.parametrize(
    "impls", [("dkimd", "perl"), ("perl", "dkimpy"), ("dkimpy", "dkimd")], ids=lambda c: "-".join(c)
)
def test_removed_arc_header_fails_everywhere(
    impls: tuple[str, ...], kind: bytes, keys: Keys
) -> None:
    message = chain(impls, keys)
    headers, offset = split_message(message)
    # Remove the oldest field of that kind (instance 1): the chain has a hole at its root.
    index = max(i for i, h in enumerate(headers) if h.name == kind)
    kept = headers[:index] + headers[index + 1 :]
    broken = b"".join(h.raw + b"\r\n" for h in kept) + b"\r\n" + message[offset:]
    assert {name: v(broken, keys) for name, v in VERIFIERS.items()} == dict.fromkeys(
        VERIFIERS, "fail"
    )


@pytest.mark.parametrize(
    "impls",
    [("dkimd",), ("dkimd", "perl"), ("dkimpy", "dkimd"), ("dkimd", "dkimpy", "dkimd")],
    ids=lambda c: "-".join(c),
)
def test_ams_over_a_simple_body_verifies_everywhere(impls: tuple[str, ...], keys: Keys) -> None:
    """c=relaxed/simple, what dkimd's AMS says when it shares a simple body hash with the
    DKIM signer (docs/arc.md, Cost); a changed body still fails everywhere."""
    message = chain(impls, keys, body_canon="simple")
    assert b"c=relaxed/simple" in message
    assert {name: v(message, keys) for name, v in VERIFIERS.items()} == dict.fromkeys(
        VERIFIERS, "pass"
    )
    broken = message.replace(b"Meet at  noon.", b"Meet at  dawn.")
    assert {name: v(broken, keys) for name, v in VERIFIERS.items()} == dict.fromkeys(
        VERIFIERS, "fail"
    )
    if impls[-1] == "dkimd":
        # Simple body canonicalization: even a space more or less breaks the newest AMS.
        spaced = message.replace(b"Meet at  noon.", b"Meet at noon.")
        assert {name: v(spaced, keys) for name, v in VERIFIERS.items()} == dict.fromkeys(
            VERIFIERS, "fail"
        )
