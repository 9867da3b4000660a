"""What the in-process tests send to the MCP endpoint, and an authorization server's introspection
answers for a table of tokens (tests without a real AS; the real one: tests/integration)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

ACCEPT = "application/json, text/event-stream"
VERSION = "2025-06-18"


def mcp_request(method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
                token: str | None = None, id: int | None = 1,
                version: str | None = VERSION) -> tuple[dict[str, str], dict[str, Any]]:
    """(headers, JSON-RPC body) of one POST to the MCP endpoint; `id=None`: a notification,
    `version=None`: no `MCP-Protocol-Version` (2026-07-28 also gets its `Mcp-Method`)."""
    headers = {"content-type": "application/json", "accept": ACCEPT}
    if version:
        headers["mcp-protocol-version"] = version
    if version == "2026-07-28":
        headers["mcp-method"] = method
    if session:
        headers["mcp-session-id"] = session
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params or {}}
    if id is not None:
        body["id"] = id
    return headers, body


def introspection_of(tokens: Mapping[str, Mapping[str, Any]], *, issuer: str,
                     resource: str) -> Callable[[httpx.Request], httpx.Response]:
    """An introspection endpoint (for `httpx.MockTransport`): each token in `tokens` is active,
    issued by `issuer` for `resource` with scope `mcp:tools` and the claims given; others are not."""

    def answer(request: httpx.Request) -> httpx.Response:
        token = dict(httpx.QueryParams(request.content.decode()))["token"]
        who = tokens.get(token)
        if who is None:
            return httpx.Response(200, json={"active": False})
        return httpx.Response(200, json={"active": True, "iss": issuer, "aud": resource, "scope": "mcp:tools",
                                         "exp": 4102444800, **who})

    return answer
