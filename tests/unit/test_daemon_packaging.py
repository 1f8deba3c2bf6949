"""packaging/dkimd.service and dkimd.socket: units systemd accepts, starting dkimd the way the
daemon takes it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from dkimd.cli.serve import build_parser
from support.tools import require, unavailable

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
UNIT = PACKAGING / "dkimd.service"
SOCKET_UNIT = PACKAGING / "dkimd.socket"


def unit_entries(unit: Path = UNIT) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values, in order; systemd allows repeated keys, configparser not."""
    entries: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        entries.setdefault((section, key.strip()), []).append(value.strip())
    return entries


def test_exec_start_is_dkimd_with_flags_the_daemon_accepts() -> None:
    entries = unit_entries()
    [exec_start] = entries[("Service", "ExecStart")]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "dkimd"
    args = build_parser().parse_args(argv[1:])  # SystemExit on a flag we do not take
    assert args.config == "/etc/opendkim.conf"
    # Type=notify: the process systemd started is the daemon, and says when it is ready.
    assert args.foreground
    assert entries[("Service", "Type")] == ["notify"]
    assert entries[("Service", "NotifyAccess")] == ["main"]  # the supervisor notifies
    assert ("Service", "PIDFile") not in entries  # systemd knows the main pid
    [watchdog] = entries[("Service", "WatchdogSec")]
    assert watchdog.endswith("s") and int(watchdog[:-1]) >= 10
    assert args.socket is None and args.user is None  # both from opendkim.conf
    assert ("Service", "User") not in entries  # the daemon drops to UserID itself
    [reload] = entries[("Service", "ExecReload")]
    assert reload.split()[-2:] in (["-HUP", "$MAINPID"], ["-USR1", "$MAINPID"])
    # ProtectSystem=strict: the pid file's directory must stay writable.
    pid_dir = str(Path(args.pid_file).parent)
    assert pid_dir in entries[("Service", "ReadWritePaths")][0].split()


def test_hardening_keeps_what_the_seed_setup_needs() -> None:
    entries = unit_entries()
    caps = set(entries[("Service", "CapabilityBoundingSet")][0].split())
    # Read opendkim-owned 0600 keys and write into /run/opendkim as root; then drop.
    assert {"CAP_DAC_OVERRIDE", "CAP_SETUID", "CAP_SETGID"} <= caps
    families = set(entries[("Service", "RestrictAddressFamilies")][0].split())
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= families  # inet:8891@localhost, syslog
    assert ("Service", "PrivateNetwork") not in entries  # would hide 8891 from Postfix
    assert ("Service", "IPAddressDeny") not in entries
    for key in ("InaccessiblePaths", "TemporaryFileSystem"):
        assert not any("/etc" in v for v in entries.get(("Service", key), []))


def test_socket_unit_hands_dkimd_the_seed_socket() -> None:
    entries = unit_entries(SOCKET_UNIT)
    # The seed's Socket inet:8891@localhost; named "milter", which dkimd looks for.
    assert entries[("Socket", "ListenStream")] == ["127.0.0.1:8891"]
    assert entries[("Socket", "FileDescriptorName")] == ["milter"]
    assert entries[("Socket", "Service")] == [UNIT.name]
    assert entries[("Unit", "Conflicts")] == ["opendkim.service"]
    assert entries[("Install", "WantedBy")] == ["sockets.target"]


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    tool = require("systemd-analyze")
    text = UNIT.read_text()
    [exec_start] = unit_entries()[("Service", "ExecStart")]
    installed = shlex.split(exec_start)[0]
    if not Path(installed).exists():
        # verify checks that the program exists; use this checkout's dkimd instead: the one
        # installed beside the interpreter running the tests (the venv's, even when the venv is
        # not activated), else the one on PATH.
        beside = Path(sys.executable).parent / "dkimd"
        here = str(beside) if beside.is_file() else shutil.which("dkimd")
        if here is None:
            unavailable(f"dkimd is installed neither beside {sys.executable} nor on PATH")
        text = text.replace(installed, str(Path(here).resolve()))
    unit = tmp_path / "dkimd.service"
    unit.write_text(text)
    socket_unit = tmp_path / "dkimd.socket"
    socket_unit.write_text(SOCKET_UNIT.read_text())
    proc = subprocess.run(
        [tool, "verify", str(unit), str(socket_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # Unknown or misspelt keys are only warnings ("Unknown key ..., ignoring"): none allowed.
    assert proc.stderr.strip() == "", proc.stderr


def test_tmpfiles_line_matches_the_pid_directory() -> None:
    [line] = [
        x
        for x in (PACKAGING / "dkimd.tmpfiles").read_text().splitlines()
        if x and not x.startswith("#")
    ]
    kind, path, mode, user, group, *_ = line.split()
    assert (kind, path, mode, user, group) == ("d", "/run/opendkim", "0750", "opendkim", "opendkim")
