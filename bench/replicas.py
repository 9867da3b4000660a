"""Throughput of one process against three replicas behind nginx, and what the Redis verdicts cost.

    .venv/bin/python bench/replicas.py [--rounds 3] [--seconds 3] [--conns 32]

On this machine, in one run (figures printed, nothing asserted):

- **scale-out**: `tools/call getUser` with wrk (bench/mcp_call.lua, one sealed session per
  connection) against (1) one `openapi-mcp serve` process, (1b) one with `--workers 2` (two
  processes on one listening socket), (2) the same process behind an nginx
  round-robin balancer, (3) three replicas behind that balancer (no affinity: sealed session IDs,
  `server.session_keys`). Every target runs the whole time; the wrk rounds alternate between them
  so the machine's drift hits them alike; the median calls/s of each, the ratios to (1), and the
  server CPU per call (all replicas' process trees) and the balancer's.
- **Redis verdicts**: one process with `auth:` (introspection, answered by the upstream nginx),
  with and without `redis:` (shared verdicts), interleaved the same way: whole-call CPU per call;
  and, in process, the client CPU and wall time of one verdict lookup in Redis (a hit: `GET`) and
  of a first sight (`GET`, `SET NX` lock, `SET` verdict, `DEL` lock), against the server CPU per call.
  A verdict found in Redis is kept locally until it expires, so with one token the round trips
  happen once per token per replica, not per call; the per-lookup figure is what a new token costs.

The upstream is bench/bench.py's nginx answering the fixed user JSON (and /introspect), so the
figures are the gateway's own cost. The machine is shared with other jobs: read ratios, not
absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import sessions
from pdp_limits import start_redis

import bench

SESSION_KEY = "bench-replicas-session-key-" + "x" * 20
BALANCER = """
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    upstream replicas {{
{servers}
        keepalive 64;
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


def serve(tmp: Path, name: str, config: dict[str, Any], port: int | None = None) -> tuple[bench.Proc, int]:
    port = port or bench.free_port()
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    proc = bench.Proc(name, [str(bench.OURS), "serve", "--config", str(path), "--port", str(port)],
                      tmp / f"{name}.log", env={"SESSION_KEY": SESSION_KEY})
    bench.wait_port(port, proc.p, 60)
    return proc, port


def balancer(tmp: Path, name: str, ports: list[int]) -> tuple[bench.Proc, int]:
    port = bench.free_port()
    d = tmp / name
    d.mkdir()
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in ports)
    (d / "nginx.conf").write_text(BALANCER.format(d=d, port=port, servers=servers))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = bench.Proc(name, [nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
                      d / "stdout.log")
    bench.wait_port(port, proc.p, 10)
    return proc, port


def wrk_env(url: str, conns: int, tmp: Path, name: str, token: str | None = None) -> dict[str, str]:
    if token:
        os.environ["MCP_TOKEN"] = token  # sessions.py sends it when opening sessions
    else:
        os.environ.pop("MCP_TOKEN", None)
    ids = [sessions.open_session(url) for _ in range(conns)]
    path = tmp / f"sessions-{name}.txt"
    path.write_text("".join(i + "\n" for i in ids))
    env = {"BENCH_THREADS": "2", "BENCH_EXPECT": bench.EXPECT, "BENCH_MODE": "mcp", "MCP_SESSIONS": str(path),
           "MCP_TOOL": "getUser", "MCP_ARGS": '{"userId":"u1"}'}
    if token:
        env["MCP_TOKEN"] = token
    return env


def rounds(targets: dict[str, dict[str, Any]], args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, float]]:
    """Interleaved wrk rounds; per target the median calls/s and CPU ms per call (servers, balancer)."""
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in targets}
    total: dict[str, int] = dict.fromkeys(targets, 0)
    commands: dict[str, int] = dict.fromkeys(targets, 0)
    for name, target in targets.items():  # warm-up: JIT-free Python, but caches, pools and sessions
        bench.run_wrk(target["url"], 2, args.conns, 1, target["env"], tmp / f"wrk-{name}.log")
    for index in range(args.rounds):
        order = list(targets) if index % 2 == 0 else list(reversed(targets))
        for name in order:
            target = targets[name]
            cpu0 = [bench.tree_cpu(pid) for pid in target["servers"] + target["balancer"]]
            sent = redis_commands(args.redis_port)
            r = bench.run_wrk(target["url"], 2, args.conns, args.seconds, target["env"], tmp / f"wrk-{name}.log")
            commands[name] += redis_commands(args.redis_port) - sent - 1  # less this INFO itself
            cpu1 = [bench.tree_cpu(pid) for pid in target["servers"] + target["balancer"]]
            if r["failures"] or r["socket_errors"] or not r["requests"]:
                raise RuntimeError(f"{name}: {r['failures']} failures, {r['socket_errors']} socket errors: "
                                   f"{r['samples']}")
            calls, spent = r["requests"], [b - a for a, b in zip(cpu0, cpu1, strict=True)]
            total[name] += calls
            n = len(target["servers"])
            samples[name].append((calls / (r["duration_us"] / 1e6), sum(spent[:n]) * 1000 / calls,
                                  sum(spent[n:]) * 1000 / calls))
    return {name: {"calls_per_s": statistics.median(s[0] for s in values),
                   "range": (min(s[0] for s in values), max(s[0] for s in values)),
                   "server_cpu_ms": statistics.median(s[1] for s in values),
                   "balancer_cpu_ms": statistics.median(s[2] for s in values),
                   "redis_per_call": commands[name] / total[name]}
            for name, values in samples.items()}


