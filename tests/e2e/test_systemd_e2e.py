"""dkimd under systemd's service protocols: readiness, reload, watchdog, stop, socket activation.

PID 1 here is not systemd, and ``systemd --user`` refuses to run without it (see
tests/support/systemd_manager.py), so these tests play the manager exactly: a
NOTIFY_SOCKET datagram socket with sender credentials, WATCHDOG_USEC/WATCHDOG_PID, and
sockets passed as descriptors 3... with LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID naming the
service's own pid. One test also uses systemd's own systemd-socket-activate for the
LISTEN_FDS side. Every milter exchange is a whole Postfix-like session over the socket.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd import __version__
from support.milterwire import replies, session
from support.systemd_manager import (
    NotifySocket,
    connect_unix,
    listening_tcp,
    listening_unix,
    spawn_activated,
)
from support.tools import free_port, require

DKIMD = [sys.executable, "-m", "dkimd"]


def write_conf(workdir: Path, socket_spec: str | None, **options: str) -> Path:
    """A verifying configuration (no keys needed): every message is counted."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "dns.data").write_text("")
    conf = {
        "Mode": "v",
        "Syslog": "no",
        "TestDNSData": f"file:{workdir / 'dns.data'}",
    }
    if socket_spec is not None:
        conf["Socket"] = socket_spec
    conf.update(options)
    path = workdir / "opendkim.conf"
    path.write_text("".join(f"{k} {v}\n" for k, v in conf.items()))
    return path


def milter_session(sock: socket.socket, messages: int = 1) -> list[str]:
    """A whole Postfix-like session on a connected socket; the reply letters."""
    with sock:
        sock.settimeout(10.0)
        sock.sendall(session(messages=messages))
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    return [letter for letter, _ in replies(bytes(data))]


def tcp_session(port: int, messages: int = 1) -> list[str]:
    return milter_session(socket.create_connection(("127.0.0.1", port), timeout=5), messages)


def assert_served(letters: list[str], messages: int = 1) -> None:
    # One end-of-message answer per message: accept/continue, never tempfail/reject.
    finals = [x for x in letters if x in "actr"]
    assert len([x for x in finals if x in "ac"]) >= messages, letters
    assert "t" not in letters and "r" not in letters, letters


