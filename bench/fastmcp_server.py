"""FastMCP's OpenAPI integration on the same spec and upstream, for comparison.

    bench/.venv-fastmcp/bin/python bench/fastmcp_server.py SPEC --upstream URL --port P

Runs in its own venv (`bench/.venv-fastmcp`, made by bench/run.sh with the pinned fastmcp), served
over streamable HTTP at /mcp with FastMCP's defaults (stateful sessions, SSE answers), as a user
following FastMCP's docs would run it: `FastMCP.from_openapi(openapi_spec=dict,
client=httpx2.AsyncClient(base_url=...), name=...)` then `mcp.run(transport="http", ...)`.
"""

from __future__ import annotations

import argparse
import json
import logging

import httpx2  # FastMCP 4.x's HTTP client (the httpx successor it depends on)
import yaml
from fastmcp import FastMCP


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()

    with open(args.spec, encoding="utf-8") as f:
        spec = json.load(f) if args.spec.endswith(".json") else yaml.safe_load(f)

    client = httpx2.AsyncClient(base_url=args.upstream, timeout=30.0)
    mcp = FastMCP.from_openapi(openapi_spec=spec, client=client, name="fastmcp-bench")
    logging.getLogger("fastmcp").setLevel(logging.WARNING)
    mcp.run(transport="http", host=args.host, port=args.port, show_banner=False, log_level="warning")


if __name__ == "__main__":
    main()
