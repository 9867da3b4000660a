"""`notifications/cancelled` relayed to the replica that runs the call, over Redis pub/sub.

Behind a load balancer without affinity, the POST that carries a handshake-era client's
`notifications/cancelled` may land on another replica than the one running the `tools/call` it
names (sessions are sealed: converter.server.shared_sessions). That replica's session has no such
request in flight, so the SDK's dispatcher drops the notification and the call would run to its
end. With `redis:` set, `CancelRelay` watches the notifications every session's dispatcher
receives (the dispatcher's notification intercept, which runs in receive order right after the
dispatcher applied the cancel itself):

- a `notifications/cancelled` whose request is in flight in this session here is left to the
  dispatcher (it has just cancelled it); only one that is not is relayed, so a local cancel costs
  nothing and never reaches Redis;
- the message published on `<key_prefix>cancels` names the session by the SHA-256 of its ID (as
  the ended-sessions keys do: whoever reads Redis learns no session ID), the request ID and the
  reason (both capped), and the publishing replica's random id (no replica acts on its own);
- a replica acts only on a session of its own with that digest that has that exact request in
  flight, and cancels it as its dispatcher cancels on `notifications/cancelled` (`cancel_requested`
  set, the request's scope cancelled: the SDK's own path and the direct answers alike), so the
  client sees what a local cancel gives. The digest is of the session the notification came on,
  which that replica served only to the session's owner (the SDK's binding), so a caller can only
  cancel calls of its own session: a request ID of another session matches nothing.

Bounded: one message per relayed cancel, at most `MAX_MESSAGE_BYTES`; at most `OUTBOX` waiting
to be published (more are dropped); subscriptions live as long as the server (one listener, the
sessions are only entries in a table that each session's server task removes when it ends).
Redis down, slow or failing: nothing on the request path waits for it (the notification's `202`
was sent before the dispatcher saw it); relaying is skipped for `RETRY_SECONDS` after a failed
publish, the listener subscribes again every `RETRY_SECONDS` (converter.server.pubsub), each
outage is logged once, the call runs to its end, and `/readyz` says `"redis-cancels":
"degraded"` (still ready).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from mcp.shared.dispatcher import OnNotifyIntercept, coerce_request_id
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher, cancelled_request_id_from_params

from converter.redis_client import session_digest
from converter.server.session_relay import SessionRelay, read_message

log = logging.getLogger("openapi_mcp.sessions")

__all__ = ["CancelRelay", "session_digest"]

CHANNEL: Final = "cancels"
CANCELLED: Final = "notifications/cancelled"
OUTBOX: Final = 256  # relayed cancels waiting to be published
MAX_ID_CHARS: Final = 200  # a longer string request ID is not relayed (JSON-RPC IDs are short in practice)
MAX_REASON_CHARS: Final = 200
MAX_MESSAGE_BYTES: Final = 2048  # a request ID of MAX_ID_CHARS always fits, however it is escaped


class CancelRelay(SessionRelay):
    """Relays cancels of calls in flight on other replicas, and applies theirs (see the module docstring)."""

    channel_name = CHANNEL
    outbox = OUTBOX
    what = CANCELLED
    lost = "a call running on another replica runs to its end"
    hearing = "the other replicas' cancellations"
    readiness = "redis-cancels"
    metric = "openapi_mcp_cancels_relayed"
    metric_help = ("notifications/cancelled for calls on another replica, by result (published: sent to the "
                   "others; applied: a call here cancelled for another; dropped: not relayed)")
    cancelled = 0  # calls this replica cancelled for another one

    def counts(self) -> dict[str, int]:
        return {**super().counts(), "applied": self.cancelled}

    @contextmanager
    def watching(self, session_id: str, dispatcher: JSONRPCDispatcher[Any]) -> Iterator[OnNotifyIntercept]:
        """For as long as `dispatcher` runs `session_id` here: its notification intercept."""
        with self._registered(session_id, dispatcher) as digest:

            def intercept(method: str, params: Mapping[str, Any] | None) -> bool:
                if method == CANCELLED:
                    self._seen(digest, dispatcher, params)
                return False  # never consumed: the SDK's on_notify runs as always

            yield intercept

    def _seen(self, digest: str, dispatcher: JSONRPCDispatcher[Any], params: Mapping[str, Any] | None) -> None:
        """A `notifications/cancelled` on this session: relayed when its request is not in flight here."""
        request_id = cancelled_request_id_from_params(params)
        if request_id is None or coerce_request_id(request_id) in dispatcher._in_flight:
            return  # malformed (the SDK drops it too), or cancelled here by the dispatcher just now
        encoded = _encode(self.replica, digest, request_id, (params or {}).get("reason"))
        if encoded is not None:
            self._queue(encoded)

    def _parse(self, data: Any) -> tuple[str, int | str, str | None] | None:
        return _parse(data, self.replica)

    def _act(self, dispatcher: JSONRPCDispatcher[Any], session_id: str, found: tuple[Any, ...]) -> None:
        """Another replica's relayed cancel: applied only to that exact request in flight here."""
        _, request_id, reason = found
        in_flight = dispatcher._in_flight.get(coerce_request_id(request_id))
        if in_flight is None:
            return
        # What the dispatcher does on notifications/cancelled (JSONRPCDispatcher._dispatch_notification,
        # peer_cancel_mode "interrupt", which every session here uses).
        in_flight.dctx.cancel_requested.set()
        in_flight.scope.cancel()
        self.cancelled += 1
        log.info("cancelled request %r of session %s… on notifications/cancelled received by another replica%s",
                 request_id, session_id[:12], f" ({reason!r})" if reason else "")


def _encode(replica: str, digest: str, request_id: int | str, reason: Any) -> str | None:
    """The message for a relayed cancel, within MAX_MESSAGE_BYTES (the reason cut, or left out when
    it does not fit); None for a request ID longer than MAX_ID_CHARS (no real client's)."""
    if isinstance(request_id, str) and len(request_id) > MAX_ID_CHARS:
        return None
    message: dict[str, Any] = {"from": replica, "session": digest, "request": request_id}
    if isinstance(reason, str) and reason:
        encoded = json.dumps({**message, "reason": reason[:MAX_REASON_CHARS]}, ensure_ascii=False)
        if len(encoded.encode()) <= MAX_MESSAGE_BYTES:
            return encoded
    return json.dumps(message, ensure_ascii=False)


def _parse(data: Any, own: str) -> tuple[str, int | str, str | None] | None:
    """(session digest, request ID, reason) of another replica's message; None for our own messages
    and anything malformed (converter.server.session_relay.read_message)."""
    message = read_message(data, own, MAX_MESSAGE_BYTES)
    if message is None:
        return None
    request_id, reason = message.get("request"), message.get("reason")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return None
    return message["session"], request_id, reason if isinstance(reason, str) else None
