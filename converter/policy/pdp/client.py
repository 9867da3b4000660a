"""The AuthZEN 1.0 client: single (`/access/v1/evaluation`) and batch (`/access/v1/evaluations`) calls.

Fail closed: only `{"decision": true}` allows. `false` denies; an error status, a timeout, a
network failure, an unreadable answer or a decision that is not a JSON boolean is an `error`
decision, which denies too and is reported apart (stats, log, `on_round_trip`), so the server
can tell "the PDP said no" from "the PDP is down".

Each question is asked at most once at a time (concurrent identical questions share one
request) and its answer is cached (`cache_ttl`, `cache_size`). Lists are asked in one batch
request (`evaluations_semantic: execute_all`); a PDP without the batch endpoint (404, 405 or
501 there, e.g. a Gravitee AM that documents only the single one) is asked item by item from
then on, concurrently.

The fetches run in their own tasks: a caller that goes away (client disconnect) does not cancel
the request others wait for. Every PDP request carries an `X-Request-ID`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx

from converter.config.pdp import PdpSettings
from converter.policy.pdp.cache import DecisionCache
from converter.policy.pdp.request import Decision, Evaluation, PdpQuestion, build_evaluation, cache_key, canonical

log = logging.getLogger("openapi_mcp.pdp")

SINGLE_CONCURRENCY: Final = 16  # item-by-item requests in flight at once, when there is no batch endpoint
NO_BATCH_STATUSES: Final = frozenset({404, 405, 501})
ERROR_LOG_INTERVAL: Final = 5.0  # seconds between two error lines while the PDP keeps failing
NO_SUBJECT: Final = Decision("deny", reason="the request has no identity to ask the PDP about")


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One HTTP exchange with the PDP, for metrics and logs."""

    kind: Literal["single", "batch"]
    items: int
    seconds: float
    ok: bool
    request_id: str
    status: int | None = None
    error: str | None = None


@dataclass(slots=True)
class PdpStats:
    """Counters for metrics (`openapi_mcp_pdp_decisions_total{decision}`) and `/readyz`."""

    decisions: dict[str, int] = field(default_factory=lambda: {"allow": 0, "deny": 0, "error": 0})
    cache_hits: int = 0
    shared: int = 0  # questions answered by a request another caller had already started
    round_trips: int = 0
    batch_round_trips: int = 0
    failed_round_trips: int = 0
    latency_seconds_total: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None  # wall clock
    last_ok_at: float | None = None

    @property
    def healthy(self) -> bool:
        """False while the last exchange with the PDP failed (until one succeeds)."""
        return self.last_error_at is None or (self.last_ok_at is not None and self.last_ok_at >= self.last_error_at)


