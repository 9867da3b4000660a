"""Server CPU per call with no HTTP client or parser in the way: for A/B of small changes.

    python bench/inprocess.py [--conc 32] [--calls 4000] [--rounds 7] [--config FILE] [--set KEY=JSON ...] [--auth]
                              [--modern]

The app `create_app` builds runs in this process and is called as ASGI directly (no socket, no
uvicorn parsing, no wrk); its upstream calls go to a real nginx (bench/bench.py's, `getUser`).
`--conc` sessions each make `--calls / --conc` sequential `tools/call`s at once, per round; the CPU
time this process spends (its upstream client included) is divided by the calls. The figure is the
median of `--rounds` rounds, printed with the range. Differences of a few percent show up between
two runs of this that wrk's figures drown in the machine's drift, so alternate the two variants
(A B A B A B) and compare the medians. `--set server.direct_calls=false` changes one setting.
`--modern` makes every call a 2026-07-28 single exchange (no session). `--auth` puts the server
behind token introspection (nginx's `/introspect`, as bench/ab.py's `ours-auth`) and sends a
bearer token with every request: after the first, its verdict is cached.
Every answer is checked (HTTP 200, the user's name, no tool error).

What it cannot show: the cost of the socket side (uvicorn's parsing and writes) and of the event
loop's turns (each costs a poll of the sockets in a real server). A change that saves loop turns
(the direct answers of `server.direct_calls` save three or four per call) shows its full effect
only in the shared harness (`python3 ../shared/bench/run.py`): 26-29% there, 3% here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from bench import EXPECT, SPEC, TOOL, TOOL_ARGS, start_nginx

HEADERS = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
           (b"accept", b"application/json, text/event-stream")]
VERSION = "2025-11-25"
MODERN = "2026-07-28"


async def call(app: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """One ASGI POST /mcp; its status, headers and body."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/mcp", "raw_path": b"/mcp", "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {}}
    sent = False
    answer: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], dict(message["headers"])
        else:
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer


async def open_session(app: Any, base: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """initialize + notifications/initialized: the headers of the session's calls."""
    init = await call(app, json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "inprocess", "version": "1"}}}).encode(),
        base)
    assert init["status"] == 200, init
    headers = [*base, (b"mcp-session-id", init["headers"][b"mcp-session-id"]), (b"mcp-protocol-version", VERSION.encode())]
    await call(app, b'{"jsonrpc":"2.0","method":"notifications/initialized"}', headers)
    return headers


async def run(app: Any, args: argparse.Namespace) -> list[float]:
    from converter.serve import serving

    base = [*HEADERS, (b"authorization", b"Bearer bench-token")] if args.auth else HEADERS
    async with app.router.lifespan_context(app):
        serving()  # as the server does once it listens (frozen startup objects, the GC threshold)
        if args.modern:  # 2026-07-28 single exchanges: no session, the `_meta` envelope, the routing headers
            params = json.dumps({"name": TOOL, "arguments": TOOL_ARGS, "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}})
            sessions = [[*base, (b"mcp-protocol-version", MODERN.encode()), (b"mcp-method", b"tools/call"),
                         (b"mcp-name", TOOL.encode())]] * args.conc
        else:
            params = json.dumps({"name": TOOL, "arguments": TOOL_ARGS})
            sessions = [await open_session(app, base) for _ in range(args.conc)]

        async def client(headers: list[tuple[bytes, bytes]], first: int, count: int) -> None:
            for n in range(first, first + count):
                answer = await call(app, b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":%s}'
                                    % (n, params.encode()), headers)
                body = answer["body"]
                assert answer["status"] == 200 and EXPECT.encode() in body and b'"isError":true' not in body, answer

        per_call = []
        each = args.calls // args.conc
        for round_ in range(args.rounds):
            started = time.process_time()
            await asyncio.gather(*(client(h, 1 + (round_ * args.conc + i) * each, each)
                                   for i, h in enumerate(sessions)))
            per_call.append((time.process_time() - started) / (each * args.conc) * 1e6)
        return per_call


def main() -> int:
    ap = argparse.ArgumentParser(description="openapi-mcp server CPU per call, in process")
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument("--calls", type=int, default=4000, help="calls per round (all sessions together)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--config", help="a config file (its spec and upstream are replaced)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="one setting, e.g. server.direct_calls=false or telemetry.access_log='\"off\"'")
    ap.add_argument("--auth", action="store_true", help="token introspection (cached) and a bearer token per call")
    ap.add_argument("--modern", action="store_true", help="2026-07-28 single exchanges instead of sessions")
    args = ap.parse_args()
    if not 1 <= args.conc <= args.calls:
        ap.error("need 1 <= --conc <= --calls")
    with tempfile.TemporaryDirectory(prefix="openapi-mcp-inprocess-") as tmp:
        nginx, port = start_nginx(Path(tmp), "http://127.0.0.1:8000/mcp")
        try:
            from converter.config import load_settings
            from converter.server.app import create_app

            config: dict[str, Any] = {}
            if args.config:
                import yaml

                config = yaml.safe_load(Path(args.config).read_text()) or {}
            config.update(spec=str(SPEC), upstream={**config.get("upstream", {}), "url": f"http://127.0.0.1:{port}"})
            config.setdefault("telemetry", {}).setdefault("access_log", str(Path(tmp) / "access.log"))
            if args.auth:  # what bench.py's ours-auth target runs with
                config["auth"] = {"resource": "http://127.0.0.1:8000/mcp",
                                  "authorization_servers": ["http://127.0.0.1/realms/bench"],
                                  "introspection_endpoint": f"http://127.0.0.1:{port}/introspect",
                                  "client_id": "bench", "client_secret": "bench", "required_scopes": ["mcp:tools"]}
            for item in args.set:
                key, _, value = item.partition("=")
                *parents, leaf = key.split(".")
                node = config
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = json.loads(value)
            path = Path(tmp) / "config.json"
            path.write_text(json.dumps(config))
            app = create_app(load_settings(str(path)))
            try:
                import uvloop  # the server's loop
            except ImportError:
                uvloop = None
            per_call = uvloop.run(run(app, args)) if uvloop is not None else asyncio.run(run(app, args))
        finally:
            nginx.stop()
    print(f"server CPU per call, in process, {args.conc} sessions, {args.calls} calls x {args.rounds} rounds: "
          f"median {statistics.median(per_call):.1f} us (range {min(per_call):.1f}-{max(per_call):.1f}; "
          f"{', '.join(f'{x:.0f}' for x in per_call)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
