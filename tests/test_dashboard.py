"""The traffic page's data endpoint, in process: counts and percentiles after real calls, the
guard when auth is on, `dashboard: false`, and the page being self-contained."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import mock_api
from converter.config import load_settings
from converter.server.app import create_app
from converter.server.dashboard import MAX_ROWS, percentiles, summarize
from tests.mcp_http import mcp_request
from tests.test_auth import META, FakeAS, auth_settings

pytestmark = pytest.mark.anyio
BASE_URL = "http://127.0.0.1:8000"



def make_app(tmp_path: Path, **telemetry: Any):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                  "telemetry": {"access_log": "off", **telemetry}}))
    return create_app(load_settings(str(config)), upstream_transport=httpx.ASGITransport(app=mock_api.create_app()))


@asynccontextmanager
async def serving(app: Any, base_url: str = BASE_URL) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client talking to it in process."""
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url=base_url) as http:
        yield http


async def rpc(http: httpx.AsyncClient, method: str, params: dict | None = None, *, session: str | None = None,
              token: str | None = None, id: int | None = 1) -> httpx.Response:
    headers, body = mcp_request(method, params, session=session, token=token, id=id)
    return await http.post("/mcp", headers=headers, json=body)


async def calls(http: httpx.AsyncClient, token: str | None = None) -> None:
    """initialize, initialized, getUser ok x2, getUser 404 (tool error), an unknown tool (-32602)."""
    init = await rpc(http, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                          "clientInfo": {"name": "pytest-client", "version": "1"}}, token=token)
    assert init.status_code == 200, init.text
    sid = init.headers["mcp-session-id"]
    await rpc(http, "notifications/initialized", session=sid, token=token, id=None)
    for user in ("u1", "u2", "nobody"):
        await rpc(http, "tools/call", {"name": "getUser", "arguments": {"userId": user}}, session=sid, token=token)
    await rpc(http, "tools/call", {"name": "nope", "arguments": {}}, session=sid, token=token)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


