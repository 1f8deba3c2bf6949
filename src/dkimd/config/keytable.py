"""KeyTable and SigningTable, with OpenDKIM's lookup rules (opendkim.c).

KeyTable: each entry maps a key name to `domain:selector:key` (dkimf_add_signrequest):

* `domain` consisting solely of `%` means the sender's domain, filled in per message;
* `key` starting with `/`, `./` or `../` is the path of a private key file (a `%` in it is
  replaced by the sender's domain, dkimf_reptoken); anything else is the key itself, PEM or
  base64-encoded DER;
* the value is split at the first two colons, so the key part may contain colons;
* OpenDKIM's development branch adds an optional fourth field naming the signing algorithm
  (`example.com:mail:/etc/dkimkeys/mail.private:ed25519-sha256`), which overrides
  SignatureAlgorithm for that key. A last `:` field shaped like an algorithm name
  (`word-shaNNN`) is taken as that field; one that is not rsa-sha256 or ed25519-sha256
  refuses the configuration, as the development branch does at start (rsa-sha1 too: dkimd
  does not make RFC 8301's forbidden signatures).
KeyTable lookups are case-sensitive (OpenDKIM opens it without DKIMF_DB_FLAG_ICASE).

SigningTable: each entry maps a sender pattern to `keyname[:signer]`
(dkimf_apply_signtable). A key name of just `%` means "the sender's domain"; in the signer
every `%` is replaced by the sender's domain. Lookups are case-blind and a non-ASCII address
never matches (DKIMF_DB_FLAG_ICASE | DKIMF_DB_FLAG_ASCIIONLY).

* `refile:` table: the address `user@domain` is matched against the patterns in file order
  (e.g. `*@example.com`, `*@*.example.com`).
* any other table: these keys are tried in order: `user@domain`, `domain`, then for each
  parent of the domain `user@.parent` and `.parent` (`foo.example.com` gives
  `user@.example.com`, `.example.com`, `user@.com`, `.com`), then `user@*`, finally `*`.
* only the first match is used unless MultipleSignatures is on, then all of them, in order.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from dkimd.config.datasets import PER_LOOKUP_KINDS, Dataset, DatasetEntry, DatasetKind
from dkimd.config.problems import Problem, Severity

__all__ = [
    "KEYTABLE_ALGORITHMS",
    "KeyTable",
    "KeyTableAlgorithmError",
    "KeyTableEntry",
    "SigningMatch",
    "SigningTable",
    "parse_keytable_value",
    "split_address",
]


@dataclass(frozen=True, slots=True)
class KeyTableEntry:
    """One KeyTable record. `key_path` or `key_data` is set, never both.

    `domain` may be "%" and `key_path` may contain "%" until `resolve()` fills in the
    sender's domain.
    """

    name: str
    domain: str
    selector: str
    key_path: str | None
    key_data: bytes | None
    file: str | None = None
    line: int | None = None
    algorithm: str | None = None  # the fourth field; None: SignatureAlgorithm / the key type

    @property
    def needs_sender_domain(self) -> bool:
        return self.domain == "%" or (self.key_path is not None and "%" in self.key_path)

    def resolve(self, sender_domain: str) -> KeyTableEntry:
        """This entry with `%` replaced by the sender's domain (in the domain and path)."""
        if not self.needs_sender_domain:
            return self  # immutable, and dataclasses.replace costs ~10 us a message
        domain = sender_domain if self.domain == "%" else self.domain
        path = self.key_path.replace("%", sender_domain) if self.key_path else self.key_path
        return replace(self, domain=domain, key_path=path)

    @property
    def location(self) -> str:
        if self.file is None:
            return "(KeyTable)"
        return f"{self.file}:{self.line}"


KEYTABLE_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
_ALGORITHM_SHAPE = re.compile(r"[a-z0-9]+-sha[0-9]+", re.IGNORECASE)


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../"))


class KeyTableAlgorithmError(ValueError):
    """The fourth KeyTable field names an algorithm dkimd cannot sign with."""


def split_algorithm(key: str) -> tuple[str, str | None]:
    """`key[:algorithm]` -> (key, algorithm or None); raises KeyTableAlgorithmError."""
    head, colon, last = key.rpartition(":")
    if not colon or not _ALGORITHM_SHAPE.fullmatch(last.strip()):
        return key, None
    algorithm = last.strip().lower()
    if algorithm == "rsa-sha1":
        raise KeyTableAlgorithmError(
            "rsa-sha1 signatures are forbidden by RFC 8301 and rejected by most verifiers"
        )
    if algorithm not in KEYTABLE_ALGORITHMS:
        raise KeyTableAlgorithmError(
            f'unknown signing algorithm "{last.strip()}" (use '
            + ", ".join(KEYTABLE_ALGORITHMS)
            + ")"
        )
    return head.strip(), algorithm


