"""MCP tasks (2025-11-25) and upstream log messages through the passthrough, against real peers:
server-everything's `simulate-research-query` (`execution.taskSupport: required`, SDK tasks in
TypeScript) behind `openapi-mcp serve`, driven by the official Python SDK client, the Inspector
CLI, and the real authorization server for the binding of a task to the token that made it.

The Python SDK 2.3 client has no task API (its `call_tool` insists on a `CallToolResult`), so the
task requests go as raw JSON-RPC requests on the SDK client's own session (`raw` below).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import ElicitRequestParams, ElicitResult, LoggingMessageNotificationParams

from tests.integration.authserver import GATEWAY, SVC_ADMIN, SVC_USER, AuthServer
from tests.integration.conftest import _free_port
from tests.integration.test_inspector_cli import inspector, parse
from tests.integration.test_mcp_upstream import (  # noqa: F401 - fixtures
    Gateway,
    Upstream,
    connect,
    everything,
    headers_upstream,
    serve,
    text_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TASK_TOOL = "simulate-research-query"
NOT_FOUND = "Failed to retrieve task: Task not found"
RELATED_TASK = "io.modelcontextprotocol/related-task"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def raw(client: Client, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC request on the client's session, its result as sent (see the module docstring)."""
    result: dict[str, Any] = await client.session._dispatcher.send_raw_request(method, params, {})
    return result


async def refused(client: Client, method: str, params: dict[str, Any]) -> MCPError:
    with pytest.raises(MCPError) as exc:
        await raw(client, method, params)
    return exc.value


async def create(client: Client, topic: str, **arguments: Any) -> dict[str, Any]:
    created = await raw(client, "tools/call", {"name": TASK_TOOL, "arguments": {"topic": topic, **arguments},
                                               "task": {"ttl": 60000}})
    task: dict[str, Any] = created["task"]
    return task


async def wait_done(client: Client, task_id: str) -> list[str]:
    """Poll tasks/get until the task ends; the statuses seen."""
    seen: list[str] = []
    with anyio.fail_after(30):
        while True:
            task = await raw(client, "tasks/get", {"taskId": task_id})
            assert task["taskId"] == task_id
            seen.append(task["status"])
            if task["status"] in ("completed", "failed", "cancelled"):
                return seen
            await anyio.sleep(task.get("pollInterval", 1000) / 1000)


@pytest.fixture(scope="module")
def open_gateway(serve: Callable[..., Gateway], everything: Upstream) -> Gateway:  # noqa: F811
    return serve("tasks-open", {"mcp_upstream": everything.url})


async def test_a_task_tool_runs_as_a_task_and_only_its_session_sees_it(open_gateway: Gateway) -> None:
    async with connect(open_gateway.url) as client, connect(open_gateway.url) as other:
        tasks = client.server_capabilities.tasks
        assert tasks is not None and tasks.requests is not None and tasks.requests.tools is not None
        tool = next(t for t in (await client.list_tools()).tools if t.name == TASK_TOOL)
        # The gateway runs a plain call as a task upstream, so it serves the tool as `optional`.
        assert tool.execution is not None and tool.execution.task_support == "optional"
        task = await create(client, "python")
        assert task["status"] == "working" and task["ttl"] == 300000 and len(task["taskId"]) == 32  # upstream ttl
        # Auth is off: the task is bound to the MCP session that made it.
        assert (await refused(other, "tasks/get", {"taskId": task["taskId"]})).message == NOT_FOUND
        assert (await raw(other, "tasks/list", {}))["tasks"] == []
        seen = await wait_done(client, task["taskId"])
        assert seen[-1] == "completed" and "working" in seen
        result = await raw(client, "tasks/result", {"taskId": task["taskId"]})
        assert "# Research Report: python" in result["content"][0]["text"]
        assert result["_meta"][RELATED_TASK] == {"taskId": task["taskId"]}  # our id, not the upstream's
        listed = (await raw(client, "tasks/list", {}))["tasks"]
        assert [(t["taskId"], t["status"]) for t in listed] == [(task["taskId"], "completed")]
        assert (await refused(other, "tasks/result", {"taskId": task["taskId"]})).message == NOT_FOUND
        assert (await refused(client, "tasks/get", {"taskId": "made-up"})).code == -32602


