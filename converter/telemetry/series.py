"""The metrics every request updates, kept as plain numbers and turned into Prometheus series
when `/metrics` is read.

prometheus_client's own Counter and Histogram take a lock and go through a value object per
update, and a histogram walks its buckets one by one: the five updates of a tools/call cost
4.2 µs timed alone, and several times that in a loaded server. Here an update is a dict lookup
and an addition (the caller holds one lock for all of a request's updates), and a histogram finds
its bucket by bisection. `collect()` gives the very series prometheus_client would: the same
names, help texts, labels, `_total` and `_created`, cumulative `_bucket`s with `le`, `_count`
and `_sum` (tests/test_metrics_series.py compares them with prometheus_client's own).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from prometheus_client import utils
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

_go_float = cast(Callable[[float], str], utils.floatToGoString)  # how prometheus_client writes `le`


class CounterSeries:
    """A counter by label values. Not locked: the caller serialises updates (Metrics.emit)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self._values: dict[tuple[str, ...], list[float]] = {}  # label values -> [count, created]

    def inc(self, labels: tuple[str, ...]) -> None:
        value = self._values.get(labels)
        if value is None:
            self._values[labels] = [1.0, time.time()]
        else:
            value[0] += 1.0

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, (count, created) in list(self._values.items()):
            family.add_metric(labels, count, created=created)
        yield family


class HistogramSeries:
    """A histogram by label values, with fixed upper bounds. Not locked, as CounterSeries."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._edges = [_go_float(b) for b in self.bounds] + ["+Inf"]
        self._states: dict[tuple[str, ...], _Observed] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        state = self._states.get(labels)
        if state is None:
            state = self._states[labels] = _Observed(len(self.bounds) + 1)
        state.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        state.sum += value

    def collect(self) -> Iterator[Any]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, state in list(self._states.items()):
            cumulative, buckets = 0.0, []
            for edge, count in zip(self._edges, list(state.counts), strict=True):
                cumulative += count
                buckets.append((edge, cumulative))
            family.add_metric(labels, buckets, state.sum)
            family.add_sample(f"{self.name}_created", dict(zip(self.labels, labels, strict=True)), state.created)
        yield family


class _Observed:
    __slots__ = ("counts", "created", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum = 0.0
        self.created = time.time()


class GaugeReading:
    """A gauge read when scraped from a number someone else keeps (`read()`)."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self.name, self.documentation, self._read = name, documentation, read

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(self.name, self.documentation, value=float(self._read()))
