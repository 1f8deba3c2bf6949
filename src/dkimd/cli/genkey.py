"""`dkimd genkey`: make a DKIM key pair and its DNS record, as opendkim-genkey does.

Same flags, same file names (SELECTOR.private, SELECTOR.txt), same .txt layout byte for
byte, same exit status (0, or 1 on any failure). Differences, all on the safe side:
existing files are not overwritten without --force; the private key is mode 0600 even
under a permissive umask and is written without ever existing half-written; keys
under 512 bits are refused; notes and selectors that would corrupt the record are refused.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dkimd import __version__
from dkimd.cli.usage import RaisingParser, UsageError
from dkimd.keytools.generate import (
    RSA_MIN_BITS,
    RSA_RECOMMENDED_MIN_BITS,
    GeneratedKey,
    KeyGenerationError,
    generate_ed25519,
    generate_rsa,
)
from dkimd.keytools.keyfile import NewFile, install_files
from dkimd.keytools.names import name_problem
from dkimd.keytools.record import KeyRecordOptions, RecordError, genkey_txt

PROG = "dkimd genkey"
# opendkim-genkey's defaults on Debian: 2048 bits (upstream says 1024), h=sha256 only,
# domain "localhost", selector "default".
DEFAULT_BITS = 2048
DEFAULT_DOMAIN = "localhost"
DEFAULT_SELECTOR = "default"
DEFAULT_HASHES = "sha256"


def build_parser() -> RaisingParser:
    p = RaisingParser(
        prog=PROG,
        add_help=False,  # -h means --hash-algorithms, as in opendkim-genkey
        description="Generate a DKIM private key and the DNS TXT record publishing its "
        "public half (SELECTOR.private and SELECTOR.txt).",
    )
    p.add_argument(
        "-a",
        "--append-domain",
        dest="append",
        action="store_true",
        default=False,
        help="append the domain to the record's owner name (NAME._domainkey.DOMAIN.)",
    )
    p.add_argument(
        "--noappend-domain",
        "--no-append-domain",
        dest="append",
        action="store_false",
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "-b",
        "--bits",
        type=int,
        default=None,
        metavar="N",
        help=f"RSA key size in bits (default {DEFAULT_BITS}; ignored with --ed25519)",
    )
    p.add_argument(
        "-D",
        "--directory",
        default=".",
        metavar="PATH",
        help="write the files into PATH (default: the current directory)",
    )
    p.add_argument(
        "-d",
        "--domain",
        default=DEFAULT_DOMAIN,
        metavar="NAME",
        help=f"signing domain, used in the comment and with -a (default {DEFAULT_DOMAIN})",
    )
    p.add_argument(
        "--ed25519",
        action="store_true",
        help="make an Ed25519 key (RFC 8463, k=ed25519) instead of RSA",
    )
    p.add_argument(
        "-h",
        "--hash-algorithms",
        default=DEFAULT_HASHES,
        metavar="LIST",
        help=f"h= value, e.g. sha256 or sha1:sha256 (default {DEFAULT_HASHES}; "
        "an empty LIST leaves h= out)",
    )
    p.add_argument("--help", action="store_true", help="show this help and exit")
    p.add_argument("-n", "--note", default=None, metavar="TEXT", help='add n="TEXT" to the record')
    p.add_argument(
        "-r",
        "--restrict",
        action="store_true",
        default=False,
        help="restrict the key to e-mail (s=email)",
    )
    p.add_argument(
        "--norestrict",
        "--no-restrict",
        dest="restrict",
        action="store_false",
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "-s",
        "--selector",
        default=DEFAULT_SELECTOR,
        metavar="NAME",
        help=f"selector, also the file name stem (default {DEFAULT_SELECTOR})",
    )
    p.add_argument(
        "-S",
        dest="nosubdomains",
        action="store_true",
        default=False,
        help="forbid signing subdomains with this key (t=s)",
    )
    p.add_argument(
        "--subdomains", dest="subdomains", action="store_true", default=True, help=argparse.SUPPRESS
    )
    p.add_argument(
        "--nosubdomains",
        "--no-subdomains",
        dest="subdomains",
        action="store_false",
        help="same as -S",
    )
    p.add_argument(
        "-t",
        "--testmode",
        action="store_true",
        default=False,
        help="mark the key as in test mode (t=y)",
    )
    p.add_argument(
        "--notestmode",
        "--no-testmode",
        dest="testmode",
        action="store_false",
        help=argparse.SUPPRESS,
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="say what is being done")
    p.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace SELECTOR.private and SELECTOR.txt if they exist",
    )
    return p


def _say(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        _say(str(exc))
        sys.stderr.write(parser.format_usage())
        return 1  # opendkim-genkey exits 1 on a bad command line, not argparse's 2
    if args.help:
        sys.stdout.write(parser.format_help())
        return 0
    if args.version:
        sys.stdout.write(f"{PROG} v{__version__}\n")
        return 0

    problems = [name_problem("selector", args.selector)]
    if args.domain or args.append:
        problems.append(name_problem("domain", args.domain))
    for problem in problems:
        if problem is not None:
            _say(problem)
            return 1
    try:
        options = KeyRecordOptions(
            key_type="ed25519" if args.ed25519 else "rsa",
            hash_algorithms=args.hash_algorithms or None,
            note=args.note,
            restrict_email=args.restrict,
            subdomains=args.subdomains and not args.nosubdomains,
            testing=args.testmode,
        )
    except RecordError as exc:
        _say(str(exc))
        return 1
    for unknown in options.unknown_hash_algorithms:
        _say(
            f"WARNING: {unknown!r} is not a DKIM hash algorithm (sha1, sha256); "
            "verifiers will ignore it"
        )

    directory = Path(args.directory)
    if not directory.is_dir():
        _say(f"{directory}: not a directory")
        return 1
    private_path = directory / f"{args.selector}.private"
    txt_path = directory / f"{args.selector}.txt"
    if not args.force:
        # Check both before generating anything, so a refusal leaves no new files.
        for path in (private_path, txt_path):
            if os.path.lexists(path):
                _say(f"{path} exists; not overwriting it (use --force to replace it)")
                return 1

    if args.verbose >= 1:
        _say("generating private key")
    try:
        key = _generate(args.ed25519, args.bits, args.verbose)
    except KeyGenerationError as exc:
        _say(str(exc))
        return 1

    if args.verbose:
        _say("extracting public key")
    text = genkey_txt(
        args.selector, args.domain, key.public_key_b64, options, append_domain=args.append
    )
    files = [
        NewFile(private_path, key.private_pem, 0o600, exact_mode=True),
        # The record is public: ordinary 0644 less the umask, so the admin (or a
        # DNS-updating job) can read it without root.
        NewFile(txt_path, text.encode("ascii"), 0o644, exact_mode=False),
    ]
    try:
        install_files(files, force=args.force)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _say(f"{where}{exc.strerror or exc}")
        return 1
    if args.verbose:
        _say(f"private key written to {private_path}")
        _say(f"DNS TXT record written to {txt_path}")
    return 0


def _generate(ed25519: bool, bits: int | None, verbose: int) -> GeneratedKey:
    if ed25519:
        if bits is not None and verbose:
            _say("--bits does not apply to Ed25519 keys; ignored")
        return generate_ed25519()
    size = DEFAULT_BITS if bits is None else bits
    if RSA_MIN_BITS <= size < RSA_RECOMMENDED_MIN_BITS:
        # Same words as opendkim-genkey, so log scrapers keep working.
        _say("WARNING: RFC6376 advises minimum 1024-bit keys")
    return generate_rsa(size)
