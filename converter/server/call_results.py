"""`tools/call` results put in wire form once, instead of dumped, validated and dumped again.

The SDK (mcp 2.3) shapes every handler result for the wire in its runner: it dumps the model,
validates the dump against the negotiated version's surface model and dumps that again (the
"sieve", which drops what the version does not define). For the results our tools give (text
content, structured content, the error flag) the sieve changes nothing but key order, for every
handshake version, and it costs 6% of a call's CPU. `CallResults` is the innermost SDK server
middleware: for `tools/call` it does what the runner's handler step does (the version's request
validation, the initialize gate, the typed params, the handler) and writes such a result in the
sieve's own shape directly; any other result still goes through the sieve, here, with the SDK's
error for an invalid one. A 2026-07-28 result gets what the runner adds in that era too: the
`resultType` and the `serverInfo` stamp in `_meta` (a fresh copy of the server's, as the runner's).
tests/test_direct_calls.py checks the answers are byte-equal to the SDK's for every protocol
version; `server.direct_calls: false` turns this off.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from mcp import types
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError
from mcp_types import SERVER_INFO_META_KEY
from mcp_types.methods import serialize_server_result, validate_client_request
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

log = logging.getLogger("openapi_mcp")

Handler = Callable[[Any, types.CallToolRequestParams], Awaitable[types.CallToolResult]]
FAST_VERSIONS: Final = frozenset(HANDSHAKE_PROTOCOL_VERSIONS) | frozenset(MODERN_PROTOCOL_VERSIONS)
_MODERN: Final = frozenset(MODERN_PROTOCOL_VERSIONS)


def plain_wire(result: types.CallToolResult, *, modern: bool = False) -> dict[str, Any] | None:
    """`result` as the sieve writes it, when it holds only text content, structured content and the
    error flag; None for anything else (images, annotations, `_meta`, ...: the sieve shapes those).
    `modern`: the 2026-07-28 sieve's shape, which has `resultType` (the `serverInfo` stamp is not the
    sieve's: `stamped` adds it)."""
    if result.meta is not None:
        return None
    content = []
    for item in result.content:
        if type(item) is not types.TextContent or item.annotations is not None or item.meta is not None:
            return None
        content.append({"text": item.text, "type": "text"})
    wire: dict[str, Any] = {"content": content, "isError": result.is_error}
    if modern:
        wire["resultType"] = "complete"
    if result.structured_content is not None:
        wire["structuredContent"] = result.structured_content
    return wire


def stamped(wire: dict[str, Any], server_info: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A 2026-07-28 result as the runner finishes it: `resultType` required, and the server's
    `serverInfo` in `_meta` unless the result names one (a fresh `server_info()` each time)."""
    if wire.get("resultType") is None:
        wire["resultType"] = "complete"
    meta = wire.get("_meta")
    if meta is None:
        wire["_meta"] = {SERVER_INFO_META_KEY: server_info()}
    elif isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None:
        wire["_meta"] = {**meta, SERVER_INFO_META_KEY: server_info()}
    return wire


class CallResults:
    """Innermost SDK server middleware answering `tools/call` with `handler` (see the module docstring)."""

    def __init__(self, handler: Handler, server: Server[Any]) -> None:
        self._handler = handler
        self._server = server

    def _server_info(self) -> dict[str, Any]:
        return self._server.server_info_stamp

    async def __call__(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        version = ctx.protocol_version
        connection = getattr(ctx.session, "_connection", None)
        if (ctx.method != "tools/call" or version not in FAST_VERSIONS or connection is None
                or not connection.initialize_accepted or "tools/call" in self._server.cache_hints):
            return await call_next(ctx)  # the SDK's own path (and its initialize gate, and cache hints)
        params = ctx.params
        validate_client_request("tools/call", version, params)  # as the runner: ValidationError is -32602
        typed = types.CallToolRequestParams.model_validate({} if params is None else params, by_name=False)
        result = await self._handler(ctx, typed)
        modern = version in _MODERN
        wire = plain_wire(result, modern=modern)
        if wire is None:
            try:
                wire = serialize_server_result("tools/call", version,
                                               result.model_dump(by_alias=True, mode="json", exclude_none=True))
            except ValidationError:  # as the runner: a server bug, its detail only in the log
                log.exception("handler for 'tools/call' returned an invalid result")
                raise MCPError(code=types.INTERNAL_ERROR, message="Handler returned an invalid result") from None
        return stamped(wire, self._server_info) if modern else wire