async def test_data_reports_the_calls_with_counts_and_percentiles(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with serving(app) as http:
        await calls(http)
        response = await http.get("/dashboard/data")
    records = app.state.telemetry.recent.logs()  # the same records the metrics saw
    data = response.json()

    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    assert data["buffer"] == {"records": 6, "capacity": 500}
    assert data["counts"] == {
        "requests": 6, "errors": 2,
        "by_outcome": {"ok": 4, "tool_error": 1, "rpc_error": 1, "denied": 0, "limited": 0, "error": 0},
        "by_method": {"tools/call": 4, "initialize": 1, "notifications/initialized": 1},
    }
    assert data["top"] == {"tools": [{"name": "getUser", "count": 3, "errors": 1},
                                     {"name": "nope", "count": 1, "errors": 1}], "resources": [], "prompts": []}
    durations = [r["duration_ms"] for r in records]
    calls_only = [r["duration_ms"] for r in records if r["mcp_method"] == "tools/call"]
    upstream = [r["upstream_ms"] for r in records if "upstream_ms" in r]
    assert len(upstream) == 3
    for key, values in (("all", durations), ("tools_call", calls_only), ("upstream", upstream)):
        assert data["latency_ms"][key] == {"count": len(values), "max": max(values), "p50": nearest_rank(values, .5),
                                           "p90": nearest_rank(values, .9), "p99": nearest_rank(values, .99)}
    assert sum(data["rate"]["counts"]) == data["rate"]["last_minute"] == 6
    assert sum(sum(bucket.values()) for bucket in data["methods_over_time"]["counts"]) == 6
    assert data["methods_over_time"]["methods"][0] == "tools/call"

    rows = data["recent"]
    assert [(r["method"], r.get("name"), r["outcome"]) for r in rows] == [
        ("tools/call", "nope", "rpc_error"), ("tools/call", "getUser", "tool_error"),
        ("tools/call", "getUser", "ok"), ("tools/call", "getUser", "ok"),
        ("notifications/initialized", None, "ok"), ("initialize", None, "ok")]  # newest first
    assert rows[0]["jsonrpc_error"] == -32602 and rows[1]["upstream_status"] == 404
    assert rows[2]["upstream_url"] == "/marketplace/users/{userId}" and rows[-1]["client_name"] == "pytest-client"
    assert all(len(r["session"]) == 8 for r in rows)  # a prefix only: enough to tell sessions apart
    assert not any("payload" in key for r in rows for key in r)


def test_summarize_buckets_percentiles_and_limits() -> None:
    now = 1_000_000.0  # a multiple of 5 and of 15: the current buckets start now
    methods = ["tools/call", "tools/list", "initialize", "ping", "resources/read", "prompts/get", "completion/complete"]
    records = [{"time": now - 100 + i, "duration_ms": float(i + 1), "outcome": "ok", "mcp_method": methods[i % 7],
                "name": f"n{i % 3}"} for i in range(100)]
    records.append({"time": now - 2, "http_method": "GET", "http_status": 401, "auth_failure": "missing_token",
                    "outcome": "denied"})
    data = summarize(records, now=now, capacity=500, max_rows=20)

    assert data["latency_ms"]["all"] == {"count": 100, "max": 100.0, "p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert data["counts"]["by_outcome"] == {"ok": 100, "tool_error": 0, "rpc_error": 0, "denied": 1, "limited": 0, "error": 0}
    assert data["counts"]["by_method"]["(GET)"] == 1
    # Rate: the last 12 buckets of 5 s, the last one starting at `now`; times now-55 .. now-1 fall in.
    assert data["rate"]["start"] == now - 55 and len(data["rate"]["counts"]) == 12
    assert data["rate"]["counts"] == [5] * 10 + [6, 0]  # the 401 of two seconds ago is in the last full bucket
    assert data["rate"]["last_minute"] == 61 and data["rate"]["per_second"] == round(61 / 60, 3)
    # Methods over time: eight distinct methods, so five named series and "other".
    series = data["methods_over_time"]
    assert len(series["methods"]) == 6 and series["methods"][-1] == "other"
    assert sum(sum(b.values()) for b in series["counts"]) == 101
    assert data["top"]["resources"] and data["top"]["prompts"]
    assert [r.get("duration_ms") for r in data["recent"][:3]] == [None, 100.0, 99.0]  # newest first
    assert len(data["recent"]) == 20 and MAX_ROWS == 200
    assert len(summarize(records * 3, now=now)["recent"]) == MAX_ROWS


def test_percentiles_of_nothing_and_of_one() -> None:
    assert percentiles([]) == {"count": 0, "max": None, "p50": None, "p90": None, "p99": None}
    assert percentiles([7.0]) == {"count": 1, "max": 7.0, "p50": 7.0, "p90": 7.0, "p99": 7.0}


async def test_page_is_self_contained_and_allows_only_its_own_inline_code(tmp_path: Path) -> None:
    app = make_app(tmp_path, dashboard_path="/traffic")
    async with serving(app) as http:
        page = await http.get("/traffic")
        data = await http.get("/traffic/data")
        default = await http.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert data.status_code == 200 and default.status_code == 404
    text = page.text
    assert '<meta name="dashboard-data" content="/traffic/data">' in text
    assert not re.search(r"""\b(src|href)\s*=|@import|url\(""", text)  # nothing to fetch from anywhere
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) == {"http://www.w3.org/2000/svg"}  # a namespace only
    csp = page.headers["content-security-policy"]
    for tag in ("script", "style"):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "localStorage" not in text and "sessionStorage" not in text and "document.cookie" not in text


async def test_dashboard_false_removes_both_routes(tmp_path: Path) -> None:
    app = make_app(tmp_path, dashboard=False)
    async with serving(app) as http:
        page = await http.get("/dashboard")
        data = await http.get("/dashboard/data")
    assert (page.status_code, data.status_code) == (404, 404)


async def test_data_refuses_a_foreign_host_on_a_loopback_listener(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with serving(app, base_url="http://evil.test") as http:
        rebound = await http.get("/dashboard/data")
        page = await http.get("/dashboard")
    assert rebound.status_code == 421 and page.status_code == 200  # DNS rebinding gets no data


async def test_with_auth_a_caller_without_the_dashboard_scopes_sees_only_its_own_requests(tmp_path: Path) -> None:
    fake_as = FakeAS()
    alice = fake_as.add("alice-token", sub="alice")
    bob = fake_as.add("bob-token", sub="bob", client_id="other-cli")
    app = create_app(auth_settings(tmp_path), upstream_transport=httpx.ASGITransport(app=mock_api.create_app()),
                     auth_transport=httpx.MockTransport(fake_as.handler))
    async with serving(app) as http:
        await calls(http, token=alice)
        await calls(http, token=bob)
        seen = await http.get("/dashboard/data", headers={"authorization": f"Bearer {alice}"})
    assert seen.status_code == 200
    rows = seen.json()["recent"]
    assert rows and {r.get("subject") for r in rows} == {"alice"}


async def test_with_auth_the_data_needs_a_token_and_the_page_does_not(tmp_path: Path) -> None:
    fake_as = FakeAS()
    good = fake_as.add("good")
    low = fake_as.add("low", scope="other")
    app = create_app(auth_settings(tmp_path), upstream_transport=httpx.ASGITransport(app=mock_api.create_app()),
                     auth_transport=httpx.MockTransport(fake_as.handler))
    async with serving(app) as http:
        await calls(http, token=good)

        async def data(**headers: str) -> httpx.Response:
            return await http.get("/dashboard/data", headers=headers)

        page = await http.get("/dashboard")
        missing = await data()
        garbage = await data(authorization="Bearer not-a-token")
        basic = await data(authorization="Basic dXNlcjpwYXNz")
        lacking = await data(authorization=f"Bearer {low}")
        ok = await data(authorization=f"Bearer {good}")

    assert page.status_code == 200 and "getUser" not in page.text
    assert missing.status_code == 401
    assert missing.json() == {"error": "unauthorized", "error_description": "An access token is required"}
    # The same challenge as /mcp (the same auth layer answers both).
    assert missing.headers["www-authenticate"] == f'Bearer resource_metadata="{META}", scope="mcp:tools"'
    assert garbage.status_code == 401
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]
    assert basic.status_code == 400 and basic.json()["error"] == "invalid_request"
    assert lacking.status_code == 403
    assert lacking.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{META}", scope="mcp:tools", error="insufficient_scope", '
        'error_description="The access token lacks required scopes"')
    assert ok.status_code == 200
    body = ok.json()
    assert body["top"]["tools"] == [{"name": "getUser", "count": 3, "errors": 1}, {"name": "nope", "count": 1, "errors": 1}]
    assert {r.get("subject") for r in body["recent"] if r["method"] == "tools/call"} == {"alice"}
    assert body["counts"]["by_outcome"]["denied"] == 0  # the dashboard's own refusals are not MCP traffic
