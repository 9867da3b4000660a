"""The `server:` connection limits as uvicorn gets them (converter.serve.uvicorn_config). The limits
themselves are shown against a running server with raw sockets: tests/integration/test_slow_clients.py."""

from __future__ import annotations

import logging
import resource
from pathlib import Path

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from converter import ConfigError
from converter.config import Settings, load_settings
from converter.serve import fit_open_files, uvicorn_config


def settings(tmp_path: Path, server: str = "{}") -> Settings:
    path = tmp_path / "c.yaml"
    path.write_text(f"tools: [{{method: GET, path: /x}}]\nserver: {server}\n")
    return load_settings(str(path))


def test_defaults_a_public_deployment_can_keep(tmp_path: Path) -> None:
    server = settings(tmp_path).server
    assert (server.max_sessions, server.max_sessions_per_principal, server.session_idle_timeout) == (1000, 50, 600)
    assert (server.max_connections, server.max_connections_per_client) == (1000, 256)
    assert (server.header_timeout, server.body_timeout, server.keep_alive_timeout, server.send_timeout) == (
        10, 30, 5, 60)
    assert server.max_header_bytes == 65536


def test_uvicorn_gets_the_guarded_protocol_and_the_keep_alive_timeout(tmp_path: Path) -> None:
    config = uvicorn_config(object(), settings(tmp_path, "{keep_alive_timeout: 3, header_timeout: 4}"))
    assert issubclass(config.http, HttpToolsProtocol) and config.http is not HttpToolsProtocol
    assert config.timeout_keep_alive == 3 and config.ws == "none"


@pytest.mark.parametrize(("server", "message"), [
    ("{header_timeout: 0}", "server.header_timeout: Input should be greater than 0"),
    ("{max_sessions_per_principal: 0}", "server.max_sessions_per_principal: Input should be greater than or equal to 1"),
    ("{session_idle_timeout: -1}", "server.session_idle_timeout: Input should be greater than 0"),
    ("{max_header_bytes: 100}", "server.max_header_bytes: Input should be greater than or equal to 1024"),
])
def test_bad_limits_name_the_key(tmp_path: Path, server: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(tmp_path, server)


def test_max_connections_is_lowered_to_half_the_open_file_limit(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, 4096))
    assert fit_open_files(100) == 100
    with caplog.at_level(logging.WARNING, "openapi_mcp"):
        assert fit_open_files(1000) == 128
        assert not caplog.records  # the default, lowered quietly
        assert fit_open_files(5000, explicit=True) == 128
    assert caplog.messages == ["server.max_connections 5000 is more than half the open-file limit (256): using 128"]
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert fit_open_files(1000) == 1000


def test_trusted_proxies_decide_whose_forwarded_headers_uvicorn_believes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert uvicorn_config(object(), settings(tmp_path)).forwarded_allow_ips == "127.0.0.1,::1"  # uvicorn's own
    chosen = uvicorn_config(object(), settings(tmp_path, '{trusted_proxies: ["10.0.0.0/8", "::1"]}'))
    assert chosen.forwarded_allow_ips == ["10.0.0.0/8", "::1"]
    assert uvicorn_config(object(), settings(tmp_path, "{trusted_proxies: []}")).forwarded_allow_ips == []


@pytest.mark.parametrize("entry", ["*", "proxy.example.com", "10.0.0.0/33"])
def test_a_trusted_proxy_must_be_an_address_or_a_network(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigError) as exc:
        settings(tmp_path, f'{{trusted_proxies: ["{entry}"]}}')
    assert str(exc.value).endswith(
        f"server.trusted_proxies: Value error, {entry!r} is not an IP address or network (e.g. 10.0.0.0/8, ::1); "
        "'*' is not accepted: every client could then choose its own address")
