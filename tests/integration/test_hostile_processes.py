"""Hostile documents and arguments that could hang, exhaust memory or crash the interpreter: each runs
in a child process with a deadline and an address-space limit (`isolated`), so it fails the test
instead of the run. The in-process hostile-input tests are tests/test_hostile.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

import mock_api

pytestmark = pytest.mark.integration

ROOT: Final = Path(__file__).resolve().parents[2]
SPECS: Final = ROOT / "tests" / "specs"
MARKETPLACE: Final = mock_api.SPEC_PATH
MB: Final = 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    returncode: int | None  # None: killed at the deadline
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def _parent_rss_mb() -> float:
    """This process's peak RSS: Linux carries it into a child's ru_maxrss at exec, so a child's
    figure is only meaningful above it (the test process grows as the suite runs)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def isolated(code: str, *, deadline: float, memory_mb: int = 2048) -> Outcome:
    """Run Python `code` in a child process limited to `memory_mb` of address space; kill it at `deadline`."""

    limit = f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({memory_mb * MB}, {memory_mb * MB}))\n"
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", limit + textwrap.dedent(code)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    returncode: int | None = None
    usage: Any = None
    while time.monotonic() - started < deadline:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.02)
    else:
        child.send_signal(signal.SIGKILL)
        _, _, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    child.returncode = returncode if returncode is not None else -9  # reaped above; keep Popen quiet
    assert child.stdout is not None and child.stderr is not None
    stdout, stderr = child.stdout.read().decode(errors="replace"), child.stderr.read().decode(errors="replace")
    child.stdout.close()
    child.stderr.close()
    return Outcome(returncode, stdout, stderr, seconds, usage.ru_maxrss / 1024)


BUILD_CATALOG = """
    import json, sys
    from converter.catalog import build_catalog
    from converter.config import load_settings
    from converter.errors import ConverterError
    try:
        catalog = build_catalog(load_settings(None, spec=sys.argv[1] if len(sys.argv) > 1 else {spec!r},
                                              upstream_url="http://127.0.0.1:9"))
        tools = [p.tool.model_dump(mode="json", by_alias=True, exclude_none=True) for p in catalog.plans]
        print(json.dumps({{"tools": len(tools), "bytes": len(json.dumps(tools)),
                          "problems": [str(p) for p in catalog.problems]}}))
    except ConverterError as exc:
        print(json.dumps({{"error": type(exc).__name__, "message": str(exc)}}))
"""


def test_billion_laughs_in_a_converted_schema_fails_fast_or_stays_bounded() -> None:
    outcome = isolated(BUILD_CATALOG.format(spec=str(SPECS / "hostile-billion-laughs.yaml")), deadline=6)
    print(f"billion laughs: {outcome.seconds:.1f} s, peak RSS {outcome.peak_rss_mb:.0f} MB")
    assert not outcome.timed_out, f"running after {outcome.seconds:.1f} s (peak RSS {outcome.peak_rss_mb:.0f} MB)"
    assert outcome.peak_rss_mb < _parent_rss_mb() + 500
    result = json.loads(outcome.stdout)
    assert result.get("error") == "SpecError" or result["bytes"] < 10 * MB, result


def test_billion_laughs_that_nothing_reads_loads_in_bounded_time_and_memory() -> None:
    outcome = isolated(BUILD_CATALOG.format(spec=str(SPECS / "hostile-billion-laughs-unused.yaml")), deadline=10)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert outcome.seconds < 5 and outcome.peak_rss_mb < _parent_rss_mb() + 300, outcome
    assert json.loads(outcome.stdout) == {"tools": 1, "bytes": json.loads(outcome.stdout)["bytes"], "problems": []}


def test_billion_laughs_in_the_config_file_fails_fast(tmp_path: Path) -> None:
    laughs = (SPECS / "hostile-billion-laughs.yaml").read_text(encoding="utf-8").split("x-laughs:\n", 1)[1]
    laughs = laughs.split("paths:", 1)[0]
    config = tmp_path / "laughs.yaml"
    config.write_text(f"spec: {MARKETPLACE}\nx-laughs:\n{laughs}", encoding="utf-8")
    outcome = isolated(f"""
        from converter.config import load_settings
        from converter.errors import ConfigError
        try:
            load_settings({str(config)!r})
        except ConfigError as exc:
            print(exc)
    """, deadline=6)
    assert not outcome.timed_out, f"still running after {outcome.seconds:.1f} s"
    assert outcome.stdout.strip() == f"{config}: expands to more than 100,000 values through YAML aliases; refused"


def test_a_valid_argument_nested_20000_deep_does_not_crash_the_process() -> None:
    outcome = isolated("""
        import anyio, httpx
        from converter.catalog import build_catalog
        from converter.config import load_settings

        async def main():
            node = {"name": "leaf"}
            for _ in range(20_000):
                node = {"name": "n", "children": [node]}
            settings = load_settings(None, spec="tests/specs/recursive.yaml", upstream_url="http://127.0.0.1:9")
            async with build_catalog(settings) as catalog:
                result = await catalog.call_tool("createCategoryTree", node)
            print("is_error", result.is_error)

        anyio.run(main)
    """, deadline=20)
    assert outcome.returncode != -signal.SIGSEGV, "the interpreter died of SIGSEGV"
    assert outcome.returncode == 0, outcome.stderr[-2000:]


def _spec_with_refs(*refs: str) -> bytes:
    paths = {f"/r{i}": {"get": {"operationId": f"r{i}", "parameters": [{"$ref": ref}],
                                "responses": {"200": {"description": "OK"}}}} for i, ref in enumerate(refs)}
    paths["/things"] = {"get": {"operationId": "listThings", "responses": {"200": {"description": "OK"}}}}
    return json.dumps({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": paths}).encode()


def test_a_ref_to_an_endless_file_fails_with_a_spec_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_bytes(_spec_with_refs("/dev/zero#/P"))
    outcome = isolated(BUILD_CATALOG.format(spec=str(spec)), deadline=15, memory_mb=1024)
    assert not outcome.timed_out and outcome.returncode == 0, (outcome.seconds, outcome.stderr[-500:])
    assert json.loads(outcome.stdout)["problems"][0].startswith("#/paths/~1r0/get: "), outcome.stdout


ENDLESS_SITE = """
    import http.server, json, sys, threading
    from converter.errors import SpecError
    from converter.spec import load_spec

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "application/yaml")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"# " + b"x" * 65536 + b"\\n")
            except OSError:
                pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        load_spec(f"http://127.0.0.1:{server.server_address[1]}/spec.yaml")
    except SpecError as exc:
        print(exc)
"""


def test_a_spec_url_that_never_ends_fails_with_a_spec_error() -> None:
    outcome = isolated(ENDLESS_SITE, deadline=20, memory_mb=1024)
    assert not outcome.timed_out and outcome.returncode == 0, (outcome.seconds, outcome.stderr[-500:])
    assert "larger than" in outcome.stdout, outcome.stdout
