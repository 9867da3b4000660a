"""Caller-controlled framing and credential headers (issue 12, item 11), against the real echo mock.

tests/specs/hostile-headers.yaml declares Host, Transfer-Encoding, Content-Length, Connection and
the other hop-by-hop headers, and the configured credential (`x-api-key` while the config says
`X-Api-Key`), as header parameters. `openapi-mcp check` warns about each one left out of the tool;
`openapi-mcp serve` leaves them out of `tools/list`, and whatever a caller sends under those names,
the echo mock (`python -m mock_api --spec`, which records every request) receives the server's own
framing and the configured key, once. A declared `Accept-Encoding` stays a tool argument (the
document asks for it), limited to the codings the server decodes within its body caps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Processes

pytestmark = [pytest.mark.integration]

ROOT: Final = Path(__file__).resolve().parents[2]
SPEC: Final = ROOT / "tests" / "specs" / "hostile-headers.yaml"
JSON_HEADERS: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
LEFT_OUT: Final = ["Host", "Transfer-Encoding", "Content-Length", "Connection", "Keep-Alive", "TE", "Upgrade",
                   "Expect", "Proxy-Authorization"]


@pytest.fixture(scope="module")
def echo(processes: Processes, free_port: Callable[[], int]) -> str:
    port = free_port()
    process = processes.start("echo-hostile-headers", [
        sys.executable, "-m", "mock_api", "--spec", str(SPEC), "--port", str(port), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(f"{url}/__mock/requests")
    return url


@pytest.fixture(scope="module")
def config(echo: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("caller-headers") / "config.yaml"
    path.write_text(json.dumps({"spec": str(SPEC), "upstream": {"url": echo,
                                                               "headers": {"X-Api-Key": "configured-key"}}}))
    return path


def test_check_warns_about_each_header_left_out(config: Path, openapi_mcp_command: str) -> None:
    done = subprocess.run([openapi_mcp_command, "check", "--config", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    framing = "HTTP framing and hop-by-hop headers are set by the server, never by the caller"
    expected = [f"warning  #/paths/~1items/post: header parameter {name!r} is left out of the tool: {framing}"
                for name in LEFT_OUT]
    expected.append("warning  #/paths/~1items/post: header parameter 'x-api-key' is left out of the tool: the "
                    "server sets it (upstream.headers or auth.claim_to_header), so the caller may not")
    assert done.stdout.splitlines() == [*expected, "1 tools, 0 operation(s) skipped, 10 warning(s)"]


def test_the_caller_cannot_set_framing_or_credential_headers(
        processes: Processes, free_port: Callable[[], int], openapi_mcp_command: str, echo: str,
        config: Path) -> None:
    port = free_port()
    process = processes.start("openapi-mcp-caller-headers", [
        openapi_mcp_command, "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    process.wait_ready(f"{base}/healthz")
    httpx.post(f"{echo}/__mock/reset", trust_env=False)
    with httpx.Client(base_url=base, timeout=20, trust_env=False) as http:
        init = http.post("/mcp", headers=JSON_HEADERS, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                    "clientInfo": {"name": "t", "version": "1"}}})
        headers = {**JSON_HEADERS, "mcp-session-id": init.headers["mcp-session-id"],
                   "mcp-protocol-version": "2025-06-18"}
        tools = http.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).json()
        schema = tools["result"]["tools"][0]["inputSchema"]
        assert sorted(schema["properties"]) == ["Accept-Encoding", "X-Trace", "name"]

        def call(arguments: dict[str, Any]) -> dict[str, Any]:
            answer = http.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                                              "params": {"name": "createItem", "arguments": arguments}})
            return answer.json()["result"]  # type: ignore[no-any-return]

        hostile = {"Host": "internal.example", "Transfer-Encoding": "chunked", "Content-Length": "0",
                   "Connection": "close", "x-api-key": "callers-key", "X-Api-Key": "callers-key"}
        refused = call({"X-Trace": "t-1", "name": "n", **hostile})
        undecodable = call({"X-Trace": "t-1", "name": "n", "Accept-Encoding": "br"})
        sent = call({"X-Trace": "t-2", "name": "n", "Accept-Encoding": "gzip"})
    # arguments the tool does not declare are refused before anything is sent
    assert refused["isError"] is True and "Additional properties are not allowed" in refused["content"][0]["text"]
    assert undecodable["isError"] is True and "'br'" in undecodable["content"][0]["text"]
    assert not sent.get("isError"), sent
    received = httpx.get(f"{echo}/__mock/requests", trust_env=False).json()
    assert len(received) == 1
    got = received[0]["headers"]
    assert got["host"] == echo.removeprefix("http://")
    assert got["x-api-key"] == "configured-key"  # once, the configured value
    assert got["content-length"] == str(len(received[0]["body"].encode())) and "transfer-encoding" not in got
    assert got["x-trace"] == "t-2" and got["accept-encoding"] == "gzip"
    assert received[0]["validation"]["outcome"] == "valid"
