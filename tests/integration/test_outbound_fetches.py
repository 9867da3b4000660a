"""Every other outbound fetch of `openapi-mcp serve`, against hostile servers on loopback (issue 12,
items 6 and 1); the authorization server's fetches are in test_hostile_auth.py, the upstream API's
in test_decompression.py and tests/test_redirects.py.

* A spec served by URL whose same-origin `$ref` answers 302 to another origin: the server starts,
  the operation is skipped (the log says why), and the other origin's content is not in
  `tools/list`: it was never fetched.
* An MCP upstream (passthrough, tests/integration/hostile_mcp.py) that answers `tools/call` with a
  307 elsewhere: the call is a clear tool error, the redirect's target never gets the configured
  credentials; one that answers with 300 MB of JSON gzipped to 300 KB (JSON, SSE, or `tools/list`
  through the SDK client): bounded memory, a clear error, and the server keeps serving.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

from tests.integration.hostile import RawServer, page, redirect

if TYPE_CHECKING:
    from conftest import Process, Processes

pytestmark = [pytest.mark.integration]

ROOT: Final = Path(__file__).resolve().parents[2]
JSON_HEADERS: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
RSS_GROWTH_MB: Final = 100


@dataclass(frozen=True)
class Served:
    base_url: str
    process: Process
    clients: list[httpx.Client] = field(default_factory=list)

    def stop(self) -> None:
        """Close the sessions' connections, then stop: the drain waits for open keep-alive
        connections (converter.server.connections), up to their 5 s timeout."""
        for client in self.clients:
            client.close()
        self.process.stop()

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def session(self) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
        http = httpx.Client(base_url=self.base_url, timeout=30, trust_env=False)
        self.clients.append(http)
        init = http.post("/mcp", headers=JSON_HEADERS, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                    "clientInfo": {"name": "t", "version": "1"}}})
        assert init.status_code == 200, init.text
        headers = {**JSON_HEADERS, "mcp-session-id": init.headers["mcp-session-id"],
                   "mcp-protocol-version": "2025-06-18"}

        def rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
            answer = http.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": method,
                                                              "params": params})
            assert answer.status_code == 200, answer.text[:300]
            if answer.headers["content-type"].startswith("text/event-stream"):  # passthrough answers as a stream
                data = [line[5:] for line in answer.text.splitlines() if line.startswith("data:")]
                return json.loads(data[-1])  # type: ignore[no-any-return]
            return answer.json()  # type: ignore[no-any-return]

        return rpc


@pytest.fixture(scope="module")
def serve(processes: Processes, free_port: Callable[[], int], openapi_mcp_command: str,
          tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Served]:
    def start(name: str, settings: dict[str, Any], *, ready: str = "/healthz") -> Served:
        port = free_port()
        config = tmp_path_factory.mktemp(name) / "config.yaml"
        config.write_text(json.dumps(settings))
        process = processes.start(f"openapi-mcp-{name}", [
            openapi_mcp_command, "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)])
        process.wait_ready(f"http://127.0.0.1:{port}{ready}")
        return Served(f"http://127.0.0.1:{port}", process)

    return start


@pytest.fixture
def bystander() -> Iterator[RawServer]:
    with RawServer() as server:
        yield server


# -- a spec URL whose $ref redirects elsewhere ----------------------------------------------------


def test_a_ref_redirected_to_another_origin_never_reaches_tools_list(serve: Callable[..., Served],
                                                                     bystander: RawServer) -> None:
    bystander.routes["/p.json"] = page({"P": {"name": "stolen_from_the_other_origin", "in": "query",
                                              "schema": {"type": "string"}}})
    spec = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "servers": [{"url": "http://127.0.0.1:9"}],
            "paths": {"/r": {"get": {"operationId": "redirected", "parameters": [{"$ref": "/moved.json#/P"}],
                                     "responses": {"200": {"description": "OK"}}}},
                      "/things": {"get": {"operationId": "listThings", "responses": {"200": {"description": "OK"}}}}}}
    with RawServer({"/spec.json": page(spec)}) as home:
        home.routes["/moved.json"] = redirect(302, f"{bystander.url}/p.json")
        served = serve("ref-redirect", {"spec": f"{home.url}/spec.json", "cache": False})
        tools = served.session()("tools/list", {})["result"]["tools"]
    assert [tool["name"] for tool in tools] == ["listThings"]
    assert "stolen_from_the_other_origin" not in json.dumps(tools)
    assert bystander.requests == []
    assert f"redirects to '{bystander.url}/p.json', outside its origin {home.url}" in served.process.log()
    served.stop()


# -- a hostile MCP upstream -----------------------------------------------------------------------


def _hostile_mcp(processes: Processes, free_port: Callable[[], int], mode: str, target: str = "") -> str:
    port = free_port()
    process = processes.start(f"hostile-mcp-{mode}", [sys.executable, str(ROOT / "tests" / "integration" /
                                                                           "hostile_mcp.py"), str(port), mode, target])
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url, trust_env=False, timeout=1)
            return url
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail(f"hostile MCP upstream did not start: {process.log()}")


def test_an_mcp_upstream_redirect_is_not_followed_and_its_target_gets_no_credentials(
        serve: Callable[..., Served], processes: Processes, free_port: Callable[[], int],
        bystander: RawServer) -> None:
    upstream = _hostile_mcp(processes, free_port, "redirect", f"{bystander.url}/mcp")
    served = serve("mcp-redirect", {"mcp_upstream": {"url": upstream, "headers": {"X-Api-Key": "configured-secret"}}})
    rpc = served.session()
    result = rpc("tools/call", {"name": "echo", "arguments": {}})["result"]
    assert [r.headers.get("x-api-key") for r in bystander.requests] == []  # the credential went nowhere else
    assert result["isError"] is True
    assert result["content"][0]["text"] == (f"the MCP upstream {upstream} answered tools/call with HTTP 307 (a "
                                            f"redirect to '{bystander.url}/mcp'); redirects are not followed")
    served.stop()


@pytest.mark.parametrize("mode", ["bomb", "bomb-sse"])
def test_an_mcp_upstream_gzip_bomb_costs_bounded_memory(serve: Callable[..., Served], processes: Processes,
                                                        free_port: Callable[[], int], mode: str) -> None:
    upstream = _hostile_mcp(processes, free_port, mode)
    served = serve(f"mcp-{mode}", {"mcp_upstream": upstream})
    rpc = served.session()
    assert [t["name"] for t in rpc("tools/list", {})["result"]["tools"]] == ["echo"]
    before = served.peak_rss_mb()
    result = rpc("tools/call", {"name": "echo", "arguments": {}})["result"]
    assert result["isError"] is True, str(result)[:300]
    what = "an event larger than" if mode == "bomb-sse" else "more than"
    assert result["content"][0]["text"] == f"the MCP upstream {upstream} answered tools/call with {what} 33554432 bytes"
    assert served.peak_rss_mb() - before < RSS_GROWTH_MB
    assert rpc("tools/list", {})["result"]["tools"], "the server keeps serving"
    served.stop()


def test_a_gzip_bomb_on_the_sdk_client_path_costs_bounded_memory(serve: Callable[..., Served],
                                                                  processes: Processes,
                                                                  free_port: Callable[[], int]) -> None:
    upstream = _hostile_mcp(processes, free_port, "bomb-list")
    served = serve("mcp-bomb-list", {"mcp_upstream": upstream})
    rpc = served.session()
    answer = rpc("tools/list", {})
    assert answer.get("result", {}).get("tools", []) == [], str(answer)[:300]  # the list could not be read
    assert served.peak_rss_mb() < 250, f"{served.peak_rss_mb():.0f} MB"  # it starts at about 100 MB
    served.stop()
