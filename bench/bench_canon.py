"""Body canonicalization + SHA-256 throughput, next to plain hashlib.sha256 on the same data.

    python bench/bench_canon.py [--mb 50] [--chunk 65536] [--repeat 3]

The data is ~50 MB of realistic mail text: quoted-printable and base64 parts, a plain-text part
with doubled spaces, tabs and trailing whitespace, and some runs of empty lines. It is fed in
milter-sized chunks (64 KB by default), as the daemon and the CLI do. Best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import random
import time

from dkimd.dkim.canonicalization import BodyCanonicalizer


def mail_text(size: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    words = (
        b"the quick brown fox jumps over lazy dog meeting agenda invoice attached please "
        b"regards thanks report quarterly review schedule =C3=A9t=C3=A9 caf=C3=A9"
    ).split()
    parts: list[bytes] = []
    total = 0
    while total < size:
        kind = rnd.random()
        if kind < 0.4:  # plain text with irregular whitespace
            line = b" ".join(rnd.choice(words) for _ in range(rnd.randint(4, 14)))
            if rnd.random() < 0.3:
                line = line.replace(b" ", b"  \t", 1)
            if rnd.random() < 0.2:
                line += b"   "
            chunk = line + b"\r\n"
        elif kind < 0.8:  # base64 attachment lines (76 columns)
            chunk = base64.b64encode(os.urandom(57)) + b"\r\n"
        elif kind < 0.95:  # quoted-printable soft-broken lines
            line = b" ".join(rnd.choice(words) for _ in range(10))[:75]
            chunk = line + b"=\r\n"
        else:
            chunk = b"\r\n" * rnd.randint(1, 4)
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


def best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    data = mail_text(args.mb * 1024 * 1024)
    chunks = [data[i : i + args.chunk] for i in range(0, len(data), args.chunk)]
    mb = len(data) / (1024 * 1024)

    def plain() -> None:
        h = hashlib.sha256()
        for c in chunks:
            h.update(c)
        h.digest()

    def canon(name: str) -> None:
        c = BodyCanonicalizer(name, "sha256")
        for chunk in chunks:
            c.update(chunk)
        c.digest()

    rows = [
        ("hashlib.sha256 (no canonicalization)", best(plain, args.repeat)),
        ("simple  + sha256", best(lambda: canon("simple"), args.repeat)),
        ("relaxed + sha256", best(lambda: canon("relaxed"), args.repeat)),
    ]
    print(f"{mb:.1f} MB of mail text, {args.chunk}-byte chunks, best of {args.repeat}")
    print(f"{'':40} {'seconds':>8} {'MB/s':>8} {'vs sha256':>10}")
    base = rows[0][1]
    for label, secs in rows:
        print(f"{label:40} {secs:8.3f} {mb / secs:8.0f} {secs / base:9.2f}x")


if __name__ == "__main__":
    main()
