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
    cached: dict[str, Any] = {"at": float("-inf"), "upstreams": {}}

    async def endpoint(request: Request) -> Response:
        # Probing the upstreams costs requests, so it is cached; the shared states are flags in
        # memory, read as they are now (a Redis that came back shows at once).
        if time.monotonic() - cached["at"] > READY_CACHE_SECONDS:
            cached["upstreams"] = await catalog.probe()
            cached["at"] = time.monotonic()
        upstreams = {**cached["upstreams"], **(shared() if shared is not None else {})}
        # "degraded" (Redis down: local counters) still serves; an unreachable upstream or PDP does not.
        ready = all(state in ("reachable", "connected", "degraded") for state in upstreams.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready",
                                "tools": len(catalog.tool_names), "upstreams": upstreams}
        if reload_state is not None:
            body["reload"] = reload_state()
        return JSONResponse(body, status_code=200 if ready else 503)

    return endpoint


def metrics_endpoint(metrics: Metrics) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return endpoint
