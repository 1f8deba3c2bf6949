"""Process options with the real daemon (`python -m dkimd`): BaseDirectory in the
background, ChangeRootDirectory in a real chroot (as root), MilterDebug's trace."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.dkimd import Dkimd
from support.fakedns import FakeDns
from support.opendkim import milter_transaction
from support.tools import free_port, require, unavailable

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


def _signed_copy(value: str) -> bytes:
    field = b"DKIM-Signature:" + value.replace("\r\n", "\n").replace("\n", "\r\n").encode()
    return field + b"\r\n" + MESSAGE


@pytest.mark.parametrize("user", [None, "nobody"])
def test_change_root_directory_serves_from_a_bare_root(tmp_path: Path, user: str | None) -> None:
    """A real chroot into a directory that holds only a key: dkimd signs, verifies over
    DNS (dnspython inside the new root), writes its PidFile and binds its local: socket
    inside it, drops to UserID (groups found before the chroot), and reloads the
    configuration from inside it."""
    require("miltertest")
    if os.geteuid() != 0:
        unavailable("chroot(2) needs root")
    from dkimd.keytools.generate import generate_rsa

    root = tmp_path / "root"
    (root / "keys").mkdir(parents=True)
    key = generate_rsa(1024)
    (root / "keys" / "mail.private").write_bytes(key.private_pem)
    (root / "keys" / "mail.private").chmod(0o600)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "KeyTable").write_text("mail example.com:mail:/keys/mail.private\n")
    (etc / "SigningTable").write_text("*@example.com mail\n")
    with FakeDns() as dns_server:
        dns_server.txt("mail._domainkey.example.com", f"v=DKIM1; k=rsa; p={key.public_key_b64}")
        conf = etc / "opendkim.conf"
        conf.write_text(
            f"KeyTable file:{etc / 'KeyTable'}\nSigningTable refile:{etc / 'SigningTable'}\n"
            f"Nameservers 127.0.0.1:{dns_server.port}\nChangeRootDirectory {root}\n"
            "Socket local:/milter.sock\nPidFile /dkimd.pid\nSyslog no\nSyslogSuccess yes\n"
            + (f"UserID {user}\n" if user else "")
        )
        # What a reload reads, at the same paths inside the new root.
        inside = root / str(etc).lstrip("/")
        inside.mkdir(parents=True)
        for name in ("opendkim.conf", "KeyTable", "SigningTable"):
            (inside / name).write_text((etc / name).read_text())
        with Dkimd.from_config(tmp_path / "d", conf, socket_path=root / "milter.sock") as daemon:
            daemon.wait_for_log("starting")
            assert (Path(f"/proc/{daemon.pid}") / "root").resolve() == root
            assert (root / "dkimd.pid").read_text().strip() == str(daemon.pid)
            assert ("without Userid not advised" in daemon.log_text()) == (user is None)
            if user is not None:
                status = Path(f"/proc/{daemon.pid}/status").read_text()
                uid = pwd.getpwnam(user).pw_uid
                assert f"\nUid:\t{uid}\t" in status
            socket_spec = f"local:{root / 'milter.sock'}"
            signed = milter_transaction(socket_spec, MESSAGE)
            [value] = signed.headers("DKIM-Signature")
            verified = milter_transaction(socket_spec, _signed_copy(value), client_addr="192.0.2.1")
            [result] = verified.headers("Authentication-Results")
            assert "dkim=pass" in result, daemon.log_text()
            assert dns_server.count("mail._domainkey.example.com") == 1
            # Reload inside the new root: example.com is no longer signed.
            (inside / "SigningTable").write_text("*@example.org mail\n")
            daemon.reload()
            assert "reload failed" not in daemon.log_text(), daemon.log_text()
            assert not milter_transaction(socket_spec, MESSAGE).headers("DKIM-Signature")
        if user is None:  # removed on the way out (nobody may not write the root)
            assert not (root / "dkimd.pid").exists()


def test_change_root_directory_failure_is_exit_71(tmp_path: Path) -> None:
    conf = tmp_path / "opendkim.conf"
    conf.write_text(
        f"Mode v\nChangeRootDirectory {tmp_path / 'none'}\nSocket inet:{free_port()}@127.0.0.1\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "dkimd", "-f", "-x", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 71, proc.stderr
    assert f"{tmp_path / 'none'}: chdir(): No such file or directory" in proc.stderr
