"""The rotation state file: which key of a domain is pending, active, retiring or retired.

One plain-text line per key, written by `dkimd keys rotate` and `dkimd keys retire` and
meant to be read (and, with care, edited) by the admin:

    # KEY-NAME DOMAIN SELECTOR STATE SINCE [RETIRE-AFTER]
    202612._domainkey.example.com example.com 202612 active 2026-12-04T17:50:00Z
    mail._domainkey.example.com example.com mail retiring 2026-12-04T17:50:00Z 2026-12-11T17:50Z

* pending: in the KeyTable, its record not yet seen in DNS; signs nothing.
* active: the SigningTable names it.
* retiring: signs nothing; its record stays published until RETIRE-AFTER, for mail
  still queued or checked later; then `dkimd keys retire` removes it.
* retired: removed from the KeyTable on SINCE; its record may be deleted from DNS.

Times are UTC, ISO 8601. Moving RETIRE-AFTER changes when the key is retired.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from dkimd.keytools.atomic import replace_file

HEADER = """\
# dkimd keys rotate / retire: the state of each signing key, one line per key.
# pending: in the KeyTable, record not yet seen in DNS, signs nothing; active: signing;
# retiring: signs nothing, record stays published until RETIRE-AFTER; retired: removed.
# Times are UTC. Editing RETIRE-AFTER changes when `dkimd keys retire` removes a key.
# KEY-NAME DOMAIN SELECTOR STATE SINCE [RETIRE-AFTER]
"""

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class KeyState(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    RETIRING = "retiring"
    RETIRED = "retired"


class StateFileError(ValueError):
    """A line of the state file that cannot be read; says where."""


@dataclass(frozen=True, slots=True)
class KeyRecordState:
    """One key's line."""

    key_name: str
    domain: str
    selector: str
    state: KeyState
    since: datetime
    retire_after: datetime | None = None

    def line(self) -> str:
        fields = [
            self.key_name,
            self.domain,
            self.selector,
            self.state.value,
            format_time(self.since),
        ]
        if self.retire_after is not None:
            fields.append(format_time(self.retire_after))
        return " ".join(fields)


def format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is taken as UTC. Raises ValueError."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class RotationState:
    """The lines of a state file, in order; later lines for the same key name win."""

    def __init__(self, keys: Iterable[KeyRecordState] = ()) -> None:
        self._keys: dict[str, KeyRecordState] = {}
        for key in keys:
            self._keys[key.key_name] = key

    @classmethod
    def parse(cls, text: str, source: str = "state file") -> RotationState:
        keys: list[KeyRecordState] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            fields = raw.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"{source}:{number}"
            if len(fields) not in (5, 6):
                raise StateFileError(
                    f"{where}: expected KEY-NAME DOMAIN SELECTOR STATE SINCE [RETIRE-AFTER]"
                )
            try:
                state = KeyState(fields[3].lower())
            except ValueError:
                names = ", ".join(s.value for s in KeyState)
                raise StateFileError(f"{where}: unknown state {fields[3]!r} ({names})") from None
            try:
                since = parse_time(fields[4])
                until = parse_time(fields[5]) if len(fields) == 6 else None
            except ValueError:
                raise StateFileError(
                    f"{where}: a time is not ISO 8601 (2026-12-04T17:50:00Z)"
                ) from None
            if state is KeyState.RETIRING and until is None:
                raise StateFileError(f"{where}: a retiring key needs a RETIRE-AFTER time")
            keys.append(
                KeyRecordState(fields[0], fields[1].lower(), fields[2], state, since, until)
            )
        return cls(keys)

    @classmethod
    def read(cls, path: str) -> RotationState:
        """The state in `path`; an absent file is an empty state."""
        try:
            with open(path, encoding="utf-8") as fh:
                return cls.parse(fh.read(), path)
        except FileNotFoundError:
            return cls()
        except UnicodeDecodeError:
            raise StateFileError(f"{path}: not UTF-8 text") from None

    def text(self) -> str:
        return HEADER + "".join(key.line() + "\n" for key in self._keys.values())

    def write(self, path: str) -> None:
        replace_file(path, self.text().encode("utf-8"), mode=0o644)

    def get(self, key_name: str) -> KeyRecordState | None:
        return self._keys.get(key_name)

    def set(self, key: KeyRecordState) -> None:
        self._keys[key.key_name] = key

    def move(
        self, key_name: str, state: KeyState, since: datetime, retire_after: datetime | None = None
    ) -> None:
        known = self._keys.get(key_name)
        if known is None:
            raise KeyError(key_name)
        self._keys[key_name] = replace(known, state=state, since=since, retire_after=retire_after)

    def for_domain(self, domain: str, state: KeyState | None = None) -> list[KeyRecordState]:
        wanted = domain.lower()
        return [
            k
            for k in self._keys.values()
            if k.domain == wanted and (state is None or k.state is state)
        ]

    def __iter__(self) -> Iterator[KeyRecordState]:
        return iter(list(self._keys.values()))
