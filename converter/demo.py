"""`openapi-mcp demo`: the marketplace mock and an MCP server for it, in one process."""

from __future__ import annotations

import json
import sys
from importlib import resources

import anyio

from converter.catalog import build_catalog
from converter.config import load_settings
from converter.serve import bind_socket, fast_loop, url_host, uvicorn_config


def client_config(url: str) -> str:
    """The snippets users paste into Cursor, VS Code and Claude Desktop."""
    cursor = {"mcpServers": {"marketplace": {"url": url}}}
    vscode = {"servers": {"marketplace": {"type": "http", "url": url}}}
    claude = {"mcpServers": {"marketplace": {"command": "npx", "args": ["-y", "mcp-remote", url]}}}
    return "\n".join([
        f"MCP server: {url}",
        "",
        "Cursor (~/.cursor/mcp.json):",
        json.dumps(cursor, indent=2),
        "",
        "VS Code (.vscode/mcp.json):",
        json.dumps(vscode, indent=2),
        "",
        "Claude Desktop (claude_desktop_config.json):",
        json.dumps(claude, indent=2),
        "",
        "MCP Inspector:",
        f"  npx @modelcontextprotocol/inspector --cli {url} --transport http --method tools/list",
        "",
        f"Live traffic: {url.rsplit('/mcp', 1)[0]}/dashboard   metrics: {url.rsplit('/mcp', 1)[0]}/metrics",
        "",
        "Press Ctrl+C to stop.",
    ])


def run_demo(*, host: str = "127.0.0.1", port: int = 8000, mock_port: int = 3000) -> None:
    """Serve the mock on `mock_port` and MCP on `port` until interrupted."""
    import uvicorn

    import mock_api
    from converter.server.app import create_app

    spec_path = str(resources.files("mock_api").joinpath("marketplace.yaml"))
    mock_sock = bind_socket(host, mock_port)
    mcp_sock = bind_socket(host, port)
    upstream = f"http://{url_host(host)}:{mock_sock.getsockname()[1]}"
    settings = load_settings(None, spec=spec_path, upstream_url=upstream, host=host, port=port)
    catalog = build_catalog(settings)
    mcp_url = f"http://{url_host(host)}:{mcp_sock.getsockname()[1]}{settings.server.path}"
    loop = fast_loop()
    mock = uvicorn.Server(uvicorn.Config(mock_api.create_app(), log_level="warning", **loop))
    server = uvicorn.Server(uvicorn_config(create_app(settings, catalog=catalog), settings))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(mock.serve, [mock_sock])
            tg.start_soon(server.serve, [mcp_sock])
            print(f"Marketplace mock API: {upstream} ({len(catalog.plans)} tools from its OpenAPI document)\n",
                  file=sys.stdout)
            print(client_config(mcp_url), file=sys.stdout, flush=True)

    anyio.run(main)
