"""Ready signing requests for a sender: which keys the tables name, loaded, checked, kept.

`SigningKeys.for_sender(address)` answers with the `SigningRequest`s to sign with (and
why any key the tables name cannot be used). One store, keyed by key file path and its
stat stamp: a key file is read the first time it is needed (or at start-up by `preload`)
and kept with the requests made from it; each use re-stats the file, so a rotated key is
picked up and a removed or loosened one gives a clear per-message problem instead of a
crash or silent reuse. RequireSafeKeys judges files as OpenDKIM does
(dkimd.keytools.keyfile.check_key_file).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from dkimd import metrics
from dkimd.config import Condition, Config, KeySource, KeyTableEntry
from dkimd.config.datasets import DatasetKind
from dkimd.dkim import KeyLoadError, PrivateKey, SigningRequest, load_private_key
from dkimd.keytools.keyfile import check_key_file


@dataclass(frozen=True, slots=True)
class KeyProblem:
    """Why a key the policy asked for cannot be used; `condition` picks the On-* action."""

    key_name: str
    condition: Condition
    message: str
    # The key loads and OpenDKIM takes it at end of headers; libopendkim refuses to sign
    # with it at end of message (a key under MinimumKeyBits): the message fails there.
    at_end: bool = False


@dataclass(frozen=True, slots=True)
class RequestShape:
    """What every signature of one configuration shares: all but the key, d=, s= and i=."""

    header_canon: str = "relaxed"
    body_canon: str = "relaxed"
    signed_headers: tuple[str, ...] | None = None
    oversign_headers: tuple[str, ...] = ("from",)
    ttl: int | None = None
    #: SignatureAlgorithm: used for RSA keys when it names an RSA algorithm.
    rsa_algorithm: str = "rsa-sha256"
    #: Tags every signature carries after i= (RequestReports: r=y).
    extension_tags: tuple[tuple[str, str], ...] = ()
    #: MaximumSignedBytes: sign at most this much of the body, with l=.
    max_body_bytes: int | None = None


# (inode, size, mtime_ns, ctime_ns, mode): ctime also moves on chown and on a rewrite that
# restores size and mtime, so RequireSafeKeys is judged again then. None: an inline key.
_Stamp = tuple[int, int, int, int, int] | None

# Who signs with a loaded key: KeyTable entry name, d=, s=, i=.
_Use = tuple[str, str, str, str | None]


@dataclass(slots=True)
class _Loaded:
    """One key as read, and the requests made from it (dropped with it when it changes)."""

    stamp: _Stamp
    key: PrivateKey
    requests: dict[_Use, SigningRequest | KeyProblem] = field(default_factory=dict)


# What the tables say for one sender: a KeyTable entry (with `%` filled in) and the i= signer
# to sign with, or why a SigningTable match cannot sign.
_Route = tuple[KeyTableEntry, str | None] | KeyProblem

# Senders whose routes are remembered; past this the memory starts over, so a flood of
# made-up addresses costs table lookups again, not memory. Addresses longer than any
# valid one (RFC 5321 4.5.3.1: 64 + 1 + 255) are not remembered at all: a From field can
# be ~100 KB, and 4096 of those would be 400 MB.
_ROUTES_KEPT: Final = 4096
_ROUTE_ADDRESS_MAX: Final = 320
# Requests kept per key (one per sender domain when the KeyTable entry's name or d= has
# `%`); past this the memory starts over.
_REQUESTS_PER_KEY: Final = 4096


class SigningKeys:
    """The key store of one configuration (a reload builds a new one)."""

    def __init__(
        self, config: Config, shape: RequestShape | None = None, *, check_uid: int | None = None
    ) -> None:
        self.config = config
        self.shape = shape if shape is not None else RequestShape()
        self.check_uid = check_uid  # judge file safety for the daemon's user, not root
        # Key file path -> the key read from it under that stat stamp.
        self._files: dict[str, _Loaded] = {}
        # KeyTable entries that carry the key itself: parsed once, not per message.
        self._inline: dict[bytes, _Loaded] = {}
        # The tables are fixed for this object's life, so what they say for an address is
        # looked up once; the key files are not (re-stat'ed on every use).
        self._routes: dict[str, tuple[_Route, ...]] = {}
        self._remote_tables = any(
            t is not None and t.dataset.kind is DatasetKind.REMOTE
            for t in (config.signing_table, config.key_table)
        )
        #: KeyTable names whose DNS record is missing or does not match the key, as the
        #: key guard (dkimd.key_guard) last found them; SkipUnpublishedKeys skips these.
        self.unpublished: frozenset[str] = frozenset()

    # -- which keys --

    def for_sender(self, address: str) -> tuple[list[SigningRequest], list[KeyProblem]]:
        """The requests to sign `address`'s mail with, and the problems of keys that cannot."""
        routes = self._routes.get(address)
        if routes is None:
            routes = self._route(address)
            # Tables behind a server change under us: their cache (dkimd.stores) remembers.
            if len(address) <= _ROUTE_ADDRESS_MAX and not self._remote_tables:
                if len(self._routes) >= _ROUTES_KEPT:
                    self._routes.clear()
                self._routes[address] = routes
        if self.config.skip_unpublished_keys:
            routes = self._published(routes)
        requests: list[SigningRequest] = []
        problems: list[KeyProblem] = []
        for route in routes:
            made = route if isinstance(route, KeyProblem) else self._request(*route)
            if isinstance(made, KeyProblem):
                problems.append(made)
            else:
                requests.append(made)
        return requests, problems

    def for_key_name(
        self, key_name: str | None, signer: str | None, sender_domain: str
    ) -> SigningRequest | KeyProblem | None:
        """The request a policy script names (odkim.sign): a KeyTable entry by name, or with
        no name the default key for the sender's domain; None when the configuration has no
        such key."""
        config = self.config
        if key_name is not None:
            if config.key_table is None:
                return None
            entry = config.key_table.get(key_name)
            if entry is None:
                broken = config.key_table.broken(key_name)
                if broken is None:
                    return None
                message = f"error loading key '{key_name}': {broken}"
                return KeyProblem(key_name, Condition.SIGNATURE_ERROR, message)
            return self._request(entry.resolve(sender_domain), signer)
        if config.key_table is not None:
            return None
        default = self._default_entry(sender_domain)
        return None if default is None else self._request(default, signer)

    def _default_entry(self, domain: str) -> KeyTableEntry | None:
        """OpenDKIM's default key (Selector and KeyFile, with or without Domain) signing
        as `domain`, for the paths that name no KeyTable entry (scripts, ResignMailTo)."""
        config = self.config
        if config.single_key is not None:
            selector, key_file = config.single_key.selector, config.single_key.key_file
        else:
            # KeyFile and Selector without Domain: no default signing, but a script or a
            # ResignMailTo hit may sign with that key (d= the sender's domain).
            raw = config.raw
            found = (raw.get("Selector"), raw.get("KeyFile")) if raw is not None else (None, None)
            if found[0] is None or found[1] is None:
                return None
            selector, key_file = found[0].value, found[1].value
        return KeyTableEntry(
            name=f"{selector}._domainkey.{domain}",
            domain=domain,
            selector=selector,
            key_path=key_file,
            key_data=None,
        )

    def _published(self, routes: tuple[_Route, ...]) -> tuple[_Route, ...]:
        """SkipUnpublishedKeys: the routes without keys whose record is not published. The
        routes hold every SigningTable match; without MultipleSignatures the first one left
        is used, as the first match would be (a broken entry still ends the walk)."""
        unpublished = self.unpublished
        kept = tuple(r for r in routes if isinstance(r, KeyProblem) or r[0].name not in unpublished)
        return kept if self.config.multiple_signatures else kept[:1]

    def only_unpublished(self, address: str) -> bool:
        """Whether SkipUnpublishedKeys left `address` with no key at all."""
        if not self.config.skip_unpublished_keys or not self.unpublished:
            return False
        routes = self._routes.get(address) or self._route(address)
        return bool(routes) and not self._published(routes)

    def for_key(self, key_name: str, domain: str) -> SigningRequest | KeyProblem | None:
        """The request for KeyTable entry `key_name`, or with "" the default key for
        `domain` (dkimd.resign); None when there is no such key source at all."""
        config = self.config
        if key_name and config.key_table is not None:
            entry = config.key_table.get(key_name)
            if entry is None:
                return KeyProblem(
                    key_name,
                    Condition.SIGNATURE_ERROR,
                    f"failed to add signature for key '{key_name}'",
                )
            return self._request(entry.resolve(domain), None)
        default = self._default_entry(domain)
        return None if default is None else self._request(default, None)

    def _route(self, address: str) -> tuple[_Route, ...]:
        domain = address.rpartition("@")[2].lower()
        config = self.config
        routes: list[_Route] = []
        if config.key_source is KeySource.TABLES and config.key_table is not None:
            if config.signing_table is not None:
                matches = config.signing_table.lookup_address(
                    address, multiple=config.multiple_signatures or config.skip_unpublished_keys
                )
                wanted = [(m.key_name, m.signer) for m in matches]
            else:
                # KeyTable without SigningTable: OpenDKIM signs with the entry named after
                # the sender's domain, if there is one.
                wanted = [(domain, None)] if domain in config.key_table else []
            for key_name, signer in wanted:
                entry = config.key_table.get(key_name)
                if entry is None:
                    # opendkim.c logs these two, then tempfails the message at EOH.
                    broken = config.key_table.broken(key_name)
                    message = (
                        f"error loading key '{key_name}': {broken}"
                        if broken is not None
                        else f"signing table references unknown key '{key_name}'"
                    )
                    routes.append(KeyProblem(key_name, Condition.SIGNATURE_ERROR, message))
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

    def _request(self, entry: KeyTableEntry, signer: str | None) -> SigningRequest | KeyProblem:
        """The request for `entry` signing as `signer`, made once per key as loaded: a request
        is immutable, so messages share it until the key file changes."""
        loaded = self._load(entry)
        if isinstance(loaded, KeyProblem):
            # Counted here and in preload, the loads for signing; not key_guard's checks.
            metrics.recorder.key_load_error()
            return loaded
        use = (entry.name, entry.domain, entry.selector, signer)
        made = loaded.requests.get(use)
        if made is None:
            made = self._make_request(entry, signer, loaded.key)
            if len(loaded.requests) >= _REQUESTS_PER_KEY:
                loaded.requests.clear()
            loaded.requests[use] = made
        return made

    def _make_request(
        self, entry: KeyTableEntry, signer: str | None, key: PrivateKey
    ) -> SigningRequest | KeyProblem:
        shape = self.shape
        if entry.algorithm is not None:
            algorithm = entry.algorithm
            if not algorithm.startswith(key.key_type + "-"):
                return KeyProblem(
                    entry.name,
                    Condition.SIGNATURE_ERROR,
                    f"KeyTable entry '{entry.name}' names {algorithm} for a {key.key_type} key",
                )
        elif key.key_type == "ed25519":
            algorithm = "ed25519-sha256"
        else:
            wanted = shape.rsa_algorithm
            algorithm = wanted if wanted.startswith("rsa-") else "rsa-sha256"
        try:
            return SigningRequest(
                domain=entry.domain,
                selector=entry.selector,
                key=key,
                header_canon=shape.header_canon,
                body_canon=shape.body_canon,
                signed_headers=shape.signed_headers,
                oversign_headers=shape.oversign_headers,
                identity=signer,
                ttl=shape.ttl,
                algorithm=algorithm,
                extension_tags=shape.extension_tags,
                max_body_bytes=shape.max_body_bytes,
            )
        except Exception as exc:  # a bad d=, s= or i=: a config/key problem, not a crash
            return KeyProblem(entry.name, Condition.SIGNATURE_ERROR, str(exc))

    # -- loading --

    def load(self, entry: KeyTableEntry) -> PrivateKey | KeyProblem:
        """The entry's private key, or why it cannot be used. Never raises."""
        loaded = self._load(entry)
        return loaded if isinstance(loaded, KeyProblem) else loaded.key

    def _load(self, entry: KeyTableEntry) -> _Loaded | KeyProblem:
        data = entry.key_data
        if data is not None:
            known = self._inline.get(data)
            if known is not None:
                return known
            result = self._checked(entry, lambda: load_private_key(data))
            if isinstance(result, KeyProblem):
                return result
            loaded = self._inline[data] = _Loaded(None, result)  # bounded by the KeyTable
            return loaded
        path = entry.key_path or ""
        files = self._files
        try:
            st = os.stat(path)
        except PermissionError:
            # Keys are read as root at start-up; the daemon's user may not be able to look
            # into a root-only key directory afterwards. The key we read then stays valid.
            if path in files:
                return files[path]
            return KeyProblem(
                entry.name,
                Condition.SIGNATURE_ERROR,
                f"can't load key from {path}: permission denied",
            )
        except OSError as exc:
            files.pop(path, None)
            return KeyProblem(
                entry.name,
                Condition.SIGNATURE_ERROR,
                f"can't load key from {path}: {exc.strerror or exc}",
            )
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        cached = files.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached
        if self.config.require_safe_keys:
            report = check_key_file(path, uid=self.check_uid)
            if not report.safe:
                files.pop(path, None)
                reasons = "; ".join(report.problems)
                return KeyProblem(
                    entry.name, Condition.SECURITY, f"key data is not secure: {reasons}"
                )
        result = self._checked(entry, lambda: _read_key(path))
        if isinstance(result, KeyProblem):
            files.pop(path, None)
            return result
        # Not bounded: only files that exist and hold a key get here, and one dropped after
        # the privilege drop might not be readable again.
        loaded = files[path] = _Loaded(stamp, result)
        return loaded

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
                at_end=True,
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
                metrics.recorder.key_load_error()
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
