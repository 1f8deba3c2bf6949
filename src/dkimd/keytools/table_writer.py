"""Changing the KeyTable and SigningTable for key rotation, behind one small interface.

`TableWriter` is what `dkimd keys rotate` and `retire` need from wherever the tables live:
add KeyTable entries, point SigningTable entries from old keys to new ones, remove KeyTable
entries, then `commit()` the lot. `FlatFileTables` does it for `file:` / `refile:` data
sets: each file is rewritten atomically (dkimd.keytools.atomic), the KeyTable before the
SigningTable, so a reader never sees a SigningTable naming a key the KeyTable lacks. A SQL
data set (`dsn:`) would do the same in one transaction.

The rewrite keeps every other line of the files as it was: comments, blank lines, order,
spacing; only the entries rotation is about change.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from dkimd.config import Config
from dkimd.config.datasets import DatasetKind
from dkimd.keytools.atomic import replace_file


class TableWriteError(Exception):
    """The tables cannot be changed where they are (wrong type, unreadable)."""


@dataclass(frozen=True, slots=True)
class NewKeyEntry:
    """A KeyTable entry to add: NAME DOMAIN:SELECTOR:PATH."""

    name: str
    domain: str
    selector: str
    key_path: str

    def value(self) -> str:
        return f"{self.domain}:{self.selector}:{self.key_path}"


class TableWriter(Protocol):
    """Staged changes to the signing tables; nothing is visible before `commit()`."""

    def add_keys(self, entries: Sequence[NewKeyEntry]) -> None: ...

    def switch_keys(self, old: Collection[str], new: Sequence[str]) -> int:
        """Make every SigningTable entry naming a key in `old` name the keys of `new`
        instead (one entry per new key, same pattern and signer). Returns how many
        entries named an old key."""
        ...

    def remove_keys(self, names: Collection[str]) -> None: ...

    def signing_key_names(self) -> set[str]:
        """Key names the SigningTable uses, with staged changes applied."""
        ...

    def commit(self) -> None: ...


def _split_entry(line: str) -> tuple[str, str, str, str, str] | None:
    """A data set line as (key, separator, value, rest, indent), or None for a line with
    no entry. `rest` is what follows the value (spaces and a comment)."""
    body, hash_mark, comment = line.partition("#")
    stripped = body.strip()
    if not stripped:
        return None
    indent = body[: len(body) - len(body.lstrip())]
    content = body.strip()
    parts = content.split(None, 1)
    key = parts[0]
    if len(parts) == 1:
        value = ""
        separator = ""
    else:
        after_key = content[len(key) :]
        separator = after_key[: len(after_key) - len(after_key.lstrip())]
        value = parts[1].rstrip()
    trailing = body[len(indent) + len(content) :]
    return key, separator, value, trailing + hash_mark + comment, indent


class FlatFileTables:
    """TableWriter over `file:` / `refile:` KeyTable and SigningTable files."""

    def __init__(self, keytable_path: str, signingtable_path: str) -> None:
        self.keytable_path = keytable_path
        self.signingtable_path = signingtable_path
        self._keytable = self._read(keytable_path)
        self._signingtable = self._read(signingtable_path)
        self._keytable_changed = False
        self._signingtable_changed = False

    @classmethod
    def for_config(cls, config: Config) -> FlatFileTables:
        if config.key_table is None or config.signing_table is None:
            raise TableWriteError(
                "key rotation needs a KeyTable and a SigningTable in the configuration"
            )
        kt = config.key_table.dataset
        st = config.signing_table.dataset
        if kt.kind is not DatasetKind.FILE or kt.path is None:
            raise TableWriteError(
                f"KeyTable {kt.describe()} is not a file: data set; rotate it by hand"
            )
        if st.kind not in (DatasetKind.FILE, DatasetKind.REFILE) or st.path is None:
            raise TableWriteError(
                f"SigningTable {st.describe()} is not a file: or refile: data set; "
                "rotate it by hand"
            )
        return cls(kt.path, st.path)

    @staticmethod
    def _read(path: str) -> list[str]:
        try:
            with open(path, encoding="utf-8", newline="") as fh:
                return fh.read().splitlines()
        except OSError as exc:
            raise TableWriteError(f"{path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise TableWriteError(f"{path}: not UTF-8 text") from exc

    def _separator(self) -> str:
        for line in self._keytable:
            parts = _split_entry(line)
            if parts is not None and parts[1]:
                return parts[1]
        return "\t"

    def add_keys(self, entries: Sequence[NewKeyEntry]) -> None:
        separator = self._separator()
        known = {p[0] for p in map(_split_entry, self._keytable) if p is not None}
        for entry in entries:
            if entry.name in known:
                raise TableWriteError(f"the KeyTable already has an entry called {entry.name!r}")
            self._keytable.append(f"{entry.name}{separator}{entry.value()}")
            known.add(entry.name)
        self._keytable_changed = True

    def remove_keys(self, names: Collection[str]) -> None:
        in_use = self.signing_key_names() & set(names)
        if in_use:
            raise TableWriteError(
                "the SigningTable still names " + ", ".join(sorted(in_use)) + "; not removing it"
            )
        kept = []
        for line in self._keytable:
            parts = _split_entry(line)
            if parts is not None and parts[0] in names:
                self._keytable_changed = True
                continue
            kept.append(line)
        self._keytable = kept

    def switch_keys(self, old: Collection[str], new: Sequence[str]) -> int:
        out: list[str] = []
        seen: set[tuple[str, str]] = set()
        switched = 0
        for line in self._signingtable:
            parts = _split_entry(line)
            if parts is None:
                out.append(line)
                continue
            key, separator, value, rest, indent = parts
            key_name, colon, signer = value.partition(":")
            if key_name not in old:
                out.append(line)
                continue
            switched += 1
            # A pattern that had one entry per old key (RSA and Ed25519) gets one per new key.
            group = (key, colon + signer)
            if group in seen:
                continue
            seen.add(group)
            for name in new:
                out.append(f"{indent}{key}{separator}{name}{colon}{signer}{rest}")
        if switched:
            self._signingtable = out
            self._signingtable_changed = True
        return switched

    def signing_key_names(self) -> set[str]:
        names = set()
        for line in self._signingtable:
            parts = _split_entry(line)
            if parts is not None:
                names.add(parts[2].partition(":")[0])
        return names

    def commit(self) -> None:
        # KeyTable first: until the SigningTable names the new keys, extra KeyTable entries
        # are harmless; the other order would name keys the KeyTable lacks.
        if self._keytable_changed:
            replace_file(self.keytable_path, _text(self._keytable))
            self._keytable_changed = False
        if self._signingtable_changed:
            replace_file(self.signingtable_path, _text(self._signingtable))
            self._signingtable_changed = False


def table_writer_for(config: Config) -> TableWriter:
    """The writer for where `config`'s tables live; raises TableWriteError when dkimd cannot
    change them there. The place a `dsn:` (SQL) writer plugs in, with one transaction per
    `commit()`."""
    return FlatFileTables.for_config(config)


def _text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")
