"""The Lua sandbox: what a script can and cannot reach, and its limits."""

from __future__ import annotations

import time

import pytest

from dkimd.lua.sandbox import (
    Limits,
    LuaSandbox,
    ScriptError,
    ScriptLimit,
    ScriptSyntaxError,
)


@pytest.fixture
def sandbox() -> LuaSandbox:
    return LuaSandbox(Limits(max_instructions=2_000_000, seconds=1.0))


def run(sandbox: LuaSandbox, source: str, **env: object) -> tuple[object, ...]:
    return sandbox.call(sandbox.compile(source.encode(), "t.lua"), env)


@pytest.mark.parametrize(
    "expression",
    [
        "os.execute",
        "os.remove",
        "os.rename",
        "os.exit",
        "io.popen",
        "io.write",
        "io.output",
        "require",
        "dofile",
        "loadfile",
        "debug",
        "package",
        "string.dump",
        "collectgarbage",
        "python",
    ],
)
def test_dangerous_names_are_absent(sandbox: LuaSandbox, expression: str) -> None:
    assert run(sandbox, f"return {expression}") == (None,)


def test_files_open_for_reading_only(sandbox: LuaSandbox, tmp_path: object) -> None:
    target = f"{tmp_path}/written"
    handle, message, _ = run(sandbox, f"return io.open('{target}', 'w')")
    assert handle is None and message == "files open for reading only"
    for mode in ("a", "r+", "w+", "wb"):
        assert run(sandbox, f"return io.open('{target}', '{mode}')")[0] is None
    import os

    assert not os.path.exists(target)


def test_reading_a_file_works(sandbox: LuaSandbox, tmp_path: object) -> None:
    path = f"{tmp_path}/list"
    with open(path, "w") as f:
        f.write("example.com\n")
    assert run(
        sandbox, f"local f = io.open('{path}') local l = f:read('l') f:close() return l"
    ) == ("example.com",)


def test_load_takes_text_only_and_the_scripts_globals(sandbox: LuaSandbox) -> None:
    assert run(sandbox, "return load('\\27Lua') ") == (
        None,
        "attempt to load a binary chunk (mode is 't')",
    )
    assert run(sandbox, "return load('return _G')() == _G") == (True,)
    assert run(sandbox, "return load('return os.execute')()") == (None,)


def test_string_metatable_is_protected(sandbox: LuaSandbox) -> None:
    assert run(sandbox, "return getmetatable('')") == (False,)
    with pytest.raises(ScriptError):
        run(sandbox, "setmetatable('', {})")
    # Changing the script's string table does not change the methods strings use.
    assert run(sandbox, "string.upper = nil return ('a'):upper()") == ("A",)
    assert run(sandbox, "return string.upper('b')") == ("B",)


def test_python_objects_expose_no_attributes(sandbox: LuaSandbox) -> None:
    def hello() -> str:
        return "hi"

    assert run(sandbox, "return f()", f=hello) == ("hi",)
    with pytest.raises(ScriptError):
        run(sandbox, "return f.__globals__", f=hello)
    with pytest.raises(ScriptError):
        run(sandbox, "return f.__class__", f=hello)


def test_globals_do_not_survive_a_call(sandbox: LuaSandbox) -> None:
    script = sandbox.compile(b"local before = counter counter = 1 return before", "t.lua")
    assert sandbox.call(script, {}) == (None,)
    assert sandbox.call(script, {}) == (None,)


def test_error_gives_script_and_line(sandbox: LuaSandbox) -> None:
    with pytest.raises(ScriptError) as caught:
        run(sandbox, "\n\nerror('policy broke')")
    assert caught.value.message == "t.lua:3: policy broke"
    with pytest.raises(ScriptError) as caught:
        run(sandbox, "local x = nil\nx()")
    assert caught.value.message.startswith("t.lua:2: attempt to call a nil value")


def test_non_string_error_objects(sandbox: LuaSandbox) -> None:
    # A __tostring that loops must not run outside the budget.
    with pytest.raises(ScriptError) as caught:
        run(sandbox, "error(setmetatable({}, {__tostring = function() while true do end end}))")
    assert caught.value.message == "(error object is a table value)"


def test_syntax_error_at_compile(sandbox: LuaSandbox) -> None:
    with pytest.raises(ScriptSyntaxError) as caught:
        sandbox.compile(b"odkim.sign(ctx", "setup.lua")
    assert caught.value.message.startswith("setup.lua:1:")


@pytest.mark.parametrize(
    "source",
    [
        "while true do end",
        "local n = 0\nwhile true do n = n + 1 end",
        "while true do pcall(function() while true do end end) end",
        "while true do xpcall(function() while true do end end, function(e) return e end) end",
        "coroutine.wrap(function() while true do end end)()",
        "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
        "local function f() return f() end f()",
    ],
)
def test_runaway_scripts_are_stopped(sandbox: LuaSandbox, source: str) -> None:
    started = time.monotonic()
    with pytest.raises(ScriptLimit) as caught:
        run(sandbox, source)
    assert time.monotonic() - started < 5
    assert caught.value.where.startswith("t.lua:")
    # The state serves on.
    assert run(sandbox, "return 1 + 1") == (2,)


def test_wall_clock_limit() -> None:
    slow = LuaSandbox(Limits(max_instructions=10**12, seconds=0.2))
    started = time.monotonic()
    with pytest.raises(ScriptLimit):
        slow.call(slow.compile(b"while true do end", "loop.lua"), {})
    assert 0.15 < time.monotonic() - started < 2


def test_memory_is_capped() -> None:
    small = LuaSandbox(Limits(max_memory=8 * 1024 * 1024))
    with pytest.raises(ScriptError) as caught:
        small.call(small.compile(b"return #string.rep('x', 2^28)", "big.lua"), {})
    assert "memory" in caught.value.message
    assert small.call(small.compile(b"return 3", "ok.lua"), {}) == (3,)


def test_arguments_and_results(sandbox: LuaSandbox) -> None:
    assert sandbox.call(sandbox.compile(b"return ...", "t.lua"), {}, 1, "a") == (1, "a")
    assert run(sandbox, "return x .. '!'", x="\xff\x00") == ("\xff\x00!",)


def test_globals_metatable_is_protected(sandbox: LuaSandbox) -> None:
    assert run(sandbox, "return getmetatable(_G)") == (False,)
    with pytest.raises(ScriptError) as caught:
        run(sandbox, "setmetatable(_G, {__index = function() return 1 end})")
    assert "protected metatable" in caught.value.message
    # A script's own tables keep their metatables.
    assert run(
        sandbox, "local t = setmetatable({}, {__index = function() return 7 end}) return t.x"
    ) == (7,)


def test_library_changes_do_not_outlive_the_call(sandbox: LuaSandbox) -> None:
    script = sandbox.compile(
        b"local before = string.rep string.rep = nil return before ~= nil", "t.lua"
    )
    assert sandbox.call(script, {}) == (True,)
    assert sandbox.call(script, {}) == (True,)


def test_prototype_tables_are_copied_per_call(sandbox: LuaSandbox) -> None:
    shared = sandbox.globals({"odkim": sandbox.table({"answer": 42})})
    script = sandbox.compile(b"local a = odkim.answer odkim.answer = 0 return a", "t.lua")
    assert sandbox.call(script, shared) == (42,)
    assert sandbox.call(script, shared) == (42,)
