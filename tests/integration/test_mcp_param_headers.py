"""`Mcp-Param-*` headers of 2026-07-28 calls through the gateway, against an upstream MCP tool's
`x-mcp-header` annotation (converter/server/header_schemas.py): the tiny upstream of
headers_mcp.py, whose `routed` tool annotates its `region` argument."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import httpx
import pytest
from mcp_types import HEADER_MISMATCH

from tests.integration.test_mcp_upstream import Gateway, Upstream, headers_upstream, serve  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


MODERN_META: Final = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}}


async def test_a_2026_calls_mcp_param_header_is_checked_against_the_upstream_tools_annotation(
        serve: Callable[..., Gateway], headers_upstream: Upstream) -> None:  # noqa: F811
    """An upstream tool's `x-mcp-header` annotation holds for 2026-07-28 calls through the gateway:
    with every tool visible (the gateway's own schema lookup) and with access rules (the SDK's,
    scoped to the caller)."""
    open_to_all = serve("passthrough-mcp-param", {"mcp_upstream": headers_upstream.url})
    ruled = serve("passthrough-mcp-param-acl", {"mcp_upstream": headers_upstream.url, "acl": {"rules": [
        {"features": ["tools"], "name": {"type": "literal", "pattern": "routed"}}]}})
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "routed", "arguments": {"region": "eu"}, "_meta": MODERN_META}}
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "routed"}
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        for gateway in (open_to_all, ruled):
            wrong = await http.post(gateway.url, headers={**base, "mcp-param-region": "us"}, json=body)
            assert wrong.status_code == 400 and wrong.json()["error"]["code"] == HEADER_MISMATCH, wrong.text
            missing = await http.post(gateway.url, headers=base, json=body)
            assert missing.status_code == 400, missing.text
            right = await http.post(gateway.url, headers={**base, "mcp-param-region": "eu"}, json=body)
            assert right.status_code == 200, right.text
            assert "routed eu" in right.text
