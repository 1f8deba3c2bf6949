"""Key file safety (OpenDKIM's RequireSafeKeys walk) and all-or-nothing file creation."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd.keytools.keyfile import KeyFileExistsError, NewFile, check_key_file, install_files
from support.tools import unavailable


@pytest.fixture
def base() -> Iterator[Path]:
    # Searchable from / (0755 all the way down, /tmp being sticky), unlike pytest's tmp_path.
    root = Path(tempfile.mkdtemp(prefix="dkimd-keyfile-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def key_in(directory: Path, mode: int = 0o600) -> Path:
    path = directory / "k.private"
    path.write_text("not really a key\n")
    path.chmod(mode)
    return path


def nobody() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        unavailable("no 'nobody' user")


def test_owner_only_key_is_safe(base: Path) -> None:
    report = check_key_file(key_in(base))
    assert report.safe, report.problems
    assert any("sticky" in note for note in report.notes)  # /tmp was accepted, and said so


@pytest.mark.parametrize("mode", [0o604, 0o606, 0o644, 0o602])
def test_other_bits_are_unsafe(base: Path, mode: int) -> None:
    report = check_key_file(key_in(base, mode))
    assert not report.safe
    assert "can be read or written by other users" in report.problems[0]


def test_group_bits_are_fine_when_the_group_is_only_us(base: Path) -> None:
    key = key_in(base, 0o640)
    os.chown(key, 0, 0)  # group root: only root is in it here
    assert check_key_file(key).safe


def test_key_owned_by_someone_else_is_unsafe(base: Path) -> None:
    key = key_in(base)
    os.chown(key, nobody(), -1)
    report = check_key_file(key)
    assert not report.safe and "is owned by uid" in report.problems[0]
    # ...but it is exactly right for that user, e.g. the filter's UserID (the directories
    # above belong to root, which is allowed).
    assert check_key_file(key, uid=nobody()).safe


def test_world_writable_directory_is_unsafe(base: Path) -> None:
    keys = base / "keys"
    keys.mkdir()
    keys.chmod(0o777)
    report = check_key_file(key_in(keys))
    assert not report.safe and "can be written by other users" in report.problems[0]


def test_sticky_world_writable_directory_needs_our_entry_below(base: Path) -> None:
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    mine = shared / "mine"
    mine.mkdir()
    mine.chmod(0o755)
    assert check_key_file(key_in(mine)).safe
    os.chown(mine, nobody(), -1)  # someone else's directory inside the sticky one
    assert not check_key_file(key_in(mine)).safe


def test_directory_writable_by_another_owner_is_unsafe(base: Path) -> None:
    keys = base / "keys"
    keys.mkdir()
    keys.chmod(0o755)
    os.chown(keys, nobody(), -1)
    report = check_key_file(key_in(keys))
    assert not report.safe and "writable by its owner" in report.problems[0]


def test_private_directory_hides_everything_below(base: Path) -> None:
    # OpenDKIM: a directory nobody else can search ends the walk; the file can't be reached.
    keys = base / "keys"
    keys.mkdir()
    keys.chmod(0o700)
    assert check_key_file(key_in(keys, 0o644)).safe


def test_missing_file(base: Path) -> None:
    report = check_key_file(base / "absent")
    assert not report.safe and "No such file" in report.problems[0]


def test_install_files_refuses_existing_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "b").write_text("old")
    files = [
        NewFile(tmp_path / "a", b"A", 0o600, True),
        NewFile(tmp_path / "b", b"B", 0o644, False),
    ]
    with pytest.raises(KeyFileExistsError):
        install_files(files, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert (tmp_path / "b").read_text() == "old"
    install_files(files, force=True)
    assert (tmp_path / "a").read_bytes() == b"A" and (tmp_path / "b").read_bytes() == b"B"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporaries left