def parse_keytable_value(
    name: str, value: str | None, file: str | None = None, line: int | None = None
) -> KeyTableEntry | str:
    """Parse `domain:selector:key[:algorithm]`; returns the entry, or an error message.

    An unknown algorithm in the fourth field raises KeyTableAlgorithmError: unlike a
    malformed line, it refuses the configuration.
    """
    if not value:
        return f'KeyTable entry "{name}" has no value (expected domain:selector:keyfile)'
    parts = value.split(":", 2)
    if len(parts) != 3:
        return f'KeyTable entry "{name}": "{value}" is not domain:selector:keyfile'
    domain, selector, key = (p.strip() for p in parts)
    key, algorithm = split_algorithm(key)
    if not domain or not selector or not key:
        return f'KeyTable entry "{name}": empty domain, selector or key in "{value}"'
    if _looks_like_path(key):
        return KeyTableEntry(name, domain, selector, key, None, file, line, algorithm)
    # Inline key: PEM text or base64 DER; kept as bytes for dkim.keys.load_private_key.
    if key.startswith("-----BEGIN"):
        return KeyTableEntry(name, domain, selector, None, key.encode(), file, line, algorithm)
    try:
        der = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return (
            f'KeyTable entry "{name}": "{key[:40]}" is neither a key file path '
            "(starting with /, ./ or ../) nor a base64 key"
        )
    return KeyTableEntry(name, domain, selector, None, der, file, line, algorithm)


class KeyTable:
    """The KeyTable data set, parsed: key name -> `KeyTableEntry`.

    A line whose value is not `domain:selector:key` does not stop OpenDKIM from starting:
    it is kept here as broken (`broken(name)` says why), and a message whose SigningTable
    match names it is tempfailed (opendkim.c: "error loading key"). As in OpenDKIM the first
    line for a name wins, broken or not.
    """

    __slots__ = ("_broken", "dataset", "entries")

    def __init__(
        self,
        dataset: Dataset,
        entries: dict[int, KeyTableEntry],
        broken: dict[int, str] | None = None,
    ) -> None:
        self.dataset = dataset
        self.entries = entries  # keyed by id() of the dataset entry, see _entry_for
        self._broken = broken or {}  # id() of the dataset entry -> why it cannot be used

    @classmethod
    def build(cls, dataset: Dataset, option: str = "KeyTable") -> tuple[KeyTable, list[Problem]]:
        problems: list[Problem] = []
        entries: dict[int, KeyTableEntry] = {}
        broken: dict[int, str] = {}
        for raw in dataset.entries:
            try:
                parsed = parse_keytable_value(raw.key, raw.value, raw.file, raw.line)
            except KeyTableAlgorithmError as exc:
                broken[id(raw)] = str(exc)
                problems.append(
                    Problem(
                        raw.file,
                        raw.line,
                        Severity.ERROR,
                        f'KeyTable entry "{raw.key}": {exc}',
                        option=option,
                    )
                )
                continue
            if isinstance(parsed, str):
                broken[id(raw)] = parsed
                problems.append(
                    Problem(
                        raw.file,
                        raw.line,
                        Severity.WARNING,
                        f"{parsed}; messages signed with it are tempfailed",
                        option=option,
                        fails_messages=True,
                    )
                )
                continue
            entries[id(raw)] = parsed
            if parsed.key_path is not None and "%" not in parsed.key_path:
                if not os.path.isfile(parsed.key_path):
                    problems.append(
                        Problem(
                            raw.file,
                            raw.line,
                            Severity.WARNING,
                            f'key file "{parsed.key_path}" for "{raw.key}" does not exist',
                            option=option,
                        )
                    )
                elif not os.access(parsed.key_path, os.R_OK):
                    problems.append(
                        Problem(
                            raw.file,
                            raw.line,
                            Severity.WARNING,
                            f'key file "{parsed.key_path}" for "{raw.key}" is not readable',
                            option=option,
                        )
                    )
        return cls(dataset, entries, broken), problems

    def _entry_for(self, raw: DatasetEntry | None, name: str) -> KeyTableEntry | None:
        if raw is None:
            return None
        entry = self.entries.get(id(raw))
        if entry is None:
            if self.dataset.kind not in PER_LOOKUP_KINDS:
                return None
            # A lua: or remote KeyTable is asked per lookup: its answer is parsed as a line.
            try:
                parsed = parse_keytable_value(raw.key, raw.value, raw.file, raw.line)
            except KeyTableAlgorithmError:
                return None  # broken() says why
            return None if isinstance(parsed, str) else parsed
        # A refile KeyTable matches names by pattern: report the name asked for.
        return entry if entry.name == name else replace(entry, name=name)

    def get(self, name: str) -> KeyTableEntry | None:
        """The key called `name` (case-sensitive, as in OpenDKIM), or None."""
        return self._entry_for(self.dataset.match(name), name)

    def broken(self, name: str) -> str | None:
        """Why the entry called `name` cannot be used, or None (a good entry, or none)."""
        raw = self.dataset.match(name)
        if raw is None:
            return None
        if self.dataset.kind in PER_LOOKUP_KINDS:
            try:
                parsed = parse_keytable_value(raw.key, raw.value, raw.file, raw.line)
            except KeyTableAlgorithmError as exc:
                return str(exc)
            return parsed if isinstance(parsed, str) else None
        return self._broken.get(id(raw))

    def __contains__(self, name: object) -> bool:
        """Whether the table has a line for `name`, usable or broken."""
        return isinstance(name, str) and self.dataset.match(name) is not None

    def __iter__(self) -> Iterator[KeyTableEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)


