"""What ARC costs per message, engine only (no milter, no DNS): DKIM signing alone against
signing plus sealing over one shared body hash, and DKIM verification alone against DKIM plus
a two-set ARC chain. RSA-2048 and Ed25519; 100 KB bodies; best of 3.

Then, with DKIM Canonicalization simple/simple (OpenDKIM's default), sealing with a relaxed
AMS body (a second body pass, what dkimd did before) against an AMS that shares the signer's
simple body hash (what dkimd.arc_filter chooses now). And the private-key operations and
body passes per message, counted on the real key (a wrapper that counts its sign() calls).

    python bench/bench_arc.py [--messages N]
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dkimd.arc import ArcResult, ArcSealer, ArcVerifier, ChainState, SealRequest
from dkimd.dkim import (
    BodyHashSet,
    HeaderField,
    PrivateKey,
    Signer,
    SigningRequest,
    Verifier,
)
from dkimd.dns.base import TxtResult, TxtStatus

HEADERS = [
    HeaderField(b"From", b" Alice <alice@example.com>"),
    HeaderField(b"To", b" list@lists.example"),
    HeaderField(b"Subject", b" measured"),
    HeaderField(b"Date", b" Sat, 05 Dec 2026 03:00:00 +0000"),
    HeaderField(b"Message-ID", b" <bench@example.com>"),
]
BODY = b"A line of mail text that is long enough to look like one.  \r\n" * 1700  # ~100 KB


def sign(
    key: PrivateKey, seal: bool, dkim_canon: str = "relaxed", ams_body: str = "relaxed"
) -> list[HeaderField]:
    return signed(key, seal, dkim_canon, ams_body)[0]


def signed(
    key: PrivateKey, seal: bool, dkim_canon: str = "relaxed", ams_body: str = "relaxed"
) -> tuple[list[HeaderField], int]:
    """The message signed (and sealed), and how many body hashes that computed."""
    bodies = BodyHashSet()
    request = SigningRequest(
        "example.com", "s", key, header_canon=dkim_canon, body_canon=dkim_canon
    )
    signer = Signer(request, bodies=bodies)
    sealer = (
        ArcSealer(
            SealRequest("example.com", "s", key, "mx.example.com", body_canon=ams_body),
            bodies=bodies,
        )
        if seal
        else None
    )
    signer.feed_body(BODY)
    fields = [signer.sign(HEADERS), *HEADERS]
    if sealer is not None:
        fields = [*sealer.seal(fields, ArcResult(ChainState.NONE), "dkim=pass; arc=none"), *fields]
    return fields, len(bodies)


def verify(fields: list[HeaderField], record: bytes, arc: bool) -> None:
    bodies = BodyHashSet()
    v = Verifier(fields, bodies=bodies)
    a = ArcVerifier(fields, bodies=bodies) if arc else None
    names = set(v.key_queries()) | (set(a.key_queries()) if a else set())
    for n in names:
        answer = TxtResult(n, TxtStatus.OK, (record,))
        v.provide_key(n, answer)
        if a:
            a.provide_key(n, answer)
    v.feed_body(BODY)
    assert v.results()[0].passed
    if a:
        assert a.result().passed


def best(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n)
    return min(times) * 1000


def chain_of_two(key: PrivateKey) -> list[HeaderField]:
    """The signed, sealed message with a second set on top."""
    one = sign(key, True)
    bodies = BodyHashSet()
    sealer = ArcSealer(SealRequest("example.com", "s", key, "mx2.example.com"), bodies=bodies)
    bodies.update(BODY)
    chain = ArcResult(ChainState.PASS, highest=1, last_cv=ChainState.PASS)
    return [*sealer.seal(one, chain, "arc=pass"), *one]


def measure(label: str, key: PrivateKey, n: int) -> str:
    record = f"v=DKIM1; k={key.key_type}; p=".encode() + base64.b64encode(key.dns_public_key())
    chain = chain_of_two(key)
    plain = best(lambda: sign(key, False), n)
    sealed = best(lambda: sign(key, True), n)
    dkim_only = best(lambda: verify(chain, record, False), n)
    with_arc = best(lambda: verify(chain, record, True), n)
    return (
        f"{label:9} sign {plain:6.2f}  sign+seal {sealed:6.2f}"
        f"   verify dkim {dkim_only:6.2f}  dkim+arc(2 sets) {with_arc:6.2f}"
    )


def measure_simple(label: str, key: PrivateKey, n: int) -> str:
    two = best(lambda: sign(key, True, "simple", "relaxed"), n)
    one = best(lambda: sign(key, True, "simple", "simple"), n)
    return (
        f"{label:9} DKIM simple/simple + seal: AMS relaxed body (2 body passes) {two:6.2f}"
        f"  AMS simple body (shared) {one:6.2f}"
    )


class _CountingKey:
    """The real cryptography key; counts sign() calls."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.calls = 0

    def sign(self, *args: object) -> bytes:
        self.calls += 1
        return self.real.sign(*args)  # type: ignore[attr-defined,no-any-return]


def counts(key: PrivateKey) -> str:
    """Private-key operations and body hashes per message: sign, seal (a verified message
    sealed), sign+seal."""
    counting = _CountingKey(key._key)
    key._key = counting  # type: ignore[assignment]
    rows = []
    try:
        for what, run in (
            ("sign", lambda: signed(key, False)[1]),
            ("seal", lambda: seal_only(key)),
            ("sign+seal", lambda: signed(key, True)[1]),
        ):
            counting.calls = 0
            passes = run()
            rows.append(f"{what} {counting.calls} signatures, {passes} body hash")
    finally:
        key._key = counting.real  # type: ignore[assignment]
    return "; ".join(rows)


def seal_only(key: PrivateKey) -> int:
    """Seal a message that arrives signed: the AMS shares the verifier's body hash."""
    bodies = BodyHashSet()
    sealer = ArcSealer(SealRequest("example.com", "s", key, "mx.example.com"), bodies=bodies)
    bodies.update(BODY)
    sealer.seal(HEADERS, ArcResult(ChainState.NONE), "dkim=pass; arc=none")
    return len(bodies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    n = parser.parse_args().messages
    print(f"{len(BODY)} byte body, {n} messages, best of 3, ms per message")
    rsa_key = PrivateKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ed_key = PrivateKey(ed25519.Ed25519PrivateKey.generate())
    print(measure("rsa-2048", rsa_key, n))
    print(measure("ed25519", ed_key, n))
    print(measure_simple("rsa-2048", rsa_key, n))
    print(measure_simple("ed25519", ed_key, n))
    print("per message:", counts(rsa_key))


if __name__ == "__main__":
    main()
