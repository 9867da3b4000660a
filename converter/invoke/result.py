"""Turn an upstream response (or failure) into an MCP `CallToolResult`."""

from __future__ import annotations

import base64
import json
from typing import Any

import mcp.types as types

from converter.invoke.upstream import UpstreamResponse
from converter.tools.shaping import FILTERED_KEY

EXCERPT_CHARS = 500
MISMATCH_BODY_CHARS = 20_000
# Declared binary types are never sniffed: an all-ASCII PDF is still a PDF.
_BINARY = ("application/pdf", "application/octet-stream", "application/zip", "application/gzip", "application/x-gzip",
           "application/x-tar", "application/x-7z", "application/msword", "application/vnd.ms-",
           "application/vnd.openxmlformats", "application/protobuf", "application/x-protobuf", "application/wasm",
           "audio/", "video/", "font/", "image/")
_TEXTUAL = ("text/", "application/xml", "application/javascript", "application/x-www-form-urlencoded",
            "application/yaml", "application/x-yaml", "application/graphql")


def error_result(message: str) -> types.CallToolResult:
    """A tool error the model can read and correct itself from."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def map_response(response: UpstreamResponse, plan: Any, chosen: Any = None) -> types.CallToolResult:
    """Map an upstream response to the tool result (plan: the `ToolPlan` that made the call;
    chosen: the caller's compiled response filter, see converter.tools.shaping)."""
    essence = response.content_type.split(";", 1)[0].strip().lower()
    where = f"{plan.method} {plan.path}"
    if not 200 <= response.status < 300:
        excerpt = _excerpt(response.body)
        text = f"Upstream answered HTTP {response.status} {response.reason} to {where}"
        return error_result(f"{text}: {excerpt}" if excerpt else text)
    if response.truncated and plan.output_schema is not None:
        # A cut JSON body cannot be structured content, and MCP requires it for this tool.
        return error_result(f"Upstream answered {where} with a body larger than the configured limit of "
                            f"{len(response.body):,} bytes (upstream.max_response_bytes); its start: "
                            f"{_excerpt(response.body)}")
    notice = ""
    if response.truncated:
        notice = (f"\n[response truncated: only the first {len(response.body):,} bytes are shown; "
                  "the body is larger than the configured limit]")
    if essence.startswith("image/") and not response.truncated:
        return types.CallToolResult(content=[types.ImageContent(
            type="image", data=base64.b64encode(response.body).decode(), mime_type=essence)])
    if not response.body:
        if plan.output_schema is not None:
            return error_result(f"Upstream answered HTTP {response.status} to {where} with an empty body, "
                                "but the operation documents a JSON response")
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=f"HTTP {response.status} {response.reason}".strip())]
        )
    is_json = essence == "application/json" or essence.endswith("+json")
    if is_json or essence.startswith(_TEXTUAL) or (not essence.startswith(_BINARY) and _looks_textual(response.body)):
        text = response.body.decode("utf-8", errors="replace")
        if is_json and not response.truncated:
            return _json_result(text, plan, where, chosen)
        if plan.output_schema is not None and not response.truncated:
            return error_result(f"Upstream answered {where} with {essence or 'no content type'}, not the JSON "
                                f"the operation documents: {_excerpt(response.body)}")
        if plan.shaping is not None:
            text = plan.shaping.cut_text(text)
        if chosen is not None:
            notice += f"\n[{plan.shaping.argument} not applied: the response is {essence or 'not JSON'}, not JSON]"
        return types.CallToolResult(content=[types.TextContent(type="text", text=text + notice)])
    blob = types.BlobResourceContents(uri=response.url, mime_type=essence or "application/octet-stream",
                                      blob=base64.b64encode(response.body).decode())
    content: list[Any] = [types.EmbeddedResource(type="resource", resource=blob)]
    if notice:
        content.append(types.TextContent(type="text", text=notice.strip()))
    return types.CallToolResult(content=content)


def _json_result(text: str, plan: Any, where: str, chosen: Any) -> types.CallToolResult:
    shaping = plan.shaping
    try:
        data = json.loads(text)
    except ValueError:
        if plan.output_schema is not None:
            return error_result(f"Upstream answered {where} with invalid JSON: {text[:EXCERPT_CHARS]}")
        text = shaping.cut_text(text) if shaping is not None else text
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])
    if shaping is not None:
        if shaping.fixed is not None or chosen is not None:
            return _filtered_result(data, plan, where, chosen)
        if (too_big := shaping.too_big(text, where)) is not None:
            return error_result(too_big)
    content: list[types.ContentBlock] = [types.TextContent(type="text", text=text)]
    if plan.output_schema is None:
        return types.CallToolResult(content=content)
    structured = {"result": data} if plan.wraps_result else data
    problem = plan.check_output(structured)
    if problem is not None:
        # MCP: a result must conform to the tool's outputSchema; the body does not, so say so
        # (as a tool error, which clients do not validate) and still give the model the data.
        return error_result(f"Upstream answered {where} with JSON that does not match the documented "
                            f"response schema ({problem}); the body was: {text[:MISMATCH_BODY_CHARS]}")
    return types.CallToolResult(content=content, structured_content=structured)


def _excerpt(body: bytes) -> str:
    text = body[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace").strip()
    text = " ".join(text.split())
    return text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else "")


def _looks_textual(body: bytes) -> bool:
    sample = body[:512]
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in sample


def _filtered_result(data: Any, plan: Any, where: str, chosen: Any) -> types.CallToolResult:
    """The answer through the tool's fixed filter and/or the caller's (converter.tools.shaping)."""
    shaping = plan.shaping
    try:
        selected = shaping.apply(data, chosen)
    except ValueError as exc:
        return error_result(f"The response filter failed on the answer of {where}: {exc}")
    text = json.dumps(selected, ensure_ascii=False)
    if (too_big := shaping.too_big(text, where)) is not None:
        return error_result(too_big)
    content: list[types.ContentBlock] = [types.TextContent(type="text", text=text)]
    if chosen is not None and plan.tool.output_schema is not None:
        return types.CallToolResult(content=content, structured_content={FILTERED_KEY: selected})
    return types.CallToolResult(content=content)
