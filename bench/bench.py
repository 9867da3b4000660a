"""Throughput benchmark: direct upstream vs openapi-mcp vs FastMCP, in one run.

Run through `bash bench/run.sh` (which installs what is missing); this file expects nginx, wrk,
`.venv/bin/openapi-mcp` and `bench/.venv-fastmcp` to be there.

    python bench/bench.py [--duration 10] [--warmup 2] [--targets direct,ours,fastmcp]
                          [--concurrency 1,32] [--out bench/results/latest.json]
    python bench/bench.py --report bench/results/latest.json     # print the tables again

For each target and concurrency: fresh MCP sessions (bench/sessions.py), one checked tools/call,
a warm-up wrk run (discarded), then the measured wrk run with bench/mcp_call.lua. Server CPU per
call = (utime+stime+cutime+cstime of the server's process tree after - before) / calls.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
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

SPEC = ROOT / "specs" / "marketplace.yaml"
USER_PATH = "/marketplace/users/u1"
# The spec's User schema (id, name, email), as the mock serves u1.
USER_JSON = '{"id":"u1","name":"Alice Johnson","email":"alice@example.com"}'
EXPECT = "Alice Johnson"
TOOL, TOOL_ARGS = "getUser", {"userId": "u1"}
OURS = ROOT / ".venv" / "bin" / "openapi-mcp"
FASTMCP_PY = BENCH / ".venv-fastmcp" / "bin" / "python"
CLK_TCK = os.sysconf("SC_CLK_TCK")

LABELS = {"direct": "direct (nginx)", "ours": "openapi-mcp", "ours-modern": "openapi-mcp 2026-07-28",
          "ours-quiet": "openapi-mcp-notel",
          "ours-auth": "openapi-mcp+auth", "fastmcp": "FastMCP"}
# The auth-on target introspects one opaque token once (then serves it from its cache); nginx answers
# the introspection endpoint with this document, whose `aud` is that target's MCP URL.
BENCH_TOKEN = "bench-token-0123456789"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


# ------------------------------------------------------------------------------------ CPU time
def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime+cutime+cstime in ticks) of one process, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = raw[raw.rindex(")") + 2 :].split()
    return int(f[1]), int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and all its live descendants (plus their reaped children)."""
    table: dict[int, tuple[int, int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st:
                table[int(d)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1]
        todo.extend(children.get(pid, []))
    return total / CLK_TCK


# ------------------------------------------------------------------------------------ processes
class Proc:
    def __init__(self, name: str, cmd: list[str], logfile: Path, env: dict[str, str] | None = None):
        self.name, self.logfile = name, logfile
        self.fh = open(logfile, "wb")  # noqa: SIM115 - kept open for the life of the process, closed in stop()
        self.p = subprocess.Popen(
            cmd, stdout=self.fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.p.pid

    def tail(self, n: int = 15) -> str:
        self.fh.flush()
        lines = self.logfile.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.fh.close()


def start_nginx(tmp: Path, auth_resource: str) -> tuple[Proc, int]:
    port = free_port()
    introspection = json.dumps({"active": True, "aud": auth_resource, "scope": "mcp:tools", "sub": "bench",
                                "client_id": "wrk", "iss": "http://127.0.0.1/realms/bench",
                                "exp": int(time.time()) + 86400})
    d = tmp / "nginx"
    d.mkdir()
    conf = d / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        location = {USER_PATH} {{
            default_type application/json;
            return 200 '{USER_JSON}';
        }}
        location = /introspect {{
            default_type application/json;
            return 200 '{introspection}';
        }}
        location / {{ return 404; }}
    }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = Proc("nginx", [nginx, "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")], d / "stdout.log")
    wait_port(port, proc.p, 10)
    return proc, port


def start_target(target: str, tmp: Path, upstream: str, auth_port: int) -> tuple[Proc, str]:
    port = free_port()
    if target in ("ours", "ours-modern"):  # defaults: JSON access log (to its log file) and Prometheus metrics on
        cmd = [str(OURS), "serve", str(SPEC), "--upstream", upstream, "--port", str(port)]
    elif target == "ours-quiet":  # the same with access log and metrics off: what telemetry costs
        config = tmp / "quiet.yaml"
        config.write_text(json.dumps({"spec": str(SPEC), "upstream": {"url": upstream},
                                      "telemetry": {"access_log": "off", "metrics": False}}))
        cmd = [str(OURS), "serve", "--config", str(config), "--port", str(port)]
    elif target == "ours-auth":
        port = auth_port
        config = tmp / "auth.yaml"
        config.write_text(json.dumps({"spec": str(SPEC), "upstream": {"url": upstream}, "auth": {
            "resource": f"http://127.0.0.1:{port}/mcp", "authorization_servers": ["http://127.0.0.1/realms/bench"],
            "introspection_endpoint": f"{upstream}/introspect", "client_id": "bench", "client_secret": "bench",
            "required_scopes": ["mcp:tools"]}}))
        cmd = [str(OURS), "serve", "--config", str(config), "--port", str(port)]
    elif target == "fastmcp":
        cmd = [str(FASTMCP_PY), str(BENCH / "fastmcp_server.py"), str(SPEC), "--upstream", upstream,
               "--port", str(port)]
    else:
        raise ValueError(target)
    proc = Proc(target, cmd, tmp / f"{target}.log")
    try:
        wait_port(port, proc.p, 60)
    except RuntimeError as exc:
        proc.stop()
        raise RuntimeError(f"{LABELS[target]} did not start: {exc}\n{proc.tail()}") from None
    return proc, f"http://127.0.0.1:{port}/mcp"


# ------------------------------------------------------------------------------------ wrk
def run_wrk(url: str, threads: int, conns: int, seconds: float, env: dict[str, str], logf: Path) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "10s", "--latency",
           "-s", str(BENCH / "mcp_call.lua"), url]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env},
                         timeout=seconds + 60)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(logf, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{res.stdout}{res.stderr}\n")
    m = re.search(r"^BENCH_RESULT (\{.*\})$", res.stdout, re.M)
    if res.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed (exit {res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    out = json.loads(m.group(1))
    out["wrk_cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return out


def measure(target: str, url: str, server_pid: int, conc: int, args, tmp: Path) -> dict[str, Any]:
    threads = 1 if conc == 1 else min(args.threads, conc)
    env = {"BENCH_THREADS": str(threads), "BENCH_EXPECT": EXPECT}
    if target == "direct":
        env["BENCH_MODE"] = "direct"
    elif target == "ours-modern":  # every call one 2026-07-28 single exchange: no sessions (wrk checks each)
        env.update({"BENCH_MODE": "modern", "MCP_TOOL": TOOL, "MCP_ARGS": json.dumps(TOOL_ARGS, separators=(",", ":"))})
    else:
        os.environ.pop("MCP_TOKEN", None)
        if target == "ours-auth":
            os.environ["MCP_TOKEN"] = BENCH_TOKEN  # sessions.py sends it when opening sessions
        ids = [sessions.open_session(url) for _ in range(conc)]
        msg, _ = sessions.request(url, ids[0], "tools/call", {"name": TOOL, "arguments": TOOL_ARGS})
        text = json.dumps(msg)
        if EXPECT not in text or msg.get("result", {}).get("isError"):
            raise RuntimeError(f"the check call of {TOOL} failed: {text[:500]}")
        sid_file = tmp / f"sessions-{target}-{conc}.txt"
        sid_file.write_text("".join(i + "\n" for i in ids))
        env.update({"BENCH_MODE": "mcp", "MCP_SESSIONS": str(sid_file), "MCP_TOOL": TOOL,
                    "MCP_ARGS": json.dumps(TOOL_ARGS, separators=(",", ":"))})
        if target == "ours-auth":
            env["MCP_TOKEN"] = BENCH_TOKEN
    logf = tmp / f"wrk-{target}.log"
    if args.warmup > 0:
        warm = run_wrk(url, threads, conc, args.warmup, env, logf)
        if warm["failures"] or warm["socket_errors"]:
            return {"status": "failed", "phase": "warm-up", "failures": warm["failures"],
                    "socket_errors": warm["socket_errors"], "failure_samples": warm["samples"]}
    load0 = loadavg()
    cpu0 = tree_cpu(server_pid)
    r = run_wrk(url, threads, conc, args.duration, env, logf)
    cpu1 = tree_cpu(server_pid)
    calls = r["requests"]
    secs = r["duration_us"] / 1e6
    failed = r["failures"] > 0 or r["socket_errors"] > 0 or calls == 0
    return {
        "status": "failed" if failed else "ok",
        "wrk": f"-t{threads} -c{conc} -d{args.duration:g}s",
        "calls": calls,
        "seconds": round(secs, 3),
        "calls_per_s": round(calls / secs, 1) if secs else 0.0,
        "p50_ms": r["lat_p50_us"] / 1000,
        "p90_ms": r["lat_p90_us"] / 1000,
        "p99_ms": r["lat_p99_us"] / 1000,
        "max_ms": r["lat_max_us"] / 1000,
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "server_cpu_ms_per_call": round((cpu1 - cpu0) * 1000 / calls, 3) if calls else None,
        "wrk_cpu_ms_per_call": round(r["wrk_cpu_s"] * 1000 / calls, 3) if calls else None,
        "failures": r["failures"],
        "socket_errors": r["socket_errors"],
        "failure_samples": r["samples"],
        "load_before": load0,
        "load_after": loadavg(),
    }


# ------------------------------------------------------------------------------------ report
def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def throughput_table(data: dict) -> str:
    runs = data.get("runs", [])
    conc = sorted({r["concurrency"] for r in runs})
    targets = [t for t in ("direct", "ours", "ours-modern", "ours-quiet", "ours-auth", "fastmcp")
               if any(r["target"] == t for r in runs)]
    by = {(r["target"], r["concurrency"]): r for r in runs}
    out = []
    hdr = f"{'target':<16}{'c':>4}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'srv CPU ms/call':>17}{'load1':>7}"
    out.append(hdr)
    out.append("-" * len(hdr))
    for c in conc:
        for t in targets:
            r = by.get((t, c))
            label = LABELS[t] + (f" {data['versions'].get('fastmcp', '')}" if t == "fastmcp" else "")
            if r is None:
                continue
            if r["status"] != "ok":
                why = r.get("error") or f"{r.get('failures', 0)} bad responses, {r.get('socket_errors', 0)} socket errors"
                out.append(f"{label:<16}{c:>4}  FAILED: {why.splitlines()[0][:80]}")
                continue
            out.append(f"{label:<16}{c:>4}{r['calls_per_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                       f"{_fmt(r['server_cpu_ms_per_call'], '.3f'):>17}{r['load_before'][0]:>7.2f}")
    ratios = []
    for c in conc:
        o, f, d = by.get(("ours", c)), by.get(("fastmcp", c)), by.get(("direct", c))
        a = by.get(("ours-auth", c))
        ok = lambda r: r is not None and r["status"] == "ok"  # noqa: E731
        parts = []
        q = by.get(("ours-quiet", c))
        if ok(o) and ok(q):
            parts.append(f"telemetry on/off: throughput {o['calls_per_s'] / q['calls_per_s']:.2f}x")
        if ok(o) and ok(a):
            parts.append(f"auth on/off: throughput {a['calls_per_s'] / o['calls_per_s']:.2f}x")
        if ok(o) and ok(f):
            parts.append(f"ours/FastMCP: throughput {o['calls_per_s'] / f['calls_per_s']:.2f}x, "
                         f"CPU/call {o['server_cpu_ms_per_call'] / f['server_cpu_ms_per_call']:.2f}x, "
                         f"p50 {o['p50_ms'] / f['p50_ms']:.2f}x")
        if ok(o) and ok(d):
            parts.append(f"ours/direct: throughput {o['calls_per_s'] / d['calls_per_s']:.3f}x")
        if parts:
            ratios.append(f"c={c}: " + "; ".join(parts))
    if ratios:
        out.append("")
        out.extend(ratios)
    return "\n".join(out)


def startup_table(data: dict) -> str:
    rows = data.get("startup", {}).get("runs", [])
    notes = data.get("startup", {}).get("notes", [])
    if not rows and not notes:
        return ""
    hdr = (f"{'spec':<12}{'ops':>6}{' server':<24}{'ready s':>9}{'+list s':>9}{'total s':>9}"
           f"{'tools':>7}{'list bytes':>13}{'peak RSS MB':>13}")
    out = [hdr, "-" * len(hdr)]
    for r in rows:
        label = " " + LABELS[r["server"]] + (f" {data['versions'].get('fastmcp', '')}" if r["server"] == "fastmcp" else "")
        label += f" ({r['cache']})" if r.get("cache") else ""
        if r["status"] != "ok":
            why = (r.get("error") or "").splitlines()[0][:70] if r.get("error") else ""
            rss = "" if r.get("peak_rss_mb") is None else f" (peak RSS so far {r['peak_rss_mb']:.0f} MB)"
            out.append(f"{r['spec']:<12}{r.get('operations') or '':>6}{label:<24}  "
                       f"{r['status'].upper()}: {why}{rss}")
            continue
        out.append(f"{r['spec']:<12}{r['operations']:>6}{label:<24}{r['ready_s']:>9.2f}{r['list_s']:>9.2f}"
                   f"{r['total_s']:>9.2f}{r['tools']:>7}{r['list_bytes']:>13,}{r['peak_rss_mb']:>13.0f}"
                   + ("  (paginated: first page only)" if r.get("next_cursor") else ""))
    out.extend(f"note: {n}" for n in notes)
    return "\n".join(out)


def print_report(data: dict) -> None:
    meta = data.get("meta", {})
    print()
    print(f"== openapi-mcp benchmark  {meta.get('date', '')}  {meta.get('cpu', '')} x{meta.get('nproc', '')}  "
          f"load {meta.get('load_start')} -> {meta.get('load_end')}")
    print(f"   versions: {json.dumps(data.get('versions', {}))}")
    if "startup" in data:
        print("\n-- startup: process start -> initialize answered (ready) -> first tools/list answered")
        print(startup_table(data))
    if data.get("runs"):
        print(f"\n-- tools/call {TOOL} {json.dumps(TOOL_ARGS)} -> GET {USER_PATH} on nginx; "
              f"{meta.get('duration')} s per run after {meta.get('warmup')} s warm-up")
        print(throughput_table(data))
    if data.get("ab"):
        from ab import ab_table

        ab = data["ab"]["results"]
        print(f"\n-- A/B: both servers up, {ab[0]['rounds']} alternating rounds of {ab[0]['duration_s']:g} s; "
              "median of the per-round ratios (drift cancels out)")
        print(ab_table(ab))
    if meta.get("smoke"):
        print("\n(smoke run: short durations, figures are indicative only)")


# ------------------------------------------------------------------------------------ main
def versions() -> dict[str, str]:
    v: dict[str, str] = {"python": platform.python_version()}
    try:
        from importlib.metadata import version

        v["mcp"] = version("mcp")
        v["openapi-mcp"] = version("openapi-mcp")
    except Exception:  # noqa: S110 - versions are informative; a missing one is left out
        pass
    try:  # noqa: SIM105 - no FastMCP venv: its version is left out
        v["fastmcp"] = subprocess.run(
            [str(FASTMCP_PY), "-c", "import fastmcp; print(fastmcp.__version__)"],
            capture_output=True, text=True, timeout=60).stdout.strip()
    except OSError:
        pass
    w = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    v["wrk"] = (w.stdout or w.stderr).split(" Copyright")[0].strip()
    n = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-v"], capture_output=True, text=True)
    v["nginx"] = n.stderr.strip().split("/")[-1]
    return v


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main() -> int:
    ap = argparse.ArgumentParser(description="openapi-mcp throughput benchmark")
    ap.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", "10")))
    ap.add_argument("--warmup", type=float, default=float(os.environ.get("WARMUP", "2")))
    ap.add_argument("--targets", default=os.environ.get("TARGETS", "direct,ours,fastmcp"))  # ours-modern, ours-quiet, ours-auth: see ab.py
    ap.add_argument("--concurrency", default=os.environ.get("CONCURRENCY", "1,32"))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("WRK_THREADS", "2")),
                    help="wrk threads when concurrency > 1 (default 2)")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json")
    ap.add_argument("--report", type=Path, help="only print the tables of a results file")
    args = ap.parse_args()

    if args.report:
        print_report(load_json(args.report))
        return 0

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    concs = [int(c) for c in re.split(r"[,\s]+", args.concurrency.strip()) if c]
    data = load_json(args.out)  # startup.py may have written its part already
    data["versions"] = {**data.get("versions", {}), **versions()}
    data["meta"] = {
        **data.get("meta", {}),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": platform.node(), "cpu": cpu_model(), "nproc": os.cpu_count(),
        "duration": args.duration, "warmup": args.warmup,
        "smoke": args.duration < 5,
        "load_start": data.get("meta", {}).get("load_start") or loadavg(),
    }
    data["runs"] = []
    failed = False
    tmp = Path(tempfile.mkdtemp(prefix="openapi-mcp-bench-"))
    log(f"work dir {tmp}; load {loadavg()}")
    auth_port = free_port()
    nginx, nport = start_nginx(tmp, f"http://127.0.0.1:{auth_port}/mcp")
    upstream = f"http://127.0.0.1:{nport}"
    try:
        for target in targets:
            proc = None
            try:
                if target == "direct":
                    url, pid = upstream + USER_PATH, nginx.pid
                else:
                    log(f"starting {LABELS[target]}")
                    proc, url = start_target(target, tmp, upstream, auth_port)
                    pid = proc.pid
                for c in concs:
                    log(f"{LABELS[target]} c={c}: {args.warmup:g} s warm-up + {args.duration:g} s (load {loadavg()})")
                    try:
                        r = measure(target, url, pid, c, args, tmp)
                    except (RuntimeError, OSError, sessions.MCPError, ValueError, subprocess.TimeoutExpired) as exc:
                        r = {"status": "failed", "error": str(exc)}
                        if proc:
                            r["server_log_tail"] = proc.tail()
                    r.update({"target": target, "concurrency": c})
                    data["runs"].append(r)
                    if r["status"] != "ok":
                        failed = True
                        log(f"  FAILED: {r.get('error') or r.get('failure_samples')}")
                    else:
                        log(f"  {r['calls_per_s']:.0f} calls/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                            f"server CPU {r['server_cpu_ms_per_call']:.3f} ms/call")
            except RuntimeError as exc:
                failed = True
                for c in concs:
                    data["runs"].append({"target": target, "concurrency": c, "status": "failed", "error": str(exc)})
                log(f"{LABELS[target]}: {exc}")
            finally:
                if proc:
                    proc.stop()
    finally:
        nginx.stop()
    data["meta"]["load_end"] = loadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    log(f"results written to {args.out} (logs in {tmp})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
