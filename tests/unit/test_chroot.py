"""dkimd.chroot pieces that need no root: opendkim's messages, and what is imported
before a chroot (the real chroot is tests/e2e/test_process_options_e2e.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dkimd.chroot import ChrootError, change_root, prepare, syslog_warning, without_user_warning
from dkimd.config import parse_config_text


def test_warning_only_for_root_without_a_user() -> None:
    assert without_user_warning(True, False) == (
        "use of ChangeRootDirectory without Userid not advised"
    )
    assert without_user_warning(True, True) is None
    assert without_user_warning(False, False) is None


def test_a_missing_directory_is_opendkims_chdir_error(tmp_path: Path) -> None:
    with pytest.raises(ChrootError, match=r"/none: chdir\(\): No such file or directory$"):
        change_root(str(tmp_path / "none"))


def test_prepare_imports_what_dnspython_loads_late() -> None:
    prepare()
    for name in ("dns.rdtypes.ANY.TXT", "dns.rdtypes.ANY.SOA", "dns._asyncio_backend"):
        assert name in sys.modules


def test_the_option() -> None:
    assert parse_config_text("").change_root_directory is None
    assert parse_config_text("ChangeRootDirectory /var/lib/dkimd\n").change_root_directory == (
        "/var/lib/dkimd"
    )


def test_syslog_needs_dev_log_in_the_new_root(tmp_path: Path) -> None:
    message = syslog_warning(str(tmp_path), True)
    assert message is not None and f"no {tmp_path}/dev/log" in message
    assert syslog_warning(str(tmp_path), False) is None
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "log").touch()
    assert syslog_warning(str(tmp_path), True) is None
