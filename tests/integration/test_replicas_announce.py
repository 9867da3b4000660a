"""List changes across replicas: two real `openapi-mcp serve` processes sharing a real Redis.

Only replica A reloads (SIGHUP after the spec gained an operation); a handshake-era client whose
GET stream is on replica B and a 2026-07-28 client listening on B are told all the same, through
Redis pub/sub (converter/server/announcements.py). Redis stopped: A's reload reaches only A's
clients, both replicas keep serving, `/readyz` says degraded; Redis back on its port: B hears A
again.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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

from tests.integration.conftest import SPEC, Process, Processes, _free_port, _openapi_mcp, wait_until
from tests.integration.services import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NEW_TOOL = "searchOrders"  # GET /marketplace/search: left out of the first spec


def write_spec(path: Path, *, with_new_tool: bool) -> None:
    document = yaml.safe_load(SPEC.read_text())
    if not with_new_tool:
        del document["paths"]["/marketplace/search"]
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def start_replica(processes: Processes, tmp_path: Path, name: str, spec: Path, redis_url: str,
                  mock_api_url: str) -> tuple[str, Process]:
    port = _free_port()
    config = tmp_path / f"{name}.yaml"
    config.write_text(json.dumps({"spec": str(spec), "upstream": {"url": mock_api_url},
                                  "server": {"host": "127.0.0.1", "port": port},
                                  "redis": {"url": redis_url, "key_prefix": f"announce-{tmp_path.name}:",
                                            "timeout": 0.5}}))
    process = processes.start(name, [_openapi_mcp(), "serve", "--config", str(config), "--no-cache"])
    base = f"http://127.0.0.1:{port}"
    process.wait_ready(f"{base}/healthz")
    return base, process


@asynccontextmanager
async def connect(url: str, *, mode: str = "legacy", on_message: Any = None) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120)) as http, Client(
            streamable_http_client(url, http_client=http), mode=mode, message_handler=on_message) as client:
        yield client


def readyz(base: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{base}/readyz", trust_env=False, timeout=10).json()
    return body


async def test_a_change_one_replica_learns_of_reaches_the_clients_of_another(
        processes: Processes, start_redis: Callable[..., RedisServer], mock_api_url: str, tmp_path: Path) -> None:
    from mcp.shared.subscriptions import ToolsListChanged

    redis = start_redis()
    spec = tmp_path / "api.yaml"
    write_spec(spec, with_new_tool=False)
    a_base, a = start_replica(processes, tmp_path, "announce-a", spec, redis.url, mock_api_url)
    b_base, _ = start_replica(processes, tmp_path, "announce-b", spec, redis.url, mock_api_url)
    await wait_until("both replicas subscribed", lambda: all(
        readyz(base)["upstreams"].get("redis-announcements") == "reachable" for base in (a_base, b_base)))
    heard: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            heard.append("tools")

    async with connect(f"{b_base}/mcp", on_message=on_message) as legacy, \
            connect(f"{b_base}/mcp", mode="auto") as modern:
        assert NEW_TOOL not in [tool.name for tool in (await legacy.list_tools()).tools]
        async with modern.listen(tools_list_changed=True) as subscription:
            write_spec(spec, with_new_tool=True)
            os.kill(a.popen.pid, signal.SIGHUP)  # only A reloads
            await wait_until("replica A's reload", lambda: readyz(a_base)["reload"]["reloads"] == 1)
            with anyio.fail_after(10):
                event = await subscription.__anext__()  # the 2026-07-28 client on B
            await wait_until("the handshake-era client on B", lambda: heard == ["tools"], 10)
        assert isinstance(event, ToolsListChanged)
        assert readyz(b_base)["reload"]["reloads"] == 0  # B was told, not reloaded

        # Redis down: A's next reload is told to A's clients only, and both keep serving.
        redis.stop()
        await wait_until("B noticing Redis is gone", lambda: readyz(b_base)["upstreams"].get("redis-announcements") == "degraded")
        write_spec(spec, with_new_tool=False)
        os.kill(a.popen.pid, signal.SIGHUP)
        await wait_until("replica A's second reload", lambda: readyz(a_base)["reload"]["reloads"] == 2)
        assert readyz(a_base)["status"] == "ready"
        await anyio.sleep(1.0)
        assert heard == ["tools"]
        assert not (await legacy.call_tool("getUser", {"userId": "u1"})).is_error

        # Redis back on its port: B hears A again.
        start_redis(port=redis.port)
        await wait_until("both subscribed again", lambda: all(
            readyz(base)["upstreams"].get("redis-announcements") == "reachable" for base in (a_base, b_base)), 30)
        write_spec(spec, with_new_tool=True)
        os.kill(a.popen.pid, signal.SIGHUP)
        await wait_until("replica A's third reload", lambda: readyz(a_base)["reload"]["reloads"] == 3)
        await wait_until("the client on B told again", lambda: heard == ["tools", "tools"], 10)
