"""`dkimd seal`: add the next ARC set (RFC 8617) to a message read from stdin.

The message's DKIM signatures and ARC chain are verified first (keys from --dns-file or
DNS), as a forwarder does before it seals: the new ARC-Authentication-Results records the
`--ar` text, or else the DKIM results, and always the arc= result; the ARC-Seal carries that
chain state in cv=. The body streams through one shared hash in 64 KB chunks; the raw input is
kept once, to be written after the new set.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import BinaryIO

from dkimd.arc import (
    DEFAULT_AMS_HEADERS,
    ArcSealer,
    ArcVerifier,
    ArcVerifyOptions,
    SealRequest,
    arc_ar_item,
)
from dkimd.cli.verify import fetch_keys, run_with_keys
from dkimd.dkim import (
    BodyHashSet,
    LineEndingNormalizer,
    MessageSplitter,
    Verifier,
    VerifyOptions,
    b_prefixes,
    format_result,
    load_private_key_file,
)
from dkimd.dns.base import TxtLookup

CHUNK = 64 * 1024

EPILOG = """\
Input may use LF or CRLF line ends; the output uses the same. --dns-file takes the
formats `dkimd verify --help` describes. Exit status: 0 sealed, 1 not sealed (the
newest ARC-Seal already says cv=fail, or the chain has 50 sets; the message is written
unchanged and the reason goes to stderr), 2 usage or input error."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dkimd seal",
        description="Add the next ARC set to a message read from stdin; write it to stdout.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-d", "--domain", required=True, help="sealing domain (d=)")
    p.add_argument("-s", "--selector", required=True, help="selector (s=)")
    p.add_argument("-k", "--key", required=True, metavar="KEYFILE", help="private key file")
    p.add_argument("--authserv-id", required=True, metavar="ID", help="authserv-id of the new AAR")
    p.add_argument(
        "--ar",
        metavar="TEXT",
        help="results the AAR records, e.g. 'spf=pass smtp.mailfrom=example.com' "
        "(default: the DKIM results); the arc= result is added to it",
    )
    p.add_argument("--timestamp", type=int, help="t= of both signatures (default: now)")
    p.add_argument(
        "-H",
        "--headers",
        metavar="NAME:NAME...",
        help="header fields the ARC-Message-Signature signs (default: a list for lists "
        "and forwarders, see docs/arc.md)",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--dns-file", metavar="FILE", help="answer key queries from FILE")
    source.add_argument(
        "--nameserver", metavar="IP", action="append", help="DNS server to ask (repeatable)"
    )
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECS", help=argparse.SUPPRESS)
    p.add_argument("--now", type=int, help=argparse.SUPPRESS)
    return p


def run(args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO, lookup: TxtLookup) -> int:
    key = load_private_key_file(args.key)
    signed = DEFAULT_AMS_HEADERS
    if args.headers:
        signed = tuple(h.strip() for h in args.headers.split(":") if h.strip())
    request = SealRequest(
        args.domain,
        args.selector,
        key,
        args.authserv_id,
        signed_headers=signed,
        timestamp=args.timestamp,
    )
    normalizer = LineEndingNormalizer()
    splitter = MessageSplitter()
    bodies = BodyHashSet()
    sealer = ArcSealer(request, bodies=bodies)
    verifier: Verifier | None = None
    arc: ArcVerifier | None = None
    raw: list[bytes] = []

    def start() -> tuple[Verifier, ArcVerifier]:
        assert splitter.headers is not None
        return (
            Verifier(splitter.headers, VerifyOptions(now=args.now), bodies=bodies),
            ArcVerifier(splitter.headers, ArcVerifyOptions(now=args.now), bodies=bodies),
        )

    while chunk := stdin.read(CHUNK):
        raw.append(chunk)
        body = splitter.feed(normalizer.feed(chunk))
        if verifier is None and splitter.headers is not None:
            verifier, arc = start()
        if body:
            bodies.update(body)
    tail = splitter.feed(normalizer.flush())
    splitter.finish()
    assert splitter.headers is not None
    if verifier is None or arc is None:
        verifier, arc = start()
    if tail:
        bodies.update(tail)
    if verifier.key_queries() or arc.key_queries():
        asyncio.run(fetch_keys(verifier, lookup, arc))
    chain = arc.result()
    if args.ar is not None:
        recorded = args.ar.strip().rstrip(";")
    else:
        results = verifier.results()
        prefixes = b_prefixes(results)
        recorded = "; ".join(
            format_result(r, p, None) for r, p in zip(results, prefixes, strict=True)
        )
    text = "; ".join(t for t in (recorded, arc_ar_item(chain)) if t)
    fields = sealer.seal(splitter.headers, chain, text)
    crlf = bool(normalizer.crlf_input)
    if not fields:
        sys.stderr.write(f"dkimd seal: not sealed: {sealer.refusal}\n")
    for f in fields:
        out = f.raw + b"\r\n"
        stdout.write(out if crlf else out.replace(b"\r\n", b"\n"))
    for chunk in raw:
        stdout.write(chunk)
    stdout.flush()
    return 0 if fields else 1


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    return run_with_keys("dkimd seal", args, run)
