"""What the daemon tells systemd over its life: one ``Service`` the daemon calls.

* start: ``ready()`` once the milter socket accepts connections (READY=1 and a STATUS);
* SIGHUP/SIGUSR1: ``reloading()`` before the new configuration is read (RELOADING=1 with
  MONOTONIC_USEC) and ``reloaded(ok)`` after, successful or not (READY=1: the daemon
  serves either way, with the old configuration when the new one was refused);
* ``tick`` every ``period`` seconds: WATCHDOG=1 when systemd asked for it (WatchdogSec=,
  at half its interval, as sd_watchdog_enabled(3) advises) and STATUS= when the counters
  changed; a single process ticks from its event loop (``run``), so a wedged loop misses
  its pings and systemd restarts it; a supervisor (``Workers N``) ticks from SIGALRM
  (``start_timer``), which also interrupts its wait for children;
* stop: ``stopping()`` (STOPPING=1) as soon as a stop signal arrives.

With ``Workers N`` only the supervisor (the main PID systemd watches) notifies. Each worker
copies its counters into its own slot of a shared anonymous mapping (``WorkerCounters``),
which the supervisor adds up for STATUS; a worker that dies leaves its last copy behind,
and its replacement counts on from it, so the totals survive restarts (what a worker
counted after its last copy, at most one tick, is lost). A reload goes the same way: the
supervisor sends RELOADING=1 and relays the signal (``relay_reload``); each worker counts
its reload, good or refused, in its slot at once; the supervisor, ticking fast meanwhile,
sends READY=1 when every worker has counted one (or died, or RELOAD_WAIT has passed), with
a STATUS saying how many refused the new configuration, and reports the outcome once to
``on_reload`` (the metrics: one reload per signal, ok only if every worker took it).

Without NOTIFY_SOCKET nothing is sent; the supervisor still follows each reload to its
outcome for ``on_reload``, and the socket ownership flag (``socket_from_systemd``) is kept
either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import signal
import struct
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Protocol

from dkimd.systemd.notify import Notifier, watchdog_interval

__all__ = ["Counters", "Service", "WorkerCounters"]

#: Seconds between STATUS updates when no watchdog asks for a shorter tick.
STATUS_PERIOD = 5.0
#: The supervisor's tick while it waits for the workers' reloads, and how long it waits.
RELOAD_TICK = 0.05
RELOAD_WAIT = 60.0


class _Stats(Protocol):
    messages: int
    signed: int
    verified: int


class _ServerStats(Protocol):
    connections: int


class _Server(Protocol):
    @property
    def active_connections(self) -> int: ...

    @property
    def stats(self) -> _ServerStats: ...


@dataclass(slots=True)
class Counters:
    messages: int = 0
    signed: int = 0
    verified: int = 0
    connections_open: int = 0
    connections_total: int = 0
    reloads_ok: int = 0
    reloads_failed: int = 0

    def add(self, other: Counters) -> None:
        self.messages += other.messages
        self.signed += other.signed
        self.verified += other.verified
        self.connections_open += other.connections_open
        self.connections_total += other.connections_total
        self.reloads_ok += other.reloads_ok
        self.reloads_failed += other.reloads_failed

    @property
    def reloads(self) -> int:
        return self.reloads_ok + self.reloads_failed


_SLOT = struct.Struct("<7q")
_BEAT = struct.Struct("<d")  # time.monotonic() of a worker's last tick (one clock system-wide)


class WorkerCounters:
    """One slot of seven 64-bit counters per worker, in memory shared across fork.

    Each slot has a single writer (its worker) and a reader (the supervisor); a read that
    races a write sees each counter either old or new, which is all a STATUS line needs.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._map = mmap.mmap(-1, max(1, workers) * _SLOT.size)  # MAP_SHARED|MAP_ANONYMOUS
        self._beats = mmap.mmap(-1, max(1, workers) * _BEAT.size)
        for slot in range(workers):
            self.beat(slot)

    def beat(self, slot: int) -> None:
        """The worker in `slot` is alive and its event loop turns (or it has just started)."""
        _BEAT.pack_into(self._beats, slot * _BEAT.size, time.monotonic())

    def silent_for(self, slot: int) -> float:
        """Seconds since the worker in `slot` last ticked."""
        (last,) = _BEAT.unpack_from(self._beats, slot * _BEAT.size)
        return float(time.monotonic() - last)

    def store(self, slot: int, counters: Counters) -> None:
        _SLOT.pack_into(
            self._map,
            slot * _SLOT.size,
            counters.messages,
            counters.signed,
            counters.verified,
            counters.connections_open,
            counters.connections_total,
            counters.reloads_ok,
            counters.reloads_failed,
        )

    def load(self, slot: int) -> Counters:
        return Counters(*_SLOT.unpack_from(self._map, slot * _SLOT.size))

    def total(self) -> Counters:
        total = Counters()
        for slot in range(self.workers):
            total.add(self.load(slot))
        return total

    def worker_died(self, slot: int) -> None:
        """Its connections are closed now; what it counted stays (its successor adds on)."""
        counters = self.load(slot)
        counters.connections_open = 0
        self.store(slot, counters)
        self.beat(slot)  # its successor gets a whole interval to start ticking


