"""converter.auth.shared_cache: introspection verdicts shared across replicas (issue 13, item 2).

Unit level, with an in-memory stand-in for the Redis client (the same few commands); the real
redis-server and authorization server with three replicas: tests/integration/test_replicas_auth.py.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import anyio
import httpx
import pytest

from converter.auth.introspection import IntrospectionVerifier
from converter.auth.principal import AuthServerUnavailableError, InvalidTokenError
from converter.auth.shared_cache import SharedVerdicts
from tests.test_auth import RESOURCE, FakeAS, auth_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class MemoryRedis:
    """GET / SET [NX] [PX] / DEL, with expiry, in memory; `down` makes every command fail."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, float]] = {}
        self.down = False
        self.commands = 0

    async def execute_command(self, name: str, key: str, *args: Any) -> Any:
        from redis.exceptions import ConnectionError

        self.commands += 1
        if self.down:
            raise ConnectionError("Connection refused")
        entry = self.data.get(key)
        if entry is not None and entry[1] <= time.monotonic():
            del self.data[key]
            entry = None
        if name == "GET":
            return entry[0] if entry else None
        if name == "DEL":
            return int(self.data.pop(key, None) is not None)
        value, rest = args[0], list(args[1:])
        if "NX" in rest and entry is not None:
            return None
        ttl = float(rest[rest.index("PX") + 1]) / 1000 if "PX" in rest else 1e9
        self.data[key] = (value if isinstance(value, bytes) else str(value).encode(), time.monotonic() + ttl)
        return True

    async def aclose(self) -> None:
        pass


def replicas(tmp_path: Any, fake_as: FakeAS, redis: MemoryRedis, n: int = 3, **auth: Any) -> list[IntrospectionVerifier]:
    settings = auth_settings(tmp_path, **auth).auth
    return [IntrospectionVerifier(settings, transport=httpx.MockTransport(fake_as.handler),
                                  shared=SharedVerdicts(redis, key_prefix="t:", timeout=0.5))  # type: ignore[arg-type]
            for _ in range(n)]


async def test_three_replicas_introspect_a_token_once_and_redis_holds_only_its_hash(tmp_path: Any) -> None:
    fake_as, redis = FakeAS(), MemoryRedis()
    token = fake_as.add("opaque-token-1")
    verifiers = replicas(tmp_path, fake_as, redis)
    principals = [await v.verify(token) for v in verifiers]
    assert fake_as.calls == 1 and {p.subject for p in principals} == {"alice"}
    key = hashlib.sha256(token.encode()).hexdigest()
    assert set(redis.data) == {f"t:tv:{key}"}  # the lock is released once the verdict is there
    assert token.encode() not in b"".join(v for v, _ in redis.data.values())
    assert [v.shared.stats.hits for v in verifiers if v.shared] == [0, 1, 1]


async def test_replicas_that_get_a_new_token_at_once_still_ask_once(tmp_path: Any) -> None:
    fake_as, redis = FakeAS(), MemoryRedis()
    fake_as.delay = 0.2
    token = fake_as.add("opaque-token-2")
    verifiers = replicas(tmp_path, fake_as, redis)
    async with anyio.create_task_group() as tg:
        for verifier in verifiers:
            tg.start_soon(verifier.verify, token)
    assert fake_as.calls == 1
    assert sum(v.shared.stats.waits for v in verifiers if v.shared) == 2


async def test_the_shared_verdict_never_outlives_the_token_and_inactive_ones_are_shared_too(tmp_path: Any) -> None:
    fake_as, redis = FakeAS(), MemoryRedis()
    token = fake_as.add("short", exp=int(time.time()) + 2)
    first, second = replicas(tmp_path, fake_as, redis, n=2, cache_ttl=300)
    await first.verify(token)
    [(_, expires)] = list(redis.data.values())
    assert expires - time.monotonic() <= 2.01
    with pytest.raises(InvalidTokenError, match="not active"):
        await first.verify("unknown")
    with pytest.raises(InvalidTokenError, match="not active"):
        await second.verify("unknown")
    assert fake_as.calls == 2


async def test_a_shared_answer_is_checked_again_by_each_replica(tmp_path: Any) -> None:
    """A planted or stale answer for another audience is refused: Redis holds answers, not acceptances."""
    fake_as, redis = FakeAS(), MemoryRedis()
    token = "planted"
    key = hashlib.sha256(token.encode()).hexdigest()
    answer = {"active": True, "iss": "http://as.test/realms/demo", "aud": "http://elsewhere/mcp", "sub": "mallory",
              "client_id": "cli", "scope": "mcp:tools", "exp": int(time.time()) + 300}
    redis.data[f"t:tv:{key}"] = (json.dumps({"a": answer, "r": None, "x": time.time() + 60}).encode(),
                                 time.monotonic() + 60)
    [verifier] = replicas(tmp_path, fake_as, redis, n=1)
    with pytest.raises(InvalidTokenError, match="audience"):
        await verifier.verify(token)
    assert fake_as.calls == 0 and RESOURCE not in json.dumps(answer)


async def test_redis_down_every_replica_asks_the_as_and_an_as_failure_is_still_503(tmp_path: Any) -> None:
    fake_as, redis = FakeAS(), MemoryRedis()
    redis.down = True
    token = fake_as.add("opaque-token-3")
    verifiers = replicas(tmp_path, fake_as, redis)
    for verifier in verifiers:
        assert (await verifier.verify(token)).subject == "alice"
    assert fake_as.calls == 3
    assert [v.shared.state for v in verifiers if v.shared] == ["degraded"] * 3
    with pytest.raises(InvalidTokenError):
        await verifiers[0].verify("garbage")
    fake_as.down = True
    with pytest.raises(AuthServerUnavailableError):  # neither Redis nor the AS: refused, never let through
        await verifiers[1].verify(fake_as.add("opaque-token-4"))