async def test_a_task_can_be_cancelled_once_and_a_plain_tool_refuses_a_task(open_gateway: Gateway) -> None:
    async with connect(open_gateway.url) as client:
        task = await create(client, "slow things")
        cancelled = await raw(client, "tasks/cancel", {"taskId": task["taskId"]})
        assert (cancelled["taskId"], cancelled["status"]) == (task["taskId"], "cancelled")
        assert (await refused(client, "tasks/cancel", {"taskId": task["taskId"]})).code == -32602  # terminal
        refusal = await refused(client, "tools/call", {"name": "echo", "arguments": {"message": "x"}, "task": {}})
        assert (refusal.code, refusal.message) == (-32601, "Tool 'echo' does not support tasks")
        assert (await refused(client, "tools/call", {"name": "nope", "arguments": {}, "task": {}})).code == -32602


async def test_a_plain_call_of_the_task_tool_waits_for_its_result(open_gateway: Gateway) -> None:
    async with connect(open_gateway.url) as client:
        result = await client.call_tool(TASK_TOOL, {"topic": "rust"})
    assert not result.is_error and text_of(result).startswith("# Research Report: rust")
    assert result.meta is None or RELATED_TASK not in result.meta  # a plain call knows of no task


def test_the_inspector_cli_calls_the_task_tool_through_the_gateway(open_gateway: Gateway, node_bin: Path,
                                                                    tmp_path: Path) -> None:
    result = parse(inspector(node_bin, open_gateway.url, tmp_path, "--method", "tools/call",
                             "--tool-name", TASK_TOOL, "--tool-arg", "topic=go"))
    assert result["isError"] is False and result["content"][0]["text"].startswith("# Research Report: go")


async def test_an_elicitation_of_an_input_required_task_reaches_the_caller_during_tasks_result(
        serve: Callable[..., Gateway], everything: Upstream) -> None:  # noqa: F811
    gateway = serve("tasks-elicit", {"mcp_upstream": {"url": everything.url, "relay": ["elicitation"]}})
    asked: list[ElicitRequestParams] = []

    async def elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params)
        return ElicitResult(action="accept", content={"interpretation": "snake"})

    async with connect(gateway.url, elicitation_callback=elicit) as client:
        task = await create(client, "python", ambiguous=True)
        with anyio.fail_after(30):
            while (await raw(client, "tasks/get", {"taskId": task["taskId"]}))["status"] != "input_required":
                await anyio.sleep(0.3)
        result = await raw(client, "tasks/result", {"taskId": task["taskId"]})
    assert len(asked) == 1 and "could have multiple interpretations" in asked[0].message
    assert asked[0].meta is not None and asked[0].meta[RELATED_TASK] == {"taskId": task["taskId"]}
    assert "# Research Report: python (snake)" in result["content"][0]["text"]


async def test_a_task_belongs_to_the_token_that_made_it(
        serve: Callable[..., Gateway], everything: Upstream,  # noqa: F811
        start_auth_server: Callable[..., AuthServer]) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    idp = start_auth_server([url])
    gateway = serve("tasks-auth", {
        "mcp_upstream": everything.url,
        "auth": {"resource": url, "authorization_servers": [idp.issuer],
                 "introspection_endpoint": idp.introspection_endpoint,
                 "client_id": GATEWAY[0], "client_secret": "${CLIENT_SECRET}"},
        "acl": {"rules": [{"features": ["tools"], "name": {"type": "literal", "pattern": "echo"}},
                          {"features": ["tools"], "name": {"type": "literal", "pattern": TASK_TOOL},
                           "when": "'admin' in claims.realm_access.roles"}]},
    }, port=port, CLIENT_SECRET=GATEWAY[1])
    admin, user = idp.token(*SVC_ADMIN, resource=url), idp.token(*SVC_USER, resource=url)
    async with connect(gateway.url, token=admin) as client:
        task = await create(client, "owners")
    async with connect(gateway.url, token=user) as client:  # another principal: an unknown task
        for method in ("tasks/get", "tasks/result", "tasks/cancel"):
            assert (await refused(client, method, {"taskId": task["taskId"]})).message == NOT_FOUND
        assert (await raw(client, "tasks/list", {}))["tasks"] == []
        refusal = await refused(client, "tools/call", {"name": TASK_TOOL, "arguments": {"topic": "x"}, "task": {}})
        assert refusal.message == f"Unknown tool: {TASK_TOOL!r}"  # the access rules hold for tasks too
    async with connect(gateway.url, token=admin) as client:  # the same principal, a new session: its task
        assert (await wait_done(client, task["taskId"]))[-1] == "completed"
        assert [t["taskId"] for t in (await raw(client, "tasks/list", {}))["tasks"]] == [task["taskId"]]


