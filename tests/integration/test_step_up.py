"""Scope step-up and scope discovery, end to end with real clients against the oidc-provider realm.

- The SDK's `OAuthClientProvider` and `mcp-remote` (its browser is tests/integration/fake_browser.py)
  register dynamically with the scope of the first 401 (`mcp:tools`), later get our 403 for
  `createOrder` (`mcp:admin`) and authorize again for both scopes. That works when the realm lets
  dynamically registered clients ask for every per-tool scope (`--dcr-scope`, Keycloak's Allowed
  Client Scopes policy); without it the realm refuses the new scope (`invalid_scope`), which is
  why the README says the realm must allow them.
- A config with no scopes at all serves metadata without `scopes_supported` (an empty list told
  clients to ask for nothing and the login failed); both clients log in with the realm's defaults.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters, stdio_client

from tests.integration.authserver import ALL_SCOPES, GATEWAY, AuthServer
from tests.integration.conftest import NODE_DIR, ROOT, Processes, _free_port, _openapi_mcp

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MCP_REMOTE = NODE_DIR / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
FAKE_BROWSER = Path(__file__).parent / "fake_browser.py"
ORDER = {"userId": "u1", "item": "lamp", "quantity": 1, "price": 20}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def serve(processes: Processes, tmp: Path, idp: AuthServer, port: int, mock_url: str, **auth: Any) -> str:
    url = f"http://127.0.0.1:{port}/mcp"
    config = tmp / f"mcp-{port}.yaml"
    config.write_text(json.dumps({
        "spec": str(ROOT / "specs" / "marketplace.yaml"), "upstream": {"url": mock_url},
        "server": {"port": port},
        "auth": {"resource": url, "authorization_servers": [idp.issuer],
                 "introspection_endpoint": idp.introspection_endpoint, "client_id": GATEWAY[0],
                 "client_secret": "${CLIENT_SECRET}", **auth}}))
    process = processes.start(f"mcp-step-up-{port}", [_openapi_mcp(), "serve", "--config", str(config)],
                              CLIENT_SECRET=GATEWAY[1])
    process.wait_ready(f"http://127.0.0.1:{port}/healthz")
    return url


SCOPED = {"required_scopes": ["mcp:tools"], "tool_scopes": {"createOrder": ["mcp:admin"]}}


async def sdk_client_flow(idp: AuthServer, url: str, calls: Callable[[Client], Any]) -> list[str]:
    """Run `calls` through the SDK client with its OAuth provider; the scopes of each authorization."""
    import httpx2
    from mcp.client.auth import OAuthClientProvider, TokenStorage
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

    class Memory(TokenStorage):
        def __init__(self) -> None:
            self.tokens: OAuthToken | None = None
            self.client: OAuthClientInformationFull | None = None

        async def get_tokens(self) -> OAuthToken | None:
            return self.tokens

        async def set_tokens(self, tokens: OAuthToken) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> OAuthClientInformationFull | None:
            return self.client

        async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
            self.client = client_info

    redirect_uri = "http://127.0.0.1:33418/callback"
    asked: list[str] = []
    codes: list[AuthorizationCodeResult] = []

    async def redirect_handler(authorization_url: str) -> None:
        q = {k: v[0] for k, v in parse_qs(urlsplit(authorization_url).query).items()}
        asked.append(q.get("scope", ""))
        result = await anyio.to_thread.run_sync(lambda: idp.authorize(
            username="carol", client_id=q["client_id"], redirect_uri=q["redirect_uri"], scope=q.get("scope", ""),
            resource=q.get("resource"), code_challenge=q["code_challenge"], state=q.get("state")))
        codes.append(AuthorizationCodeResult(code=result.code, state=result.params.get("state"),
                                             iss=result.params.get("iss")))

    async def callback_handler() -> AuthorizationCodeResult:
        return codes[-1]

    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(client_name="sdk-step-up", redirect_uris=[redirect_uri],
                                            grant_types=["authorization_code", "refresh_token"],
                                            response_types=["code"], token_endpoint_auth_method="none"),
        storage=Memory(), redirect_handler=redirect_handler, callback_handler=callback_handler)
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            await calls(client)
    return asked


async def test_the_sdk_client_steps_up_for_a_per_tool_scope_when_the_realm_allows_it(
        processes: Processes, tmp_path: Path, start_auth_server: Callable[..., AuthServer], mock_api) -> None:
    port = _free_port()
    idp = start_auth_server([f"http://127.0.0.1:{port}/mcp"], dcr_scope=ALL_SCOPES)
    url = serve(processes, tmp_path, idp, port, mock_api.url, **SCOPED)
    seen: dict[str, Any] = {}

    async def calls(client: Client) -> None:
        seen["tools"] = [t.name for t in (await client.list_tools()).tools]
        seen["order"] = await client.call_tool("createOrder", ORDER)

    asked = await sdk_client_flow(idp, url, calls)
    assert "createOrder" not in seen["tools"]  # the first token has mcp:tools only
    assert set(asked[0].split()) - {"offline_access"} == {"mcp:tools"}  # the 401's scope
    assert {"mcp:tools", "mcp:admin"} <= set(asked[1].split())  # the 403's, with what it had
    assert not seen["order"].is_error, seen["order"]
    assert [e["method"] for e in mock_api.requests() if e["path"] == "/marketplace/u1/orders"] == ["POST"]


def test_a_realm_that_limits_registered_clients_to_their_first_scope_refuses_the_step_up(
        start_auth_server: Callable[..., AuthServer]) -> None:
    """What the README's Keycloak / AM sections are about: the realm, not this server, decides."""
    from tests.integration.authserver import pkce_pair

    port = _free_port()
    idp = start_auth_server([f"http://127.0.0.1:{port}/mcp"])  # no --dcr-scope
    client = idp.register_client(redirect_uris=["http://127.0.0.1:33418/callback"], token_endpoint_auth_method="none",
                                 grant_types=["authorization_code"], response_types=["code"], scope="mcp:tools")
    _, challenge = pkce_pair()
    refused = idp.authorize(username="carol", client_id=client["client_id"], scope="mcp:tools mcp:admin",
                            resource=idp.resource, code_challenge=challenge)
    assert refused.params.get("error") == "invalid_scope", refused.params


