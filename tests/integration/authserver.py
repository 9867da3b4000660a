"""A real OAuth 2 authorization server for the auth tests: `tests/node/auth-server.mjs` (oidc-provider 9).

It is laid out like a Keycloak realm: issuer `http://127.0.0.1:PORT/realms/demo`, token at
`.../protocol/openid-connect/token`, introspection at `.../token/introspect`, JWKS at `.../certs`,
authorization at `.../auth`, open DCR at `/realms/demo/clients-registrations/openid-connect`.

Clients (secrets are test constants; scopes are what a token gets when no `scope` is sent):

    mcp-gateway  confidential, gateway-secret, basic or post: the only client allowed to introspect
    svc-admin    client_credentials, admin-secret, opaque, mcp:tools mcp:admin mcp:read, roles admin, user
    svc-user     client_credentials, user-secret,  opaque, mcp:tools mcp:read,           roles user
    svc-jwt      client_credentials, jwt-secret,   JWT,    mcp:tools mcp:admin mcp:read, roles admin
    test-cli     public (PKCE S256), redirect http://127.0.0.1:33418/callback, authorization_code
    mcp-exchanger  exchanger-secret, basic or post, RFC 8693 token exchange and client_credentials,
                 JWT, api:read api:write, roles gateway: the gateway's client toward the upstream API
    svc-short    client_credentials, short-secret, JWT, tokens live 4 s (refresh tests)

Token exchange (`urn:ietf:params:oauth:grant-type:token-exchange`) takes an active token of this
realm as subject_token (and actor_token), one audience (`upstream-api` or a resource) or resource,
and scopes within the client's; the new token keeps the subject's `sub`, has `azp` = the
exchanging client and `act: {sub: <actor>}` with an actor token. `counters()` and `fault()` see
and break the token endpoint (per client) for the failure tests.

Every access token has `aud` = its resource, `realm_access.roles`, `preferred_username`
(`service-account-<client>` for client credentials, the login name for users), `email`
(`<sub>@example.com`) and `azp`; `sub` is the client_id for client credentials, the login name
for users. JWT access tokens (`typ: at+jwt`, RS256) cannot be introspected (oidc-provider answers
`unsupported_token_type`); opaque ones can, by `mcp-gateway` only.

Fixtures: `start_auth_server(resources)` (one server per distinct resource list, session-wide)
and `auth_server` (resources: `http://127.0.0.1:<mcp_port>/mcp` with a reserved free port, then
`OTHER_RESOURCE`). They use the `processes` and `node_bin` fixtures of tests/integration/conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import httpx
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Process, Processes

SCRIPT: Final = Path(__file__).resolve().parents[1] / "node" / "auth-server.mjs"
# Starting takes about half a second. Twice in CI runs a start printed nothing for the whole wait
# (20 s, then 60 s: stuck before it listened, cause unknown), so a start silent for READY_TIMEOUT
# is reported on stderr with what the process was doing (/proc), ended, and made once more.
READY_TIMEOUT: Final = 15.0
REALM: Final = "demo"
OTHER_RESOURCE: Final = "http://127.0.0.1:1/other-api"
ALL_SCOPES: Final = "mcp:tools mcp:admin mcp:read"

GATEWAY: Final = ("mcp-gateway", "gateway-secret")
SVC_ADMIN: Final = ("svc-admin", "admin-secret")
SVC_USER: Final = ("svc-user", "user-secret")
SVC_JWT: Final = ("svc-jwt", "jwt-secret")
TEST_CLI: Final = "test-cli"
EXCHANGER: Final = ("mcp-exchanger", "exchanger-secret")
SVC_SHORT: Final = ("svc-short", "short-secret")
EXCHANGE_AUDIENCE: Final = "upstream-api"
TOKEN_EXCHANGE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
TEST_CLI_REDIRECT: Final = "http://127.0.0.1:33418/callback"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode both parts, then base64."""
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class AuthServerError(AssertionError):
    """The authorization server answered something a helper did not expect."""


@dataclass
class AuthorizationResult:
    """The end of a headless authorization request: the redirect back to the client."""

    redirect: str
    params: dict[str, str]
    hops: list[str] = field(default_factory=list)

    @property
    def code(self) -> str:
        if "code" not in self.params:
            raise AuthServerError(f"no code in the redirect {self.redirect}")
        return self.params["code"]


