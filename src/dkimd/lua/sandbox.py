"""A bounded, sandboxed Lua 5.3 (through lupa) for policy scripts and `lua:` data sets.

OpenDKIM 2.11 (Debian's build links Lua 5.3) runs each script in a fresh `lua_State` with
every standard library opened. dkimd keeps one Lua state per configuration load, compiles
each script once into it, and gives every call a fresh global table, so nothing a script
sets survives to the next call, as in OpenDKIM, without building a state per message.

What a script gets: the base functions that cannot reach outside the call (no `dofile`,
`loadfile`, `require`, `collectgarbage`; `load` takes text only and the call's globals),
copies of `string` (without `dump`), `table`, `math`, `utf8`, `coroutine`, an `os` with only
`clock`, `date`, `difftime`, `time`, `getenv`, and an `io` that opens files for reading
only. No `debug`, no `package`, no `io.popen`, no `os.execute`/`remove`/`rename`/`exit`, no
Python. The string metatable is protected, so a script cannot reach the shared `string`
table through `getmetatable("")`.

Bounds: a count hook stops a call after `max_instructions` VM instructions or `seconds`
of wall-clock time, whichever comes first; once tripped it fires on every instruction, and
the sandbox's `pcall`, `xpcall` and `coroutine.resume` pass the stop on, so a script cannot
catch it. The whole state is capped at `max_memory` bytes. A C function that runs long
(a pathological `string.find` pattern) is not interrupted until it returns to Lua.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_LIMITS",
    "CompiledScript",
    "Limits",
    "LuaSandbox",
    "ScriptError",
    "ScriptLimit",
    "ScriptSyntaxError",
    "lua_available",
]

# Lua and Python exchange strings as latin-1, so every byte of a header value reaches a
# script unchanged and comes back as it left.
ENCODING = "latin-1"

# Instructions between two looks at the clock (the count hook's period).
_TICK = 10_000


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one call may use."""

    max_instructions: int = 50_000_000
    seconds: float = 2.0
    max_memory: int = 64 * 1024 * 1024


DEFAULT_LIMITS = Limits()


class ScriptError(Exception):
    """A script raised an error (or called a function wrongly); `message` is Lua's text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ScriptLimit(ScriptError):
    """A call ran past its instruction or time budget; `where` is "script:line"."""

    def __init__(self, where: str, seconds: float) -> None:
        super().__init__(
            f"{where}: script stopped: instruction or time limit reached ({seconds:g} s)"
        )
        self.where = where


class ScriptSyntaxError(ScriptError):
    """The script does not compile."""


def lua_available() -> bool:
    try:
        import lupa.lua53  # noqa: F401
    except ImportError:
        return False
    return True


# Runs once per Lua state, with the full standard library; returns the sandbox's entry
# points. Everything a script can reach is built here from local copies.
_BOOTSTRAP = r"""
local clock, TICK, printer = ...
local sethook, getinfo, setupvalue = debug.sethook, debug.getinfo, debug.setupvalue
local rawpcall, rawxpcall, rawload, rawerror = pcall, xpcall, load, error
local co_create, co_resume, co_status = coroutine.create, coroutine.resume, coroutine.status
local pack, unpack = table.pack, table.unpack
local pairs, type, tostring = pairs, type, tostring

-- The stop signal: a value no script can make or compare equal to by accident.
local STOP = {}
local state = {ticks = 0, max_ticks = 0, deadline = 0, tripped = false, where = nil}
local run

local function hook()
  local s = state
  if s.tripped then
    -- every instruction now: stop all but `run` itself, which ends the call
    local info = getinfo(2, "f")
    if info ~= nil and info.func == run then return end
    rawerror(STOP, 0)
  end
  s.ticks = s.ticks + 1
  if s.ticks <= s.max_ticks and clock() <= s.deadline then
    return
  end
  do
    s.tripped = true
    local info = getinfo(2, "Sl")
    if info ~= nil then
      s.where = tostring(info.short_src) .. ":" .. tostring(info.currentline)
    end
    sethook(hook, "", 1)
  end
  rawerror(STOP, 0)
end

local function stopped(err)
  return err == STOP or state.tripped
