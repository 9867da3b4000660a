"""Operational endpoints: `/healthz` (alive), `/readyz` (upstreams reachable, MCP upstreams connected), metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from converter.catalog import Catalog
from converter.telemetry.sinks import Metrics

READY_CACHE_SECONDS = 5.0
PROBE_TIMEOUT = 2.0

Endpoint = Callable[[Request], Awaitable[Response]]


def healthz(catalog: Catalog) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return JSONResponse({"status": "ok", "tools": _count(catalog)})

    return endpoint


def readyz(catalog: Catalog) -> Endpoint:
    """503 until every upstream answers HTTP at all (any status counts: it is reachable)."""
    cached: dict[str, Any] = {"at": float("-inf"), "body": None}

    async def endpoint(request: Request) -> Response:
        if time.monotonic() - cached["at"] > READY_CACHE_SECONDS:
            cached["body"] = await _probe(catalog)
            cached["at"] = time.monotonic()
        body = cached["body"]
        return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

    return endpoint


async def _probe(catalog: Catalog) -> dict[str, Any]:
    upstreams: dict[str, str] = {}
    for source in catalog.sources:
        urls = {source.base_url} if source.base_url else {p.request.base_url for p in source.plans.values()}
        for url in sorted(u for u in urls if u):
            with anyio.move_on_after(PROBE_TIMEOUT):
                upstreams[url] = "unreachable" if not await source.upstream.reachable(url) else "reachable"
            upstreams.setdefault(url, "timeout")
    for mcp_source in getattr(catalog, "mcp_sources", ()):  # its supervisor pings it: no probe of ours
        upstreams[mcp_source.url] = "connected" if mcp_source.is_connected else "disconnected"
    ready = all(state in ("reachable", "connected") for state in upstreams.values())
    return {"status": "ready" if ready else "not ready", "tools": _count(catalog), "upstreams": upstreams}


def _count(catalog: Catalog) -> int:
    names = getattr(catalog, "tool_names", None)  # every source's tools (a DynamicCatalog: its meta-tools)
    return len(names) if names is not None else len(catalog.plans)


def metrics_endpoint(metrics: Metrics) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return endpoint
