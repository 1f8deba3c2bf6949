"""`dkimd sign`: sign a message read from stdin, write it with DKIM-Signature prepended.

The body is canonicalized and hashed while stdin is read in 64 KB chunks; the raw input is kept
once (it has to be written after the signature, which needs the whole body first).
"""

from __future__ import annotations

import argparse
import sys
from typing import BinaryIO

from dkimd.dkim import (
    DkimError,
    HeaderField,
    LineEndingNormalizer,
    MessageSplitter,
    Signer,
    SigningRequest,
    load_private_key_file,
)

CHUNK = 64 * 1024

EPILOG = """\
Input may use LF or CRLF line ends; the output uses the same. Exit status: 0 signed,
2 usage or input error (bad key, bad message, bad option)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dkimd sign",
        description="Sign a message read from stdin; write it to stdout with a DKIM-Signature.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-d", "--domain", required=True, help="signing domain (d=)")
    p.add_argument("-s", "--selector", required=True, help="selector (s=)")
    p.add_argument("-k", "--key", required=True, metavar="KEYFILE", help="private key file")
    p.add_argument(
        "-c",
        "--canonicalization",
        default="relaxed/relaxed",
        metavar="HEADER/BODY",
        help="simple or relaxed for header/body (default relaxed/relaxed)",
    )
    p.add_argument(
        "-a",
        "--algorithm",
        choices=("rsa-sha256", "ed25519-sha256"),
        help="signature algorithm (default: from the key type)",
    )
    p.add_argument("-i", "--identity", help="agent or user identifier (i=)")
    p.add_argument("-l", "--body-length", action="store_true", help="add a body length (l=)")
    p.add_argument("-x", "--ttl", type=int, metavar="SECONDS", help="expire after (adds x=)")
    p.add_argument(
        "-H",
        "--headers",
        metavar="NAME:NAME...",
        help="header fields to sign (default: OpenDKIM's SignHeaders list)",
    )
    p.add_argument("-t", "--timestamp", type=int, help=argparse.SUPPRESS)
    return p


def _eol(data: bytes, crlf: bool) -> bytes:
    return data if crlf else data.replace(b"\r\n", b"\n")


def run(args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO) -> int:
    header_canon, _, body_canon = args.canonicalization.lower().partition("/")
    key = load_private_key_file(args.key)
    request = SigningRequest(
        domain=args.domain,
        selector=args.selector,
        key=key,
        header_canon=header_canon,
        body_canon=body_canon or "simple",
        signed_headers=[h.strip() for h in args.headers.split(":")] if args.headers else None,
        identity=args.identity,
        body_length=args.body_length,
        ttl=args.ttl,
        timestamp=args.timestamp,
        algorithm=args.algorithm,
    )
    signer = Signer(request)
    normalizer = LineEndingNormalizer()
    splitter = MessageSplitter()
    raw: list[bytes] = []
    while chunk := stdin.read(CHUNK):
        raw.append(chunk)
        body = splitter.feed(normalizer.feed(chunk))
        if body:
            signer.feed_body(body)
    tail = splitter.feed(normalizer.flush())
    if tail:
        signer.feed_body(tail)
    splitter.finish()
    assert splitter.headers is not None
    field: HeaderField = signer.sign(splitter.headers)
    stdout.write(_eol(field.raw + b"\r\n", bool(normalizer.crlf_input)))
    for chunk in raw:
        stdout.write(chunk)
    stdout.flush()
    return 0


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    try:
        return run(args, sys.stdin.buffer, sys.stdout.buffer)
    except DkimError as exc:
        sys.stderr.write(f"dkimd sign: {exc.reason}\n")
        return 2