end

local function passon(ok, ...)
  if not ok and stopped((...)) then rawerror(STOP, 0) end
  return ok, ...
end

local function safe_pcall(f, ...)
  return passon(rawpcall(f, ...))
end

local function safe_xpcall(f, handler, ...)
  return passon(rawxpcall(f, function(e)
    if stopped(e) then return STOP end
    return handler(e)
  end, ...))
end

local function safe_create(f)
  local co = co_create(f)
  sethook(co, hook, "", TICK)
  return co
end

local function safe_resume(co, ...)
  return passon(co_resume(co, ...))
end

local function safe_wrap(f)
  local co = safe_create(f)
  return function(...)
    local r = pack(safe_resume(co, ...))
    if r[1] then return unpack(r, 2, r.n) end
    rawerror(r[2], 0)
  end
end

local function copy(t, without)
  local c = {}
  for k, v in pairs(t) do
    if without == nil or without[k] == nil then c[k] = v end
  end
  return c
end

local string_lib = copy(string, {dump = true})
local table_lib, math_lib, utf8_lib = copy(table), copy(math), copy(utf8)
local coroutine_lib = copy(coroutine)
coroutine_lib.create, coroutine_lib.resume, coroutine_lib.wrap =
  safe_create, safe_resume, safe_wrap
local os_lib = {clock = os.clock, date = os.date, difftime = os.difftime, time = os.time,
                getenv = os.getenv}

local io_open, io_lines = io.open, io.lines
local function read_mode(mode)
  return mode == nil or mode == "r" or mode == "rb"
end
local io_lib = {
  open = function(path, mode)
    if not read_mode(mode) then return nil, "files open for reading only", 1 end
    return io_open(path, mode)
  end,
  lines = function(path, ...)
    if path == nil then rawerror("io.lines: a file name is required", 2) end
    return io_lines(path, ...)
  end,
  type = io.type,
}

-- Strings index the real string table through their metatable: keep scripts off it.
getmetatable("").__metatable = false

local base = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
  pcall = safe_pcall, xpcall = safe_xpcall, rawequal = rawequal, rawget = rawget,
  rawlen = rawlen, rawset = rawset, select = select, setmetatable = setmetatable,
  getmetatable = getmetatable, tonumber = tonumber, tostring = tostring, type = type,
  _VERSION = _VERSION,
}
local libs = {string = string_lib, table = table_lib, math = math_lib, utf8 = utf8_lib,
              coroutine = coroutine_lib, os = os_lib, io = io_lib}

base.print = printer

-- A call's globals start empty; a name is found, on first use, in the call's prototype
-- (odkim, ctx, constants), the libraries or the base functions. Tables are copied into the
-- call's globals when first used, so what a script changes in them dies with the call,
-- and a call pays only for what it uses.
local metatables = setmetatable({}, {__mode = "k"})
local function metatable_for(proto)
  local mt = metatables[proto]
  if mt ~= nil then return mt end
  mt = {__metatable = false}
  mt.__index = function(env, k)
    local v = proto[k]
    if v == nil then
      v = libs[k]
      if v == nil then
        if k == "_G" then
          v = env
        elseif k == "load" then
          v = function(chunk, name, mode, e) return rawload(chunk, name, "t", e or env) end
        else
          return base[k]
        end
      end
    end
    if type(v) == "table" and v ~= env then v = copy(v) end
    rawset(env, k, v)
    return v
  end
  metatables[proto] = mt
  return mt
end

local function new_env(proto, extra)
  local env = setmetatable({}, metatable_for(proto))
  if extra ~= nil then
    for k, v in pairs(extra) do rawset(env, k, v) end
  end
  return env
end

local function compile(source, name)
  return rawload(source, name, "t", {})
end

local function message_of(err)
  local kind = type(err)
  -- userdata: a Python exception from an odkim function (scripts cannot make userdata)
  if kind == "string" or kind == "number" or kind == "userdata" then return tostring(err) end
  return "(error object is a " .. kind .. " value)"
end