class Service:
    """One dkimd started as a systemd service would be; stopped (and checked) at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / "dkimd.log"
        self.notify = NotifySocket(workdir / "notify")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(
        self,
        conf: Path,
        *,
        sockets: list[tuple[socket.socket, str]] | None = None,
        watchdog_usec: int | None = None,
        watchdog_pid: str | None = None,
        args: tuple[str, ...] = (),
    ) -> subprocess.Popen[bytes]:
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.env_value, PYTHONUNBUFFERED="1")
        pid_variables: list[str] = []
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
            if watchdog_pid == "self":
                pid_variables.append("WATCHDOG_PID")
            elif watchdog_pid is not None:
                env["WATCHDOG_PID"] = watchdog_pid
        with open(self.log_path, "ab") as log:
            self.proc = spawn_activated(
                [*DKIMD, "-x", str(conf), "-f", *args],
                sockets or [],
                env,
                pid_variables=pid_variables,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # close() kills workers too, if the test fails
            )
        return self.proc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group: orphaned workers too
            self.proc.wait()
        self.notify.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    s = Service(tmp_path)
    yield s
    s.close()


def wait_status(service: Service, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        note = service.notify.wait_for("STATUS", timeout=max(0.1, deadline - time.monotonic()))
        seen.append(note.fields["STATUS"])
        if text in note.fields["STATUS"]:
            return note.fields["STATUS"]
    raise AssertionError(f"no STATUS with {text!r}: {seen}")


def test_ready_once_listening_status_counts_then_stopping(tmp_path: Path, service: Service) -> None:
    port = free_port()
    proc = service.start(write_conf(tmp_path, f"inet:{port}@127.0.0.1"), watchdog_usec=600_000)
    ready = service.notify.wait_for("READY", "1")
    # Sent by the main process (NotifyAccess=main), and only once the socket accepts: a
    # session started the moment READY=1 arrives is served.
    assert ready.pid == proc.pid
    assert_served(tcp_session(port))
    assert ready.fields["STATUS"].startswith(f"serving on inet:{port}@127.0.0.1; 0 messages")
    assert_served(tcp_session(port, messages=2))
    status = wait_status(service, "3 messages")
    assert "0 signed, 3 verified" in status and "0 open, 2 total" in status, status
    assert proc.poll() is None
    assert service.stop() == 0
    stopping = service.notify.wait_for("STOPPING", "1")
    assert stopping.pid == proc.pid
    # Nothing after STOPPING claims readiness again.
    assert not [
        n for n in service.notify.received if n.time > stopping.time and "READY" in n.fields
    ]


def test_reload_is_bracketed_by_reloading_and_ready(tmp_path: Path, service: Service) -> None:
    port = free_port()
    conf = write_conf(tmp_path, f"inet:{port}@127.0.0.1")
    proc = service.start(conf)
    service.notify.wait_for("READY", "1")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    proc.send_signal(signal.SIGHUP)
    reloading = service.notify.wait_for("RELOADING", "1")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    # MONOTONIC_USEC is CLOCK_MONOTONIC at the reload, as systemd's notify-reload wants.
    assert before <= int(reloading.fields["MONOTONIC_USEC"]) <= after
    ready = service.notify.wait_for("READY", "1")
    assert ready.time >= reloading.time
    assert ready.fields["STATUS"].endswith(" ok"), ready.fields
    # A broken configuration: refused, the old one kept, and systemd still told READY=1.
    conf.write_text(conf.read_text() + "Mode bogus\n")
    proc.send_signal(signal.SIGHUP)
    service.notify.wait_for("RELOADING", "1")
    ready = service.notify.wait_for("READY", "1")
    assert "FAILED (old configuration kept)" in ready.fields["STATUS"]
    assert_served(tcp_session(port))
    assert service.stop() == 0


def test_watchdog_pings_at_half_the_interval(tmp_path: Path, service: Service) -> None:
    proc = service.start(
        write_conf(tmp_path, f"inet:{free_port()}@127.0.0.1"),
        watchdog_usec=1_000_000,
        watchdog_pid="self",
    )
    service.notify.wait_for("READY", "1")
    pings = [n for n in service.notify.drain(3.0) if n.fields.get("WATCHDOG") == "1"]
    assert all(n.pid == proc.pid for n in pings)
    gaps = [b.time - a.time for a, b in itertools.pairwise(pings)]
    # Every 0.5 s; none late enough for systemd (1 s) to kill the service.
    assert len(pings) >= 5, gaps
    assert max(gaps) < 1.0, gaps
    assert 0.4 < sum(gaps) / len(gaps) < 0.7, gaps
    assert service.stop() == 0


def test_no_watchdog_pings_for_another_pid(tmp_path: Path, service: Service) -> None:
    service.start(
        write_conf(tmp_path, f"inet:{free_port()}@127.0.0.1"),
        watchdog_usec=200_000,
        watchdog_pid=str(os.getpid()),  # WATCHDOG_PID names some other process
    )
    service.notify.wait_for("READY", "1")
    assert not [n for n in service.notify.drain(1.0) if "WATCHDOG" in n.fields]
    assert service.stop() == 0


def test_workers_the_supervisor_notifies_and_sums_the_workers(
    tmp_path: Path, service: Service
) -> None:
    port = free_port()
    conf = write_conf(tmp_path, f"inet:{port}@127.0.0.1", Workers="2")
    proc = service.start(conf, watchdog_usec=1_000_000, watchdog_pid="self")
    ready = service.notify.wait_for("READY", "1")
    assert ready.pid == proc.pid
    assert "2 workers, 0 messages" in ready.fields["STATUS"]
    for _ in range(4):
        assert_served(tcp_session(port))
    wait_status(service, "4 messages")
    # A worker killed outright: its count stays, its successor counts on from it.
    workers = [
        int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    ]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if len(now) == 2 and str(workers[0]) not in now:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the killed worker was not replaced")
    for _ in range(2):
        assert_served(tcp_session(port))
    status = wait_status(service, "6 messages")
    assert "6 total" in status
    # READY=1 only once both workers have reloaded, and STATUS says how it went.
    proc.send_signal(signal.SIGHUP)
    assert service.notify.wait_for("RELOADING", "1").pid == proc.pid
    ready = service.notify.wait_for("READY", "1")
    assert ready.pid == proc.pid
    assert ready.fields["STATUS"].endswith(" ok (2 workers)"), ready.fields
    assert service.log().count("configuration reloaded from") == 2
    conf.write_text(conf.read_text() + "Mode bogus\n")
    proc.send_signal(signal.SIGHUP)
    service.notify.wait_for("RELOADING", "1")
    ready = service.notify.wait_for("READY", "1")
    assert "FAILED in 2 of 2 workers (old configuration kept)" in ready.fields["STATUS"]
    assert service.log().count("reload failed") == 2
    # Every datagram, pings included, came from the supervisor.
    assert {n.pid for n in service.notify.received} == {proc.pid}
    assert any("WATCHDOG" in n.fields for n in service.notify.received)
    assert service.stop() == 0
    assert service.notify.wait_for("STOPPING", "1").pid == proc.pid


def test_workers_the_reload_count_says_what_status_says(tmp_path: Path, service: Service) -> None:
    """With Workers 2 and metrics, each SIGHUP is one reload in dkimd_config_reloads_total,
    ok or failed as the STATUS that ends it."""
    from test_metrics_e2e import settled, values

    port, metrics_port = free_port(), free_port()
    conf = write_conf(
        tmp_path,
        f"inet:{port}@127.0.0.1",
        Workers="2",
        MetricsSocket=f"inet:{metrics_port}@127.0.0.1",
    )
    proc = service.start(conf)
    service.notify.wait_for("READY", "1")
    proc.send_signal(signal.SIGHUP)
    ready = service.notify.wait_for("READY", "1")
    assert ready.fields["STATUS"].endswith(" ok (2 workers)"), ready.fields
    m = settled(metrics_port, lambda m: bool(values(m, "dkimd_config_reloads_total")))
    assert values(m, "dkimd_config_reloads_total") == {(("result", "ok"),): 1}
    good = conf.read_text()
    conf.write_text(good + "Mode bogus\n")
    proc.send_signal(signal.SIGHUP)
    ready = service.notify.wait_for("READY", "1")
    assert "FAILED in 2 of 2 workers (old configuration kept)" in ready.fields["STATUS"]
    m = settled(metrics_port, lambda m: len(values(m, "dkimd_config_reloads_total")) == 2)
    assert values(m, "dkimd_config_reloads_total") == {
        (("result", "ok"),): 1,
        (("result", "failed"),): 1,
    }
    conf.write_text(good)
    assert service.stop() == 0


def test_socket_activation_unix_socket_is_systemds(tmp_path: Path, service: Service) -> None:
    path = tmp_path / "milter.sock"
    listener = listening_unix(path)
    conf = write_conf(tmp_path, f"local:{path}")
    proc = service.start(conf, sockets=[(listener, "dkimd.socket")])
    listener.close()  # only the service holds it now, as under systemd (which keeps its own)
    service.notify.wait_for("READY", "1")
    assert_served(milter_session(connect_unix(path)))
    assert f"listening on local:{path} from systemd" in service.log()
    assert service.stop() == 0
    # dkimd did not bind it, so it must not unlink it: the file is systemd's.
    assert path.is_socket()
    assert proc.returncode == 0


def test_socket_activation_inet_picks_the_named_socket(tmp_path: Path, service: Service) -> None:
    other = listening_tcp()
    milter = listening_tcp()
    port = milter.getsockname()[1]
    # The configured Socket is OpenDKIM's old one: the socket named "milter" wins, and a
    # warning says so.
    conf = write_conf(tmp_path, f"inet:{free_port()}@127.0.0.1")
    service.start(conf, sockets=[(other, "metrics"), (milter, "milter")])
    service.notify.wait_for("READY", "1")
    assert_served(tcp_session(port))
    assert f"serving on inet:{port}@127.0.0.1 (milter) from systemd" in service.log()
    assert service.stop() == 0
    other.close()
    milter.close()


def test_socket_activation_matches_the_configured_address(tmp_path: Path, service: Service) -> None:
    first = listening_tcp()
    second = listening_tcp()
    port = second.getsockname()[1]
    conf = write_conf(tmp_path, f"inet:{port}@127.0.0.1")
    service.start(conf, sockets=[(first, "a"), (second, "b")])
    service.notify.wait_for("READY", "1")
    assert_served(tcp_session(port))
    assert "is not where systemd's socket is" not in service.log()
    assert service.stop() == 0
    first.close()
    second.close()


def test_socket_activation_needs_no_socket_line(tmp_path: Path, service: Service) -> None:
    milter = listening_tcp()
    port = milter.getsockname()[1]
    service.start(write_conf(tmp_path, None), sockets=[(milter, "dkimd.socket")])
    service.notify.wait_for("READY", "1")
    milter.close()
    assert_served(tcp_session(port))
    assert service.stop() == 0


def test_socket_activation_ambiguous_sockets_refuse_to_start(
    tmp_path: Path, service: Service
) -> None:
    a, b = listening_tcp(), listening_tcp()
    proc = service.start(
        write_conf(tmp_path, f"inet:{free_port()}@127.0.0.1"), sockets=[(a, "x"), (b, "y")]
    )
    assert proc.wait(timeout=30) == 78
    assert "systemd passed 2 sockets" in service.log()
    assert not [n for n in service.notify.drain(0.2) if "READY" in n.fields]
    a.close()
    b.close()


def test_listen_fds_for_another_pid_are_ignored(tmp_path: Path) -> None:
    # LISTEN_PID names someone else (inherited from a parent): dkimd binds its own Socket.
    port = free_port()
    conf = write_conf(tmp_path, f"inet:{port}@127.0.0.1")
    notify = NotifySocket(tmp_path / "notify")
    env = dict(os.environ, NOTIFY_SOCKET=notify.env_value, LISTEN_PID="1", LISTEN_FDS="1")
    with open(tmp_path / "dkimd.log", "wb") as log:
        proc = subprocess.Popen(
            [*DKIMD, "-x", str(conf), "-f"],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    try:
        notify.wait_for("READY", "1")
        assert_served(tcp_session(port))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    assert "from systemd" not in (tmp_path / "dkimd.log").read_text()


def test_abstract_notify_socket(tmp_path: Path) -> None:
    port = free_port()
    conf = write_conf(tmp_path, f"inet:{port}@127.0.0.1")
    name = f"dkimd-test-{os.getpid()}-{port}"
    with NotifySocket(abstract=name) as notify:
        env = dict(os.environ, NOTIFY_SOCKET=notify.env_value)
        proc = subprocess.Popen(
            [*DKIMD, "-x", str(conf), "-f"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert notify.wait_for("READY", "1").pid == proc.pid
            proc.send_signal(signal.SIGTERM)
            notify.wait_for("STOPPING", "1")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_under_systemd_socket_activate(tmp_path: Path) -> None:
    """systemd's own LISTEN_FDS implementation: it binds, waits for the first connection,
    then execs dkimd with the socket as fd 3 (and our NOTIFY_SOCKET passed through)."""
    tool = require("systemd-socket-activate")
    port = free_port()
    conf = write_conf(tmp_path, f"inet:{port}@127.0.0.1")
    with NotifySocket(tmp_path / "notify") as notify:
        env = dict(os.environ, NOTIFY_SOCKET=notify.env_value)
        with open(tmp_path / "dkimd.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    tool,
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--fdname=milter",
                    "-E",
                    "NOTIFY_SOCKET",
                    "-E",
                    "PYTHONPATH",
                    *DKIMD,
                    "-x",
                    str(conf),
                    "-f",
                ],
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + 10
            while True:  # the tool's socket is up once it accepts a connection
                try:
                    first = socket.create_connection(("127.0.0.1", port), timeout=5)
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline, (tmp_path / "dkimd.log").read_text()
                    time.sleep(0.05)
            # The first session waits in the backlog while dkimd starts, then is served.
            assert_served(milter_session(first))
            ready = notify.wait_for("READY", "1")
            assert ready.pid == proc.pid  # the tool execs dkimd in its own process
            assert_served(tcp_session(port))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = (tmp_path / "dkimd.log").read_text()
    assert f"listening on inet:{port}@127.0.0.1 from systemd" in text, text


def test_json_log_lines_for_the_journal(tmp_path: Path, service: Service) -> None:
    port = free_port()
    conf = write_conf(tmp_path, f"inet:{port}@127.0.0.1", LogFormat="json", LogWhy="yes")
    proc = service.start(conf)
    service.notify.wait_for("READY", "1")
    assert_served(tcp_session(port))
    assert service.stop() == 0
    entries = [json.loads(line) for line in service.log().splitlines()]
    assert {e["pid"] for e in entries} == {proc.pid}
    assert all(set(e) >= {"time", "level", "ident", "pid", "message"} for e in entries)
    assert entries[0]["message"].startswith(f"dkimd {__version__} starting (")
    about_message = [e for e in entries if "queue_id" in e]
    assert about_message and {e["queue_id"] for e in about_message} == {"QUEUE1"}, entries
    assert not any(e["message"].startswith("QUEUE1:") for e in about_message)


def test_socket_activation_with_workers_shares_systemds_socket(
    tmp_path: Path, service: Service
) -> None:
    path = tmp_path / "milter.sock"
    listener = listening_unix(path)
    proc = service.start(
        write_conf(tmp_path, f"local:{path}", Workers="2"), sockets=[(listener, "milter")]
    )
    listener.close()
    assert service.notify.wait_for("READY", "1").pid == proc.pid
    for _ in range(6):
        assert_served(milter_session(connect_unix(path)))
    # Served by the workers from the one inherited socket, counted by the supervisor.
    status = wait_status(service, "6 messages")
    assert "2 workers" in status and "6 total" in status, status
    assert "from systemd, 2 workers" in service.log()
    assert service.stop() == 0
    assert path.is_socket()


def test_workers_a_wedged_worker_is_killed_and_replaced(tmp_path: Path, service: Service) -> None:
    """systemd's watchdog sees the supervisor only; the supervisor holds each worker to the
    same interval. A worker whose event loop stops (SIGSTOP here: it never ticks again) is
    killed after WatchdogSec and replaced, while the supervisor goes on pinging."""
    port = free_port()
    conf = write_conf(tmp_path, f"inet:{port}@127.0.0.1", Workers="2")
    proc = service.start(conf, watchdog_usec=2_000_000, watchdog_pid="self")
    service.notify.wait_for("READY", "1")
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    workers = [int(p) for p in children.read_text().split()]
    assert len(workers) == 2
    time.sleep(1.5)  # a healthy worker is never taken for a wedged one
    assert sorted(int(p) for p in children.read_text().split()) == sorted(workers)
    os.kill(workers[0], signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = children.read_text().split()
        if len(now) == 2 and str(workers[0]) not in now:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the wedged worker was not replaced")
    assert (
        not Path(f"/proc/{workers[0]}").exists()
        or "zombie" in Path(f"/proc/{workers[0]}/status").read_text()
    )
    log = service.log()
    assert f"worker {workers[0]} has not ticked for 2s (WatchdogSec); killing it" in log
    assert str(workers[1]) in children.read_text().split()  # the healthy one stays
    for _ in range(4):
        assert_served(tcp_session(port))
    pings = [n for n in service.notify.drain(1.5) if n.fields.get("WATCHDOG") == "1"]
    assert pings and {n.pid for n in pings} == {proc.pid}
    assert service.stop() == 0


def test_workers_without_a_watchdog_a_stopped_worker_is_left_alone(
    tmp_path: Path, service: Service
) -> None:
    port = free_port()
    conf = write_conf(tmp_path, f"inet:{port}@127.0.0.1", Workers="2")
    proc = service.start(conf)
    service.notify.wait_for("READY", "1")
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    workers = [int(p) for p in children.read_text().split()]
    os.kill(workers[0], signal.SIGSTOP)
    time.sleep(3)
    assert sorted(int(p) for p in children.read_text().split()) == sorted(workers)
    assert "has not ticked" not in service.log()
    os.kill(workers[0], signal.SIGCONT)
    assert service.stop() == 0
