"""The policy scripts of one configuration (SetupPolicyScript, ScreenPolicyScript,
StatisticsPolicyScript, FinalPolicyScript) and what running each means for a message.

OpenDKIM compiles the scripts when it loads its configuration (a syntax error stops the
load) and runs them at four points: setup after the headers (choose to sign, with which
keys, and to verify), screen once the signatures are read (ignore some), statistics and
final at end of message (final may reject, quarantine, add header fields...). A script that
fails is the On-InternalError action for the message; one that runs out of budget
tempfails it. Both are logged with the script's name and line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dkimd import milter
from dkimd.lua.api import (
    IDLE_CALL,
    CallSlot,
    Ctx,
    Effects,
    HookKind,
    MessageFacts,
    OdkimCall,
    build_odkim,
    constants_for,
)
from dkimd.lua.sandbox import (
    DEFAULT_LIMITS,
    CompiledScript,
    Globals,
    Limits,
    LuaSandbox,
    ScriptError,
    ScriptLimit,
    ScriptSyntaxError,
)

__all__ = [
    "OPTION_OF_HOOK",
    "HookFailure",
    "PolicyScripts",
    "ScriptCompileError",
    "ScriptSource",
]

#: The opendkim.conf option naming each hook's script.
OPTION_OF_HOOK: Mapping[str, str] = {
    HookKind.SETUP: "SetupPolicyScript",
    HookKind.SCREEN: "ScreenPolicyScript",
    HookKind.STATISTICS: "StatisticsPolicyScript",
    HookKind.FINAL: "FinalPolicyScript",
}


@dataclass(frozen=True, slots=True)
class ScriptSource:
    path: str
    text: bytes


class ScriptCompileError(ScriptSyntaxError):
    """The `kind` hook's script does not compile."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class HookFailure:
    """A script that failed (`limit` False: On-InternalError) or ran out of budget."""

    hook: str
    message: str
    limit: bool


class PolicyScripts:
    """The compiled scripts of one configuration load, and their Lua state."""

    def __init__(
        self,
        sources: Mapping[str, ScriptSource],
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._log = logging.getLogger("dkimd.lua")
        self.sandbox = LuaSandbox(limits, printer=self._print)
        self.sources = dict(sources)
        self._scripts: dict[str, CompiledScript] = {}
        for kind, source in sources.items():
            # Lua cuts chunk names to 60 characters in its messages: the file name keeps
            # "name:line" readable, and the failure log line adds the whole path.
            try:
                compiled = self.sandbox.compile(source.text, os.path.basename(source.path))
            except ScriptSyntaxError as exc:
                raise ScriptCompileError(kind, exc.message) from None
            self._scripts[kind] = compiled
        self._slot = CallSlot()
        self._ctx = Ctx()
        # Per hook: the odkim functions and constants, made into Lua tables once.
        self._globals: dict[str, Globals] = {}
        for kind in self._scripts:
            odkim = self.sandbox.table(build_odkim(self._slot, kind))
            self._globals[kind] = self.sandbox.globals(
                {"odkim": odkim, "ctx": self._ctx, **constants_for(kind)}
            )

    def path(self, kind: str) -> str:
        return self.sources[kind].path

    def has(self, kind: str) -> bool:
        return kind in self._scripts

    def milter_actions(self) -> milter.ActionFlag:
        """What the final script may ask the MTA for, beyond adding header fields."""
        if not self.has(HookKind.FINAL):
            return milter.ActionFlag(0)
        flags = milter.ActionFlag
        return flags.CHGHDRS | flags.ADDRCPT | flags.DELRCPT

    def run(
        self,
        kind: str,
        facts: MessageFacts,
        effects: Effects,
        log: Callable[[str], None] | None = None,
    ) -> HookFailure | None:
        """Run the `kind` script for one message; what it asks for lands in `effects`."""
        script = self._scripts[kind]
        self._slot.call = OdkimCall(kind, facts, effects, self._table, log or self._log.info)
        try:
            self.sandbox.call(script, self._globals[kind], extra=effects.exports or None)
        except ScriptLimit as exc:
            return HookFailure(kind, exc.message, True)
        except ScriptError as exc:
            return HookFailure(kind, exc.message, False)
        finally:
            self._slot.call = IDLE_CALL
        return None

    def _table(self, items: Mapping[str, object] | None, *values: object) -> object:
        return self.sandbox.table(items, *values)

    def _print(self, *values: object) -> None:
        self._log.info("lua: %s", " ".join(str(v) for v in values))