async def test_with_no_scopes_configured_the_metadata_names_none_and_the_sdk_client_still_logs_in(
        processes: Processes, tmp_path: Path, start_auth_server: Callable[..., AuthServer], mock_api) -> None:
    port = _free_port()
    idp = start_auth_server([f"http://127.0.0.1:{port}/mcp"])
    url = serve(processes, tmp_path, idp, port, mock_api.url)
    metadata = httpx.get(f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp", trust_env=False).json()
    assert "scopes_supported" not in metadata  # not `[]`, which told clients to ask for nothing
    challenge = httpx.post(url, json={}, trust_env=False).headers["www-authenticate"]
    assert "scope=" not in challenge
    seen: dict[str, Any] = {}

    async def calls(client: Client) -> None:
        seen["tools"] = [t.name for t in (await client.list_tools()).tools]

    asked = await sdk_client_flow(idp, url, calls)
    assert "createOrder" in seen["tools"] and "mcp:tools" in asked[0].split()  # the realm's scopes


def mcp_remote(url: str, home: Path, callback_port: int) -> StdioServerParameters:
    node = shutil.which("node")
    assert node is not None
    env = {**os.environ, "HOME": str(home), "MCP_REMOTE_CONFIG_DIR": str(home / ".mcp-auth"),
           "BROWSER": f"{sys.executable} {FAKE_BROWSER}", "FAKE_BROWSER_USER": "carol",
           "FAKE_BROWSER_LOG": str(home / "browser.log"), "NO_PROXY": "127.0.0.1,localhost",
           "DISPLAY": "", "WAYLAND_DISPLAY": ""}
    return StdioServerParameters(command=node, args=[str(MCP_REMOTE), url, str(callback_port), "--host", "127.0.0.1"],
                                 env=env, cwd=str(home))


@pytest.mark.parametrize("scoped", [True, False], ids=["step-up", "no-scopes"])
async def test_mcp_remote_logs_in_and_steps_up_through_the_realm(
        processes: Processes, tmp_path: Path, start_auth_server: Callable[..., AuthServer], mock_api,
        node_bin: Path, scoped: bool) -> None:
    port = _free_port()
    idp = start_auth_server([f"http://127.0.0.1:{port}/mcp"], dcr_scope=ALL_SCOPES)
    url = serve(processes, tmp_path, idp, port, mock_api.url, **(SCOPED if scoped else {}))
    home = tmp_path / "home"
    home.mkdir()
    try:
        with anyio.fail_after(90):
            async with Client(stdio_client(mcp_remote(url, home, _free_port()))) as client:
                tools = [t.name for t in (await client.list_tools()).tools]
                order = await client.call_tool("createOrder", ORDER)
    except BaseException:
        log = home / "browser.log"
        print(log.read_text() if log.exists() else "(the browser was never opened)")
        raise
    assert ("createOrder" in tools) is not scoped  # with scopes, the first token lacks mcp:admin
    assert not order.is_error, order
    logins = (home / "browser.log").read_text().count("---")
    assert logins == (2 if scoped else 1)  # the step-up is a second login
