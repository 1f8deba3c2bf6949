"""Private keys for signing: which keys a sender gets, loaded and checked once, re-read on change.

A key file is read the first time it is needed (or at start-up by `preload`), then kept in
memory; each use re-stats the file so a rotated key is picked up and a removed or
loosened one gives a clear per-message problem instead of a crash or silent reuse.
RequireSafeKeys judges files as OpenDKIM does (dkimd.keytools.keyfile.check_key_file).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from dkimd.config import Condition, Config, KeySource, KeyTableEntry
from dkimd.dkim import KeyLoadError, PrivateKey, load_private_key
from dkimd.keytools.keyfile import check_key_file


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One signature to make: d=, s=, the key, i= (if the SigningTable names a signer)."""

    key_name: str
    domain: str
    selector: str
    key: PrivateKey
    algorithm: str
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class KeyProblem:
    """Why a key the policy asked for cannot be used; `condition` picks the On-* action."""

    key_name: str
    condition: Condition
    message: str


@dataclass(frozen=True, slots=True)
class _Cached:
    # (inode, size, mtime_ns, ctime_ns, mode): ctime also moves on chown and on a rewrite
    # that restores size and mtime, so RequireSafeKeys is judged again then.
    stamp: tuple[int, int, int, int, int]
    key: PrivateKey


# What the tables say for one sender: a KeyTable entry (with `%` filled in) and the i= signer
# to sign with, or why a SigningTable match cannot sign.
_Route = tuple[KeyTableEntry, str | None] | KeyProblem

# Senders whose routes are remembered; past this the memory starts over, so a flood of
# made-up addresses costs table lookups again, not memory. Addresses longer than any
# valid one (RFC 5321 4.5.3.1: 64 + 1 + 255) are not remembered at all: a From field can
# be ~100 KB, and 4096 of those would be 400 MB.
_ROUTES_KEPT: Final = 4096
_ROUTE_ADDRESS_MAX: Final = 320
# SigningKeys made per (entry, signer); one per KeyTable entry and sender domain in use.
_KEYS_KEPT: Final = 4096


