"""A hostile authorization server (issue 12, items 13, 6 and 1), against `openapi-mcp serve`.

A loopback server (tests/integration/hostile.py) plays the authorization server: its
introspection endpoint answers what each token asks for (`"exp": NaN`, `"exp": "1"`, a scope that
is a list, ...), and its JWKS verifies tokens minted here with the same hostile claims. Checked:

* a malformed claim (exp/nbf/iat not a finite number in range, booleans, huge values; scope,
  iss, sub, client_id not strings; aud or scp of the wrong type) is 401 invalid_token from both
  verifiers, never a 500 and never a token that does not expire;
* the introspection and JWKS fetches never follow a redirect (the introspection request carries
  the client secret): 503, and the redirect's target is never reached;
* an answer that is a gzip bomb, or just too large, is 503 at once with bounded memory.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc import jwk, jwt

from tests.integration.hostile import RawServer, Request, send

if TYPE_CHECKING:
    from conftest import MockApi, Process, Processes

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT: Final = Path(__file__).resolve().parents[2]
SPEC: Final = ROOT / "mock_api" / "marketplace.yaml"
JSON_HEADERS: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INITIALIZE: Final = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
SECRET: Final = "gateway-secret-do-not-leak"


class HostileAuthServer(RawServer):
    """Introspection at /introspect, JWKS at /certs. A token names the answer it gets: its
    introspection answer (or JWT claims) is the good one updated with `claims[token]`.

    `mode`: "normal", "redirect" (every endpoint answers `status` with a Location on `other`),
    "bomb" (a 1 GB JSON answer gzipped to ~1 MB) or "huge" (2 MB of plain JSON).
    """

    name = "hostile-auth-server"

    def __init__(self) -> None:
        super().__init__()
        self.resource = ""
        self.mode = "normal"
        self.status = 302
        self.other = ""
        self.claims: dict[str, dict[str, Any]] = {}
        self.key = jwk.RSAKey.generate_key(2048, parameters={"kid": "hostile-1", "use": "sig", "alg": "RS256"})

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/demo"

    def good(self) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.issuer, "aud": self.resource, "sub": "ada", "client_id": "svc", "scope": "mcp:tools",
                "iat": now, "exp": now + 300}

    def token(self, name: str, changes: dict[str, Any]) -> str:
        """An opaque token for introspection whose answer is the good one with `changes`."""
        self.claims[name] = changes
        return name

    def jwt(self, changes: dict[str, Any]) -> str:
        claims = {**self.good(), **changes}
        claims = {k: v for k, v in claims.items() if v is not _ABSENT}
        return jwt.encode({"alg": "RS256", "kid": self.key.kid, "typ": "at+jwt"}, claims, self.key)

    async def answer(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        if self.mode == "redirect":
            return await send(writer, self.status, b"", headers={"location": f"{self.other}{request.path}"})
        if self.mode == "bomb":
            return await send(writer, 200, _bomb(), headers={"content-encoding": "gzip"})
        if self.mode == "huge":
            return await send(writer, 200, json.dumps({"active": True, "padding": "x" * (2 << 20)}).encode())
        if request.path == "/certs":
            return await send(writer, 200, json.dumps(jwk.KeySet([self.key]).as_dict(private=False)).encode())
        if request.path == "/introspect":
            token = parse_qs(request.body.decode()).get("token", [""])[0]
            if token not in self.claims:
                return await send(writer, 200, b'{"active": false}')
            answer = {"active": True, **self.good(), **self.claims[token]}
            answer = {k: v for k, v in answer.items() if v is not _ABSENT}
            return await send(writer, 200, json.dumps(answer).encode())  # NaN and Infinity as Python writes them
        return await send(writer, 404, b"{}")


_ABSENT: Final = object()


def _bomb() -> bytes:
    if not _BOMB:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        block = b" " * (1 << 20)
        _BOMB.append(compressor.compress(b'{"active": true, "x": "') + b"".join(
            compressor.compress(block) for _ in range(1024)) + compressor.compress(b'"}') + compressor.flush())
    return _BOMB[0]


_BOMB: list[bytes] = []


@pytest.fixture(scope="module")
def auth_server() -> Iterator[HostileAuthServer]:
    with HostileAuthServer() as server:
        yield server


@pytest.fixture
def bystander() -> Iterator[RawServer]:
    """Where redirects point: it must never be reached."""
    with RawServer() as server:
        yield server


@dataclass
class Served:
    url: str
    base_url: str
    process: Process
    tokens: list[str] = field(default_factory=list)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def serve(processes: Processes, free_port: Callable[[], int], openapi_mcp_command: str, mock_api_url: str,
          tmp_path_factory: pytest.TempPathFactory, auth_server: HostileAuthServer) -> Callable[..., Served]:
    """`serve(verifier)`: the module's server for that verifier; `serve(verifier, fresh="x")`: another one."""
    started: dict[str, Served] = {}

    def start(verifier: str, fresh: str = "") -> Served:
        if verifier + fresh in started:
            return started[verifier + fresh]
        port = free_port()
        url = f"http://127.0.0.1:{port}/mcp"
        auth: dict[str, Any] = {"resource": url, "authorization_servers": [auth_server.issuer], "timeout": 3}
        if fresh == "-claims":
            auth["claim_to_header"] = [{"claim": "realm_access.roles", "header": "X-Roles"}]
        if verifier == "introspection":
            auth |= {"introspection_endpoint": f"{auth_server.url}/introspect", "client_id": "mcp-gateway",
                     "client_secret": SECRET}
        else:
            auth |= {"jwks_uri": f"{auth_server.url}/certs"}
        config = tmp_path_factory.mktemp("hostile-auth") / "config.yaml"
        config.write_text(json.dumps({"spec": str(SPEC), "upstream": {"url": mock_api_url}, "auth": auth}))
        process = processes.start(f"openapi-mcp-hostile-auth-{verifier}{fresh}", [
            openapi_mcp_command, "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)])
        process.wait_ready(f"http://127.0.0.1:{port}/healthz")
        started[verifier + fresh] = Served(url, f"http://127.0.0.1:{port}", process)
        return started[verifier + fresh]

    return start


async def initialize(served: Served, token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20, trust_env=False) as http:
        return await http.post(served.url, json=INITIALIZE, headers={**JSON_HEADERS, "authorization": f"Bearer {token}"})


# -- malformed claims -----------------------------------------------------------------------------

BIG: Final = 10 ** 400  # no float holds it
TIMES: Final = [
    ("exp", float("nan")), ("exp", float("inf")), ("exp", float("-inf")), ("exp", "1"), ("exp", "9999999999"),
    ("exp", True), ("exp", False), ("exp", None), ("exp", BIG), ("exp", 1e300), ("exp", -5), ("exp", [1]),
    ("exp", {"at": 1}), ("nbf", float("nan")), ("nbf", "0"), ("nbf", True), ("nbf", BIG), ("iat", float("nan")),
    ("iat", "yesterday"), ("iat", False), ("iat", -BIG),
]
TYPES: Final = [
    ("scope", ["mcp:tools"]), ("scope", 5), ("scope", None), ("scope", {"mcp:tools": True}), ("scp", 5),
    ("scp", ["mcp:tools", 5]), ("aud", 5), ("aud", {"uri": "x"}), ("aud", None), ("iss", 5), ("sub", 5),
    ("sub", ["ada"]), ("client_id", 7), ("azp", False),
]
MALFORMED: Final = TIMES + TYPES


def _message(claim: str) -> str:
    if claim in ("exp", "nbf", "iat"):
        return f"The access token's {claim!r} claim is not a valid time"
    if claim in ("aud", "scp"):
        return f"The access token's {claim!r} claim is not a string or a list of strings"
    return f"The access token's {claim!r} claim is not a string"


@pytest.mark.parametrize("verifier", ["introspection", "jwks"])
@pytest.mark.parametrize(("claim", "value"), MALFORMED, ids=[f"{c}={v!r}"[:40] for c, v in MALFORMED])
async def test_a_malformed_claim_is_an_invalid_token(serve: Callable[..., Served], auth_server: HostileAuthServer,
                                                     verifier: str, claim: str, value: Any) -> None:
    served = serve(verifier)
    auth_server.resource = served.url
    changes = {claim: value}
    name = f"{verifier}-{claim}-{abs(hash(repr(value)))}"  # a token has no spaces
    token = auth_server.token(name, changes) if verifier == "introspection" else auth_server.jwt(changes)
    response = await initialize(served, token)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{served.base_url}/.well-known/oauth-protected-resource/mcp", '
        f'error="invalid_token", error_description="{_message(claim)}"')
    assert "Traceback" not in served.process.log()


@pytest.mark.parametrize("verifier", ["introspection", "jwks"])
async def test_a_well_formed_token_is_still_accepted(serve: Callable[..., Served], auth_server: HostileAuthServer,
                                                     verifier: str) -> None:
    served = serve(verifier)
    auth_server.resource = served.url
    changes: dict[str, Any] = {"exp": time.time() + 300.5, "nbf": 0, "aud": [served.url, "account"],
                               "scp": ["mcp:tools"]}
    token = auth_server.token(f"{verifier}-good", changes) if verifier == "introspection" else auth_server.jwt(changes)
    response = await initialize(served, token)
    assert response.status_code == 200, response.text


# -- fetches that must not follow redirects, and answers that are too large -------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_introspection_never_follows_a_redirect(serve: Callable[..., Served], auth_server: HostileAuthServer,
                                                      bystander: RawServer, status: int) -> None:
    served = serve("introspection")
    auth_server.resource = served.url
    token = auth_server.token(f"redirect-{status}", {})
    auth_server.mode, auth_server.status, auth_server.other = "redirect", status, bystander.url
    try:
        response = await initialize(served, token)
    finally:
        auth_server.mode = "normal"
    assert response.status_code == 503, response.text
    assert response.json()["error_description"] == f"The authorization server answered HTTP {status}"
    assert bystander.requests == []  # the client secret (and the caller's token) went nowhere else


