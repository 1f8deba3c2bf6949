"""CheckSigningTable (OpenDKIM's development branch): the start-up SigningTable walk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dkimd.cli import serve
from dkimd.config import load_config
from dkimd.config.load import daemon_refusals

DATA = Path(__file__).parents[2] / "data" / "config" / "signing_walk"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    for name in ("keytable", "signtable"):
        shutil.copy(DATA / name, tmp_path / name)
    for name in ("opendkim.conf", "walk.conf"):
        text = (DATA / name).read_text().replace("file:", f"file:{tmp_path}/")
        (tmp_path / name).write_text(text)
    (tmp_path / "key1.private").write_text("unused: the walk does not read key files\n")
    return tmp_path


def test_default_starts_as_debian_2_11(site: Path) -> None:
    config = load_config(site / "opendkim.conf")
    assert config.check_signing_table is False
    assert daemon_refusals(config) == []
    assert any("key2" in w.message and w.fails_messages for w in config.warnings)


def test_walk_refuses_missing_and_broken_keys(site: Path) -> None:
    config = load_config(site / "walk.conf")
    refusals = daemon_refusals(config)
    assert [(p.line, p.option) for p in refusals] == [
        (2, "CheckSigningTable"),
        (3, "CheckSigningTable"),
    ]
    assert 'names key "key2", whose KeyTable line is unusable' in refusals[0].message
    assert 'names key "key3", which is not in the KeyTable' in refusals[1].message
    # The command line wins over the file, both ways (opendkim -g / -G).
    assert daemon_refusals(config, check_signing_table=False) == []
    plain = load_config(site / "opendkim.conf")
    assert len(daemon_refusals(plain, check_signing_table=True)) == 2


def test_check_only_with_capital_g_refuses(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve.main(["-n", "-x", str(site / "opendkim.conf")]) == 0
    capsys.readouterr()
    assert serve.main(["-n", "-G", "-x", str(site / "opendkim.conf")]) == 78
    err = capsys.readouterr().err
    assert 'SigningTable entry "example.org" names key "key3"' in err
    assert serve.main(["-n", "-g", "-x", str(site / "walk.conf")]) == 0
