"""Convert (or check) corpus specs one at a time, each in a forked child with limits.

    <python> bench/corpus_worker.py --impl ours|fastmcp|check [--timeout 60] [--memory-mb 8192]

Started by bench/corpus.py under either venv (the project's `.venv` for `ours` and `check`,
`bench/.venv-fastmcp` for `fastmcp`), so this file uses the standard library only at the top
level. It imports its converter once, then reads one JSON request per line on stdin and forks a
child for each, so every spec starts from the same warm process and none can affect the next:

* convert, `{"spec": PATH, "out": PATH}`: the child converts the spec, measures the time and its
  peak RSS (VmHWM), then writes `{"tools": [{"name", "inputSchema", "outputSchema"}...],
  "skipped": [...]}` to `out`. The answer: `{"status": "ok" | "refused" | "crash" | "timeout" |
  "memory", "error", "seconds", "peak_rss", "tools"}`. `refused` is our converter saying no with a
  `SpecError` (a clear message, not a crash); `crash` is any other exception.
* check, `{"spec": PATH, "tools": PATH | null}`: the child counts the operations of the document
  and checks the tools with bench/corpus_check.py.

The child has `--timeout` seconds to convert (then it is killed) and 300 s more for writing its
output; `--memory-mb` is its RLIMIT_AS (a `MemoryError` or a kill counts as `memory`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def escape_token(token: str) -> str:
    """RFC 6901 escaping of one JSON Pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


def document_operations(doc: Any) -> list[str]:
    """JSON Pointers of every operation in an OpenAPI 3.x document (local path-item `$ref`s followed)."""
    paths = doc.get("paths") if isinstance(doc, dict) else None
    found: list[str] = []
    for path, item in paths.items() if isinstance(paths, dict) else ():
        seen = 0
        while isinstance(item, dict) and isinstance(item.get("$ref"), str) and item["$ref"].startswith("#/") and seen < 16:
            node: Any = doc
            for token in item["$ref"][2:].split("/"):
                token = token.replace("~1", "/").replace("~0", "~")
                node = node.get(token) if isinstance(node, dict) else None
            item, seen = node, seen + 1
        if isinstance(item, dict):
            found.extend(f"#/paths/{escape_token(str(path))}/{m}" for m in METHODS if m in item)
    return found


def vm_hwm(field: str = "VmHWM") -> int:
    """Peak (VmHWM) or current (VmRSS) resident set size of this process in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def run_forked(
    work: Callable[[Callable[[], None]], dict[str, Any]], *, timeout: float, memory_bytes: int | None,
    slack: float = 300.0,
) -> dict[str, Any]:
    """Run `work(timed_part_done)` in a forked child; return its dict, or a status saying why not.

    The child has `timeout` seconds until it calls `timed_part_done()` (the conversion), then
    `slack` more for the harness's own work (writing the tools out, checking them).
    """
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        code = 0
        try:
            if memory_bytes:
                resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
            try:
                result = work(lambda: os.write(write_fd, b"."))
            except MemoryError:
                result = {"status": "memory", "error": "MemoryError"}
            except BaseException as exc:
                tb = traceback.extract_tb(exc.__traceback__)
                where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
                result = {"status": "crash", "error": f"{type(exc).__name__}: {exc}"[:500] + where}
            data = json.dumps(result).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view):]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = started + timeout
    timed_out = marked = False
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([pipe], [], [], left)
            if not ready:
                continue
            chunk = pipe.read(1 << 20)
            if not chunk:
                break
            if not marked and chunk.startswith(b"."):
                marked, chunk = True, chunk[1:]
                deadline = time.monotonic() + slack
            chunks.append(chunk)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        limit = f"{slack:g} s after converting (harness)" if marked else f"{timeout:g} s"
        return {"status": "timeout", "error": f"no answer within {limit}"}
    if chunks and b"".join(chunks):
        return json.loads(b"".join(chunks))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        kind = "memory" if sig == signal.SIGKILL else "crash"
        return {"status": kind, "error": f"killed by signal {signal.Signals(sig).name}"}
    return {"status": "crash", "error": f"exited with status {os.WEXITSTATUS(status)} without an answer"}


# -- the two converters ----------------------------------------------------------------------


def _convert_ours(spec_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from converter.errors import SpecError
    from converter.spec import load_spec
    from converter.tools import build_plans

    try:
        spec = load_spec(spec_path)
        plans, name_problems = build_plans(spec)
    except SpecError as exc:
        return {"status": "refused", "error": str(exc)[:500]}, {"tools": []}
    problems = [*spec.problems, *name_problems]
    return {"status": "ok", "warnings": len([p for p in problems if not p.fatal])}, {
        "tools": [
            {"name": p.name, "inputSchema": p.input_schema, "outputSchema": p.output_schema,
             "pointer": p.operation.pointer}
            for p in plans
        ],
        "skipped": [{"pointer": p.pointer, "reason": p.message} for p in problems if p.fatal],
    }


def _convert_fastmcp(spec_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import asyncio

    import httpx2
    from fastmcp import FastMCP

    with open(spec_path, encoding="utf-8") as f:
        doc = json.load(f)
    client = httpx2.AsyncClient(base_url="http://127.0.0.1:9")  # never called: only listing
    server = FastMCP.from_openapi(openapi_spec=doc, client=client, name="corpus")
    tools = []
    for tool in asyncio.run(server.list_tools()):
        wire = tool.to_mcp_tool().model_dump(by_alias=True, exclude_none=True, mode="json")
        tools.append({"name": wire["name"], "inputSchema": wire.get("inputSchema"),
                      "outputSchema": wire.get("outputSchema")})
    return {"status": "ok"}, {"tools": tools}


CONVERTERS = {"ours": _convert_ours, "fastmcp": _convert_fastmcp}


def convert_one(impl: str, spec_path: str, out_path: str, timed_part_done: Callable[[], None]) -> dict[str, Any]:
    """The child's work: convert and measure, then write the tools (and skips) to `out_path`."""
    started = time.perf_counter()
    info, output = CONVERTERS[impl](spec_path)
    info["seconds"] = time.perf_counter() - started
    info["peak_rss"] = vm_hwm()
    info["tools"] = len(output["tools"])
    timed_part_done()
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(output, f, separators=(",", ":"))
    return info


