"""One worker of the request-fidelity judge: an upstream, our server, and FastMCP on demand.

    .venv/bin/python bench/fidelity_worker.py [--fastmcp]

Started by bench/fidelity.py. It serves the judge (bench/fidelity_judge.py) under uvicorn on
127.0.0.1 in a thread, then reads one JSON job per line on stdin and answers one line:

    {"spec": PATH, "name": NAME, "seed": S, "modes": [...], "max_tools": N}
    -> {"spec": NAME, "ours": SIDE, "fastmcp": SIDE | absent, "seconds": ...}

For each job it loads the document into the judge, builds our server from it exactly as
`openapi-mcp serve SPEC --upstream http://127.0.0.1:PORT --no-cache` would (`build_catalog` +
`build_server`: our production HTTP client, aiohttp, reaches the judge over TCP) and talks to it
with the MCP SDK's in-memory `Client` (the whole MCP layer, JSON-RPC and the SDK's validation of
requests and results, without the HTTP framing, which plays no part in what goes upstream). With
`--fastmcp` a bench/fidelity_fastmcp.py child (FastMCP's venv) does the same for FastMCP over the
same judge. Each side calls, for each sampled operation and each mode, one tool with arguments
from bench/fidelity_args.py that python-jsonschema has checked against the tool's inputSchema.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import uvicorn
from corpus_worker import METHODS
from fidelity_args import Checker, Hints, Unsatisfiable, generate
from fidelity_judge import Expectation, Judge, Received, Wire
from fidelity_limits import Verdict, kind_of, limit_of

FASTMCP_PYTHON = BENCH / ".venv-fastmcp" / "bin" / "python"
CALL_TIMEOUT = 60.0
MAX_FAILURES_KEPT = 40  # per side and document: the rest are counted only


def document_operations(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(METHOD, path key) of every operation, in document order."""
    found = []
    for key, item in (doc.get("paths") or {}).items():
        if isinstance(item, dict) and isinstance(key, str) and key.startswith("/"):
            found.extend((m.upper(), key) for m in METHODS if isinstance(item.get(m), dict))
    return found


def sample_operations(doc: Mapping[str, Any], name: str, seed: int, limit: int | None,
                      named: Sequence[str] = ()) -> set[tuple[str, str]]:
    """A seeded sample of at most `limit` operations (all when None, none when 0), plus the `named` ones
    ("METHOD /path/key")."""
    ops = document_operations(doc)
    chosen = {(m.upper(), key) for m, _, key in (n.partition(" ") for n in named)}
    if limit is None or len(ops) <= limit:
        return chosen | set(ops) if limit != 0 else chosen
    return chosen | set(random.Random(f"{seed}|{name}|operations").sample(ops, limit))


