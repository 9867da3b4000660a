"""Live reload (converter.catalog.live, reload, watch): the catalog replaced in one step while serving."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp.types as types
import pytest
from mcp import Client

from converter.catalog import build_served_catalog
from converter.catalog.live import LiveCatalog
from converter.catalog.reload import Reloader, live_settings
from converter.catalog.watch import FileWatch, UrlWatch, watched
from converter.config import load_settings
from converter.server.app import build_server, create_app

pytestmark = pytest.mark.anyio

PING = {"name": "ping", "method": "GET", "path": "/ping", "description": "Ping"}
SLOW = {"name": "slow", "method": "GET", "path": "/slow"}
PONG = {"name": "pong", "method": "GET", "path": "/pong", "description": "Pong"}


class Upstream:
    """An upstream API in memory: /slow answers only when `release` is set."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.slow_started = anyio.Event()
        self.transport = httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slow":
            self.slow_started.set()
            await self.release.wait()
        return httpx.Response(200, json={"path": request.url.path})


def write(path: Path, config: dict[str, Any]) -> str:
    path.write_text(json.dumps(config))
    return str(path)


def write_text(path: str, text: str) -> None:
    Path(path).write_text(text)


def config_of(*tools: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"tools": list(tools), "upstream": {"url": "http://api.test"}, "cache": False, **extra}


async def served(tmp_path: Path, config: dict[str, Any], upstream: Upstream) -> tuple[str, LiveCatalog, Reloader]:
    path = write(tmp_path / "config.yaml", config)
    settings = load_settings(path)
    live = LiveCatalog(build_served_catalog(settings, transport=upstream.transport))
    return path, live, Reloader(live, settings, lambda: load_settings(path), transport=upstream.transport)


def text(result: types.CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, types.TextContent)
    return first.text


async def test_a_call_in_flight_finishes_on_the_old_catalog_and_new_calls_use_the_new_one(tmp_path: Path) -> None:
    upstream = Upstream()
    path, live, reloader = await served(tmp_path, config_of(PING, SLOW), upstream)
    results: list[types.CallToolResult] = []
    async with live, anyio.create_task_group() as tasks:
        old = live.current

        async def slow_call() -> None:
            results.append(await live.call_tool("slow", {}))

        tasks.start_soon(slow_call)
        await upstream.slow_started.wait()
        write(Path(path), config_of(PING, PONG))  # `slow` is gone from the new catalog
        assert await reloader.reload("test")
        assert live.current is not old and live.retired == 1
        assert not (await live.call_tool("pong", {})).is_error
        upstream.release.set()
    assert not results[0].is_error and json.loads(text(results[0])) == {"path": "/slow"}
    assert live.retired == 0  # its last call ended: the replaced catalog is gone
    # The upstream settings did not change: the new catalog uses the same pooled client.
    assert live.current.sources[0].upstream is old.sources[0].upstream  # type: ignore[union-attr]


async def test_a_changed_upstream_gets_a_new_pool_and_the_old_one_closes_after_its_last_call(tmp_path: Path) -> None:
    upstream = Upstream()
    path, live, reloader = await served(tmp_path, config_of(PING, SLOW), upstream)
    async with live:
        async with anyio.create_task_group() as tasks:
            old_client = live.current.sources[0].upstream  # type: ignore[union-attr]
            tasks.start_soon(live.call_tool, "slow", {})
            await upstream.slow_started.wait()
            write(Path(path), {**config_of(PING, SLOW), "upstream": {"url": "http://api.test", "timeout": 5}})
            assert await reloader.reload("test")
            new_client = live.current.sources[0].upstream  # type: ignore[union-attr]
            assert new_client is not old_client and new_client.timeout == 5
            assert old_client._open  # a call is still in flight on it
            upstream.release.set()
        assert not old_client._open and new_client._open


async def test_a_broken_config_keeps_the_old_tools_serving_and_logs_one_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    upstream = Upstream()
    path, live, reloader = await served(tmp_path, config_of(PING), upstream)
    async with live:
        write_text(path, "tools: [{name: ping, method: GET}]\nupstream: {url: 'http://api.test'}\n")
        with caplog.at_level(logging.INFO, logger="openapi_mcp"):
            assert not await reloader.reload("SIGHUP")
        assert not (await live.call_tool("ping", {})).is_error
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (f"reload (SIGHUP) failed, still serving the previous 1 tools: {path}: "
                                   "tools.0.path: Field required")
    state = reloader.state.as_json()
    assert state["result"] == "error" and state["error"] == f"{path}: tools.0.path: Field required"
    assert live.generation == 0


