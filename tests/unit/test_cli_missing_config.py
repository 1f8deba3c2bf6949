"""A configuration file that does not exist: the commands say so, and only that."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _dkimd(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dkimd", *argv], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    "argv", [("-x", "{missing}"), ("serve", "-x", "{missing}", "-n")], ids=["opendkim-form", "-n"]
)
def test_daemon_reports_only_the_missing_file(tmp_path: Path, argv: tuple[str, ...]) -> None:
    missing = tmp_path / "opendkim.conf"
    proc = _dkimd(*(a.format(missing=missing) for a in argv))
    assert proc.returncode == 78
    assert proc.stderr == (
        f'dkimd: {missing}: cannot read configuration file "{missing}": No such file or directory\n'
    )


def test_check_reports_only_the_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "opendkim.conf"
    proc = _dkimd("check", "-x", str(missing), "--no-postfix")
    assert proc.returncode == 2
    assert "Socket" not in proc.stdout
    assert "1 error, 0 warnings" in proc.stdout
