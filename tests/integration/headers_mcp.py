"""A tiny MCP server for the passthrough tests: its tool `seen_headers` answers with the HTTP
headers of every request it has received, so a test can check what the gateway sends upstream;
`log_twice` sends two log messages (`notifications/message`, info and debug) on the call's own
stream before it answers; `routed` has an argument annotated `x-mcp-header: Region` (2026-07-28
clients mirror it into an `Mcp-Param-Region` header) and answers with its value.

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
ROUTED = {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[types.Tool(name="seen_headers", input_schema={"type": "object"}),
                                        types.Tool(name="log_twice", input_schema={"type": "object"}),
                                        types.Tool(name="routed", input_schema=ROUTED)])


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    if params.name == "log_twice":
        for level, text in (("info", "starting"), ("debug", "details")):
            await ctx.session.send_notification(types.LoggingMessageNotification(
                params=types.LoggingMessageNotificationParams(level=level, data=text, logger="headers")),
                related_request_id=ctx.request_id)
        return types.CallToolResult(content=[types.TextContent(type="text", text="logged")])
    if params.name == "routed":
        region = (params.arguments or {}).get("region")
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"routed {region}")])
    return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(SEEN))])


async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


def main() -> None:
    server: Server[Any] = Server("headers", on_list_tools=list_tools, on_call_tool=call_tool)
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)  # declares logging
    inner = server.streamable_http_app(host="127.0.0.1")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            SEEN.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        await inner(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
