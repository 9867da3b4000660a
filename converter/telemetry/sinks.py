"""Where finished CallRecords go: a JSON access log, Prometheus metrics, a ring buffer.

A sink is anything with `emit(record)`; adding one never touches a handler.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import IO, TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from pydantic_core import to_json

from converter.telemetry.record import CallRecord
from converter.telemetry.series import CounterSeries, GaugeReading, HistogramSeries

if TYPE_CHECKING:
    from converter.credentials.stats import CredentialStats

log = logging.getLogger("openapi_mcp")
UNKNOWN = "(unknown)"
NO_TOOL = "(none)"  # a request that calls no tool (rate limits count those too)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_MCP_METHODS = frozenset({
    "initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read", "resources/templates/list",
    "resources/subscribe", "resources/unsubscribe", "prompts/list", "prompts/get", "completion/complete",
    "server/discover", "subscriptions/listen", "logging/setLevel", "notifications/initialized",
    "notifications/cancelled", "notifications/progress", "notifications/roots/list_changed",
})


class Sink(Protocol):
    def emit(self, record: CallRecord) -> None: ...


class AccessLog:
    """One JSON line per request on a stream (stderr by default) or a file.

    The lines made during one turn of the event loop are written together at its end: one write
    for all the requests that finished in that turn. A write is a system call, and in a loaded
    server each one cost ~20 µs of CPU (the call and the caches it leaves cold), 6% of a call
    (`bench/inprocess.py`). A line waits for at most the rest of the turn it was made in, and
    `flush()` (called on shutdown) writes what is left. Off the loop (another thread, no loop) a
    line is written at once, after any still waiting.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the running loop last seen, and its thread
        self._loop_thread = 0

    def emit(self, record: CallRecord) -> None:
        # pydantic-core's encoder: 0.9 µs a line where json.dumps took 5.6 (same compact JSON, UTF-8 kept)
        line = to_json(record.as_log(), fallback=str).decode() + "\n"
        with self._lock:  # the cached loop and its thread are read and set together
            loop = self._loop
            if loop is None or self._loop_thread != threading.get_ident() or not loop.is_running():
                # CPython 3.11 asks the kernel for the process ID on every get_running_loop(): once
                # per loop, not per line (a thread running its loop can only be running it now).
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
                self._loop, self._loop_thread = loop, threading.get_ident()
            self._pending.append(line)
            if loop is None:
                self._write_pending()
            elif len(self._pending) == 1:  # the first line of this turn: write them all at its end
                loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._lock:
            try:
                self._write_pending()
            except (OSError, ValueError):  # a full disk, a closed stream: the server keeps serving
                log.exception("the access log could not be written")

    def _write_pending(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._stream.write(text)
            self._stream.flush()


class Recent:
    """The last N records, for the traffic page: kept as they are, put in log form when it asks."""

    def __init__(self, size: int = 500) -> None:
        self._records: deque[CallRecord] = deque(maxlen=size)
        self.capacity = size

    def emit(self, record: CallRecord) -> None:
        # Emitted once, when its request has ended. (A tool call whose client left before it ended
        # may still fill in its upstream fields: the page then shows them, the access log line not.)
        self._records.append(record)

    def logs(self) -> list[dict[str, Any]]:
        """The records in access-log form (`CallRecord.as_log`), oldest first."""
        return [record.as_log() for record in list(self._records)]


class Metrics:
    """Prometheus metrics with bounded labels: tool names come from the catalog, never from clients."""

    def __init__(self, tool_names: Iterable[str], *, cache_stats: Callable[[], tuple[int, int]] | None = None,
                 credential_stats: Callable[[], CredentialStats | None] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # A Set is kept as it is: the catalog's live view of its names (an MCP source's list changes).
        self._tools: AbstractSet[str] = tool_names if isinstance(tool_names, AbstractSet) else frozenset(tool_names)
        r = self.registry
        # What every request updates: plain numbers under one lock (converter.telemetry.series).
        self._lock = threading.Lock()
        self.requests = CounterSeries("openapi_mcp_requests", "MCP requests by method and outcome",
                                      ["method", "outcome"])
        self.tool_calls = CounterSeries("openapi_mcp_tool_calls", "tools/call requests by tool and outcome",
                                        ["tool", "outcome"])
        self.duration = HistogramSeries("openapi_mcp_request_duration_seconds", "Time to answer an MCP request",
                                        ["method"], _LATENCY_BUCKETS)
        self.upstream = HistogramSeries("openapi_mcp_upstream_duration_seconds", "Time of the upstream HTTP call",
                                        ["tool"], _LATENCY_BUCKETS)
        self.in_flight = 0  # requests being handled (TelemetryLayer: request_started, request_ended)
        r.register(_Locked(self._lock, [self.requests, self.tool_calls, self.duration, self.upstream]))
        r.register(GaugeReading("openapi_mcp_in_flight_requests", "Requests being handled", lambda: self.in_flight))
        self.auth_failures = Counter("openapi_mcp_auth_failures", "Requests refused by the auth layer",
                                     ["reason"], registry=r)
        self.rate_limited = Counter("openapi_mcp_rate_limited", "Requests refused by a rate limit (limits:)",
                                    ["tool"], registry=r)
        self.pdp_latency = Histogram("openapi_mcp_pdp_request_duration_seconds",
                                     "Time of an exchange with the decision service (pdp:)", ["kind"],
                                     buckets=_LATENCY_BUCKETS, registry=r)
        # Sessions and connections (converter.server.sessions, converter.server.connections).
        self.sessions_open = Gauge("openapi_mcp_sessions", "Open stateful MCP sessions", registry=r)
        self.sessions_refused = Counter("openapi_mcp_sessions_refused", "New sessions refused, by limit",
                                        ["reason"], registry=r)
        self.sessions_evicted = Counter("openapi_mcp_sessions_evicted",
                                        "Idle sessions ended to make room for a new one of the same caller",
                                        registry=r)
        self.sessions_rebuilt = Counter("openapi_mcp_sessions_rebuilt",
                                        "Sessions opened elsewhere (another replica, an earlier process) and "
                                        "rebuilt here from their sealed ID", registry=r)
        self.connections_open = Gauge("openapi_mcp_connections", "Open HTTP connections", registry=r)
        self.connections_closed = Counter("openapi_mcp_connections_closed",
                                          "HTTP connections refused or closed by a limit, by reason", ["reason"],
                                          registry=r)
        # Live reloads (converter.catalog.reload): both results are shown from the start, at 0.
        self.reloads = Counter("openapi_mcp_reload", "Live reloads of the config and specs, by result",
                               ["result"], registry=r)
        for result in ("ok", "error"):
            self.reloads.labels(result)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        if cache_stats is not None:
            r.register(_CacheCollector(cache_stats))
        if credential_stats is not None:
            r.register(_CredentialCollector(credential_stats))

    def emit(self, record: CallRecord) -> None:
        method = record.mcp_method if record.mcp_method in _MCP_METHODS else (
            UNKNOWN if record.mcp_method else (record.http_method or UNKNOWN).lower())
        # /metrics is public: a call the access rules hid counts exactly like a call of an unknown
        # tool (the caller was answered the same), so the metrics cannot tell a hidden name exists.
        # The access log and the audit log keep the real outcome (`denied`).
        outcome = record.caller_outcome
        tool = NO_TOOL
        if record.mcp_method == "tools/call":
            known = record.name is not None and record.name in self._tools and not record.acl_denied
            tool = record.name if known and record.name is not None else UNKNOWN
        with self._lock:
            self.requests.inc((method, outcome))
            if record.duration_ms is not None:
                self.duration.observe((method,), record.duration_ms / 1000)
            if tool != NO_TOOL:
                self.tool_calls.inc((tool, outcome))
                if record.upstream_ms is not None:
                    self.upstream.observe((tool,), record.upstream_ms / 1000)
        if record.auth_failure:
            self._child(self.auth_failures, record.auth_failure).inc()
        if record.limited is not None:
            self._child(self.rate_limited, tool).inc()

    def request_started(self) -> None:
        self.in_flight += 1  # on the event loop's thread (TelemetryLayer), like request_ended

    def request_ended(self) -> None:
        self.in_flight -= 1

    def watch_counts(self, name: str, documentation: str, label: str, counts: Callable[[], Mapping[str, int]]) -> None:
        """A counter family `<name>_total{<label>}` read from `counts()` when scraped (label value -> count)."""
        self.registry.register(_CountsCollector(name, documentation, label, counts))

    def watch_pdp(self, decisions: Callable[[], Mapping[str, int]]) -> Callable[[str, float], None]:
        """Count the decision service's answers (read when scraped) as
        `openapi_mcp_pdp_decisions_total{decision}`; returns what to call per exchange (latency)."""
        self.watch_counts("openapi_mcp_pdp_decisions", "Decision service answers", "decision", decisions)

        def observe(kind: str, seconds: float) -> None:
            self._child(self.pdp_latency, kind).observe(seconds)

        return observe

    def _child(self, metric: Any, *labels: str) -> Any:
        # prometheus_client's labels() validates and locks on every call; the label sets are
        # bounded (see above), so each child is looked up once and kept.
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


class _Locked:
    """Series read under the lock their updates hold, so a scrape sees whole requests."""

    def __init__(self, lock: threading.Lock, series: Sequence[CounterSeries | HistogramSeries]) -> None:
        self._lock, self._series = lock, series

    def collect(self) -> Iterator[Any]:
        with self._lock:
            families = [family for series in self._series for family in series.collect()]
        yield from families


class _CountsCollector:
    """A counter family read from someone else's counts when scraped (label value -> count)."""

    def __init__(self, name: str, documentation: str, label: str, counts: Callable[[], Mapping[str, int]]) -> None:
        self._name, self._doc, self._label, self._counts = name, documentation, label, counts

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily(self._name, self._doc, labels=[self._label])
        for value, count in sorted(self._counts().items()):
            family.add_metric([value], count)
        yield family


class _CacheCollector:
    """Introspection cache hits and misses, read from the verifier when scraped."""

    def __init__(self, stats: Callable[[], tuple[int, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[CounterMetricFamily]:
        hits, misses = self._stats()
        family = CounterMetricFamily("openapi_mcp_introspection_cache", "Token introspection cache lookups",
                                     labels=["result"])
        family.add_metric(["hit"], hits)
        family.add_metric(["miss"], misses)
        yield family

    def describe(self) -> Sequence[Any]:
        return []


class _CredentialCollector:
    """The upstream API credentials' token requests, exchange cache and 401 retries, read when scraped.

    Labels come from a fixed set (kind, result), never from a token, a client or a caller.
    """

    def __init__(self, stats: Callable[[], CredentialStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[CounterMetricFamily]:
        stats = self._stats()
        if stats is None:  # no upstream credentials are configured (now: a reload may add some)
            return
        requests = CounterMetricFamily("openapi_mcp_upstream_token_requests",
                                       "Token requests for the upstream API's credentials, by kind and result",
                                       labels=["kind", "result"])
        for (kind, result), count in sorted(stats.token_requests.items()):
            requests.add_metric([kind, result], count)
        yield requests
        cache = CounterMetricFamily("openapi_mcp_upstream_token_exchange_cache",
                                    "Token exchange cache lookups (one exchange per caller token while cached)",
                                    labels=["result"])
        cache.add_metric(["hit"], stats.exchange_cache_hits)
        cache.add_metric(["miss"], stats.exchange_cache_misses)
        yield cache
        retries = CounterMetricFamily("openapi_mcp_upstream_auth_retries",
                                      "Upstream calls sent again with a new token after the upstream answered 401")
        retries.add_metric([], stats.upstream_401_retries)
        yield retries

    def describe(self) -> Sequence[Any]:
        return []


class Fanout:
    """All configured sinks; one failing sink must not break the request or the others."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    def emit(self, record: CallRecord) -> None:
        if record.duration_ms is None:
            record.finish()
        for sink in self.sinks:
            try:
                sink.emit(record)
            except Exception:
                log.exception("telemetry sink %r failed", type(sink).__name__)
