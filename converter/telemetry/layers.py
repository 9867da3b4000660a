"""Where CallRecords are made and filled: an ASGI layer around the MCP endpoint, and an SDK
middleware that sees each JSON-RPC message (also on stdio, where there is no HTTP)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from converter.telemetry.record import RECORD_KEY, CallRecord, current_record
from converter.telemetry.sinks import Fanout, Metrics

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|api[-_]?key|cookie|credential", re.I)
MAX_PAYLOAD_CHARS = 4000
_PEEK_BYTES = 65536


class TelemetryLayer:
    """Outermost ASGI layer on the MCP path: one CallRecord per HTTP request, emitted at the end."""

    def __init__(self, app: ASGIApp, *, sink: Fanout, mcp_path: str, metrics: Metrics | None = None) -> None:
        self.app = app
        self.sink = sink
        self.mcp_path = mcp_path.rstrip("/") or "/"
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["path"].rstrip("/") or "/") != self.mcp_path:
            await self.app(scope, receive, send)
            return
        record = CallRecord(http_method=scope["method"], path=scope["path"])
        for key, value in scope["headers"]:
            if key == b"mcp-session-id":
                record.session = value.decode("latin-1")[:64]
        scope[RECORD_KEY] = record

        first_chunk = b""

        async def counting_receive() -> Message:
            nonlocal first_chunk
            message = await receive()
            body = message.get("body", b"")
            if not record.request_bytes:
                first_chunk = body[:_PEEK_BYTES]
            record.request_bytes += len(body)
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.http_status = message["status"]
                if record.session is None:
                    for key, value in message.get("headers", ()):
                        if key.lower() == b"mcp-session-id":
                            record.session = value.decode("latin-1")[:64]
            elif message["type"] == "http.response.body":
                record.response_bytes += len(message.get("body", b""))
            await send(message)

        metrics = self.metrics
        if metrics is not None:
            metrics.request_started()
        try:
            await self.app(scope, counting_receive, recording_send)
        finally:
            if metrics is not None:
                metrics.request_ended()
            if record.mcp_method is None and first_chunk:
                # Notifications are answered (202) before the SDK handles them: name them from the body.
                record.mcp_method = _method_of(first_chunk)
            record.finish()
            self.sink.emit(record)


class McpTelemetry:
    """SDK server middleware: names the MCP method, tool and outcome on the request's record."""

    def __init__(self, sink: Fanout, *, log_payloads: bool = False) -> None:
        self.sink = sink
        self.log_payloads = log_payloads

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        request = getattr(ctx, "request", None)
        scope = getattr(request, "scope", None)
        found = scope.get(RECORD_KEY) if isinstance(scope, dict) else None
        own = not isinstance(found, CallRecord)  # stdio (or in-process): no HTTP layer made one, so this emits it
        record: CallRecord = found if isinstance(found, CallRecord) else CallRecord(transport="stdio")
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        record.mcp_method = ctx.method
        name = params.get("name", params.get("uri"))
        if isinstance(name, str):
            record.name = name[:200]
        if ctx.method == "initialize":
            info = params.get("clientInfo")
            if isinstance(info, Mapping) and isinstance(info.get("name"), str):
                record.client_name = info["name"][:100]
        if self.log_payloads:
            record.request_payload = _payload(params)
        token = current_record.set(record)
        answer: dict[str, Any] = {}
        try:
            result = await call_next(ctx)
        except MCPError as exc:
            record.jsonrpc_error = exc.code
            answer = {"error": exc.error.model_dump(by_alias=True, mode="json", exclude_none=True)}
            raise
        except ValidationError:
            record.jsonrpc_error = -32602
            raise
        else:
            # Filled before the record is emitted below (on stdio this layer emits it).
            if isinstance(result, Mapping):
                if ctx.method in ("tools/call", "tasks/result"):
                    record.is_error = result.get("isError") is True
                if self.log_payloads:
                    record.response_payload = _payload(result)
                answer = {"result": result}
            return result
        finally:
            current_record.reset(token)
            if own and ctx.request_id is not None:
                # No HTTP layer counts bytes here: the sizes of the JSON-RPC messages, as HTTP's are.
                record.request_bytes = _size({"jsonrpc": "2.0", "id": ctx.request_id, "method": ctx.method,
                                              "params": params})
                record.response_bytes = _size({"jsonrpc": "2.0", "id": ctx.request_id, **answer}) if answer else 0
                record.finish()
                self.sink.emit(record)


def _size(message: Mapping[str, Any]) -> int:
    try:
        return len(json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str).encode())
    except (TypeError, ValueError, RecursionError):
        return 0


def _method_of(body: bytes) -> str | None:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # the transport already answered it; the log just has no method
        return None
    method = message.get("method") if isinstance(message, dict) else None
    return method[:100] if isinstance(method, str) else None


def _payload(value: Any) -> Any:
    """A copy for the log with secret-looking fields redacted and long text cut."""
    if isinstance(value, Mapping):
        return {
            k: "[redacted]" if isinstance(k, str) and _SECRET_KEY.search(k) else _payload(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_payload(v) for v in value[:100]]
    if isinstance(value, str) and len(value) > MAX_PAYLOAD_CHARS:
        return value[:MAX_PAYLOAD_CHARS] + "...[cut]"
    return value
