"""The benchmark cases: what each one sends, to whom, how hard, and what must come back."""

from __future__ import annotations

from dataclasses import dataclass

INTERNAL_CLIENT = "127.0.0.1"  # in InternalHosts: the milter signs
EXTERNAL_CLIENT = "192.0.2.77"  # TEST-NET-1, not internal: the milter verifies

MILTERS = ("dkimd", "opendkim")


@dataclass(frozen=True)
class Case:
    group: str  # cases of one group share a table in RESULTS.md
    title: str  # the table's heading
    conf: str  # which generated opendkim.conf: rsa | ed25519 | rsa-workers2
    message: str  # 4k | 1m | big | signed-4k
    client: str
    concurrency: int
    messages: int
    quick_messages: int
    expect_header: str  # one of these must be added per message
    milters: tuple[str, ...] = MILTERS
    milter_cpus: str = "0"
    measure_rss: bool = False
    # Messages per milter connection: Postfix keeps one for a whole SMTP session.
    per_connection: int = 1
    # Also measured on a one-worker dkimd, runs alternating (the Workers cases).
    baseline: bool = False
    # Diagnostic only: the driver ACKs at once (TCP_QUICKACK), which Postfix does not.
    quickack: bool = False

    def count(self, quick: bool) -> int:
        return self.quick_messages if quick else self.messages


SIGN = "DKIM-Signature"
AR = "Authentication-Results"

CASES: tuple[Case, ...] = (
    *(
        Case(
            "sign-4k",
            "Sign a 4 KB message (RSA-2048, relaxed/relaxed, internal client)",
            "rsa",
            "4k",
            INTERNAL_CLIENT,
            c,
            n,
            q,
            SIGN,
        )
        for c, n, q in ((1, 200, 5), (8, 1500, 16), (64, 4000, 64))
    ),
    *(
        Case(
            "sign-4k-reuse",
            "Sign a 4 KB message, 10 messages per milter connection (one SMTP session "
            "carrying several messages; latency from MAIL to the final reply)",
            "rsa",
            "4k",
            INTERNAL_CLIENT,
            c,
            n,
            q,
            SIGN,
            per_connection=10,
        )
        for c, n, q in ((1, 300, 10), (64, 4000, 64))
    ),
    *(
        Case(
            "verify-4k",
            "Verify an OpenDKIM-signed 4 KB message (external client 192.0.2.77)",
            "rsa",
            "signed-4k",
            EXTERNAL_CLIENT,
            c,
            n,
            q,
            AR,
        )
        for c, n, q in ((8, 1500, 16), (64, 4000, 64))
    ),
    Case(
        "sign-1m",
        "Sign a message with a 1 MB body (RSA-2048, relaxed/relaxed)",
        "rsa",
        "1m",
        INTERNAL_CLIENT,
        8,
        300,
        8,
        SIGN,
    ),
    Case(
        "sign-big",
        "Sign a message with a 50 MB body: memory",
        "rsa",
        "big",
        INTERNAL_CLIENT,
        1,
        3,
        1,
        SIGN,
        measure_rss=True,
    ),
    Case(
        "ed25519",
        "Sign a 4 KB message with Ed25519 (ed25519-sha256, RFC 8463)",
        "ed25519",
        "4k",
        INTERNAL_CLIENT,
        64,
        4000,
        64,
        SIGN,
    ),
    Case(
        "nagle",
        "Diagnostic: OpenDKIM at concurrency 1 with TCP_QUICKACK on the driver's socket",
        "rsa",
        "4k",
        INTERNAL_CLIENT,
        1,
        200,
        5,
        SIGN,
        milters=("opendkim",),
        quickack=True,
    ),
    # Each against a one-worker dkimd (rsa.conf, CPU 0) measured in the same rotation.
    Case(
        "workers",
        "dkimd multi-core: `Workers 2` on CPUs 0-1",
        "rsa-workers2",
        "4k",
        INTERNAL_CLIENT,
        64,
        4000,
        64,
        SIGN,
        milters=("dkimd",),
        milter_cpus="0,1",
        baseline=True,
    ),
    Case(
        "workers",
        "dkimd multi-core: `Workers 2` on CPUs 0-1",
        "rsa-workers2",
        "1m",
        INTERNAL_CLIENT,
        8,
        300,
        8,
        SIGN,
        milters=("dkimd",),
        milter_cpus="0,1",
        baseline=True,
    ),
)
