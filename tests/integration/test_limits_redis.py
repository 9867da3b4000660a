"""converter.policy.limits on a real redis-server: counters shared by limiters and by processes, atomically;
Redis down or paused: the local fallback answers within the timeout and keeps limiting, then Redis
is used again once it is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from converter.policy.limits import LimitRule, RateLimiter
from converter.policy.limits.redis_backend import RedisBackend
from tests.integration.services import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]
T0 = 3600.0 * 1000  # a window boundary for every window used here


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rules(*specs: dict[str, Any]) -> list[LimitRule]:
    return [LimitRule.model_validate(s) for s in specs]


@asynccontextmanager
async def redis_limiter(url: str, prefix: str, *specs: dict[str, Any], clock: Callable[[], float] | None = None,
                        **backend: Any) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(rules(*specs), backend=RedisBackend.from_url(url, key_prefix=prefix, **backend),
                          clock=clock or Clock())
    try:
        yield limiter
    finally:
        await limiter.aclose()


def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


async def test_limits_hit_at_the_count_for_one_subject_on_redis(redis_server: RedisServer) -> None:
    async with redis_limiter(redis_server.url, prefix(), {"tools": ["get*"], "requests": 3, "window": 60}) as rl:
        assert [(await rl.check("alice", "get_users")).allowed for _ in range(4)] == [True, True, True, False]
        assert all([(await rl.check("bob", "get_users")).allowed for _ in range(3)])
        assert rl.backend.stats.fallback_checks == 0  # type: ignore[attr-defined]


async def test_two_limiters_on_one_redis_share_their_counters(redis_server: RedisServer) -> None:
    shared = prefix()
    spec = {"requests": 5, "window": 60}
    async with redis_limiter(redis_server.url, shared, spec) as one, redis_limiter(redis_server.url, shared, spec) as two:
        assert [(await one.check("alice")).allowed for _ in range(3)] == [True] * 3
        assert [(await two.check("alice")).allowed for _ in range(3)] == [True, True, False]
        verdict = await one.check("alice")
        assert not verdict.allowed and verdict.retry_after > 0


async def test_window_expiry_follows_the_injected_clock(redis_server: RedisServer) -> None:
    clock = Clock()
    async with redis_limiter(redis_server.url, prefix(), {"requests": 2, "window": 30}, clock=clock) as rl:
        assert [(await rl.check("a")).allowed for _ in range(3)] == [True, True, False]
        clock.now += 45  # halfway into the next window the old one weighs 2 x 0.5 = 1: room for one
        assert [(await rl.check("a")).allowed for _ in range(2)] == [True, False]
        clock.now += 60
        assert [(await rl.check("a")).allowed for _ in range(3)] == [True, True, False]


WORKER = textwrap.dedent("""
    import asyncio, json, sys, time
    from converter.policy.limits import LimitRule, RateLimiter
    from converter.policy.limits.redis_backend import RedisBackend

    async def main(url, prefix, start_at, count):
        rl = RateLimiter([LimitRule(requests=10, window=3600)], backend=RedisBackend.from_url(url, key_prefix=prefix))
        while time.time() < start_at:
            await asyncio.sleep(0.001)
        allowed = [(await rl.check("alice", "get_users")).allowed for _ in range(count)]
        print(json.dumps({"allowed": sum(allowed), "fallback": rl.backend.stats.fallback_checks}))
        await rl.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
""")


def test_two_processes_sharing_redis_never_exceed_the_limit_together(redis_server: RedisServer) -> None:
    shared, start_at = prefix(), time.time() + 1.5  # both start checking at the same moment
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, redis_server.url, shared, str(start_at), "8"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["allowed"] for r in results) == 10  # 16 attempts, a limit of 10 across both processes
    assert all(r["fallback"] == 0 for r in results)


async def test_redis_down_falls_back_to_local_counters_without_hanging(
        start_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture) -> None:
    server = start_redis()
    clock = Clock()
    caplog.set_level(logging.WARNING, "openapi_mcp.limits")
    async with redis_limiter(server.url, prefix(), {"requests": 3, "window": 60}, clock=clock,
                             timeout=0.3, retry_interval=0.2) as rl:
        backend = rl.backend
        assert isinstance(backend, RedisBackend)
        assert (await rl.check("alice")).allowed and backend.stats.healthy
        server.stop()
        started = time.monotonic()
        verdicts = [(await rl.check("alice")).allowed for _ in range(4)]
        assert time.monotonic() - started < 0.3 + 0.5  # at most one timeout per retry interval
        assert verdicts == [True, True, True, False]  # the local counters start afresh, and still limit
        assert not backend.stats.healthy and backend.stats.fallback_checks == 4
        assert [r.message for r in caplog.records if r.levelno == logging.ERROR] == [
            ("Redis failed (ConnectionError): rate limits fall back to this process's own counters (each replica "
             "then allows the full limit) until Redis answers again; retrying every 0.2 s")]
        start_redis(port=server.port)  # back, empty (no persistence): counting is shared again
        await asyncio.sleep(0.25)
        assert [(await rl.check("alice")).allowed for _ in range(4)] == [True, True, True, False]
        assert backend.stats.healthy
        assert "Redis is back: rate-limit counters are shared again" in caplog.text


async def test_a_paused_redis_costs_one_timeout_not_a_hang(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis()  # its own: CLIENT PAUSE holds every client of the server
    async with redis_limiter(server.url, prefix(), {"requests": 3, "window": 60}, timeout=0.2,
                             retry_interval=5) as rl:
        assert (await rl.check("alice")).allowed
        admin = redis.asyncio.Redis.from_url(server.url)
        try:
            await admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
            started = time.monotonic()
            assert (await rl.check("alice")).allowed  # local counters
            assert (await rl.check("alice")).allowed  # still within the retry interval: no Redis call
            assert time.monotonic() - started < 0.2 + 0.3
            assert rl.backend.stats.last_error == "Redis timed out"  # type: ignore[attr-defined]
        finally:
            await admin.aclose()
    server.stop()
