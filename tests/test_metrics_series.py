"""The per-request series (converter.telemetry.series) expose exactly what prometheus_client's own
Counter and Histogram expose for the same updates: the oracle is prometheus_client itself."""

from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from converter.telemetry.record import CallRecord
from converter.telemetry.series import CounterSeries, HistogramSeries
from converter.telemetry.sinks import _LATENCY_BUCKETS, Metrics, _Locked


def exposition(registry: CollectorRegistry) -> list[str]:
    """The text form without the `_created` timestamps (they differ by when each was made)."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created{" not in line]


def created_series(registry: CollectorRegistry) -> list[str]:
    return sorted(line.rsplit(" ", 1)[0] for line in generate_latest(registry).decode().splitlines()
                  if "_created{" in line)


def test_counters_and_histograms_match_prometheus_client_for_the_same_updates() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("demo_requests", "Requests", ["method", "outcome"], registry=theirs)
    histogram = Histogram("demo_seconds", "Time", ["method"], buckets=_LATENCY_BUCKETS, registry=theirs)
    our_counter = CounterSeries("demo_requests", "Requests", ["method", "outcome"])
    our_histogram = HistogramSeries("demo_seconds", "Time", ["method"], _LATENCY_BUCKETS)
    ours.register(_Locked(threading.Lock(), [our_counter, our_histogram]))
    assert exposition(ours) == exposition(theirs)  # nothing observed yet: the same HELP and TYPE lines

    rng = random.Random(7)
    # Every bound itself (a value equal to `le` counts in that bucket), beside it, below all, above all.
    values = [*_LATENCY_BUCKETS, *(b * 1.0001 for b in _LATENCY_BUCKETS), 0.0, 1e-9, 31.0, 1e6]
    values += [rng.uniform(0, 40) ** 2 / 40 for _ in range(500)]
    for value in values:
        method = rng.choice(["tools/call", "tools/list", "initialize"])
        outcome = rng.choice(["ok", "rpc_error"])
        counter.labels(method, outcome).inc()
        our_counter.inc((method, outcome))
        histogram.labels(method).observe(value)
        our_histogram.observe((method,), value)
    assert exposition(ours) == exposition(theirs)
    assert created_series(ours) == created_series(theirs)


def test_the_metrics_of_calls_and_requests_in_flight() -> None:
    metrics = Metrics(["getUser"])
    for name, ms, upstream in (("getUser", 3.0, 1.0), ("getUser", 0.5, 0.25), ("nope", 2.0, None)):
        record = CallRecord(http_method="POST", path="/mcp", mcp_method="tools/call", name=name, http_status=200,
                            upstream_ms=upstream, is_error=False)
        record.duration_ms = ms
        metrics.emit(record)
    metrics.request_started()
    metrics.request_started()
    metrics.request_ended()
    text = generate_latest(metrics.registry).decode()
    assert 'openapi_mcp_requests_total{method="tools/call",outcome="ok"} 3.0' in text
    assert 'openapi_mcp_tool_calls_total{outcome="ok",tool="getUser"} 2.0' in text
    assert 'openapi_mcp_tool_calls_total{outcome="ok",tool="(unknown)"} 1.0' in text  # not the client's name
    assert 'openapi_mcp_request_duration_seconds_bucket{le="0.0005",method="tools/call"} 1.0' in text
    assert 'openapi_mcp_request_duration_seconds_bucket{le="0.0025",method="tools/call"} 2.0' in text
    assert 'openapi_mcp_request_duration_seconds_sum{method="tools/call"} 0.0055' in text
    assert 'openapi_mcp_upstream_duration_seconds_bucket{le="0.0005",tool="getUser"} 1.0' in text
    assert 'openapi_mcp_upstream_duration_seconds_count{tool="getUser"} 2.0' in text
    assert 'tool="nope"' not in text
    assert "openapi_mcp_in_flight_requests 1.0" in text
