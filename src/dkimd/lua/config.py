"""Reading the policy script options of opendkim.conf into `PolicyScripts`.

OpenDKIM reads and compiles each script at load ("Lua compilation error" stops it); so
does dkimd, and a reload compiles them again. Without lupa a configuration naming a script
cannot be served at all: that is a configuration error (exit 78) saying what to install.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from dkimd.config.problems import Problem, Severity
from dkimd.lua.hooks import OPTION_OF_HOOK, PolicyScripts, ScriptCompileError, ScriptSource
from dkimd.lua.sandbox import DEFAULT_LIMITS, Limits, lua_available

if TYPE_CHECKING:
    from dkimd.config.reader import RawConfig, Setting

__all__ = ["INSTALL_HINT", "missing_lua_problem", "policy_scripts_from"]

INSTALL_HINT = "pip install dkimd[lua]"


def missing_lua_problem(setting: Setting, what: str) -> Problem:
    """The error for `what` (a script, a lua: data set) when lupa is not installed."""
    return Problem(
        setting.file,
        setting.line,
        Severity.ERROR,
        f"{setting.name}: {what} needs Lua support, which is not installed",
        INSTALL_HINT,
        setting.name,
    )


def _limits(raw: RawConfig) -> tuple[Limits, list[Problem]]:
    """LuaInstructionLimit and LuaTimeLimit (dkimd extensions), each at least 1."""
    values: dict[str, int] = {}
    problems: list[Problem] = []
    for option, field in (("LuaInstructionLimit", "max_instructions"), ("LuaTimeLimit", "seconds")):
        setting = raw.get(option)
        if setting is None:
            continue
        if not isinstance(setting.parsed, int) or setting.parsed < 1:
            message = f"{option}: {setting.value} is out of range (at least 1)"
            problems.append(
                Problem(setting.file, setting.line, Severity.ERROR, message, option=option)
            )
            continue
        values[field] = setting.parsed
    return dataclasses.replace(DEFAULT_LIMITS, **values), problems


def policy_scripts_from(raw: RawConfig) -> tuple[PolicyScripts | None, list[Problem]]:
    """The configuration's compiled policy scripts (None when it names none)."""
    settings = {kind: raw.get(option) for kind, option in OPTION_OF_HOOK.items()}
    named = {kind: s for kind, s in settings.items() if s is not None}
    if not named:
        return None, []
    if not lua_available():
        return None, [missing_lua_problem(s, "a policy script") for s in named.values()]
    problems: list[Problem] = []
    sources: dict[str, ScriptSource] = {}
    for kind, setting in named.items():
        try:
            with open(setting.value, "rb") as f:
                sources[kind] = ScriptSource(setting.value, f.read())
        except OSError as exc:
            problems.append(
                Problem(
                    setting.file,
                    setting.line,
                    Severity.ERROR,
                    f"{setting.name}: cannot read {setting.value}: {exc.strerror or exc}",
                    option=setting.name,
                )
            )
    if problems:
        return None, problems
    limits, problems = _limits(raw)
    if problems:
        return None, problems
    try:
        return PolicyScripts(sources, limits), []
    except ScriptCompileError as exc:
        where = named[exc.kind]
        return None, [
            Problem(
                where.file,
                where.line,
                Severity.ERROR,
                f"{where.name}: Lua compilation error: {exc.message}",
                option=where.name,
            )
        ]
