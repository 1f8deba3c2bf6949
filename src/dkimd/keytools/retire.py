"""`dkimd keys retire`: remove the keys whose grace period has passed.

A key `dkimd keys rotate` moved to `retiring` signs nothing, but its record had to stay in
DNS until mail signed with it was delivered and checked. Once its RETIRE-AFTER time has
passed, retiring it removes its KeyTable entry and its key files (unless kept), marks it
`retired`, and names the DNS record that may now be deleted. A key the SigningTable still
names is never removed, whatever the state file says.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dkimd.config import Config
from dkimd.keytools.published import key_record_name
from dkimd.keytools.rotation_state import KeyRecordState, KeyState, RotationState
from dkimd.keytools.table_writer import TableWriteError, TableWriter


class RetireError(Exception):
    """The tables could not be changed; nothing was retired."""


@dataclass(frozen=True, slots=True)
class RetiredKey:
    key_name: str
    domain: str
    selector: str
    removed_files: tuple[str, ...]

    @property
    def record_name(self) -> str:
        return key_record_name(self.selector, self.domain)


@dataclass
class RetireOutcome:
    retired: list[RetiredKey] = field(default_factory=list)
    not_due: list[KeyRecordState] = field(default_factory=list)
    still_signing: list[KeyRecordState] = field(default_factory=list)


def retire_due(
    config: Config,
    tables: TableWriter,
    state: RotationState,
    state_path: str,
    *,
    now: datetime,
    domains: Collection[str] = (),
    keep_files: bool = False,
    dry_run: bool = False,
) -> RetireOutcome:
    """Retire every retiring key (of `domains`, or all) whose grace has passed at `now`."""
    wanted = {d.lower().rstrip(".") for d in domains}
    outcome = RetireOutcome()
    in_use = tables.signing_key_names()
    due: list[KeyRecordState] = []
    for record in state:
        if record.state is not KeyState.RETIRING or (wanted and record.domain not in wanted):
            continue
        if record.retire_after is not None and record.retire_after > now:
            outcome.not_due.append(record)
        elif record.key_name in in_use:
            outcome.still_signing.append(record)
        else:
            due.append(record)
    if not due:
        return outcome
    paths = _key_files(config, [r.key_name for r in due])
    if dry_run:
        outcome.retired = [
            RetiredKey(r.key_name, r.domain, r.selector, tuple(paths.get(r.key_name, ())))
            for r in due
        ]
        return outcome
    try:
        tables.remove_keys({r.key_name for r in due})
        tables.commit()
    except (TableWriteError, OSError) as exc:
        raise RetireError(str(exc)) from exc
    for record in due:
        removed: list[str] = []
        if not keep_files:
            for path in paths.get(record.key_name, ()):
                try:
                    os.unlink(path)
                    removed.append(path)
                except FileNotFoundError:
                    pass
        state.move(record.key_name, KeyState.RETIRED, now)
        outcome.retired.append(
            RetiredKey(record.key_name, record.domain, record.selector, tuple(removed))
        )
    state.write(state_path)
    return outcome


def _key_files(config: Config, names: list[str]) -> dict[str, list[str]]:
    """The private key file of each named KeyTable entry (and genkey's .txt beside it),
    leaving out files another entry still uses."""
    if config.key_table is None:
        return {}
    leaving = set(names)
    kept_paths = {
        os.path.realpath(e.key_path)
        for e in config.key_table
        if e.key_path is not None and e.name not in leaving
    }
    found: dict[str, list[str]] = {}
    for name in names:
        entry = config.key_table.get(name)
        if entry is None or entry.key_path is None or "%" in entry.key_path:
            continue
        if os.path.realpath(entry.key_path) in kept_paths:
            continue
        files = [entry.key_path]
        private = Path(entry.key_path)
        if private.suffix == ".private":
            txt = private.with_suffix(".txt")
            if txt.is_file():
                files.append(str(txt))
        found[name] = files
    return found
