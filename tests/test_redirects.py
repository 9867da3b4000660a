"""SSRF through redirects (issue 12, item 6): every hop of every fetch stays where it may go.

Real HTTP servers on loopback (tests/integration/hostile.py): a "home" origin that serves the
spec and answers redirects, and an "other" origin (another port: another origin) that must never
be reached. Covered here: spec URLs and remote `$ref`s (redirects followed only within the
origin, each hop checked, loops and long chains refused), upstream API calls (redirects are
answers, never followed, so configured credentials go nowhere else). The authorization-server
fetches and the MCP upstream are checked in tests/integration/test_outbound_redirects.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from converter.catalog import build_catalog
from converter.cli import main
from converter.config import load_settings
from converter.errors import SpecError
from converter.spec import load_spec
from tests.integration.hostile import RawServer, page, redirect

ROOT: Final = Path(__file__).resolve().parent.parent
PARAMETER: Final = {"P": {"name": "p", "in": "query", "schema": {"type": "string"}}}
FOREIGN: Final = {"P": {"name": "stolen_from_the_other_origin", "in": "query", "schema": {"type": "string"}}}
REDIRECTS: Final = [301, 302, 303, 307, 308]


@pytest.fixture
def home() -> Iterator[RawServer]:
    with RawServer() as server:
        yield server


@pytest.fixture
def other() -> Iterator[RawServer]:
    with RawServer({"/p.json": page(FOREIGN), "/spec.json": page(_spec("/p.json#/P"))}) as server:
        yield server


def _spec(*refs: str) -> dict[str, Any]:
    paths: dict[str, Any] = {f"/r{i}": {"get": {"operationId": f"r{i}", "parameters": [{"$ref": ref}],
                                                "responses": {"200": {"description": "OK"}}}}
                             for i, ref in enumerate(refs)}
    paths["/things"] = {"get": {"operationId": "listThings", "responses": {"200": {"description": "OK"}}}}
    return {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": paths}


def _serve_spec(home: RawServer, *refs: str) -> str:
    home.routes["/spec.json"] = page(_spec(*refs))
    home.routes["/p.json"] = page(PARAMETER)
    return f"{home.url}/spec.json"


def _parameters(spec: Any) -> dict[str, list[str]]:
    return {op.operation_id: [p.name for p in op.parameters] for op in spec.operations}


# -- $refs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", REDIRECTS)
def test_a_same_origin_ref_that_redirects_to_another_origin_is_refused(home: RawServer, other: RawServer,
                                                                       status: int) -> None:
    home.routes["/moved.json"] = redirect(status, f"{other.url}/p.json")
    spec = load_spec(_serve_spec(home, "/moved.json#/P"))
    assert [str(p) for p in spec.problems] == [
        f"#/paths/~1r0/get: {home.url}/moved.json: redirects to '{other.url}/p.json', outside its origin "
        f"{home.url}; only redirects within the origin are followed; skipped"]
    assert _parameters(spec) == {"listThings": []}
    assert other.requests == []  # never reached: its content cannot land in tools/list


def test_a_redirect_is_checked_at_every_hop_not_only_the_first(home: RawServer, other: RawServer) -> None:
    home.routes["/a.json"] = redirect(302, "/b.json")  # relative Location, same origin: followed
    home.routes["/b.json"] = redirect(307, f"{home.url}/c.json")
    home.routes["/c.json"] = redirect(308, f"{other.url}/p.json")  # the third hop leaves: refused
    spec = load_spec(_serve_spec(home, "/a.json#/P"))
    assert [str(p) for p in spec.problems] == [
        f"#/paths/~1r0/get: {home.url}/a.json: redirects to '{other.url}/p.json', outside its origin "
        f"{home.url}; only redirects within the origin are followed; skipped"]
    assert home.paths() == ["/spec.json", "/a.json", "/b.json", "/c.json"] and other.requests == []


def test_redirects_within_the_origin_are_followed(home: RawServer) -> None:
    home.routes["/a.json"] = redirect(301, "b.json")  # relative to the current URL
    home.routes["/b.json"] = redirect(302, "/p.json")
    spec = load_spec(_serve_spec(home, "/a.json#/P"))
    assert not spec.problems and _parameters(spec) == {"r0": ["p"], "listThings": []}


OFF_ORIGIN: Final = [
    ("another port", "{other}/p.json"),
    ("another scheme", "https://127.0.0.1:{home_port}/p.json"),
    ("another host", "http://localhost:{home_port}/p.json"),
    ("a file", "file:///etc/passwd"),
    ("cloud metadata", "http://169.254.169.254/latest/meta-data/"),
]


@pytest.mark.parametrize(("what", "location"), OFF_ORIGIN, ids=[w for w, _ in OFF_ORIGIN])
def test_a_redirect_anywhere_off_the_origin_is_refused(home: RawServer, other: RawServer, what: str,
                                                       location: str) -> None:
    target = location.format(other=other.url, home_port=home.url.rsplit(":", 1)[1])
    home.routes["/moved.json"] = redirect(302, target)
    spec = load_spec(_serve_spec(home, "/moved.json#/P"))
    assert [str(p) for p in spec.problems] == [
        f"#/paths/~1r0/get: {home.url}/moved.json: redirects to {target!r}, outside its origin {home.url}; only "
        "redirects within the origin are followed; skipped"]
    assert other.requests == []


def test_a_redirect_loop_and_a_long_chain_are_refused(home: RawServer) -> None:
    home.routes["/a.json"] = redirect(302, "/b.json")
    home.routes["/b.json"] = redirect(302, "/a.json")
    for i in range(7):
        home.routes[f"/hop{i}.json"] = redirect(307, f"/hop{i + 1}.json")
    spec = load_spec(_serve_spec(home, "/a.json#/P", "/hop0.json#/P"))
    assert [str(p) for p in spec.problems] == [
        f"#/paths/~1r0/get: {home.url}/a.json: redirect loop through '{home.url}/a.json'; skipped",
        f"#/paths/~1r1/get: {home.url}/hop0.json: more than 5 redirects; skipped"]
    assert home.paths().count("/a.json") == 1 and "/hop6.json" not in home.paths()


# -- the spec URL itself ----------------------------------------------------------------------------


def test_a_spec_url_that_redirects_to_another_origin_is_refused(home: RawServer, other: RawServer) -> None:
    home.routes["/openapi.json"] = redirect(302, f"{other.url}/spec.json")
    with pytest.raises(SpecError) as exc:
        load_spec(f"{home.url}/openapi.json")
    assert str(exc.value) == (f"{home.url}/openapi.json: redirects to '{other.url}/spec.json', outside its origin "
                              f"{home.url}; only redirects within the origin are followed")
    assert other.requests == []


def test_a_spec_url_that_redirects_within_its_origin_is_read(home: RawServer) -> None:
    _serve_spec(home, "/p.json#/P")
    home.routes["/openapi.json"] = redirect(308, "/spec.json")
    assert _parameters(load_spec(f"{home.url}/openapi.json")) == {"r0": ["p"], "listThings": []}


def test_the_cli_names_the_refused_redirect_in_one_line(home: RawServer, other: RawServer,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    home.routes["/openapi.json"] = redirect(301, f"{other.url}/spec.json")
    assert main(["tools", f"{home.url}/openapi.json"]) == 2
    done = capsys.readouterr()
    assert done.out == ""
    assert done.err == (f"openapi-mcp: error: {home.url}/openapi.json: redirects to '{other.url}/spec.json', "
                           f"outside its origin {home.url}; only redirects within the origin are followed\n")
    assert other.requests == []


# -- upstream API calls -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", REDIRECTS)
@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
async def test_an_upstream_redirect_is_an_answer_never_followed(home: RawServer, other: RawServer, status: int,
                                                                client: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec("#/components/parameters/P") | {"components": {"parameters": PARAMETER}}))
    home.routes["/r0"] = redirect(status, f"{other.url}/p.json")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"spec": str(spec), "upstream": {"url": home.url,
                                                                 "headers": {"X-Api-Key": "configured-secret"}}}))
    catalog = build_catalog(load_settings(str(config)),
                            transport=httpx.AsyncHTTPTransport() if client == "httpx" else None)
    async with catalog:
        result = await catalog.call_tool("r0", {"p": "x"})
    assert result.is_error
    assert result.content[0].text.startswith(f"Upstream answered HTTP {status} ")  # type: ignore[union-attr]
    assert home.requests[-1].headers["x-api-key"] == "configured-secret"
    assert other.requests == []  # the configured key went nowhere else


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
