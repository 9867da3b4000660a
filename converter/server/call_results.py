"""`tools/call` results put in wire form once, instead of dumped, validated and dumped again.

The SDK (mcp 2.3) shapes every handler result for the wire in its runner: it dumps the model,
validates the dump against the negotiated version's surface model and dumps that again (the
"sieve", which drops what the version does not define). For the results our tools give (text
content, structured content, the error flag) the sieve changes nothing but key order, for every
handshake version, and it costs 6% of a call's CPU. `CallResults` is the innermost SDK server
middleware: for `tools/call` it does what the runner's handler step does (the version's request
validation, the initialize gate, the typed params, the handler) and writes such a result in the
sieve's own shape directly; any other result still goes through the sieve, here, with the SDK's
error for an invalid one. tests/test_direct_calls.py checks the answers are byte-equal to the
SDK's for every handshake version; `server.direct_calls: false` turns this off.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from mcp import types
from mcp.shared.exceptions import MCPError
from mcp_types.methods import serialize_server_result, validate_client_request
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError

log = logging.getLogger("openapi_mcp")

Handler = Callable[[Any, types.CallToolRequestParams], Awaitable[types.CallToolResult]]
FAST_VERSIONS: Final = frozenset(HANDSHAKE_PROTOCOL_VERSIONS)  # 2026-07-28 results get more (resultType, serverInfo)


def plain_wire(result: types.CallToolResult) -> dict[str, Any] | None:
    """`result` as the sieve writes it, when it holds only text content, structured content and the
    error flag; None for anything else (images, annotations, `_meta`, ...: the sieve shapes those)."""
    if result.meta is not None:
        return None
    content = []
    for item in result.content:
        if type(item) is not types.TextContent or item.annotations is not None or item.meta is not None:
            return None
        content.append({"text": item.text, "type": "text"})
    wire: dict[str, Any] = {"content": content, "isError": result.is_error}
    if result.structured_content is not None:
        wire["structuredContent"] = result.structured_content
    return wire


class CallResults:
    """Innermost SDK server middleware answering `tools/call` with `handler` (see the module docstring)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def __call__(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        version = ctx.protocol_version
        connection = getattr(ctx.session, "_connection", None)
        if (ctx.method != "tools/call" or version not in FAST_VERSIONS or connection is None
                or not connection.initialize_accepted):
            return await call_next(ctx)  # the SDK's own path (and its initialize gate)
        params = ctx.params
        validate_client_request("tools/call", version, params)  # as the runner: ValidationError is -32602
        typed = types.CallToolRequestParams.model_validate({} if params is None else params, by_name=False)
        result = await self._handler(ctx, typed)
        wire = plain_wire(result)
        if wire is not None:
            return wire
        try:
            return serialize_server_result("tools/call", version,
                                           result.model_dump(by_alias=True, mode="json", exclude_none=True))
        except ValidationError:  # as the runner: a server bug, its detail only in the log
            log.exception("handler for 'tools/call' returned an invalid result")
            raise MCPError(code=types.INTERNAL_ERROR, message="Handler returned an invalid result") from None