class Service:
    """The daemon's link to systemd (module docstring)."""

    def __init__(
        self,
        notifier: Notifier | None = None,
        watchdog: float | None = None,
        *,
        socket_from_systemd: bool = False,
        listening_on: str = "",
    ) -> None:
        self.notifier = notifier
        self.watchdog = watchdog  # seconds of WATCHDOG_USEC, or None
        self.socket_from_systemd = socket_from_systemd
        self.listening_on = listening_on
        self.workers: WorkerCounters | None = None
        self._slot: int | None = None  # in a worker: where its counters go
        self._base = Counters()  # a restarted worker's predecessor's counts
        self._last_reload = "none"
        self._last_status: str | None = None
        self._counters: Callable[[], Counters] | None = None
        # In a worker: its reloads so far. In the supervisor: the reload being waited for
        # (each slot's reload count when it was relayed, and until when to wait).
        self._reloads = Counters()
        self._pending: tuple[dict[int, Counters], float] | None = None
        #: In the supervisor: told once per relayed reload whether every worker took it.
        self.on_reload: Callable[[bool], None] | None = None
        #: In the supervisor under a watchdog: told the slot of a worker whose event loop
        #: has not ticked for a whole WatchdogSec (the daemon kills it; it is restarted).
        self.on_wedged: Callable[[int], None] | None = None
        self._stopping = False

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str] | None = None, *, socket_from_systemd: bool = False
    ) -> Service:
        """Read (and unset) NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID."""
        env = os.environ if environ is None else environ
        notifier = Notifier.from_environment(env)
        watchdog = watchdog_interval(env) if notifier is not None else None
        for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        return cls(notifier, watchdog, socket_from_systemd=socket_from_systemd)

    @property
    def period(self) -> float:
        """Seconds between ticks: half the watchdog interval, or STATUS_PERIOD."""
        if self.watchdog is not None:
            return min(self.watchdog / 2, STATUS_PERIOD)
        return STATUS_PERIOD

    # -- the life cycle -------------------------------------------------------------------

    def ready(self) -> None:
        if self.notifier is not None:
            self._last_status = self._status()
            self.notifier.ready(self._last_status)

    def reloading(self) -> None:
        if self.notifier is not None:
            self.notifier.reloading("reloading the configuration")

    def reloaded(self, ok: bool) -> None:
        """This process's reload is over; ``ok``: the new configuration is in force."""
        if self._slot is not None:  # a worker: counted for the supervisor, at once
            if ok:
                self._reloads.reloads_ok += 1
            else:
                self._reloads.reloads_failed += 1
            self.tick()
            return
        self._finish_reload("ok" if ok else "FAILED (old configuration kept)")

    def _finish_reload(self, outcome: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        self._last_reload = f"{stamp} {outcome}"
        if self.notifier is not None:
            self._last_status = self._status()
            self.notifier.ready(self._last_status)

    def relay_reload(self) -> None:
        """The supervisor is about to signal the workers to reload (module docstring)."""
        if self.workers is None:
            return
        if self.notifier is not None:
            self.notifier.reloading("reloading the configuration")
        workers = self.workers
        before = {slot: workers.load(slot) for slot in range(workers.workers)}
        self._pending = (before, time.monotonic() + RELOAD_WAIT)
        self._set_timer(RELOAD_TICK)

    def _check_reload(self) -> None:
        pending, workers = self._pending, self.workers
        if pending is None or workers is None:
            return
        before, deadline = pending
        now = {slot: workers.load(slot) for slot in before}
        waiting = [slot for slot in before if now[slot].reloads <= before[slot].reloads]
        if waiting and time.monotonic() < deadline:
            return
        self._pending = None
        self._set_timer(self.period if self.notifier is not None else 0)
        failed = sum(1 for slot in before if now[slot].reloads_failed > before[slot].reloads_failed)
        if waiting:
            outcome = f"no answer from {len(waiting)} of {len(before)} workers"
        elif failed:
            outcome = f"FAILED in {failed} of {len(before)} workers (old configuration kept)"
        else:
            outcome = f"ok ({len(before)} workers)"
        self._finish_reload(outcome)
        if self.on_reload is not None:
            self.on_reload(not waiting and not failed)

    def stopping(self) -> None:
        self._stopping = True
        if self.notifier is not None:
            self.notifier.stopping("stopping: finishing in-flight messages")

    def tick(self) -> None:
        """WATCHDOG=1 if asked for, STATUS= if it changed; in a worker, store its counters."""
        if self._slot is not None and self.workers is not None and self._counters is not None:
            self.workers.store(self._slot, self._counters())
            self.workers.beat(self._slot)
        if self._pending is not None:
            self._check_reload()
        if self._slot is None:
            self._check_workers()
        notifier = self.notifier
        if notifier is None:
            return
        status = self._status()
        lines = ["WATCHDOG=1"] if self.watchdog is not None else []
        if status != self._last_status:
            lines.append(f"STATUS={status}")
            self._last_status = status
        if lines:
            notifier.send(*lines)

    def _check_workers(self) -> None:
        """systemd's watchdog sees only the supervisor, whose pings go on while a worker's
        event loop is stuck (a wedged worker would hold its connections until the MTA's
        milter timeouts, forever for new ones it accepts): the same interval applies to
        each worker's own tick."""
        workers, watchdog, wedged = self.workers, self.watchdog, self.on_wedged
        if workers is None or watchdog is None or wedged is None or self._stopping:
            return
        for slot in range(workers.workers):
            if workers.silent_for(slot) > watchdog:
                workers.beat(slot)  # one report per interval, until its successor ticks
                wedged(slot)

    # -- where the counters come from -----------------------------------------------------

    def count_from(self, stats: _Stats, server: _Server) -> None:
        """This process serves: its counters are these (plus a predecessor's, in a worker)."""
        base = self._base
        reloads = self._reloads

        def counters() -> Counters:
            return Counters(
                base.messages + stats.messages,
                base.signed + stats.signed,
                base.verified + stats.verified,
                server.active_connections,
                base.connections_total + server.stats.connections,
                base.reloads_ok + reloads.reloads_ok,
                base.reloads_failed + reloads.reloads_failed,
            )

        self._counters = counters

    def supervise(self, workers: int) -> None:
        """In the supervisor, before forking: the workers' shared counters."""
        self.workers = WorkerCounters(workers)
        shared = self.workers
        self._counters = shared.total

    def for_worker(self, slot: int) -> Service:
        """The worker's Service (in the child, after fork): no notifications, counters
        go to ``slot``, starting from what the slot's previous worker left there."""
        # The supervisor's watchdog interval sets the worker's tick: it must beat within it.
        worker = Service(watchdog=self.watchdog, socket_from_systemd=self.socket_from_systemd)
        worker.workers = self.workers
        worker._slot = slot
        if self.workers is not None:
            worker._base = self.workers.load(slot)
            worker._base.connections_open = 0
            self.workers.beat(slot)
        return worker

    def worker_died(self, slot: int) -> None:
        """A child of the supervisor died; slots outside the workers' (another kind of
        child) are ignored."""
        if self.workers is None or not 0 <= slot < self.workers.workers:
            return
        self.workers.worker_died(slot)
        pending = self._pending
        if pending is not None and slot in pending[0]:
            # Its successor starts with the configuration the supervisor has read (it
            # counts no reload): nothing to wait for.
            before = dict(pending[0])
            del before[slot]
            self._pending = (before, pending[1])

    def _status(self) -> str:
        c = self._counters() if self._counters is not None else Counters()
        workers = f"{self.workers.workers} workers, " if self.workers and self._slot is None else ""
        where = f"serving on {self.listening_on}; " if self.listening_on else ""
        return (
            f"{where}{workers}{c.messages} messages ({c.signed} signed, {c.verified} verified);"
            f" connections: {c.connections_open} open, {c.connections_total} total;"
            f" last reload: {self._last_reload}"
        )

    # -- the clocks -----------------------------------------------------------------------

    async def run(self) -> None:
        """Tick from the event loop until cancelled (a single process or a worker)."""
        if self.notifier is None and self._slot is None:
            return
        period = self.period
        while True:
            await asyncio.sleep(period)
            self.tick()

    def start_timer(self) -> None:
        """Tick from SIGALRM (the supervisor, which blocks in os.wait()): every period
        under systemd, else only while a reload is followed. Interval timers are not
        inherited across fork, so workers never tick from it."""
        if self.notifier is None and self.workers is None:
            return
        signal.signal(signal.SIGALRM, lambda _signum, _frame: self.tick())
        if self.notifier is not None:
            self._set_timer(self.period)

    def _set_timer(self, period: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, period, period)

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()

    def stop_timer(self) -> None:
        if self.notifier is None and self.workers is None:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
