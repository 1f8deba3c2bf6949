"""Under a supervisor: one process's plain-number metrics copied to prometheus_client's
multiprocess files, where the exporter process sums every process's.

Counting into those files directly costs a lock, a pid check and a write to the mapped
file on every update (prometheus_client's MmapedValue), several times per message: 3-4%
of a verified message's instructions (bench/RESULTS.md, "Metrics"). So every process
counts in plain numbers (dkimd.metrics.local), as a single process does, and
``Publisher.publish`` writes them out once per worker tick (``dkimd.daemon.WORKER_TICK``,
a second), at a worker's exit, and in the supervisor after it counts something. Only
values that changed since the last copy are written.

The files are prometheus_client's own (``MultiProcessValue``), one set per pid, written
with the absolute values of this process (the keys and file names its Counter, Gauge and
Histogram would use, so the exporter's MultiProcessCollector reads them as its own):

* a restarted worker is a new pid, with new files starting at zero: its predecessor's
  files stay and keep counting in the sums, so nothing is reset or counted twice;
* what a worker counted after its last copy is lost if it is killed (SIGKILL, a crash
  in the interpreter): at most a tick's worth; a worker that stops, or fails with a
  Python exception, publishes on its way out;
* a scrape sees the workers' counts as of their last tick, at most a second old.
"""

from __future__ import annotations

import math
import os
from typing import Any

from prometheus_client.utils import floatToGoString
from prometheus_client.values import MultiProcessValue

from dkimd.metrics.local import LocalCounter, LocalGauge, LocalHistogram, LocalMetrics

__all__ = ["Publisher"]


class _Published:
    """One labelled child's values in the files, and what was last written to them."""

    __slots__ = ("last", "values")

    def __init__(self, values: list[Any]) -> None:
        self.values = values
        self.last: list[float] = [math.nan] * len(values)  # nan: never equal, written once


class Publisher:
    """Copies ``metrics`` to the multiprocess files of the directory named by
    ``PROMETHEUS_MULTIPROC_DIR`` (set before this is made: dkimd.metrics.setup)."""

    def __init__(self, metrics: LocalMetrics) -> None:
        self.metrics = metrics
        # A value class of our own: prometheus_client's module-wide one is chosen at its
        # import, from the environment of that moment.
        self._value_class = MultiProcessValue()  # type: ignore[no-untyped-call]
        self._published: dict[tuple[str, tuple[str, ...]], _Published] = {}
        self._pid = os.getpid()
        self._busy = False
        self._again = False

    def publish(self) -> None:
        # The supervisor publishes from its SIGALRM handler too, which may interrupt a
        # publish under way (and prometheus_client's lock is not reentrant): the inner
        # call only asks the one under way to go round once more.
        if self._busy:
            self._again = True
            return
        self._busy = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._write()
        finally:
            self._busy = False

    def _write(self) -> None:
        if os.getpid() != self._pid:
            # A forked child writes files of its own (MmapedValue reopens them): what the
            # parent wrote is not in them.
            self._pid = os.getpid()
            for entry in self._published.values():
                entry.last = [math.nan] * len(entry.values)
        for family in self.metrics.families:
            for labels, child in list(family.children.items()):
                numbers = _numbers(family, child)
                key = (family.name, labels)
                published = self._published.get(key)
                if published is None:
                    published = _Published(self._values(family, labels))
                    self._published[key] = published
                last = published.last
                for i, number in enumerate(numbers):
                    if number != last[i]:
                        published.values[i].set(number)
                        last[i] = number

    def _values(self, family: Any, labels: tuple[str, ...]) -> list[Any]:
        """The file entries of one child, as prometheus_client's own metric would make."""
        make = self._value_class
        name, doc, names = family.name, family.documentation, family.labelnames
        if isinstance(family, LocalCounter):
            return [make("counter", name, f"{name}_total", names, labels, doc)]
        if isinstance(family, LocalGauge):
            return [make("gauge", name, name, names, labels, doc, multiprocess_mode=family.mode)]
        assert isinstance(family, LocalHistogram)
        bucket_names = (*names, "le")
        les = [floatToGoString(b) for b in family.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        buckets = [
            make("histogram", name, f"{name}_bucket", bucket_names, (*labels, le), doc)
            for le in les
        ]
        return [*buckets, make("histogram", name, f"{name}_sum", names, labels, doc)]


def _numbers(family: Any, child: Any) -> list[float]:
    """The child's values in the order of ``Publisher._values``: histogram buckets are
    per bucket, not cumulative, as prometheus_client stores them."""
    if isinstance(family, LocalHistogram):
        return [*child.counts, child.sum]
    return [child.value]