@pytest.mark.parametrize("status", [302, 308])
async def test_the_jwks_fetch_never_follows_a_redirect(serve: Callable[..., Served], auth_server: HostileAuthServer,
                                                       bystander: RawServer, status: int) -> None:
    auth_server.mode, auth_server.status, auth_server.other = "redirect", status, bystander.url
    try:
        served = serve("jwks", fresh=f"-redirect-{status}")  # its first JWKS fetch is the redirected one
        auth_server.resource = served.url
        response = await initialize(served, auth_server.jwt({}))
    finally:
        auth_server.mode = "normal"
    assert response.status_code == 503, response.text
    assert response.json()["error_description"] == "The authorization server's keys could not be fetched"
    assert bystander.requests == []  # keys from wherever a redirect points are not the authorization server's
    served.process.stop()


@pytest.mark.parametrize("mode", ["bomb", "huge"])
async def test_an_oversized_introspection_answer_is_503_with_bounded_memory(
        serve: Callable[..., Served], auth_server: HostileAuthServer, mode: str) -> None:
    served = serve("introspection")
    auth_server.resource = served.url
    _bomb()
    before = served.peak_rss_mb()
    auth_server.mode = mode
    try:
        response = await initialize(served, auth_server.token(f"oversized-{mode}", {}))
    finally:
        auth_server.mode = "normal"
    assert response.status_code == 503, response.text
    assert response.json()["error_description"] == "The authorization server's answer is too large"
    assert served.peak_rss_mb() - before < 50


