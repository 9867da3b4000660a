"""A generic mock for any OpenAPI 3.x document that echoes what it understood of each request.

For every request that matches an operation the answer is 200 with::

    {"operation": {"method": "POST", "path": "/pets/{petId}", "operationId": "..."},
     "parameters": {"path": {...}, "query": {...}, "header": {...}, "cookie": {...}},
     "body": <the unmarshalled body>, "content_type": "...", "parts": [...]}

where the values are openapi-core's unmarshalled ones (so `?limit=5` shows up as the integer 5
and `filter[minPrice]=10` as `{"minPrice": 10.0}`), binary values (uploaded files) are shown as
`{"filename", "content_type", "size", "sha256"}`, and `parts` lists a multipart body's parts as
received. A request that does not conform gets the same 400 as the marketplace app. Tests use it
to check that the requests the converter builds conform to small, tricky documents.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mock_api.document import load_document
from mock_api.multipart import MultipartPart, multipart_parts
from mock_api.requestlog import (
    ALL_METHODS,
    RequestLog,
    ValidatingMiddleware,
    debug_routes,
    json_error_handlers,
    not_routed,
    outcome_of,
)
from mock_api.validation import RequestValidator


def to_jsonable(value: Any, parts: list[MultipartPart] | None = None, name: str | None = None) -> Any:
    """Convert unmarshalled values (bytes, dates, UUIDs...) to JSON; bytes become file facts.

    Bytes are described by the multipart part they came from (matched by field name, then by
    content) as `{"filename", "content_type", "size", "sha256"}`.
    """
    if isinstance(value, bytes):
        candidates = sorted(parts or (), key=lambda part: part.name != name)
        part = next((p for p in candidates if p.data == value), None)
        return {
            "filename": part.filename if part else None,
            "content_type": part.content_type if part else None,
            "size": len(value),
            "sha256": hashlib.sha256(value).hexdigest(),
        }
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item, parts, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item, parts, name) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def create_echo_app(spec_path: str | Path) -> Starlette:
    """Create an app that validates requests against the document and echoes them.

    Args:
        spec_path: an OpenAPI 3.0, 3.1 or 3.2 document, JSON or YAML. It is used even when
            openapi-spec-validator finds problems in it (they are listed in
            `app.state.document_problems`), as long as requests can be validated against it.

    Raises:
        DocumentError: the document cannot be read or is not valid OpenAPI 3.x.
    """
    document = load_document(spec_path)
    validator = RequestValidator(
        document, source=str(spec_path), base_uri=Path(spec_path).resolve().as_uri(), strict=False
    )
    log = RequestLog()

    async def echo(request: Request) -> Response:
        outcome = outcome_of(request)
        if outcome.operation is None:
            return not_routed(outcome, request)
        content_type = request.headers.get("content-type")
        parts = multipart_parts(content_type or "", await request.body())
        payload: dict[str, Any] = {
            "operation": outcome.operation.to_json(),
            "parameters": to_jsonable(outcome.parameters, parts),
            "body": to_jsonable(outcome.body, parts),
            "content_type": content_type,
        }
        if parts:
            payload["parts"] = [
                {"name": p.name, "filename": p.filename, "content_type": p.content_type, "size": len(p.data)}
                for p in parts
            ]
        return JSONResponse(payload)

    app = Starlette(
        routes=[*debug_routes(log, lambda: None), Route("/{path:path}", echo, methods=ALL_METHODS)],
        middleware=[Middleware(ValidatingMiddleware, validator=validator, log=log)],
        exception_handlers=json_error_handlers(),
    )
    app.state.request_log = log
    app.state.document_problems = validator.problems
    return app
