"""`dkimd verify`: verify the DKIM signatures and the ARC chain of a message read from stdin.

Prints one line per verified signature, an Authentication-Results field with the DKIM results
and one with the ARC result (RFC 8617, dkimd.arc). The body streams
through the verifier in 64 KB chunks; the key lookups run concurrently with asyncio (the only
async code here, at the edge, around the sans-IO `Verifier`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import BinaryIO

from dkimd.arc import MAX_INSTANCES, ArcVerifier, ArcVerifyOptions, arc_ar_item
from dkimd.dkim import (
    AR_FIELD_NAME,
    BodyHashSet,
    DkimError,
    LineEndingNormalizer,
    MessageSplitter,
    SignatureResult,
    Verifier,
    VerifyOptions,
    authentication_results_value,
)
from dkimd.dns.base import TxtLookup
from dkimd.dns.testdata import RecordsFileError, TestDnsFile

CHUNK = 64 * 1024

EPILOG = """\
Input may use LF or CRLF line ends; the output uses the same.

--dns-file takes, mixed freely, one record per line as NAME RECORD (OpenDKIM's
TestDNSData form: the first word is the name, the rest of the line the record text,
# starts a comment):
  mail._domainkey.example.com v=DKIM1; k=rsa; p=MIIBIjANBgkqh...
and TXT records in zone-file form, as `dkimd genkey` and opendkim-genkey write
SELECTOR.txt and `dkimd genzone -F` writes zones (lines inside ( ) are one record):
  mail._domainkey IN TXT ( "v=DKIM1; h=sha256; k=rsa; "
      "p=MIIBIjANBgkqh..." )  ; ----- DKIM key mail for example.com
A relative name such as mail._domainkey gets the domain of a $ORIGIN line above it,
else the one in genkey's "; ----- DKIM key mail for example.com" comment; never the
domain of the message's signature. A line in neither form is an error (FILE:LINE).

Exit status: 0 at least one signature passed (with --arc: the ARC chain passed),
1 none passed (or no signature; with --arc: the chain is none or fail), 2 usage or
input error."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dkimd verify",
        description="Verify the DKIM signatures of a message read from stdin.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--dns-file",
        metavar="FILE",
        help="answer key queries from FILE instead of DNS (formats below)",
    )
    source.add_argument(
        "--nameserver", metavar="IP", action="append", help="DNS server to ask (repeatable)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECS",
        help="give up on a DNS query after SECS seconds (default 5)",
    )
    p.add_argument("--allow-sha1", action="store_true", help="accept rsa-sha1 (RFC 8301 says no)")
    p.add_argument(
        "--max-signatures",
        type=int,
        default=3,
        metavar="N",
        help="verify at most N signatures, top first (default 3); later ones are not reported",
    )
    p.add_argument(
        "--min-key-bits",
        type=int,
        default=1024,
        metavar="BITS",
        help="RSA keys shorter than BITS give dkim=policy (default 1024; under 1024 is always "
        "permerror, RFC 8301)",
    )
    p.add_argument(
        "--body-length",
        choices=("report", "fail"),
        default="report",
        help="content beyond l=: report it (default) or fail the signature",
    )
    p.add_argument(
        "--authserv-id",
        default="localhost",
        metavar="ID",
        help="the authserv-id in the printed Authentication-Results (default localhost)",
    )
    p.add_argument(
        "--arc",
        action="store_true",
        help="let the ARC chain decide the exit status instead of the DKIM signatures",
    )
    p.add_argument(
        "--arc-max-sets",
        type=int,
        default=MAX_INSTANCES,
        metavar="N",
        help=f"a chain of more than N ARC sets fails (default and most {MAX_INSTANCES})",
    )
    p.add_argument("--now", type=int, help=argparse.SUPPRESS)
    return p


def make_lookup(args: argparse.Namespace) -> TxtLookup:
    if args.dns_file:
        return TestDnsFile(args.dns_file)
    from dkimd.dns.resolver import DnsResolver

    return DnsResolver(nameservers=args.nameserver, timeout=args.timeout)


async def fetch_keys(verifier: Verifier, lookup: TxtLookup, arc: ArcVerifier) -> None:
    """Every key the DKIM signatures and the ARC chain need, each name asked once."""
    names = list(dict.fromkeys([*verifier.key_queries(), *arc.key_queries()]))
    answers = await asyncio.gather(*(lookup.lookup_txt(n) for n in names))
    for name, answer in zip(names, answers, strict=True):
        verifier.provide_key(name, answer)
        arc.provide_key(name, answer)