# -- claims sent upstream (claim_to_header) -------------------------------------------------------


async def test_a_claim_list_with_an_item_holding_the_delimiter_never_reaches_the_upstream(
        serve: Callable[..., Served], auth_server: HostileAuthServer, mock_api: MockApi) -> None:
    served = serve("introspection", fresh="-claims")
    auth_server.resource = served.url
    results = {}
    for name, roles in (("split", ["a,b", "c"]), ("plain", ["a", "b c"])):
        token = auth_server.token(f"roles-{name}", {"realm_access": {"roles": roles}})
        async with httpx.AsyncClient(base_url=served.base_url, timeout=20, trust_env=False) as http:
            headers = {**JSON_HEADERS, "authorization": f"Bearer {token}"}
            init = await http.post("/mcp", headers=headers, json=INITIALIZE)
            assert init.status_code == 200, init.text
            headers |= {"mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
            answer = await http.post("/mcp", headers=headers, json={
                "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "getApiInfo", "arguments": {}}})
            results[name] = answer.json()["result"]
    assert results["split"]["isError"] is True
    assert results["split"]["content"][0]["text"] == (
        "The token claim 'realm_access.roles' has an item that is empty, holds ',' or starts or ends with a space, "
        "so its list cannot be sent unambiguously as the header 'X-Roles'")
    assert not results["plain"].get("isError"), results["plain"]
    received = mock_api.requests()
    assert [r["headers"].get("x-roles") for r in received] == ["a,b c"]  # the refused call sent nothing
