"""What telemetry adds to one call, measured in-process where this machine's drift cannot hide it.

    .venv/bin/python bench/telemetry.py [--records 20000] [--results bench/results/latest.json]

End-to-end A/B runs (bench/ab.py) of telemetry on/off differ by less than this machine's noise
(ratios 0.78-1.46 between 3 s rounds). This script times the parts telemetry adds per call, each
on the same realistic tools/call record, best of 5 passes:
- the JSON access-log line (as_log + json.dumps + write, to a file in a temp dir),
- the Prometheus updates (request counter, latency histogram, tool counter, upstream histogram),
- the ring buffer behind /dashboard (kept when telemetry is off, so not part of the cost),
- the two layers' own work per request: CallRecord creation + finish, the contextvar set/reset
  (the layers also run with telemetry off, for the dashboard: counting them makes this an upper bound).
With --results it divides the sum by the server CPU per call of the latest throughput run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from converter.telemetry.record import CallRecord, current_record
from converter.telemetry.sinks import AccessLog, Metrics, Recent


def record() -> CallRecord:
    r = CallRecord(http_method="POST", path="/mcp")
    r.session, r.mcp_method, r.name, r.client_name = "9f2c" * 8, "tools/call", "getUser", "bench"
    r.http_status, r.upstream_method, r.upstream_url = 200, "GET", "/marketplace/users/{userId}"
    r.upstream_status, r.upstream_ms, r.request_bytes, r.response_bytes = 200, 0.31, 120, 260
    r.finish()
    return r


def best_us(fn: Callable[[CallRecord], None], records: list[CallRecord]) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for r in records:
            fn(r)
        best = min(best, (time.perf_counter() - t) / len(records) * 1e6)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = ap.parse_args()
    records = [record() for _ in range(args.records)]
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "access.log", "a", buffering=1) as log:
        access, metrics, recent = AccessLog(log), Metrics(["getUser"]), Recent()

        def layers(r: CallRecord) -> None:
            fresh = CallRecord(http_method="POST", path="/mcp")
            token = current_record.set(fresh)
            current_record.reset(token)
            fresh.finish()

        parts = {"access log line": best_us(access.emit, records), "prometheus updates": best_us(metrics.emit, records),
                 "record + contextvar": best_us(layers, records)}
        ring = best_us(recent.emit, records)
    total = sum(parts.values())
    for name, us in parts.items():
        print(f"{name:<22}{us:8.2f} us")
    print(f"{'telemetry, in all':<22}{total:8.2f} us   (the /dashboard ring buffer, kept when off: {ring:.2f} us)")
    try:
        runs = json.loads(args.results.read_text()).get("runs", [])
    except (OSError, ValueError):
        runs = []
    for run in runs:
        if run.get("target") == "ours" and run.get("server_cpu_ms_per_call"):
            cpu_us = run["server_cpu_ms_per_call"] * 1000
            print(f"c={run['concurrency']}: {total:.1f} us of {cpu_us:.0f} us server CPU per call = "
                  f"{total / cpu_us * 100:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