async def test_upstream_log_messages_during_a_call_reach_the_calling_client(
        serve: Callable[..., Gateway], headers_upstream: Upstream) -> None:  # noqa: F811
    gateway = serve("passthrough-logs", {"mcp_upstream": headers_upstream.url})
    heard: list[LoggingMessageNotificationParams] = []

    async def logged(params: LoggingMessageNotificationParams) -> None:
        heard.append(params)

    async with connect(gateway.url, logging_callback=logged) as client:
        assert client.server_capabilities.logging is not None
        assert text_of(await client.call_tool("log_twice", {})) == "logged"
        assert [(p.level, p.data, p.logger) for p in heard] == [("info", "starting", "headers"),
                                                                 ("debug", "details", "headers")]
        await raw(client, "logging/setLevel", {"level": "info"})  # (the SDK call warns: deprecated in 2026)
        heard.clear()
        await client.call_tool("log_twice", {})
        assert [p.data for p in heard] == ["starting"]


async def test_the_upstreams_task_status_notifications_reach_the_client_that_made_the_task(
        open_gateway: Gateway) -> None:
    """server-everything sends `notifications/tasks/status` on its GET stream; the gateway passes
    them to the creating client's GET stream, with its own task id. (The Python SDK client drops
    notifications outside its unions, so this client is plain HTTP with httpx2's SSE reader.)"""
    import httpx2

    url = open_gateway.url
    base = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"}

    async def answer(response: httpx2.Response) -> dict[str, Any]:
        if response.headers.get("content-type", "").startswith("application/json"):  # a client takes either
            found: dict[str, Any] = json.loads(await response.aread())
            return found
        async for event in httpx2.EventSource(response):
            if event.data.strip():
                found = json.loads(event.data)
                return found
        raise AssertionError("no answer")

    statuses: list[dict[str, Any]] = []
    async with httpx2.AsyncClient(timeout=30) as http:
        async with http.stream("POST", url, headers=base, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                               "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                          "clientInfo": {"name": "raw", "version": "1"}}}) as init:
            await answer(init)
            session = {**base, "mcp-session-id": init.headers["mcp-session-id"]}
        await http.post(url, headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})

        async def listen() -> None:
            async with http.stream("GET", url, headers={**session, "accept": "text/event-stream"}) as stream:
                async for event in httpx2.EventSource(stream):
                    message = json.loads(event.data) if event.data.strip() else {}
                    if message.get("method") == "notifications/tasks/status":
                        statuses.append(message["params"])
                        if message["params"]["status"] == "completed":
                            return

        async with anyio.create_task_group() as group:
            group.start_soon(listen)
            await anyio.sleep(0.5)  # the GET stream is open
            async with http.stream("POST", url, headers=session, json={
                    "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": TASK_TOOL, "arguments": {"topic": "notes"}, "task": {}}}) as created:
                task_id = (await answer(created))["result"]["task"]["taskId"]
            with anyio.fail_after(30):
                while not statuses or statuses[-1]["status"] != "completed":
                    await anyio.sleep(0.2)
            group.cancel_scope.cancel()
    assert {s["taskId"] for s in statuses} == {task_id}  # ours, never the upstream's
    assert "working" in [s["status"] for s in statuses] and statuses[-1]["status"] == "completed"
