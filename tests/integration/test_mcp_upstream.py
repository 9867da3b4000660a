"""Passthrough and aggregation against real processes: `@modelcontextprotocol/server-everything`
(streamable HTTP) behind `openapi-mcp serve --config`, driven by the official SDK client.

Each gateway is its own process with its own config (no ACL, ACL variants, auth with the real
authorization server, aggregation with the marketplace mock). A tiny SDK server
(`headers_mcp.py`) shows what the gateway sends upstream: the configured credentials, never
the client's token.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CallToolResult,
    PromptReference,
    ResourceListChangedNotification,
    TextContent,
)

from tests.integration.authserver import GATEWAY, SVC_ADMIN, SVC_USER, AuthServer
from tests.integration.conftest import NODE_DIR, ROOT, SPEC, Process, Processes, _free_port, _openapi_mcp

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

EVERYTHING = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
CLIENT_TOKEN = "client-token-that-must-stay-here"
UPSTREAM_CREDENTIAL = "Bearer upstream-credential"
STATIC_DOC = "demo://resource/static/document/features.md"
DYNAMIC_TEXT = "demo://resource/dynamic/text/1"


@dataclass(frozen=True)
class Upstream:
    url: str
    port: int
    process: Process


@dataclass(frozen=True)
class Gateway:
    url: str
    process: Process


def _wait_answering(process: Process, url: str, timeout: float = 20.0) -> None:
    """Poll until `url` answers HTTP at all (an MCP endpoint answers a bare GET with 4xx)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, trust_env=False, headers={"X-Probe": "readiness"}) as client:
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                break
            try:
                client.get(url)
                return
            except httpx.TransportError:
                time.sleep(0.05)
    pytest.fail(f"{process.name} did not answer at {url}\n{process.log()}", pytrace=False)


def start_everything(processes: Processes, name: str, port: int | None = None) -> Upstream:
    node = shutil.which("node")
    assert node is not None
    port = port or _free_port()
    process = processes.start(name, [node, "--import", str(NODE_DIR / "loopback.mjs"), str(EVERYTHING),
                                     "streamableHttp"], PORT=str(port))
    url = f"http://127.0.0.1:{port}/mcp"
    _wait_answering(process, url)
    return Upstream(url, port, process)


@pytest.fixture(scope="module")
def everything(processes: Processes, node_bin: Path) -> Upstream:
    """server-everything in streamable HTTP mode on a free loopback port, for the module."""
    return start_everything(processes, "server-everything")


@pytest.fixture(scope="module")
def serve(processes: Processes, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Gateway]:
    """Factory: `openapi-mcp serve --config` with the given config (a dict), ready when it returns."""
    tmp = tmp_path_factory.mktemp("passthrough")

    def start(name: str, config: dict[str, Any], *, port: int | None = None, **env: str) -> Gateway:
        port = port or _free_port()
        path = tmp / f"{name}.yaml"
        path.write_text(json.dumps({**config, "server": {**config.get("server", {}), "host": "127.0.0.1",
                                                          "port": port}}))
        process = processes.start(name, [_openapi_mcp(), "serve", "--config", str(path)], **env)
        process.wait_ready(f"http://127.0.0.1:{port}/healthz")
        return Gateway(f"http://127.0.0.1:{port}/mcp", process)

    return start


