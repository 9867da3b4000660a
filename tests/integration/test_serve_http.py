"""`openapi-mcp serve` as a real process, driven by the official SDK client, in front of the real mock.

Every request a tool sends must pass the mock's openapi-core validation, and the client's
`Authorization` header must never reach it (MCP forbids token passthrough).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

if TYPE_CHECKING:
    from conftest import McpServer, MockApi

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TOKEN = "secret-client-token"
MODES = pytest.mark.parametrize("mode", ["legacy", "auto"])
TOOL_NAMES = {
    "getApiInfo", "listUsers", "getUser", "getUserAvatar", "listUserOrders", "createOrder",
    "updateOrder", "deleteOrder", "listOrdersByUser", "searchOrders",
}
ALICE = {"id": "u1", "name": "Alice Johnson", "email": "alice@example.com"}


@asynccontextmanager
async def connect(url: str, *, mode: str = "auto") -> AsyncIterator[Client]:
    """An SDK client over streamable HTTP whose every request carries `Authorization: Bearer ...`."""
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


def text_of(result: CallToolResult) -> str:
    """The text of a result's first content block, which must be text."""
    first = result.content[0]
    assert isinstance(first, TextContent), first
    return first.text


async def call_ok(client: Client, name: str, arguments: dict[str, Any]) -> Any:
    """Call a tool that must succeed; return its JSON text parsed."""
    result = await client.call_tool(name, arguments)
    assert not result.is_error, result.content
    return json.loads(text_of(result))


def accepted(mock_api: MockApi) -> list[dict[str, Any]]:
    """The mock's request log, after checking that each request conformed and carried no credentials."""
    entries = mock_api.requests()
    for entry in entries:
        where = f"{entry['method']} {entry['path']}?{entry['query']}"
        assert entry["validation"]["outcome"] == "valid", (where, entry["validation"])
        assert entry["status"] != 400, where
        assert "authorization" not in entry["headers"], where
        assert all(TOKEN not in value for value in entry["headers"].values()), where
    return entries


