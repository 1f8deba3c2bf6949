"""``Workers 2``: the real supervisor and workers, real milter connections.

* A worker started after a reload (one that died and was restarted) serves the
  configuration in force: the one the reload brought, or, after a reload the workers
  refused, still that one; never the configuration of the start.
* Workers do not outlive a supervisor killed with SIGKILL (which can relay nothing): they
  finish the message in flight, then exit; so does the metrics exporter process.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from test_metrics_e2e import HEADERS, final, milter_message, private_key

from support.dkimd import Dkimd
from support.tools import free_port, is_listening


def _started(d: Dkimd, what: str = "worker") -> list[int]:
    """Pids of the supervisor's children of that kind, in the order they started."""
    marker = f"{what} "
    return [
        int(line.split(marker, 1)[1].split()[0])
        for line in d.log_text().splitlines()
        if marker in line and " started (slot " in line
    ]


def _wait(condition: object, what: str, d: Dkimd, timeout: float = 20.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}:\n{d.log_text()}"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet (re-parented)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _selector(port: int) -> str:
    """The s= of the signature dkimd adds to a message from an internal client."""
    replies = milter_message(port, HEADERS, client="127.0.0.1")
    assert final(replies) == "a"
    [added] = [payload for letter, payload in replies if letter in "hi"]
    assert b"DKIM-Signature" in added
    tags = dict(
        t.strip().split("=", 1)
        for t in added.split(b"\0")[-2].decode().replace("\r\n", "").split(";")
        if "=" in t
    )
    return tags["s"]


def _signer(tmp_path: Path, **options: str) -> Dkimd:
    work = tmp_path / "dkimd"
    work.mkdir()
    key = private_key(work / "mail.key")
    return Dkimd(
        work,
        domain="example.com",
        selector="mail",
        keyfile=key,
        internal_hosts=["127.0.0.1"],
        options={"Workers": "2", **options},
    )


def _kill_workers(d: Dkimd) -> None:
    """SIGKILL both workers; returns once both replacements have started."""
    before = _started(d)
    victims = before[-2:]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    _wait(lambda: len(_started(d)) >= len(before) + 2, "both workers restarted", d)


def test_a_worker_restarted_after_a_reload_serves_the_configuration_in_force(
    tmp_path: Path,
) -> None:
    d = _signer(tmp_path)
    with d:
        d.wait_for_log("worker ")
        assert _selector(d.port) == "mail"
        d.config["Selector"] = "new"
        d.write_config()
        d.reload(wait_for=None)
        _wait(lambda: d.log_text().count("configuration reloaded") == 2, "two reloads", d)
        assert {_selector(d.port) for _ in range(4)} == {"new"}

        # Both workers die: their replacements come from the supervisor, which must hand
        # them the reloaded configuration, not the one it started with.
        _kill_workers(d)
        assert {_selector(d.port) for _ in range(6)} == {"new"}

        # A reload both workers refuse keeps "new" in force, in restarted workers too.
        good = d.conf_path.read_text()
        d.conf_path.write_text(good.replace("Selector new", "Selector other") + "Bogus 1\n")
        d.reload(wait_for=None)
        _wait(lambda: d.log_text().count("reload failed") == 2, "two refusals", d)
        _kill_workers(d)
        assert {_selector(d.port) for _ in range(6)} == {"new"}
        d.conf_path.write_text(good)


def test_workers_finish_in_flight_messages_and_exit_when_the_supervisor_is_killed(
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    d = _signer(tmp_path, MetricsSocket=f"inet:{metrics_port}@127.0.0.1")
    d.start()
    children: list[int] = []
    try:
        d.wait_for_log("metrics exporter ")
        workers = _started(d)
        [exporter] = _started(d, "metrics exporter")
        children = [*workers, exporter]
        assert len(workers) == 2
        supervisor = d.pid

        def kill_supervisor() -> None:
            # The message is in flight (its body sent, its end not yet).
            os.kill(supervisor, signal.SIGKILL)
            assert d.proc is not None
            d.proc.wait(timeout=10)
            _wait(lambda: d.log_text().count("SIGTERM: stopping") == 2, "workers stopping", d)
            _wait(lambda: not is_listening(d.port), "the milter socket closed", d)

        replies = milter_message(d.port, HEADERS, client="127.0.0.1", before_eom=kill_supervisor)
        assert final(replies) == "a"
        assert any(letter in "hi" and b"DKIM-Signature" in p for letter, p in replies)
        for pid in children:
            _wait(lambda pid=pid: _gone(pid), f"child {pid} still running", d)
        assert not is_listening(metrics_port)
        assert "worker failed" not in d.log_text()
    finally:
        for pid in children:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        d.stop()