-- Run `chunk` in a fresh environment: true and its results, or false, kind, message.
function run(chunk, proto, extra, max_ticks, seconds, ...)
  local env = new_env(proto, extra)
  setupvalue(chunk, 1, env)
  state.ticks, state.max_ticks, state.tripped, state.where = 0, max_ticks, false, nil
  state.deadline = clock() + seconds
  sethook(hook, "", TICK)
  local r = pack(rawpcall(chunk, ...))
  sethook()
  setupvalue(chunk, 1, nil)
  if r[1] then return true, unpack(r, 2, r.n) end
  if stopped(r[2]) then
    state.tripped = false
    return false, "limit", state.where or "?"
  end
  return false, "error", message_of(r[2])
end

return compile, run
"""


class Globals:
    """A Lua table of globals made once (`LuaSandbox.globals`)."""

    __slots__ = ("table",)

    def __init__(self, table: Any) -> None:
        self.table = table


class CompiledScript:
    """A script compiled into a sandbox; run it with `LuaSandbox.call`."""

    __slots__ = ("chunk", "name")

    def __init__(self, name: str, chunk: Any) -> None:
        self.name = name
        self.chunk = chunk


def _deny_attributes(obj: object, name: object, is_setting: bool) -> object:
    # Python objects handed to Lua (odkim functions, handles) expose nothing: no
    # __globals__, no __class__, no way back into the interpreter.
    raise AttributeError("not accessible from Lua")


class LuaSandbox:
    """One Lua state: scripts compiled into it and called with fresh globals each time."""

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        printer: Callable[[str], None] | None = None,
    ) -> None:
        import lupa.lua53 as lupa

        self.limits = limits
        self._lupa = lupa
        self._lua = lupa.LuaRuntime(
            encoding=ENCODING,
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            attribute_filter=_deny_attributes,
            max_memory=limits.max_memory,
        )
        bootstrap = self._lua.execute(_BOOTSTRAP, time.monotonic, _TICK, printer or _discard)
        self._compile, self._run = bootstrap
        self._empty = self._lua.table()

    def compile(self, source: bytes, name: str) -> CompiledScript:
        """Compile `source` (its errors name `name`); raises ScriptSyntaxError."""
        try:
            made = self._compile(source.decode(ENCODING), "@" + name)
        except self._lupa.LuaError as exc:  # out of memory while compiling
            raise ScriptSyntaxError(_first_line(str(exc))) from None
        if isinstance(made, tuple):  # nil and the message
            raise ScriptSyntaxError(str(made[1]))
        return CompiledScript(name, made)

    def table(self, items: Mapping[str, object] | None = None, *values: object) -> Any:
        """A Lua table: from a mapping, or an array of `values` (1-based)."""
        if items is not None:
            return self._lua.table_from(dict(items))
        return self._lua.table_from(list(values))

    def globals(self, items: Mapping[str, object]) -> Globals:
        """Globals for many calls (a hook's odkim table, ctx, constants), made once."""
        return Globals(self._lua.table_from(dict(items)))

    def call(
        self,
        script: CompiledScript,
        env: Globals | Mapping[str, object],
        *args: object,
        extra: Mapping[str, object] | None = None,
    ) -> tuple[object, ...]:
        """Run `script` with `env` (and `extra`, per call) in its fresh globals; its return
        values, `args` being the chunk's `...`.

        Raises ScriptLimit when it runs out of budget and ScriptError when it fails.
        """
        limits = self.limits
        proto = env.table if isinstance(env, Globals) else self._lua.table_from(dict(env))
        try:
            result = self._run(
                script.chunk,
                proto,
                self._lua.table_from(dict(extra)) if extra else None,
                max(1, limits.max_instructions // _TICK),
                limits.seconds,
                *args,
            )
        except self._lupa.LuaError as exc:  # the sandbox itself failed (out of memory)
            raise ScriptError(_first_line(str(exc))) from None
        values = result if isinstance(result, tuple) else (result,)
        if values[0] is True:
            return values[1:]
        kind = values[1] if len(values) > 1 else "error"
        detail = str(values[2]) if len(values) > 2 else "?"
        if kind == "limit":
            raise ScriptLimit(detail, limits.seconds)
        raise ScriptError(detail)


def _discard(*args: object) -> None:
    return None


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0]