def redis_commands(port: int) -> int:
    """Commands Redis has executed so far (INFO commandstats), counting this INFO."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"INFO commandstats\r\n")
        data = b""
        while True:  # a bulk reply: $<length>\r\n<length bytes>\r\n
            piece = conn.recv(65536)
            data += piece
            head, _, rest = data.partition(b"\r\n")
            if not piece or (head.startswith(b"$") and len(rest) >= int(head[1:])):
                break
    return sum(int(m) for m in re.findall(rb"cmdstat_[a-z|]+:calls=(\d+)", data))


async def verdict_round_trips(url: str, n: int) -> dict[str, tuple[float, float]]:
    """(wall us, client CPU us) of a shared-verdict hit and of a first sight, best of 5 passes."""
    from converter.auth.shared_cache import SharedVerdict, SharedVerdicts

    shared = SharedVerdicts.from_url(url, key_prefix="bench-replicas:", timeout=1.0)
    verdict = SharedVerdict(answer={"active": True, "sub": "bench"}, refusal=None, expires_at=time.time() + 3600)
    results: dict[str, tuple[float, float]] = {}
    try:
        key = "0" * 64
        await shared.put(key, verdict)
        assert await shared.get(key) is not None, "the verdict put in Redis was not found"

        async def hit(i: int) -> None:
            await shared.get(key)

        async def first_sight(i: int) -> None:  # what a replica does for a token nobody has asked about
            fresh = f"{i:064d}"
            await shared.get(fresh)
            await shared.claim(fresh, 2.0)
            await shared.put(fresh, verdict)  # also gives the lock up

        for name, step in (("hit (GET)", hit), ("first sight (GET, SET NX, SET, DEL)", first_sight)):
            best = (float("inf"), 0.0)
            for p in range(5):
                wall, cpu = time.perf_counter(), time.process_time()
                for i in range(n):
                    await step(p * n + i + 1)
                wall_us = (time.perf_counter() - wall) / n * 1e6
                if wall_us < best[0]:
                    best = (wall_us, (time.process_time() - cpu) / n * 1e6)
            results[name] = best
        assert shared.stats.errors == 0, shared.stats
    finally:
        await shared.aclose()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--lookups", type=int, default=2000)
    args = ap.parse_args()
    procs: list[bench.Proc] = []
    redis = start_redis()
    if redis is None:
        print("redis-server is missing (apt-get install redis-server)")
        return 1
    redis_proc, redis_url, redis_dir = redis
    args.redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    try:
        with tempfile.TemporaryDirectory(prefix="bench-replicas-") as name:
            tmp = Path(name)
            upstream_proc, upstream_port = bench.start_nginx(tmp, "http://127.0.0.1/mcp")
            procs.append(upstream_proc)
            upstream = f"http://127.0.0.1:{upstream_port}"
            base = {"spec": str(bench.SPEC), "upstream": {"url": upstream}, "telemetry": {"access_log": "off"},
                    "server": {"session_keys": ["${SESSION_KEY}"], "max_sessions_per_principal": None,
                               "max_connections_per_client": None}}
            alone, alone_port = serve(tmp, "one", base)
            fronted, fronted_port = serve(tmp, "one-behind-nginx", base)
            three = [serve(tmp, f"replica-{i}", base) for i in range(3)]
            workers, workers_port = serve(tmp, "workers-2", {**base, "server": {**base["server"], "workers": 2}})
            procs += [alone, fronted, workers] + [p for p, _ in three]
            lb1, lb1_port = balancer(tmp, "balancer-1", [fronted_port])
            lb3, lb3_port = balancer(tmp, "balancer-3", [port for _, port in three])
            procs += [lb1, lb3]
            targets: dict[str, dict[str, Any]] = {}
            for label, port, servers, balancers in (
                    ("1 process", alone_port, [alone.pid], []),
                    ("--workers 2 (one socket)", workers_port, [workers.pid], []),
                    ("1 process behind nginx", lb1_port, [fronted.pid], [lb1.pid]),
                    ("3 replicas behind nginx", lb3_port, [p.pid for p, _ in three], [lb3.pid])):
                url = f"http://127.0.0.1:{port}/mcp"
                targets[label] = {"url": url, "servers": servers, "balancer": balancers,
                                  "env": wrk_env(url, args.conns, tmp, label.replace(" ", "-"))}
            scale = rounds(targets, args, tmp)

            auth = {"resource": "http://127.0.0.1/mcp", "authorization_servers": ["http://127.0.0.1/realms/bench"],
                    "introspection_endpoint": f"{upstream}/introspect", "client_id": "bench",
                    "client_secret": "bench", "required_scopes": ["mcp:tools"],
                    "insecure_relaxed_audience_validation": True}
            local, local_port = serve(tmp, "auth-local", {**base, "auth": auth})
            shared, shared_port = serve(tmp, "auth-redis", {**base, "auth": auth, "redis": {
                "url": redis_url, "key_prefix": "bench-replicas:", "timeout": 0.5}})
            procs += [local, shared]
            verdicts: dict[str, dict[str, Any]] = {}
            for label, port, proc in (("auth, local verdict cache", local_port, local),
                                      ("auth, verdicts shared in Redis", shared_port, shared)):
                url = f"http://127.0.0.1:{port}/mcp"
                verdicts[label] = {"url": url, "servers": [proc.pid], "balancer": [],
                                   "env": wrk_env(url, args.conns, tmp, label[:10].replace(" ", "-"), bench.BENCH_TOKEN)}
            auth_cost = rounds(verdicts, args, tmp)
            lookups = asyncio.run(verdict_round_trips(redis_url, args.lookups))
    finally:
        for proc in reversed(procs):
            proc.stop()
        redis_proc.terminate()
        redis_proc.wait(5)
        redis_dir.cleanup()

    print(f"wrk -t2 -c{args.conns}, {args.rounds} interleaved rounds of {args.seconds:g} s, load {bench.loadavg()}")
    first = scale["1 process"]["calls_per_s"]
    print(f"{'':<34}{'calls/s':>9}{'(range)':>16}{'ratio':>7}{'server CPU ms/call':>20}{'nginx ms/call':>15}"
          f"{'Redis cmds/call':>17}")
    for label, r in {**scale, **auth_cost}.items():
        low, high = r["range"]
        ratio = r["calls_per_s"] / (first if label in scale else auth_cost["auth, local verdict cache"]["calls_per_s"])
        print(f"{label:<34}{r['calls_per_s']:9.0f}{f'({low:.0f}-{high:.0f})':>16}{ratio:7.2f}"
              f"{r['server_cpu_ms']:20.3f}{r['balancer_cpu_ms']:15.3f}{r['redis_per_call']:17.4f}")
    per_call_us = auth_cost["auth, verdicts shared in Redis"]["server_cpu_ms"] * 1000
    print(f"\none verdict lookup in Redis, in process (best of 5 x {args.lookups}):")
    for label, (wall, cpu) in lookups.items():
        print(f"  {label:<40} wall {wall:7.1f} us   client CPU {cpu:6.1f} us   = {cpu / per_call_us * 100:.1f}% "
              f"of a call's server CPU ({per_call_us:.0f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
