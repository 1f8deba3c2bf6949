"""BaseDirectory: entered while the configuration loads (opendkim's dkimf_config_load), so
relative paths resolve against it; a failure is `<dir>: chdir(): <reason>`, exit 78; a
failed reload goes back to the directory the running configuration uses."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dkimd import daemon
from dkimd.config import ConfigError, analyze_config_text, parse_config_text
from dkimd.config.basedir import kept_on_failure
from dkimd.daemon import DaemonOptions, _Reloader
from dkimd.session import RuntimeHolder


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # restores the test's directory afterwards
    base = tmp_path / "base"
    base.mkdir()
    (base / "keytable").write_text("k example.com:mail:./keys/mail.private\n")
    (base / "signingtable").write_text("*@example.com k\n")
    (base / "pubkeys").write_text("")
    return base


def test_relative_paths_resolve_against_it(base: Path) -> None:
    config = parse_config_text(
        f"BaseDirectory {base}\nKeyTable file:keytable\nSigningTable refile:signingtable\n"
        "TestPublicKeys pubkeys\n"
    )
    assert Path.cwd() == base
    assert config.base_directory == str(base)
    assert config.key_table is not None and config.test_public_keys == str(base / "pubkeys")
    entry = config.key_table.get("k")
    assert entry is not None and entry.key_path == "./keys/mail.private"  # read from cwd


def test_without_it_relative_data_sets_are_not_found(base: Path) -> None:
    report = analyze_config_text("KeyTable file:keytable\nSigningTable refile:signingtable\n")
    assert not report.ok


def test_a_missing_directory_is_opendkims_error(base: Path) -> None:
    missing = base / "nonexistent"
    report = analyze_config_text(f"Mode v\nBaseDirectory {missing}\n", source="c.conf")
    [error] = report.errors
    assert str(error) == f"c.conf:2: {missing}: chdir(): No such file or directory"
    assert Path.cwd() == base.parent


def test_the_daemon_refuses_it_with_78(base: Path) -> None:
    conf = base / "opendkim.conf"
    conf.write_text(f"Mode v\nBaseDirectory {base / 'nonexistent'}\n")
    assert daemon.check(DaemonOptions(str(conf))) == 78
    assert daemon.run(DaemonOptions(str(conf), socket="inet:1@127.0.0.1")) == 78


def test_a_failed_reload_goes_back(base: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError), kept_on_failure():
        parse_config_text(f"BaseDirectory {base}\nMode x\n")
    assert Path.cwd() == tmp_path
    with kept_on_failure():
        parse_config_text(f"BaseDirectory {base}\n")
    assert Path.cwd() == base


def test_reloader_keeps_the_old_directory_on_failure(base: Path, tmp_path: Path) -> None:
    conf = base / "opendkim.conf"
    conf.write_text(f"Mode v\nBaseDirectory {base}\nKeyTable file:nonexistent\n")

    class Current:
        config = parse_config_text("Mode v\n")

    holder = RuntimeHolder(Current())  # type: ignore[arg-type]
    os.chdir(tmp_path)
    asyncio.run(_Reloader(DaemonOptions(str(conf)), holder, None).off_loop())
    assert Path.cwd() == tmp_path and holder.current is not None