async def test_a_spec_that_fails_to_load_keeps_the_old_one(tmp_path: Path) -> None:
    spec = tmp_path / "api.json"
    spec.write_text(json.dumps({"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
                                "servers": [{"url": "http://api.test"}],
                                "paths": {"/ping": {"get": {"operationId": "ping", "responses": {"200": {
                                    "description": "OK"}}}}}}))
    upstream = Upstream()
    _, live, reloader = await served(tmp_path, {"spec": str(spec), "cache": False}, upstream)
    async with live:
        spec.write_text('{"openapi": "3.0.3", "paths": ')
        assert not await reloader.reload("test")
        assert reloader.state.error is not None and reloader.state.error.startswith(f"{spec}: is not valid JSON")
        assert list(live.tool_names) == ["ping"]


async def test_settings_that_need_a_restart_are_reported_and_the_rest_is_applied(tmp_path: Path) -> None:
    upstream = Upstream()
    path, live, reloader = await served(tmp_path, config_of(PING), upstream)
    async with live:
        write(Path(path), {**config_of(PING, PONG), "server": {"port": 9999, "page_size": 10},
                           "telemetry": {"metrics": False}})
        assert await reloader.reload("test")
    assert sorted(live.tool_names) == ["ping", "pong"]
    assert reloader.state.restart_needed == ["server.port", "server.page_size", "telemetry.metrics"]
    assert reloader.settings.server.port == 8000 and reloader.settings.telemetry.metrics


def test_of_auth_only_what_the_policy_reads_changes_live() -> None:
    auth = {"resource": "http://127.0.0.1:8000/mcp", "authorization_servers": ["http://as.test"],
            "jwks_uri": "http://as.test/jwks"}
    running = load_settings(None, spec="x.yaml", upstream_url="http://api.test").model_copy(
        update={"auth": None})
    from converter.config import AuthSettings, Settings

    def with_auth(**extra: Any) -> Settings:
        return running.model_copy(update={"auth": AuthSettings.model_validate({**auth, **extra})})

    old = with_auth()
    applied, restart = live_settings(old, with_auth(tool_scopes={"x": ["read"]}, jwks_uri="http://other.test/jwks"))
    assert restart == ["auth.jwks_uri"]
    assert applied.auth is not None and applied.auth.jwks_uri == "http://as.test/jwks"
    assert applied.auth.tool_scopes == {"x": ["read"]}
    assert live_settings(old, with_auth(required_scopes=["mcp"]))[1] == []
    assert live_settings(running, old)[1] == ["auth"]


async def test_clients_are_told_when_the_tool_list_changed_and_only_then(tmp_path: Path) -> None:
    upstream = Upstream()
    path, live, reloader = await served(tmp_path, config_of(PING), upstream)
    told: list[frozenset[str]] = []

    async def listener(kinds: frozenset[str]) -> None:
        told.append(kinds)

    live.listeners.append(listener)
    async with live:
        assert await reloader.reload("unchanged")
        assert told == []
        write(Path(path), config_of(PING, PONG))
        assert await reloader.reload("a new tool")
        assert told == [frozenset({"tools"})]
        write(Path(path), {**config_of(PING, PONG), "acl": {"rules": [
            {"features": ["tools"], "operations": ["list", "call"], "name": {"type": "any"}}]}})
        assert await reloader.reload("new rules")  # the same tools, but who sees what may differ
        assert told[-1] == frozenset({"tools"})


async def test_a_connected_client_gets_list_changed_and_then_lists_the_new_tool(tmp_path: Path) -> None:
    upstream = Upstream()
    path, live, reloader = await served(tmp_path, config_of(PING), upstream)
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            heard.set()

    async with live, Client(build_server(live), mode="legacy", message_handler=on_message) as client:
        assert client.server_capabilities.tools is not None and client.server_capabilities.tools.list_changed
        assert [t.name for t in (await client.list_tools()).tools] == ["ping"]  # cached by ListCache
        write(Path(path), config_of(PING, PONG))
        assert await reloader.reload("test")
        with anyio.fail_after(5):
            await heard.wait()
        assert [t.name for t in (await client.list_tools()).tools] == ["ping", "pong"]
        assert not (await client.call_tool("pong", {})).is_error


