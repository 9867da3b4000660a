"""The client's answer to a request the server sent it, relayed to the replica that sent it, over Redis pub/sub.

During a passthrough tool call an upstream MCP server may ask the client something (sampling,
elicitation, roots: converter.passthrough.handlers.request_relay); the replica running the call
sends the request on the call's stream and waits for the answer, which the client POSTs as a
JSON-RPC response (the SDK's transport answers that POST `202` and hands the response to the
session's dispatcher). Behind a load balancer without affinity that POST may land on another
replica (sessions are sealed: converter.server.shared_sessions), whose dispatcher has no such
request pending and would drop the answer: the call would wait until its timeout. With `redis:`
set, `AnswerRelay` makes every session's dispatcher an `AnsweringDispatcher`:

- the requests it sends carry IDs tagged with a random tag of this run of the session here
  (`<12 random hex>-<n>`, a string as JSON-RPC allows, never one that parses as an integer), so
  two replicas that each send a request in one session never use the same ID (nor one replica
  that runs the session again later), and an answer names the dispatcher it is for (an answer
  with this dispatcher's tag that is not pending is late: dropped, as the SDK drops it);
- an answer (result or error) whose ID is another replica's is published on `<key_prefix>answers`,
  naming the session by the SHA-256 of its ID, with the request ID and the answer, in at most
  `MAX_MESSAGE_BYTES` (1 MiB); a larger answer is replaced by a JSON-RPC error saying so
  (`INTERNAL_ERROR`), so the call gets an error rather than hanging;
- a replica acts only on a session of its own with that digest, an ID with that session's tag, a
  request with that ID pending in that session, and delivers the answer as if it had arrived there.
  The answer came on a POST the other replica served only to the session's owner (the SDK's
  binding), so a caller can only answer requests of its own session.

Bounded: one message per relayed answer; at most `OUTBOX` waiting to be published (more are
dropped). Redis down, slow or failing: the answer is lost as it would be without Redis (the call
times out), each outage is logged once, and `/readyz` says `"redis-answers": "degraded"` (still
ready). This leans on two private parts of mcp 2.3's JSONRPCDispatcher, `_resolve_pending` and
`_pending` (tests/test_answer_relay.py exercises them).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from mcp.shared.dispatcher import CallOptions, coerce_request_id
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp_types import INTERNAL_ERROR, ErrorData, RequestId
from pydantic import ValidationError

from converter.server.session_relay import SessionRelay, read_message

log = logging.getLogger("openapi_mcp.sessions")

CHANNEL: Final = "answers"
OUTBOX: Final = 32  # relayed answers waiting to be published (each up to MAX_MESSAGE_BYTES)
MAX_MESSAGE_BYTES: Final = 1 << 20
TAG_CHARS: Final = 12
_TAGGED: Final = re.compile(rf"([0-9a-f]{{{TAG_CHARS}}})-[0-9]{{1,18}}")

Outcome = dict[str, Any] | ErrorData  # what the dispatcher hands a pending request: a result or an error


class AnsweringDispatcher(JSONRPCDispatcher[TransportContext]):
    """The SDK's dispatcher; with `tag` set, the requests it sends carry IDs `<tag>-<n>`, and an answer
    to no request pending here goes to `on_stray_answer` instead of being dropped."""

    tag: str | None = None
    on_stray_answer: Callable[[RequestId, Outcome], None] | None = None
    _minted = 0

    async def send_raw_request(self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None,
                               *, _related_request_id: RequestId | None = None) -> dict[str, Any]:
        if self.tag is not None and (opts is None or "request_id" not in opts):
            options = opts.copy() if opts is not None else CallOptions()
            self._minted += 1
            options["request_id"] = f"{self.tag}-{self._minted}"
            opts = options
        return await super().send_raw_request(method, params, opts, _related_request_id=_related_request_id)

    def _resolve_pending(self, request_id: RequestId | None, outcome: dict[str, Any] | ErrorData) -> None:
        hook = self.on_stray_answer
        if hook is not None and request_id is not None and coerce_request_id(request_id) not in self._pending:
            hook(request_id, outcome)
            return
        super()._resolve_pending(request_id, outcome)

    def deliver(self, request_id: RequestId, outcome: Outcome) -> bool:
        """Hand `outcome` to the request `request_id` pending here, as if its answer had arrived here."""
        if coerce_request_id(request_id) not in self._pending:
            return False
        super()._resolve_pending(request_id, outcome)
        return True


class AnswerRelay(SessionRelay):
    """Relays answers to requests other replicas sent, and delivers theirs (see the module docstring)."""

    channel_name = CHANNEL
    outbox = OUTBOX
    what = "the clients' answers"
    lost = "a call waiting on another replica for one times out"
    hearing = "the clients' answers other replicas relay"
    readiness = "redis-answers"
    metric = "openapi_mcp_answers_relayed"
    metric_help = ("the clients' answers to requests another replica sent, by result (published: sent to the "
                   "others, too_large: sent as an error; delivered: to a request here; dropped: not relayed)")
    delivered = 0  # answers this replica handed to its own pending requests for another one
    too_large = 0  # answers replaced by an error because they did not fit MAX_MESSAGE_BYTES

    def counts(self) -> dict[str, int]:
        return {**super().counts(), "too_large": self.too_large, "delivered": self.delivered}

    @contextmanager
    def watching(self, session_id: str, dispatcher: JSONRPCDispatcher[Any]) -> Iterator[None]:
        """For as long as `dispatcher` runs `session_id` here: tagged request IDs, stray answers relayed."""
        if not isinstance(dispatcher, AnsweringDispatcher):
            yield None
            return
        with self._registered(session_id, dispatcher) as digest:
            tag = uuid.uuid4().hex[:TAG_CHARS]
            dispatcher.tag = tag
            dispatcher.on_stray_answer = lambda request_id, outcome: self._stray(digest, tag, request_id, outcome)
            try:
                yield None
            finally:
                dispatcher.on_stray_answer = None

    def _stray(self, digest: str, own: str, request_id: RequestId, outcome: Outcome) -> None:
        """An answer on this session to no request pending here: relayed when another replica sent it."""
        tag = tag_of(request_id)
        if tag is None or tag == own:
            log.debug("dropping an answer to request %r: not pending here (late, or no replica's)", request_id)
            return
        encoded, fits = encode(self.replica, digest, request_id, outcome)
        if not fits:
            self.too_large += 1
            log.warning("an answer to request %r is larger than the %d bytes replicas relay; "
                        "the request gets an error instead", request_id, MAX_MESSAGE_BYTES)
        self._queue(encoded)

    def _parse(self, data: Any) -> tuple[str, RequestId, Outcome] | None:
        return parse(data, self.replica)

    def _act(self, dispatcher: JSONRPCDispatcher[Any], session_id: str, found: tuple[Any, ...]) -> None:
        """Another replica's relayed answer: delivered only to that exact request pending here."""
        _, request_id, outcome = found
        if (isinstance(dispatcher, AnsweringDispatcher) and tag_of(request_id) == dispatcher.tag
                and dispatcher.deliver(request_id, outcome)):
            self.delivered += 1
            log.debug("answer to request %r of session %s… received by another replica", request_id, session_id[:12])