def is_valid_png(data: bytes) -> bool:
    """PNG signature, then well-formed chunks with correct CRCs, IHDR first and IEND last."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    offset, kinds = 8, []
    while offset + 12 <= len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind = data[offset + 4:offset + 8]
        payload = data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        if len(payload) != length or zlib.crc32(kind + payload) != crc:
            return False
        kinds.append(kind)
        offset += 12 + length
    return offset == len(data) and kinds[:1] == [b"IHDR"] and kinds[-1:] == [b"IEND"]


@MODES
async def test_tools_list_names_every_operation_in_meta(mcp_server_url: str, mode: str) -> None:
    async with Client(mcp_server_url, mode=mode) as client:
        is_modern = client.session.protocol_version in MODERN_PROTOCOL_VERSIONS
        tools = (await client.list_tools()).tools
    assert is_modern is (mode == "auto")
    assert {tool.name for tool in tools} == TOOL_NAMES
    for tool in tools:
        operation = (tool.meta or {})["openapi-mcp/operation"]
        assert operation["operationId"] == tool.name
        assert operation["method"] in {"GET", "POST", "PUT", "DELETE"}
        assert operation["path"].startswith("/")
    by_name = {tool.name: tool for tool in tools}
    assert (by_name["getUser"].meta or {})["openapi-mcp/operation"] == {
        "method": "GET", "path": "/marketplace/users/{userId}", "operationId": "getUser",
    }


@MODES
async def test_get_user_returns_text_and_structured_content(mcp_server_url: str, mock_api: MockApi, mode: str) -> None:
    async with connect(mcp_server_url, mode=mode) as client:
        result = await client.call_tool("getUser", {"userId": "u1"})
    assert not result.is_error
    assert result.structured_content == ALICE
    assert json.loads(text_of(result)) == ALICE
    [entry] = accepted(mock_api)
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/marketplace/users/u1", 200)


async def test_list_tools_send_query_and_path_parameters(mcp_server_url: str, mock_api: MockApi) -> None:
    async with connect(mcp_server_url) as client:
        users = await call_ok(client, "listUsers", {})
        only_alice = await call_ok(client, "listUsers", {"id": "u1"})
        by_path = await call_ok(client, "listUserOrders", {"userId": "u1"})
        by_query = await call_ok(client, "listOrdersByUser", {"userid": "u1"})
    assert len(users) == 5
    assert only_alice == [ALICE]
    assert [order["id"] for order in by_path] == ["o1001", "o1002", "o1003"]
    assert by_query == by_path
    sent = [(e["method"], e["path"], e["query"]) for e in accepted(mock_api)]
    assert sent == [
        ("GET", "/marketplace/users", ""),
        ("GET", "/marketplace/users", "id=u1"),
        ("GET", "/marketplace/u1/orders", ""),
        ("GET", "/marketplace/orders", "userid=u1"),
    ]


async def test_order_lifecycle_create_update_delete(mcp_server_url: str, mock_api: MockApi) -> None:
    async with connect(mcp_server_url) as client:
        created = await call_ok(client, "createOrder", {
            "userId": "u2", "item": "Standing desk", "quantity": 1, "price": 399.5, "note": None,
        })
        listed = await call_ok(client, "listUserOrders", {"userId": "u2"})
        updated = await call_ok(client, "updateOrder", {
            "userId": "u2", "orderId": created["id"], "quantity": 2, "note": "Ring twice",
        })
        deleted = await client.call_tool("deleteOrder", {"userId": "u2", "orderId": created["id"]})
        after = await call_ok(client, "listUserOrders", {"userId": "u2"})
    assert created["status"] == "pending"
    assert (created["item"], created["quantity"], created["price"]) == ("Standing desk", 1, 399.5)
    assert created in listed
    assert (updated["id"], updated["quantity"], updated["note"], updated["item"]) == (
        created["id"], 2, "Ring twice", "Standing desk",
    )
    assert not deleted.is_error, deleted.content
    assert created["id"] not in [order["id"] for order in after]
    entries = accepted(mock_api)
    assert [(e["method"], e["status"]) for e in entries] == [
        ("POST", 201), ("GET", 200), ("PUT", 200), ("DELETE", 204), ("GET", 200),
    ]
    assert json.loads(entries[0]["body"]) == {"item": "Standing desk", "quantity": 1, "price": 399.5, "note": None}
    assert entries[0]["headers"]["content-type"].startswith("application/json")
    assert json.loads(entries[2]["body"]) == {"quantity": 2, "note": "Ring twice"}


async def test_search_orders_serializes_arrays_deep_objects_and_headers(mcp_server_url: str, mock_api: MockApi) -> None:
    arguments = {
        "tags": ["keyboard", "mouse"], "status": ["shipped", "delivered"],
        "filter": {"minPrice": 10, "maxPrice": 100}, "sort": ["-price", "createdAt"], "limit": 5,
        "X-Request-Id": "req-42",
    }
    async with connect(mcp_server_url) as client:
        result = await client.call_tool("searchOrders", arguments)
    assert not result.is_error, result.content
    found = result.structured_content
    assert found is not None
    assert found["query"] == {
        "tags": ["keyboard", "mouse"], "status": ["shipped", "delivered"],
        "filter": {"minPrice": 10, "maxPrice": 100}, "sort": ["-price", "createdAt"], "limit": 5,
        "requestId": "req-42",
    }
    # keyboard 89.99 (delivered), wireless mouse 24.5 and mouse pad 12.99 (both shipped), by price descending
    assert [order["id"] for order in found["orders"]] == ["o1001", "o1002", "o1013"]
    [entry] = accepted(mock_api)
    assert entry["headers"]["x-request-id"] == "req-42"


async def test_avatar_comes_back_as_png_image_content(mcp_server_url: str, mock_api: MockApi) -> None:
    async with connect(mcp_server_url) as client:
        result = await client.call_tool("getUserAvatar", {"userId": "u3"})
    assert not result.is_error, result.content
    [image] = result.content
    assert image.type == "image"
    assert image.mime_type == "image/png"
    assert is_valid_png(base64.b64decode(image.data, validate=True))
    accepted(mock_api)


async def test_client_authorization_is_not_forwarded_upstream(mcp_server_url: str, mock_api: MockApi) -> None:
    async with connect(mcp_server_url) as client:
        info = await call_ok(client, "getApiInfo", {})
    assert "name" in info
    [entry] = accepted(mock_api)  # checks the header is absent and the token appears nowhere
    assert entry["path"] == "/"


@pytest.mark.parametrize(("tool", "arguments", "named"), [
    ("getUser", {}, "userId"),
    ("createOrder", {"userId": "u1", "item": "Pen", "quantity": 0, "price": 1}, "quantity"),
    ("searchOrders", {"limit": 1000}, "limit"),
    ("searchOrders", {"status": ["lost"]}, "status"),
    ("updateOrder", {"userId": "u1", "orderId": "o1001", "colour": "red"}, "colour"),
])
async def test_invalid_arguments_are_tool_errors_and_nothing_is_sent(
    mcp_server_url: str, mock_api: MockApi, tool: str, arguments: dict[str, Any], named: str,
) -> None:
    async with connect(mcp_server_url) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert named in text_of(result)
    assert mock_api.requests() == []


@MODES
async def test_unknown_tool_is_a_protocol_error(mcp_server_url: str, mock_api: MockApi, mode: str) -> None:
    async with Client(mcp_server_url, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("noSuchTool", {})
    assert caught.value.code == -32602
    assert "noSuchTool" in caught.value.message
    assert mock_api.requests() == []


async def test_upstream_404_is_a_tool_error_with_the_status(mcp_server_url: str, mock_api: MockApi) -> None:
    async with connect(mcp_server_url) as client:
        result = await client.call_tool("getUser", {"userId": "u42"})
    assert result.is_error
    text = text_of(result)
    assert "404" in text
    assert "u42" in text  # the mock's error body is excerpted
    [entry] = accepted(mock_api)
    assert entry["status"] == 404


@pytest.fixture(scope="module")
def server_without_upstream(start_server: Callable[..., McpServer], free_port: Callable[[], int]) -> McpServer:
    """A second server whose upstream is a loopback port nobody listens on."""
    return start_server(upstream=f"http://127.0.0.1:{free_port()}")


async def test_upstream_down_says_cannot_connect(server_without_upstream: McpServer) -> None:
    async with connect(server_without_upstream.url) as client:
        result = await client.call_tool("getUser", {"userId": "u1"})
    assert result.is_error
    text = text_of(result)
    assert "cannot connect" in text
    assert "timed out" not in text  # a refused connection is not a timeout (httpx-aiohttp says ConnectTimeout)


async def test_server_keeps_serving_while_upstream_is_down(server_without_upstream: McpServer) -> None:
    async with connect(server_without_upstream.url) as client:
        first = await client.call_tool("getUser", {"userId": "u1"})
        second = await client.call_tool("listUsers", {})
        tools = (await client.list_tools()).tools
    assert first.is_error and second.is_error
    assert "127.0.0.1" in text_of(first)
    assert len(tools) == len(TOOL_NAMES)
    health = httpx.get(f"{server_without_upstream.base_url}/healthz", trust_env=False)
    assert health.json() == {"status": "ok", "tools": len(TOOL_NAMES)}
    assert server_without_upstream.process.popen.poll() is None


async def test_stdio_transport_lists_and_calls_tools(
    mock_api: MockApi, tmp_path: Path, openapi_mcp_command: str, spec_path: Path,
) -> None:
    params = StdioServerParameters(
        command=openapi_mcp_command, args=["serve", str(spec_path), "--transport", "stdio", "--upstream", mock_api.url],
    )
    log_path = tmp_path / "stdio-server.log"
    failure = None
    try:
        with log_path.open("w") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                tools = (await client.list_tools()).tools
                result = await client.call_tool("getUser", {"userId": "u1"})
    except Exception as exc:  # the SDK's ExceptionGroup says little: show the server's stderr instead
        failure = repr(exc)
    if failure is not None:
        pytest.fail(f"stdio session failed: {failure}\n--- server stderr ---\n{log_path.read_text()}", pytrace=False)
    assert {tool.name for tool in tools} == TOOL_NAMES
    assert not result.is_error, result.content
    assert result.structured_content == ALICE
    assert [e["path"] for e in accepted(mock_api)] == ["/marketplace/users/u1"]


async def test_page_size_flag_pages_tools_list_over_http(start_server: Callable[..., McpServer]) -> None:
    server = start_server(extra=["--page-size", "3"])
    async with connect(server.url) as client:
        pages, cursor = [], None
        while True:
            page = await client.list_tools(cursor=cursor)
            pages.append([tool.name for tool in page.tools])
            cursor = page.next_cursor
            if cursor is None:
                break
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert {name for p in pages for name in p} == TOOL_NAMES