def _forbid(wire: Wire | None, schema: Any, root: Mapping[str, Any]) -> str:
    """Characters an argument's strings leave out where the judge cannot tell them apart (see
    JUDGE_LIMITS in bench/fidelity.py): openapi-core splits delimited values after decoding them."""
    if wire is None or wire.location not in ("path", "query", "header", "cookie"):
        return ""
    for _ in range(16):
        if isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/"):
            node: Any = root
            for token in schema["$ref"][2:].split("/"):
                node = node.get(token.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
            schema = node
    kinds = schema.get("type") if isinstance(schema, dict) else None
    kinds = set(kinds) if isinstance(kinds, list) else {kinds}
    if not ({"array", "object", None} & kinds) and not (isinstance(schema, dict) and ("anyOf" in schema or "oneOf" in schema)):
        return ""
    extra = {"spaceDelimited": " ", "pipeDelimited": "|", "deepObject": "[]"}.get(wire.style, "")
    if wire.location == "query" and wire.style in ("", "form") and wire.explode:
        extra += "&"  # openapi-core rebuilds an exploded object as `k=v&k=v` from decoded values and splits it
    return ",|=" + extra + (";" if wire.location == "cookie" else "")


def hints_for(schema: Mapping[str, Any], wires: Mapping[str, Wire]) -> Hints:
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    return Hints(
        where={arg: wire.location for arg, wire in wires.items()},
        forbid={arg: _forbid(wires.get(arg), props.get(arg), schema) for arg in props},
    )


def verdict(received: list[Received], is_error: bool, text: str) -> tuple[str, list[str]]:
    """(outcome, details): accepted | rejected | unmatched | refused | silent | several."""
    if not received:
        return ("refused" if is_error else "silent"), [text[:300]]
    if len(received) > 1:
        return "several", [f"{len(received)} requests: " + "; ".join(r.target for r in received[:3])]
    request = received[0]
    if not request.matched:
        return "unmatched", request.errors
    if not request.accepted:
        return "rejected", request.errors
    return "accepted", []


class Side:
    """The calls of one converter on one document: counts, and the failures in full."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.kinds: dict[str, int] = {}  # converter failures by kind
        self.limits: dict[str, int] = {}  # judge limits by name (excluded calls)
        self.failures: list[dict[str, Any]] = []
        self.unsatisfiable: dict[str, int] = {}
        self.tools = 0
        self.error: str | None = None

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {"tools": self.tools, "counts": self.counts, "kinds": self.kinds, "limits": self.limits,
                "failures": self.failures,
                "unsatisfiable": self.unsatisfiable, "error": self.error}


async def judge_calls(side: Side, judge: Judge, tools: list[dict[str, Any]], call: Any, *, name: str, seed: int,
                      modes: list[str], chosen: set[tuple[str, str]]) -> None:
    """Generate, check and make every call of one side; `call(tool, arguments)` -> (is_error, text)."""
    for tool in tools:
        op = (tool["method"].upper(), tool["path"])
        if op not in chosen:
            continue
        side.count("tools_judged")
        schema = tool["inputSchema"]
        wires = tool["wires"]
        hints = hints_for(schema, wires)
        checker = Checker(schema)
        for index, mode in enumerate(modes):
            rng = random.Random(f"{seed}|{name}|{op[0]} {op[1]}|{mode}|{index}")
            try:
                arguments = generate(schema, rng, mode, hints)
            except (Unsatisfiable, RecursionError) as exc:
                side.count("not_generated")
                reason = str(exc)[:120]
                side.unsatisfiable[reason] = side.unsatisfiable.get(reason, 0) + 1
                continue
            problem = checker.error(arguments)
            if problem is not None:
                side.count("not_generated")
                reason = "generated arguments fail the inputSchema: " + problem[:100]
                side.unsatisfiable[reason] = side.unsatisfiable.get(reason, 0) + 1
                continue
            judge.expect(Expectation(op[0], op[1], arguments, wires))
            started = time.perf_counter()
            try:
                is_error, text = await asyncio.wait_for(call(tool["name"], arguments), CALL_TIMEOUT)
            except Exception as exc:
                is_error, text = True, f"client: {type(exc).__name__}: {exc}"
            side.count("call_ms", round((time.perf_counter() - started) * 1000))
            received = list(judge.received)
            judge.expect(None)
            outcome, details = verdict(received, is_error, text)
            side.count("calls")
            side.count(outcome)
            if received:
                side.count("reached")
                side.count("matched", int(all(r.matched for r in received)))
            if outcome == "accepted":
                continue
            limit = limit_of(Verdict(outcome, details, received[0].content_type if received else None,
                                     judge.facts(*op) | (received[0].notes if len(received) == 1 else frozenset())))
            kind = kind_of(outcome, details)
            if limit is not None:
                side.limits[limit] = side.limits.get(limit, 0) + 1
            else:
                side.kinds[kind] = side.kinds.get(kind, 0) + 1
            if len(side.failures) < MAX_FAILURES_KEPT:
                side.failures.append({
                    "kind": kind, "limit": limit,
                    "tool": tool["name"], "operation": f"{op[0]} {op[1]}", "mode": mode, "outcome": outcome,
                    "details": details[:8], "requests": [r.to_json() for r in received[:2]],
                    "tool_result": text[:300] if is_error else None,
                    "arguments": json.dumps(arguments, ensure_ascii=False)[:400],
                })


# -- ours ------------------------------------------------------------------------------------------


def our_wires(plan: Any) -> dict[str, Wire]:
    wires = {}
    for slot in plan.request.slots:
        param = plan.request.params.get(slot.argument)
        style, explode = (param.style, param.explode) if param is not None else ("", False)
        if param is not None and param.content_type:
            style = "content"  # a value in a media type (JSON text): not compared as a scalar
        wires[slot.argument] = Wire(slot.location, slot.name, style, explode)
    return wires


async def _no_output_check(self: Any, name: str, result: Any) -> None:
    return None


async def run_ours(spec: Path, upstream: str, judge: Judge, job: Mapping[str, Any], chosen: set[tuple[str, str]]) -> Side:
    from mcp import Client
    from mcp.client.session import ClientSession

    # The judge answers `{}` to everything: the client's re-validation of results against each
    # tool's outputSchema (~20 ms per tool to compile) would measure nothing here.
    ClientSession.validate_tool_result = _no_output_check  # type: ignore[method-assign]

    from converter.catalog import build_catalog
    from converter.config import load_settings
    from converter.errors import ConverterError
    from converter.server.app import build_server

    side = Side()
    started = time.perf_counter()
    try:
        catalog = build_catalog(load_settings(None, spec=str(spec), upstream_url=upstream, no_cache=True))
    except ConverterError as exc:
        side.error = f"not converted: {exc}"[:300]
        return side
    side.count("convert_ms", round((time.perf_counter() - started) * 1000))
    async with catalog, Client(build_server(catalog)) as client:
        listed = (await client.list_tools()).tools
        side.tools = len(listed)
        tools = []
        for tool in listed:
            plan = catalog.plan(tool.name)
            meta = (tool.meta or {}).get("openapi-mcp/operation", {})
            tools.append({"name": tool.name, "inputSchema": tool.input_schema, "method": meta.get("method", ""),
                          "path": meta.get("path", ""), "wires": our_wires(plan) if plan else {}})

        async def call(name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
            result = await client.call_tool(name, arguments)
            return bool(result.is_error), "\n".join(getattr(c, "text", "") for c in result.content)

        await judge_calls(side, judge, tools, call, name=job["name"], seed=job["seed"], modes=job["modes"],
                          chosen=chosen)
    return side


# -- FastMCP ---------------------------------------------------------------------------------------


class FastMCPChild:
    """bench/fidelity_fastmcp.py under FastMCP's venv: one request line in, one answer line out."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([str(FASTMCP_PYTHON), str(BENCH / "fidelity_fastmcp.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the FastMCP child exited with status {self.proc.wait()}")
        return dict(json.loads(line))


async def run_fastmcp(child: FastMCPChild, spec: Path, upstream: str, judge: Judge, job: Mapping[str, Any],
                      chosen: set[tuple[str, str]]) -> Side:
    side = Side()
    loop = asyncio.get_running_loop()
    loaded = await loop.run_in_executor(None, child.ask, {"load": str(spec), "upstream": upstream})
    if "error" in loaded:
        side.error = f"not converted: {loaded['error']}"[:300]
        return side
    side.tools = len(loaded["tools"])
    tools = [{**t, "wires": {a: Wire(**w) for a, w in t["wires"].items()}} for t in loaded["tools"]]

    async def call(name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
        answer = await loop.run_in_executor(None, child.ask, {"call": name, "arguments": arguments})
        if "error" in answer:
            return True, "FastMCP raised: " + answer["error"]
        return bool(answer["is_error"]), str(answer["text"])

    await judge_calls(side, judge, tools, call, name=job["name"], seed=job["seed"], modes=job["modes"], chosen=chosen)
    return side


# -- the loop --------------------------------------------------------------------------------------


def start_upstream(judge: Judge) -> tuple[int, Callable[[], None]]:
    """Serve the judge on 127.0.0.1 (a free port) in a daemon thread; return the port and a stop function."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets (Linux)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(judge, log_level="error", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the judge's upstream did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return int(sock.getsockname()[1]), stop


def handle(job: Mapping[str, Any], judge: Judge, upstream: str, child: FastMCPChild | None) -> dict[str, Any]:
    spec = Path(job["spec"])
    started = time.perf_counter()
    doc = json.loads(spec.read_text(encoding="utf-8"))
    judge.load(doc, source=str(spec), base_uri=spec.resolve().as_uri())
    chosen = sample_operations(doc, job["name"], job["seed"], job.get("max_tools"), job.get("operations", ()))
    answer: dict[str, Any] = {"spec": job["name"], "operations": len(document_operations(doc)),
                              "sampled": len(chosen)}
    answer["ours"] = asyncio.run(run_ours(spec, upstream, judge, job, chosen)).to_json()
    if child is not None:
        answer["fastmcp"] = asyncio.run(run_fastmcp(child, spec, upstream, judge, job, chosen)).to_json()
    answer["seconds"] = round(time.perf_counter() - started, 3)
    return answer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fastmcp", action="store_true")
    ap.add_argument("--memory-mb", type=int, default=0)
    args = ap.parse_args()
    if args.memory_mb:  # RLIMIT_AS, inherited by the FastMCP child: one huge document cannot take the machine
        import resource

        limit = args.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import logging

    logging.disable(logging.WARNING)  # our "skipped operation" warnings: `check` reports them
    judge = Judge()
    port, _ = start_upstream(judge)  # a daemon thread: it ends with this process
    upstream = f"http://127.0.0.1:{port}"
    child = FastMCPChild() if args.fastmcp else None
    print(json.dumps({"ready": upstream}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        try:
            answer = handle(job, judge, upstream, child)
        except Exception as exc:
            import traceback

            tb = traceback.extract_tb(exc.__traceback__)
            where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
            answer = {"spec": job.get("name"), "error": f"{type(exc).__name__}: {exc}"[:400] + where}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
