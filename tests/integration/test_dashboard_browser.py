"""The traffic page in a real headless browser (Debian `chromium` driven by `playwright-core`).

`openapi-mcp serve` runs as a process in front of the marketplace mock; the official SDK client
makes a few tool calls; `tests/node/dashboard-check.mjs` opens `/dashboard`, waits for the table
to show them, saves a screenshot and prints a JSON summary of the rendered DOM, which is checked
against the server's own `/dashboard/data`. Loopback only: the script blocks any other address.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from tests.integration.authserver import SVC_USER, AuthServer
from tests.integration.conftest import NODE_DIR, ROOT, SPEC, child_env

if TYPE_CHECKING:
    from tests.integration.conftest import McpServer, MockApi, Processes

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CHROMIUM: Final = Path("/usr/bin/chromium")
SCRIPT: Final = NODE_DIR / "dashboard-check.mjs"
BROWSER_TIMEOUT: Final = 60.0


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium; missing means the test command could not install it, which is a failure."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's `chromium` package (scripts/test.sh does it when run "
                    "as root: apt-get install chromium)", pytrace=False)
    return CHROMIUM


def open_dashboard(url: str, screenshot: Path, *, rows: int, filter_name: str | None = None,
                   token: str | None = None, prompt_screenshot: Path | None = None) -> dict[str, Any]:
    """Run dashboard-check.mjs and return its DOM summary; fail with its output when it fails."""
    node = shutil.which("node")
    assert node is not None  # the node_bin fixture checked it
    argv = [node, str(SCRIPT), "--url", url, "--screenshot", str(screenshot), "--rows", str(rows),
            "--chromium", str(CHROMIUM), "--timeout", "30000"]
    if filter_name is not None:
        argv += ["--filter-name", filter_name]
    if token is not None:
        argv += ["--token", token]
    if prompt_screenshot is not None:
        argv += ["--prompt-screenshot", str(prompt_screenshot)]
    started = time.monotonic()
    try:
        done = subprocess.run(argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=BROWSER_TIMEOUT,
                              env=child_env())
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"dashboard-check.mjs did not finish within {BROWSER_TIMEOUT:g} s\n{exc.stdout!r}\n{exc.stderr!r}",
                    pytrace=False)
    print(f"dashboard-check.mjs ran in {time.monotonic() - started:.1f} s", file=sys.stderr)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        pytest.fail(f"dashboard-check.mjs exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}",
                    pytrace=False)
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR; fails when the file is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def dashboard_data(base_url: str, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{base_url}/dashboard/data", headers=headers, trust_env=False, timeout=10)


def assert_page_is_clean(summary: dict[str, Any], *, expected_errors: tuple[str, ...] = ()) -> None:
    """Nothing failed in the page (but `expected_errors`), nothing left loopback, nothing was stored."""
    assert [e for e in summary["console_errors"] if e not in expected_errors] == [], summary["console_errors"]
    assert summary["page_errors"] == [], summary["page_errors"]
    assert summary["blocked"] == [], summary["blocked"]
    assert all(url.startswith(("http://127.0.0.1:", "data:")) for url in summary["requested"]), summary["requested"]
    assert summary["storage"] == {"local": 0, "session": 0, "cookies": ""}
    assert "script-src 'sha256-" in summary["csp"] and "default-src 'none'" in summary["csp"]


async def test_the_page_shows_the_calls_made_with_the_sdk(start_server: Callable[..., McpServer], mock_api: MockApi,
                                                          node_bin: Path, chromium: Path, tmp_path: Path) -> None:
    server = start_server()  # its own process: the ring buffer holds this test's requests only
    async with Client(server.url) as client:
        assert not (await client.call_tool("getUser", {"userId": "u1"})).is_error
        assert not (await client.call_tool("listUsers", {})).is_error
        assert not (await client.call_tool("getUser", {"userId": "u2"})).is_error
        assert (await client.call_tool("getUser", {"userId": "u42"})).is_error  # upstream 404
        with pytest.raises(MCPError):
            await client.call_tool("noSuchTool", {})
    data = dashboard_data(server.base_url).json()
    truth = data["recent"]
    assert [r["name"] for r in truth if r["method"] == "tools/call"] == [
        "noSuchTool", "getUser", "getUser", "listUsers", "getUser"]

    screenshot = tmp_path / "dashboard.png"
    summary = open_dashboard(f"{server.base_url}/dashboard", screenshot, rows=len(truth), filter_name="getUser")

    assert summary["http_status"] == 200 and summary["live"]["state"] == "live"
    assert summary["rows"] == len(truth)
    assert [(r["method"], r["name"], r["outcome"]) for r in summary["table"]] == [
        (r["method"], r.get("name", ""), r["outcome"]) for r in truth]  # newest first, as served
    assert summary["tools_shown"] == ["getUser", "listUsers", "noSuchTool"]
    assert summary["top_tools"] == [{"name": "getUser", "count": 3}, {"name": "listUsers", "count": 1},
                                    {"name": "noSuchTool", "count": 1}]
    assert summary["status"] == data["counts"]["by_outcome"]
    assert summary["status"]["tool_error"] == 1 and summary["status"]["rpc_error"] == 1
    assert summary["status"]["ok"] == len(truth) - 2
    assert summary["counters"]["requests"] == str(len(truth))
    assert all(summary["counters"][p] not in ("", "–") for p in ("p50", "p90", "p99"))
    assert summary["latency"]["latency-tools_call"][0] != "–"
    assert "tools/call" in summary["methods_legend"] and summary["charts"]["rate_bars"] >= 1
    assert sorted(summary["filter_options"]["status"]) == sorted(k for k, v in data["counts"]["by_outcome"].items() if v)
    assert summary["filtered"]["rows"] == 3 and summary["filtered"]["names"] == ["getUser"]
    assert_page_is_clean(summary)

    width, height = png_size(screenshot)
    assert width == 1440 and height >= 900
    assert screenshot.stat().st_size > 30_000  # a rendered page, not a blank one
    print(f"screenshot: {screenshot}", file=sys.stderr)


@asynccontextmanager
async def connect(url: str, token: str) -> AsyncIterator[Client]:
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http, \
            Client(streamable_http_client(url, http_client=http)) as client:
        yield client


async def test_with_auth_the_page_asks_for_a_token_and_keeps_it_in_memory(
        processes: Processes, auth_server: AuthServer, mock_api: MockApi, node_bin: Path, chromium: Path,
        tmp_path: Path) -> None:
    port = auth_server.mcp_port
    base_url = f"http://127.0.0.1:{port}"
    config = tmp_path / "auth.yaml"
    config.write_text(json.dumps({
        "spec": str(SPEC), "upstream": {"url": mock_api.url}, "server": {"port": port},
        "auth": {"resource": f"{base_url}/mcp", "authorization_servers": [auth_server.issuer],
                 "introspection_endpoint": auth_server.introspection_endpoint, "client_id": "mcp-gateway",
                 "client_secret": "gateway-secret", "required_scopes": ["mcp:tools"]},
    }))
    process = processes.start("openapi-mcp-dashboard-auth", [str(Path(sys.executable).parent / "openapi-mcp"),
                                                             "serve", "--config", str(config)])
    process.wait_ready(f"{base_url}/healthz")
    token = auth_server.token(*SVC_USER)
    async with connect(f"{base_url}/mcp", token) as client:
        assert not (await client.call_tool("listUsers", {})).is_error
    assert dashboard_data(base_url).status_code == 401
    data = dashboard_data(base_url, token)
    assert data.status_code == 200
    rows = data.json()["recent"]

    screenshot, prompt = tmp_path / "dashboard-auth.png", tmp_path / "dashboard-token-prompt.png"
    summary = open_dashboard(f"{base_url}/dashboard", screenshot, rows=len(rows), token=token, prompt_screenshot=prompt)

    assert summary["auth_shown"] and not summary["auth_visible"]
    assert summary["tools_shown"] == ["listUsers"]
    assert any("svc-user" in row["cells"][-1] for row in summary["table"]), summary["table"]
    assert token not in summary["location"] and all(token not in url for url in summary["requested"])
    # Chromium logs the first, token-less poll's 401; nothing else may fail.
    assert_page_is_clean(summary, expected_errors=(
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)",))
    assert png_size(screenshot)[0] == png_size(prompt)[0] == 1440
    print(f"screenshots: {screenshot} {prompt}", file=sys.stderr)
