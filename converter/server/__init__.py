"""The MCP server over HTTP and stdio: `create_app(settings)` (`app`), the `tools/list` cache,
paging, health and metrics endpoints, and the live traffic dashboard."""

from converter.server.app import build_server, create_app, run_stdio

__all__ = ["build_server", "create_app", "run_stdio"]
