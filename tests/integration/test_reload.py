"""Live reload against a real `openapi-mcp serve --watch` process, the marketplace mock and the SDK client.

While a bounded load of tool calls runs, the test edits the spec: a new operation appears (the
connected clients are told, a handshake-era session on its GET stream and a 2026-07-28 client on
its `subscriptions/listen` stream, and then list and call the new tool), then a broken edit is
made (the old tools keep serving; the log and `/readyz` say what is wrong). No call may fail.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ToolListChangedNotification

from tests.integration.conftest import SPEC, Process, Processes, _free_port, _openapi_mcp

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NEW_TOOL = "searchOrders"  # GET /marketplace/search: left out of the first spec, added by the edit
WORKERS = 4
MAX_CALLS = 2000  # the load is bounded in count ...
MAX_SECONDS = 60.0  # ... and in time


@dataclass
class Gateway:
    base_url: str
    spec: Path
    config: Path
    process: Process

    @property
    def url(self) -> str:
        return f"{self.base_url}/mcp"

    def readyz(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/readyz", trust_env=False, timeout=10)
        body: dict[str, Any] = response.json()
        return body


def write_spec(path: Path, *, with_new_tool: bool) -> None:
    document = yaml.safe_load(SPEC.read_text())
    if not with_new_tool:
        del document["paths"]["/marketplace/search"]
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def write_text(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture
def start_gateway(processes: Processes, mock_api_url: str, tmp_path: Path) -> Callable[..., Gateway]:
    def start(name: str, *flags: str) -> Gateway:
        spec = tmp_path / "api.yaml"
        write_spec(spec, with_new_tool=False)
        port = _free_port()
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps({"spec": str(spec), "upstream": {"url": mock_api_url},
                                      "server": {"host": "127.0.0.1", "port": port}}))
        process = processes.start(name, [_openapi_mcp(), "serve", "--config", str(config), *flags],
                                  OPENAPI_MCP_CACHE_DIR=str(tmp_path / "cache"))  # the compiled-tools cache is on
        base_url = f"http://127.0.0.1:{port}"
        process.wait_ready(f"{base_url}/healthz")
        return Gateway(base_url, spec, config, process)

    return start


@asynccontextmanager
async def connect(url: str, *, mode: str = "legacy", on_message: Any = None) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120)) as http, Client(
            streamable_http_client(url, http_client=http), mode=mode, message_handler=on_message) as client:
        yield client


@dataclass
class Load:
    """Tool calls from WORKERS sessions until stopped (or MAX_CALLS / MAX_SECONDS): every outcome counted."""

    calls: int = 0
    failures: list[str] = field(default_factory=list)
    stop: anyio.Event = field(default_factory=anyio.Event)

    async def worker(self, url: str, deadline: float) -> None:
        async with connect(url) as client:
            while not self.stop.is_set() and self.calls < MAX_CALLS and time.monotonic() < deadline:
                tool, arguments = ("listUsers", {}) if self.calls % 2 else ("getUser", {"userId": "u1"})
                try:
                    result = await client.call_tool(tool, arguments)
                    if result.is_error:
                        self.failures.append(f"{tool}: {result.content}")
                except Exception as exc:
                    self.failures.append(f"{tool}: {type(exc).__name__}: {exc}")
                self.calls += 1


async def wait_for(what: str, check: Callable[[], bool], *, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}", pytrace=False)
        await anyio.sleep(0.1)


async def test_a_spec_edited_under_load_is_served_without_a_failed_call_and_clients_are_told(
        start_gateway: Callable[..., Gateway]) -> None:
    from mcp.shared.subscriptions import ToolsListChanged

    gateway = start_gateway("reload-watch", "--watch")
    load = Load()
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            heard.set()

    started = time.monotonic()
    async with connect(gateway.url, on_message=on_message) as client, \
            connect(gateway.url, mode="auto") as modern, anyio.create_task_group() as tasks:
        before = [tool.name for tool in (await client.list_tools()).tools]
        assert NEW_TOOL not in before
        for _ in range(WORKERS):
            tasks.start_soon(load.worker, gateway.url, started + MAX_SECONDS)
        await wait_for("the first calls", lambda: load.calls >= 20)
        async with modern.listen(tools_list_changed=True) as subscription:
            write_spec(gateway.spec, with_new_tool=True)
            with anyio.fail_after(20):
                await heard.wait()  # the handshake-era session, on its GET stream
                event = await subscription.__anext__()  # the 2026-07-28 client, on its listen stream
        assert isinstance(event, ToolsListChanged)
        after = [tool.name for tool in (await client.list_tools()).tools]
        assert sorted(after) == sorted([*before, NEW_TOOL])
        assert NEW_TOOL in [tool.name for tool in (await modern.list_tools()).tools]
        found = await client.call_tool(NEW_TOOL, {})
        assert not found.is_error, found.content
        calls_at_edit = load.calls

        # A config edit: a new upstream timeout (a new connection pool; the old one drains) and a
        # new port (needs a restart: reported, the running listener kept).
        config = json.loads(gateway.config.read_text())
        write_text(gateway.config, json.dumps({**config, "upstream": {**config["upstream"], "timeout": 30},
                                               "server": {**config["server"], "port": _free_port()}}))
        await wait_for("the config reload", lambda: gateway.readyz().get("reload", {}).get("reloads") == 2)
        assert gateway.readyz()["reload"]["restart_needed"] == ["server.port"]
        await wait_for("more calls after the config edit", lambda: load.calls >= calls_at_edit + 20)
        calls_at_edit = load.calls

        write_text(gateway.spec, "openapi: 3.0.3\npaths: [unclosed\n")  # a broken edit
        await wait_for("the failed reload in /readyz",
                       lambda: gateway.readyz().get("reload", {}).get("result") == "error")
        await wait_for("more calls after the broken edit", lambda: load.calls >= calls_at_edit + 20)
        assert sorted(tool.name for tool in (await client.list_tools()).tools) == sorted(after)
        assert not (await client.call_tool(NEW_TOOL, {})).is_error
        load.stop.set()
    seconds = time.monotonic() - started
    ready = gateway.readyz()
    log = gateway.process.log()
    print(f"\nreload under load: {load.calls} calls from {WORKERS} sessions in {seconds:.1f} s, "
          f"{len(load.failures)} failed")
    assert load.failures == [], load.failures[:5]
    assert load.calls >= 40
    assert ready["status"] == "ready" and ready["tools"] == len(after)
    assert ready["reload"]["result"] == "error" and ready["reload"]["restart_needed"] == ["server.port"]
    assert ready["reload"]["error"].startswith(f"{gateway.spec}: is not valid JSON or YAML"), ready
    errors = [line for line in log.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, log
    assert errors[0].startswith(f"ERROR openapi_mcp: reload (file changed: {gateway.spec}) failed, still serving "
                                f"the previous {len(after)} tools: {gateway.spec}: is not valid JSON or YAML")
    assert "Traceback" not in log, log
    assert ("WARNING openapi_mcp: reload (file changed: " f"{gateway.config}): server.port changed; that takes "
            "effect only after a restart (the running values are kept)") in log
    metrics = httpx.get(f"{gateway.base_url}/metrics", trust_env=False).text
    assert 'openapi_mcp_reload_total{result="ok"} 2.0' in metrics
    assert 'openapi_mcp_reload_total{result="error"} 1.0' in metrics


async def test_sighup_reloads_a_server_without_watch(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway("reload-sighup")
    async with connect(gateway.url) as client:
        write_spec(gateway.spec, with_new_tool=True)
        await anyio.sleep(1.5)  # longer than the watcher's poll: without --watch nothing happens
        assert gateway.readyz()["reload"]["reloads"] == 0
        os.kill(gateway.process.popen.pid, signal.SIGHUP)
        await wait_for("the reload", lambda: gateway.readyz()["reload"]["reloads"] == 1)
        assert gateway.readyz()["reload"]["result"] == "ok"
        assert NEW_TOOL in [tool.name for tool in (await client.list_tools()).tools]
    assert "reload (SIGHUP): serving 10 tools (1 added, 0 removed, 0 changed)" in gateway.process.log()


async def test_a_reload_in_front_of_an_mcp_server_keeps_its_session_and_applies_new_rules(
        processes: Processes, node_bin: Path, tmp_path: Path) -> None:
    """Passthrough: a new `acl:` hides a proxied tool and prompt at once (clients are told), the
    upstream session is the same one, and a changed MCP server URL is reported as needing a restart."""
    from tests.integration.test_mcp_upstream import start_everything

    everything = start_everything(processes, "reload-everything")
    port = _free_port()
    config = tmp_path / "config.yaml"
    allow = {"rules": [{"features": ["tools", "prompts", "resources"]}]}
    base = {"mcp_upstream": everything.url, "server": {"host": "127.0.0.1", "port": port}}
    write_text(config, json.dumps({**base, "acl": allow}))
    process = processes.start("reload-passthrough", [_openapi_mcp(), "serve", "--config", str(config)])
    base_url = f"http://127.0.0.1:{port}"
    process.wait_ready(f"{base_url}/healthz")
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            heard.set()

    async with connect(f"{base_url}/mcp", on_message=on_message) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        assert "echo" in tools and "simple-prompt" in [p.name for p in (await client.list_prompts()).prompts]
        hidden = {"rules": [{"features": ["tools"], "name": {"type": "regex", "pattern": "^(?!echo$).*"}},
                            {"features": ["resources"]}]}
        write_text(config, json.dumps({**base, "acl": hidden}))
        os.kill(process.popen.pid, signal.SIGHUP)
        with anyio.fail_after(20):
            await heard.wait()
        assert [tool.name for tool in (await client.list_tools()).tools] == [t for t in tools if t != "echo"]
        assert (await client.list_prompts()).prompts == []
        assert not (await client.call_tool("get-sum", {"a": 1, "b": 2})).is_error

        write_text(config, json.dumps({**base, "mcp_upstream": everything.url + "?other", "acl": hidden}))
        os.kill(process.popen.pid, signal.SIGHUP)
        await wait_for("the second reload", lambda: httpx.get(f"{base_url}/readyz", trust_env=False).json()
                       ["reload"]["reloads"] == 2)
        ready = httpx.get(f"{base_url}/readyz", trust_env=False).json()
        assert ready["reload"]["restart_needed"] == ["mcp_upstream"], ready
        assert not (await client.call_tool("get-sum", {"a": 1, "b": 2})).is_error
    log = process.log()
    assert log.count(": connected (") == 1, log  # one upstream session throughout
    assert "Traceback" not in log, log


async def test_over_stdio_a_watched_spec_is_reloaded_and_the_client_told(mock_api_url: str, tmp_path: Path) -> None:
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client

    spec = tmp_path / "api.yaml"
    write_spec(spec, with_new_tool=False)
    params = StdioServerParameters(command=_openapi_mcp(), args=[
        "serve", str(spec), "--transport", "stdio", "--upstream", mock_api_url, "--watch", "--no-cache"])
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            heard.set()

    log_path = tmp_path / "stdio.log"
    with log_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy", message_handler=on_message) as client:
            assert NEW_TOOL not in [tool.name for tool in (await client.list_tools()).tools]
            write_spec(spec, with_new_tool=True)
            with anyio.fail_after(20):
                await heard.wait()
            assert NEW_TOOL in [tool.name for tool in (await client.list_tools()).tools]
            assert not (await client.call_tool(NEW_TOOL, {})).is_error
    assert "reload (file changed: " in log_path.read_text()


async def test_a_url_spec_is_polled_with_conditional_gets_and_reloaded_when_it_changes(
        processes: Processes, mock_api_url: str, tmp_path: Path) -> None:
    """The spec served by Python's http.server, which answers If-Modified-Since with 304."""
    import sys

    docs = tmp_path / "docs"
    docs.mkdir()
    spec = docs / "api.yaml"
    write_spec(spec, with_new_tool=False)
    os.utime(spec, (time.time() - 10, time.time() - 10))  # Last-Modified has whole seconds
    spec_port, port = _free_port(), _free_port()
    files = processes.start("reload-spec-server", [sys.executable, "-m", "http.server", str(spec_port), "--bind",
                                                   "127.0.0.1", "--directory", str(docs)])
    files.wait_ready(f"http://127.0.0.1:{spec_port}/api.yaml")
    config = tmp_path / "config.yaml"
    write_text(config, json.dumps({"spec": f"http://127.0.0.1:{spec_port}/api.yaml",
                                   "upstream": {"url": mock_api_url}, "reload": {"watch": True, "interval": 1},
                                   "server": {"host": "127.0.0.1", "port": port}}))
    gateway = processes.start("reload-url", [_openapi_mcp(), "serve", "--config", str(config)])
    base_url = f"http://127.0.0.1:{port}"
    gateway.wait_ready(f"{base_url}/healthz")

    def answers(status: int) -> int:
        return files.log().count(f'"GET /api.yaml HTTP/1.1" {status}')

    await wait_for("two conditional GETs answered 304", lambda: answers(304) >= 2)
    async with connect(f"{base_url}/mcp") as client:
        assert NEW_TOOL not in [tool.name for tool in (await client.list_tools()).tools]
        write_spec(spec, with_new_tool=True)
        await wait_for("the reload", lambda: httpx.get(f"{base_url}/readyz", trust_env=False).json()
                       ["reload"]["reloads"] == 1)
        assert NEW_TOOL in [tool.name for tool in (await client.list_tools()).tools]
    assert f"reload (URL changed: http://127.0.0.1:{spec_port}/api.yaml): serving 10 tools" in gateway.log()
