"""OpenDKIM data sets: `file:`, `refile:`, `csl:` (opendkim/opendkim-db.c, dkimf_db_open/get).

A data set option's value names its type and location:

* `file:PATH` -- one entry per line: the key is the first run of non-blank characters, the
  value (optional) is the rest of the line, trimmed. Lookups compare whole keys.
* `refile:PATH` -- the same layout, but each key is a wildcard pattern. OpenDKIM turns it into
  a POSIX extended regular expression anchored at both ends (util.c dkimf_mkregexp): `*`
  becomes `.*`, `.` and `+` are escaped, every other character is passed through as is (so
  `[a-z]` or `(a|b)` work as regular expressions). Lookups try the patterns in file order;
  the first match wins, and `lookup_all` returns every match in order (MultipleSignatures).
* `csl:a,b=c,...` -- a comma-separated list in the option value itself; `key=value` gives a
  value.
* no prefix: a value starting with `/` is a `file:`, anything else is a `csl:`. A colon in
  a csl's later entries does not count as a type prefix (`127.0.0.1,::1` is a csl), nor
  does one inside a bracketed IPv6 address (`[fd00:368::]/40,10.0.0.0/8`).

File details that matter, all as in dkimf_db_open():

* `#` starts a comment anywhere on a line (no escaping); blank lines are skipped; there is no
  line continuation.
* in a `refile:` a line that starts with white space is silently ignored by OpenDKIM (its
  pattern comes out empty). We ignore it too, but say so with a warning.
* whether keys are compared case-insensitively depends on the option (the
  DKIMF_DB_FLAG_ICASE flag in dkimf_config_load): host lists, SigningTable, Domain and most
  others are case-blind; KeyTable and MacroList are not. Case folding is ASCII-only, like
  strcasecmp() and REG_ICASE in the C locale.
* OpenDKIM returns only the first of several `file:` entries with the same key; we do the
  same and warn about the later ones.

Differences from OpenDKIM, on purpose: lines are not cut into 1023-byte pieces (OpenDKIM's
fgets() buffer), and the OpenDKIM data set types dkimd lacks (`db:`, `mdb:`, `erlang:`,
...) are rejected with an error naming the type instead of being opened. `lua:PATH` (a
script answers each lookup) is `dkimd.lua.dataset`; the data sets behind a server (`dsn:`,
`ldap:`, `memcache:`, `redis:`) are `dkimd.stores` (dkimd.stores.dataset).
"""

from __future__ import annotations

import enum
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dkimd.config.problems import Problem, Severity
from dkimd.config.softstart import failure_severity

__all__ = [
    "PER_LOOKUP_KINDS",
    "UNSUPPORTED_TYPES",
    "Dataset",
    "DatasetEntry",
    "DatasetKind",
    "DatasetSpec",
    "glob_to_regex",
    "open_dataset",
    "parse_dataset_lines",
    "parse_dataset_spec",
]

# OpenDKIM's dbtypes[] table beyond what we read. "repute", "socket", "mdb" and "erlang" are
# FFR/optional back-ends; listing them gives a clearer message than "unknown type".
UNSUPPORTED_TYPES = frozenset({"db", "repute", "socket", "mdb", "erlang"})