def describe(result: SignatureResult) -> str:
    """One summary line: "dkim=pass d=example.com s=mail a=rsa-sha256 ..." (reason last)."""
    parts = [f"dkim={result.result.value}"]
    for label, value in (
        ("d", result.domain),
        ("i", result.identity),
        ("s", result.selector),
        ("a", result.algorithm),
    ):
        if value is not None:
            parts.append(f"{label}={value}")
    if result.key_bits:
        parts.append(f"bits={result.key_bits}")
    if result.testing:
        parts.append("testing")
    if result.body_length_extra:
        parts.append(f"unsigned-bytes-after-l={result.body_length_extra}")
    if result.reason:
        parts.append(f"reason={result.reason!r}")
    return " ".join(parts).replace("\r", "?").replace("\n", "?")


def run(args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO, lookup: TxtLookup) -> int:
    """Verify the message on `stdin` with keys from `lookup`; the exit status."""
    options = VerifyOptions(
        max_signatures=args.max_signatures,
        allow_sha1=args.allow_sha1,
        min_key_bits=args.min_key_bits,
        body_length=args.body_length,
        now=args.now,
    )
    arc_options = ArcVerifyOptions(max_instances=args.arc_max_sets, now=args.now)
    normalizer = LineEndingNormalizer()
    splitter = MessageSplitter()
    # One body hash for both: the DKIM verifier feeds the set the ARC verifier reads.
    bodies = BodyHashSet()
    verifier: Verifier | None = None
    arc: ArcVerifier | None = None
    while chunk := stdin.read(CHUNK):
        body = splitter.feed(normalizer.feed(chunk))
        if verifier is None and splitter.headers is not None:
            verifier = Verifier(splitter.headers, options, bodies=bodies)
            arc = ArcVerifier(splitter.headers, arc_options, bodies=bodies)
        if body:
            assert verifier is not None
            verifier.feed_body(body)
    tail = splitter.feed(normalizer.flush())
    splitter.finish()
    assert splitter.headers is not None
    if verifier is None or arc is None:
        verifier = Verifier(splitter.headers, options, bodies=bodies)
        arc = ArcVerifier(splitter.headers, arc_options, bodies=bodies)
    if tail:
        verifier.feed_body(tail)
    if verifier.key_queries() or arc.key_queries():
        asyncio.run(fetch_keys(verifier, lookup, arc))
    results = verifier.results()
    chain = arc.result()
    eol = b"\r\n" if normalizer.crlf_input else b"\n"
    lines = [describe(r).encode("ascii", "replace") for r in results]
    # No ATPS check is made here, so no dkim-atps item (the milter writes OpenDKIM's).
    value = authentication_results_value(args.authserv_id, results, atps=None)
    ar = AR_FIELD_NAME + b": " + value
    lines.append(ar.replace(b"\r\n", eol))
    arc_ar = f"{_ar_id(args.authserv_id)}; {arc_ar_item(chain)}".encode("ascii")
    lines.append(AR_FIELD_NAME + b": " + arc_ar)
    stdout.write(eol.join(lines) + eol)
    stdout.flush()
    if args.arc:
        return 0 if chain.passed else 1
    return 0 if any(r.passed for r in results) else 1


def _ar_id(authserv_id: str) -> str:
    """The authserv-id as the DKIM A-R writes it: printable ASCII only."""
    return "".join(c if "!" <= c <= "~" else "?" for c in authserv_id) or "localhost"


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if args.max_signatures < 1:
        sys.stderr.write("dkimd verify: --max-signatures must be at least 1\n")
        return 2
    if not 1 <= args.arc_max_sets <= MAX_INSTANCES:
        sys.stderr.write(f"dkimd verify: --arc-max-sets must be 1 to {MAX_INSTANCES}\n")
        return 2
    return run_with_keys("dkimd verify", args, run)


def run_with_keys(
    prog: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, BinaryIO, BinaryIO, TxtLookup], int],
) -> int:
    """`run` on stdin and stdout with the key source `args` name (--dns-file, or DNS);
    an unreadable key source, a bad message or key and I/O errors exit 2 with one line."""
    try:
        # The key source first: a bad --dns-file is reported before stdin is read.
        lookup = make_lookup(args)
    except OSError as exc:
        sys.stderr.write(f"{prog}: cannot read {args.dns_file}: {exc.strerror or exc}\n")
        return 2
    except RecordsFileError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return 2
    try:
        return run(args, sys.stdin.buffer, sys.stdout.buffer, lookup)
    except DkimError as exc:
        sys.stderr.write(f"{prog}: {exc.reason}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"{prog}: {exc.strerror or exc}\n")
        return 2
