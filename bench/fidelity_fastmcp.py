"""FastMCP's OpenAPI mode for the request-fidelity judge, driven over stdin/stdout.

    bench/.venv-fastmcp/bin/python bench/fidelity_fastmcp.py

Runs in FastMCP's own venv (standard library at the top level, FastMCP imported once). One JSON
request per line in, one answer per line out:

* `{"load": SPEC, "upstream": URL}`: `FastMCP.from_openapi(openapi_spec=dict, client=
  httpx2.AsyncClient(base_url=URL))` as FastMCP's docs show, then its tools through an in-memory
  `fastmcp.Client`; answers `{"tools": [{"name", "inputSchema", "method", "path", "wires"}]}`
  (`wires`: argument -> {location, name, style, explode}, from the route FastMCP built) or
  `{"error": ...}`;
* `{"call": NAME, "arguments": {...}}`: calls the tool; answers `{"is_error", "text"}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any


def _wires(route: Any) -> dict[str, dict[str, Any]]:
    params = {(p.name, str(p.location)): p for p in route.parameters}
    wires = {}
    for argument, mapping in (route.parameter_map or {}).items():
        location, name = str(mapping.get("location")), str(mapping.get("openapi_name"))
        param = params.get((name, location))
        style = (param.style if param is not None and param.style else "") or ""
        explode = bool(param.explode) if param is not None and param.explode is not None else style in ("", "form")
        wires[argument] = {"location": location, "name": name, "style": style, "explode": explode}
    return wires


async def main() -> None:
    import httpx2
    from fastmcp import Client, FastMCP

    logging.disable(logging.CRITICAL)  # FastMCP logs each failed call with a traceback: the judge counts them
    loop = asyncio.get_running_loop()
    client: Any = None
    http: Any = None

    async def close() -> None:
        nonlocal client, http
        if client is not None:
            await client.__aexit__(None, None, None)
        if http is not None:
            await http.aclose()
        client = http = None

    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        request = json.loads(line)
        try:
            if "load" in request:
                await close()
                text = await loop.run_in_executor(None, Path(request["load"]).read_text, "utf-8")
                doc = json.loads(text)
                http = httpx2.AsyncClient(base_url=request["upstream"], timeout=30.0)
                server = FastMCP.from_openapi(openapi_spec=doc, client=http, name="fidelity")
                routes = {tool.name: tool._route for tool in await server.list_tools() if hasattr(tool, "_route")}
                client = Client(server)
                await client.__aenter__()
                tools = []
                for tool in await client.list_tools():
                    route = routes.get(tool.name)
                    if route is None:
                        continue
                    tools.append({"name": tool.name, "inputSchema": tool.input_schema, "method": str(route.method),
                                  "path": route.path, "wires": _wires(route)})
                answer: dict[str, Any] = {"tools": tools}
            elif "call" in request:
                result = await asyncio.wait_for(client.call_tool_mcp(request["call"], request["arguments"]), 60)
                text = "\n".join(getattr(c, "text", "") for c in result.content)
                answer = {"is_error": bool(result.is_error), "text": text[:500]}
            else:
                answer = {"error": f"unknown request {sorted(request)}"}
        except Exception as exc:
            tb = traceback.extract_tb(exc.__traceback__)
            where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
            answer = {"error": f"{type(exc).__name__}: {exc}"[:400] + where}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    await close()


if __name__ == "__main__":
    asyncio.run(main())