def check_one(spec_path: str, tools_path: str | None, done: Callable[[], None]) -> dict[str, Any]:
    """Load the spec and the converter's output and say how good the output is."""
    from corpus_check import check_tools

    with open(spec_path, encoding="utf-8") as f:
        operations = document_operations(json.load(f))
    result: dict[str, Any] = {"operations": len(operations)}
    if tools_path is None:
        return result
    with open(tools_path, encoding="utf-8") as f:
        output = json.load(f)
    tools = output["tools"]
    report = check_tools(tools)
    result.update(
        tools=report.tools, names_valid=report.names_valid, inputs_valid=report.inputs_valid,
        outputs=report.outputs, outputs_valid=report.outputs_valid, samples=report.samples, causes=report.causes,
    )
    if "skipped" in output:  # ours: every operation is a tool or a reported skip
        made = {tool["pointer"] for tool in tools}
        reasons = {s["pointer"] for s in output["skipped"] if s.get("reason")}
        unexplained = [
            op for op in operations
            if op not in made and op not in reasons and op.rsplit("/", 1)[0] not in reasons
        ]
        result["skipped"] = len(operations) - len([op for op in operations if op in made])
        result["unexplained"] = len(unexplained)
        result["unexplained_samples"] = unexplained[:3]
        result["skip_reasons"] = [s["reason"] for s in output["skipped"]][:20]
    return result


def _warm_up(impl: str) -> None:
    """Import the converter once in the worker, so each fork starts with it loaded."""
    if impl == "check":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import corpus_check  # noqa: F401
    elif impl == "ours":
        import converter.spec
        import converter.tools  # noqa: F401
    else:
        import logging

        import fastmcp  # noqa: F401
        import httpx2  # noqa: F401

        logging.disable(logging.WARNING)  # FastMCP logs every route it cannot convert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impl", choices=[*sorted(CONVERTERS), "check"], required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--memory-mb", type=int, default=8192)
    args = ap.parse_args()
    _warm_up(args.impl)
    print(json.dumps({"ready": True, "baseline_rss": vm_hwm("VmRSS")}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if args.impl == "check":
            def work(done: Callable[[], None], request: dict[str, Any] = request) -> dict[str, Any]:
                return check_one(request["spec"], request.get("tools"), done)
        else:
            def work(done: Callable[[], None], request: dict[str, Any] = request) -> dict[str, Any]:
                return convert_one(args.impl, request["spec"], request["out"], done)
        result = run_forked(work, timeout=args.timeout, memory_bytes=args.memory_mb * 1024 * 1024)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
