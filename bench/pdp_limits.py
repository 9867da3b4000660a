"""What the PDP check and the rate limits add to one call, timed in-process.

    .venv/bin/python bench/pdp_limits.py [--n 20000] [--results bench/results/latest.json]

Each figure is the best of 5 passes, per operation, on one event loop:
- a cached PDP decision (`Pdp.decide`, the answer already in the cache: build the AuthZEN body,
  canonical JSON, digest, LRU lookup);
- an uncached decision and a 50-item batch through an in-process transport (`httpx.MockTransport`
  answering at once): our client's own CPU per PDP round trip, without the network or the PDP;
- a rate-limit check with two rules (`RateLimiter.check`), counters in memory;
- the same on a real `redis-server` (started here on a free loopback port, no persistence, when
  the binary is there): wall time per check (one EVALSHA round trip) and this process's CPU.
- whole calls, in one run: `Catalog.call_tool("getUser")` on the marketplace spec against the
  in-process mock (httpx ASGI transport), as configured with nothing, with `pdp:` (decisions
  cached), with `limits:` in memory and with `limits:` in Redis; printed as CPU per call and as
  ratios to the call with neither, the rounds of the four variants interleaved so that the
  machine's drift hits them alike.
With --results it divides by the server CPU per call of the latest throughput run (bench/run.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from converter.auth.principal import Principal
from converter.policy.limits import LimitRule, RateLimiter
from converter.policy.pdp import Pdp, PdpQuestion, PdpSettings

CALLS: dict[str, float] = {}  # whole-call CPU us per variant, filled by run()
RULES = [LimitRule(tools=["get*"], per="subject", requests=10**9, window=60),
         LimitRule(per="global", requests=10**9, window=60)]


async def best_us(fn: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    """(best wall us per op, process CPU us per op of that pass)."""
    best = (float("inf"), 0.0)
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            await fn()
        wall_us = (time.perf_counter() - wall) / n * 1e6
        if wall_us < best[0]:
            best = (wall_us, (time.process_time() - cpu) / n * 1e6)
    return best


def answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if "evaluations" in body:
        return httpx.Response(200, json={"evaluations": [{"decision": True}] * len(body["evaluations"])})
    return httpx.Response(200, json={"decision": True})


def pdp(**overrides: object) -> Pdp:
    settings = PdpSettings.model_validate({"url": "http://pdp.invalid/demo/access/v1/evaluation",
                                           "client_id": "mcp-server", "client_secret": "s", **overrides})
    return Pdp(settings, transport=httpx.MockTransport(answer))


def start_redis() -> tuple[subprocess.Popen[bytes], str, tempfile.TemporaryDirectory[str]] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.TemporaryDirectory()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir.name, "--loglevel", "warning"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(8).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0", workdir
        except OSError:
            time.sleep(0.02)
    proc.kill()
    return None


USER: dict[str, bytes] = {}  # the mock's answer to GET /users/u1, served by fixed_answer


async def fixed_answer(scope: Any, receive: Any, send: Any) -> None:
    """The upstream: the marketplace mock's answer, replayed (the mock validates every request
    with openapi-core, which would cost more than the call being measured)."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": USER["body"]})


def call_variants(redis_url: str | None) -> dict[str, Any]:
    """Catalogs for the same tool call: with nothing, a cached PDP, memory limits, Redis limits."""
    import mock_api
    from converter.catalog import build_catalog
    from converter.config import load_settings

    # auth: in every variant (the PDP needs it), so the variants differ by the PDP or the limits only.
    auth = {"resource": "http://127.0.0.1:8000/mcp", "authorization_servers": ["http://as.invalid"],
            "introspection_endpoint": "http://as.invalid/introspect", "client_id": "gw", "client_secret": "s"}
    base = {"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"}, "auth": auth}
    limits = [{"tools": ["get*"], "per": "subject", "requests": 10**9, "window": 60},
              {"per": "global", "requests": 10**9, "window": 60}]
    configs: dict[str, dict[str, Any]] = {
        "no PDP, no limits": base,
        "PDP (cached decision)": {**base, "pdp": {"url": "http://pdp.invalid/demo/access/v1/evaluation",
                                                 "client_id": "mcp-server", "client_secret": "s"}},
        "limits, memory": {**base, "limits": limits},
    }
    if redis_url is not None:
        configs["limits, Redis"] = {**base, "limits": limits, "redis": {"url": redis_url, "key_prefix": "bench:"}}
    catalogs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in configs.items():
            path = Path(tmp) / "config.json"
            path.write_text(json.dumps(config))
            settings = load_settings(str(path))
            catalogs[name] = build_catalog(settings, transport=httpx.ASGITransport(app=fixed_answer),
                                           pdp_transport=httpx.MockTransport(answer))
    return catalogs