class SigningKeys:
    def __init__(self, config: Config, *, check_uid: int | None = None) -> None:
        self.config = config
        self.check_uid = check_uid  # judge file safety for the daemon's user, not root
        self._cache: dict[str, _Cached] = {}
        # The tables are fixed for this object's life (a reload builds a new one), so what
        # they say for an address is looked up once; the key files are not (load() re-stats
        # them on every use).
        self._routes: dict[str, tuple[_Route, ...]] = {}
        # The SigningKey last made per (entry, signer), handed out again while its key
        # object is the one load() returns: callers can then keep per-key work (a
        # SigningRequest) keyed by it.
        self._made: dict[tuple[str, str, str, str | None, str | None], SigningKey] = {}
        # KeyTable entries that carry the key itself: parsed once, not per message.
        self._inline: dict[bytes, PrivateKey] = {}

    # -- which keys --

    def for_sender(self, address: str) -> tuple[list[SigningKey], list[KeyProblem]]:
        routes = self._routes.get(address)
        if routes is None:
            routes = self._route(address)
            if len(address) <= _ROUTE_ADDRESS_MAX:
                if len(self._routes) >= _ROUTES_KEPT:
                    self._routes.clear()
                self._routes[address] = routes
        keys: list[SigningKey] = []
        problems: list[KeyProblem] = []
        for route in routes:
            if isinstance(route, KeyProblem):
                problems.append(route)
            else:
                self._add(route[0], route[1], keys, problems)
        return keys, problems

    def _route(self, address: str) -> tuple[_Route, ...]:
        domain = address.rpartition("@")[2].lower()
        config = self.config
        routes: list[_Route] = []
        if config.key_source is KeySource.TABLES and config.key_table is not None:
            if config.signing_table is not None:
                matches = config.signing_table.lookup_address(
                    address, multiple=config.multiple_signatures
                )
                wanted = [(m.key_name, m.signer) for m in matches]
            else:
                # KeyTable without SigningTable: OpenDKIM signs with the entry named after
                # the sender's domain, if there is one.
                wanted = [(domain, None)] if domain in config.key_table else []
            for key_name, signer in wanted:
                entry = config.key_table.get(key_name)
                if entry is None:
                    routes.append(
                        KeyProblem(
                            key_name, Condition.SIGNATURE_ERROR, f'key "{key_name}" not in KeyTable'
                        )
                    )
                    continue
                routes.append((entry.resolve(domain), signer))
        elif config.key_source is KeySource.SINGLE_KEY and config.single_key is not None:
            single = config.single_key
            matched = _domain_match(domain, single.domains.keys(), single.subdomains)
            if matched is not None:
                entry = KeyTableEntry(
                    name=f"{single.selector}._domainkey.{matched}",
                    domain=matched,
                    selector=single.selector,
                    key_path=single.key_file,
                    key_data=None,
                )
                routes.append((entry, None))
        return tuple(routes)

    def _add(
        self,
        entry: KeyTableEntry,
        signer: str | None,
        keys: list[SigningKey],
        problems: list[KeyProblem],
    ) -> None:
        loaded = self.load(entry)
        if isinstance(loaded, KeyProblem):
            problems.append(loaded)
            return
        # The path too: with `%` in the path only, senders of two domains share the rest.
        made_key = (entry.name, entry.domain, entry.selector, signer, entry.key_path)
        made = self._made.get(made_key)
        if made is None or made.key is not loaded:
            made = SigningKey(
                key_name=entry.name,
                domain=entry.domain,
                selector=entry.selector,
                key=loaded,
                algorithm=self._algorithm_for(loaded),
                identity=signer,
            )
            if len(self._made) >= _KEYS_KEPT:
                self._made.clear()
            self._made[made_key] = made
        keys.append(made)

    def _algorithm_for(self, key: PrivateKey) -> str:
        wanted = self.config.signature_algorithm
        if key.key_type == "ed25519":
            return "ed25519-sha256"
        return wanted if wanted.startswith("rsa-") else "rsa-sha256"

    # -- loading --

    def load(self, entry: KeyTableEntry) -> PrivateKey | KeyProblem:
        """The entry's private key, or why it cannot be used. Never raises."""
        data = entry.key_data
        if data is not None:
            known = self._inline.get(data)
            if known is not None:
                return known
            result = self._checked(entry, lambda: load_private_key(data))
            if isinstance(result, PrivateKey):
                self._inline[data] = result  # bounded by the KeyTable: data has no `%`
            return result
        path = entry.key_path or ""
        try:
            st = os.stat(path)
        except PermissionError:
            # Keys are read as root at start-up; the daemon's user may not be able to look
            # into a root-only key directory afterwards. The key we read then stays valid.
            if path in self._cache:
                return self._cache[path].key
            return KeyProblem(
                entry.name,
                Condition.SIGNATURE_ERROR,
                f"can't load key from {path}: permission denied",
            )
        except OSError as exc:
            self._cache.pop(path, None)
            return KeyProblem(
                entry.name,
                Condition.SIGNATURE_ERROR,
                f"can't load key from {path}: {exc.strerror or exc}",
            )
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        cached = self._cache.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached.key
        if self.config.require_safe_keys:
            report = check_key_file(path, uid=self.check_uid)
            if not report.safe:
                self._cache.pop(path, None)
                reasons = "; ".join(report.problems)
                return KeyProblem(
                    entry.name, Condition.SECURITY, f"key data is not secure: {reasons}"
                )
        result = self._checked(entry, lambda: _read_key(path))
        if isinstance(result, PrivateKey):
            self._cache[path] = _Cached(stamp, result)
        return result

    def _checked(
        self, entry: KeyTableEntry, read: Callable[[], PrivateKey]
    ) -> PrivateKey | KeyProblem:
        try:
            key = read()
        except KeyLoadError as exc:
            # KeyLoadError carries a reason, never key bytes (dkimd.dkim.errors).
            where = entry.key_path or "KeyTable data"
            return KeyProblem(
                entry.name, Condition.SIGNATURE_ERROR, f"can't load key from {where}: {exc}"
            )
        except OSError as exc:
            return KeyProblem(
                entry.name,
                Condition.SIGNATURE_ERROR,
                f"can't load key from {entry.key_path}: {exc.strerror or exc}",
            )
        if key.key_type == "rsa" and key.bits < self.config.minimum_key_bits:
            return KeyProblem(
                entry.name,
                Condition.SIGNATURE_ERROR,
                f"key {entry.key_path or entry.name} is {key.bits} bits, "
                f"below MinimumKeyBits {self.config.minimum_key_bits}",
            )
        return key

    def preload(self) -> list[KeyProblem]:
        """Load every configured key now (start-up, before dropping privileges)."""
        problems: list[KeyProblem] = []
        config = self.config
        entries: list[KeyTableEntry] = []
        if config.key_table is not None:
            entries = [e for e in config.key_table if not e.needs_sender_domain]
        elif config.single_key is not None:
            single = config.single_key
            entries = [
                KeyTableEntry(
                    name=f"KeyFile {single.key_file}",
                    domain="",
                    selector=single.selector,
                    key_path=single.key_file,
                    key_data=None,
                )
            ]
        for entry in entries:
            loaded = self.load(entry)
            if isinstance(loaded, KeyProblem):
                problems.append(loaded)
        return problems


def _read_key(path: str) -> PrivateKey:
    with open(path, "rb") as f:
        return load_private_key(f.read())


def _domain_match(domain: str, domains: list[str], subdomains: bool) -> str | None:
    listed = {d.lower().rstrip(".") for d in domains}
    if domain in listed or "*" in listed:
        return domain
    if subdomains:
        parts = domain.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[i:])
            if parent in listed:
                return parent
    return None