@dataclass
class AuthServer:
    """A running auth-server.mjs; `metadata` is its OpenID discovery document."""

    issuer: str
    resources: tuple[str, ...]
    metadata: dict[str, Any]
    process: Process = field(repr=False)

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT` (the test routes live here, outside the realm)."""
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def resource(self) -> str:
        """The first resource: the default for requests that send none (the MCP URL)."""
        return self.resources[0]

    @property
    def mcp_port(self) -> int:
        """The port of the first resource, reserved for the MCP server to be started on."""
        port = urlsplit(self.resources[0]).port
        assert port is not None, self.resources[0]
        return port

    @property
    def token_endpoint(self) -> str:
        return str(self.metadata["token_endpoint"])

    @property
    def introspection_endpoint(self) -> str:
        return str(self.metadata["introspection_endpoint"])

    @property
    def jwks_uri(self) -> str:
        return str(self.metadata["jwks_uri"])

    @property
    def registration_endpoint(self) -> str:
        return str(self.metadata["registration_endpoint"])

    @property
    def authorization_endpoint(self) -> str:
        return str(self.metadata["authorization_endpoint"])

    def _client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(timeout=10.0, trust_env=False, **kwargs)

    # -- token endpoint

    def token_response(
        self, client_id: str, secret: str | None, *, scope: str | None = None,
        resource: str | Sequence[str] | None = None, auth: str = "basic", **params: str,
    ) -> httpx.Response:
        """POST a client_credentials request (or `grant_type=...` in `params`); the raw response."""
        data: dict[str, Any] = {"grant_type": "client_credentials", **params}
        if scope is not None:
            data["scope"] = scope
        if resource is not None:
            data["resource"] = [resource] if isinstance(resource, str) else list(resource)
        headers = {}
        if auth == "basic" and secret is not None:
            headers["Authorization"] = _basic(client_id, secret)
        else:
            data["client_id"] = client_id
            if secret is not None:
                data["client_secret"] = secret
        with self._client() as client:
            return client.post(self.token_endpoint, data=data, headers=headers)

    def token(
        self, client_id: str, secret: str, scope: str | None = None, resource: str | None = None,
    ) -> str:
        """A client_credentials access token (client_secret_basic); no `resource` -> the first one."""
        response = self.token_response(client_id, secret, scope=scope, resource=resource)
        if response.status_code != 200:
            raise AuthServerError(
                f"token request for {client_id} failed: {response.status_code} {response.text}"
            )
        return str(response.json()["access_token"])

    # -- introspection, keys

    def introspect(
        self, token: str, *, client: tuple[str, str] = GATEWAY, auth: str = "basic",
        token_type_hint: str | None = "access_token",
    ) -> dict[str, Any]:
        """The introspection response for `token`, asked as `mcp-gateway` (basic or post auth)."""
        response = self.introspect_response(token, client=client, auth=auth, token_type_hint=token_type_hint)
        if response.status_code != 200:
            raise AuthServerError(f"introspection failed: {response.status_code} {response.text}")
        body: dict[str, Any] = response.json()
        return body

    def introspect_response(
        self, token: str, *, client: tuple[str, str] = GATEWAY, auth: str = "basic",
        token_type_hint: str | None = "access_token",
    ) -> httpx.Response:
        data = {"token": token}
        if token_type_hint:
            data["token_type_hint"] = token_type_hint
        headers = {}
        if auth == "basic":
            headers["Authorization"] = _basic(*client)
        else:
            data.update(client_id=client[0], client_secret=client[1])
        with self._client() as http:
            return http.post(self.introspection_endpoint, data=data, headers=headers)

    def jwks(self) -> dict[str, Any]:
        with self._client() as client:
            response = client.get(self.jwks_uri)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def rotate_keys(self) -> str:
        """Add a new RSA signing key and make it the active one; returns its `kid`.

        Older keys stay in the JWKS; issued tokens and registered clients stay valid.
        """
        with self._client() as client:
            response = client.post(f"{self.base_url}/__test/rotate")
        response.raise_for_status()
        return str(response.json()["kid"])

    # -- token endpoint counters and faults (outside the realm)

    def counters(self) -> dict[str, int]:
        """Token requests seen so far, by `grant_type` and by `grant_type client_id`."""
        with self._client() as client:
            response = client.get(f"{self.base_url}/__test/counters")
        response.raise_for_status()
        counts: dict[str, int] = response.json()["token_requests"]
        return counts

    def introspections(self) -> int:
        """POSTs to the introspection endpoint so far (whoever sent them)."""
        with self._client() as client:
            response = client.get(f"{self.base_url}/__test/counters")
        response.raise_for_status()
        return int(response.json()["introspections"])

    def count(self, grant_type: str, client_id: str | None = None) -> int:
        key = grant_type if client_id is None else f"{grant_type} {client_id}"
        return self.counters().get(key, 0)

    def fault(self, client_id: str, mode: str, **options: Any) -> None:
        """Make the token endpoint misbehave for `client_id`: slow (delay_ms), status (status),
        garbage, reset, or none (behave again)."""
        with self._client() as client:
            response = client.post(f"{self.base_url}/__test/fault", json={"client_id": client_id, "mode": mode, **options})
        response.raise_for_status()

    # -- dynamic registration and the authorization code flow

    def register_client(self, **metadata: Any) -> dict[str, Any]:
        """Open dynamic client registration (no initial access token); the registration response."""
        with self._client() as client:
            response = client.post(self.registration_endpoint, json=metadata)
        if response.status_code != 201:
            raise AuthServerError(f"registration failed: {response.status_code} {response.text}")
        body: dict[str, Any] = response.json()
        return body

    def authorize(
        self, *, username: str, client_id: str = TEST_CLI, redirect_uri: str = TEST_CLI_REDIRECT,
        scope: str = "mcp:tools mcp:read", resource: str | None = None, code_challenge: str | None = None,
        state: str | None = None, extra: dict[str, str] | None = None, max_hops: int = 12,
    ) -> AuthorizationResult:
        """Drive /auth through devInteractions (login as `username`, then consent) without a browser.

        Redirects inside the AS are followed by hand; the one to `redirect_uri` is returned, not
        followed (nothing listens there).
        """
        query: dict[str, str] = {
            "client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri, "scope": scope,
        }
        if resource is not None:
            query["resource"] = resource
        if code_challenge is not None:
            query.update(code_challenge=code_challenge, code_challenge_method="S256")
        if state is not None:
            query["state"] = state
        query.update(extra or {})
        url = f"{self.authorization_endpoint}?{urlencode(query)}"
        hops: list[str] = []
        with self._client(follow_redirects=False) as client:
            response = client.get(url)
            for _ in range(max_hops):
                request = response.request
                hops.append(f"{request.method} {request.url.path} -> {response.status_code}")
                if response.is_redirect:
                    location = urljoin(str(response.request.url), response.headers["location"])
                    if location.startswith(redirect_uri):
                        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
                        return AuthorizationResult(location, params, hops)
                    if not location.startswith(self.base_url):
                        raise AuthServerError(f"unexpected redirect to {location} (hops: {hops})")
                    response = client.get(location)
                    continue
                if response.status_code == 200 and "<form" in response.text:
                    response = self._submit_interaction(client, response, username)
                    continue
                raise AuthServerError(
                    f"unexpected {response.status_code} at {response.request.url}: "
                    f"{response.text[:2000]} (hops: {hops})"
                )
        raise AuthServerError(f"no redirect to {redirect_uri} after {max_hops} hops: {hops}")

    @staticmethod
    def _submit_interaction(client: httpx.Client, page: httpx.Response, username: str) -> httpx.Response:
        action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
        prompt = re.search(r'name="prompt" value="([^"]+)"', page.text)
        if action is None or prompt is None:
            raise AuthServerError(f"no interaction form in {page.text[:2000]}")
        target = urljoin(str(page.request.url), html.unescape(action.group(1)))
        form = {"prompt": prompt.group(1)}
        if form["prompt"] == "login":
            form.update(login=username, password="any")
        return client.post(target, data=form)

    def exchange_code(
        self, code: str, *, code_verifier: str, client_id: str = TEST_CLI,
        redirect_uri: str = TEST_CLI_REDIRECT, resource: str | None = None,
    ) -> httpx.Response:
        """The authorization_code token request of a public client."""
        data = {
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": code_verifier, "client_id": client_id,
        }
        if resource is not None:
            data["resource"] = resource
        with self._client() as client:
            return client.post(self.token_endpoint, data=data)

    def user_token(
        self, username: str, *, scope: str = "mcp:tools mcp:read", resource: str | None = None,
        client_id: str = TEST_CLI, redirect_uri: str = TEST_CLI_REDIRECT,
    ) -> str:
        """An access token for the user `username` (auth code + PKCE S256 through devInteractions)."""
        resource = resource or self.resource
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(8)
        result = self.authorize(
            username=username, client_id=client_id, redirect_uri=redirect_uri, scope=scope,
            resource=resource, code_challenge=challenge, state=state,
        )
        if result.params.get("state") != state:
            raise AuthServerError(f"state mismatch in {result.redirect}")
        response = self.exchange_code(
            result.code, code_verifier=verifier, client_id=client_id, redirect_uri=redirect_uri,
            resource=resource,
        )
        if response.status_code != 200:
            raise AuthServerError(f"code exchange failed: {response.status_code} {response.text}")
        return str(response.json()["access_token"])


def _fail(process: Process, what: str) -> NoReturn:
    message = (
        f"auth server {what}\ncommand: {' '.join(process.argv)}\n"
        f"--- {process.log_path} ---\n{process.log()}"
    )
    pytest.fail(message, pytrace=False)


def _wait_ready(process: Process, timeout: float = READY_TIMEOUT) -> str | None:
    """The issuer from the `READY <issuer>` line; None if none came within `timeout` (the process
    is still running); fails with the process log if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in process.log().splitlines():
            if line.startswith("READY "):
                return line.removeprefix("READY ").strip()
        if process.popen.poll() is not None:
            _fail(process, f"exited with code {process.popen.returncode} before READY")
        time.sleep(0.05)
    return None


def _process_state(pid: int) -> str:
    """Whether a silent process is running or waiting, and on what, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        wchan = Path(f"/proc/{pid}/wchan").read_text().strip() or "-"
        load = Path("/proc/loadavg").read_text().strip()
    except OSError as exc:
        return f"no /proc details: {exc}"
    tick = os.sysconf("SC_CLK_TCK")
    threads = []  # what each of node's threads waits on: the main one, V8's workers, libuv's pool
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            threads.append(f"{(task / 'comm').read_text().strip()}: {(task / 'wchan').read_text().strip() or '-'}")
        except OSError:
            continue
    return (
        f"state {stat[0]}, wchan {wchan}, user {int(stat[11]) / tick:.2f} s, "
        f"system {int(stat[12]) / tick:.2f} s; threads [{', '.join(threads)}]; loadavg {load}"
    )


@pytest.fixture(scope="session")
def start_auth_server(processes: Processes, node_bin: Path, pytestconfig: pytest.Config) -> Callable[..., AuthServer]:
    """Factory: `start_auth_server([mcp_url, ...])`, one running server per distinct resource list."""
    node = shutil.which("node")
    assert node is not None  # node_bin checked it
    servers: dict[tuple[str, ...], AuthServer] = {}
    terminal = pytestconfig.pluginmanager.getplugin("terminalreporter")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    names = itertools.count(1)  # one log file per process started, the ones that never got ready included

    def start(resources: Sequence[str], *, dcr_scope: str | None = None) -> AuthServer:
        """`dcr_scope`: scopes every dynamically registered client may ask for (Keycloak's Allowed
        Client Scopes policy); without it a client may ask only for what it registered with."""
        key = (*resources, f"--dcr-scope={dcr_scope}") if dcr_scope else tuple(resources)
        if not resources:
            raise ValueError("at least one resource is required")
        if key in servers:
            return servers[key]
        for attempt in (1, 2):
            argv = [node, str(SCRIPT), "--port", str(_free_port())]
            for resource in resources:
                argv += ["--resource", resource]
            if dcr_scope:
                argv += ["--dcr-scope", dcr_scope]
            process = processes.start(f"auth-server-{next(names)}", argv)
            issuer = _wait_ready(process)
            if issuer is not None:
                break
            state = _process_state(process.popen.pid)
            if attempt == 2:
                _fail(process, f"printed no READY line within {READY_TIMEOUT:g} s, twice ({state})")
            # On pytest's terminal, past its capture: a CI log shows it even when the second start passes.
            with capture.global_and_fixture_disabled():
                terminal.write_line(f"\n{process.name} printed no READY line within {READY_TIMEOUT:g} s ({state}); "
                                    f"log: {process.log()!r}; starting it again")
            process.stop()
        try:
            with httpx.Client(timeout=5.0, trust_env=False) as client:
                response = client.get(f"{issuer}/.well-known/openid-configuration")
            response.raise_for_status()
            metadata = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            _fail(process, f"discovery failed: {exc!r}")
        if metadata.get("issuer") != issuer:
            _fail(process, f"discovery issuer {metadata.get('issuer')!r} != {issuer!r}")
        servers[key] = AuthServer(issuer=issuer, resources=tuple(resources), metadata=metadata, process=process)
        return servers[key]

    return start


@pytest.fixture(scope="session")
def auth_server(start_auth_server: Callable[[Sequence[str]], AuthServer]) -> AuthServer:
    """The session's AS for `http://127.0.0.1:<mcp_port>/mcp` (start the MCP server on `mcp_port`)
    and `OTHER_RESOURCE` (tokens for another audience)."""
    mcp_port = _free_port()
    return start_auth_server([f"http://127.0.0.1:{mcp_port}/mcp", OTHER_RESOURCE])
