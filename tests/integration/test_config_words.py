"""`telemetry: {access_log: off}`, as the README writes it, against a running server (issue 12, item 13).

YAML 1.1 read `off` as false and the config was refused; the config file is now read as YAML 1.2
(converter.config.file). The server starts, answers, and writes no access-log line; the same
config with `access_log: stderr` writes one per request (so the check can see them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Processes

pytestmark = [pytest.mark.integration]

ROOT: Final = Path(__file__).resolve().parents[2]
SPEC: Final = ROOT / "mock_api" / "marketplace.yaml"
JSON_HEADERS: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def _access_lines(log: str) -> list[dict[str, object]]:
    lines = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            lines.append(record)
    return lines


@pytest.mark.parametrize(("written", "logged"), [("off", False), ("Off", False), ("stderr", True)])
def test_access_log_off_as_the_readme_writes_it(processes: Processes, free_port: Callable[[], int],
                                                 openapi_mcp_command: str, mock_api_url: str, tmp_path: Path,
                                                 written: str, logged: bool) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"spec: {SPEC}\nupstream: {{url: {mock_api_url}}}\ntelemetry: {{access_log: {written}}}\n")
    port = free_port()
    process = processes.start(f"openapi-mcp-access-log-{written}", [
        openapi_mcp_command, "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    process.wait_ready(f"{base}/healthz")
    init = httpx.post(f"{base}/mcp", headers=JSON_HEADERS, trust_env=False, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert init.status_code == 200, init.text
    process.stop()
    assert bool(_access_lines(process.log())) is logged, process.log()[-2000:]
    assert not (ROOT / written).exists()  # `Off` is the keyword, not a file name (the server runs in ROOT)
