"""What a direct answer takes (converter.server.direct_calls): a POST that is exactly one JSON-RPC
`tools/call` or `tools/list` request the SDK's own message validation accepts, and that may have
a JSON answer; and, for stateless requests, the stand-ins for what the SDK's per-request server
would have had."""

from __future__ import annotations

from typing import Any, Final, cast

import anyio
import pydantic_core
from mcp.server.streamable_http import CONTENT_TYPE_JSON, check_accept_headers
from mcp.shared.transport_context import TransportContext
from starlette.requests import Request

DIRECT_METHODS: Final = frozenset({"tools/call", "tools/list"})
_KEYS: Final = frozenset({"jsonrpc", "id", "method", "params"})


DirectRequest = tuple[int | str, str, dict[str, Any] | None]  # (id, method, params)


def direct_request(body: bytes) -> DirectRequest | None:
    """(id, method, params) of `body` when it is one JSON-RPC request for a DIRECT_METHODS method that
    the SDK's own message validation accepts as such; None for anything else (the SDK handles it)."""
    try:
        message = pydantic_core.from_json(body)  # the parser the SDK's transport uses
    except ValueError:
        return None
    if not isinstance(message, dict) or not message.keys() <= _KEYS or message.get("jsonrpc") != "2.0":
        return None
    request_id, method, params = message.get("id"), message.get("method"), message.get("params")
    if not isinstance(request_id, int | str) or isinstance(request_id, bool) or method not in DIRECT_METHODS:
        return None  # a bool id, a notification (no id), a response: not for here
    if params is not None and not isinstance(params, dict):
        return None
    return request_id, method, params


def takes_json(request: Request, *, sse: bool = False) -> bool:
    """Whether a POST may be answered directly: it sends JSON and accepts it, and with `sse` (a
    session with SSE answers) event streams too (else the SDK answers 406 or 415)."""
    has_json, has_sse = check_accept_headers(request)
    return has_json and (has_sse or not sse) and any(
        part.strip() == CONTENT_TYPE_JSON for part in request.headers.get("content-type", "").split(";")[0].split(","))


class _Nowhere:
    """Both streams of a stateless direct answer's dispatcher, which never runs: nothing is read, and
    what is written (a notification scoped to the request) is dropped, as the SDK's router drops it
    in JSON-answer mode."""

    async def send(self, item: Any) -> None:
        return None

    async def receive(self) -> Any:
        raise anyio.EndOfStream

    async def aclose(self) -> None:
        return None


NOWHERE: Final = cast(Any, _Nowhere())


def no_back_channel(metadata: Any) -> TransportContext:
    return TransportContext(kind="streamable-http", can_send_request=False)
