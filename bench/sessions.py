"""Open MCP sessions over streamable HTTP and write their ids, one per line.

    python bench/sessions.py http://127.0.0.1:8000/mcp -n 32 -o /tmp/sessions.txt

Each session is a full handshake: POST `initialize` (protocolVersion 2025-06-18, or `protocol`), read the
`Mcp-Session-Id` response header, POST `notifications/initialized` (expects 202). wrk's Lua state is
per thread, not per connection, so the handshake is done here and `bench/mcp_call.lua` only sends
`tools/call` requests carrying these ids.

Standard library only, so any Python 3.11 runs it; `bench/bench.py` and `bench/startup.py` import
the helpers below.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.parse
from typing import Any

PROTOCOL = "2025-06-18"


class MCPError(RuntimeError):
    pass


def post(
    url: str,
    message: dict[str, Any],
    session: str | None = None,
    timeout: float = 10.0,
    protocol: str = PROTOCOL,
) -> tuple[int, dict[str, str], bytes]:
    """One POST to the MCP endpoint; returns (status, lower-cased headers, raw body)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    if session:
        headers["Mcp-Session-Id"] = session
        headers["MCP-Protocol-Version"] = protocol
    if os.environ.get("MCP_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MCP_TOKEN']}"
    try:
        conn.request("POST", u.path or "/", body=json.dumps(message).encode(), headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def parse_message(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The JSON-RPC message in a response body: plain JSON or the last `data:` event of an SSE stream."""
    ctype = headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        data: list[str] = []
        last: dict[str, Any] | None = None
        for line in body.decode("utf-8").splitlines():
            if line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif line == "" and data:
                text = "\n".join(data)
                data = []
                if not text.strip():  # a priming event (2025-11-25): an event ID to resume from, no message
                    continue
                msg = json.loads(text)
                if "id" in msg:  # skip notifications (logging, progress) sent before the answer
                    last = msg
        if data and "".join(data).strip():
            msg = json.loads("\n".join(data))
            if "id" in msg:
                last = msg
        if last is None:
            raise MCPError(f"no JSON-RPC answer in the SSE stream: {body[:200]!r}")
        return last
    return json.loads(body)


def open_session(url: str, timeout: float = 10.0, client_name: str = "openapi-mcp-bench",
                 protocol: str = PROTOCOL) -> str:
    """initialize + notifications/initialized; returns the Mcp-Session-Id."""
    status, headers, body = post(
        url,
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": protocol,
                "capabilities": {},
                "clientInfo": {"name": client_name, "version": "1"},
            },
        },
        timeout=timeout,
        protocol=protocol,
    )
    if status != 200:
        raise MCPError(f"initialize: HTTP {status}: {body[:300]!r}")
    sid = headers.get("mcp-session-id")
    if not sid:
        raise MCPError(f"initialize: no Mcp-Session-Id header (headers: {headers})")
    msg = parse_message(headers, body)
    if "result" not in msg:
        raise MCPError(f"initialize: {msg}")
    status, _, body = post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid, timeout, protocol)
    if status != 202:
        raise MCPError(f"notifications/initialized: HTTP {status}: {body[:300]!r}")
    return sid


def request(
    url: str, sid: str, method: str, params: dict[str, Any] | None = None, timeout: float = 10.0,
    protocol: str = PROTOCOL,
) -> tuple[dict[str, Any], int]:
    """One JSON-RPC request in a session; returns (message, raw body size in bytes)."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        msg["params"] = params
    status, headers, body = post(url, msg, sid, timeout, protocol)
    if status != 200:
        raise MCPError(f"{method}: HTTP {status}: {body[:300]!r}")
    return parse_message(headers, body), len(body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", help="MCP endpoint, e.g. http://127.0.0.1:8000/mcp")
    ap.add_argument("-n", type=int, default=1, help="number of sessions")
    ap.add_argument("-o", "--out", default="-", help="output file (default stdout)")
    args = ap.parse_args()
    try:
        ids = [open_session(args.url) for _ in range(args.n)]
    except (OSError, MCPError, ValueError) as exc:
        print(f"sessions.py: {args.url}: {exc}", file=sys.stderr)
        return 1
    text = "".join(i + "\n" for i in ids)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
