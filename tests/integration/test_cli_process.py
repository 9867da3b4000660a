"""The command line as users run it: real subprocesses, exit codes and the one-line error messages."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_SPEC = "specs/marketplace.yaml"  # relative to the root, as a user types it
TIMEOUT = 30
TOOL_COUNT = 10


def run(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without the blank lines; a user error must be exactly one line."""
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port with a listening socket on it for the duration of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_serve_on_a_busy_port_is_one_error_line_and_exit_2(
    openapi_mcp_command: str, spec_path: Path, busy_port: int, tmp_path: Path,
) -> None:
    result = run([openapi_mcp_command, "serve", str(spec_path), "--upstream", "http://127.0.0.1:9",
                  "--host", "127.0.0.1", "--port", str(busy_port)], tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = error_lines(result)
    assert line.startswith(f"openapi-mcp: error: cannot listen on 127.0.0.1:{busy_port}"), line


def test_missing_spec_file_is_one_error_line_and_exit_2(openapi_mcp_command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = run([openapi_mcp_command, "serve", str(missing), "--upstream", "http://127.0.0.1:9"], tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = error_lines(result)
    assert line.startswith("openapi-mcp: error: "), line
    assert "nowhere.yaml" in line
    assert "no such file" in line.lower()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("entry", ["console-script", "python-m-converter"])
def test_tools_json_prints_every_tool(openapi_mcp_command: str, entry: str) -> None:
    command = [openapi_mcp_command] if entry == "console-script" else [sys.executable, "-m", "converter"]
    result = run([*command, "tools", BUNDLED_SPEC, "--json"], ROOT)
    assert result.returncode == 0, result.stderr
    tools = json.loads(result.stdout)
    assert len(tools) == TOOL_COUNT
    for tool in tools:
        assert set(tool) >= {"name", "description", "inputSchema", "annotations", "_meta"}, tool["name"]
        assert tool["inputSchema"]["type"] == "object"
    by_name = {tool["name"]: tool for tool in tools}
    assert by_name["deleteOrder"]["annotations"]["destructiveHint"] is True
    assert by_name["getUser"]["inputSchema"]["required"] == ["userId"]


def test_both_entry_points_and_both_spec_copies_give_the_same_tools(
    openapi_mcp_command: str, spec_path: Path,
) -> None:
    script = run([openapi_mcp_command, "tools", BUNDLED_SPEC, "--json"], ROOT)
    module = run([sys.executable, "-m", "converter", "tools", BUNDLED_SPEC, "--json"], ROOT)
    mock_copy = run([openapi_mcp_command, "tools", str(spec_path), "--json"], ROOT)
    assert script.returncode == module.returncode == mock_copy.returncode == 0
    assert json.loads(script.stdout) == json.loads(module.stdout) == json.loads(mock_copy.stdout)


def test_check_passes_on_the_marketplace(openapi_mcp_command: str, spec_path: Path, tmp_path: Path) -> None:
    result = run([openapi_mcp_command, "check", str(spec_path)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{TOOL_COUNT} tools, 0 operation(s) skipped" in result.stdout


def test_check_missing_file_is_one_error_line_and_exit_2(openapi_mcp_command: str, tmp_path: Path) -> None:
    result = run([openapi_mcp_command, "check", "absent.json"], tmp_path)
    assert result.returncode == 2
    [line] = error_lines(result)
    assert line.startswith("openapi-mcp: error: ") and "absent.json" in line, line


def test_serve_log_cuts_a_long_problem_list(tmp_path, openapi_mcp_command) -> None:
    import yaml

    # Names someone chose for the tools (x-mcp-name) that had to be changed: warnings, one line each.
    # (A changed operationId is routine: one summary line, see test_cli.py.)
    paths = {f"/p{i}": {"get": {"operationId": f"op{i}", "x-mcp-name": f"bad id {i}",
                                "responses": {"200": {"description": "ok"}}}} for i in range(15)}
    spec = tmp_path / "many.yaml"
    spec.write_text(yaml.safe_dump({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": paths}))
    from tests.integration.conftest import _free_port, child_env

    proc = subprocess.Popen([openapi_mcp_command, "serve", str(spec), "--upstream", "http://127.0.0.1:9",
                             "--port", str(_free_port())], stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "serving" in line:
                break
    finally:
        proc.terminate()
        proc.wait(10)
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 11
    assert "... 5 more (0 operations skipped in all); run `openapi-mcp check`" in warnings[-1]