async def whole_calls(catalogs: dict[str, Any], n: int, rounds: int = 7) -> dict[str, float]:
    """Median CPU us per call of each catalog, over `rounds` interleaved rounds of `n` calls."""
    import mock_api

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mock_api.create_app()),
                                 base_url="http://mock.test") as client:
        USER["body"] = (await client.get("/marketplace/users/u1")).content
    alice = Principal(subject="alice", client_id="cursor", claims={"sub": "alice"}, is_authenticated=True)
    samples: dict[str, list[float]] = {name: [] for name in catalogs}
    async with contextlib.AsyncExitStack() as stack:
        for catalog in catalogs.values():
            await stack.enter_async_context(catalog)
            result = await catalog.call_tool("getUser", {"userId": "u1"}, alice)
            assert not result.is_error, result
        for _ in range(rounds):
            for name, catalog in catalogs.items():
                cpu = time.process_time()
                for _ in range(n):
                    await catalog.call_tool("getUser", {"userId": "u1"}, alice)
                samples[name].append((time.process_time() - cpu) / n * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


async def run(n: int) -> dict[str, tuple[float, float]]:
    alice = Principal(subject="alice", client_id="cursor", claims={"sub": "alice"}, is_authenticated=True)
    question = PdpQuestion(alice, "tools", "tools/call", "getUser", {"userId": "u1"})
    results: dict[str, tuple[float, float]] = {}

    cached = pdp()
    await cached.decide(question)
    results["PDP decision, cached"] = await best_us(lambda: cached.decide(question), n)
    await cached.aclose()

    uncached = pdp(cache_ttl=0)
    results["PDP decision, uncached (client side)"] = await best_us(lambda: uncached.decide(question), n // 10)
    listing = [PdpQuestion(alice, "tools", "tools/list", f"tool_{i}") for i in range(50)]
    wall, cpu = await best_us(lambda: uncached.decide_many(listing), n // 100)
    results["PDP batch of 50, per item (client side)"] = (wall / 50, cpu / 50)
    await uncached.aclose()

    memory = RateLimiter(RULES)
    results["rate-limit check, memory (2 rules)"] = await best_us(lambda: memory.check("alice", "getUser"), n)

    started = start_redis()
    if started is None:
        print("redis-server not found: the Redis figure is skipped (apt-get install redis-server)")
        CALLS.update(await whole_calls(call_variants(None), max(200, n // 40)))
    else:
        from converter.policy.limits.redis_backend import RedisBackend

        proc, url, workdir = started
        try:
            shared = RateLimiter(RULES, backend=RedisBackend.from_url(url, key_prefix="bench:"))
            results["rate-limit check, Redis (2 rules)"] = await best_us(lambda: shared.check("alice", "getUser"),
                                                                         n // 10)
            assert shared.backend.stats.fallback_checks == 0  # type: ignore[attr-defined]
            await shared.aclose()
            CALLS.update(await whole_calls(call_variants(url), max(200, n // 40)))
        finally:
            proc.terminate()
            proc.wait(5)
            workdir.cleanup()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = ap.parse_args()
    results = asyncio.run(run(args.n))
    print(f"{'':<42}{'wall us':>9}{'CPU us':>9}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<42}{wall:9.2f}{cpu:9.2f}")
    baseline = CALLS.get("no PDP, no limits")
    if baseline:
        print(f"\nwhole tools/call in process (median of 7 interleaved rounds){'CPU us':>9}{'ratio':>8}")
        for name, cpu in CALLS.items():
            print(f"{name:<61}{cpu:9.1f}{cpu / baseline:8.2f}")
    try:
        runs = json.loads(args.results.read_text()).get("runs", [])
    except (OSError, ValueError):
        runs = []
    per_call = {"cached PDP decision": results["PDP decision, cached"][1],
                "memory rate-limit check": results["rate-limit check, memory (2 rules)"][1]}
    for run_ in runs:
        if run_.get("target") == "ours" and run_.get("server_cpu_ms_per_call"):
            cpu_us = run_["server_cpu_ms_per_call"] * 1000
            shares = ", ".join(f"{name} {us / cpu_us * 100:.1f}%" for name, us in per_call.items())
            print(f"c={run_['concurrency']}: of {cpu_us:.0f} us server CPU per call: {shares}")
    if not runs:
        print(f"(no {args.results}: run bench/run.sh for the server CPU per call these compare to)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
