"""Policy scripts in the running daemon: an edited script is picked up on SIGHUP and SIGUSR1
(the compiled one serves until then; one that no longer compiles leaves the old configuration
serving), and a runaway script holds other connections no longer than its limit."""

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


def test_a_runaway_script_holds_other_connections_no_longer_than_its_limit(
    tmp_path: Path,
) -> None:
    """The session is synchronous: while a script runs, the worker serves nothing else. The
    wall-clock limit (2 s) bounds that: the looping message is tempfailed, the message sent
    meanwhile on another connection is answered right after, and the next one at once."""
    import threading

    require("miltertest")
    if not lua_available():
        unavailable("lupa is not installed (pip install dkimd[lua])")
    script = tmp_path / "setup.lua"
    script.write_text('if odkim.get_header(ctx, "X-Loop", 0) then while true do end end\n')
    looping = MAIL.replace(b"Subject: x", b"X-Loop: yes\r\nSubject: x")
    replies: dict[str, tuple[str, float]] = {}

    def send(name: str, mail: bytes) -> None:
        started = time.monotonic()
        reply = milter_transaction(d.socket_spec, mail).reply
        replies[name] = (reply, time.monotonic() - started)

    with Dkimd(tmp_path / "d", mode="v", options={"SetupPolicyScript": str(script)}) as d:
        first = threading.Thread(target=send, args=("loop", looping))
        first.start()
        time.sleep(0.3)
        send("meanwhile", MAIL)
        first.join()
        send("after", MAIL)
        log = d.log_text()
    assert replies["loop"][0] == "t" and "script stopped" in log
    assert replies["meanwhile"][0] == "a" and replies["meanwhile"][1] < 2.0 + 3.0
    assert replies["after"][0] == "a" and replies["after"][1] < 2.0
