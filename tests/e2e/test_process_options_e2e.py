"""Process options with the real daemon (`python -m dkimd`): BaseDirectory in the
background, ChangeRootDirectory in a real chroot (as root), MilterDebug's trace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.dkimd import Dkimd
from support.opendkim import milter_transaction
from support.tools import free_port, require

pytestmark = [pytest.mark.interop]

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: process options\r\n"
    b"Date: Fri, 04 Dec 2026 12:00:00 +0000\r\n"
    b"\r\n"
    b"Hello.\r\n"
)


def _key_files(directory: Path) -> None:
    """A key, a KeyTable naming it relative to `directory`, a SigningTable."""
    from dkimd.keytools.generate import generate_rsa

    (directory / "keys").mkdir()
    key = directory / "keys" / "mail.private"
    key.write_bytes(generate_rsa(1024).private_pem)
    key.chmod(0o600)
    (directory / "KeyTable").write_text("mail example.com:mail:./keys/mail.private\n")
    (directory / "SigningTable").write_text("*@example.com mail\n")


def _wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z":
            return True
        time.sleep(0.02)
    return False


def test_base_directory_in_the_background(tmp_path: Path) -> None:
    """opendkim stays in BaseDirectory when it detaches (observed: /proc/PID/cwd), and
    reads relative KeyTable key paths from there per message."""
    require("miltertest")
    base = tmp_path / "base"
    base.mkdir()
    _key_files(base)
    port = free_port()
    conf = tmp_path / "opendkim.conf"
    conf.write_text(
        f"BaseDirectory {base}\nKeyTable file:KeyTable\nSigningTable refile:SigningTable\n"
        f"Socket inet:{port}@127.0.0.1\nPidFile dkimd.pid\nRequireSafeKeys no\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "dkimd", "-x", conf.name],  # relative to where it starts
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    pid = int((base / "dkimd.pid").read_text())  # PidFile is relative to it too
    try:
        assert Path(f"/proc/{pid}/cwd").resolve() == base
        result = milter_transaction(f"inet:{port}@127.0.0.1", MESSAGE)
        assert result.headers("DKIM-Signature"), result.output
        # The reload finds the file (given relative to the start directory) and the
        # tables again: example.com is no longer signed.
        (base / "SigningTable").write_text("*@example.org mail\n")
        os.kill(pid, signal.SIGHUP)
        time.sleep(1.0)
        result = milter_transaction(f"inet:{port}@127.0.0.1", MESSAGE)
        assert not result.headers("DKIM-Signature"), result.output
    finally:
        os.kill(pid, signal.SIGTERM)
        assert _wait_gone(pid)


def test_milter_debug_traces_the_protocol(tmp_path: Path) -> None:
    require("miltertest")
    with Dkimd(tmp_path / "d", mode="v", options={"MilterDebug": "2"}) as d:
        result = milter_transaction(d.socket_spec, MESSAGE)
        assert result.reply == "a", result.output
        d.wait_for_log("milter #1: MTA: EndOfMessage")
        assert "milter #1: agreed: " in d.log_text()
