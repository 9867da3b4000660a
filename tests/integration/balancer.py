"""nginx as a round-robin load balancer over `openapi-mcp serve` replicas, for the scale-out tests.

`start_nginx(backends)` writes a config (round robin, no affinity: no `ip_hash`, no `hash`,
no `sticky`) under a temp dir, starts Debian's nginx in the foreground on a free loopback
port, waits until it answers and returns it; `processes` stops it at session end.
`Replica` / `start_replicas` start N `openapi-mcp serve --config FILE` processes.
`Pair` / `start_pair` is the usual shape of a cross-replica test: two replicas sharing a fresh Redis,
behind nginx; `post` and `open_session` speak raw JSON-RPC to either.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

from tests.mcp_http import mcp_request

if TYPE_CHECKING:
    from tests.integration.conftest import Process, Processes
    from tests.integration.services import RedisServer

READY_TIMEOUT: Final = 15.0
NGINX_CONF: Final = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream replicas {{
{servers}
        keepalive 16;
        # Shorter than the replicas' server.keep_alive_timeout (5 s): nginx drops an idle connection
        # before the replica would, so it never sends a request on one the replica is closing.
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            {host_header}
            proxy_buffering off;
            proxy_read_timeout 60s;
            # A replica that refuses the connection (stopped, restarting) or never answers the connect:
            # the request goes to the next replica. POST is retried only when nginx sent none of it
            # (its default without `non_idempotent`): a tools/call a replica may have started is never
            # sent twice. `timeout` is the connect timeout only while nothing was sent.
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Nginx:
    url: str  # http://127.0.0.1:PORT
    process: Process
    directory: Path

    def access_log(self) -> str:
        return (self.directory / "access.log").read_text(encoding="utf-8", errors="replace")

    def error_log(self) -> str:
        return (self.directory / "error.log").read_text(encoding="utf-8", errors="replace")


@dataclass
class Replica:
    name: str
    base_url: str
    port: int
    process: Process

    def readiness(self, key: str) -> str:
        """What /readyz says of `key` among its upstreams ("reachable", "degraded"; "None": absent)."""
        body = httpx.get(f"{self.base_url}/readyz", trust_env=False, timeout=5).json()
        return str(body["upstreams"].get(key))

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` on /metrics whose labels include `labels`."""
        text = httpx.get(f"{self.base_url}/metrics", trust_env=False, timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] != name or not all(f'{k}="{v}"' in head for k, v in labels.items()):
                continue
            total += float(value)
        return total


@pytest.fixture(scope="session")
def start_nginx(processes: Processes, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Nginx]:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.fail("nginx is missing: `apt-get install nginx-light` (scripts/test.sh does it as root)", pytrace=False)
    count = 0

    def start(backends: Sequence[int], *, pass_host: bool = True, port: int | None = None) -> Nginx:
        """Round robin over 127.0.0.1:`backends` on `port` (a free one by default); `pass_host`: send the
        client's Host (else nginx's default, the upstream block's name)."""
        nonlocal count
        count += 1
        directory = tmp_path_factory.mktemp(f"nginx-{count}")
        port = port or _free_port()
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in backends)
        (directory / "nginx.conf").write_text(NGINX_CONF.format(
            dir=directory, port=port, servers=servers,
            host_header="proxy_set_header Host $http_host;" if pass_host else ""))
        process = processes.start(f"nginx-{count}", [binary, "-p", str(directory), "-e", str(directory / "error.log"),
                                                     "-c", str(directory / "nginx.conf"), "-g", "daemon off;"])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                httpx.get(f"{url}/healthz", trust_env=False, timeout=1)
                break
            except httpx.TransportError:
                if process.popen.poll() is not None or time.monotonic() > deadline:
                    process._fail(f"did not answer on port {port}:\n"
                                  + (directory / "error.log").read_text(errors="replace"))
                time.sleep(0.05)
        return Nginx(url, process, directory)

    return start


@pytest.fixture(scope="session")
def start_replicas(processes: Processes, openapi_mcp_command: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Callable[..., list[Replica]]:
    count = 0

    def start(config: str, n: int = 3, *, env: Mapping[str, str] | None = None,
              ports: Sequence[int] | None = None) -> list[Replica]:
        """`n` replicas of `openapi-mcp serve --config` with this YAML text (`ports`: to restart on the same)."""
        nonlocal count
        count += 1
        path = tmp_path_factory.mktemp(f"replicas-{count}") / "config.yaml"
        path.write_text(config)
        started = []
        for index in range(n):
            port = ports[index] if ports else _free_port()
            name = f"replica-{count}-{index}"
            process = processes.start(name, [openapi_mcp_command, "serve", "--config", str(path), "--host",
                                             "127.0.0.1", "--port", str(port)], **dict(env or {}))
            started.append(Replica(name, f"http://127.0.0.1:{port}", port, process))
        for replica in started:
            replica.process.wait_ready(f"{replica.base_url}/healthz")
        return started

    return start


def spread(replicas: Sequence[Replica], metric: str, **labels: Any) -> list[float]:
    return [replica.metric(metric, **labels) for replica in replicas]


@dataclass
class Pair:
    """Two replicas sharing one Redis, behind a round-robin nginx."""

    nginx: Nginx
    a: Replica
    b: Replica
    redis: RedisServer

    def stop(self) -> None:
        self.nginx.process.stop()
        self.a.process.stop()
        self.b.process.stop()
        self.redis.stop()


@pytest.fixture(scope="session")
def start_pair(start_replicas: Callable[..., list[Replica]], start_nginx: Callable[..., Nginx],
               start_redis: Callable[..., RedisServer]) -> Callable[..., Pair]:
    def start(config: str, *, env: Mapping[str, str] | None = None, **fields: Any) -> Pair:
        """A fresh Redis, then two replicas with `config` (a YAML template: `{redis}` is its URL, the rest `fields`)."""
        redis = start_redis()
        a, b = start_replicas(config.format(redis=redis.url, **fields), 2, env=env)
        return Pair(start_nginx([a.port, b.port]), a, b, redis)

    return start


async def post(http: httpx.AsyncClient, base: str, body: Mapping[str, Any], session: str | None) -> httpx.Response:
    """One JSON-RPC message POSTed to `base`/mcp, with the headers of a 2025-06-18 client."""
    headers, _ = mcp_request("ping", None, session=session, id=None)
    return await http.post(f"{base}/mcp", headers=headers, content=json.dumps(body))


async def open_session(http: httpx.AsyncClient, base: str, init: Mapping[str, Any]) -> str:
    """initialize (with these params) and notifications/initialized at `base`: the session's ID."""
    opened = await post(http, base, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}, None)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    done = await post(http, base, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    assert done.status_code == 202, done.text
    return session
