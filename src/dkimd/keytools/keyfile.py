"""Private key files: creating them safely, and judging whether an existing one is safe.

The safety rules are OpenDKIM's (`dkimf_checkfsnode()` in opendkim.c, applied when
RequireSafeKeys is on, which is the default): walking from / down to the key,

* the key file must be owned by root or the user running the filter, must not be
  readable or writable by "other", and may be group readable/writable only when no
  other user can be in its group;
* no directory on the way may be writable by "other", writable by a group that other
  users are in, or writable by an owner who is neither root nor the running user;
* a directory that neither group nor other can search ends the walk: nobody else can
  reach anything below it.

One deliberate difference: OpenDKIM calls any world-writable directory unsafe, which
rejects every key under /tmp. A sticky world-writable directory (mode 1777, like /tmp)
only lets others remove or rename entries they own, so we accept it when the next
component down belongs to root or the running user, and say so in a note.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path


class KeyFileExistsError(FileExistsError):
    """The output file exists and overwriting was not asked for."""


@dataclass(frozen=True, slots=True)
class NewFile:
    """A file to create: `exact_mode` sets `mode` whatever the umask (0600 for keys)."""

    path: Path
    data: bytes
    mode: int
    exact_mode: bool


def _create_exclusive(path: Path, new: NewFile) -> None:
    # O_EXCL|O_NOFOLLOW: an existing file, or a symlink someone planted, makes this fail
    # instead of being overwritten or followed.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, new.mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            if new.exact_mode:
                os.fchmod(fh.fileno(), new.mode)
            fh.write(new.data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def install_files(files: list[NewFile], *, force: bool) -> None:
    """Create all of `files` or, as far as the file system allows, none of them.

    Without `force` each file is created with O_EXCL, and an existing one raises
    KeyFileExistsError (after removing any file this call already created). With `force`
    every file is first written complete under a temporary name in its directory, then
    renamed over its target, so no reader ever sees a half-written key, and a key is
    never left paired with the record of a different key because a write failed midway.
    """
    done: list[Path] = []
    try:
        if not force:
            for new in files:
                try:
                    _create_exclusive(new.path, new)
                except FileExistsError:
                    raise KeyFileExistsError(
                        errno.EEXIST,
                        "exists (use --force to replace it)",
                        str(new.path),
                    ) from None
                done.append(new.path)
            return
        staged: list[tuple[Path, Path]] = []
        for new in files:
            tmp = new.path.with_name(f".{new.path.name}.{secrets.token_hex(6)}.tmp")
            _create_exclusive(tmp, new)
            done.append(tmp)
            staged.append((tmp, new.path))
        for tmp, final in staged:
            os.replace(tmp, final)
            done.remove(tmp)
    except BaseException:
        for path in done:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise


@dataclass(frozen=True, slots=True)
class SafetyReport:
    """Whether a key file is safe to use, and why not."""

    path: str
    safe: bool
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class _Users:
    """Who else could be in a group: looked up once per report, from passwd and group."""

    uid: int
    name: str
    _cache: dict[int, str | None] = field(default_factory=dict)

    def other_member(self, gid: int) -> str | None:
        """Some user other than us and root who is in group `gid`, or None."""
        if gid not in self._cache:
            self._cache[gid] = self._find_other_member(gid)
        return self._cache[gid]

    def _find_other_member(self, gid: int) -> str | None:
        for entry in pwd.getpwall():
            if entry.pw_uid not in (self.uid, 0) and entry.pw_gid == gid:
                return entry.pw_name
        try:
            members = grp.getgrgid(gid).gr_mem
        except KeyError:
            return None
        for member in members:
            if member not in (self.name, "root"):
                return member
        return None


def _user_for(uid: int) -> _Users:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return _Users(uid, name)


def check_key_file(path: str | os.PathLike[str], uid: int | None = None) -> SafetyReport:
    """Judge the key at `path` as OpenDKIM's RequireSafeKeys would for user `uid`.

    `uid` defaults to the effective uid: the user the check runs as. Pass the daemon's
    UserID to ask "is this safe for the opendkim user?" from a root shell.
    """
    users = _user_for(os.geteuid() if uid is None else uid)
    shown = os.fspath(path)
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        return SafetyReport(shown, False, (f"{shown}: {exc.strerror or exc}",))
    problems: list[str] = []
    notes: list[str] = []
    nodes = [Path("/"), *[Path(*real.parts[: i + 1]) for i in range(1, len(real.parts))]]
    for index, node in enumerate(nodes):
        try:
            st = node.stat()
        except OSError as exc:
            return SafetyReport(shown, False, (f"{node}: {exc.strerror or exc}",))
        if stat.S_ISREG(st.st_mode):
            problems += _file_problems(node, st, users)
        elif stat.S_ISDIR(st.st_mode):
            below = nodes[index + 1] if index + 1 < len(nodes) else None
            problems += _dir_problems(node, st, users, below, notes)
            if problems:
                break
            if index + 1 < len(nodes) and not st.st_mode & (stat.S_IXGRP | stat.S_IXOTH):
                # Nobody but the owner can get past this directory: OpenDKIM stops here.
                break
        else:
            problems.append(f"{node} is not a regular file")
        if problems:
            break
    return SafetyReport(shown, not problems, tuple(problems), tuple(notes))


def _file_problems(node: Path, st: os.stat_result, users: _Users) -> list[str]:
    if st.st_uid not in (0, users.uid):
        return [
            f"{node} is owned by uid {st.st_uid}, not by the user checking it "
            f"({users.name}, uid {users.uid}) or root"
        ]
    if st.st_mode & (stat.S_IRGRP | stat.S_IWGRP):
        other = users.other_member(st.st_gid)
        if other is not None:
            return [
                f"{node} can be read or written by group {_group_name(st.st_gid)}, "
                f"which has other users (e.g. {other!r})"
            ]
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        return [f"{node} can be read or written by other users (mode {_mode(st)})"]
    return []


def _dir_problems(
    node: Path, st: os.stat_result, users: _Users, below: Path | None, notes: list[str]
) -> list[str]:
    if st.st_mode & stat.S_IWOTH:
        if st.st_mode & stat.S_ISVTX and below is not None and _owned_by_us(below, users):
            notes.append(
                f"{node} is world-writable but sticky, and {below} belongs to "
                f"{users.name} or root: accepted (OpenDKIM itself would refuse this key)"
            )
        else:
            return [f"{node} can be written by other users (mode {_mode(st)})"]
    if st.st_mode & stat.S_IWGRP:
        other = users.other_member(st.st_gid)
        if other is not None:
            return [
                f"{node} can be written by group {_group_name(st.st_gid)}, "
                f"which has other users (e.g. {other!r})"
            ]
    if st.st_mode & stat.S_IWUSR and st.st_uid not in (0, users.uid):
        return [
            f"{node} is writable by its owner, uid {st.st_uid}, who is neither "
            f"{users.name} nor root"
        ]
    return []


def _owned_by_us(path: Path, users: _Users) -> bool:
    try:
        return path.lstat().st_uid in (0, users.uid)
    except OSError:
        return False


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"
