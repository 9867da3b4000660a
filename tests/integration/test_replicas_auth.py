"""Three replicas with `auth:` (introspection) and `redis:` behind nginx round robin (issue 13, item 2).

The real authorization server (oidc-provider, opaque tokens) counts its introspection calls; a
real redis-server holds the shared verdicts (converter.auth.shared_cache) and is stopped to show
the fallback: every replica asks the authorization server itself, nobody gets in without a verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.integration.authserver import GATEWAY, AuthServer
from tests.integration.balancer import Nginx, Replica
from tests.integration.services import RedisServer
from tests.integration.test_replicas import SESSION_KEY

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CACHE_TTL = 3
CONFIG = """
spec: {spec}
upstream: {{url: "{mock}"}}
server:
  session_keys: ["${{SESSION_KEY}}"]
telemetry: {{access_log: "off"}}
redis: {{url: "{redis}", key_prefix: "replicas-auth:", timeout: 0.3}}
auth:
  resource: "{resource}"
  authorization_servers: ["{issuer}"]
  introspection_endpoint: "{introspection}"
  client_id: {client_id}
  client_secret: {client_secret}
  required_scopes: [mcp:tools]
  cache_ttl: {ttl}
"""
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream",
           "mcp-protocol-version": "2025-06-18"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def cluster(start_replicas: Callable[..., list[Replica]], start_nginx: Callable[..., Nginx],
            start_redis: Callable[..., RedisServer], auth_server: AuthServer, spec_path: str,
            mock_api_url: str) -> Iterator[tuple[Nginx, list[Replica], RedisServer]]:
    redis = start_redis()
    config = CONFIG.format(spec=spec_path, mock=mock_api_url, redis=redis.url, resource=auth_server.resource,
                           issuer=auth_server.issuer, introspection=auth_server.introspection_endpoint,
                           client_id=GATEWAY[0], client_secret=GATEWAY[1], ttl=CACHE_TTL)
    replicas = start_replicas(config, env={"SESSION_KEY": SESSION_KEY})
    nginx = start_nginx([r.port for r in replicas], port=auth_server.mcp_port)
    yield nginx, replicas, redis
    nginx.process.stop()
    for replica in replicas:
        replica.process.stop()
    redis.stop()


def user_token(auth_server: AuthServer, client: str = "svc-user", secret: str = "user-secret") -> str:
    return auth_server.token(client, secret, scope="mcp:tools")


def list_on_each(replicas: list[Replica], token: str, session: str) -> list[int]:
    """tools/list on `session` sent to each replica directly: the HTTP statuses."""
    statuses = []
    for replica in replicas:
        response = httpx.post(f"{replica.base_url}/mcp", trust_env=False, timeout=10,
                              headers={**HEADERS, "authorization": f"Bearer {token}", "mcp-session-id": session},
                              json={"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}})
        statuses.append(response.status_code)
    return statuses


def open_session(replica: Replica, token: str) -> str:
    response = httpx.post(f"{replica.base_url}/mcp", trust_env=False, timeout=10, json=INIT,
                          headers={**HEADERS, "authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


async def test_one_token_is_introspected_once_for_all_replicas(cluster: tuple[Nginx, list[Replica], RedisServer],
                                                               auth_server: AuthServer) -> None:
    nginx, _, _ = cluster
    token = user_token(auth_server)
    before = auth_server.introspections()
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http:
        async with Client(streamable_http_client(f"{nginx.url}/mcp", http_client=http), mode="legacy") as client:
            for _ in range(12):
                result = await client.call_tool("getUser", {"userId": "u1"})
                assert not result.is_error, result.content
    assert auth_server.introspections() - before == 1


def test_the_session_binding_holds_across_replicas_with_real_tokens(
        cluster: tuple[Nginx, list[Replica], RedisServer], auth_server: AuthServer) -> None:
    _, replicas, _ = cluster
    user, admin = user_token(auth_server), auth_server.token("svc-admin", "admin-secret", scope="mcp:tools")
    session = open_session(replicas[0], user)
    assert list_on_each(replicas, user, session) == [200, 200, 200]
    assert list_on_each(replicas, admin, session) == [404, 404, 404]


def test_a_revoked_token_is_refused_by_every_replica_at_the_same_moment(
        cluster: tuple[Nginx, list[Replica], RedisServer], auth_server: AuthServer) -> None:
    _, replicas, _ = cluster
    token = user_token(auth_server)
    session = open_session(replicas[0], token)
    assert list_on_each(replicas, token, session) == [200, 200, 200]
    before = auth_server.introspections()
    revoked = httpx.post(f"{auth_server.issuer}/protocol/openid-connect/revoke", data={"token": token},
                         auth=("svc-user", "user-secret"), trust_env=False)  # by the client it was issued to
    assert revoked.status_code == 200
    # Until the shared verdict expires every replica still accepts (one verdict, not three clocks) ...
    assert list_on_each(replicas, token, session) == [200, 200, 200]
    time.sleep(CACHE_TTL + 0.5)
    # ... then every replica refuses, after one introspection between them.
    assert list_on_each(replicas, token, session) == [401, 401, 401]
    assert auth_server.introspections() - before == 1


def test_a_session_ended_on_one_replica_is_ended_on_every_replica(
        cluster: tuple[Nginx, list[Replica], RedisServer], auth_server: AuthServer) -> None:
    _, replicas, _ = cluster
    token = user_token(auth_server)
    session = open_session(replicas[0], token)
    assert list_on_each(replicas, token, session) == [200, 200, 200]
    ended = httpx.delete(f"{replicas[1].base_url}/mcp", trust_env=False,
                         headers={**HEADERS, "authorization": f"Bearer {token}", "mcp-session-id": session})
    assert ended.status_code == 200, ended.text
    time.sleep(1.1)  # the replicas holding it look the session up at most once a second
    assert list_on_each(replicas, token, session) == [404, 404, 404]


def test_redis_down_each_replica_asks_the_authorization_server_and_nobody_gets_in_without_a_verdict(
        cluster: tuple[Nginx, list[Replica], RedisServer], auth_server: AuthServer,
        start_redis: Callable[..., RedisServer]) -> None:
    _, replicas, redis = cluster
    token = user_token(auth_server)
    session = open_session(replicas[0], token)
    redis.stop()
    fresh = user_token(auth_server)
    before = auth_server.introspections()
    assert list_on_each(replicas, fresh, session) == [200, 200, 200]  # same identity (svc-user), new token
    assert auth_server.introspections() - before == 3  # no shared verdicts: one call per replica
    assert list_on_each(replicas, "garbage-token", session) == [401, 401, 401]
    for replica in replicas:  # the Redis states are read as they are now (only the upstream probe is cached)
        ready = httpx.get(f"{replica.base_url}/readyz", trust_env=False).json()
        assert ready["status"] == "ready" and ready["upstreams"]["redis-verdicts"] == "degraded", ready
        assert "token verdicts are no longer shared" in replica.process.log()
    cluster_redis = start_redis(port=redis.port)  # back on the same port: verdicts are shared again
    time.sleep(2.2)  # the retry interval
    again = user_token(auth_server)
    before = auth_server.introspections()
    assert list_on_each(replicas, again, session) == [200, 200, 200]
    assert auth_server.introspections() - before == 1
    assert cluster_redis.ping()
