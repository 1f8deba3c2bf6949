"""`lua:` data sets: a Lua script answers each lookup (opendkim(8), "lua:path").

The key looked up is in the global `query`; what the script returns is the answer: nothing
or nil is "not found", `true` is "found" with no value, and values are the entry's value
(several are joined with ":", the column separator of OpenDKIM's file data sets, so a
KeyTable script may `return "example.com", "sel", "/keys/sel.private"`). The script is
compiled once per configuration load and run in its own bounded sandbox
(dkimd.lua.sandbox); a script that fails or runs out of budget answers "not found", with
the error logged.

Such a set can answer lookups but cannot be listed, so options dkimd reads as a list at
load (the header name lists, MacroList, Domain, TestDNSData, ReplaceHeaders) refuse it.
"""

from __future__ import annotations

import logging
import os

from dkimd.config.datasets import Dataset, DatasetEntry, DatasetKind
from dkimd.config.problems import Problem, Severity
from dkimd.lua.sandbox import LuaSandbox, ScriptError, ScriptSyntaxError, lua_available

__all__ = ["LIST_OPTIONS", "LuaDataset", "open_lua_dataset"]

_log = logging.getLogger("dkimd.lua")

#: Options whose data set dkimd reads whole at load: a script cannot be listed.
LIST_OPTIONS = frozenset(
    {
        "SignHeaders",
        "OmitHeaders",
        "OversignHeaders",
        "SenderHeaders",
        "MacroList",
        "Domain",
        "TestDNSData",
        "ReplaceHeaders",
        "MustBeSigned",
    }
)


def _lua_text(value: object) -> str:
    """A returned value as Lua's tostring writes it (1.0 for a float that is whole)."""
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)


class LuaDataset(Dataset):
    """A data set whose lookups run a Lua script."""

    __slots__ = ("_sandbox", "_script")

    def __init__(
        self, spec: str, path: str, source: bytes, *, case_insensitive: bool = True
    ) -> None:
        super().__init__(spec, DatasetKind.LUA, (), path=path, case_insensitive=case_insensitive)
        self._sandbox = LuaSandbox()
        self._script = self._sandbox.compile(source, os.path.basename(path))

    def _query(self, key: str) -> tuple[bool, str | None]:
        try:
            values = self._sandbox.call(self._script, {"query": key})
        except ScriptError as exc:
            _log.error("lua: data set %s: %s", self.path, exc.message)
            return False, None
        answer: list[str] = []
        for value in values:
            if value is None or value is False:
                break
            answer.append(_lua_text(value))
        if not answer:
            return False, None
        if answer == ["True"] and values[0] is True:
            return True, None
        return True, ":".join(answer)

    def match(self, key: str) -> DatasetEntry | None:
        if not self._query_ok(key):
            return None
        found, value = self._query(key)
        return DatasetEntry(key, value, self.path, None) if found else None

    def match_all(self, key: str) -> list[DatasetEntry]:
        entry = self.match(key)
        return [] if entry is None else [entry]

    def __len__(self) -> int:
        # Not listable: its size is unknown, but it is not empty (users that skip an empty
        # data set must still ask it).
        return 1

    def _identity(self) -> tuple[object, ...]:
        return (self.spec, self.kind, self.path, id(self))


def open_lua_dataset(
    text: str,
    path: str,
    *,
    case_insensitive: bool,
    origin: tuple[str, int] | None,
    option: str | None,
) -> tuple[Dataset | None, list[Problem]]:
    """Open `lua:path` for `option`; never raises."""
    where_file, where_line = origin if origin is not None else (None, None)

    def problem(message: str, hint: str | None = None) -> tuple[None, list[Problem]]:
        text_ = f"{option}: {message}" if option else message
        return None, [Problem(where_file, where_line, Severity.ERROR, text_, hint, option)]

    if option in LIST_OPTIONS:
        return problem(f"a lua: data set cannot be used for {option}, which dkimd reads whole")
    if not lua_available():
        return problem(
            "a lua: data set needs Lua support, which is not installed", "pip install dkimd[lua]"
        )
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as exc:
        return problem(f'cannot read Lua script "{path}": {exc.strerror or exc}')
    try:
        return LuaDataset(text, path, source, case_insensitive=case_insensitive), []
    except ScriptSyntaxError as exc:
        return problem(f"Lua compilation error: {exc.message}")