def tag_of(request_id: RequestId) -> str | None:
    """The replica tag of a request ID an AnsweringDispatcher minted; None for any other ID."""
    if not isinstance(request_id, str):
        return None
    match = _TAGGED.fullmatch(request_id)
    return match.group(1) if match else None


def encode(replica: str, digest: str, request_id: RequestId, outcome: Outcome) -> tuple[str, bool]:
    """The message for a relayed answer, and whether the answer fit: one that does not fit
    MAX_MESSAGE_BYTES is replaced by an `INTERNAL_ERROR` saying so."""
    message: dict[str, Any] = {"from": replica, "session": digest, "id": request_id}
    if isinstance(outcome, ErrorData):
        answer = {"error": outcome.model_dump(mode="json", exclude_none=True)}
    else:
        answer = {"result": outcome}
    encoded = json.dumps({**message, **answer}, ensure_ascii=False)
    size = len(encoded.encode())
    if size <= MAX_MESSAGE_BYTES:
        return encoded, True
    error = {"code": INTERNAL_ERROR, "message": f"the client's answer ({size} bytes) is larger than the "
                                                f"{MAX_MESSAGE_BYTES} bytes that replicas relay to each other"}
    return json.dumps({**message, "error": error}, ensure_ascii=False), False


def parse(data: Any, own: str) -> tuple[str, RequestId, Outcome] | None:
    """(session digest, request ID, answer) of another replica's message; None for our own messages
    and anything malformed (converter.server.session_relay.read_message)."""
    message = read_message(data, own, MAX_MESSAGE_BYTES)
    if message is None or not isinstance(request_id := message.get("id"), str):
        return None
    digest, result, error = message["session"], message.get("result"), message.get("error")
    if isinstance(result, dict) and error is None:
        return digest, request_id, result
    if result is None and isinstance(error, dict):
        try:
            return digest, request_id, ErrorData.model_validate(error)
        except ValidationError:
            return None
    return None
