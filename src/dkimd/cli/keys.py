"""`dkimd keys`: rotate signing keys without losing mail.

    dkimd keys rotate -x CONF (--domain D ... | --all) [--no-wait] [--timeout S] ...
    dkimd keys retire -x CONF [--domain D ...] [--keep-files] [--dry-run]
    dkimd keys status -x CONF

`rotate` makes a dated key, adds it to the KeyTable, waits until the configured resolver
serves its record, then switches the SigningTable to it and reloads the daemon; the old
key stays published for a grace period. `retire` removes keys whose grace has passed and
prints the DNS records that may now be deleted. The state of every key is kept in a plain
text file beside the KeyTable (dkimd.keytools.rotation_state describes it).

Exit status: 0 done; 75 a new record is not visible in DNS yet (the key stays pending: run
the same command again to resume); 78 a configuration problem; 1 anything else; 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from dkimd.cli.usage import RaisingParser, UsageError
from dkimd.config import Config
from dkimd.config.datasets import DatasetKind
from dkimd.dns.base import TxtLookup
from dkimd.dns.testdata import RecordsFileError, TestDnsFile
from dkimd.keytools.context import DEFAULT_CONFIG, filter_uid, load_tool_config, txt_lookup
from dkimd.keytools.generate import KeyType
from dkimd.keytools.reload import reload_daemon
from dkimd.keytools.retire import RetireError, retire_due
from dkimd.keytools.rotate import (
    DEFAULT_GRACE,
    DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
    DomainOutcome,
    DomainRotation,
    RotateOptions,
    RotationError,
    signing_domains,
)
from dkimd.keytools.rotation_state import RotationState, StateFileError, format_time
from dkimd.keytools.table_writer import TableWriteError, TableWriter, table_writer_for

PROG = "dkimd keys"
EX_OK = 0
EX_FAILED = 1
EX_USAGE = 2
EX_TEMPFAIL = 75
EX_CONFIG = 78
STATE_FILE_NAME = "dkimd-rotation.state"

EPILOG = """\
Exit status: 0 done; 75 a new key's record is not visible in DNS yet (it stays pending:
run the same command again to resume); 78 a configuration problem; 1 another failure;
2 a bad command line."""

_KEY_TYPES: dict[str, tuple[KeyType, ...]] = {
    "rsa": ("rsa",),
    "ed25519": ("ed25519",),
    "both": ("rsa", "ed25519"),
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-x", dest="config", default=DEFAULT_CONFIG, metavar="CONF", help="opendkim.conf to use"
    )
    p.add_argument(
        "--state",
        metavar="FILE",
        help=f"the rotation state file (default: {STATE_FILE_NAME} beside the KeyTable)",
    )
    p.add_argument(
        "--no-reload",
        action="store_true",
        help="do not signal the daemon (PidFile) to re-read its tables",
    )
    p.add_argument(
        "--pid-file",
        metavar="FILE",
        help="the daemon's pid file, when it is not the configuration's PidFile (dkimd -P)",
    )


def build_parser() -> RaisingParser:
    p = RaisingParser(
        prog=PROG,
        description="Rotate and retire DKIM signing keys.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(
        dest="action",
        metavar="ACTION",
        parser_class=RaisingParser,
        help="rotate, retire or status; `dkimd keys ACTION --help` describes each",
    )
    rotate = sub.add_parser(
        "rotate",
        help="new key per domain; switch to it once its record is in DNS",
        description="Make a new key with a dated selector, add it to the KeyTable, wait "
        "until its record is visible through the configured resolver, then switch the "
        "SigningTable to it and reload the daemon. Publish the printed record meanwhile.",
    )
    _common(rotate)
    which = rotate.add_mutually_exclusive_group(required=True)
    which.add_argument("--domain", action="append", metavar="D", help="signing domain (repeatable)")
    which.add_argument("--all", action="store_true", help="every domain the SigningTable signs")
    rotate.add_argument(
        "--key-type",
        choices=sorted(_KEY_TYPES),
        default="rsa",
        help="rsa (default), ed25519, or both (two keys: MultipleSignatures must be on)",
    )
    rotate.add_argument("--bits", type=int, default=2048, metavar="N", help="RSA key size")
    rotate.add_argument(
        "--selector", metavar="STEM", help="selector (default YYYYMM of today, UTC)"
    )
    rotate.add_argument(
        "--directory", metavar="DIR", help="where the new key files go (default: the old key's)"
    )
    rotate.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE.total_seconds() / 86400,
        metavar="DAYS",
        help="how long the old key's record stays published (default %(default)g days)",
    )
    rotate.add_argument(
        "--no-wait",
        action="store_true",
        help="switch at once, without checking that the record is visible in DNS",
    )
    rotate.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for the record (default %(default)g; 0: look once)",
    )
    rotate.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help="time between DNS checks (default %(default)g)",
    )
    rotate.add_argument(
        "--nameservers", metavar="LIST", help="ask these servers instead (comma-separated)"
    )
    rotate.add_argument("--dns-port", type=int, default=53, help=argparse.SUPPRESS)

    retire = sub.add_parser(
        "retire",
        help="remove keys whose grace period has passed",
        description="Remove from the KeyTable the retiring keys whose grace period has "
        "passed, delete their key files, reload the daemon, and print the DNS records "
        "that may now be deleted.",
    )
    _common(retire)
    retire.add_argument("--domain", action="append", metavar="D", help="only this domain")
    retire.add_argument("--keep-files", action="store_true", help="leave the key files")
    retire.add_argument("--dry-run", action="store_true", help="say what would be retired")

    status = sub.add_parser("status", help="print the state of every rotated key")
    _common(status)
    return p


def _err(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        _err(str(exc))
        sys.stderr.write(parser.format_usage())
        return EX_USAGE
    if args.action is None:
        sys.stdout.write(parser.format_help())
        return EX_USAGE
    config = load_tool_config(args.config, _err)
    if config is None:
        return EX_CONFIG
    try:
        tables = table_writer_for(config)
    except TableWriteError as exc:
        _err(str(exc))
        return EX_CONFIG
    state_path = args.state or _default_state_path(config)
    if state_path is None:
        _err("the KeyTable is not a file: give the rotation state file with --state")
        return EX_USAGE
    try:
        with _locked(state_path):
            state = RotationState.read(state_path)
            if args.action == "status":
                sys.stdout.write(state.text())
                return EX_OK
            if args.action == "retire":
                return _retire(args, config, tables, state, state_path)
            return _rotate(args, config, tables, state, state_path)
    except StateFileError as exc:
        _err(str(exc))
        return EX_CONFIG
    except BlockingIOError:
        _err(f"another `dkimd keys` is working on {state_path}; try again when it is done")
        return EX_TEMPFAIL
    except OSError as exc:
        _err(f"{exc.filename or state_path}: {exc.strerror or exc}")
        return EX_FAILED


def _default_state_path(config: Config) -> str | None:
    """The state file beside the KeyTable file."""
    path = config.key_table.dataset.path if config.key_table is not None else None
    if path is None:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(path)), STATE_FILE_NAME)


@contextlib.contextmanager
def _locked(state_path: str) -> Iterator[None]:
    """One `dkimd keys` at a time per state file (the state file itself is replaced by
    rename, so the lock is a file of its own)."""
    fd = os.open(f"{state_path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def lookup_factory(config: Config, nameservers: list[str], port: int) -> Callable[[], TxtLookup]:
    """Where the rotation looks for the new records: the daemon's resolver (TestDNSData,
    Nameservers, resolv.conf), a fresh one per look so no cached answer hides a change."""
    data = config.test_dns_data
    if not nameservers and data is not None and data.kind is DatasetKind.FILE and data.path:
        path = data.path
        return lambda: TestDnsFile(path)
    return lambda: txt_lookup(config, nameservers=nameservers, port=port)


def _rotate(
    args: argparse.Namespace,
    config: Config,
    tables: TableWriter,
    state: RotationState,
    state_path: str,
) -> int:
    key_types = _KEY_TYPES[args.key_type]
    if len(key_types) > 1 and not config.multiple_signatures:
        _err("--key-type both signs every message twice: set MultipleSignatures yes first")
        return EX_CONFIG
    if args.timeout < 0 or args.interval <= 0 or args.grace < 0:
        _err("--timeout and --grace must be >= 0, --interval > 0")
        return EX_USAGE
    options = RotateOptions(
        key_types=key_types,
        bits=args.bits,
        selector=args.selector,
        directory=args.directory,
        grace=timedelta(days=args.grace),
        wait=not args.no_wait,
        timeout=args.timeout,
        interval=args.interval,
        key_owner_uid=filter_uid(config),
        require_safe_keys=config.require_safe_keys,
    )
    if args.all:
        domains = sorted(signing_domains(config, tables.signing_key_names()))
        if not domains:
            _err("the SigningTable names no KeyTable key with a fixed domain: nothing to rotate")
            return EX_CONFIG
    else:
        domains = args.domain
    nameservers = [s.strip() for s in (args.nameservers or "").split(",") if s.strip()]
    factory = lookup_factory(config, nameservers, args.dns_port)
    rotation = DomainRotation(config, tables, state, state_path, options, now=_now)
    failed = waiting = switched = False
    for domain in domains:
        try:
            outcome = rotation.prepare(domain)
            _report_new_keys(outcome, wait=options.wait)
            asyncio.run(rotation.finish(outcome, factory))
        except (RotationError, RecordsFileError) as exc:
            _err(f"{domain}: {exc}")
            failed = True
            continue
        _report_rotation(outcome)
        switched = switched or outcome.done
        waiting = waiting or not outcome.done
    if switched and not args.no_reload:
        _reload(args.pid_file or config.pid_file)
    return EX_FAILED if failed else EX_TEMPFAIL if waiting else EX_OK


def _report_new_keys(outcome: DomainOutcome, *, wait: bool) -> None:
    """Said before the wait: the admin publishes these while rotate looks for them."""
    out = sys.stdout
    for note in outcome.notes:
        out.write(f"{outcome.domain}: {note}\n")
    for key in outcome.created:
        out.write(f"{outcome.domain}: new key {key.entry.name} ({key.entry.key_path})\n")
        out.write(f"publish this record (also in {key.txt_path}):\n{key.zone_text}")
    names = ", ".join(k.name for k in outcome.waiting)
    if wait:
        out.write(f"{outcome.domain}: waiting for {names} in DNS\n")
    else:
        out.write(f"{outcome.domain}: not waiting for {names} in DNS (--no-wait)\n")
    out.flush()


def _report_rotation(outcome: DomainOutcome) -> None:
    out = sys.stdout
    if outcome.not_visible:
        for check in outcome.not_visible:
            out.write(f"{outcome.domain}: not yet: {check.describe()}\n")
        out.write(
            f"{outcome.domain}: still signing with the old key; {', '.join(outcome.pending)} "
            "pending. Publish the record, then run this command again.\n"
        )
        return
    assert outcome.retire_after is not None
    out.write(f"{outcome.domain}: now signing with {', '.join(outcome.switched)}\n")
    for name in outcome.retiring:
        out.write(
            f"{outcome.domain}: {name} retiring; keep its record published until "
            f"{format_time(outcome.retire_after)}, then run `dkimd keys retire`\n"
        )


def _retire(
    args: argparse.Namespace,
    config: Config,
    tables: TableWriter,
    state: RotationState,
    state_path: str,
) -> int:
    try:
        outcome = retire_due(
            config,
            tables,
            state,
            state_path,
            now=_now(),
            domains=args.domain or (),
            keep_files=args.keep_files,
            dry_run=args.dry_run,
        )
    except RetireError as exc:
        _err(str(exc))
        return EX_FAILED
    out = sys.stdout
    verb = "would retire" if args.dry_run else "retired"
    for key in outcome.retired:
        files = f" (removed {', '.join(key.removed_files)})" if key.removed_files else ""
        out.write(f"{verb} {key.key_name}{files}\n")
    for record in outcome.not_due:
        assert record.retire_after is not None
        out.write(f"{record.key_name}: grace ends {format_time(record.retire_after)}\n")
    for record in outcome.still_signing:
        _err(f"{record.key_name} is retiring but the SigningTable still names it; kept")
    if outcome.retired:
        out.write("these DNS records may now be deleted:\n")
        for key in outcome.retired:
            out.write(f"{key.record_name}.\tIN\tTXT\n")
        if not args.dry_run and not args.no_reload:
            _reload(args.pid_file or config.pid_file)
    return EX_OK


def _reload(pid_file: str | None) -> None:
    outcome = reload_daemon(pid_file)
    (sys.stdout.write if outcome.sent else _err)(
        f"{outcome.message}\n" if outcome.sent else outcome.message
    )
