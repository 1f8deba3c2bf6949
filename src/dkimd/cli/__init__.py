"""The `dkimd` command: one module per subcommand, each exposing `main(argv) -> exit code`.

`dkimd -x /etc/opendkim.conf ...` (flags first, as opendkim takes them) is `dkimd serve ...`,
so an admin can swap the binary name in their unit file and nothing else.
"""

from __future__ import annotations

import importlib
import sys

from dkimd import __version__

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "dkimd.cli.serve",
        "run the milter daemon (opendkim's flags: -x CONF -f -p -P -u -n -t -v -V)",
    ),
    "sign": ("dkimd.cli.sign", "sign a message read from stdin"),
    "verify": (
        "dkimd.cli.verify",
        "verify the DKIM signatures and ARC chain of a message read from stdin",
    ),
    "seal": ("dkimd.cli.seal", "add the next ARC set (RFC 8617) to a message read from stdin"),
    "genkey": ("dkimd.cli.genkey", "make a key pair and its DNS record (opendkim-genkey)"),
    "testkey": ("dkimd.cli.testkey", "check keys against their DNS records (opendkim-testkey)"),
    "genzone": ("dkimd.cli.genzone", "print DNS records for every KeyTable key (opendkim-genzone)"),
    "check": ("dkimd.cli.check", "lint an opendkim.conf and everything it names"),
    "keys": ("dkimd.cli.keys", "rotate and retire signing keys (keys rotate / retire / status)"),
}

USAGE = "usage: dkimd COMMAND [ARGS...]   or   dkimd -x /etc/opendkim.conf [opendkim flags]\n"


def _help() -> str:
    lines = [USAGE, "commands:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()]
    lines.append("\n`dkimd COMMAND --help` (or `dkimd help COMMAND`) describes each one.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "help" and args[1] in COMMANDS:
        args = [args[1], "--help"]  # `dkimd help verify`, as git and pip take it
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(_help())
        return 0 if args else 2
    if args[0] == "--version":
        sys.stdout.write(f"dkimd {__version__}\n")
        return 0
    if args[0].startswith("-"):
        from dkimd.cli import serve

        # opendkim's form: the usage line names the command as it was typed.
        return serve.main(args, prog="dkimd")
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"dkimd: unknown command {name!r}\n{_help()}")
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    code: int = module.main(rest)
    return code
