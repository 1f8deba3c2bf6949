"""dkimd.systemd.service: what is said when, STATUS contents, and counters across fork."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from dkimd.systemd.notify import Notifier
from dkimd.systemd.service import Counters, Service, WorkerCounters
from support.systemd_manager import NotifySocket


@dataclass
class Stats:
    messages: int = 0
    signed: int = 0
    verified: int = 0


@dataclass
class ServerStats:
    connections: int = 0


@dataclass
class Server:
    active_connections: int = 0
    stats: ServerStats = field(default_factory=ServerStats)


def test_without_notify_socket_nothing_is_sent() -> None:
    service = Service.from_environment({"WATCHDOG_USEC": "1000000"})
    assert service.notifier is None and service.watchdog is None
    service.ready()
    service.reloading()
    service.reloaded(True)
    service.tick()
    service.stopping()


def test_from_environment_reads_and_unsets(tmp_path: Path) -> None:
    env = {
        "NOTIFY_SOCKET": str(tmp_path / "n"),
        "WATCHDOG_USEC": "3000000",
        "WATCHDOG_PID": str(os.getpid()),
    }
    service = Service.from_environment(env)
    assert service.watchdog == 3.0
    assert service.period == 1.5  # half the watchdog interval
    assert env == {}
    assert Service(Notifier("/x"), None).period == 5.0
    assert Service(Notifier("/x"), 60.0).period == 5.0  # STATUS stays fresh


def test_tick_pings_and_sends_status_only_when_it_changed(tmp_path: Path) -> None:
    with NotifySocket(tmp_path / "n") as manager:
        service = Service(Notifier(str(tmp_path / "n")), 1.0, listening_on="inet:8891@127.0.0.1")
        stats, server = Stats(), Server()
        service.count_from(stats, server)
        service.ready()
        ready = manager.wait_for("READY")
        assert ready.fields["STATUS"] == (
            "serving on inet:8891@127.0.0.1; 0 messages (0 signed, 0 verified);"
            " connections: 0 open, 0 total; last reload: none"
        )
        service.tick()
        assert manager.wait_for("WATCHDOG").raw == b"WATCHDOG=1"  # nothing changed
        stats.messages, stats.signed, stats.verified = 5, 3, 2
        server.active_connections, server.stats.connections = 1, 4
        service.tick()
        note = manager.wait_for("WATCHDOG")
        assert note.fields["STATUS"] == (
            "serving on inet:8891@127.0.0.1; 5 messages (3 signed, 2 verified);"
            " connections: 1 open, 4 total; last reload: none"
        )
        service.reloading()
        manager.wait_for("RELOADING")
        service.reloaded(False)
        assert (
            manager.wait_for("READY").fields["STATUS"].endswith("FAILED (old configuration kept)")
        )
        service.close()


def test_without_watchdog_tick_sends_only_changes(tmp_path: Path) -> None:
    with NotifySocket(tmp_path / "n") as manager:
        service = Service(Notifier(str(tmp_path / "n")), None)
        stats = Stats()
        service.count_from(stats, Server())
        service.ready()
        manager.wait_for("READY")
        service.tick()
        assert manager.drain(0.2) == []
        stats.messages = 1
        service.tick()
        assert "1 messages" in manager.wait_for("STATUS").fields["STATUS"]
        service.close()


def test_worker_counters_survive_fork_and_a_dead_worker() -> None:
    shared = WorkerCounters(2)
    supervisor = Service(Notifier("/nonexistent"), None)
    supervisor.workers = shared
    for slot, messages in ((0, 7), (1, 5)):
        pid = os.fork()
        if pid == 0:  # a worker: counts, stores on tick, exits without cleanup
            worker = supervisor.for_worker(slot)
            worker.count_from(Stats(messages, messages, 0), Server(2, ServerStats(3)))
            worker.tick()
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
    assert shared.total() == Counters(12, 12, 0, 4, 6)
    # Slot 0's worker dies: its connections are gone, its counts stay, and its successor
    # adds on from them.
    supervisor.worker_died(0)
    assert shared.total() == Counters(12, 12, 0, 2, 6)
    successor = supervisor.for_worker(0)
    successor.count_from(Stats(1, 0, 1), Server(1, ServerStats(1)))
    successor.tick()
    assert shared.load(0) == Counters(8, 7, 1, 1, 4)
    assert shared.total() == Counters(13, 12, 1, 3, 7)


def test_supervisor_waits_for_every_workers_reload(tmp_path: Path) -> None:
    with NotifySocket(tmp_path / "n") as manager:
        supervisor = Service(Notifier(str(tmp_path / "n")), None)
        supervisor.supervise(3)
        workers = [supervisor.for_worker(slot) for slot in range(3)]
        for worker in workers:
            worker.count_from(Stats(), Server())
        supervisor.ready()
        manager.wait_for("READY")
        supervisor.start_timer()
        try:
            supervisor.relay_reload()
            manager.wait_for("RELOADING")
            workers[0].reloaded(True)
            workers[1].reloaded(False)
            # Slot 2 has not answered: no READY yet, however many ticks pass.
            assert not [n for n in manager.drain(0.3) if "READY" in n.fields]
            workers[2].reloaded(True)
            ready = manager.wait_for("READY", timeout=5)
            assert ready.fields["STATUS"].endswith(
                "FAILED in 1 of 3 workers (old configuration kept)"
            )
            # The next reload: all good; a worker that dies meanwhile is not waited for.
            supervisor.relay_reload()
            manager.wait_for("RELOADING")
            workers[0].reloaded(True)
            workers[1].reloaded(True)
            supervisor.worker_died(2)
            ready = manager.wait_for("READY", timeout=5)
            assert ready.fields["STATUS"].endswith(" ok (2 workers)")
            assert "3 workers, 0 messages" in ready.fields["STATUS"]
        finally:
            supervisor.stop_timer()
            supervisor.close()


def test_other_children_of_the_supervisor_are_not_workers() -> None:
    supervisor = Service(Notifier("/nonexistent"), None)
    supervisor.supervise(2)
    supervisor.worker_died(-2)  # e.g. a helper process the supervisor also restarts
    supervisor.worker_died(2)
    assert supervisor.workers is not None and supervisor.workers.total() == Counters()
    supervisor.close()


def test_without_systemd_the_supervisor_still_reports_each_reload_once() -> None:
    """No NOTIFY_SOCKET (metrics on, not under systemd): the supervisor follows each
    relayed reload to its outcome all the same and reports it once to on_reload."""
    supervisor = Service()
    supervisor.supervise(2)
    workers = [supervisor.for_worker(slot) for slot in range(2)]
    for worker in workers:
        worker.count_from(Stats(), Server())
    outcomes: list[bool] = []
    supervisor.on_reload = outcomes.append
    supervisor.start_timer()
    try:

        def settled(count: int) -> None:
            deadline = time.monotonic() + 5
            while len(outcomes) < count and time.monotonic() < deadline:
                time.sleep(0.01)  # SIGALRM ticks meanwhile

        supervisor.relay_reload()
        workers[0].reloaded(True)
        time.sleep(0.2)
        assert outcomes == []  # slot 1 has not answered
        workers[1].reloaded(True)
        settled(1)
        assert outcomes == [True]
        supervisor.relay_reload()
        workers[0].reloaded(True)
        workers[1].reloaded(False)  # refused by one: failed
        settled(2)
        time.sleep(0.2)
        assert outcomes == [True, False]  # once per reload, however many ticks
    finally:
        supervisor.stop_timer()
