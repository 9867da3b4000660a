"""`Mcp-Param-*` checks of 2026-07-28 `tools/call`s without a `tools/list` per call
(converter/server/header_schemas.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import mcp.types as types
import pytest
from mcp.server import Server

from converter.policy.decision import Policy
from converter.server.header_schemas import HeaderSchemas, annotated
from tests.test_direct_calls import served

pytestmark = pytest.mark.anyio
VERSION = "2026-07-28"
MODERN = {"content-type": "application/json", "accept": "application/json, text/event-stream",
          "mcp-protocol-version": VERSION, "mcp-method": "tools/call", "mcp-name": "getUser"}
META = {"io.modelcontextprotocol/protocolVersion": VERSION, "io.modelcontextprotocol/clientCapabilities": {}}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "getUser", "arguments": {"userId": "u1"}, "_meta": META}}
REGION = {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_modern_call_runs_no_tools_list_and_is_answered_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    async with served(direct=True) as (app, client):
        listed: list[Any] = []
        catalog = app.state.catalog
        original = catalog.visible_tools

        async def counting(principal: Any) -> Any:
            listed.append(principal)
            return await original(principal)

        monkeypatch.setattr(catalog, "visible_tools", counting)  # what every tools/list asks first
        answers = []
        for _ in range(2):
            answer = await client.post("/mcp", headers={**MODERN, "mcp-param-stray": "x"}, content=json.dumps(CALL))
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
            app.state.session_manager.app.get_tool_input_schema = None  # then the SDK's own lookup
        assert len(listed) == 1  # the SDK's lookup ran a whole tools/list; ours none
        assert answers[0] == answers[1] and answers[0]["result"]["structuredContent"]["name"] == "Alice Johnson"


@dataclass
class Catalog:
    """What HeaderSchemas reads of a served catalog."""

    list_result: types.ListToolsResult
    policy: Policy = field(default_factory=Policy)
    listeners: list[Any] = field(default_factory=list)
    on_swap: list[Any] = field(default_factory=list)


def tools(*named: tuple[str, dict[str, Any]]) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[types.Tool(name=name, input_schema=schema) for name, schema in named])


async def test_annotated_schemas_answer_when_no_tool_can_be_hidden_else_the_sdk_looks_them_up() -> None:
    server: Server[Any] = Server("t")
    catalog = Catalog(tools(("plain", {"type": "object"}), ("routed", REGION)))
    schemas = HeaderSchemas.install(server, catalog)  # type: ignore[arg-type]
    lookup = server.get_tool_input_schema
    assert lookup is not None and lookup("routed") == REGION and lookup("plain") is None and lookup("nope") is None

    catalog.policy = Policy(tool_scopes={"routed": (frozenset({"admin"}),)})  # a caller may not see it
    for hook in catalog.on_swap:  # a reload with access rules
        hook(catalog)
    assert server.get_tool_input_schema is None  # the SDK's own lookup, scoped to the caller

    catalog.list_result = tools(("plain", {"type": "object"}))  # the annotated tool is gone
    await schemas.changed(frozenset({"tools"}))
    lookup = server.get_tool_input_schema
    assert lookup is not None and lookup("routed") is None

    catalog.policy = Policy()
    catalog.list_result = tools(("routed", REGION))  # a change nobody announced: seen at the next call
    assert lookup("routed") == REGION
    catalog.policy = Policy(tool_scopes={"routed": (frozenset({"admin"}),)})
    catalog.list_result = tools(("routed", REGION))
    assert lookup("routed") is None and server.get_tool_input_schema is None


def test_an_annotation_is_found_wherever_it_is() -> None:
    assert annotated(REGION)
    assert annotated({"type": "object", "properties": {"a": {"anyOf": [{"type": "string", "x-mcp-header": "A"}]}}})
    assert annotated({"type": "object", "properties": {"x-mcp-header": {"type": "string"}}})  # counted: a superset
    assert not annotated({"type": "object", "description": "x-mcp-header"})
