"""`python -m mock_api` as a process: it serves on the given port, and a busy port or an unreadable
document is one line on stderr and exit code 2."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_module_serves_the_marketplace_on_the_given_port(free_port: Callable[[], int]) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mock_api", "--port", str(port), "--log-level", "warning"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, "python -m mock_api exited early"
                assert time.monotonic() < deadline, "python -m mock_api did not start listening"
                time.sleep(0.05)
        assert response.json() == {"name": "Sample Users API"}
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_module_reports_a_busy_port_in_one_line_and_exits_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mock_api", "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert result.stderr == f"mock_api: cannot listen on 127.0.0.1:{port}: address already in use\n"
    assert result.stdout == ""


def test_module_reports_an_unreadable_spec_in_one_line_and_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "mock_api", "--spec", str(missing), "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"mock_api: {missing}: cannot read the OpenAPI document: "
        f"[Errno 2] No such file or directory: '{missing}'\n"
    )