async def test_a_2026_client_hears_of_a_reload_on_its_listen_stream(tmp_path: Path) -> None:
    from mcp.shared.subscriptions import ToolsListChanged

    upstream = Upstream()
    path, live, reloader = await served(tmp_path, config_of(PING), upstream)
    async with live, Client(build_server(live), mode="auto") as client:
        assert client.session.protocol_version == "2026-07-28"
        async with client.listen(tools_list_changed=True) as subscription:
            assert subscription.honored.tools_list_changed
            write(Path(path), config_of(PING, PONG))
            assert await reloader.reload("test")
            with anyio.fail_after(5):
                event = await subscription.__anext__()
        assert isinstance(event, ToolsListChanged)
        assert [t.name for t in (await client.list_tools()).tools] == ["ping", "pong"]


async def test_in_dynamic_mode_the_search_index_follows(tmp_path: Path) -> None:
    upstream = Upstream()
    path, live, reloader = await served(tmp_path, config_of(PING, mode="dynamic"), upstream)
    async with live:
        write(Path(path), config_of(PING, PONG, mode="dynamic"))
        assert await reloader.reload("test")
        found = await live.call_tool("search_operations", {"query": "pong"})
        assert [op["name"] for op in found.structured_content["operations"]] == ["pong"]  # type: ignore[index]
        assert not (await live.call_tool("call_operation", {"name": "pong"})).is_error


async def test_with_the_compiled_tools_cache_an_edited_spec_and_its_referenced_file_are_seen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAPI_MCP_CACHE_DIR", str(tmp_path / "cache"))
    schemas = tmp_path / "schemas.json"
    schemas.write_text(json.dumps({"Id": {"type": "string"}}))
    spec = tmp_path / "api.json"

    def write_spec(*names: str) -> None:
        spec.write_text(json.dumps({"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
                                    "servers": [{"url": "http://api.test"}], "paths": {
            f"/{name}": {"get": {"operationId": name, "parameters": [
                {"name": "id", "in": "query", "schema": {"$ref": "schemas.json#/Id"}}],
                "responses": {"200": {"description": "OK"}}}} for name in names}}))

    write_spec("ping")
    upstream = Upstream()
    _, live, reloader = await served(tmp_path, {"spec": str(spec)}, upstream)
    files, urls = watched(reloader)
    assert files == [(tmp_path / "config.yaml").resolve(), spec.resolve(), schemas.resolve()] and urls == []
    async with live:
        write_spec("ping", "pong")
        assert await reloader.reload("test")
        assert sorted(live.tool_names) == ["ping", "pong"]
        schemas.write_text(json.dumps({"Id": {"type": "integer"}}))
        assert await reloader.reload("test")
        assert '"integer"' in json.dumps(live.list_result.tools[0].input_schema)
        # Read back from the cache, the referenced file is still known (and still watched).
        assert watched(reloader)[0] == files


def test_a_file_change_is_its_content_not_its_time(tmp_path: Path) -> None:
    upstream = Upstream()
    path = write(tmp_path / "config.yaml", config_of(PING))
    settings = load_settings(path)
    live = LiveCatalog(build_served_catalog(settings, transport=upstream.transport))
    files = FileWatch(Reloader(live, settings, lambda: load_settings(path)))
    os.utime(path, ns=(1, 1))  # touched: the same content
    assert files.changed() == []
    write(Path(path), config_of(PING, PONG))
    assert files.changed() == [Path(path).resolve()]
    assert files.changed() == []
    Path(path).unlink()
    assert files.changed() == [Path(path).resolve()]


async def test_a_url_spec_is_polled_with_conditional_gets(tmp_path: Path) -> None:
    document = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "servers": [{"url": "http://api.test"}],
                "paths": {"/ping": {"get": {"operationId": "ping", "responses": {"200": {"description": "OK"}}}}}}
    seen: list[dict[str, str]] = []
    answers = [httpx.Response(200, json=document, headers={"etag": '"a"', "last-modified": "Mon, 01 Jan 2024"}),
               httpx.Response(304), httpx.Response(200, json={**document, "x-new": 1}, headers={"etag": '"b"'})]

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append({k: v for k, v in request.headers.items() if k.startswith("if-")})
        return answers.pop(0)

    spec_server = httpx.MockTransport(handle)
    upstream = Upstream()
    settings = load_settings(None, spec="http://specs.test/api.json")
    from unittest import mock

    with mock.patch("converter.spec.load._fetch", return_value=json.dumps(document)):
        live = LiveCatalog(build_served_catalog(settings, transport=upstream.transport))
    polls = UrlWatch(Reloader(live, settings, lambda: settings), transport=spec_server)
    assert await polls.changed() == []  # the first look: taken as it is
    assert await polls.changed() == []  # 304
    assert await polls.changed() == ["http://specs.test/api.json"]
    assert seen == [{}, {"if-none-match": '"a"', "if-modified-since": "Mon, 01 Jan 2024"},
                    {"if-none-match": '"a"', "if-modified-since": "Mon, 01 Jan 2024"}]


