"""Every subcommand's --help describes every option, states its exit codes, and names itself."""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys

import pytest

from dkimd.cli import COMMANDS, main


def _parser(name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(COMMANDS[name][0])
    parser = module.build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def _undescribed(parser: argparse.ArgumentParser) -> list[str]:
    """Options and positionals shown in --help without a description."""
    missing = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue  # hidden on purpose (compatibility spellings, test hooks)
        if not (action.help or "").strip():
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_a_description(name: str) -> None:
    assert _undescribed(_parser(name)) == []


def test_the_walk_notices_an_option_without_help() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--described", help="yes")
    parser.add_argument("--bare")
    parser.add_argument("--hidden", help=argparse.SUPPRESS)
    assert _undescribed(parser) == ["--bare"]


@pytest.mark.parametrize(
    ("name", "codes"),
    [
        ("testkey", ("0", "65", "69", "71", "78")),
        ("check", ("0", "1", "2")),
        ("verify", ("0", "1", "2")),
        ("sign", ("0", "2")),
        ("genzone", ("0", "1", "64", "78")),
        ("serve", ("0", "1", "78")),
        ("keys", ("0", "1", "2", "75", "78")),
    ],
)
def test_help_states_the_exit_codes(name: str, codes: tuple[str, ...]) -> None:
    text = _parser(name).format_help()
    assert "Exit status:" in text
    stated = set(re.findall(r"\b\d+\b", text.split("Exit status:", 1)[1]))
    assert set(codes) <= stated


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_usage_line_names_the_subcommand(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exits_zero([name, "--help"])
    assert capsys.readouterr().out.startswith(f"usage: dkimd {name} ")


def _exits_zero(argv: list[str]) -> bool:
    """Whether `dkimd ARGV` ends with status 0, by return or by argparse's SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own --help
        code = exc.code if isinstance(exc.code, int) else 1
    return code == 0


def test_opendkim_form_keeps_dkimd_as_its_name() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dkimd", "-x", "/etc/opendkim.conf", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: dkimd [-h] [-x CONF]")
    assert "dkimd serve" not in proc.stdout


def test_serve_help_through_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: dkimd serve [-h] [-x CONF]")


def test_help_command_shows_the_subcommand_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exits_zero(["help", "verify"])
    assert capsys.readouterr().out.startswith("usage: dkimd verify ")
