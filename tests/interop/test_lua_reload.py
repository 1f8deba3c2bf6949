"""A running dkimd picks up an edited policy script on SIGHUP and SIGUSR1, and keeps the
compiled one until then; a script that no longer compiles leaves the old configuration
serving (a failed reload changes nothing)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from test_lua_differential import milter_transaction

from dkimd.lua.sandbox import lua_available
from support.dkimd import Dkimd
from support.tools import require, unavailable

MAIL = b"From: alice@example.com\r\nTo: bob@example.net\r\nSubject: x\r\n\r\nBody.\r\n"


def reload(d: Dkimd, sig: signal.Signals) -> str:
    """Send `sig`; wait for the log to say how the reload went, and return that line."""
    marks = ("configuration reloaded", "reload failed")
    before = [d.log_text().count(m) for m in marks]
    assert d.proc is not None
    d.proc.send_signal(sig)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = d.log_text()
        for mark, count in zip(marks, before, strict=True):
            if text.count(mark) > count:
                return mark
        time.sleep(0.02)
    raise AssertionError(f"no reload in the log:\n{d.log_text()}")


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1], ids=["SIGHUP", "SIGUSR1"])
def test_scripts_follow_the_reload(tmp_path: Path, sig: signal.Signals) -> None:
    require("miltertest")
    if not lua_available():
        unavailable("lupa is not installed (pip install dkimd[lua])")
    script = tmp_path / "setup.lua"
    script.write_text("odkim.set_result(ctx, SMFIS_REJECT)\n")
    options = {"SetupPolicyScript": str(script)}
    with Dkimd(tmp_path / "d", mode="v", options=options) as d:
        assert milter_transaction(d.socket_spec, MAIL).reply == "r"
        script.write_text("odkim.set_result(ctx, SMFIS_TEMPFAIL)\n")
        assert milter_transaction(d.socket_spec, MAIL).reply == "r"  # compiled at load
        assert reload(d, sig) == "configuration reloaded"
        assert milter_transaction(d.socket_spec, MAIL).reply == "t"
        script.write_text("odkim.set_result(ctx\n")  # no longer compiles
        assert reload(d, sig) == "reload failed"
        assert "Lua compilation error" in d.log_text()
        assert milter_transaction(d.socket_spec, MAIL).reply == "t"
