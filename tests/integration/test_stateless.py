"""`server.stateless: true` with real clients: `openapi-mcp serve` in front of the mock API, the
official SDK client in both protocol eras, the Inspector CLI and mcp-remote (over stdio, as Claude
Desktop runs it) listing and calling tools. In
stateless mode a `tools/call` or `tools/list` POST is answered directly, by a runner of its own
(converter.server.direct_calls); everything else goes the SDK's way. Byte-for-byte equality with
the SDK's own path: tests/test_direct_calls.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client

import mock_api
from tests.integration.conftest import _free_port
from tests.integration.test_inspector_cli import TOOL_NAMES, inspector, parse
from tests.integration.test_mcp_upstream import Gateway, connect, serve, text_of  # noqa: F401 - a fixture
from tests.integration.test_step_up import mcp_remote

if TYPE_CHECKING:
    from conftest import MockApi

pytestmark = [pytest.mark.integration]

ALICE = {"id": "u1", "name": "Alice Johnson", "email": "alice@example.com"}


@pytest.fixture(scope="module")
def stateless(serve: Callable[..., Gateway], mock_api_url: str) -> Gateway:  # noqa: F811
    return serve("stateless", {"spec": str(mock_api.SPEC_PATH), "upstream": {"url": mock_api_url},
                               "server": {"stateless": True}})


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_sdk_client_lists_and_calls_tools_in_both_eras(stateless: Gateway, mock_api: MockApi,
                                                                 mode: str) -> None:
    async with connect(stateless.url, mode=mode) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOL_NAMES
        for _ in range(3):
            result = await client.call_tool("getUser", {"userId": "u1"})
            assert not result.is_error and json.loads(text_of(result)) == ALICE
        bad = await client.call_tool("getUser", {"userId": 7})
        assert bad.is_error
    assert [entry["path"] for entry in mock_api.requests()] == ["/marketplace/users/u1"] * 3


def test_the_inspector_cli_lists_and_calls_tools(stateless: Gateway, node_bin: Path, mock_api: MockApi,
                                                 tmp_path: Path) -> None:
    listed = parse(inspector(node_bin, stateless.url, tmp_path, "--method", "tools/list"))
    assert {tool["name"] for tool in listed["tools"]} == TOOL_NAMES
    called = parse(inspector(node_bin, stateless.url, tmp_path, "--method", "tools/call", "--tool-name", "getUser",
                             "--tool-arg", "userId=u1"))
    assert called["structuredContent"] == ALICE and not called.get("isError", False)


@pytest.mark.anyio
async def test_mcp_remote_lists_and_calls_tools(stateless: Gateway, node_bin: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with anyio.fail_after(60):
        async with Client(stdio_client(mcp_remote(stateless.url, home, _free_port()))) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == TOOL_NAMES
            result = await client.call_tool("getUser", {"userId": "u1"})
    assert not result.is_error and json.loads(text_of(result)) == ALICE
