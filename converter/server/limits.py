"""Rate limits for requests that are not tool calls: HTTP 429 with `Retry-After`.

A `tools/call` is limited where the tool is known, in the catalog, and answered with a tool error
the model can read (converter.catalog.catalog); every other request to the MCP endpoint (list,
read, initialize, the GET stream, ...) is counted here against the rules without `tools:` and
refused with 429. Counted per caller: the verified token's identity (after the auth layer), or the
client's address with auth off; never per session, so re-initializing does not reset anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from converter.asgi import peek_rpc, respond
from converter.auth.layer import PRINCIPAL_KEY
from converter.auth.principal import ANONYMOUS, Principal
from converter.catalog.catalog import caller_identity
from converter.policy.limits import RateLimiter
from converter.telemetry.record import RECORD_KEY

LIMITED_CODE = -32029  # JSON-RPC server error range: "rate limited" (the HTTP status says it too)


class RequestLimits:
    """ASGI middleware in front of the MCP endpoint (inside the auth layer, which sets the principal)."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter | Callable[[], RateLimiter | None],
                 mcp_path: str) -> None:
        """`limiter`: or what gives the limiter served now (a live reload may replace it, or add
        or remove `limits:`)."""
        self.app = app
        self._limiter_of: Callable[[], RateLimiter | None] = limiter if callable(limiter) else (lambda: limiter)
        self.mcp_path = mcp_path.rstrip("/") or "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self._limiter_of()
        if limiter is None or scope["type"] != "http" or (scope["path"].rstrip("/") or "/") != self.mcp_path:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST":
            peek, receive = await peek_rpc(scope, receive)
            if peek.only_tool_calls or peek.too_large or peek.too_deep:
                await self.app(scope, receive, send)  # tool calls: the catalog; the rest: the transport answers
                return
        found = scope.get(PRINCIPAL_KEY)
        principal = found if isinstance(found, Principal) else ANONYMOUS
        client = scope.get("client")
        verdict = await limiter.check(caller_identity(principal, client[0] if client else None), None)
        if verdict.allowed:
            await self.app(scope, receive, send)
            return
        record = scope.get(RECORD_KEY)
        if record is not None and verdict.rule is not None:
            record.limited = verdict.rule.label
            record.http_status = 429
        body = json.dumps({"jsonrpc": "2.0", "id": None,
                           "error": {"code": LIMITED_CODE, "message": verdict.message()}}).encode()
        await respond(send, 429, body, {"content-type": "application/json",
                                        "retry-after": verdict.retry_after_header})
