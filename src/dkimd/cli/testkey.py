"""`dkimd testkey`: check keys against their DNS records, as opendkim-testkey does.

    dkimd testkey [-x CONF] [-d DOMAIN -s SELECTOR [-k KEYFILE]] [-v...]

Without -d/-s/-k and with a KeyTable in the configuration, every KeyTable key is tested
(a KeyTable in a database, `dsn:`, `ldap:`, ..., is read whole for it).
Output and exit codes follow opendkim-testkey: silent on success unless -v (-vvv prints
"key OK"); 65 (EX_DATAERR) when a key does not match its record, 69 (EX_UNAVAILABLE)
when the record cannot be fetched or used, 71 (EX_OSERR) when the key file cannot be
read, 78 (EX_CONFIG) for a bad command line or configuration.

One difference on purpose: when walking the KeyTable, opendkim-testkey exits 0 even when
keys fail; dkimd exits with the status of the first failing key, and prints the
"N keys checked" summary whenever a key fails, so cron mails and scripts notice.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from dkimd.cli.usage import RaisingParser, UsageError
from dkimd.config import Config
from dkimd.dns.base import DnssecStatus, TxtLookup
from dkimd.dns.testdata import RecordsFileError
from dkimd.keytools.context import (
    default_config_path,
    every_keytable_entry,
    keytable_place,
    load_tool_config,
    policy_for,
    spec_for_entry,
    txt_lookup,
)
from dkimd.keytools.published_report import unpublished_note
from dkimd.keytools.testkey import (
    EX_CONFIG,
    EX_DATAERR,
    EX_OK,
    KeyPolicy,
    KeyResult,
    KeySpec,
    check_key,
)

PROG = "dkimd testkey"
EPILOG = """\
Silent on success unless -v (-vvv prints "key OK"). Without -d/-s/-k, every KeyTable key
of the configuration is tested.
Exit status: 0 every key matches its record; 65 a key does not match its record;
69 a record cannot be fetched or used; 71 a key file cannot be read; 78 bad command
line or configuration (opendkim-testkey's codes)."""


def build_parser() -> RaisingParser:
    p = RaisingParser(
        prog=PROG,
        description="Check DKIM signing keys against the public keys published in DNS.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-d", dest="domain", metavar="DOMAIN", help="signing domain")
    p.add_argument("-s", dest="selector", metavar="SELECTOR", help="selector")
    p.add_argument("-k", dest="keyfile", metavar="KEYFILE", help="private key file to compare")
    p.add_argument("-v", dest="verbose", action="count", default=0, help="more output")
    p.add_argument(
        "-x",
        dest="config",
        metavar="CONF",
        help="opendkim.conf to read (default /etc/opendkim.conf if readable)",
    )
    p.add_argument(
        "--dns-file",
        metavar="FILE",
        help="answer TXT queries from FILE instead of DNS: NAME RECORD lines "
        "(TestDNSData) or zone-file TXT records such as genkey's SELECTOR.txt "
        "(dkimd verify --help describes both)",
    )
    p.add_argument(
        "--nameservers",
        metavar="LIST",
        help="comma-separated name server addresses to ask, e.g. your primary",
    )
    p.add_argument("--dns-port", type=int, default=53, metavar="N", help=argparse.SUPPRESS)
    return p


def _out(text: str) -> None:
    sys.stdout.write(f"{PROG}: {text}\n")


def _err(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")


def _load(path: str | None) -> tuple[Config | None, int]:
    if path is None:
        return None, EX_OK
    config = load_tool_config(path, _err)
    return config, EX_OK if config is not None else EX_CONFIG


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        _err(str(exc))
        sys.stderr.write(parser.format_usage())
        return EX_CONFIG
    config, status = _load(args.config or default_config_path())
    if status != EX_OK:
        return status
    nameservers = [s.strip() for s in (args.nameservers or "").split(",") if s.strip()]
    try:
        lookup = txt_lookup(
            config, dns_file=args.dns_file, nameservers=nameservers, port=args.dns_port
        )
    except OSError as exc:
        _err(f"cannot read {args.dns_file}: {exc.strerror or exc}")
        return EX_CONFIG
    except RecordsFileError as exc:
        _err(str(exc))
        return EX_CONFIG
    policy = policy_for(config)

    explicit = args.domain is not None or args.selector is not None or args.keyfile is not None
    if config is not None and config.key_table is not None and not explicit:
        return asyncio.run(_test_keytable(config, lookup, policy, args.verbose))

    domain, selector, keyfile = args.domain, args.selector, args.keyfile
    if config is not None and config.single_key is not None:
        single = config.single_key
        domains = single.domains.keys()
        domain = domain or (domains[0] if domains else None)
        selector = selector or single.selector
        keyfile = keyfile or single.key_file
    if not domain or not selector:
        _err("a domain and a selector are needed (-d and -s, or a KeyTable in the configuration)")
        sys.stderr.write(parser.format_usage())
        return EX_CONFIG
    spec = KeySpec(f"{selector}._domainkey.{domain}", domain, selector, keyfile)
    return asyncio.run(_single(spec, lookup, policy, args.verbose))


async def _single(spec: KeySpec, lookup: TxtLookup, policy: KeyPolicy, verbose: int) -> int:
    if verbose > 1:
        _err(f"checking key '{spec.dns_name}'")
    result = await check_key(spec, lookup, policy)
    if verbose > 1 and result.private_key is not None:
        _err(f"key loaded from {spec.key_path or 'the KeyTable'}")
    for finding in result.warnings:
        _err(f"WARNING: {finding.message}")
    for finding in result.errors:
        # opendkim-testkey prints "keys do not match" (EX_DATAERR) on stdout, other errors
        # on stderr; scripts written for it look in those places.
        (_out if finding.exit_code == EX_DATAERR else _err)(finding.message)
    _report_dnssec("key", result, verbose)
    if result.passed and verbose > 2:
        _out("key OK")
    return result.exit_code


def _report_dnssec(what: str, result: KeyResult, verbose: int) -> None:
    """What DNSSEC said of the record, with -v, in opendkim-testkey's words (a bogus one is
    an error of the key, reported with the others)."""
    if result.dnssec is DnssecStatus.SECURE and verbose > 0:
        _err(f"{what} secure")
    elif result.dnssec is DnssecStatus.INSECURE and verbose > 0:
        _err(f"{what} not secure")


async def _test_keytable(config: Config, lookup: TxtLookup, policy: KeyPolicy, verbose: int) -> int:
    """Every KeyTable key; a KeyTable in a database is walked first (EX_CONFIG, as for a
    configuration whose table cannot be read, when it cannot be)."""
    assert config.key_table is not None
    entries = await every_keytable_entry(config.key_table, keytable_place(config), _err)
    if entries is None:
        return EX_CONFIG
    specs = [spec_for_entry(entry) for entry in entries]
    return await _walk_keytable(specs, lookup, policy, verbose, config)


async def _walk_keytable(
    specs: list[KeySpec],
    lookup: TxtLookup,
    policy: KeyPolicy,
    verbose: int,
    config: Config | None = None,
) -> int:
    results: list[KeyResult] = []
    for index, spec in enumerate(specs):
        if verbose > 1:
            _err(f"record {index} for '{spec.name}' retrieved")
            _err(f"checking key '{spec.name}'")
        result = await check_key(spec, lookup, policy)
        results.append(result)
        for finding in result.warnings:
            _err(f"key {spec.name}: WARNING: {finding.message}")
        for finding in result.errors:
            _err(f"key {spec.name}: {finding.message}")
        if config is not None and not result.passed:
            note = await unpublished_note(config, spec.name, lookup, result.private_key)
            if note is not None:
                _err(f"key {spec.name}: {note}")
        _report_dnssec(f"key {spec.name}", result, verbose)
        if result.passed and verbose > 2:
            _out(f"key {spec.name}: OK")
    passed = sum(r.passed for r in results)
    failed = len(results) - passed
    if verbose > 0 or failed:
        plural = "" if len(results) == 1 else "s"
        _out(f"{len(results)} key{plural} checked; {passed} pass, {failed} fail")
    return next((r.exit_code for r in results if not r.passed), EX_OK)
