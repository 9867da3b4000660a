"""Live reload of a big spec, in process: how long a reload takes, what calls see meanwhile, memory.

    python bench/reload.py [SPEC] [--cache] [--reloads 3]

Serves SPEC (default: GitHub's REST description from tests/node) against an in-memory upstream,
keeps one tool call in flight at a time while reloading (the spec is edited each time: one
operation renamed, so the catalog really changes), and prints the reload times, the latency of
the calls made during the reloads and after, the failed calls, and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GITHUB = ROOT / "tests" / "node" / "node_modules" / "@octokit" / "openapi" / "generated" / "api.github.com.json"

import anyio.lowlevel

from converter.catalog import build_served_catalog
from converter.catalog.live import LiveCatalog
from converter.catalog.reload import Reloader
from converter.config import load_settings


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value))


def prepare(source: Path, tmp: Path, *, cache: bool) -> tuple[dict, Path, Path]:  # type: ignore[type-arg]
    document = json.loads(source.read_text())
    spec, config = tmp / "spec.json", tmp / "config.json"
    write_json(spec, document)
    write_json(config, {"spec": str(spec), "upstream": {"url": "http://api.test"}, "cache": cache})
    return document, spec, config


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default=str(GITHUB))
    ap.add_argument("--cache", action="store_true")
    ap.add_argument("--reloads", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    os.environ["OPENAPI_MCP_CACHE_DIR"] = str(tmp / "cache")
    document, spec, config = prepare(Path(args.spec), tmp, cache=args.cache)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"ok": True}))
    settings = load_settings(str(config))
    started = time.perf_counter()
    live = LiveCatalog(build_served_catalog(settings, transport=transport))
    print(f"start build: {time.perf_counter() - started:.2f} s, {len(live.tool_names)} tools, peak RSS {rss_mb():.0f} MB")
    reloader = Reloader(live, settings, lambda: load_settings(str(config)), transport=transport)
    tool = next(t.name for t in live.list_result.tools if not t.input_schema.get("required"))
    during: list[float] = []
    after: list[float] = []
    failed = 0
    reloading = False
    done = anyio.Event()

    async def caller() -> None:
        nonlocal failed
        while not done.is_set():
            t0 = time.perf_counter()
            result = await live.call_tool(tool, {})
            (during if reloading else after).append(time.perf_counter() - t0)
            text = getattr(result.content[0], "text", "") if result.content else ""
            # The in-memory upstream's `{"ok": true}` is not GitHub's documented body: that error
            # means the call was sent and answered, which is all that is measured here.
            if result.is_error and not text.startswith("Upstream answered"):
                failed += 1
                if failed == 1:
                    print("first failure:", text)
            await anyio.lowlevel.checkpoint()

    times = []
    async with live, anyio.create_task_group() as tasks:
        tasks.start_soon(caller)
        await anyio.sleep(0.5)
        for i in range(args.reloads):
            first = next(iter(document["paths"].values()))
            for operation in first.values():
                if isinstance(operation, dict) and "operationId" in operation:
                    operation["summary"] = f"edited {i}"
            write_json(spec, document)
            reloading = True
            t0 = time.perf_counter()
            ok = await reloader.reload(f"bench {i}")
            times.append(time.perf_counter() - t0)
            reloading = False
            assert ok, reloader.state.error
            await anyio.sleep(0.5)
        done.set()

    def ms(values: list[float], q: float) -> float:
        return 1000 * (statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0])

    print(f"reloads ({'cache on' if args.cache else 'cache off'}): " + ", ".join(f"{t:.2f} s" for t in times))
    print(f"calls during reloads: {len(during)}, p50 {ms(during, 50):.2f} ms, p99 {ms(during, 99):.2f} ms, "
          f"max {1000 * max(during):.1f} ms")
    print(f"calls between reloads: {len(after)}, p50 {ms(after, 50):.2f} ms, p99 {ms(after, 99):.2f} ms")
    print(f"calls not answered by the upstream: {failed}; peak RSS {rss_mb():.0f} MB")


if __name__ == "__main__":
    anyio.run(main)
