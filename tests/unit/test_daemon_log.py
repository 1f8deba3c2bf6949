"""dkimd.log: syslog lines as libc writes them, and no noise when syslog is not there."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd.log import (
    QueueIdAdapter,
    StderrFormatter,
    SyslogSocketHandler,
    get_logger,
    setup_logging,
)


@pytest.fixture
def syslogd(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    path = tmp_path / "log"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield path, sock
    sock.close()


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """setup_logging reconfigures the process-wide `dkimd` logger: put it back as it was
    (other tests read dkimd records through pytest's caplog, which needs propagation)."""
    root = logging.getLogger("dkimd")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in saved[0]:
            handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    root.propagate = saved[2]


def record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("dkimd.test", level, __file__, 1, msg, None, None)


def test_lines_carry_priority_ident_and_pid(syslogd: tuple[Path, socket.socket]) -> None:
    path, server = syslogd
    handler = SyslogSocketHandler(facility="mail", address=str(path))
    handler.emit(record(logging.INFO, "QID1: DKIM-Signature field added (s=mail, d=example.com)"))
    handler.emit(record(logging.ERROR, "bad"))
    local3 = SyslogSocketHandler(facility="local3", address=str(path))
    local3.emit(record(logging.WARNING, "w"))
    pid = os.getpid()
    assert server.recv(4096) == (
        f"<22>dkimd[{pid}]: QID1: DKIM-Signature field added (s=mail, d=example.com)".encode()
    )  # mail.info = 2 * 8 + 6
    assert server.recv(4096) == f"<19>dkimd[{pid}]: bad".encode()  # mail.err
    assert server.recv(4096) == f"<156>dkimd[{pid}]: w".encode()  # local3.warning = 19 * 8 + 4
    handler.close()
    local3.close()


def test_absent_socket_drops_quietly_then_reconnects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "log"
    handler = SyslogSocketHandler(address=str(path))
    handler.emit(record(logging.INFO, "lost"))
    handler.emit(record(logging.INFO, "lost too"))
    assert handler.dropped == 2
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    # syslogd comes up later: the next line gets through without a restart of dkimd.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        handler.emit(record(logging.INFO, "back"))
        assert server.recv(4096).endswith(b": back")
    handler.close()


def test_dead_socket_file_is_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "log"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody reads: what a container's /dev/log often is
    setup_logging(syslog=True, stderr=True, syslog_address=str(path))
    get_logger("test").info("still works")
    err = capsys.readouterr().err
    assert "still works" in err
    assert "Traceback" not in err and "Logging error" not in err


def test_syslog_restarted_under_us(syslogd: tuple[Path, socket.socket]) -> None:
    path, server = syslogd
    handler = SyslogSocketHandler(address=str(path))
    handler.emit(record(logging.INFO, "one"))
    assert server.recv(4096).endswith(b": one")
    server.close()
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as again:
        again.bind(str(path))
        again.settimeout(2)
        handler.emit(record(logging.INFO, "two"))
        assert again.recv(4096).endswith(b": two")
    handler.close()


def test_queue_id_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(syslog=False, stderr=True)
    adapter = QueueIdAdapter(get_logger("session"))
    adapter.info("before")
    adapter.queue_id = "4F2xyz"
    adapter.info("DKIM-Signature field added (s=%s, d=%s)", "mail", "example.com")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith(f"dkimd[{os.getpid()}]: NOQUEUE: before")
    assert lines[1].endswith(": 4F2xyz: DKIM-Signature field added (s=mail, d=example.com)")


def test_stderr_lines_are_what_the_standard_formatter_writes() -> None:
    """StderrFormatter renders the date once per second; the text must not change for it,
    within a second, across seconds, or with a traceback."""
    ours = StderrFormatter("dkimd")
    standard = logging.Formatter("%(asctime)s dkimd[%(process)d]: %(message)s")

    def record(created: float, msg: str, exc: bool = False) -> logging.LogRecord:
        exc_info = None
        if exc:
            try:
                raise ValueError("bad key")
            except ValueError:
                exc_info = sys.exc_info()
        rec = logging.LogRecord("dkimd.x", logging.INFO, "", 0, msg, ("a",), exc_info)
        rec.created = created
        rec.msecs = (created - int(created)) * 1000
        return rec

    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        for exc in (False, True):
            a, b = record(created, "one %s", exc), record(created, "one %s", exc)
            assert ours.format(a) == standard.format(b)
    assert ours.format(record(1_700_000_001.042, "x%s")).split(" ")[1].endswith(",042")