async def test_readyz_and_the_metric_show_each_reload(tmp_path: Path) -> None:
    upstream = Upstream()
    path = write(tmp_path / "config.yaml", config_of(PING))
    app = create_app(load_settings(path), upstream_transport=upstream.transport,
                     reload_settings=lambda: load_settings(path))
    reloader: Reloader = app.state.reloader
    async with app.state.catalog, httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                    base_url="http://127.0.0.1") as http:
        write(Path(path), config_of(PING, PONG))
        assert await reloader.reload("test")
        write_text(path, "tools: {")
        assert not await reloader.reload("test")
        ready = (await http.get("/readyz")).json()
        metrics = (await http.get("/metrics")).text
    assert ready["status"] == "ready" and ready["tools"] == 2
    assert ready["reload"]["result"] == "error" and ready["reload"]["error"].startswith(f"{path}: ")
    assert ready["reload"]["reloads"] == 2
    assert 'openapi_mcp_reload_total{result="ok"} 1.0' in metrics
    assert 'openapi_mcp_reload_total{result="error"} 1.0' in metrics


async def test_with_several_sources_an_unchanged_one_keeps_its_pool(tmp_path: Path) -> None:
    def sources(*second: dict[str, Any]) -> dict[str, Any]:
        return {"cache": False, "sources": [
            {"prefix": "a_", "tools": [PING], "upstream": {"url": "http://a.test"}},
            {"prefix": "b_", "tools": [PING, *second], "upstream": {"url": "http://b.test", "timeout": 9}}]}

    upstream = Upstream()
    path, live, reloader = await served(tmp_path, sources(), upstream)
    async with live:
        first, second = (source.upstream for source in live.current.sources)  # type: ignore[union-attr]
        write(Path(path), {**sources(PONG), "sources": [
            sources()["sources"][0], {**sources(PONG)["sources"][1], "upstream": {"url": "http://b.test"}}]})
        assert await reloader.reload("test")
        kept, made = (source.upstream for source in live.current.sources)  # type: ignore[union-attr]
        assert sorted(live.tool_names) == ["a_ping", "b_ping", "b_pong"]
        assert kept is first and made is not second
        assert not (await live.call_tool("b_pong", {})).is_error


def test_the_mcp_servers_fronted_need_a_restart_and_the_rest_is_applied() -> None:
    running = load_settings(None, spec="x.yaml", upstream_url="http://api.test").model_copy(
        update={"mcp_upstream": None})
    from converter.config import McpUpstreamSettings, SourceSettings

    fronted = running.model_copy(update={"sources": [
        SourceSettings(mcp_upstream=McpUpstreamSettings(url="http://mcp.test/mcp"), prefix="m_")]})
    wanted = fronted.model_copy(update={"sources": [
        SourceSettings(spec="y.yaml", prefix="y_"),
        SourceSettings(mcp_upstream=McpUpstreamSettings(url="http://other.test/mcp"), prefix="m_")]})
    applied, restart = live_settings(fronted, wanted)
    assert restart == ["sources[].mcp_upstream"]
    assert [(e.spec, e.mcp_upstream.url if e.mcp_upstream else None) for e in applied.sources] == [
        ("y.yaml", None), (None, "http://mcp.test/mcp")]
    # The same servers in another place among the sources: nothing needs a restart.
    same = fronted.model_copy(update={"sources": [SourceSettings(spec="y.yaml", prefix="y_"), *fronted.sources]})
    assert live_settings(fronted, same) == (same, [])


async def test_tools_list_answers_from_one_catalog_when_a_reload_lands_in_the_middle(tmp_path: Path) -> None:
    rules = {"acl": {"rules": [{"features": ["tools"], "operations": ["list", "call"],
                                "name": {"type": "glob", "pattern": "p*"}}]}}
    upstream = Upstream()
    path, live, reloader = await served(tmp_path, config_of(PING, PONG, SLOW, **rules), upstream)
    visible = live.visible_tools
    raced = False

    async def racing(principal: Any) -> Any:
        nonlocal raced
        found = await visible(principal)
        if not raced:  # `pong` is gone from the catalog that replaces this one meanwhile
            raced = True
            write(Path(path), config_of(PING, SLOW, **rules))
            assert await reloader.reload("race")
        return found

    live.visible_tools = racing  # type: ignore[method-assign]
    async with live, Client(build_server(live)) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["ping"]
    assert raced