_ASCII_SPACE = " \t\n\v\f\r"  # C isspace() in the C locale
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, as strcasecmp() compares them."""
    return text.translate(_ASCII_LOWER)


class DatasetKind(enum.Enum):
    FILE = "file"
    REFILE = "refile"
    CSL = "csl"
    LUA = "lua"  # a script answers each lookup (dkimd.lua.dataset)
    REMOTE = "remote"  # dsn:, ldap:, memcache:, redis: ... (dkimd.stores.dataset)


#: Kinds answered per lookup rather than read whole at load: they cannot be listed.
PER_LOOKUP_KINDS = frozenset({DatasetKind.LUA, DatasetKind.REMOTE})


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """A parsed data set name: its kind and the path (file kinds) or list text (csl)."""

    kind: DatasetKind
    argument: str
    text: str  # the option value as written


class DatasetSpecError(ValueError):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def parse_dataset_spec(text: str) -> DatasetSpec:
    """Split `type:argument` the way dkimf_db_open() does; raises DatasetSpecError."""
    colon = text.find(":")
    comma = text.find(",")
    if colon != -1 and comma != -1 and comma < colon:
        colon = -1  # "a,b:c" is a csl whose later entries contain colons
    if colon != -1 and "[" in text[:colon]:
        # "[fd00:368::]/40,..." is a csl starting with a bracketed IPv6 address, as OpenDKIM's
        # development branch reads it; Debian's 2.11 took "[fd00" for a type and refused it.
        colon = -1
    if colon == -1:
        if text.endswith(".db"):
            # With Berkeley DB compiled in, OpenDKIM opens "/x/y.db" as a db: data set.
            raise DatasetSpecError(
                f'"{text}" names a Berkeley DB (db:) data set, which dkimd does not support',
                "convert it to a flat file and use file: or refile:",
            )
        if text.startswith("/"):
            return DatasetSpec(DatasetKind.FILE, text, text)
        return DatasetSpec(DatasetKind.CSL, text, text)
    type_name = ascii_lower(text[:colon])
    argument = text[colon + 1 :]
    from dkimd.stores import SCHEMES  # a table of names only: no driver is imported

    if type_name in SCHEMES:
        return DatasetSpec(DatasetKind.REMOTE, argument, text)
    for kind in DatasetKind:
        if kind.value == type_name:
            if kind is not DatasetKind.CSL and not argument:
                raise DatasetSpecError(f'data set "{text}" names no file')
            return DatasetSpec(kind, argument, text)
    if type_name in UNSUPPORTED_TYPES:
        raise DatasetSpecError(
            f'data set type "{type_name}:" is not supported by dkimd',
            "use file:, refile: or csl:",
        )
    # A value with "@" may be a server URL missing its "dsn:" (pgsql://user:password@...):
    # the message, logged and shown by `dkimd check`, then names the type alone.
    shown = f' in "{text}"' if "@" not in text else ""
    raise DatasetSpecError(
        f'unknown data set type "{text[:colon]}:"{shown}',
        "use file:, refile: or csl: (a list starting with an IPv6 address needs csl:;"
        " an SQL server, dsn:backend://...)",
    )


def glob_to_regex(pattern: str) -> str:
    """OpenDKIM's dkimf_mkregexp(): `*` -> `.*`, escape `.` and `+`, keep the rest.

    A run of `*` becomes one `.*` (the same language): Python's backtracking engine takes
    exponential time on `.*.*.*...$` against a key that does not match, where POSIX
    regexec() does not (found by tests/fuzz/test_fuzz_config.py).
    """
    out = ["^"]
    for ch in pattern:
        if ch == "*":
            if out[-1] != ".*":
                out.append(".*")
        elif ch in ".+":
            out.append("\\" + ch)
        else:
            out.append(ch)
    out.append("$")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class DatasetEntry:
    """One key (or pattern) with its optional value and the place it was written."""

    key: str
    value: str | None
    file: str | None
    line: int | None
    pattern: re.Pattern[str] | None = None  # refile: the compiled pattern for `key`

    @property
    def location(self) -> str:
        if self.file is None:
            return "(default)"
        return self.file if self.line is None else f"{self.file}:{self.line}"


class Dataset:
    """An opened data set: lookups by exact key (file:, csl:) or by pattern (refile:)."""

    __slots__ = ("_index", "ascii_only", "case_insensitive", "entries", "kind", "path", "spec")

    def __init__(
        self,
        spec: str,
        kind: DatasetKind,
        entries: Sequence[DatasetEntry],
        *,
        path: str | None = None,
        case_insensitive: bool = True,
        ascii_only: bool = False,
    ) -> None:
        self.spec = spec
        self.kind = kind
        self.path = path
        self.entries: tuple[DatasetEntry, ...] = tuple(entries)
        self.case_insensitive = case_insensitive
        self.ascii_only = ascii_only  # SigningTable: a non-ASCII query never matches
        self._index: dict[str, DatasetEntry] = {}
        if kind is not DatasetKind.REFILE:
            for entry in self.entries:
                self._index.setdefault(self._fold(entry.key), entry)  # the first one wins

    @classmethod
    def from_csl(cls, text: str, *, case_insensitive: bool = True) -> Dataset:
        """A csl: data set from list text, e.g. the built-in InternalHosts default."""
        entries, _ = parse_dataset_lines(DatasetKind.CSL, text, None, case_insensitive)
        return cls(f"csl:{text}", DatasetKind.CSL, entries, case_insensitive=case_insensitive)

    @classmethod
    def empty(cls, spec: str = "csl:") -> Dataset:
        return cls(spec, DatasetKind.CSL, ())

    def describe(self) -> str:
        """The option value as output may show it (a store's URL without its password)."""
        return self.spec

    def _fold(self, key: str) -> str:
        return ascii_lower(key) if self.case_insensitive else key

    def _query_ok(self, key: str) -> bool:
        return not (self.ascii_only and not key.isascii())

    def prefetch(self, keys: Sequence[str]) -> None:
        """Say which keys are about to be looked up (a remote set fetches them at once)."""

    def match(self, key: str) -> DatasetEntry | None:
        """The entry `key` selects: the exact key, or the first refile pattern matching it."""
        if not self._query_ok(key):
            return None
        if self.kind is DatasetKind.REFILE:
            for entry in self.entries:
                assert entry.pattern is not None
                if entry.pattern.search(key):
                    return entry
            return None
        return self._index.get(self._fold(key))

    def match_all(self, key: str) -> list[DatasetEntry]:
        """Every entry `key` selects, in file order (only refile can give more than one)."""
        if self.kind is not DatasetKind.REFILE:
            entry = self.match(key)
            return [] if entry is None else [entry]
        if not self._query_ok(key):
            return []
        return [e for e in self.entries if e.pattern is not None and e.pattern.search(key)]

    def lookup(self, key: str) -> str | None:
        """The value for `key`: None if absent, "" if the entry has no value."""
        entry = self.match(key)
        if entry is None:
            return None
        return entry.value if entry.value is not None else ""

    def lookup_all(self, key: str) -> list[str]:
        return [e.value if e.value is not None else "" for e in self.match_all(key)]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.match(key) is not None

    def keys(self) -> list[str]:
        """The keys (refile: the patterns as written) in file order."""
        return [e.key for e in self.entries]

    def values(self) -> list[str | None]:
        return [e.value for e in self.entries]

    def __iter__(self) -> Iterator[DatasetEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def _identity(self) -> tuple[object, ...]:
        pairs = tuple((e.key, e.value) for e in self.entries)
        return (self.spec, self.kind, self.path, self.case_insensitive, self.ascii_only, pairs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        return self._identity() == other._identity()

    __hash__ = None  # type: ignore[assignment]  # mutable-looking; compare, don't hash

    def __repr__(self) -> str:
        return f"Dataset({self.spec!r}, {len(self.entries)} entries)"


def _split_key_value(line: str) -> tuple[str, str | None]:  # -> (key, value or None)
    """file: layout: key = first non-blank run, value = the rest after the blanks, trimmed."""
    line = line.strip(_ASCII_SPACE)
    for i, ch in enumerate(line):
        if ch in _ASCII_SPACE:
            value = line[i:].strip(_ASCII_SPACE)
            return line[:i], value or None
    return line, None


def _compile(pattern: str, case_insensitive: bool) -> re.Pattern[str] | None:
    flags = re.ASCII | (re.IGNORECASE if case_insensitive else 0)
    try:
        with warnings.catch_warnings():
            # POSIX bracket syntax like "[[:alpha:]]" makes re warn about nested sets.
            warnings.simplefilter("ignore")
            return re.compile(glob_to_regex(pattern), flags)
    except (re.error, RecursionError, OverflowError):
        return None


def parse_dataset_lines(
    kind: DatasetKind,
    text: str,
    source: str | None,
    case_insensitive: bool = True,
    *,
    origin: tuple[str, int] | None = None,
) -> tuple[list[DatasetEntry], list[Problem]]:
    """Parse data set content: a file's text (file:, refile:) or a csl: list.

    `source` is the file name the lines come from (for entries' and problems' locations);
    csl: entries take `origin`, the config line the list was written on. Never raises.
    """
    entries: list[DatasetEntry] = []
    problems: list[Problem] = []

    if kind is DatasetKind.CSL:
        where_file, where_line = origin if origin is not None else (source, None)
        for item in text.split(","):
            name, eq, text_value = item.partition("=")
            name = name.strip(_ASCII_SPACE)
            if not name:
                continue  # strtok_r() skips empty fields
            entries.append(
                DatasetEntry(
                    name, text_value.strip(_ASCII_SPACE) if eq else None, where_file, where_line
                )
            )
        return entries, problems

    first_seen: dict[str, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("#", 1)[0]
        if not line.strip(_ASCII_SPACE):
            continue
        if kind is DatasetKind.REFILE:
            if line[0] in _ASCII_SPACE:
                problems.append(
                    Problem(
                        source,
                        number,
                        Severity.WARNING,
                        "line starts with white space; OpenDKIM ignores it, so does dkimd",
                        "remove the leading blanks",
                    )
                )
                continue
            key, value = _split_key_value(line)
            pattern = _compile(key, case_insensitive)
            if pattern is None:
                problems.append(
                    Problem(source, number, Severity.ERROR, f'cannot compile pattern "{key}"')
                )
                continue
            entries.append(DatasetEntry(key, value, source, number, pattern))
            continue
        key, value = _split_key_value(line)
        folded = ascii_lower(key) if case_insensitive else key
        if folded in first_seen:
            problems.append(
                Problem(
                    source,
                    number,
                    Severity.WARNING,
                    f'duplicate key "{key}"; only the first one '
                    f"(line {first_seen[folded]}) is used",
                )
            )
            continue
        first_seen[folded] = number
        entries.append(DatasetEntry(key, value, source, number))
    return entries, problems


def open_dataset(
    text: str,
    *,
    case_insensitive: bool = True,
    ascii_only: bool = False,
    origin: tuple[str, int] | None = None,
    option: str | None = None,
    soft_start: bool = False,
    remote: Callable[[str], Any] | None = None,
) -> tuple[Dataset | None, list[Problem]]:
    """Open the data set an option value names; never raises.

    `soft_start` is the SoftStart option: whether a failed open stops the start is
    `dkimd.config.softstart`'s rule. `remote` looks up options by name (a loader's `get`),
    for the settings of a data set behind a server (cache, LDAP*).

    Returns the data set (None if it cannot be opened at all) and the problems found.
    Problems about the value itself are placed at `origin` (the config file:line); problems
    inside a data set file at that file's own lines.
    """
    where_file, where_line = origin if origin is not None else (None, None)
    try:
        spec = parse_dataset_spec(text)
    except DatasetSpecError as e:
        return None, [
            Problem(
                where_file,
                where_line,
                Severity.ERROR,
                f"{option}: {e.message}" if option else e.message,
                e.hint,
                option,
            )
        ]
    if spec.kind is DatasetKind.LUA:
        # Imported only when a configuration names one: lupa is an optional extra.
        from dkimd.lua.dataset import open_lua_dataset

        return open_lua_dataset(
            text, spec.argument, case_insensitive=case_insensitive, origin=origin, option=option
        )
    if spec.kind is DatasetKind.REMOTE:
        # Imported only when a configuration names one: the drivers are optional extras.
        from dkimd.stores.dataset import open_remote_dataset

        return open_remote_dataset(
            text,
            case_insensitive=case_insensitive,
            origin=origin,
            option=option,
            soft_start=soft_start,
            options=remote,  # DataSet* and LDAP* options (dkimd.stores.settings)
        )
    if spec.kind is DatasetKind.CSL:
        entries, problems = parse_dataset_lines(
            spec.kind, spec.argument, where_file, case_insensitive, origin=origin
        )
        return Dataset(
            text, spec.kind, entries, case_insensitive=case_insensitive, ascii_only=ascii_only
        ), problems
    path = spec.argument
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "surrogateescape")
    except OSError as e:
        message = f'cannot read data set file "{path}": {e.strerror or e}'
        return None, [
            Problem(
                where_file,
                where_line,
                failure_severity(spec.kind.value, soft_start),
                f"{option}: {message}" if option else message,
                option=option,
            )
        ]
    entries, problems = parse_dataset_lines(spec.kind, data, path, case_insensitive)
    problems = [
        Problem(p.file, p.line, p.severity, p.message, p.hint, p.option or option) for p in problems
    ]
    return Dataset(
        text,
        spec.kind,
        entries,
        path=path,
        case_insensitive=case_insensitive,
        ascii_only=ascii_only,
    ), problems
