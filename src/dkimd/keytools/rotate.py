"""`dkimd keys rotate`: a new key for a signing domain, switched to only once it is published.

For one domain (the `d=` of the KeyTable entries its SigningTable entries name), in steps
an admin can stop and resume:

1. make the new key(s) (`dkimd genkey`'s generation, file modes and zone text) with a dated
   selector, owned like the key they replace, and add them to the KeyTable: state `pending`;
2. wait until the configured resolver serves a record matching each new key (`--no-wait`
   skips this, `--timeout` bounds it; on timeout the keys stay pending and running the
   command again resumes here);
3. point the SigningTable entries of the old keys at the new ones: the new keys become
   `active`, the old ones `retiring` until the grace period ends (their records must stay
   published for mail signed before the switch); `dkimd keys retire` removes them then.

Nothing is signed with a key before its record is visible: the SigningTable names the new
key only after step 2, and the daemon reads the tables only when told to reload.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from dkimd.config import Config, KeyTableEntry
from dkimd.dkim import KeyLoadError, PrivateKey
from dkimd.dkim.keys import load_private_key_file
from dkimd.dns.base import TxtLookup
from dkimd.keytools.generate import (
    GeneratedKey,
    KeyGenerationError,
    KeyType,
    generate_ed25519,
    generate_rsa,
)
from dkimd.keytools.keyfile import KeyFileExistsError, NewFile, check_key_file, install_files
from dkimd.keytools.lint import unreadable_by
from dkimd.keytools.names import name_problem
from dkimd.keytools.published import Publication, PublicationCheck, check_publication
from dkimd.keytools.record import KeyRecordOptions, genkey_txt
from dkimd.keytools.rotation_state import KeyRecordState, KeyState, RotationState
from dkimd.keytools.table_writer import NewKeyEntry, TableWriteError, TableWriter

# Longer than Postfix's maximal_queue_lifetime (5 days): a message signed just before the
# switch may sit in a queue that long and must still verify when it arrives.
DEFAULT_GRACE = timedelta(days=7)
DEFAULT_TIMEOUT = 3600.0
DEFAULT_INTERVAL = 10.0


class RotationError(Exception):
    """A rotation step that cannot be done; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class RotateOptions:
    key_types: tuple[KeyType, ...] = ("rsa",)
    bits: int = 2048
    selector: str | None = None  # the selector's stem; default YYYYMM of `now`
    directory: str | None = None  # default: the directory of the key being replaced
    grace: timedelta = DEFAULT_GRACE
    wait: bool = True
    timeout: float = DEFAULT_TIMEOUT
    interval: float = DEFAULT_INTERVAL
    key_owner_uid: int | None = None  # the filter's user (UserID): it must read new keys
    require_safe_keys: bool = True


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key created by step 1 (or found pending), with what the admin publishes."""

    entry: NewKeyEntry
    zone_text: str
    txt_path: str | None


@dataclass
class DomainOutcome:
    domain: str
    current: list[KeyTableEntry] = field(default_factory=list)  # the keys signing now
    waiting: list[KeyTableEntry | NewKeyEntry] = field(default_factory=list)  # the new keys
    created: list[NewKey] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # key names still waiting for DNS
    not_visible: list[PublicationCheck] = field(default_factory=list)
    switched: list[str] = field(default_factory=list)  # new active key names
    retiring: list[str] = field(default_factory=list)  # old key names, now retiring
    retire_after: datetime | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return bool(self.switched)


def signing_domains(config: Config, signing_names: set[str]) -> dict[str, list[KeyTableEntry]]:
    """Domain -> the KeyTable entries the SigningTable names for it (the keys that sign)."""
    found: dict[str, list[KeyTableEntry]] = {}
    if config.key_table is None:
        return found
    for name in sorted(signing_names):
        entry = config.key_table.get(name)
        if entry is None or entry.domain == "%":
            continue
        found.setdefault(entry.domain.lower(), []).append(entry)
    return found


def pick_selectors(stem: str, key_types: Sequence[KeyType], taken: set[str]) -> dict[KeyType, str]:
    """Selectors for the new keys: STEM (one key type) or STEM-rsa / STEM-ed25519 (both);
    when one is taken, STEMb, STEMc, ... (a second rotation in the same month)."""
    for suffix in ["", *"bcdefghijklmnopqrstuvwxyz"]:
        base = stem + suffix
        chosen: dict[KeyType, str] = {
            kt: (base if len(key_types) == 1 else f"{base}-{kt}") for kt in key_types
        }
        if not set(chosen.values()) & taken:
            return chosen
    raise RotationError(f"every selector from {stem} to {stem}z is taken; give --selector")


def _generate(key_type: KeyType, bits: int) -> GeneratedKey:
    try:
        return generate_ed25519() if key_type == "ed25519" else generate_rsa(bits)
    except KeyGenerationError as exc:
        raise RotationError(str(exc)) from exc


class DomainRotation:
    """The rotation of one domain's signing keys, step by step."""

    def __init__(
        self,
        config: Config,
        tables: TableWriter,
        state: RotationState,
        state_path: str,
        options: RotateOptions,
        *,
        now: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.tables = tables
        self.state = state
        self.state_path = state_path
        self.options = options
        self.now = now

    def current_keys(self, domain: str) -> list[KeyTableEntry]:
        keys = signing_domains(self.config, self.tables.signing_key_names()).get(domain, [])
        if not keys:
            raise RotationError(
                f"no SigningTable entry names a KeyTable key of {domain}: nothing to rotate"
            )
        return keys

    def pending_keys(self, domain: str) -> list[KeyTableEntry]:
        """Keys a previous run created and left waiting for DNS."""
        assert self.config.key_table is not None
        found = []
        for record in self.state.for_domain(domain, KeyState.PENDING):
            entry = self.config.key_table.get(record.key_name)
            if entry is not None and entry.key_path is not None:
                found.append(entry)
        return found

    # -- step 1 --

    def create(self, domain: str, current: Sequence[KeyTableEntry]) -> list[NewKey]:
        assert self.config.key_table is not None
        options = self.options
        problem = name_problem("domain", domain)
        if problem is not None:
            raise RotationError(problem)
        taken = {e.selector for e in self.config.key_table if e.domain.lower() == domain}
        taken |= {k.selector for k in self.state.for_domain(domain)}
        stem = options.selector or self.now().strftime("%Y%m")
        problem = name_problem("selector", stem)
        if problem is not None:
            raise RotationError(problem)
        selectors = pick_selectors(stem, options.key_types, taken)
        directory = options.directory or _key_directory(current)
        if directory is None:
            raise RotationError(
                f"the keys of {domain} are inline in the KeyTable: give --directory for new ones"
            )
        owner = _key_owner(current)
        created: list[NewKey] = []
        files: list[NewFile] = []
        for key_type, selector in selectors.items():
            key = _generate(key_type, options.bits)
            stem_path = Path(directory) / f"{domain}.{selector}"
            private_path = stem_path.with_name(stem_path.name + ".private")
            txt_path = stem_path.with_name(stem_path.name + ".txt")
            zone = genkey_txt(
                selector,
                domain,
                key.public_key_b64,
                KeyRecordOptions(key_type=key_type),
                append_domain=True,
            )
            files.append(NewFile(private_path, key.private_pem, 0o600, exact_mode=True))
            files.append(NewFile(txt_path, zone.encode("ascii"), 0o644, exact_mode=False))
            entry = NewKeyEntry(
                f"{selector}._domainkey.{domain}", domain, selector, str(private_path)
            )
            created.append(NewKey(entry, zone, str(txt_path)))
        try:
            install_files(files, force=False)
        except KeyFileExistsError as exc:
            raise RotationError(f"{exc.filename} exists; not overwriting a key") from exc
        except OSError as exc:
            raise RotationError(f"{exc.filename}: {exc.strerror or exc}") from exc
        try:
            if owner is not None:
                for new in files:
                    _chown_like(new.path, owner)
            for new_key in created:
                self._check_usable(new_key.entry.key_path)
            self.tables.add_keys([k.entry for k in created])
            self.tables.commit()
        except (RotationError, TableWriteError, OSError) as exc:
            for new in files:
                Path(new.path).unlink(missing_ok=True)
            if isinstance(exc, RotationError):
                raise
            raise RotationError(str(exc)) from exc
        since = self.now()
        for new_key in created:
            e = new_key.entry
            self.state.set(KeyRecordState(e.name, domain, e.selector, KeyState.PENDING, since))
        self.state.write(self.state_path)
        return created

    def _check_usable(self, path: str) -> None:
        """The daemon, running as the filter's user, must be able to load the new key."""
        uid = self.options.key_owner_uid
        if uid is not None and uid != 0:
            blocked = unreadable_by(uid, path)
            if blocked is not None:
                raise RotationError(
                    f"the filter's user (uid {uid}) could not read the new key {path} "
                    f"(stopped at {blocked}): give the key directory to that user"
                )
        if not self.options.require_safe_keys:
            return
        report = check_key_file(path, self.options.key_owner_uid)
        if not report.safe:
            raise RotationError(
                f"the new key {path} would be refused by RequireSafeKeys: "
                + "; ".join(report.problems)
            )

    # -- step 2 --

    async def wait_visible(
        self,
        keys: Sequence[KeyTableEntry | NewKeyEntry],
        lookup_factory: Callable[[], TxtLookup],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> list[PublicationCheck]:
        """Poll until every key's record matches it; the checks still failing at the
        timeout (an empty list: all visible)."""
        loaded = [(k.selector, k.domain, _load_key(k.key_path)) for k in keys]
        deadline = time.monotonic() + self.options.timeout
        while True:
            # A fresh lookup each round: a cached "missing" must not outlive the wait.
            lookup = lookup_factory()
            checks = [await check_publication(lookup, s, d, key) for s, d, key in loaded]
            failing = [c for c in checks if c.state is not Publication.MATCHES]
            if not failing or time.monotonic() >= deadline:
                return failing
            await sleep(min(self.options.interval, max(0.0, deadline - time.monotonic())))

    # -- step 3 --

    def switch(
        self, outcome: DomainOutcome, current: Sequence[KeyTableEntry], new: Sequence[str]
    ) -> None:
        """Point the SigningTable at `new`; the other `current` keys start retiring."""
        old = [e for e in current if e.name not in new]
        try:
            self.tables.switch_keys([e.name for e in old], new)
            self.tables.commit()
        except (TableWriteError, OSError) as exc:
            raise RotationError(str(exc)) from exc
        since = self.now()
        until = since + self.options.grace
        for name in new:
            self.state.move(name, KeyState.ACTIVE, since)
        for entry in old:
            if self.state.get(entry.name) is None:  # a key made before dkimd keys
                self.state.set(
                    KeyRecordState(
                        entry.name, outcome.domain, entry.selector, KeyState.RETIRING, since, until
                    )
                )
            else:
                self.state.move(entry.name, KeyState.RETIRING, since, until)
        self.state.write(self.state_path)
        outcome.switched = list(new)
        outcome.retiring = [e.name for e in old]
        outcome.retire_after = until

    # -- all of it --

    def prepare(self, domain: str) -> DomainOutcome:
        """Step 1, or what a previous run left pending: the keys to wait for."""
        outcome = DomainOutcome(domain.lower().rstrip("."))
        outcome.current = self.current_keys(outcome.domain)
        pending = self.pending_keys(outcome.domain)
        if pending:
            outcome.notes.append(
                "resuming: " + ", ".join(e.name for e in pending) + " created earlier"
            )
            outcome.waiting = list(pending)
        else:
            outcome.created = self.create(outcome.domain, outcome.current)
            outcome.waiting = [k.entry for k in outcome.created]
        return outcome

    async def finish(
        self, outcome: DomainOutcome, lookup_factory: Callable[[], TxtLookup]
    ) -> DomainOutcome:
        """Steps 2 and 3: wait for the records (unless told not to), then switch."""
        names = [k.name for k in outcome.waiting]
        if self.options.wait:
            failing = await self.wait_visible(outcome.waiting, lookup_factory)
            if failing:
                outcome.pending = names
                outcome.not_visible = failing
                return outcome
        self.switch(outcome, outcome.current, names)
        return outcome

    async def run(self, domain: str, lookup_factory: Callable[[], TxtLookup]) -> DomainOutcome:
        return await self.finish(self.prepare(domain), lookup_factory)


def _key_directory(current: Sequence[KeyTableEntry]) -> str | None:
    for entry in current:
        if entry.key_path is not None and "%" not in entry.key_path:
            return os.path.dirname(os.path.abspath(entry.key_path))
    return None


def _key_owner(current: Sequence[KeyTableEntry]) -> tuple[int, int] | None:
    """The owner of the key being replaced: the filter reads the new key as that user."""
    for entry in current:
        if entry.key_path is not None and "%" not in entry.key_path:
            try:
                st = os.stat(entry.key_path)
            except OSError:
                continue
            return st.st_uid, st.st_gid
    return None


def _chown_like(path: Path, owner: tuple[int, int]) -> None:
    st = os.stat(path)
    if (st.st_uid, st.st_gid) == owner:
        return
    try:
        os.chown(path, *owner)
    except PermissionError as exc:
        raise RotationError(
            f"cannot give {path} the owner of the key it replaces (uid {owner[0]}): "
            "run as root or fix its owner"
        ) from exc


def _load_key(path: str | None) -> PrivateKey:
    if path is None:
        raise RotationError("a pending key has no key file")
    try:
        return load_private_key_file(path)
    except (KeyLoadError, OSError) as exc:
        raise RotationError(f"cannot load the new key {path}: {exc}") from exc
