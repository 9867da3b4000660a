"""The passthrough's HTTP side (converter.passthrough.transport) against a real HTTP server on
loopback (aiohttp.web, in-process) that answers the way MCP servers do: SSE framed with CRLF or
LF, priming events and comments, progress and log notifications on the call's stream, 404 for a
session it no longer knows, garbage. Failures come out typed, never as matched message text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from mcp.shared.exceptions import MCPError

from converter.config import McpUpstreamSettings
from converter.passthrough import transport
from converter.passthrough.source import MCPUpstreamSource
from converter.passthrough.transport import DirectCalls, LinkError, SessionGoneError

pytestmark = pytest.mark.anyio

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Factory: serve one handler at /mcp on a free loopback port; returns the URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/mcp", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/mcp"

    yield start
    for runner in runners:
        await runner.cleanup()


async def sse(request: web.Request, chunks: list[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


async def test_crlf_framed_events_with_priming_comments_and_notifications_are_read(upstream) -> None:
    seen: dict[str, Any] = {"progress": [], "notes": []}

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        token = body["params"]["_meta"]["progressToken"]
        answer = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": {
            "content": [{"type": "text", "text": "done"}], "isError": False}}, indent=1)
        progress = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress",
                               "params": {"progressToken": token, "progress": 1, "total": 2}})
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                           "params": {"level": "info", "data": "half way", "logger": "up"}})
        # CRLF (and bare CR) line endings, an id-only priming event, a comment, and the answer's
        # JSON over several `data:` lines of one event (joined with newlines, which JSON allows
        # between tokens), the last chunk cut in the middle of a line.
        lines = "".join(f"data: {line}\r\n" for line in answer.splitlines()) + "\r\n"
        return await sse(request, [b"id: 0\r\ndata:\r\n\r\n", b": keep-alive\r\n",
                                   f"data: {progress}\r\n\r\n".encode(), f"data: {note}\r\r".encode(),
                                   lines[:7].encode(), lines[7:].encode()])

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen["progress"].append((value, total))

    async def notify(method: str, params: dict[str, Any]) -> None:
        seen["notes"].append((method, params["data"]))

    url = await upstream(handler)
    calls = DirectCalls(url, {}, 5)
    try:
        result = await calls.call_tool("s1", "2025-11-25", "slow", {}, progress, notify=notify)
    finally:
        await calls.aclose()
    assert result.content[0].text == "done"  # type: ignore[union-attr]
    assert seen == {"progress": [(1.0, 2)], "notes": [("notifications/message", "half way")]}


async def test_a_session_the_upstream_forgot_is_session_gone_and_garbage_is_a_link_error(upstream) -> None:
    async def gone(request: web.Request) -> web.StreamResponse:
        return web.json_response({"jsonrpc": "2.0", "id": None,
                                  "error": {"code": -32000, "message": "Bad Request: No valid session ID provided"}},
                                 status=400)

    async def garbage(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    async def truncated(request: web.Request) -> web.StreamResponse:
        return await sse(request, [b"data: {\"jsonrpc\": \"2.0\", \"method\": \"notifications/progress\"}\n\n"])

    for handler, error, text in ((gone, SessionGoneError, "the upstream answered HTTP 400 on session 's1'"),
                                 (garbage, LinkError, "JSONDecodeError"),
                                 (truncated, LinkError, "the upstream's event stream ended without an answer")):
        calls = DirectCalls(await upstream(handler), {}, 5)
        try:
            with pytest.raises(error) as exc:
                await calls.request("s1", "2025-11-25", "tools/call", {"name": "x"})
        finally:
            await calls.aclose()
        assert str(exc.value).startswith(text)


async def test_the_upstreams_json_rpc_error_is_an_mcp_error_with_its_code(upstream) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        return web.json_response({"jsonrpc": "2.0", "id": body["id"],
                                  "error": {"code": -32602, "message": "Failed to retrieve task: Task not found"}})

    calls = DirectCalls(await upstream(refuse), {}, 5)
    try:
        with pytest.raises(MCPError) as exc:
            await calls.request("s1", "2025-11-25", "tasks/get", {"taskId": "nope"})
    finally:
        await calls.aclose()
    assert (exc.value.code, exc.value.error.message) == (-32602, "Failed to retrieve task: Task not found")


async def test_an_event_over_the_size_limit_is_a_link_error(upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "MAX_EVENT_BYTES", 1000)

    async def huge(request: web.Request) -> web.StreamResponse:
        return await sse(request, [b"data: " + b"x" * 5000 + b"\n\n"])

    calls = DirectCalls(await upstream(huge), {}, 5)
    try:
        with pytest.raises(LinkError):
            await calls.request("s1", "2025-11-25", "tools/call", {"name": "x"})
    finally:
        await calls.aclose()


async def test_the_reconnect_loop_logs_a_bug_with_its_traceback_and_a_lost_link_in_one_line(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio

    from converter.passthrough import source as source_module

    monkeypatch.setattr(source_module, "BACKOFF_START", 0.01)
    made = MCPUpstreamSource(McpUpstreamSettings(url="http://127.0.0.1:1/mcp"))
    failures: list[BaseException] = [ConnectionRefusedError(111, "Connection refused"), KeyError("tools")]

    async def connection() -> None:
        if failures:
            raise failures.pop(0)
        await anyio.sleep_forever()

    monkeypatch.setattr(made, "_connection", connection)
    made._first = anyio.Event()
    made._link_changed = anyio.Event()
    with caplog.at_level(logging.WARNING, logger="openapi_mcp"):
        with anyio.move_on_after(1):
            while failures:
                async with anyio.create_task_group() as group:
                    group.start_soon(made._supervise)
                    await anyio.sleep(0.2)
                    group.cancel_scope.cancel()
    lost, bug = [r for r in caplog.records if "127.0.0.1:1" in r.getMessage()]
    assert lost.levelno == logging.WARNING and lost.exc_info is None
    assert "cannot connect (Connection refused)" in lost.getMessage() or "cannot connect ([Errno 111]" in \
        lost.getMessage()
    assert bug.levelno == logging.ERROR and bug.exc_info is not None and isinstance(bug.exc_info[1], KeyError)
    assert "unexpected error" in bug.getMessage()
