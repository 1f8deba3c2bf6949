"""The `dkimd` command dispatcher: subcommands, and opendkim's flags meaning `serve`."""

from __future__ import annotations

import subprocess
import sys

from dkimd.cli import COMMANDS, main


def test_help_lists_every_command(capsys: object) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    for name in COMMANDS:
        assert name in out


def test_no_arguments_is_a_usage_error() -> None:
    assert main([]) == 2


def test_unknown_command_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dkimd", "frobnicate"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "unknown command 'frobnicate'" in proc.stderr