async def test_a_url_spec_is_polled_through_redirects_within_its_origin_only(tmp_path: Path) -> None:
    document = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "servers": [{"url": "http://api.test"}],
                "paths": {"/ping": {"get": {"operationId": "ping", "responses": {"200": {"description": "OK"}}}}}}
    hops: list[str] = []
    elsewhere = {"on": False}

    def handle(request: httpx.Request) -> httpx.Response:
        hops.append(str(request.url))
        if request.url.path == "/api.json":
            target = "http://internal.test/x" if elsewhere["on"] else "/v2/api.json"
            return httpx.Response(302, headers={"location": target})
        return httpx.Response(200, json=document)

    settings = load_settings(None, spec="http://specs.test/api.json")
    from unittest import mock

    with mock.patch("converter.spec.load._fetch", return_value=json.dumps(document)):
        live = LiveCatalog(build_served_catalog(settings, transport=Upstream().transport))
    polls = UrlWatch(Reloader(live, settings, lambda: settings), transport=httpx.MockTransport(handle))
    assert await polls.changed() == []
    assert hops == ["http://specs.test/api.json", "http://specs.test/v2/api.json"]
    elsewhere["on"] = True
    assert await polls.changed() == []
    assert hops[2:] == ["http://specs.test/api.json"]  # the other host is never asked


async def test_unchanged_credentials_and_limits_keep_their_tokens_and_counters(tmp_path: Path) -> None:
    token = {"token_endpoint": "http://as.test/token", "client_id": "gw", "client_secret": "s"}
    limits = [{"tools": ["*"], "per": "subject", "requests": 600, "window": 60}]

    def config(*tools: dict[str, Any], secret: str = "s") -> dict[str, Any]:
        return {**config_of(*tools), "limits": limits, "upstream": {
            "url": "http://api.test", "auth": {"client_credentials": {**token, "client_secret": secret}}}}

    upstream = Upstream()
    path, live, reloader = await served(tmp_path, config(PING), upstream)
    async with live:
        old = live.current
        write(Path(path), config(PING, PONG))
        assert await reloader.reload("test")
        new = live.current
        assert new.sources[0].credentials is old.sources[0].credentials  # type: ignore[union-attr]
        assert new.limiter is old.limiter
        write(Path(path), config(PING, PONG, secret="rotated"))  # a secret is a setting too
        assert await reloader.reload("test")
        assert live.current.sources[0].credentials is not old.sources[0].credentials  # type: ignore[union-attr]
        assert sorted(reloader.live.current.parts.kept) == ["rate limiter", "upstream client"]


async def test_a_replaced_catalog_is_freed_once_its_calls_have_ended(tmp_path: Path) -> None:
    import gc
    import weakref

    upstream = Upstream()
    path, live, reloader = await served(tmp_path, config_of(PING), upstream)
    async with live:
        old = weakref.ref(live.current)
        write(Path(path), config_of(PING, PONG))
        gc.freeze()  # as converter.serve does once started: the first catalog is frozen with the rest
        try:
            assert await reloader.reload("test")
            gc.collect()
            assert old() is None
        finally:
            gc.unfreeze()


async def test_credentials_added_by_a_reload_get_their_metrics(tmp_path: Path) -> None:
    upstream = Upstream()
    path = write(tmp_path / "config.yaml", config_of(PING))
    app = create_app(load_settings(path), upstream_transport=upstream.transport,
                     reload_settings=lambda: load_settings(path))
    async with app.state.catalog, httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                    base_url="http://127.0.0.1") as http:
        before = (await http.get("/metrics")).text
        write(Path(path), {**config_of(PING), "upstream": {"url": "http://api.test", "auth": {"client_credentials": {
            "token_endpoint": "http://as.test/token", "client_id": "gw", "client_secret": "s"}}}})
        assert await app.state.reloader.reload("test")
        after = (await http.get("/metrics")).text
    assert "openapi_mcp_upstream_auth_retries_total" not in before
    assert "openapi_mcp_upstream_auth_retries_total 0.0" in after
