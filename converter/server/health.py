"""Operational endpoints: `/healthz` (alive), `/readyz` (upstreams reachable, MCP upstreams connected), metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from converter.catalog.served import ServedCatalog
from converter.telemetry.sinks import Metrics

READY_CACHE_SECONDS = 5.0

Endpoint = Callable[[Request], Awaitable[Response]]


def healthz(catalog: ServedCatalog) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return JSONResponse({"status": "ok", "tools": len(catalog.tool_names)})

    return endpoint


def readyz(catalog: ServedCatalog, *, shared: Callable[[], dict[str, str]] | None = None,
           reload_state: Callable[[], dict[str, Any]] | None = None) -> Endpoint:
    """503 until every upstream answers HTTP at all (any status counts: it is reachable).

    `shared`: the states of shared state outside the catalog (Redis for token verdicts, sessions).
    `reload_state`: the last live reload (converter.catalog.reload), shown under `reload` as it
    is now. A failed reload does not make the server unready: the previous catalog still serves.
    """
    cached: dict[str, Any] = {"at": float("-inf"), "body": None}

    async def endpoint(request: Request) -> Response:
        if time.monotonic() - cached["at"] > READY_CACHE_SECONDS:
            cached["body"] = await _probe(catalog, shared() if shared is not None else {})
            cached["at"] = time.monotonic()
        body = {**cached["body"], "tools": len(catalog.tool_names)}  # the tools served now
        if reload_state is not None:
            body = {**body, "reload": reload_state()}
        return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

    return endpoint


async def _probe(catalog: ServedCatalog, shared: dict[str, str]) -> dict[str, Any]:
    upstreams = {**await catalog.probe(), **shared}
    # "degraded" (Redis down: local counters) still serves; an unreachable upstream or PDP does not.
    ready = all(state in ("reachable", "connected", "degraded") for state in upstreams.values())
    return {"status": "ready" if ready else "not ready", "tools": len(catalog.tool_names), "upstreams": upstreams}


def metrics_endpoint(metrics: Metrics) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return endpoint
