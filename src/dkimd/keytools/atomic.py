"""Replacing a file so that no reader ever sees it half-written: write, fsync, rename.

The new content goes to a temporary file in the same directory (a rename is atomic only
within one file system), gets the old file's mode and owner (a KeyTable that only root
and the filter's group could read stays so), is flushed to disk, and is renamed over the
target; the directory is then fsync'ed so the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path


def replace_file(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Make `path` hold `data`, atomically. `mode` applies only when `path` is new."""
    target = Path(path)
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    new_mode = stat.S_IMODE(st.st_mode) if st is not None else mode
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            if st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                # Keep the owner; an unprivileged caller who cannot chown leaves its own.
                with contextlib.suppress(PermissionError):
                    os.fchown(fh.fileno(), st.st_uid, st.st_gid)
            os.fchmod(fh.fileno(), new_mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sync_directory(target.parent)


def sync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync a directory, so renames and new entries in it reach the disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
