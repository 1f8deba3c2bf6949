"""`dkimd check`: lint an opendkim.conf and everything it names, then say what it does.

    dkimd check [-x CONF] [--strict] [--no-postfix] [-q] [--dns] [--walk]

Every problem is printed as FILE:LINE: error|warning: message, with a "fix:" line when
there is a known fix; then a plain-language summary of who is signed with which key, and
whose mail is verified. Exit status: 0 when there are no errors (warnings allowed), 1 with
--strict when there are warnings, 2 when there are errors (the daemon would not start,
or would not sign what the tables say).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from dkimd.cli.usage import RaisingParser, UsageError
from dkimd.config import Problem, Severity, analyze_config
from dkimd.keytools.context import DEFAULT_CONFIG, txt_lookup
from dkimd.keytools.lint import lint, run_postconf
from dkimd.keytools.published_report import unpublished_problems
from dkimd.stores.dataset import remote_datasets

PROG = "dkimd check"
EXIT_CLEAN = 0
EXIT_WARNINGS = 1
EXIT_ERRORS = 2
EPILOG = f"""\
Each problem is printed as FILE:LINE: error|warning: message, with a "fix:" line when
one is known, then a summary of who is signed with which key and whose mail is verified.
Exit status: {EXIT_CLEAN} no errors (warnings allowed); {EXIT_WARNINGS} warnings with --strict;
{EXIT_ERRORS} errors (the daemon would not start, or would not sign what the tables say)
or a bad command line."""


def build_parser() -> RaisingParser:
    p = RaisingParser(
        prog=PROG,
        description="Check an OpenDKIM/dkimd configuration for problems.",
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
    p.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
    p.add_argument(
        "--no-postfix",
        action="store_true",
        help="do not compare with Postfix's smtpd_milters (postconf)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="problems only, no summary")
    p.add_argument(
        "--dns",
        action="store_true",
        help="also look up every signing key's record through the configured resolver "
        "and report one that is missing or does not match (as the daemon's key guard)",
    )
    p.add_argument(
        "--walk",
        action="store_true",
        help="read KeyTable/SigningTable kept in a database whole and report rows that name "
        "a missing key or are malformed (the daemon never walks them)",
    )
    return p


# Fixes for the loader's problems that come without one, by the option concerned.
_OPTION_HINTS = {
    "KeyTable": "each line: KEYNAME DOMAIN:SELECTOR:/path/to/SELECTOR.private",
    "SigningTable": "each line: SENDER-PATTERN KEYNAME, KEYNAME being a KeyTable key name",
    "InternalHosts": "one IP address, CIDR network (192.0.2.0/24) or host name per line",
    "ExternalIgnoreList": "one IP address, CIDR network (192.0.2.0/24) or host name per line",
    "PeerList": "one IP address, CIDR network (192.0.2.0/24) or host name per line",
    "Socket": "inet:PORT@HOST (inet:8891@localhost), inet6:PORT@HOST or local:/path",
    "MinimumKeyBits": "a whole number of bits, e.g. 1024",
}


def _hint(problem: Problem) -> str | None:
    if problem.hint:
        return problem.hint
    if problem.message.startswith("SigningTable entry") and "not in the KeyTable" in (
        problem.message
    ):
        return "add that key to the KeyTable, or correct the key name"
    if problem.message.startswith(("key file", "KeyTable entry")):
        return _OPTION_HINTS["KeyTable"]
    option = problem.option or problem.message.split(":", 1)[0].split()[0]
    if option in _OPTION_HINTS:
        return _OPTION_HINTS[option]
    if problem.option:
        return f"see {problem.option} in opendkim.conf(5)"
    return None


def _show(problem: Problem) -> str:
    kind = "error" if problem.severity is Severity.ERROR else "warning"
    text = f"{problem.location}: {kind}: {problem.message}\n"
    hint = _hint(problem)
    if hint:
        text += f"    fix: {hint}\n"
    return text


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n{parser.format_usage()}")
        return EXIT_ERRORS
    try:
        report = analyze_config(args.config)
    except OSError as exc:
        sys.stderr.write(f"{args.config}: error: cannot read: {exc.strerror or exc}\n")
        return EXIT_ERRORS
    result = lint(report, postconf=None if args.no_postfix else run_postconf)
    if args.dns and report.config is not None:
        config = report.config
        result.problems += asyncio.run(unpublished_problems(config, txt_lookup(config)))
    if report.config is not None and (args.walk or remote_datasets(report.config)):
        # Imported only then: the stores layer is for configurations that use it.
        from dkimd.stores.walk import probe_queries, walk_problems

        if args.walk:
            found, notes = asyncio.run(walk_problems(report.config))
        else:
            found, notes = asyncio.run(probe_queries(report.config))
            # A login that failed at load (SoftStart) is told again by the lookup, as it
            # stands now: an error when it still fails, nothing when the server is back.
            stale = {d.load_problem for d in remote_datasets(report.config)}
            result.problems = [p for p in result.problems if p not in stale]
        result.problems += found
        result.summary += notes
    # Sorted by place so an admin can walk through the files top to bottom.
    for problem in sorted(result.problems, key=lambda p: (p.file or "", p.line or 0)):
        sys.stdout.write(_show(problem))
    errors, warnings = len(result.errors), len(result.warnings)
    if not args.quiet and result.summary:
        sys.stdout.write("\n" + "\n".join(result.summary) + "\n")
    if errors or warnings:
        sys.stdout.write(
            f"\n{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}\n"
        )
    if errors:
        if report.config is None:
            sys.stdout.write("The configuration cannot be loaded: fix the errors above first.\n")
        return EXIT_ERRORS
    if warnings and args.strict:
        return EXIT_WARNINGS
    return EXIT_CLEAN
