"""`lua:` data sets: a script answers each lookup, wherever a data set is looked up."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from dkimd import milter
from dkimd.config import ConfigError, parse_config_text
from dkimd.config.datasets import DatasetKind, open_dataset


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def test_query_and_answers(tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "set.lua",
        """
if query == "listed.example" then return true end
if query == "value.example" then return "v1" end
if query == "columns.example" then return "example.com", "sel", 3 end
if query == "boom" then error("no such thing") end
if query == "loop" then while true do end end
return nil
""",
    )
    ds, problems = open_dataset(f"lua:{script}")
    assert problems == [] and ds is not None and ds.kind is DatasetKind.LUA
    assert "listed.example" in ds and ds.lookup("listed.example") == ""
    assert ds.lookup("value.example") == "v1"
    assert ds.lookup("columns.example") == "example.com:sel:3"  # Lua integer
    assert ds.lookup("other.example") is None and "other.example" not in ds
    assert ds.lookup_all("value.example") == ["v1"]
    assert ds.lookup("boom") is None  # an error answers "not found", logged


def test_runaway_lookup_is_stopped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = write(tmp_path, "loop.lua", "while true do end\n")
    ds, _ = open_dataset(f"lua:{script}")
    assert ds is not None
    with caplog.at_level(logging.ERROR, logger="dkimd"):
        assert ds.lookup("anything") is None
    assert "loop.lua:1: script stopped" in caplog.text


def test_open_errors(tmp_path: Path) -> None:
    ds, problems = open_dataset(f"lua:{tmp_path / 'missing.lua'}", option="InternalHosts")
    assert ds is None and "cannot read Lua script" in problems[0].message
    bad = write(tmp_path, "bad.lua", "return (\n")
    ds, problems = open_dataset(f"lua:{bad}", option="InternalHosts")
    assert ds is None and "Lua compilation error: bad.lua:" in problems[0].message
    ok = write(tmp_path, "ok.lua", "return true\n")
    ds, problems = open_dataset(f"lua:{ok}", option="SignHeaders")
    assert ds is None and "cannot be used for SignHeaders" in problems[0].message


def test_without_lupa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dkimd.lua.dataset

    monkeypatch.setattr(dkimd.lua.dataset, "lua_available", lambda: False)
    script = write(tmp_path, "set.lua", "return true\n")
    with pytest.raises(ConfigError) as caught:
        parse_config_text(f"Socket inet:8891@127.0.0.1\nInternalHosts lua:{script}\n")
    [problem] = caught.value.problems
    assert problem.hint == "pip install dkimd[lua]" and problem.option == "InternalHosts"


def test_lua_tables_and_host_list_sign_a_message(tmp_path: Path) -> None:
    from test_hooks import HEADERS, Mta, Site, added

    site = Site(tmp_path)
    keys = write(
        tmp_path,
        "keys.lua",
        f'if query == "mailkey" then return "example.com", "mail", "{site.key_path}" end\n',
    )
    signing = write(
        tmp_path,
        "signing.lua",
        'if query == "alice@example.com" then return "mailkey:alice@example.com" end\n',
    )
    internal = write(tmp_path, "internal.lua", 'return query == "198.51.100.7"\n')
    config = (
        "Mode sv\nRequireSafeKeys no\nSocket inet:8891@127.0.0.1\n"
        f"KeyTable lua:{keys}\nSigningTable lua:{signing}\nInternalHosts lua:{internal}\n"
    )
    actions = asyncio.run(Mta(config, site.records).message(HEADERS, client="198.51.100.7"))
    [sig] = added(actions, b"DKIM-Signature")
    assert b"d=example.com" in sig and b"s=mail" in sig and b"i=alice@example.com" in sig
    assert isinstance(actions[-1], milter.Accept)
    # Not internal by the script: verified, not signed.
    actions = asyncio.run(Mta(config, site.records).message(HEADERS, client="192.0.2.1"))
    assert added(actions, b"DKIM-Signature") == []


def test_the_linter_describes_lua_sets(tmp_path: Path) -> None:
    from dkimd.cli.check import main as check_main

    signing = write(tmp_path, "signing.lua", 'return "k"\n')
    internal = write(tmp_path, "internal.lua", 'return query == "127.0.0.1"\n')
    key = write(tmp_path, "k.private", "not read by the summary\n")
    conf = write(
        tmp_path,
        "opendkim.conf",
        f"Socket inet:8891@127.0.0.1\nKeyTable csl:k=example.com:s:{key}\n"
        f"SigningTable lua:{signing}\nInternalHosts lua:{internal}\n",
    )
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        check_main(["-x", str(conf)])
    text = out.getvalue()
    assert "(as the Lua script answers for each sender)" in text
    assert f"InternalHosts (as lua:{internal} answers)" in text
    assert "neither 127.0.0.1 nor ::1" not in text
