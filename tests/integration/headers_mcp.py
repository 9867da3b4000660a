"""A tiny MCP server for the passthrough tests: its tool `seen_headers` answers with the HTTP
headers of every request it has received, so a test can check what the gateway sends upstream.

Run: `python tests/integration/headers_mcp.py PORT` (listens on 127.0.0.1).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import mcp.types as types
import uvicorn
from mcp.server import Server
from starlette.types import Receive, Scope, Send

SEEN: list[dict[str, str]] = []


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[types.Tool(name="seen_headers", input_schema={"type": "object"})])


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(SEEN))])


def main() -> None:
    server: Server[Any] = Server("headers", on_list_tools=list_tools, on_call_tool=call_tool)
    inner = server.streamable_http_app(host="127.0.0.1")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            SEEN.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        await inner(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
