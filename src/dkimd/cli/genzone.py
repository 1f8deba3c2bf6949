"""`dkimd genzone`: DNS records for every KeyTable key, as opendkim-genzone prints them.

    dkimd genzone [-x CONF] [-o FILE] [-d DOMAIN [-s]] [-D | -F] [-M] [-t TTL] [-u]
                  [-S [-C CONTACT] [-N NS,...] [-r N] [-R N] [-E N] [-T N]] [-v] [DATASET]

The output is byte for byte what Debian's opendkim-genzone 2.11 writes (semicolons
escaped as \\;, 75-column pieces, the same header, SOA and nsupdate layouts), except that
Ed25519 keys get k=ed25519 records (opendkim-genzone cannot read them) and a refile:
KeyTable is accepted. A KeyTable in a database (`dsn:`, `ldap:`, `memcache:`, `redis:`) is
walked whole, each step within the data set's lookup timeout. Exit status: 0, 1 when a
key cannot be loaded or the output cannot be written (or the DATASET given cannot be
read), 64 (EX_USAGE) for a bad command line, 78 for a bad configuration (its KeyTable
cannot be read).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import pwd
import socket
import sys
import time
from collections.abc import Callable

from dkimd.cli.usage import RaisingParser, UsageError
from dkimd.config import KeyTable, open_dataset
from dkimd.config.keytable import KeyTableEntry
from dkimd.dkim.errors import KeyLoadError
from dkimd.dkim.keys import PrivateKey, load_private_key, load_private_key_file
from dkimd.keytools.context import (
    default_config_path,
    every_keytable_entry,
    keytable_place,
    load_tool_config,
    spec_for_entry,
)
from dkimd.keytools.generate import KeyType
from dkimd.keytools.record import SoaOptions, ZoneKey, ZoneOptions, genzone_text

PROG = "dkimd genzone"
EPILOG = """\
Exit status: 0 records written; 1 a key cannot be loaded or the output cannot be
written; 64 bad command line; 78 bad configuration."""
EX_USAGE = 64
EX_CONFIG = 78


def _seconds(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"invalid {name} value")
        return value

    return parse


def build_parser() -> RaisingParser:
    p = RaisingParser(
        prog=PROG,
        description="Print DNS TXT records for the keys in a KeyTable.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-C", dest="contact", metavar="USER@HOST", help="SOA contact address")
    p.add_argument("-d", dest="domain", metavar="DOMAIN", help="only keys for DOMAIN")
    p.add_argument("-D", dest="suffix", action="store_true", help="append ._domainkey to names")
    p.add_argument(
        "-E",
        dest="expire",
        type=_seconds("expire"),
        default=604800,
        metavar="SECS",
        help="with -S: the SOA expire time (default 604800)",
    )
    p.add_argument(
        "-F",
        dest="fqdn",
        action="store_true",
        help="fully qualified names: SELECTOR._domainkey.DOMAIN.",
    )
    p.add_argument("-M", dest="restrict", action="store_true", help="add s=email to records")
    p.add_argument("-N", dest="nameservers", metavar="NS[,NS...]", help="NS records (and SOA host)")
    p.add_argument("-o", dest="output", metavar="FILE", help="write to FILE, not standard output")
    p.add_argument(
        "-r",
        dest="refresh",
        type=_seconds("refresh"),
        default=10800,
        metavar="SECS",
        help="with -S: the SOA refresh time (default 10800)",
    )
    p.add_argument(
        "-R",
        dest="retry",
        type=_seconds("retry"),
        default=1800,
        metavar="SECS",
        help="with -S: the SOA retry time (default 1800)",
    )
    p.add_argument("-s", dest="subdomains", action="store_true", help="with -d: subdomains too")
    p.add_argument("-S", dest="soa", action="store_true", help="write an SOA record first")
    p.add_argument(
        "-t",
        dest="ttl",
        type=_seconds("TTL"),
        default=None,
        metavar="SECS",
        help="TTL written on each TXT record (default: none, the zone's default applies)",
    )
    p.add_argument(
        "-T",
        dest="default_ttl",
        type=_seconds("default TTL"),
        default=86400,
        metavar="SECS",
        help="the SOA default (minimum) TTL with -S, and the TTL of nsupdate records "
        "without -t (default 86400)",
    )
    p.add_argument("-u", dest="nsupdate", action="store_true", help="nsupdate(1) input")
    p.add_argument(
        "-v",
        dest="verbose",
        action="count",
        default=0,
        help="say what is being done on stderr (repeat for more)",
    )
    p.add_argument("-x", dest="config", metavar="CONF", help="opendkim.conf naming the KeyTable")
    p.add_argument("dataset", nargs="?", help="KeyTable data set, e.g. file:/etc/opendkim/KeyTable")
    return p


def _err(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")


def _key_entries(args: argparse.Namespace) -> list[KeyTableEntry] | int:
    """Every KeyTable entry (one in a database is walked), or the exit status: a table
    that cannot be read is 1 when given as DATASET, 78 when named by the configuration
    (a configuration whose KeyTable file cannot be read is one that does not load)."""
    found = _key_table(args)
    if isinstance(found, int):
        return found
    table, where = found
    entries = asyncio.run(every_keytable_entry(table, where, _err))
    if entries is None:
        return 1 if args.dataset is not None else EX_CONFIG
    return entries


def _key_table(args: argparse.Namespace) -> tuple[KeyTable, str] | int:
    """The KeyTable, and where it is named (for messages about it)."""
    if args.dataset is not None:
        dataset, problems = open_dataset(args.dataset, case_insensitive=False, option="KeyTable")
        for problem in problems:
            _err(str(problem))
        if dataset is None:
            return 1
        table, problems = KeyTable.build(dataset)
        for problem in problems:
            _err(str(problem))
        return table, dataset.describe()  # the value may hold a password
    path = args.config or default_config_path()
    if path is None:
        _err("no KeyTable: give a data set or -x CONF")
        return EX_USAGE
    config = load_tool_config(path, _err)
    if config is None:
        return EX_CONFIG
    if config.key_table is None:
        _err(f"{path}: no KeyTable is set")
        return EX_USAGE
    return config.key_table, keytable_place(config)


def _wanted(entry: KeyTableEntry, domain: str | None, subdomains: bool) -> bool:
    if domain is None:
        return True
    have, want = entry.domain.lower(), domain.lower().rstrip(".")
    return have == want or (subdomains and have.endswith("." + want))


def _load(entry: KeyTableEntry, loaded: dict[str | bytes, PrivateKey]) -> PrivateKey:
    """The entry's key; `loaded` remembers keys by file or data for this run. Loading an
    RSA key checks it (tens of ms for 2048 bits), and a fleet's KeyTable often names one
    key file for thousands of domains: each is loaded once."""
    spec = spec_for_entry(entry)
    source: str | bytes | None = spec.key_path if spec.key_path is not None else spec.key_data
    assert source is not None
    key = loaded.get(source)
    if key is None:
        key = load_private_key_file(source) if isinstance(source, str) else load_private_key(source)
        loaded[source] = key
    return key


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        _err(str(exc))
        sys.stderr.write(parser.format_usage())
        return EX_USAGE
    if args.subdomains and args.domain is None:
        _err("subdomain matching requires a domain")
        return EX_USAGE
    table = _key_entries(args)
    if isinstance(table, int):
        return table
    if args.verbose > 0:
        _err("database opened")

    keys: list[ZoneKey] = []
    loaded: dict[str | bytes, PrivateKey] = {}
    for index, entry in enumerate(table):
        if not _wanted(entry, args.domain, args.subdomains):
            # opendkim-genzone says this on every run with -d, verbose or not.
            _err(f"record {index} for '{entry.name}' skipped")
            continue
        if entry.domain == "%":
            _err(
                f"record {index} for '{entry.name}' skipped: its domain is \"%\" (the "
                "sender's), so there is no single name to publish it under"
            )
            continue
        if args.verbose > 1:
            _err(f"record {index} for '{entry.name}' retrieved")
        try:
            key = _load(entry, loaded)
        except KeyLoadError as exc:
            _err(f"key for '{entry.name}' load failed: {exc}")
            return 1
        if args.verbose > 1:
            _err(f"key for '{entry.name}' loaded")
        p = base64.b64encode(key.dns_public_key()).decode("ascii")
        key_type: KeyType = "ed25519" if key.key_type == "ed25519" else "rsa"
        keys.append(ZoneKey(entry.name, entry.domain, entry.selector, key_type, p))

    hostname = socket.gethostname()
    nameservers = [n for n in (args.nameservers or "").split(",") if n]
    soa = None
    if args.soa:
        contact = args.contact or f"{_user_name()}.{hostname}"
        serial = time.strftime("%Y%m%d%H", time.localtime())
        soa = SoaOptions(
            (nameservers or [hostname])[0],
            contact,
            serial,
            args.refresh,
            args.retry,
            args.expire,
            args.default_ttl,
        )
    text = genzone_text(
        keys,
        ZoneOptions(args.suffix, args.fqdn, args.restrict, args.ttl, args.nsupdate),
        program=PROG,
        generated_at=time.ctime(),
        only_domain=args.domain,
        soa=soa,
        nameservers=nameservers,
        nsupdate_server=(nameservers or [hostname])[0],
        nsupdate_default_ttl=args.default_ttl,
    )
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            with open(args.output, "w", encoding="ascii") as fh:
                fh.write(text)
        except OSError as exc:
            _err(f"{args.output}: fopen(): {exc.strerror or exc}")
            return 1
    if args.verbose > 0:
        plural = "" if len(keys) == 1 else "s"
        sys.stdout.write(f"{PROG}: {len(keys)} record{plural} written\n")
    return 0


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "hostmaster"  # what opendkim-genzone falls back to
