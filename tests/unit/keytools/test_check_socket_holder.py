"""`dkimd check` and a Socket in use: quiet when our own running daemon holds it, a
warning for any other program (real daemons, real sockets)."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd.cli import check
from dkimd.keytools import socket_holder
from dkimd.keytools.socket_holder import Holder, dkimd_holder, tcp_listeners, unix_listeners
from support.dkimd import Dkimd


def _wait_for_pid_file(daemon: Dkimd, timeout: float = 10.0) -> None:
    """The daemon writes its PidFile just after it starts listening."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if int(daemon.pid_path.read_text().split()[0]) == daemon.pid:
                return
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no PidFile at {daemon.pid_path}:\n{daemon.log_text()}")


@pytest.fixture
def tcp_daemon(tmp_path: Path) -> Iterator[Dkimd]:
    with Dkimd(tmp_path / "dkimd", mode="v") as daemon:
        _wait_for_pid_file(daemon)
        yield daemon


def _check(conf: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = check.main(["-x", str(conf), "--no-postfix", "--strict"])
    return code, capsys.readouterr().out


def test_own_running_daemon_is_not_a_conflict(
    tcp_daemon: Dkimd, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _check(tcp_daemon.conf_path, capsys)
    assert "Socket:" not in out, out
    assert f"Socket 127.0.0.1 port {tcp_daemon.port} is served by the running dkimd" in out
    assert code == 0, out


def test_another_program_on_the_port_is_still_reported(
    tcp_daemon: Dkimd, capsys: pytest.CaptureFixture[str]
) -> None:
    """The PidFile names a live dkimd, but the configured port belongs to someone else."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        conf = tcp_daemon.dir / "other.conf"
        conf.write_text(
            tcp_daemon.conf_path.read_text().replace(
                f"Socket {tcp_daemon.socket_spec}", f"Socket inet:{port}@127.0.0.1"
            )
        )
        code, out = _check(conf, capsys)
    assert f"Socket: 127.0.0.1 port {port} is in use\n" in out
    assert "fix: if that is OpenDKIM, stop it" in out
    assert code == 1


def test_stale_pid_file_naming_another_program(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PidFile naming a live process that is not dkimd (this test run) proves nothing."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        pid_file = tmp_path / "dkimd.pid"
        pid_file.write_text(f"{os.getpid()}\n")
        conf = tmp_path / "opendkim.conf"
        conf.write_text(f"Mode v\nSocket inet:{port}@127.0.0.1\nPidFile {pid_file}\n")
        assert dkimd_holder(str(pid_file), tcp_listeners("127.0.0.1", port)) is Holder.NOT_DKIMD
        code, out = _check(conf, capsys)
    assert f"Socket: 127.0.0.1 port {port} is in use\n" in out
    assert code == 1


def test_own_daemon_on_a_unix_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Dkimd(tmp_path / "dkimd", mode="v", unix_socket=True) as daemon:
        _wait_for_pid_file(daemon)
        assert daemon.socket_path is not None
        inodes = unix_listeners(str(daemon.socket_path))
        assert inodes
        assert dkimd_holder(str(daemon.pid_path), inodes) is Holder.DKIMD
        code, out = _check(daemon.conf_path, capsys)
    assert "Socket:" not in out, out
    assert f"Socket {daemon.socket_path} is served by the running dkimd" in out
    assert code == 0


def test_another_program_on_a_unix_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "milter.sock"
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(path))
        other.listen()
        conf = tmp_path / "opendkim.conf"
        conf.write_text(f"Mode v\nSocket local:{path}\nPidFile {tmp_path}/none.pid\n")
        code, out = _check(conf, capsys)
    assert f"Socket: something is already listening on {path}" in out
    assert code == 1


# --- /proc reading, on a made-up tree -----------------------------------------------------


def _hex4(address: bytes) -> str:
    return "".join(f"{struct.unpack('=I', address[i : i + 4])[0]:08X}" for i in range(0, 16, 4))


def _fake_proc(root: Path, pid: int, cmdline: list[str], fds: dict[str, str]) -> None:
    (root / "net").mkdir(parents=True)
    v4 = f"{struct.unpack('=I', socket.inet_aton('127.0.0.1'))[0]:08X}"
    wildcard6 = _hex4(bytes(16))
    header = "  sl  local_address rem_address   st tx_queue rx_queue ... uid  timeout inode\n"
    (root / "net" / "tcp").write_text(
        header
        + f"   0: {v4}:22C3 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 111 1\n"
        + f"   1: {v4}:22C4 00000000:0000 01 00000000:00000000 00:00000000 00000000 0 0 112 1\n"
    )
    (root / "net" / "tcp6").write_text(
        header + f"   0: {wildcard6}:22C5 {wildcard6}:0000 0A 0:0 00:00000000 00000000 0 0 113 1\n"
    )
    (root / "net" / "unix").write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 114 /run/dkimd/milter.sock\n"
        "0000000000000000: 00000002 00000000 00000000 0001 03 115 /run/dkimd/milter.sock\n"
    )
    (root / str(pid) / "fd").mkdir(parents=True)
    (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in cmdline) + b"\0")
    for fd, target in fds.items():
        os.symlink(target, root / str(pid) / "fd" / fd)


def test_proc_tables_are_read_by_state_address_and_port(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 4242, ["dkimd"], {})
    proc = str(tmp_path)
    assert tcp_listeners("127.0.0.1", 8899, proc) == {111}
    assert tcp_listeners("127.0.0.1", 8900, proc) == set()  # 112 is not listening
    assert tcp_listeners("10.0.0.1", 8899, proc) == set()
    assert tcp_listeners("0.0.0.0", 8899, proc) == {111}  # wildcard collides with all
    assert tcp_listeners("::1", 8901, proc) == {113}
    assert unix_listeners("/run/dkimd/milter.sock", proc) == {114}


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["/usr/bin/python3", "/usr/local/bin/dkimd", "-x", "/etc/opendkim.conf"], Holder.DKIMD),
        (["/usr/bin/python3", "-m", "dkimd", "-x", "c"], Holder.DKIMD),
        (["dkimd", "-x", "c"], Holder.DKIMD),
        (["/usr/sbin/opendkim", "-x", "/etc/opendkim.conf"], Holder.NOT_DKIMD),
        (["/usr/bin/python3", "other.py", "dkimd"], Holder.NOT_DKIMD),
        (["/usr/bin/python3.11", "-u", "-m", "dkimd"], Holder.DKIMD),
        (["/bin/sh", "-c", "dkimd"], Holder.NOT_DKIMD),
        ([], Holder.NOT_DKIMD),
    ],
)
def test_the_pid_file_process_must_be_dkimd(
    tmp_path: Path, cmdline: list[str], expected: Holder
) -> None:
    _fake_proc(tmp_path, 4242, cmdline, {"3": "socket:[111]", "4": "/dev/null"})
    pid_file = tmp_path / "dkimd.pid"
    pid_file.write_text("4242\n")
    assert dkimd_holder(str(pid_file), {111}, str(tmp_path)) is expected


def test_dkimd_without_that_socket_or_pid_file(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 4242, ["dkimd"], {"3": "socket:[999]"})
    pid_file = tmp_path / "dkimd.pid"
    pid_file.write_text("4242\n")
    proc = str(tmp_path)
    assert dkimd_holder(str(pid_file), {111}, proc) is Holder.NOT_DKIMD
    assert dkimd_holder(None, {111}, proc) is Holder.NOT_DKIMD
    assert dkimd_holder(str(tmp_path / "missing.pid"), {111}, proc) is Holder.NOT_DKIMD
    pid_file.write_text("not a pid\n")
    assert dkimd_holder(str(pid_file), {111}, proc) is Holder.NOT_DKIMD
    pid_file.write_text("4243\n")  # no such process
    assert dkimd_holder(str(pid_file), {111}, proc) is Holder.NOT_DKIMD


def test_unreadable_descriptors_leave_it_unconfirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run by a user who may not look into the daemon's /proc/PID/fd (root can: simulated)."""
    _fake_proc(tmp_path, 4242, ["dkimd"], {"3": "socket:[111]"})
    pid_file = tmp_path / "dkimd.pid"
    pid_file.write_text("4242\n")

    def refuse(path: str) -> list[str]:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(socket_holder.os, "listdir", refuse)
    assert dkimd_holder(str(pid_file), {111}, str(tmp_path)) is Holder.UNCONFIRMED
