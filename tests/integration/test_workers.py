"""`openapi-mcp serve --workers 2`: two processes on one listening socket serve one client's session.

Every call goes on a new connection (the kernel hands connections to whichever worker accepts
first), all with the session ID `initialize` gave: a worker that did not open the session rebuilds
it from its sealed ID (the key is made at start, shared by the workers). Both workers do work;
SIGTERM to the server ends both and the server exits 0; a worker that dies is started again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Processes, _free_port, _openapi_mcp

pytestmark = [pytest.mark.integration]

JSON_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
CALLS = 40


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def post(base: str, body: dict[str, object], headers: dict[str, str]) -> httpx.Response:
    # A new connection each time: no keep-alive, so consecutive calls can land on either worker.
    with httpx.Client(base_url=base, timeout=20, trust_env=False, headers={"connection": "close"}) as http:
        return http.post("/mcp", headers=headers, json=body)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need os.fork")
def test_two_workers_serve_one_session_on_any_connection_and_stop_together(
        processes: Processes, mock_api_url: str, tmp_path: Path) -> None:
    port = _free_port()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"spec": str(Path(__file__).resolve().parents[2] / "specs" / "marketplace.yaml"),
                                  "upstream": {"url": mock_api_url}, "server": {"host": "127.0.0.1", "port": port}}))
    process = processes.start("workers", [_openapi_mcp(), "serve", "--config", str(config), "--workers", "2"])
    base = f"http://127.0.0.1:{port}"
    process.wait_ready(f"{base}/healthz")
    deadline = time.monotonic() + 20
    while len(children(process.popen.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = children(process.popen.pid)
    assert len(workers) == 2, workers
    before = {pid: cpu_ticks(pid) for pid in workers}

    init = post(base, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        JSON_HEADERS)
    assert init.status_code == 200, init.text
    session = {**JSON_HEADERS, "mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    assert post(base, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session).status_code == 202
    answers = [post(base, {"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                           "params": {"name": "getUser", "arguments": {"userId": "u1"}}}, session)
               for i in range(CALLS)]
    assert [a.status_code for a in answers] == [200] * CALLS, [a.text for a in answers if a.status_code != 200][:2]
    assert not any(a.json()["result"].get("isError") for a in answers)
    assert all(cpu_ticks(pid) > before[pid] for pid in workers), "one worker served everything"

    # A worker that dies is started again; the server keeps serving.
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    # One look per turn: the killed worker stays listed (a zombie) until the parent reaps it, and
    # two looks could see it listed, then reaped before its successor is forked.
    while (len(now := children(process.popen.pid)) < 2 or workers[0] in now) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(now) == 2 and workers[0] not in now, now
    assert post(base, {"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                       "params": {"name": "getUser", "arguments": {"userId": "u1"}}}, session).status_code == 200

    workers = children(process.popen.pid)
    process.popen.send_signal(signal.SIGTERM)
    assert process.popen.wait(timeout=30) == 0
    assert not any(Path(f"/proc/{pid}").exists() and children(process.popen.pid) for pid in workers)
    assert "worker 1 ended" in process.log() or "worker 2 ended" in process.log()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need os.fork")
def test_a_problem_every_worker_meets_is_one_line_and_exit_2_not_a_restart_loop(tmp_path: Path) -> None:

    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"spec": str(Path(__file__).resolve().parents[2] / "specs" / "marketplace.yaml"),
                                  "upstream": {"url": "http://127.0.0.1:9"},
                                  "server": {"host": "127.0.0.1", "port": _free_port(), "workers": 2},
                                  "telemetry": {"access_log": str(tmp_path / "missing" / "access.log")}}))
    done = subprocess.run([_openapi_mcp(), "serve", "--config", str(config)], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("openapi-mcp: error:")]
    assert errors and all("telemetry.access_log: cannot open" in line for line in errors), done.stderr
    assert "Traceback" not in done.stderr and "starting it again" not in done.stderr


_WORKERS_SCRIPT = """
import signal, sys, time
from converter.serve import bind_socket, serve_workers

sock = bind_socket("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)

def worker() -> None:  # as uvicorn does: on SIGTERM the listener closes, then what is open drains
    def stop(sig, frame):
        sock.close()
        time.sleep(float(sys.argv[1]))
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    print("worker", flush=True)
    while True:
        time.sleep(1)

serve_workers(1, worker, listening=sock)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need os.fork")
def test_with_workers_new_connects_are_refused_while_the_workers_drain(tmp_path: Path) -> None:
    script = tmp_path / "workers.py"
    script.write_text(_WORKERS_SCRIPT)
    drain = 1.5
    process = subprocess.Popen([sys.executable, str(script), str(drain)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        assert process.stdout.readline().strip() == "worker"
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # listening (the kernel completes the connect: nothing accepts here)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the worker has closed its copy and drains for `drain` seconds
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert time.monotonic() - started < 1
        assert process.wait(timeout=drain + 5) == 0
    finally:
        process.kill()
        process.wait()