@asynccontextmanager
async def connect(url: str, *, token: str = CLIENT_TOKEN, mode: str = "legacy",
                  on_message: Any = None, **callbacks: Any) -> AsyncIterator[Client]:
    """The SDK client over streamable HTTP; every request carries `Authorization: Bearer <token>`.
    `callbacks`: the Client's own (elicitation_callback, logging_callback, ...)."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                  timeout=httpx2.Timeout(30, read=120)) as http, Client(
            streamable_http_client(url, http_client=http), mode=mode, message_handler=on_message,
            **callbacks) as client:
        yield client


def text_of(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent), first
    return first.text


async def listing(client: Client) -> dict[str, list[str]]:
    """What a client sees: tool, resource, template and prompt names."""
    return {
        "tools": [t.name for t in (await client.list_tools()).tools],
        "resources": [r.uri for r in (await client.list_resources()).resources],
        "templates": [t.uri_template for t in (await client.list_resource_templates()).resource_templates],
        "prompts": [p.name for p in (await client.list_prompts()).prompts],
    }


@pytest.fixture(scope="module")
def upstream_listing(everything: Upstream) -> dict[str, list[str]]:
    """What server-everything itself lists: every tool is relayed, tools that only run as tasks too."""
    async def fetch() -> dict[str, list[str]]:
        async with connect(everything.url) as client:
            return await listing(client)
    return anyio.run(fetch)


async def refused(call: Any) -> MCPError:
    with pytest.raises(MCPError) as exc:
        await call
    return exc.value


# -- no access rules: everything appears and works ------------------------------------------------

@pytest.fixture(scope="module")
def open_gateway(serve: Callable[..., Gateway], everything: Upstream) -> Gateway:
    return serve("passthrough-open", {"mcp_upstream": everything.url})


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_without_acl_every_tool_resource_template_and_prompt_appears(
        open_gateway: Gateway, upstream_listing: dict[str, list[str]], mode: str) -> None:
    async with connect(open_gateway.url, mode=mode) as client:
        seen = await listing(client)
        assert seen == upstream_listing
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= set(seen["tools"])
        assert client.server_capabilities.completions is not None


async def test_tools_resources_prompts_and_completions_work_through_the_gateway(open_gateway: Gateway) -> None:
    async with connect(open_gateway.url) as client:
        assert text_of(await client.call_tool("echo", {"message": "héllo"})) == "Echo: héllo"
        assert text_of(await client.call_tool("get-sum", {"a": 2, "b": 40})) == "The sum of 2 and 40 is 42."
        doc = await client.read_resource(STATIC_DOC)
        assert "Everything Server" in doc.contents[0].text  # type: ignore[union-attr]
        dynamic = await client.read_resource(DYNAMIC_TEXT)  # through a resource template
        assert dynamic.contents[0].text.startswith("Resource 1:")  # type: ignore[union-attr]
        prompt = await client.get_prompt("args-prompt", {"city": "Paris"})
        assert prompt.messages[0].content.text == "What's weather in Paris?"  # type: ignore[union-attr]
        completion = await client.complete(PromptReference(type="ref/prompt", name="completable-prompt"),
                                           {"name": "department", "value": "E"})
        assert completion.completion.values == ["Engineering"]
        team = await client.complete(PromptReference(type="ref/prompt", name="completable-prompt"),
                                     {"name": "name", "value": ""}, context_arguments={"department": "Sales"})
        assert team.completion.values == ["David", "Eve", "Frank"]
        # Unknown things are JSON-RPC errors, as from the upstream itself.
        assert (await refused(client.call_tool("no-such-tool", {}))).message == "Unknown tool: 'no-such-tool'"
        assert (await refused(client.read_resource("demo://nowhere"))).message == "Unknown resource: 'demo://nowhere'"
        assert (await refused(client.get_prompt("nope"))).message == "Unknown prompt: 'nope'"


async def test_progress_of_a_long_running_tool_reaches_the_client(open_gateway: Gateway) -> None:
    updates: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total))

    async with connect(open_gateway.url) as client:
        result = await client.call_tool("trigger-long-running-operation", {"duration": 0.6, "steps": 3},
                                        progress_callback=on_progress)
    assert "Long running operation completed" in text_of(result)
    assert updates == [(1, 3), (2, 3), (3, 3)]


async def test_an_upstream_list_change_reaches_the_client_and_the_list(
        serve: Callable[..., Gateway], everything: Upstream) -> None:
    gateway = serve("passthrough-changes", {"mcp_upstream": everything.url})
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceListChangedNotification):
            changed.set()

    async with connect(gateway.url, on_message=on_message) as client:
        before = [r.uri for r in (await client.list_resources()).resources]
        # This tool registers a new resource on the upstream, which then says its list changed.
        await client.call_tool("gzip-file-as-resource", {"name": "note.gz", "data": "data:text/plain;base64,aGk="})
        with anyio.fail_after(10):
            await changed.wait()
        after = [r.uri for r in (await client.list_resources()).resources]
    assert after == [*before, "demo://resource/session/note.gz"]


# -- access rules ------------------------------------------------------------------------------------

async def test_a_rule_allowing_only_tools_list_shows_every_tool_and_refuses_every_call(
        serve: Callable[..., Gateway], everything: Upstream, upstream_listing: dict[str, list[str]]) -> None:
    gateway = serve("passthrough-list-only", {"mcp_upstream": everything.url, "acl": {"rules": [
        {"features": ["tools"], "operations": ["list"]}]}})
    async with connect(gateway.url) as client:
        seen = await listing(client)
        assert seen == {"tools": upstream_listing["tools"], "resources": [], "templates": [], "prompts": []}
        for name in seen["tools"]:
            assert (await refused(client.call_tool(name, {}))).message == f"Unknown tool: {name!r}"


async def test_literal_rules_show_and_allow_exactly_what_they_name(
        serve: Callable[..., Gateway], everything: Upstream) -> None:
    gateway = serve("passthrough-literal", {"mcp_upstream": everything.url, "acl": {"rules": [
        {"features": ["tools"], "name": {"type": "literal", "pattern": "echo"}},
        {"features": ["prompts"], "name": {"type": "literal", "pattern": "simple-prompt"}},
        {"features": ["resources"], "operations": ["list", "read"],
         "name": {"type": "glob", "pattern": "demo://resource/static/*"}},
    ]}})
    async with connect(gateway.url) as client:
        seen = await listing(client)
        assert seen["tools"] == ["echo"] and seen["prompts"] == ["simple-prompt"] and seen["templates"] == []
        assert seen["resources"] and all(uri.startswith("demo://resource/static/") for uri in seen["resources"])
        assert text_of(await client.call_tool("echo", {"message": "ok"})) == "Echo: ok"
        assert (await client.read_resource(STATIC_DOC)).contents
        assert (await client.get_prompt("simple-prompt")).messages
        assert (await refused(client.call_tool("get-sum", {"a": 1, "b": 2}))).message == "Unknown tool: 'get-sum'"
        assert (await refused(client.read_resource(DYNAMIC_TEXT))).message == f"Unknown resource: {DYNAMIC_TEXT!r}"
        assert (await refused(client.get_prompt("args-prompt", {"city": "x"}))).message == "Unknown prompt: 'args-prompt'"
        missing = await refused(client.complete(PromptReference(type="ref/prompt", name="completable-prompt"),
                                                {"name": "department", "value": "E"}))
        assert missing.message == "Unknown prompt: 'completable-prompt'"


async def test_an_empty_acl_hides_everything_and_hidden_answers_like_missing(
        serve: Callable[..., Gateway], everything: Upstream) -> None:
    gateway = serve("passthrough-empty-acl", {"mcp_upstream": everything.url, "acl": {"rules": []}})
    async with connect(gateway.url) as client:
        assert await listing(client) == {"tools": [], "resources": [], "templates": [], "prompts": []}
        for exists, missing in ((client.call_tool("echo", {"message": "x"}), client.call_tool("nope", {})),
                                (client.read_resource(STATIC_DOC), client.read_resource("demo://nope")),
                                (client.get_prompt("simple-prompt"), client.get_prompt("nope"))):
            hidden, unknown = await refused(exists), await refused(missing)
            assert hidden.code == unknown.code == -32602
            assert hidden.message.split(":")[0] == unknown.message.split(":")[0]  # "Unknown tool" etc.


async def test_a_when_rule_on_realm_roles_differs_for_two_tokens(
        serve: Callable[..., Gateway], everything: Upstream,
        start_auth_server: Callable[..., AuthServer]) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    idp = start_auth_server([url])
    gateway = serve("passthrough-roles", {
        "mcp_upstream": everything.url,
        "auth": {"resource": url, "authorization_servers": [idp.issuer],
                 "introspection_endpoint": idp.introspection_endpoint,
                 "client_id": GATEWAY[0], "client_secret": "${CLIENT_SECRET}"},
        "acl": {"rules": [
            {"features": ["tools"], "name": {"type": "literal", "pattern": "echo"}},
            {"features": ["tools"], "name": {"type": "literal", "pattern": "get-sum"},
             "when": "'admin' in claims.realm_access.roles"},
            {"features": ["prompts"], "when": "'admin' in claims.realm_access.roles"},
        ]},
    }, port=port, CLIENT_SECRET=GATEWAY[1])
    admin, user = idp.token(*SVC_ADMIN, resource=url), idp.token(*SVC_USER, resource=url)
    async with connect(gateway.url, token=admin) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["echo", "get-sum"]
        assert text_of(await client.call_tool("get-sum", {"a": 1, "b": 1})) == "The sum of 1 and 1 is 2."
        assert len((await client.list_prompts()).prompts) == 4
    async with connect(gateway.url, token=user) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["echo"]
        assert (await refused(client.call_tool("get-sum", {"a": 1, "b": 1}))).message == "Unknown tool: 'get-sum'"
        assert (await client.list_prompts()).prompts == []
        assert text_of(await client.call_tool("echo", {"message": "hi"})) == "Echo: hi"


# -- credentials: what goes upstream ------------------------------------------------------------------

@pytest.fixture(scope="module")
def headers_upstream(processes: Processes) -> Upstream:
    port = _free_port()
    process = processes.start("headers-mcp", [str(Path(__import__("sys").executable)),
                                              str(ROOT / "tests" / "integration" / "headers_mcp.py"), str(port)])
    url = f"http://127.0.0.1:{port}/mcp"
    _wait_answering(process, url)
    return Upstream(url, port, process)


async def test_the_upstream_gets_the_configured_credentials_never_the_clients_token(
        serve: Callable[..., Gateway], headers_upstream: Upstream) -> None:
    gateway = serve("passthrough-headers", {"mcp_upstream": {
        "url": headers_upstream.url, "headers": {"Authorization": "${UPSTREAM_AUTH}", "X-Gateway": "openapi-mcp"}}},
        UPSTREAM_AUTH=UPSTREAM_CREDENTIAL)
    async with connect(gateway.url) as client:
        seen = json.loads(text_of(await client.call_tool("seen_headers", {})))
    seen = [headers for headers in seen if "x-probe" not in headers]  # the test's own readiness polls
    assert len(seen) >= 3  # initialize, initialized, tools/list, ... and this call
    for headers in seen:
        assert headers.get("authorization") == UPSTREAM_CREDENTIAL, headers
        assert headers.get("x-gateway") == "openapi-mcp"
        assert all(CLIENT_TOKEN not in value for value in headers.values()), headers


async def test_claim_headers_go_upstream_with_each_proxied_tool_call(
        serve: Callable[..., Gateway], headers_upstream: Upstream,
        start_auth_server: Callable[..., AuthServer]) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    idp = start_auth_server([url])
    gateway = serve("passthrough-claims", {
        "mcp_upstream": {"url": headers_upstream.url, "headers": {"Authorization": "${UPSTREAM_AUTH}"}},
        "auth": {"resource": url, "authorization_servers": [idp.issuer],
                 "introspection_endpoint": idp.introspection_endpoint,
                 "client_id": GATEWAY[0], "client_secret": "${CLIENT_SECRET}",
                 "claim_to_header": [{"claim": "client_id", "header": "X-Caller"},
                                     {"claim": "realm_access.roles", "header": "X-Roles"},
                                     {"claim": "mcp-session-id", "header": "Mcp-Session-Id"}]},
    }, port=port, CLIENT_SECRET=GATEWAY[1], UPSTREAM_AUTH=UPSTREAM_CREDENTIAL)
    calls = []
    for who in (SVC_ADMIN, SVC_USER):
        token = idp.token(*who, resource=url)
        async with connect(gateway.url, token=token) as client:
            seen = json.loads(text_of(await client.call_tool("seen_headers", {})))
        calls.append(seen[-1])  # the headers of this very call
        assert all(token not in value for headers in seen for value in headers.values())
    (admin, user) = calls
    assert admin["x-caller"] == SVC_ADMIN[0] and user["x-caller"] == SVC_USER[0]
    assert "admin" in admin["x-roles"].split(",") and "admin" not in user.get("x-roles", "").split(",")
    assert admin["authorization"] == UPSTREAM_CREDENTIAL
    assert admin["mcp-session-id"] != "", admin  # a claim cannot replace the session header


# -- upstream failures --------------------------------------------------------------------------------

async def test_an_upstream_that_goes_away_is_a_quick_tool_error_and_comes_back(
        serve: Callable[..., Gateway], processes: Processes, node_bin: Path) -> None:
    upstream = start_everything(processes, "server-everything-flaky")
    gateway = serve("passthrough-flaky", {"mcp_upstream": {"url": upstream.url, "timeout": 10}})
    async with connect(gateway.url) as client:
        assert text_of(await client.call_tool("echo", {"message": "1"})) == "Echo: 1"
        upstream.process.stop()
        started = time.monotonic()
        down = await client.call_tool("echo", {"message": "2"})
        assert down.is_error and "mcp_upstream http://127.0.0.1" in text_of(down), down
        assert time.monotonic() - started < 5
        assert "echo" in [t.name for t in (await client.list_tools()).tools]  # the last list is kept
        start_everything(processes, "server-everything-flaky-again", port=upstream.port)
        with anyio.fail_after(40):  # reconnection backoff is at most 30 s
            while (result := await client.call_tool("echo", {"message": "3"})).is_error:
                await anyio.sleep(0.5)
        assert text_of(result) == "Echo: 3"


# -- aggregation --------------------------------------------------------------------------------------

async def test_one_server_aggregates_an_openapi_spec_and_an_mcp_server_under_prefixes(
        serve: Callable[..., Gateway], everything: Upstream, mock_api_url: str,
        upstream_listing: dict[str, list[str]]) -> None:
    gateway = serve("aggregate", {"sources": [
        {"spec": str(SPEC), "prefix": "market_", "upstream": {"url": mock_api_url}},
        {"mcp_upstream": everything.url, "prefix": "ev_"},
    ]})
    async with connect(gateway.url) as client:
        seen = await listing(client)
        assert "market_getUser" in seen["tools"] and "market_createOrder" in seen["tools"]
        assert [name for name in seen["tools"] if name.startswith("ev_")] == \
            [f"ev_{name}" for name in upstream_listing["tools"]]
        assert seen["prompts"] == [f"ev_{name}" for name in upstream_listing["prompts"]]
        assert seen["resources"] == upstream_listing["resources"]  # URIs are never renamed
        user = await client.call_tool("market_getUser", {"userId": "u1"})
        assert json.loads(text_of(user))["name"] == "Alice Johnson"
        assert text_of(await client.call_tool("ev_echo", {"message": "both"})) == "Echo: both"
        assert (await client.get_prompt("ev_simple-prompt")).messages
        completion = await client.complete(PromptReference(type="ref/prompt", name="ev_completable-prompt"),
                                           {"name": "department", "value": "Sa"})
        assert completion.completion.values == ["Sales"]
        assert (await refused(client.call_tool("echo", {"message": "x"}))).message == "Unknown tool: 'echo'"


def test_a_name_served_by_two_sources_stops_the_start_with_one_line(
        everything: Upstream, tmp_path: Path) -> None:
    config = tmp_path / "clash.yaml"
    config.write_text(json.dumps({"sources": [{"mcp_upstream": everything.url}, {"mcp_upstream": everything.url}],
                                  "server": {"port": _free_port()}}))
    result = subprocess.run([_openapi_mcp(), "serve", "--config", str(config)], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line == (f"openapi-mcp: error: tool name 'echo' is served by two sources: sources[0] (mcp_upstream "
                    f"{everything.url}) and sources[1] (mcp_upstream {everything.url}); give one of them a "
                    "`prefix:` (or rename the tool)")



async def test_with_sealed_sessions_what_lives_in_one_process_is_not_offered(
        serve: Callable[..., Gateway], everything: Upstream) -> None:
    """Replicas or workers (`server.session_keys`): a session may move to another process, and
    resource subscriptions and tasks live in the one that took them, so neither is advertised."""
    plain = serve("passthrough-one-process", {"mcp_upstream": everything.url})
    sealed = serve("passthrough-sealed", {"mcp_upstream": everything.url,
                                          "server": {"session_keys": ["k" * 32]}})
    async with connect(plain.url) as one, connect(sealed.url) as many:
        assert one.server_capabilities.resources.subscribe and one.server_capabilities.tasks is not None
        caps = many.server_capabilities
        assert not caps.resources.subscribe and caps.tasks is None
        assert caps.resources.list_changed and caps.tools.list_changed  # those reach every replica's clients
        assert STATIC_DOC in [r.uri for r in (await many.list_resources()).resources]
        assert not (await many.call_tool("echo", {"message": "hi"})).is_error


async def test_a_2026_client_hears_of_list_changes_through_subscriptions_listen(
        serve: Callable[..., Gateway], everything: Upstream) -> None:
    """2026-07-28 has no standalone stream: list changes reach the client on its listen stream."""
    from mcp.shared.subscriptions import ResourcesListChanged

    gateway = serve("passthrough-listen", {"mcp_upstream": everything.url})
    async with connect(gateway.url, mode="auto") as client:
        assert client.session.protocol_version == "2026-07-28"  # what `auto` negotiates with this gateway
        caps = client.server_capabilities
        assert caps.tools.list_changed and caps.resources.list_changed
        before = [r.uri for r in (await client.list_resources()).resources]
        async with client.listen(resources_list_changed=True, tools_list_changed=True) as subscription:
            assert subscription.honored.resources_list_changed
            await client.call_tool("gzip-file-as-resource", {"name": "late.gz", "data": "data:text/plain;base64,aGk="})
            with anyio.fail_after(10):
                event = await subscription.__anext__()
        assert isinstance(event, ResourcesListChanged)
        after = [r.uri for r in (await client.list_resources()).resources]
    assert "demo://resource/session/late.gz" in after and len(after) == len(before) + 1


async def test_sigterm_with_an_open_listen_stream_still_exits_promptly(
        serve: Callable[..., Gateway], everything: Upstream) -> None:
    import os
    import signal

    gateway = serve("passthrough-listen-term", {"mcp_upstream": everything.url})
    started = None
    try:
        async with connect(gateway.url, mode="auto") as client:
            async with client.listen(tools_list_changed=True):
                os.kill(gateway.process.popen.pid, signal.SIGTERM)
                started = time.monotonic()
                with anyio.fail_after(15):
                    while gateway.process.popen.poll() is None:
                        await anyio.sleep(0.05)
    except BaseException:
        pass
    assert started is not None and gateway.process.popen.poll() is not None, gateway.process.log()
    assert time.monotonic() - started < 15
    assert "Traceback" not in gateway.process.log(), gateway.process.log()


# -- resource subscriptions -----------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")
async def test_resource_updates_reach_the_2025_clients_that_subscribed(
        serve: Callable[..., Gateway], everything: Upstream) -> None:
    from mcp.types import ResourceUpdatedNotification

    gateway = serve("passthrough-subscribe", {"mcp_upstream": everything.url, "acl": {"rules": [
        {"features": ["tools", "prompts"]},
        {"features": ["resources"], "operations": ["list", "read", "templates", "subscribe"],
         "name": {"type": "literal", "pattern": STATIC_DOC}},
        {"features": ["resources"], "operations": ["list", "read"],
         "name": {"type": "literal", "pattern": DYNAMIC_TEXT}}]}})
    updates: list[str] = []
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            heard.set()

    async with connect(gateway.url, on_message=on_message) as client:
        assert client.server_capabilities.resources.subscribe
        await client.subscribe_resource(STATIC_DOC)
        # read allowed but subscribe not: answered like an unknown resource
        assert (await refused(client.subscribe_resource(DYNAMIC_TEXT))).message == f"Unknown resource: {DYNAMIC_TEXT!r}"
        assert (await refused(client.subscribe_resource("demo://nope"))).message == "Unknown resource: 'demo://nope'"
        # server-everything then sends an update for every URI its (our) session subscribed to
        await client.call_tool("toggle-subscriber-updates", {})
        with anyio.fail_after(10):
            await heard.wait()
        await client.unsubscribe_resource(STATIC_DOC)
    assert set(updates) == {STATIC_DOC}


async def test_a_2026_listen_stream_gets_updates_for_the_uris_it_may_subscribe_to(
        serve: Callable[..., Gateway], everything: Upstream) -> None:
    from mcp.shared.subscriptions import ResourceUpdated

    gateway = serve("passthrough-listen-resources", {"mcp_upstream": everything.url, "acl": {"rules": [
        {"features": ["tools"]},
        {"features": ["resources"], "name": {"type": "literal", "pattern": STATIC_DOC}},
        {"features": ["resources"], "operations": ["read"], "name": {"type": "literal", "pattern": DYNAMIC_TEXT}}]}})
    async with connect(gateway.url, mode="auto") as client:
        async with client.listen(resource_subscriptions=[STATIC_DOC, DYNAMIC_TEXT, "demo://nope"]) as subscription:
            assert subscription.honored.resource_subscriptions == [STATIC_DOC]  # nothing for the others, ever
            await client.call_tool("toggle-subscriber-updates", {})
            with anyio.fail_after(10):
                event = await subscription.__anext__()
    assert event == ResourceUpdated(uri=STATIC_DOC)


# -- requests of the client (sampling, elicitation, roots) ------------------------------------------

async def test_sampling_and_elicitation_during_a_call_reach_the_calling_client(
        serve: Callable[..., Gateway], everything: Upstream) -> None:
    from mcp.types import CreateMessageResult, ElicitResult

    gateway = serve("passthrough-relay", {"mcp_upstream": {"url": everything.url,
                                                           "relay": ["sampling", "elicitation"]}})
    asked: list[str] = []

    async def sample(context: Any, params: Any) -> CreateMessageResult:
        asked.append(params.messages[0].content.text)
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="forty-two"),
                                   model="test-model", stop_reason="endTurn")

    async def elicit(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"name": "Ada Lovelace"})

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
                                  timeout=httpx2.Timeout(30, read=120)) as http, Client(
            streamable_http_client(gateway.url, http_client=http), mode="legacy",
            sampling_callback=sample, elicitation_callback=elicit) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"trigger-sampling-request", "trigger-elicitation-request"} <= names  # the upstream saw the capabilities
        sampled = text_of(await client.call_tool("trigger-sampling-request", {"prompt": "the answer?", "maxTokens": 20}))
        assert "forty-two" in sampled and "test-model" in sampled
        elicited = await client.call_tool("trigger-elicitation-request", {})
        assert "Ada Lovelace" in " ".join(c.text for c in elicited.content if isinstance(c, TextContent))
    assert asked[0].endswith("the answer?") and len(asked) == 2


async def test_a_client_without_sampling_gets_a_clear_tool_error_not_a_hang(
        serve: Callable[..., Gateway], everything: Upstream) -> None:
    gateway = serve("passthrough-relay-nocap", {"mcp_upstream": {"url": everything.url, "relay": ["sampling"]}})
    async with connect(gateway.url) as client:  # declares no sampling capability
        with anyio.fail_after(20):
            result = await client.call_tool("trigger-sampling-request", {"prompt": "x", "maxTokens": 5})
    assert result.is_error and "does not support sampling/createMessage" in text_of(result)


async def test_without_relay_the_upstream_is_not_offered_sampling(open_gateway: Gateway) -> None:
    async with connect(open_gateway.url) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert "trigger-sampling-request" not in names and "trigger-elicitation-request" not in names
