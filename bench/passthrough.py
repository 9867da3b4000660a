"""Passthrough overhead: `tools/call echo` on server-everything directly vs through openapi-mcp.

    .venv/bin/python bench/passthrough.py [--duration 10] [--warmup 2] [--concurrency 1,32]
    SMOKE=1 .venv/bin/python bench/passthrough.py          # 2 s runs after 1 s warm-ups

Same harness as bench/bench.py: fresh MCP sessions (bench/sessions.py), one checked call, a
warm-up wrk run (discarded), then the measured run with bench/mcp_call.lua (every response must
be HTTP 200, contain `Echo: bench` and not be an `isError` result). Targets, in one run:

  1. direct:           wrk -> server-everything (streamable HTTP, its SSE answers), in the protocol
                       version the gateway's SDK client negotiates upstream (2025-11-25), so that
                       the upstream's own work per call is the same as through the gateway;
     direct-2025-06-18: the same in the version wrk's clients speak to the gateway. At concurrency 1
                       server-everything answers a 2025-11-25 call about a millisecond later than a
                       2025-06-18 one (its answer streams then begin with a priming event; its CPU
                       per call is about the same, and with 32 calls in flight it is no slower).
                       That millisecond is in every passthrough call, so the ratios compare the
                       passthrough rows with `direct`;
  2. passthrough:      wrk -> `openapi-mcp serve` with `mcp_upstream:` -> server-everything, as
                       configured by default (SSE answers, so upstream progress can be relayed);
  3. passthrough-json: the same with `server.json_response: true` (one JSON body per answer);
  4. passthrough-modern: the default gateway, every call a 2026-07-28 single exchange (no session
                       between wrk and the gateway; the gateway's own upstream session as always).

Server CPU per call is measured for openapi-mcp's process alone (the overhead) and for
server-everything (node), from /proc, before and after the measured run. Needs wrk, node and
tests/node/node_modules (`bash scripts/test.sh` installs them). Results: bench/results/passthrough.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import sessions

import bench as harness

NODE_DIR = ROOT / "tests" / "node"
EVERYTHING = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
TOOL, ARGS, EXPECT = "echo", {"message": "bench"}, "Echo: bench"
UPSTREAM_PROTOCOL = "2025-11-25"  # what the gateway's SDK client (legacy mode) negotiates with server-everything
PROTOCOLS = {"direct": UPSTREAM_PROTOCOL, "direct-2025-06-18": "2025-06-18"}  # the rest: wrk -> gateway, 2025-06-18
LABELS = {"direct": "server-everything direct", "direct-2025-06-18": "  direct, 2025-06-18",
          "passthrough": "openapi-mcp passthrough",
          "passthrough-json": "passthrough, JSON answers", "passthrough-modern": "passthrough, 2026-07-28"}


def start_everything(tmp: Path) -> tuple[harness.Proc, int]:
    port = harness.free_port()
    proc = harness.Proc("server-everything", ["node", "--import", str(NODE_DIR / "loopback.mjs"), str(EVERYTHING),
                                              "streamableHttp"], tmp / "server-everything.log", env={"PORT": str(port)})
    harness.wait_port(port, proc.p, 20)
    return proc, port


def start_gateway(target: str, tmp: Path, upstream: str) -> tuple[harness.Proc, str]:
    port = harness.free_port()
    config: dict[str, Any] = {"mcp_upstream": upstream, "server": {"host": "127.0.0.1", "port": port}}
    if target == "passthrough-json":
        config["server"]["json_response"] = True
    path = tmp / f"{target}.yaml"
    path.write_text(json.dumps(config))
    proc = harness.Proc(target, [str(harness.OURS), "serve", "--config", str(path)], tmp / f"{target}.log")
    harness.wait_port(port, proc.p, 30)
    return proc, f"http://127.0.0.1:{port}/mcp"


def measure(target: str, url: str, pids: dict[str, int], conc: int, args: argparse.Namespace,
            tmp: Path) -> dict[str, Any]:
    threads = 1 if conc == 1 else min(args.threads, conc)
    protocol = PROTOCOLS.get(target, sessions.PROTOCOL)
    env = {"BENCH_THREADS": str(threads), "BENCH_EXPECT": EXPECT, "MCP_TOOL": TOOL,
           "MCP_ARGS": json.dumps(ARGS, separators=(",", ":")), "MCP_PROTOCOL": protocol}
    if target == "passthrough-modern":  # no sessions: wrk's first responses are the check
        env["BENCH_MODE"] = "modern"
    else:
        ids = [sessions.open_session(url, protocol=protocol) for _ in range(conc)]
        msg, _ = sessions.request(url, ids[0], "tools/call", {"name": TOOL, "arguments": ARGS}, protocol=protocol)
        if EXPECT not in json.dumps(msg) or msg.get("result", {}).get("isError"):
            raise RuntimeError(f"the check call failed: {json.dumps(msg)[:300]}")
        sid_file = tmp / f"sessions-{target}-{conc}.txt"
        sid_file.write_text("".join(i + "\n" for i in ids))
        env.update({"BENCH_MODE": "mcp", "MCP_SESSIONS": str(sid_file)})
    logf = tmp / f"wrk-{target}.log"
    if args.warmup > 0:
        warm = harness.run_wrk(url, threads, conc, args.warmup, env, logf)
        if warm["failures"] or warm["socket_errors"]:
            return {"status": "failed", "phase": "warm-up", "failure_samples": warm["samples"]}
    cpu0 = {name: harness.tree_cpu(pid) for name, pid in pids.items()}
    r = harness.run_wrk(url, threads, conc, args.duration, env, logf)
    cpu1 = {name: harness.tree_cpu(pid) for name, pid in pids.items()}
    calls, secs = r["requests"], r["duration_us"] / 1e6
    failed = r["failures"] > 0 or r["socket_errors"] > 0 or calls == 0
    return {
        "status": "failed" if failed else "ok", "wrk": f"-t{threads} -c{conc} -d{args.duration:g}s",
        "calls": calls, "calls_per_s": round(calls / secs, 1) if secs else 0.0,
        "p50_ms": r["lat_p50_us"] / 1000, "p99_ms": r["lat_p99_us"] / 1000,
        "cpu_ms_per_call": {name: round((cpu1[name] - cpu0[name]) * 1000 / calls, 3) if calls else None
                            for name in pids},
        "failures": r["failures"], "socket_errors": r["socket_errors"], "failure_samples": r["samples"],
    }


def table(runs: list[dict[str, Any]]) -> str:
    lines = [f"{'target':28} {'c':>3} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'gateway CPU':>12} "
             f"{'node CPU':>9} {'vs direct':>10}",
             f"{'':28} {'':>3} {'':>9} {'':>8} {'':>8} {'ms/call':>12} {'ms/call':>9} {'calls/s':>10}"]
    direct = {r["concurrency"]: r for r in runs if r["target"] == "direct" and r["status"] == "ok"}
    for r in runs:
        label = LABELS[r["target"]]
        if r["status"] != "ok":
            lines.append(f"{label:28} {r['concurrency']:>3} FAILED: {str(r.get('error') or r.get('failure_samples'))[:80]}")
            continue
        cpu = r["cpu_ms_per_call"]
        base = direct.get(r["concurrency"])
        ratio = f"{r['calls_per_s'] / base['calls_per_s']:.2f}x" if base and r["target"] != "direct" else "-"
        gateway = cpu.get("gateway")
        lines.append(f"{label:28} {r['concurrency']:>3} {r['calls_per_s']:>9.0f} {r['p50_ms']:>8.2f} "
                     f"{r['p99_ms']:>8.2f} {'-' if gateway is None else f'{gateway:.3f}':>12} "
                     f"{cpu['node']:>9.3f} {ratio:>10}")
    return "\n".join(lines)


def main() -> int:
    smoke = os.environ.get("SMOKE") == "1"
    ap = argparse.ArgumentParser(description="passthrough overhead benchmark")
    ap.add_argument("--duration", type=float, default=2 if smoke else 10)
    ap.add_argument("--warmup", type=float, default=1 if smoke else 2)
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--targets", default="direct,direct-2025-06-18,passthrough,passthrough-json,passthrough-modern")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads when concurrency > 1")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "passthrough.json")
    args = ap.parse_args()
    for tool in ("wrk", "node"):
        if shutil.which(tool) is None:
            print(f"passthrough.py: {tool} is not on PATH", file=sys.stderr)
            return 2
    if not EVERYTHING.exists():
        print(f"passthrough.py: {EVERYTHING} is missing; run `bash scripts/test.sh` once", file=sys.stderr)
        return 2
    concs = [int(c) for c in re.split(r"[,\s]+", args.concurrency.strip()) if c]
    tmp = Path(tempfile.mkdtemp(prefix="openapi-mcp-passthrough-"))
    harness.log(f"work dir {tmp}; load {harness.loadavg()}")
    everything, port = start_everything(tmp)
    upstream = f"http://127.0.0.1:{port}/mcp"
    runs: list[dict[str, Any]] = []
    try:
        for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
            gateway = None
            try:
                pids = {"node": everything.pid}
                url = upstream
                if target not in PROTOCOLS:
                    gateway, url = start_gateway(target, tmp, upstream)
                    pids["gateway"] = gateway.pid
                for c in concs:
                    harness.log(f"{LABELS[target]} c={c}: {args.warmup:g} s warm-up + {args.duration:g} s")
                    try:
                        r = measure(target, url, pids, c, args, tmp)
                    except (RuntimeError, OSError, sessions.MCPError, ValueError, subprocess.TimeoutExpired) as exc:
                        r = {"status": "failed", "error": str(exc)}
                    runs.append({**r, "target": target, "concurrency": c})
            finally:
                if gateway is not None:
                    gateway.stop()
    finally:
        everything.stop()
    print()
    print(table(runs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpu": harness.cpu_model(),
                                    "nproc": os.cpu_count(), "duration": args.duration, "runs": runs}, indent=2) + "\n")
    harness.log(f"results written to {args.out} (logs in {tmp})")
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
