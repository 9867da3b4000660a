"""The live traffic page: `/dashboard` (static HTML) and `/dashboard/data` (JSON).

The data is computed on each poll from the `Recent` ring buffer, which holds the same
CallRecords the access log and the metrics see. The HTML carries no data and is served to
anyone; the JSON is guarded like the MCP endpoint when `auth:` is configured (a bearer token
checked by the same verifier, and the scopes every MCP request needs).
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from converter.auth.layer import PRINCIPAL_KEY
from converter.auth.principal import Principal
from converter.policy import Policy
from converter.telemetry.record import as_seen_by_caller
from converter.telemetry.sinks import Recent

MAX_ROWS: Final = 200
RATE_BUCKETS: Final = 12  # the last minute ...
RATE_BUCKET_SECONDS: Final = 5  # ... per 5 s
METHOD_BUCKETS: Final = 20  # the last 5 minutes ...
METHOD_BUCKET_SECONDS: Final = 15  # ... per 15 s
MAX_METHOD_SERIES: Final = 6  # more distinct methods than this are folded into "other"
TOP_NAMES: Final = 10
OUTCOMES: Final = ("ok", "tool_error", "rpc_error", "denied", "limited", "error")
# What a row of the table shows; payloads stay in the access log.
_ROW_FIELDS: Final = ("time", "mcp_method", "name", "outcome", "http_method", "http_status", "jsonrpc_error",
                      "auth_failure", "upstream_method", "upstream_url", "upstream_status", "upstream_ms",
                      "duration_ms", "request_bytes", "response_bytes", "client_name", "subject")
# The kind of name each method carries, for the "top" lists.
_NAME_KINDS: Final = {"tools/call": "tools", "resources/read": "resources", "prompts/get": "prompts"}
_DATA_PATH_MARK: Final = "__DASHBOARD_DATA_PATH__"
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def method_label(record: Mapping[str, Any]) -> str:
    """The MCP method, or the HTTP method for requests that carry none (a GET stream, a refused POST)."""
    method = record.get("mcp_method")
    if isinstance(method, str) and method:
        return method
    http_method = record.get("http_method")
    return f"({http_method})" if isinstance(http_method, str) else "(unknown)"


def percentiles(values: Iterable[float], quantiles: Sequence[float] = (0.5, 0.9, 0.99)) -> dict[str, Any]:
    """Nearest-rank percentiles (`p50`, `p90`, `p99`), plus `count` and `max`; None when empty."""
    ordered = sorted(values)
    result: dict[str, Any] = {"count": len(ordered), "max": ordered[-1] if ordered else None}
    for q in quantiles:
        key = f"p{round(q * 100):d}"
        result[key] = ordered[max(math.ceil(q * len(ordered)) - 1, 0)] if ordered else None
    return result


def summarize(records: Sequence[Mapping[str, Any]], *, now: float | None = None, capacity: int | None = None,
              max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """Everything the page draws, from access-log records (oldest first, as `Recent` keeps them).

    Args:
        records: `CallRecord.as_log()` dicts.
        now: the clock the time buckets end at (default: `time.time()`).
        capacity: the ring buffer's size, shown on the page.
        max_rows: how many of the newest records go into `recent`.
    """
    now = time.time() if now is None else now
    by_outcome = dict.fromkeys(OUTCOMES, 0)
    by_method: Counter[str] = Counter()
    top: dict[str, Counter[str]] = {kind: Counter() for kind in _NAME_KINDS.values()}
    top_errors: dict[str, Counter[str]] = {kind: Counter() for kind in _NAME_KINDS.values()}
    durations: list[float] = []
    tool_durations: list[float] = []
    upstream: list[float] = []

    rate_start = _bucket_start(now, RATE_BUCKET_SECONDS) - (RATE_BUCKETS - 1) * RATE_BUCKET_SECONDS
    rate = [0] * RATE_BUCKETS
    series_start = _bucket_start(now, METHOD_BUCKET_SECONDS) - (METHOD_BUCKETS - 1) * METHOD_BUCKET_SECONDS
    series: list[Counter[str]] = [Counter() for _ in range(METHOD_BUCKETS)]

    for record in records:
        outcome = record.get("outcome", "ok")
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
        method = method_label(record)
        by_method[method] += 1
        kind = _NAME_KINDS.get(method)
        name = record.get("name")
        if kind is not None and isinstance(name, str):
            top[kind][name] += 1
            if outcome != "ok":
                top_errors[kind][name] += 1
        duration = record.get("duration_ms")
        if isinstance(duration, (int, float)):
            durations.append(duration)
            if method == "tools/call":
                tool_durations.append(duration)
        if isinstance(record.get("upstream_ms"), (int, float)):
            upstream.append(record["upstream_ms"])
        at = record.get("time")
        if isinstance(at, (int, float)):
            index = int((at - rate_start) // RATE_BUCKET_SECONDS)
            if 0 <= index < RATE_BUCKETS:
                rate[index] += 1
            index = int((at - series_start) // METHOD_BUCKET_SECONDS)
            if 0 <= index < METHOD_BUCKETS:
                series[index][method] += 1

    shown = [m for m, _ in Counter(sum(series, Counter())).most_common()]
    if len(shown) > MAX_METHOD_SERIES:
        shown = [*shown[:MAX_METHOD_SERIES - 1], "other"]
    last_minute = sum(1 for r in records if isinstance(r.get("time"), (int, float)) and now - r["time"] <= 60)
    return {
        "generated_at": now,
        "buffer": {"records": len(records), "capacity": capacity},
        "counts": {
            "requests": len(records),
            "by_outcome": by_outcome,
            "by_method": dict(by_method.most_common()),
            "errors": len(records) - by_outcome.get("ok", 0),
        },
        "rate": {
            "bucket_seconds": RATE_BUCKET_SECONDS,
            "start": rate_start,
            "counts": rate,
            "last_minute": last_minute,
            "per_second": round(last_minute / 60, 3),
        },
        "methods_over_time": {
            "bucket_seconds": METHOD_BUCKET_SECONDS,
            "start": series_start,
            "methods": shown,
            "counts": [_fold(bucket, shown) for bucket in series],
        },
        "latency_ms": {
            "all": percentiles(durations),
            "tools_call": percentiles(tool_durations),
            "upstream": percentiles(upstream),
        },
        "top": {kind: [{"name": name, "count": count, "errors": top_errors[kind][name]}
                       for name, count in counter.most_common(TOP_NAMES)]
                for kind, counter in top.items()},
        "recent": [_row(record) for record in _newest(records, max_rows)],
    }


def dashboard_routes(path: str, recent: Recent, *, policy: Policy | Callable[[], Policy] | None = None,
                     admin_scopes: Sequence[str] = (), loopback: bool = False,
                     allowed_hosts: Sequence[str] = ()) -> list[Route]:
    """The page at `path` and its data at `path + "/data"` (`data_path`).

    With `auth:` on, the data route sits behind the auth layer like `/mcp` (converter.auth.layer
    guards `data_path`), and what it shows depends on the caller: a token with every one of
    `admin_scopes` (`telemetry.dashboard_scopes`) sees all traffic; any other token sees its
    own requests only, as it saw them (a call to a tool hidden from it shows as the unknown tool
    it answered like). With auth off, everything is shown (a loopback listener refuses other
    Host headers: DNS rebinding).
    """
    base = "/" + path.strip("/") if path.strip("/") else ""
    data_path = f"{base}/data"
    page, csp = _page(data_path)
    admin = frozenset(admin_scopes)
    # A live reload may replace the policy: the one of now decides.
    policy_of: Callable[[], Policy | None] = policy if callable(policy) else (lambda: policy)
    # server.allowed_hosts: `name`, `name:port`, `name:*`; _host_of compares names without the port.
    hosts = _LOOPBACK_HOSTS | {_name_of(host) for host in allowed_hosts}

    async def show_page(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers={
            "content-security-policy": csp, "cache-control": "no-cache", "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer"})

    async def show_data(request: Request) -> Response:
        if loopback and _host_of(request) not in hosts:
            return _json({"error": "misdirected_request", "error_description": "Invalid Host header"}, 421)
        records = recent.logs()
        viewer = request.scope.get(PRINCIPAL_KEY)
        current = policy_of()
        if isinstance(viewer, Principal) and current is not None and not (
                admin and admin <= current.effective_scopes(viewer)):
            records = [as_seen_by_caller(r) for r in records
                       if (r.get("subject"), r.get("client_id")) == (viewer.subject, viewer.client_id)]
        return _json(summarize(records, capacity=recent.capacity))

    return [Route(base or "/", show_page, methods=["GET"]), Route(data_path, show_data, methods=["GET"])]


def data_path_of(path: str) -> str:
    """Where `dashboard_routes(path, ...)` serves the data (the path the auth layer guards)."""
    base = "/" + path.strip("/") if path.strip("/") else ""
    return f"{base}/data"


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"cache-control": "no-store", **(headers or {})})


def _page(data_path: str) -> tuple[bytes, str]:
    """The page with its data URL filled in, and a CSP that allows only its own inline code."""
    text = resources.files("converter.server").joinpath("static/dashboard.html").read_text(encoding="utf-8")
    text = text.replace(_DATA_PATH_MARK, html.escape(data_path, quote=True))
    hashes = {tag: [_sha256(body) for body in re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)]
              for tag in ("script", "style")}
    # Nothing is fetched from anywhere but this server: no CDN, no fonts, no images.
    csp = "; ".join([
        "default-src 'none'",
        "script-src " + " ".join(hashes["script"]),
        "style-src " + " ".join(hashes["style"]),
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    return text.encode("utf-8"), csp


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _host_of(request: Request) -> str:
    return _name_of(request.headers.get("host", "").lower())


def _name_of(host: str) -> str:
    """A Host value without its port (`[::1]:8000` -> `[::1]`, `mcp.example.com:*` -> `mcp.example.com`)."""
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if ":" in host else host


def _bucket_start(at: float, width: int) -> float:
    return float(math.floor(at / width) * width)


def _fold(bucket: Counter[str], shown: list[str]) -> dict[str, int]:
    if shown and shown[-1] == "other":
        named = set(shown[:-1])
        folded = {m: bucket[m] for m in shown[:-1] if bucket[m]}
        other = sum(count for m, count in bucket.items() if m not in named)
        return {**folded, "other": other} if other else folded
    return {m: c for m, c in bucket.items() if c}


def _newest(records: Sequence[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    return [records[i] for i in range(len(records) - 1, max(len(records) - limit, 0) - 1, -1)]


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    row = {key: record[key] for key in _ROW_FIELDS if record.get(key) is not None}
    row["method"] = method_label(record)
    session = record.get("session")
    if isinstance(session, str):
        row["session"] = session[:8]  # enough to tell sessions apart, not enough to join one
    return row
