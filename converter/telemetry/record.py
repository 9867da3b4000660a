"""CallRecord: one per request, filled by each layer it passes, emitted once at the end."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class CallRecord:
    """What happened to one request: who, what, how it went upstream, how long, how big."""

    started: float = field(default_factory=time.perf_counter)
    time: float = field(default_factory=time.time)
    transport: str = "http"
    http_method: str | None = None
    path: str | None = None
    http_status: int | None = None
    mcp_method: str | None = None
    name: str | None = None  # tool / resource / prompt name
    session: str | None = None
    client_name: str | None = None
    subject: str | None = None
    client_id: str | None = None
    auth_failure: str | None = None  # missing_token, invalid_token, insufficient_scope, auth_server_unavailable
    acl_denied: bool | None = None  # the access rules (or the PDP) refused this call (it answered "unknown tool")
    pdp: str | None = None  # the decision service's answer for this call: allow | deny | error
    limited: str | None = None  # the rate-limit rule that refused this request (its label)
    jsonrpc_error: int | None = None
    is_error: bool | None = None  # tools/call result isError
    upstream_method: str | None = None
    upstream_url: str | None = None  # the path template, not the filled URL (no argument values)
    upstream_status: int | None = None
    upstream_ms: float | None = None
    # The upstream API's own credentials (converter.credentials), never a value: what the call
    # carried (token_exchange, client_credentials, api_key, basic, static_token, upstream_headers,
    # none; "+" joins an AND of schemes), why it carried nothing (not_configured, no_caller_token,
    # caller_token_expired, unusable, or the token endpoint's unreachable, timeout, refused,
    # invalid_response), the OAuth error code the token endpoint answered, and whether an upstream
    # 401 made it fetch a new token and send again.
    upstream_auth: str | None = None
    upstream_auth_error: str | None = None
    token_endpoint_error: str | None = None
    upstream_auth_retried: bool | None = None
    duration_ms: float | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    request_payload: Any = None  # only when payload logging is on (secrets redacted)
    response_payload: Any = None

    @property
    def outcome(self) -> str:
        """ok | tool_error | rpc_error | denied | limited | error, for metrics labels and filters."""
        if self.limited is not None:
            return "limited"
        if self.auth_failure is not None or self.acl_denied:
            return "denied"
        if self.jsonrpc_error is not None:
            return "rpc_error"
        if self.is_error:
            return "tool_error"
        if self.http_status is not None and self.http_status >= 400:
            return "error"
        return "ok"

    @property
    def caller_outcome(self) -> str:
        """The outcome as the caller could tell it: a call the access rules hid answered like an
        unknown name (a JSON-RPC error), so it counts as one wherever callers can look (/metrics)."""
        return "rpc_error" if self.acl_denied and self.auth_failure is None else self.outcome

    def finish(self) -> None:
        self.duration_ms = round((time.perf_counter() - self.started) * 1000, 3)

    def as_log(self) -> dict[str, Any]:
        """The JSON access-log form: no empty fields, no clock internals."""
        # Field by field (dataclasses.asdict deep-copies: measurable at thousands of calls/s).
        data = {name: value for name in _LOG_FIELDS if (value := getattr(self, name)) is not None}
        data["outcome"] = self.outcome
        return data


def as_seen_by_caller(log: dict[str, Any]) -> dict[str, Any]:
    """An access-log record (`as_log`) as its own caller saw the request: a hidden name's denial
    becomes the unknown-name error it was answered with."""
    if not log.get("acl_denied") or log.get("auth_failure"):
        return log
    seen = {key: value for key, value in log.items() if key != "acl_denied"}
    seen["outcome"] = "rpc_error"
    return seen


_LOG_FIELDS = tuple(f.name for f in fields(CallRecord) if f.name != "started")

# The record of the request being handled, for layers that do not see the ASGI scope
# (the upstream client fills its fields through this).
current_record: ContextVar[CallRecord | None] = ContextVar("openapi_mcp_record", default=None)

RECORD_KEY = "openapi_mcp.record"
