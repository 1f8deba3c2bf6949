"""`dkimd serve` / `dkimd -x CONF`: the milter daemon, taking opendkim's flags."""

from __future__ import annotations

import argparse
import sys

from dkimd import __version__
from dkimd.daemon import DaemonOptions, check, run

DEFAULT_CONFIG = "/etc/opendkim.conf"

EPILOG = """\
Runs in the background unless -f or `Background no`; the command returns only once the
daemon serves (socket bound, PidFile written, UserID taken), with 0, or with 1 and why.
Exit status: 0 after a clean stop (SIGTERM/SIGINT) or a good -n check; 78 for
configuration errors (unsafe keys under RequireSafeKeys included); 1 when the daemon
cannot start otherwise (socket in use, pid file of a running instance). As opendkim -n,
-n checks the configuration only: no Socket is fine, and a socket or user that would not
work is a warning (`dkimd check` looks deeper).
Signals: SIGTERM/SIGINT finish in-flight messages and exit; SIGHUP/SIGUSR1 reload.
"""


def build_parser(prog: str = "dkimd serve") -> argparse.ArgumentParser:
    """The daemon's parser; `prog` is "dkimd" when the flags came first (`dkimd -x CONF`)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="DKIM signing and verifying milter (opendkim-compatible flags)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-x",
        dest="config",
        default=DEFAULT_CONFIG,
        metavar="CONF",
        help=f"configuration file (default {DEFAULT_CONFIG})",
    )
    p.add_argument(
        "-f",
        dest="foreground",
        action="store_true",
        help="stay in the foreground (as Background No)",
    )
    p.add_argument(
        "-p",
        dest="socket",
        metavar="SOCKET",
        help="milter socket, overriding Socket (inet:PORT@HOST, local:/path)",
    )
    p.add_argument("-P", dest="pid_file", metavar="PIDFILE", help="pid file, overriding PidFile")
    p.add_argument(
        "-u", dest="user", metavar="USER[:GROUP]", help="run as this user, overriding UserID"
    )
    p.add_argument(
        "-n", dest="check_only", action="store_true", help="check the configuration and exit"
    )
    walk = p.add_mutually_exclusive_group()
    walk.add_argument(
        "-G",
        dest="check_signing_table",
        action="store_const",
        const=True,
        help="refuse a SigningTable entry naming a missing or broken key (CheckSigningTable yes)",
    )
    walk.add_argument(
        "-g",
        dest="check_signing_table",
        action="store_const",
        const=False,
        help="start despite such entries, tempfailing their senders (CheckSigningTable no)",
    )
    p.add_argument(
        "-t",
        dest="test_files",
        metavar="FILES",
        help="test mode: run the comma-separated message files (- for stdin) through the "
        "filter, print what it would do on stderr, and exit",
    )
    p.add_argument("-v", dest="verbose", action="store_true", help="verbose logging")
    p.add_argument("-V", dest="version", action="store_true", help="print the version and exit")
    return p


def main(argv: list[str], *, prog: str = "dkimd serve") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.version:
        sys.stdout.write(f"dkimd {__version__} (OpenDKIM-compatible milter)\n")
        return 0
    options = DaemonOptions(
        config_path=args.config,
        socket=args.socket,
        pid_file=args.pid_file,
        user=args.user,
        foreground=args.foreground,
        verbose=args.verbose,
        check_signing_table=args.check_signing_table,
    )
    if args.check_only:
        return check(options)
    if args.test_files is not None:
        from dkimd import testmode

        return testmode.main(options, args.test_files)
    return run(options)
