"""`dkimd -n` judges the configuration as `opendkim -n` does (observed with 2.11): the
options opendkim reads only when really starting are not what it fails on."""

from __future__ import annotations

from pathlib import Path

import pytest

from dkimd import daemon
from dkimd.config import analyze_config_text
from dkimd.config.operational import split_check_problems, without_operational
from dkimd.daemon import DaemonOptions


def _check(tmp_path: Path, text: str) -> int:
    conf = tmp_path / "opendkim.conf"
    conf.write_text(text)
    return daemon.check(DaemonOptions(str(conf)))


def test_no_socket_passes(tmp_path: Path) -> None:
    assert _check(tmp_path, "Mode v\n") == 0


@pytest.mark.parametrize(
    "line",
    [
        "Socket bogus:xyz",  # opendkim -n: rc 0; a real start: smfi_opensocket() failed
        "Socket inet:notaport@localhost",
        "AutoRestartRate bogus",
        "SyslogFacility bogus",
        "UMask 01000",
    ],
)
def test_operational_errors_are_warnings_under_n(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str
) -> None:
    assert _check(tmp_path, f"Mode v\n{line}\n") == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "the daemon would not start" in err


def test_other_errors_still_fail_with_an_operational_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(tmp_path, "Mode x\nSocket bogus:xyz\n") == 78
    err = capsys.readouterr().err
    assert 'unknown mode "x"' in err


def test_a_real_start_still_refuses_a_malformed_socket(tmp_path: Path) -> None:
    conf = tmp_path / "opendkim.conf"
    conf.write_text("Mode v\nSocket bogus:xyz\n")
    assert daemon.run(DaemonOptions(str(conf), foreground=True)) == 78


def test_large_comment_passes(tmp_path: Path) -> None:
    assert _check(tmp_path, "Mode v\n#" + "x" * 25000 + "\n") == 0


def test_split_and_strip() -> None:
    report = analyze_config_text("Mode v\nSocket tcp:1\nUserID :g\n")
    failing, warnings = split_check_problems(report.problems)
    assert failing == [] and {w.option for w in warnings} == {"Socket", "UserID"}
    stripped = without_operational(report.raw)
    assert stripped.get("Socket") is None and stripped.get("Mode") is not None


def test_a_value_of_the_wrong_type_fails_n_for_any_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # opendkim -n: "configuration error at line 2: illegal value" (observed with UMask 0999)
    assert _check(tmp_path, "Mode v\nUMask 0999\nMilterDebug abc\n") == 78
    err = capsys.readouterr().err
    assert err.count("is not an integer") == 2 and "warning" not in err
