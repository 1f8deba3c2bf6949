"""dkimd.systemd.notify: sd_notify datagrams to a real socket, and the watchdog variables."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from dkimd.systemd.notify import Notifier, notify_address, stderr_is_journal, watchdog_interval
from support.systemd_manager import NotifySocket


def test_addresses_path_abstract_and_unsupported() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@/org/freedesktop/systemd1/notify/1") == (
        b"\0/org/freedesktop/systemd1/notify/1"
    )
    assert notify_address("vsock:2:1234") is None
    assert notify_address("relative/path") is None


def test_from_environment_unsets_the_variable() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "OTHER": "1"}
    notifier = Notifier.from_environment(env)
    assert notifier is not None and notifier.address == "/run/x"
    assert env == {"OTHER": "1"}  # children do not inherit it
    kept = {"NOTIFY_SOCKET": "/run/x"}
    assert Notifier.from_environment(kept, unset=False) is not None
    assert kept == {"NOTIFY_SOCKET": "/run/x"}
    assert Notifier.from_environment({}) is None
    assert Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1"}) is None


def test_every_kind_of_notification_arrives_as_one_datagram(tmp_path: Path) -> None:
    with NotifySocket(tmp_path / "notify") as manager:
        notifier = Notifier(str(tmp_path / "notify"))
        assert notifier.ready("serving\non two\tlines")
        note = manager.wait_for("READY")
        assert note.raw == b"READY=1\nSTATUS=serving on two lines"  # one line: no injection
        assert note.pid == os.getpid()
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        note = manager.wait_for("RELOADING")
        assert before <= int(note.fields["MONOTONIC_USEC"])
        assert notifier.watchdog()
        assert manager.wait_for("WATCHDOG").raw == b"WATCHDOG=1"
        assert notifier.status("3 messages")
        assert manager.wait_for("STATUS").raw == b"STATUS=3 messages"
        assert notifier.stopping()
        assert manager.wait_for("STOPPING").fields == {"STOPPING": "1"}
        notifier.close()


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"dkimd-unit-{os.getpid()}"
    with NotifySocket(abstract=name) as manager:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": manager.env_value})
        assert notifier is not None
        assert notifier.ready()
        assert manager.wait_for("READY").raw == b"READY=1"
        notifier.close()


def test_send_never_raises_nor_blocks(tmp_path: Path) -> None:
    # Nobody listens: dropped and counted.
    notifier = Notifier(str(tmp_path / "gone"))
    assert not notifier.ready()
    assert notifier.dropped == 1
    notifier.close()
    # A receiver that never reads: the queue fills, sends fail fast instead of blocking.
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "full"))
    notifier = Notifier(str(tmp_path / "full"))
    start = time.monotonic()
    results = [notifier.status("x" * 1000) for _ in range(2000)]
    assert time.monotonic() - start < 5
    assert results[0] and not all(results)
    assert notifier.dropped == results.count(False)
    notifier.close()
    receiver.close()


def test_watchdog_interval() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4242"}
    assert watchdog_interval(env, pid=4242) == 2.0
    assert watchdog_interval(env, pid=4243) is None  # asked of another process
    assert watchdog_interval({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "x"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0


def test_stderr_is_journal_compares_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "journal", "w") as stream, open(tmp_path / "other", "w") as other:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(env, stream.fileno())
        assert not stderr_is_journal(env, other.fileno())  # stderr redirected elsewhere
        assert not stderr_is_journal({}, stream.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "x:y"}, stream.fileno())
