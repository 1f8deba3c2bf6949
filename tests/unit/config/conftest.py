"""Fixtures for the config tests: the reference configuration in a temporary directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from support.reference import REFERENCE


@pytest.fixture
def reference_dir(tmp_path: Path) -> Path:
    """The reference opendkim.conf + data sets, paths pointed into `tmp_path`, with a key."""
    for source in REFERENCE.iterdir():
        text = source.read_text()
        text = text.replace("/etc/opendkim/", f"{tmp_path}/").replace(
            "/var/run/opendkim/", f"{tmp_path}/run/"
        )
        (tmp_path / source.name).write_text(text)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "mail.private").write_text("not really a key\n")
    return tmp_path


Writer = Callable[[str, str], str]


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    """write(name, text) -> str path of a new file under tmp_path."""

    def _write(name: str, text: str) -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    return _write
