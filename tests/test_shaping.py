"""Response shaping (config `responses:`): JMESPath filters and a size limit, through the SDK client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.types import TextContent

import mock_api
from converter.catalog import build_catalog
from converter.config import ResponseSettings, load_settings
from converter.errors import ConfigError
from converter.invoke.result import map_response
from converter.invoke.upstream import UpstreamResponse
from converter.server.app import build_server
from converter.tools.shaping import shaping_for

pytestmark = pytest.mark.anyio



@asynccontextmanager
async def serve(tmp_path, responses: dict[str, Any]) -> AsyncIterator[tuple[Client, Any]]:
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                  "responses": responses}))
    upstream = mock_api.create_app()
    catalog = build_catalog(load_settings(str(config)), transport=httpx.ASGITransport(app=upstream))
    async with catalog, Client(build_server(catalog)) as client:
        yield client, upstream


async def upstream_calls(app) -> int:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mock.test") as http:
        return len((await http.get("/__mock/requests")).json())


def text(result) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


async def test_the_filter_argument_selects_part_of_the_answer(tmp_path) -> None:
    async with serve(tmp_path, {"filter_argument": True}) as (client, _):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        list_users = tools["listUsers"]
        assert list_users.input_schema["properties"]["response_filter"]["type"] == "string"
        assert "response_filter" not in list_users.input_schema.get("required", [])
        branches = list_users.output_schema["anyOf"]
        assert branches[1]["required"] == ["filtered"] and "$defs" in list_users.output_schema
        whole = await client.call_tool("listUsers", {})
        assert not whole.is_error and len(whole.structured_content["result"]) >= 2
        # The SDK client validates structured content against the declared outputSchema: both shapes pass.
        names = await client.call_tool("listUsers", {"response_filter": "[].name"})
        assert not names.is_error, text(names)
        assert names.structured_content == {"filtered": [user["name"] for user in whole.structured_content["result"]]}
        assert json.loads(text(names)) == names.structured_content["filtered"]
        one = await client.call_tool("getUser", {"userId": "u1", "response_filter": "{who: name}"})
        assert one.structured_content == {"filtered": {"who": "Alice Johnson"}}


async def test_a_bad_filter_is_refused_before_calling(tmp_path) -> None:
    async with serve(tmp_path, {"filter_argument": "jq"}) as (client, upstream):
        result = await client.call_tool("listUsers", {"jq": "[].name)"})
        assert result.is_error
        assert text(result).startswith("Invalid arguments for tool 'listUsers' at $.jq: not a valid JMESPath")
        result = await client.call_tool("listUsers", {"jq": 3})
        assert result.is_error and "must be a JMESPath expression" in text(result)
        assert await upstream_calls(upstream) == 0
        failed = await client.call_tool("listUsers", {"jq": "abs([0].name)"})  # valid, fails on the data
        assert failed.is_error and text(failed).startswith("The response filter failed on the answer of GET /marketplace/users: In function abs()")


async def test_an_answer_over_max_bytes_is_refused_with_a_way_out(tmp_path) -> None:
    async with serve(tmp_path, {"max_bytes": 120, "filter_argument": True}) as (client, _):
        big = await client.call_tool("listUsers", {})
        assert big.is_error
        message = text(big)
        assert "over this server's limit of 120 bytes" in message and "`response_filter`" in message
        assert "Its start: [" in message
        small = await client.call_tool("listUsers", {"response_filter": "[0].id"})
        assert not small.is_error and small.structured_content == {"filtered": "u1"}


async def test_a_fixed_filter_per_tool_glob(tmp_path) -> None:
    responses = {"tools": {"list*": {"filter": "[].{id: id}"}, "getUser": {"max_bytes": 10}}}
    async with serve(tmp_path, responses) as (client, _):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert tools["listUsers"].output_schema is None  # the shape is not the spec's any more
        assert tools["getUser"].output_schema is not None
        assert "response_filter" not in tools["listUsers"].input_schema["properties"]
        result = await client.call_tool("listUsers", {})
        assert not result.is_error and json.loads(text(result))[0] == {"id": "u1"}
        assert result.structured_content is None
        too_big = await client.call_tool("getUser", {"userId": "u1"})
        assert too_big.is_error and "over this server's limit of 10 bytes" in text(too_big)
        assert "Narrow the request" in text(too_big)


def test_config_errors_name_the_key(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"spec: {mock_api.SPEC_PATH}\nresponses: {{tools: {{listUsers: {{filter: '[].'}}}}}}\n")
    with pytest.raises(ConfigError, match=r"responses\.tools\.listUsers\.filter: .*not a valid JMESPath"):
        load_settings(str(config))
    config.write_text(f"spec: {mock_api.SPEC_PATH}\nresponses: {{max_bytes: 0}}\n")
    with pytest.raises(ConfigError, match=r"responses\.max_bytes"):
        load_settings(str(config))
    config.write_text(f"spec: {mock_api.SPEC_PATH}\nresponses: {{filter_argument: 'a b'}}\n")
    with pytest.raises(ConfigError, match=r"responses\.filter_argument"):
        load_settings(str(config))


def test_the_argument_never_shadows_an_operation_argument() -> None:
    shaping = shaping_for(ResponseSettings(filter_argument=True), "t", {"response_filter": {}, "_response_filter": {}})
    assert shaping is not None and shaping.argument == "__response_filter"
    assert shaping_for(ResponseSettings(), "t", {}) is None


def test_plain_text_is_cut_and_a_filter_on_it_is_reported() -> None:
    shaping = shaping_for(ResponseSettings(max_bytes=5, filter_argument=True), "t", {})

    class Plan:
        method, path, output_schema, wraps_result = "GET", "/t", None, False
        tool = None

    Plan.shaping = shaping
    response = UpstreamResponse(status=200, reason="OK", content_type="text/plain", body="héllo world".encode(),
                                truncated=False, elapsed=0.0, url="http://x/t")
    result = map_response(response, Plan, None)
    assert text(result).startswith("héll\n[cut: the response is 12 bytes")
    chosen = shaping.take_expression({"response_filter": "a"}, "t")[1]
    assert "[response_filter not applied: the response is text/plain, not JSON]" in text(map_response(response, Plan, chosen))


async def test_dynamic_mode_describes_and_applies_the_filter(tmp_path) -> None:
    from converter.catalog.dynamic import CALL, DESCRIBE, build_served_catalog

    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                  "mode": "dynamic", "responses": {"filter_argument": True}}))
    dynamic = build_served_catalog(load_settings(str(config)),
                                   transport=httpx.ASGITransport(app=mock_api.create_app()))
    async with dynamic, Client(build_server(dynamic)) as client:
        described = json.loads(text(await client.call_tool(DESCRIBE, {"name": "listUsers"})))
        assert "response_filter" in json.dumps(described)
        result = await client.call_tool(CALL, {"name": "listUsers", "arguments": {"response_filter": "[0].name"}})
        assert not result.is_error, text(result)
        assert "Alice Johnson" in text(result) and "alice@example.com" not in text(result)
