"""Metrics of one process in plain Python numbers, collected into prometheus_client families
only when scraped.

prometheus_client's own Counter and Histogram take a lock and check their state on every
update (about 1 us for an increment, 2 us for an observation here), several times per
message: 3% of a verified message's CPU. With one process, every update and the scrape run
on the same event loop thread, so no lock is needed: an update here is an attribute add
(a histogram's a bisect too), and the work of presenting them moves to the scrape.

The classes mirror the part of prometheus_client's metric API the recorder uses
(``labels(...)``, ``inc``, ``dec``, ``set``, ``observe``). Under ``Workers`` each worker
counts the same way, and dkimd.metrics.shared copies the numbers to prometheus_client's
multiprocess files once per tick, where the exporter process sums them: an update costs
the same in both modes.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

__all__ = ["LocalCounter", "LocalGauge", "LocalHistogram", "LocalMetrics"]


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value

    def reset(self) -> None:
        self.value = 0.0


class _Buckets:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left: a value equal to a bound is in that bucket (le, "less or equal").
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0


class _Family:
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], object] = {}
        # Without labels there is one child: made now, so that updates skip labels().
        self.only: Any = self.labels() if not self.labelnames else None

    def _child(self, values: tuple[str, ...]) -> object:
        raise NotImplementedError

    def labels(self, *values: str) -> object:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, got {values}")
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self._child(values)
        return child

    def collect(self) -> Metric:
        raise NotImplementedError

    def reset(self) -> None:
        """Counts back to zero (a forked worker; gauges keep theirs: they say a state)."""
        for child in self.children.values():
            assert isinstance(child, _Value | _Buckets)
            child.reset()


class LocalCounter(_Family):
    def _child(self, values: tuple[str, ...]) -> _Value:
        return _Value()

    def inc(self, amount: float = 1.0) -> None:
        self.only.inc(amount)

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            assert isinstance(child, _Value)
            family.add_metric(values, child.value)
        return family


class LocalGauge(_Family):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], mode: str = "all"
    ) -> None:
        self.mode = mode  # how the exporter combines the processes' values (multiprocess)
        super().__init__(name, documentation, labelnames)

    def reset(self) -> None:
        pass

    def _child(self, values: tuple[str, ...]) -> _Value:
        return _Value()

    def inc(self, amount: float = 1.0) -> None:
        self.only.inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self.only.dec(amount)

    def set(self, value: float) -> None:
        self.only.set(value)

    def collect(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            assert isinstance(child, _Value)
            family.add_metric(values, child.value)
        return family


class LocalHistogram(_Family):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        super().__init__(name, documentation, labelnames)

    def _child(self, values: tuple[str, ...]) -> _Buckets:
        return _Buckets(self.bounds)

    def observe(self, amount: float) -> None:
        self.only.observe(amount)

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        names = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for values, child in self.children.items():
            assert isinstance(child, _Buckets)
            running = 0
            cumulative = []
            for name, count in zip(names, child.counts, strict=True):
                running += count
                cumulative.append((name, running))
            family.add_metric(values, cumulative, child.sum)
        return family


class LocalMetrics(Collector):
    """The families of one process, registered in a CollectorRegistry as one collector
    (one process), or in none (under a supervisor: dkimd.metrics.shared publishes them)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.families: list[_Family] = []
        if registry is not None:
            registry.register(self)

    def add(self, family: _Family) -> _Family:
        self.families.append(family)
        return family

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.collect()
