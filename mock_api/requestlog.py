"""The request log, the validating middleware in front of both mock apps, and the debug routes.

Tests of the converter look at `GET /__mock/requests` to see exactly what reached the upstream
(headers, raw query string, body) and whether it conformed to the OpenAPI document.
`POST /__mock/refuse {"count": N}` makes the next N requests answer `401 invalid_token` (an API
that no longer accepts the credential it was sent), recorded like any other.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mock_api.validation import RequestValidator, ValidationOutcome

JsonObject = dict[str, Any]

LOG_SIZE: Final = 200
DEBUG_PREFIX: Final = "/__mock/"
OUTCOME_KEY: Final = "mock_api.validation"
NOT_CONFORMING: Final = "request does not conform to the OpenAPI document"
ALL_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def error_response(status: int, error: str, **extra: Any) -> JSONResponse:
    """Return the mock's JSON error body: `{"error": ..., **extra}`."""
    return JSONResponse({"error": error, **extra}, status_code=status)


class RequestLog:
    """The last `LOG_SIZE` requests an app received, oldest first."""

    def __init__(self, size: int = LOG_SIZE) -> None:
        self._entries: deque[JsonObject] = deque(maxlen=size)
        self.refusals = 0  # how many of the next requests answer 401 (POST /__mock/refuse)

    def __repr__(self) -> str:
        return f"RequestLog(entries={len(self._entries)})"

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, request: Request, body: bytes, outcome: ValidationOutcome) -> JsonObject:
        """Record a request; the returned entry is updated with the response status later.

        An entry is `{"method", "path" (decoded), "raw_path" (as sent), "query" (the raw query
        string), "headers" (lowercased names; repeated headers joined with ", "), "body" (text,
        or base64 when not UTF-8), "body_encoding" ("utf-8" | "base64"), "status" (of the
        response), "operation" ({"method", "path", "operationId"} or null), "validation":
        {"outcome": "valid" | "invalid" | "no-path" | "no-method", "errors", "warnings"}}`.
        """
        try:
            text, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(body).decode("ascii"), "base64"
        headers: JsonObject = {}
        for name, value in request.headers.items():  # Starlette lowercases the names
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raw_path = request.scope.get("raw_path")
        entry: JsonObject = {
            "method": request.method,
            "path": request.url.path,
            "raw_path": raw_path.decode("latin-1").split("?")[0] if raw_path else request.url.path,
            "query": request.scope.get("query_string", b"").decode("latin-1"),
            "headers": headers,
            "body": text,
            "body_encoding": encoding,
            "status": None,
            "operation": outcome.operation.to_json() if outcome.operation else None,
            "validation": {"outcome": outcome.status, "errors": outcome.errors, "warnings": outcome.warnings},
        }
        self._entries.append(entry)
        return entry

    def entries(self) -> list[JsonObject]:
        """Return the recorded requests, oldest first."""
        return list(self._entries)

    def clear(self) -> None:
        """Forget every recorded request (and any refusals still to come)."""
        self._entries.clear()
        self.refusals = 0


class ValidatingMiddleware:
    """Validate every request outside `/__mock/` against the document and record it.

    A request that matches an operation but does not conform gets a 400 here and never reaches
    the app; otherwise the app finds the `ValidationOutcome` in `scope[OUTCOME_KEY]`.
    """

    def __init__(self, app: ASGIApp, validator: RequestValidator, log: RequestLog) -> None:
        self.app = app
        self.validator = validator
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(DEBUG_PREFIX):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        request = Request(scope)
        outcome = self.validator.validate(request, body)
        entry = self.log.add(request, body, outcome)

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        if self.log.refusals > 0:
            self.log.refusals -= 1
            refused = error_response(401, "invalid_token", detail="the credential is no longer accepted")
            refused.headers["www-authenticate"] = 'Bearer error="invalid_token"'
            await refused(scope, receive, send_and_record)
            return
        if outcome.status == "invalid":
            response = error_response(
                400,
                NOT_CONFORMING,
                detail="; ".join(outcome.errors),
                errors=outcome.errors,
                operation=outcome.operation.to_json() if outcome.operation else None,
            )
            await response(scope, receive, send_and_record)
            return
        scope[OUTCOME_KEY] = outcome
        await self.app(scope, _replay(body, receive), send_and_record)


async def _read_body(receive: Receive) -> bytes:
    """Read the whole request body."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Return a `receive` that hands the buffered body to the app once, then defers to the server."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def outcome_of(request: Request) -> ValidationOutcome:
    """Return the outcome the middleware stored for this request."""
    outcome = request.scope.get(OUTCOME_KEY)
    assert isinstance(outcome, ValidationOutcome), "ValidatingMiddleware is not installed"
    return outcome


def not_routed(outcome: ValidationOutcome, request: Request) -> Response:
    """Answer a request that matched no operation: 404 for an unknown path, else 405."""
    if outcome.status == "no-method":
        return error_response(405, f"method {request.method} is not allowed on {request.url.path}")
    return error_response(404, f"no operation of the OpenAPI document matches {request.url.path}")


def debug_routes(log: RequestLog, reset: Callable[[], None]) -> list[Route]:
    """Return the `/__mock/requests` and `/__mock/reset` routes (outside any OpenAPI document)."""

    async def list_requests(request: Request) -> JSONResponse:
        return JSONResponse(log.entries())

    async def reset_state(request: Request) -> JSONResponse:
        reset()
        log.clear()
        return JSONResponse({"reset": True})

    async def refuse(request: Request) -> JSONResponse:
        body = await request.json()
        count = body.get("count") if isinstance(body, dict) else None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return error_response(400, 'expected {"count": N}, N >= 0')
        log.refusals = count
        return JSONResponse({"refusals": count})

    return [
        Route(DEBUG_PREFIX + "requests", list_requests, methods=["GET"]),
        Route(DEBUG_PREFIX + "reset", reset_state, methods=["POST"]),
        Route(DEBUG_PREFIX + "refuse", refuse, methods=["POST"]),
    ]


def json_error_handlers() -> dict[Any, Callable[..., Any]]:
    """Return Starlette exception handlers that answer 404 and 405 in JSON."""

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, f"no route for {request.method} {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(405, f"method {request.method} is not allowed on {request.url.path}")

    return {404: not_found, 405: not_allowed}
