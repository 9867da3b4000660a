"""The MCP Inspector's CLI (`@modelcontextprotocol/inspector --cli`, from tests/node) against the real server.

Only `--cli` mode is used (no web UI, no browser), against loopback, with HOME and every
Inspector state path pointed into the test's tmp dir so nothing of the user's is read or written.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import MockApi

pytestmark = pytest.mark.integration

TIMEOUT = 60
TOOL_NAMES = {
    "getApiInfo", "listUsers", "getUser", "getUserAvatar", "listUserOrders", "createOrder",
    "updateOrder", "deleteOrder", "listOrdersByUser", "searchOrders",
}


def inspector(node_bin: Path, url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `mcp-inspector --cli URL --transport http ARGS...` non-interactively; fail with its output on timeout."""
    env = dict(
        os.environ,
        HOME=str(home),
        USERPROFILE=str(home),
        MCP_CATALOG_PATH=str(home / "catalog.json"),
        MCP_STORAGE_DIR=str(home / "storage"),
        MCP_CLIENT_CONFIG_PATH=str(home / "client.json"),
        MCP_INSPECTOR_OAUTH_STATE_PATH=str(home / "oauth.json"),
        MCP_AUTO_OPEN_ENABLED="false",  # never open a browser
        NO_COLOR="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    argv = [str(node_bin / "mcp-inspector"), "--cli", url, "--transport", "http", "--stored-auth-only", *args]
    try:
        return subprocess.run(
            argv, env=env, cwd=home, capture_output=True, text=True, timeout=TIMEOUT,
            stdin=subprocess.DEVNULL, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(argv)} did not finish within {TIMEOUT} s\nstdout: {exc.stdout!r}\nstderr: {exc.stderr!r}")


def parse(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    try:
        return json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"inspector output is not JSON:\n{result.stdout}\nstderr: {result.stderr}")


def test_inspector_lists_every_tool(node_bin: Path, mcp_server_url: str, tmp_path: Path) -> None:
    listed = parse(inspector(node_bin, mcp_server_url, tmp_path, "--method", "tools/list"))
    tools = listed["tools"]
    assert {tool["name"] for tool in tools} == TOOL_NAMES
    for tool in tools:
        assert tool["inputSchema"]["type"] == "object", tool["name"]
        assert tool["_meta"]["openapi-mcp/operation"]["operationId"] == tool["name"]


def test_inspector_calls_get_user(node_bin: Path, mcp_server_url: str, mock_api: MockApi, tmp_path: Path) -> None:
    called = parse(inspector(
        node_bin, mcp_server_url, tmp_path, "--method", "tools/call", "--tool-name", "getUser", "--tool-arg", "userId=u1",
    ))
    alice = {"id": "u1", "name": "Alice Johnson", "email": "alice@example.com"}
    assert not called.get("isError", False)
    assert called["structuredContent"] == alice
    assert json.loads(called["content"][0]["text"]) == alice
    [entry] = mock_api.requests()
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/marketplace/users/u1", 200)


def test_inspector_sees_bad_arguments_as_a_tool_error(
    node_bin: Path, mcp_server_url: str, mock_api: MockApi, tmp_path: Path,
) -> None:
    result = inspector(
        node_bin, mcp_server_url, tmp_path, "--method", "tools/call", "--tool-name", "searchOrders",
        "--tool-args-json", '{"limit": 1000}',
    )
    assert result.returncode != 0  # the CLI's exit code for an isError result
    called = json.loads(result.stdout)
    assert called["isError"] is True
    assert "limit" in called["content"][0]["text"]
    assert mock_api.requests() == []


@pytest.mark.parametrize(("method", "key"), [("resources/list", "resources"),
                                             ("resources/templates/list", "resourceTemplates"),
                                             ("prompts/list", "prompts")])
def test_inspector_gets_empty_resource_and_prompt_lists_from_an_openapi_server(
    node_bin: Path, mcp_server_url: str, tmp_path: Path, method: str, key: str,
) -> None:
    assert parse(inspector(node_bin, mcp_server_url, tmp_path, "--method", method))[key] == []


def test_inspector_strict_finds_no_portability_problem_in_the_marketplace_tools(
    node_bin: Path, mcp_server_url: str, tmp_path: Path,
) -> None:
    # Inspector 2.12's --strict checks tool schemas against the strictest widely used client
    # dialects (single `type`, Gemini's OpenAPI subset, ...): nullable is written as an `anyOf`
    # with a `{"type": "null"}` branch, not as a type list.
    result = inspector(node_bin, mcp_server_url, tmp_path, "--method", "tools/list", "--strict")
    assert {tool["name"] for tool in parse(result)["tools"]} == TOOL_NAMES
    assert "Warning:" not in result.stderr and "warnings across" not in result.stderr, result.stderr
