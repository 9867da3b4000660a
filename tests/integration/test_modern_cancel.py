"""A 2026-07-28 client cancels a call by closing its request (there is no session to send
`notifications/cancelled` on): `openapi-mcp serve` as a real process, its upstream holding every
call until the test releases it (test_replicas_cancel.HoldingUpstream), raw HTTP from the test.

Checked, with JSON answers (the default for OpenAPI tools, where the SDK does not watch for the
client going) and with SSE answers (where it does): the client closing its connection mid-call
closes the upstream call within a few seconds; a call whose client stays is answered as usual.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from tests.integration.conftest import wait_until
from tests.integration.test_replicas_cancel import HOLD_CONFIG, HoldingUpstream

if TYPE_CHECKING:
    from tests.integration.conftest import Processes

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MODERN: Final = "2026-07-28"
CONFIG: Final = HOLD_CONFIG + """server: {{json_response: {json_response}}}
telemetry: {{access_log: "off"}}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def upstream() -> Iterator[HoldingUpstream]:
    with HoldingUpstream() as server:
        yield server


def start(processes: Processes, command: str, port: int, upstream: HoldingUpstream, tmp: Path,
          json_response: bool) -> None:
    config = tmp / f"config-{json_response}.yaml"
    config.write_text(CONFIG.format(upstream=upstream.url, json_response=str(json_response).lower()))
    process = processes.start(f"openapi-mcp-modern-cancel-{port}", [
        command, "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)])
    process.wait_ready(f"http://127.0.0.1:{port}/healthz")


def modern_call(port: int, call: str) -> socket.socket:
    """A 2026-07-28 `tools/call hold` sent on a connection of its own, left open."""
    body = json.dumps({"jsonrpc": "2.0", "id": call, "method": "tools/call", "params": {
        "name": "hold", "arguments": {"call": call},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}}}}).encode()
    head = (f"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"accept: application/json, text/event-stream\r\nmcp-protocol-version: {MODERN}\r\n"
            f"mcp-method: tools/call\r\nmcp-name: hold\r\ncontent-length: {len(body)}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + body)
    return sock


@pytest.mark.parametrize("json_response", [True, False])
async def test_a_2026_client_closing_its_request_cancels_the_call(
        processes: Processes, openapi_mcp_command: str, free_port: Callable[[], int], upstream: HoldingUpstream,
        tmp_path: Path, json_response: bool) -> None:
    port = free_port()
    start(processes, openapi_mcp_command, port, upstream, tmp_path, json_response)
    gone, kept = f"gone-{json_response}", f"kept-{json_response}"

    sock = modern_call(port, gone)
    await wait_until(f"{gone} reaching the upstream", lambda: gone in upstream.started)
    closed_at = time.monotonic()
    sock.close()
    await wait_until(f"{gone} closed upstream", lambda: upstream.ended.get(gone) == "closed", 5)
    print(f"client closed -> upstream call closed: {(upstream.ended_at[gone] - closed_at) * 1000:.1f} ms")

    with modern_call(port, kept) as sock:  # the same server still answers a client that stays
        await wait_until(f"{kept} reaching the upstream", lambda: kept in upstream.started)
        upstream.release(kept)
        status, answer = read_json_answer(sock)
    assert upstream.ended[kept] == "answered"
    assert status == 200 and answer["result"]["isError"] is False, answer  # type: ignore[index]
    result = answer["result"]
    assert isinstance(result, dict) and json.loads(result["content"][0]["text"]) == {"call": kept, "released": True}


def read_json_answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """The status and JSON body of the HTTP response on `sock` (a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = int(next(line.split(":", 1)[1] for line in lines if line.lower().startswith("content-length:")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, body
        body += chunk
    return int(lines[0].split()[1]), json.loads(body[:length])
