"""Interleaved A/B throughput: what one feature costs, measured so that machine drift cancels out.

    python bench/ab.py [--pairs ours:ours-quiet,ours-auth:ours] [--concurrency 1,32]
                       [--rounds 7] [--duration 3] [--out bench/results/ab.json]

Back-to-back runs of two servers differ by more than a feature costs on a machine whose speed
drifts (this one's swung 2x between 8-second runs). So both servers of a pair run at once, and
short wrk runs alternate between them (A B, then B A, ...) for --rounds rounds; the figure is the
median of the per-round ratios B/A (calls/s) and of server CPU per call. Every run is bounded by
--duration seconds; the whole script by rounds x pairs x concurrencies x 2 x (duration + ~1 s).

Targets are those of bench/bench.py: ours (telemetry on: access log + metrics, the default),
ours-quiet (telemetry off), ours-auth (token introspection, cached). Run through bench/run.sh
(AB=1, the default) or directly once `bash bench/run.sh` has installed nginx and wrk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from bench import LABELS, free_port, load_json, loadavg, log, measure, start_nginx, start_target, versions


def main() -> int:
    ap = argparse.ArgumentParser(description="interleaved A/B throughput of openapi-mcp variants")
    ap.add_argument("--pairs", default="ours-quiet:ours,ours:ours-auth",
                    help="baseline:variant pairs; the ratio reported is variant / baseline")
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json")
    args = ap.parse_args()
    pairs = [tuple(p.split(":", 1)) for p in args.pairs.split(",") if p]
    targets = sorted({t for pair in pairs for t in pair})
    tmp = Path(tempfile.mkdtemp(prefix="openapi-mcp-ab-"))
    auth_port = free_port()
    nginx, nginx_port = start_nginx(tmp, f"http://127.0.0.1:{auth_port}/mcp")
    servers = {}
    try:
        for target in targets:
            servers[target] = start_target(target, tmp, f"http://127.0.0.1:{nginx_port}", auth_port)
        results = []
        for conc in [int(c) for c in args.concurrency.split(",")]:
            for base, variant in pairs:
                rounds = []
                for i in range(args.rounds):
                    order = (base, variant) if i % 2 == 0 else (variant, base)
                    one = {}
                    for target in order:
                        proc, url = servers[target]
                        run_args = argparse.Namespace(duration=args.duration, warmup=1.0 if i == 0 else 0.0,
                                                      threads=args.threads)
                        r = measure(target, url, proc.pid, conc, run_args, tmp)
                        if r["status"] != "ok":
                            raise RuntimeError(f"{target} c={conc}: {r}")
                        one[target] = r
                    rounds.append({"base": one[base], "variant": one[variant],
                                   "ratio": one[variant]["calls_per_s"] / one[base]["calls_per_s"]})
                    log(f"c={conc} {LABELS[variant]} / {LABELS[base]} round {i + 1}: "
                        f"{one[variant]['calls_per_s']:.0f} / {one[base]['calls_per_s']:.0f} calls/s "
                        f"= {rounds[-1]['ratio']:.3f} (load {loadavg()})")
                summary = {
                    "concurrency": conc, "base": base, "variant": variant, "rounds": len(rounds),
                    "duration_s": args.duration,
                    "ratio_median": round(statistics.median(r["ratio"] for r in rounds), 3),
                    "ratio_min": round(min(r["ratio"] for r in rounds), 3),
                    "ratio_max": round(max(r["ratio"] for r in rounds), 3),
                    "base_calls_per_s": round(statistics.median(r["base"]["calls_per_s"] for r in rounds), 1),
                    "variant_calls_per_s": round(statistics.median(r["variant"]["calls_per_s"] for r in rounds), 1),
                    "base_cpu_ms": round(statistics.median(r["base"]["server_cpu_ms_per_call"] for r in rounds), 3),
                    "variant_cpu_ms": round(statistics.median(r["variant"]["server_cpu_ms_per_call"]
                                                              for r in rounds), 3),
                }
                results.append(summary)
    finally:
        for proc, _ in servers.values():
            proc.stop()
        nginx.stop()
    print()
    print(ab_table(results))
    data = load_json(args.out)
    data["versions"] = {**data.get("versions", {}), **versions()}
    data["ab"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    log(f"results written to {args.out} (logs in {tmp})")
    return 0


def ab_table(results: list[dict]) -> str:
    hdr = (f"{'variant / baseline':<40}{'c':>4}{'ratio (median)':>16}{'min..max':>14}"
           f"{'calls/s':>16}{'CPU ms/call':>16}")
    out = [hdr, "-" * len(hdr)]
    for r in results:
        name = f"{LABELS[r['variant']]} / {LABELS[r['base']]}"
        out.append(f"{name:<40}{r['concurrency']:>4}{r['ratio_median']:>16.3f}"
                   f"{r['ratio_min']:>7.2f}..{r['ratio_max']:<5.2f}"
                   f"{r['variant_calls_per_s']:>8.0f}/{r['base_calls_per_s']:<7.0f}"
                   f"{r['variant_cpu_ms']:>8.3f}/{r['base_cpu_ms']:<7.3f}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