class _FailureError(Exception):
    """A PDP exchange that gave no usable answer; the message is safe to log and show."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Pdp:
    """Asks an AuthZEN PDP; see the module docstring for the semantics."""

    def __init__(self, settings: PdpSettings, *, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_round_trip: Callable[[RoundTrip], None] | None = None) -> None:
        self.settings = settings
        self.stats = PdpStats()
        self._client = httpx.AsyncClient(timeout=settings.timeout, transport=transport, follow_redirects=False)
        self._cache = DecisionCache(settings.cache_size, settings.cache_ttl, clock)
        self._inflight: dict[bytes, asyncio.Future[Decision]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch = settings.batch
        self._single_slots = asyncio.Semaphore(SINGLE_CONCURRENCY)
        self.on_round_trip = on_round_trip
        self._last_error_log = float("-inf")
        self._suppressed = 0
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        self._body_auth: dict[str, str] = {}
        secret = settings.client_secret.get_secret_value() if settings.client_secret else ""
        if settings.client_auth_method == "client_secret_basic":
            # RFC 6749 §2.3.1: both parts form-urlencoded before base64 (AM: Basic base64(id:secret))
            pair = f"{quote(settings.client_id or '', safe='')}:{quote(secret, safe='')}"
            self._headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif settings.client_auth_method == "bearer":
            self._headers["authorization"] = f"Bearer {secret}"
        elif settings.client_auth_method == "client_secret_post":
            self._body_auth = {"client_id": settings.client_id or "", "client_secret": secret}

    def __repr__(self) -> str:
        return f"Pdp(url={self.settings.url!r}, preset={self.settings.preset!r})"

    @property
    def cache(self) -> DecisionCache:
        return self._cache

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def decide(self, question: PdpQuestion, *, request_id: str | None = None) -> Decision:
        """The decision for one question (one single-evaluation request unless cached or shared)."""
        return (await self._resolve([build_evaluation(self.settings, question)], request_id))[0]

    async def decide_many(self, questions: Sequence[PdpQuestion], *, request_id: str | None = None) -> list[Decision]:
        """Decisions for `questions`, in order: what is not cached is asked in one batch request."""
        return await self._resolve([build_evaluation(self.settings, q) for q in questions], request_id)

    async def _resolve(self, evaluations: Sequence[Evaluation | None], request_id: str | None) -> list[Decision]:
        results: list[Decision | asyncio.Future[Decision]] = []
        new: dict[bytes, tuple[Evaluation, asyncio.Future[Decision]]] = {}
        for evaluation in evaluations:
            if evaluation is None:
                results.append(NO_SUBJECT)
                continue
            key = cache_key(canonical(evaluation))
            cached = self._cache.get(key)
            if cached is not None:
                self.stats.cache_hits += 1
                results.append(cached)
                continue
            pending = self._inflight.get(key)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._inflight[key] = pending
                new[key] = (evaluation, pending)
            elif key not in new:
                self.stats.shared += 1
            results.append(pending)
        if new:
            task = asyncio.get_running_loop().create_task(self._fetch(new, request_id or uuid.uuid4().hex))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        decisions = [await asyncio.shield(r) if isinstance(r, asyncio.Future) else r for r in results]
        counts = self.stats.decisions
        for decision in decisions:
            counts[decision.outcome] += 1
        return decisions

    async def _fetch(self, items: Mapping[bytes, tuple[Evaluation, asyncio.Future[Decision]]], request_id: str) -> None:
        keys = list(items)
        try:
            evaluations = [items[k][0] for k in keys]
            if len(keys) == 1 or not self._batch:
                decisions = await self._singles(evaluations, request_id)
            else:
                decisions = []
                size = self.settings.max_batch
                for start in range(0, len(keys), size):
                    chunk = evaluations[start:start + size]
                    decisions += await (self._batch_call(chunk, request_id) if self._batch
                                        else self._singles(chunk, request_id))
        except asyncio.CancelledError:  # aclose(): the waiters are denied, never left hanging
            decisions = [Decision("error", reason="the PDP request was cancelled", request_id=request_id)] * len(keys)
            raise
        except Exception:  # a bug of ours: deny and say so, rather than an exception nobody retrieves
            log.exception("asking the PDP failed unexpectedly; denying")
            decisions = [Decision("error", reason="the PDP client failed", request_id=request_id)] * len(keys)
        finally:
            for key, decision in zip(keys, decisions, strict=False):
                self._cache.keep(key, decision)
                future = items[key][1]
                if self._inflight.get(key) is future:
                    del self._inflight[key]
                if not future.done():
                    future.set_result(decision)

    async def _singles(self, evaluations: Sequence[Evaluation], request_id: str) -> list[Decision]:
        if len(evaluations) == 1:
            return [await self._single(evaluations[0], request_id)]

        async def one(evaluation: Evaluation) -> Decision:
            async with self._single_slots:
                return await self._single(evaluation, request_id)

        return list(await asyncio.gather(*(one(e) for e in evaluations)))

    async def _single(self, evaluation: Evaluation, request_id: str) -> Decision:
        try:
            body = await self._post("single", self.settings.url, evaluation, 1, request_id)
        except _FailureError as exc:
            return Decision("error", reason=str(exc), request_id=request_id)
        return self._parse(body, request_id)

    async def _batch_call(self, evaluations: Sequence[Evaluation], request_id: str) -> list[Decision]:
        payload = _batch_payload(evaluations)
        try:
            body = await self._post("batch", self.settings.evaluations_url, payload, len(evaluations), request_id)
        except _FailureError as exc:
            if exc.status in NO_BATCH_STATUSES:
                self._batch = False
                log.warning("PDP %s answered HTTP %d: no batch endpoint; asking item by item from now on",
                            self.settings.evaluations_url, exc.status)
                return await self._singles(evaluations, request_id)
            return [Decision("error", reason=str(exc), request_id=request_id)] * len(evaluations)
        answers = body.get("evaluations")
        if not isinstance(answers, list) or len(answers) != len(evaluations):
            count = len(answers) if isinstance(answers, list) else "no"
            reason = f"the PDP's batch answer has {count} evaluations for {len(evaluations)} questions"
            self._record_error(reason, request_id)
            return [Decision("error", reason=reason, request_id=request_id)] * len(evaluations)
        return [self._parse(a, request_id) for a in answers]

    def _parse(self, answer: Any, request_id: str) -> Decision:
        decision = _decision(answer, request_id)
        if decision.outcome == "error" and decision.reason is not None:
            self._record_error(decision.reason, request_id)
        return decision

    async def _post(self, kind: Literal["single", "batch"], url: str, payload: Mapping[str, Any], items: int,
                    request_id: str) -> dict[str, Any]:
        """POST `payload`; the JSON object answered, or `_FailureError`. The whole answer is bounded by `timeout`."""
        content = json.dumps({**payload, **self._body_auth}, separators=(",", ":"), ensure_ascii=False,
                             default=str).encode()
        headers = {**self._headers, "x-request-id": request_id}
        timeout = self.settings.timeout
        started = time.perf_counter()
        status: int | None = None
        try:
            try:
                async with asyncio.timeout(timeout):
                    response = await self._client.post(url, content=content, headers=headers)
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise _FailureError(f"the PDP did not answer within {timeout:g} s") from exc
            except httpx.HTTPError as exc:
                raise _FailureError(f"the PDP could not be reached ({type(exc).__name__})") from exc
            status = response.status_code
            if status != 200:
                raise _FailureError(f"the PDP answered HTTP {status}", status)
            try:
                body = response.json()
            except ValueError as exc:
                raise _FailureError("the PDP answered with invalid JSON", status) from exc
            if not isinstance(body, dict):
                raise _FailureError("the PDP's answer is not a JSON object", status)
        except _FailureError as exc:
            seconds = time.perf_counter() - started
            self._account(RoundTrip(kind, items, seconds, False, request_id, status, str(exc)))
            if exc.status not in NO_BATCH_STATUSES or kind == "single":
                self._record_error(str(exc), request_id)
            raise
        self._account(RoundTrip(kind, items, time.perf_counter() - started, True, request_id, status))
        self.stats.last_ok_at = time.time()
        return body

    def _account(self, trip: RoundTrip) -> None:
        stats = self.stats
        stats.round_trips += 1
        stats.batch_round_trips += trip.kind == "batch"
        stats.failed_round_trips += not trip.ok
        stats.latency_seconds_total += trip.seconds
        if self.on_round_trip is not None:
            self.on_round_trip(trip)

    def _record_error(self, reason: str, request_id: str) -> None:
        self.stats.last_error, self.stats.last_error_at = reason, time.time()
        now = time.monotonic()
        if now - self._last_error_log < ERROR_LOG_INTERVAL:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more failures since the last report)" if self._suppressed else ""
        log.error("PDP %s: %s; denying (X-Request-ID %s)%s", self.settings.url, reason, request_id, more)
        self._last_error_log, self._suppressed = now, 0


def _decision(answer: Any, request_id: str) -> Decision:
    """One AuthZEN decision object: only the JSON boolean true allows."""
    if not isinstance(answer, dict) or not isinstance(answer.get("decision"), bool):
        return Decision("error", reason="the PDP's answer has no boolean 'decision'", request_id=request_id)
    context = answer.get("context")
    context = context if isinstance(context, dict) else None
    if answer["decision"] is True:
        return Decision("allow", context=context, request_id=request_id)
    reason = context.get("reason") if context else None
    return Decision("deny", reason=reason if isinstance(reason, str) else None, context=context,
                    request_id=request_id)


def _batch_payload(evaluations: Sequence[Evaluation]) -> dict[str, Any]:
    """AuthZEN 1.0 §7.1: what all items share goes to the top level as defaults, the rest per item."""
    payload: dict[str, Any] = {}
    shared = []
    for part in ("subject", "action", "resource", "context"):
        values = [e.get(part) for e in evaluations]
        if values[0] is not None and all(v == values[0] for v in values):
            payload[part] = values[0]
            shared.append(part)
    payload["evaluations"] = [{k: v for k, v in e.items() if k not in shared} for e in evaluations]
    payload["options"] = {"evaluations_semantic": "execute_all"}
    return payload
