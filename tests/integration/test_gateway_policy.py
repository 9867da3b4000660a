"""Issue 14 against running servers: a decision service (the Cedar-backed AuthZEN PDP) on top of
scopes and rules, and rate limits per caller and tool (in memory, and shared by two processes
through a real Redis). Tokens come from the oidc-provider realm (tests/integration/authserver.py):
`svc-user` (roles user) and `svc-admin` are the subjects the PDP's tuples name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.authserver import AuthServer
from tests.integration.conftest import ROOT, Process, Processes, _free_port
from tests.integration.services import PDP_CLIENT, PdpServer, RedisServer

pytestmark = pytest.mark.integration
ACCEPT = "application/json, text/event-stream"
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
TUPLES = ("user:svc-user reader tool:listUsers", "user:svc-admin reader tool:listUsers",
          "user:svc-admin reader tool:getUser", "user:svc-admin reader tool:createOrder")
PORTS = [_free_port() for _ in range(6)]


@dataclass
class Server:
    url: str
    process: Process

    @property
    def base(self) -> str:
        return self.url.rsplit("/mcp", 1)[0]


@pytest.fixture(scope="module")
def idp(start_auth_server: Callable[..., AuthServer]) -> AuthServer:
    return start_auth_server([f"http://127.0.0.1:{port}/mcp" for port in PORTS])


@pytest.fixture
def serve(processes: Processes, tmp_path: Path, idp: AuthServer, mock_api_url: str) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(port: int, **extra: Any) -> Server:
        url = f"http://127.0.0.1:{port}/mcp"
        config = tmp_path / f"{port}.yaml"
        config.write_text(json.dumps({
            "spec": str(ROOT / "specs" / "marketplace.yaml"), "upstream": {"url": mock_api_url},
            "server": {"port": port}, "auth": {
                "resource": url, "authorization_servers": [idp.issuer],
                "introspection_endpoint": idp.introspection_endpoint, "client_id": "mcp-gateway",
                "client_secret": "gateway-secret", "required_scopes": ["mcp:tools"]}, **extra}))
        openapi_mcp = str(Path(__import__("sys").executable).parent / "openapi-mcp")
        process = processes.start(f"policy-{port}", [openapi_mcp, "serve", "--config", str(config)])
        process.wait_ready(f"http://127.0.0.1:{port}/healthz")
        server = Server(url, process)
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.stop()


def rpc(server: Server, method: str, params: dict | None = None, *, token: str, session: str | None = None,
        version: str = "2025-06-18") -> httpx.Response:
    headers = {"content-type": "application/json", "accept": ACCEPT, "mcp-protocol-version": version,
               "authorization": f"Bearer {token}"}
    if session:
        headers["mcp-session-id"] = session
    return httpx.post(server.url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                           "params": params or {}}, trust_env=False, timeout=30)


def session(server: Server, token: str) -> str:
    init = rpc(server, "initialize", INIT, token=token)
    assert init.status_code == 200, init.text
    sid = init.headers["mcp-session-id"]
    httpx.post(server.url, headers={"authorization": f"Bearer {token}", "mcp-session-id": sid, "accept": ACCEPT,
                                    "content-type": "application/json", "mcp-protocol-version": "2025-06-18"},
               json={"jsonrpc": "2.0", "method": "notifications/initialized"}, trust_env=False)
    return sid


def listed(server: Server, token: str) -> list[str]:
    sid = session(server, token)
    return [t["name"] for t in rpc(server, "tools/list", token=token, session=sid).json()["result"]["tools"]]


def call(server: Server, token: str, tool: str, arguments: dict, sid: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = rpc(server, "tools/call", {"name": tool, "arguments": arguments}, token=token,
                                 session=sid or session(server, token)).json()
    return answer


def pdp_block(pdp: PdpServer, **extra: Any) -> dict[str, Any]:
    return {"url": pdp.url, "client_id": PDP_CLIENT[0], "client_secret": PDP_CLIENT[1], **extra}


def test_the_gravitee_am_preset_filters_lists_in_one_batch_and_guards_calls(serve, idp: AuthServer,
                                                                         pdp_server: PdpServer) -> None:
    pdp_server.tuples(TUPLES)
    server = serve(PORTS[0], pdp=pdp_block(pdp_server))
    user = idp.token("svc-user", "user-secret", resource=server.url)
    admin = idp.token("svc-admin", "admin-secret", resource=server.url)
    assert listed(server, user) == ["listUsers"]
    batches = [r for r in pdp_server.requests() if r["path"].endswith("/evaluations")]
    assert len(batches) == 1 and len(batches[0]["body"]["evaluations"]) >= 5  # every tool, one round trip
    assert batches[0]["body"]["subject"] == {"type": "user", "id": "svc-user"}
    assert batches[0]["body"]["action"] == {"name": "can_access"}
    assert sorted(listed(server, admin)) == ["createOrder", "getUser", "listUsers"]
    sid = session(server, user)
    assert "result" in call(server, user, "listUsers", {}, sid)
    refused = call(server, user, "getUser", {"userId": "u1"}, sid)  # the PDP says no: like an unknown tool
    assert refused["error"] == {"code": -32602, "message": "Unknown tool: 'getUser'"}
    assert "result" in call(server, admin, "getUser", {"userId": "u1"})
    # With AM's preset a list and a call ask the same question (can_access): the calls were answered
    # from the decisions the two lists cached, so the PDP saw two batch requests and nothing else.
    assert [r["path"].rsplit("/", 1)[1] for r in pdp_server.requests()] == ["evaluations", "evaluations"]
    assert all(r["auth"] == "basic" for r in pdp_server.requests())  # AM's client_secret_basic
    metrics = httpx.get(f"{server.base}/metrics", trust_env=False).text
    assert 'openapi_mcp_pdp_decisions_total{decision="deny"}' in metrics
    assert "openapi_mcp_pdp_request_duration_seconds_count" in metrics


def test_the_coaz_preset_sends_the_mcp_method_and_the_agent(serve, idp: AuthServer, pdp_server: PdpServer) -> None:
    pdp_server.tuples(TUPLES)
    server = serve(PORTS[1], pdp=pdp_block(pdp_server, preset="coaz-mcp", batch=False))
    user = idp.token("svc-user", "user-secret", resource=server.url)
    assert "result" in call(server, user, "listUsers", {})
    bodies = [r["body"] for r in pdp_server.requests()]
    assert {"subject": {"type": "identity", "id": "svc-user"}, "resource": {"type": "tool", "id": "listUsers"},
            "action": {"name": "tools/call"}, "context": {"agent": "svc-user"}} in bodies


@pytest.mark.parametrize("mode", ["error500", "garbage", "string", "slow", "down"])
def test_a_decision_service_that_cannot_answer_allows_nothing(serve, idp: AuthServer, pdp_server: PdpServer,
                                                              mode: str) -> None:
    pdp_server.tuples(TUPLES)
    url = pdp_server.url if mode != "down" else f"http://127.0.0.1:{_free_port()}/demo/access/v1/evaluation"
    server = serve(PORTS[2], pdp={"url": url, "client_id": PDP_CLIENT[0], "client_secret": PDP_CLIENT[1],
                                  "timeout": 0.5, "cache_ttl": 0})
    if mode != "down":
        pdp_server.mode(mode, delay=2.0)
    user = idp.token("svc-user", "user-secret", resource=server.url)
    sid = session(server, user)
    assert rpc(server, "tools/list", token=user, session=sid).json()["result"]["tools"] == []
    refused = call(server, user, "listUsers", {}, sid)
    assert refused["error"]["code"] == -32602  # fail closed, answered like an unknown tool
    ready = httpx.get(f"{server.base}/readyz", trust_env=False)
    assert ready.status_code == 503 and "unreachable" in ready.json()["upstreams"].values()


def test_limits_count_per_caller_across_sessions_and_answer_the_model(serve, idp: AuthServer) -> None:
    server = serve(PORTS[3], limits=[{"tools": ["list*"], "per": "subject", "requests": 3, "window": 60},
                                     {"per": "subject", "requests": 12, "window": 60}])
    user = idp.token("svc-user", "user-secret", resource=server.url)
    admin = idp.token("svc-admin", "admin-secret", resource=server.url)
    first = session(server, user)
    answers = [call(server, user, "listUsers", {}, first) for _ in range(3)]
    assert all(not a["result"].get("isError") for a in answers)
    again = session(server, user)  # a new session is the same caller
    limited = call(server, user, "listUsers", {}, again)["result"]
    assert limited["isError"] is True
    assert limited["content"][0]["text"].startswith("Rate limit reached for calls to 'listUsers' (3 requests per 60")
    assert not call(server, admin, "listUsers", {})["result"].get("isError")  # another caller is unaffected
    assert not call(server, user, "getUser", {"userId": "u1"}, again)["result"].get("isError")  # another tool
    # The rule without tools counts every request: past it, HTTP 429 with Retry-After.
    statuses = [rpc(server, "tools/list", token=user, session=again).status_code for _ in range(8)]
    assert 429 in statuses
    refused = rpc(server, "tools/list", token=user, session=again)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["message"].startswith("Rate limit reached for requests")
    metrics = httpx.get(f"{server.base}/metrics", trust_env=False).text
    assert 'openapi_mcp_rate_limited_total{tool="listUsers"} 1.0' in metrics
    assert 'openapi_mcp_rate_limited_total{tool="(none)"}' in metrics


def test_two_processes_share_one_limit_through_redis(serve, idp: AuthServer, redis_server: RedisServer) -> None:
    shared = {"limits": [{"tools": ["listUsers"], "per": "subject", "requests": 4, "window": 60}],
              "redis": {"url": redis_server.url, "key_prefix": f"test-{PORTS[4]}:"}}
    a, b = serve(PORTS[4], **shared), serve(PORTS[5], **shared)
    token_a = idp.token("svc-user", "user-secret", resource=a.url)
    token_b = idp.token("svc-user", "user-secret", resource=b.url)
    sid_a, sid_b = session(a, token_a), session(b, token_b)
    results = [call(server, token, "listUsers", {}, sid)["result"].get("isError", False)
               for server, token, sid in [(a, token_a, sid_a), (b, token_b, sid_b)] * 3]
    assert results == [False, False, False, False, True, True]  # 4 in all, not 4 per process
    ready = httpx.get(f"{a.base}/readyz", trust_env=False).json()
    assert ready["upstreams"]["redis"] == "reachable"