def split_address(address: str) -> tuple[str, str]:
    """`user@domain` -> (user, domain), splitting at the last `@`; no `@` -> ("", address)."""
    user, at, domain = address.rpartition("@")
    return (user, domain) if at else ("", address)


@dataclass(frozen=True, slots=True)
class SigningMatch:
    """A SigningTable hit: which key to use, the optional signer (i=), and why."""

    key_name: str  # "%" already replaced by the sender's domain
    signer: str | None  # "%" already replaced; None when the entry gives none
    matched: str  # the lookup key (file:, csl:) or the pattern (refile:) that matched
    file: str | None
    line: int | None


class SigningTable:
    """The SigningTable data set with OpenDKIM's lookup order."""

    __slots__ = ("dataset",)

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def candidate_keys(self, user: str, domain: str) -> list[str]:
        """The keys a non-refile table is searched with, in order (dkimf_apply_signtable)."""
        keys = [f"{user}@{domain}", domain]
        dot = domain.find(".")
        while dot != -1:
            parent = domain[dot:]
            keys += [f"{user}@{parent}", parent]
            dot = domain.find(".", dot + 1)
        keys += [f"{user}@*", "*"]
        return keys

    def _hit(self, entry: DatasetEntry, matched: str, domain: str) -> SigningMatch:
        value = entry.value or ""
        key_name, colon, signer = value.partition(":")
        if key_name == "%":
            key_name = domain
        return SigningMatch(
            key_name,
            signer.replace("%", domain) if colon and signer else None,
            matched,
            entry.file,
            entry.line,
        )

    def lookup(self, user: str, domain: str, *, multiple: bool = False) -> list[SigningMatch]:
        """The signatures to make for sender `user@domain`: the first match, or all of them
        in order when `multiple` (MultipleSignatures) is set."""
        hits: list[SigningMatch] = []
        if self.dataset.kind is DatasetKind.REFILE:
            address = f"{user}@{domain}"
            entries = self.dataset.match_all(address)
            hits = [self._hit(e, e.key, domain) for e in entries]
        else:
            candidates = self.candidate_keys(user, domain)
            self.dataset.prefetch(candidates)  # a remote table fetches them in one round
            for key in candidates:
                entry = self.dataset.match(key)
                if entry is not None:
                    hits.append(self._hit(entry, key, domain))
                    if not multiple:
                        break
        return hits if multiple else hits[:1]

    def lookup_address(self, address: str, *, multiple: bool = False) -> list[SigningMatch]:
        user, domain = split_address(address)
        return self.lookup(user, domain, multiple=multiple)

    def first(self, address: str) -> SigningMatch | None:
        hits = self.lookup_address(address)
        return hits[0] if hits else None

    def check_against(self, keys: KeyTable, option: str = "SigningTable") -> list[Problem]:
        """A problem for each entry naming a key the KeyTable doesn't have (except `%`).

        OpenDKIM starts with such a table and tempfails the messages the entry matches
        ("signing table references unknown key"): warnings that fail messages, not errors.
        A KeyTable behind a server is not asked at load (`dkimd check --walk` does it).
        """
        problems: list[Problem] = []
        if keys.dataset.kind is DatasetKind.REMOTE:
            return problems
        for entry in self.dataset.entries:
            value = entry.value or ""
            key_name = value.partition(":")[0]
            if not key_name:
                problems.append(
                    Problem(
                        entry.file,
                        entry.line,
                        Severity.WARNING,
                        f'SigningTable entry "{entry.key}" names no key; '
                        "messages it matches are tempfailed",
                        option=option,
                        fails_messages=True,
                    )
                )
            elif key_name != "%" and key_name not in keys:
                problems.append(
                    Problem(
                        entry.file,
                        entry.line,
                        Severity.WARNING,
                        f'SigningTable entry "{entry.key}" names key '
                        f'"{key_name}", which is not in the KeyTable; '
                        "messages it matches are tempfailed",
                        option=option,
                        fails_messages=True,
                    )
                )
        return problems
