"""Hostile input (issue 6, part 3): arguments and documents written to break out, blow up or hang.

Arguments go through the catalog to the echo mock (it validates every request with openapi-core
and logs the raw path, query and headers it received), so each test sees exactly what would reach
the upstream. Documents are tests/specs/hostile-*.yaml (one defect each) or written to tmp_path.
Anything that could hang, exhaust memory or crash the interpreter runs in a child process with a
deadline and an address-space limit: those are tests/integration/test_hostile_processes.py.
Behaviour that is wrong today is pinned by `xfail(strict=True)` tests whose reason names the bug.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import pytest

import mock_api
from converter.catalog import Catalog, build_catalog
from converter.cli import main
from converter.config import load_settings
from converter.errors import SpecError
from converter.server.app import create_app
from converter.spec import load_spec
from converter.tools import build_plans
from tests.test_fuzz import Echo

ROOT: Final = Path(__file__).resolve().parent.parent
SPECS: Final = ROOT / "tests" / "specs"
MARKETPLACE: Final = mock_api.SPEC_PATH
MB: Final = 1024 * 1024
CALL_DEADLINE: Final = 10.0  # seconds any single in-process call may take, even with 1 MB values



@asynccontextmanager
async def echo_catalog(document: Path) -> AsyncIterator[tuple[Catalog, Echo]]:
    """A catalog for `document` whose upstream is the echo mock of the same document."""
    echo = Echo(document)
    settings = load_settings(None, spec=str(document), upstream_url="http://echo.test")
    catalog = build_catalog(settings, transport=httpx.ASGITransport(app=echo))
    async with catalog:
        yield catalog, echo


async def call(catalog: Catalog, name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
    with anyio.fail_after(CALL_DEADLINE):
        result = await catalog.call_tool(name, arguments)
    return bool(result.is_error), "\n".join(getattr(c, "text", "") for c in result.content)


def last_request(echo: Echo) -> dict[str, Any]:
    entries: list[dict[str, Any]] = echo.app.state.request_log.entries()
    return entries[-1]


# -- path values ----------------------------------------------------------------------------------

PATH_ESCAPES = [
    ("../admin", "..%2Fadmin"),
    ("%2e%2e/", "%252e%252e%2F"),
    ("%2E%2E%2F..%2f", "%252E%252E%252F..%252f"),
    ("?x=1#", "%3Fx%3D1%23"),
    ("/admin", "%2Fadmin"),
    ("a/../../b", "a%2F..%2F..%2Fb"),
    ("..\\..\\windows", "..%5C..%5Cwindows"),
    ("...", "..."),
    ("u1;admin=true", "u1%3Badmin%3Dtrue"),
    ("u1\r\nHost: evil", "u1%0D%0AHost%3A%20evil"),
    ("u1\x00", "u1%00"),
    ("ü 1", "%C3%BC%201"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("value", "segment"), PATH_ESCAPES, ids=[repr(v) for v, _ in PATH_ESCAPES])
async def test_a_path_value_stays_inside_its_segment(value: str, segment: str) -> None:
    async with echo_catalog(MARKETPLACE) as (catalog, echo):
        await call(catalog, "getUser", {"userId": value})
    entry = last_request(echo)
    assert len(echo.answers) == 1
    assert entry["raw_path"] == f"/marketplace/users/{segment}"
    assert entry["operation"] == {"method": "GET", "path": "/marketplace/users/{userId}", "operationId": "getUser"}
    assert entry["query"] == ""


@pytest.mark.anyio
@pytest.mark.parametrize("value", [".", ".."])
async def test_a_dot_segment_is_refused_before_sending(value: str) -> None:
    async with echo_catalog(MARKETPLACE) as (catalog, echo):
        is_error, text = await call(catalog, "getUser", {"userId": value})
        is_error_2, text_2 = await call(catalog, "deleteOrder", {"userId": "u1", "orderId": value})
    assert (is_error, text) == (
        True, "getUser: argument 'userId' must not be empty, '.' or '..' (it is a path segment)")
    assert (is_error_2, text_2) == (
        True, "deleteOrder: argument 'orderId' must not be empty, '.' or '..' (it is a path segment)")
    assert echo.answers == []


@pytest.mark.anyio
async def test_an_empty_path_value_is_refused_before_sending() -> None:
    async with echo_catalog(SPECS / "multipart.yaml") as (catalog, echo):
        is_error, text = await call(catalog, "putBlob", {"key": "", "body": "AAEC"})
    assert (is_error, text) == (True, "Invalid arguments for tool 'putBlob' at $.key: '' should be non-empty")
    assert echo.answers == []


# -- CR, LF and NUL in headers, cookies and queries -----------------------------------------------

HEADER_BREAKERS = ["a\r\nX-Evil: 1", "a\nX-Evil: 1", "a\rb", "a\x00b", "requête", "\r\n\r\nGET / HTTP/1.1"]


@pytest.mark.anyio
@pytest.mark.parametrize("value", HEADER_BREAKERS, ids=[repr(v) for v in HEADER_BREAKERS])
async def test_a_header_value_http_cannot_carry_is_refused_before_sending(value: str) -> None:
    async with echo_catalog(MARKETPLACE) as (catalog, echo):
        scalar = await call(catalog, "searchOrders", {"X-Request-Id": value})
    async with echo_catalog(SPECS / "styles.yaml") as (catalog, styles_echo):
        array = await call(catalog, "searchProducts", {"session": "s", "X-Feature-Flags": ["ok", value]})
        object_value = await call(catalog, "searchProducts", {"session": "s", "X-Client": {"name": value}})
        object_key = await call(catalog, "searchProducts", {"session": "s", "X-Client": {value: "web"}})
    assert scalar == (True, "searchOrders: argument 'X-Request-Id' must be ASCII without CR, LF or NUL "
                            "(it is sent as the header 'X-Request-Id')")
    assert array == (True, "searchProducts: argument 'X-Feature-Flags' must be ASCII without CR, LF or NUL "
                           "(it is sent as the header 'X-Feature-Flags')")
    client_error = (True, "searchProducts: argument 'X-Client' must be ASCII without CR, LF or NUL "
                          "(it is sent as the header 'X-Client')")
    assert object_value == client_error and object_key == client_error
    assert echo.answers == [] and styles_echo.answers == []


@pytest.mark.anyio
async def test_cr_lf_nul_and_separators_in_a_cookie_are_percent_encoded() -> None:
    session = "s\r\nX-Evil: 1; currency=USD\x00"
    async with echo_catalog(SPECS / "styles.yaml") as (catalog, echo):
        is_error, text = await call(catalog, "searchProducts", {"session": session})
    assert not is_error, text
    entry = last_request(echo)
    assert entry["headers"]["cookie"] == "session=s%0D%0AX-Evil%3A%201%3B%20currency%3DUSD%00"
    assert "x-evil" not in entry["headers"]
    assert list(echo.answers[-1][1]["parameters"]["cookie"]) == ["session"]


@pytest.mark.anyio
async def test_query_values_and_deep_object_keys_cannot_add_parameters() -> None:
    async with echo_catalog(MARKETPLACE) as (catalog, echo):
        await call(catalog, "listUsers", {"id": "u1&admin=true#frag\r\n\x00"})
        assert last_request(echo)["query"] == "id=u1%26admin%3Dtrue%23frag%0D%0A%00"
        assert echo.answers[-1][1]["parameters"]["query"] == {"id": "u1&admin=true#frag\r\n\x00"}
    async with echo_catalog(SPECS / "styles.yaml") as (catalog, echo):
        await call(catalog, "searchProducts", {"session": "s", "filter": {"a]&ids=1&x[": "v", "brand": "b&ids=2"}})
        assert last_request(echo)["query"] == "filter%5Ba%5D%26ids%3D1%26x%5B%5D=v&filter%5Bbrand%5D=b%26ids%3D2"
        assert "ids" not in echo.answers[-1][1]["parameters"]["query"]


@pytest.mark.anyio
async def test_allow_reserved_does_not_let_a_value_add_parameters_or_cut_the_url() -> None:
    value = "https://shop.example.com/cart?step=2&ids=9#top+1"
    async with echo_catalog(SPECS / "styles.yaml") as (catalog, echo):
        await call(catalog, "searchProducts", {"session": "s", "return_to": value})
    assert echo.answers[-1][1]["parameters"]["query"] == {"return_to": value}


# -- huge values ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_megabyte_values_are_sent_whole_or_refused_quickly() -> None:
    huge = "x" * MB
    async with echo_catalog(MARKETPLACE) as (catalog, echo):
        started = time.perf_counter()
        body = await call(catalog, "createOrder", {"userId": "u1", "item": huge, "quantity": 1, "price": 1.5})
        header = await call(catalog, "searchOrders", {"X-Request-Id": huge})
        elapsed = time.perf_counter() - started
    assert elapsed < 5, f"two calls with 1 MB values took {elapsed:.1f} s"
    assert [status for status, _ in echo.answers] == [200]  # the body reaches the upstream intact
    assert echo.answers[0][1]["body"]["item"] == huge
    assert not body[1].startswith("Internal error")
    assert header[0] and header[1].startswith("Invalid arguments for tool 'searchOrders' at $['X-Request-Id']: ")


@pytest.mark.anyio
async def test_a_megabyte_query_value_is_a_clear_tool_error() -> None:
    async with echo_catalog(MARKETPLACE) as (catalog, echo):
        is_error, text = await call(catalog, "listUsers", {"id": "x" * MB})
    assert is_error and text == "GET http://echo.test/marketplace/users failed: URL too long"
    assert echo.answers == []


@pytest.mark.anyio
async def test_a_megabyte_file_is_uploaded_whole() -> None:
    import base64
    import hashlib

    data = os.urandom(MB)
    async with echo_catalog(SPECS / "multipart.yaml") as (catalog, echo):
        is_error, text = await call(catalog, "uploadDocument", {
            "folderId": "f", "title": "t", "file": base64.b64encode(data).decode()})
    assert not is_error, text[:300]
    assert echo.answers[-1][1]["body"]["file"]["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.anyio
async def test_an_error_about_a_huge_value_quotes_only_an_excerpt() -> None:
    huge = "x" * MB
    async with echo_catalog(MARKETPLACE) as (catalog, _):
        wrong_type = await call(catalog, "createOrder", {"userId": "u1", "item": "i", "quantity": huge, "price": 1})
        too_long = await call(catalog, "searchOrders", {"X-Request-Id": huge})
        unknown = await call(catalog, "createOrder",
                             {"userId": "u1", "item": "i", "quantity": 1, "price": 1, huge: 1})
    for is_error, text in (wrong_type, too_long, unknown):
        assert is_error and len(text) < 2_000, len(text)


# -- deeply nested arguments ----------------------------------------------------------------------


def nested_list(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def category_tree(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"name": "leaf"}
    for _ in range(depth):
        node = {"name": "n", "children": [node]}
    return node


@pytest.mark.anyio
async def test_arguments_as_deep_as_mcp_transports_allow_are_handled() -> None:
    # pydantic-core, which parses every JSON-RPC message the SDK's transports receive, refuses JSON
    # nested deeper than 200 levels; a category tree of depth 95 is 192 levels inside the request.
    async with echo_catalog(SPECS / "recursive.yaml") as (catalog, echo):
        valid = await call(catalog, "createCategoryTree", category_tree(95))
        invalid = await call(catalog, "createCategoryTree", {"name": "n", "children": nested_list(190)})
    assert not valid[0], valid[1][:300]
    assert echo.answers[-1][0] == 200 and len(echo.answers) == 1
    assert invalid[0] and invalid[1].startswith("Invalid arguments for tool 'createCategoryTree' at $.children[0]: ")


async def _post_deep_json_rpc(*, raise_app_exceptions: bool) -> tuple[httpx.Response, httpx.Response, Echo]:
    """In process: initialize, post a tools/call nested 100,000 deep, then a normal call."""
    echo = Echo(MARKETPLACE)
    settings = load_settings(None, spec=str(MARKETPLACE), upstream_url="http://echo.test")
    app = create_app(settings, upstream_transport=httpx.ASGITransport(app=echo))
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    deep_call = ('{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "createOrder", '
                 '"arguments": {"userId": "u1", "note": ' + "[" * 100_000 + "]" * 100_000 + "}}}")
    normal_call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                   "params": {"name": "getUser", "arguments": {"userId": ""}}}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    with anyio.fail_after(CALL_DEADLINE):
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1:8000") as http:
            init = await http.post("/mcp", headers=headers, json=initialize)
            assert init.status_code == 200, init.text
            session = {**headers, "mcp-session-id": init.headers["mcp-session-id"],
                       "mcp-protocol-version": "2025-06-18"}
            await http.post("/mcp", headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            deep = await http.post("/mcp", headers=session, content=deep_call)
            after = await http.post("/mcp", headers=session, json=normal_call)
    return deep, after, echo


@pytest.mark.anyio
async def test_json_rpc_nested_deeper_than_the_transport_allows_is_a_parse_error_and_the_server_keeps_serving(
        ) -> None:
    deep, after, echo = await _post_deep_json_rpc(raise_app_exceptions=False)
    assert deep.status_code == 400
    assert deep.json()["error"]["code"] == -32700  # Parse error
    assert after.status_code == 200
    assert after.json()["result"]["content"][0]["text"] == (
        "Invalid arguments for tool 'getUser' at $.userId: '' should be non-empty")
    assert echo.answers == []


@pytest.mark.anyio
async def test_a_deeply_nested_json_rpc_body_raises_nothing_out_of_the_app() -> None:
    deep, _, _ = await _post_deep_json_rpc(raise_app_exceptions=True)
    assert deep.status_code == 400


@pytest.mark.anyio
async def test_a_deeply_nested_invalid_argument_is_a_tool_error() -> None:
    async with echo_catalog(MARKETPLACE) as (catalog, echo):
        is_error, text = await call(catalog, "createOrder",
                                    {"userId": "u1", "item": "i", "quantity": nested_list(5_000), "price": 1})
    assert is_error and text.startswith("Invalid arguments for tool 'createOrder' at $.quantity")
    assert echo.answers == []


# -- child processes with a deadline and a memory limit -------------------------------------------


















# -- $ref loops -----------------------------------------------------------------------------------


def _uri(name: str) -> str:
    return (SPECS / name).resolve().as_uri()


def _load(name: str, seconds: float = 5.0) -> tuple[list[str], list[str]]:
    """(problems, tool names) of tests/specs/`name`, which must load within `seconds`."""
    started = time.monotonic()
    spec = load_spec(str(SPECS / name))
    plans, _ = build_plans(spec)
    assert time.monotonic() - started < seconds
    return [str(p) for p in spec.problems], [p.name for p in plans]


def test_a_parameter_that_references_itself_skips_only_its_operation() -> None:
    uri = _uri("hostile-ref-self-parameter.yaml")
    assert _load("hostile-ref-self-parameter.yaml") == (
        [f"#/paths/~1loop/get: $ref loop through '{uri}#/components/parameters/Loop'; skipped"], ["listThings"])


def test_request_bodies_responses_and_parameters_in_a_ref_cycle_are_each_reported() -> None:
    uri = _uri("hostile-ref-loop-mutual.yaml")
    assert _load("hostile-ref-loop-mutual.yaml") == ([
        f"#/paths/~1bodies/post: $ref loop through '{uri}#/components/requestBodies/A'; skipped",
        f"#/paths/~1responses/get: $ref loop through '{uri}#/components/responses/A'; skipped",
        f"#/paths/~1parameters/get: $ref loop through '{uri}#/components/parameters/A'; skipped",
    ], ["listThings"])


def test_path_items_in_a_ref_cycle_are_reported() -> None:
    uri = _uri("hostile-ref-loop-path-item.yaml")
    assert _load("hostile-ref-loop-path-item.yaml") == ([
        f"#/paths/~1a: $ref loop through '{uri}#/paths/~1b'; skipped",
        f"#/paths/~1b: $ref loop through '{uri}#/paths/~1a'; skipped",
    ], ["listThings"])


def test_schemas_that_only_alias_each_other_are_reported_as_a_loop() -> None:
    # Served, they would be $defs {'S': {'$ref': '#/$defs/T'}, 'T': {'$ref': '#/$defs/S'}} with no base
    # case: python-jsonschema raises RecursionError on them (jsonschema_rs accepts anything).
    problems, names = _load("hostile-ref-loop-schema.yaml")
    assert names == ["listThings"]
    assert [p.split(": ", 1)[0] for p in problems] == ["#/paths/~1aliases/post", "#/paths/~1self/get"]
    assert all("$ref loop" in p for p in problems), problems


def test_a_schema_holding_an_alias_loop_skips_every_operation_that_uses_it() -> None:
    # The first operation's failed conversion must not leave Item behind as a finished definition
    # (an empty placeholder that accepts anything) for the second one.
    uri = _uri("hostile-ref-loop-schema-nested.yaml")
    assert _load("hostile-ref-loop-schema-nested.yaml") == ([
        f"#/paths/~1items/post: $ref loop through '{uri}#/components/schemas/T'; skipped",
        f"#/paths/~1items~1{{id}}/put: $ref loop through '{uri}#/components/schemas/T'; skipped",
    ], ["listThings"])


def test_schemas_that_apply_each_other_in_place_are_reported_as_a_loop() -> None:
    """allOf/anyOf/not cycles with no step down into the value: validators would recurse forever."""
    problems, names = _load("hostile-ref-loop-applicators.yaml")
    assert sorted(names) == ["listThings", "postTree"]  # recursion through properties/items is fine
    assert sorted(p.split(": ", 1)[0] for p in problems) == ["#/paths/~1a/post", "#/paths/~1n/get"]
    assert all("$ref loop through schema" in p and p.endswith("; skipped") for p in problems), problems


# -- references to other hosts and other files ------------------------------------------------------


def test_a_ref_to_another_host_is_refused_without_fetching() -> None:
    assert _load("hostile-ref-remote.yaml") == ([
        "#/paths/~1remote-parameter/get: $ref to 'http://169.254.169.254/latest/meta-data/parameters.yaml' is "
        "refused: a document may only reference files in its own directory (or below it) or URLs on its own host; skipped",
        "#/paths/~1remote-schema/post: $ref to 'https://evil.example/schemas.yaml' is refused: a document may "
        "only reference files in its own directory (or below it) or URLs on its own host; skipped",
    ], ["listThings"])


class _Site:
    """A loopback HTTP server with fixed pages; counts every request it gets."""

    def __init__(self, pages: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.pages = pages
        self.hits: list[str] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                site.hits.append(self.path)
                status, headers, body = site.pages.get(self.path, (404, {}, b""))
                self.send_response(status)
                for name, value in {"content-length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sites() -> Iterator[list[_Site]]:
    started: list[_Site] = []
    yield started
    for site in started:
        site.close()


def _spec_with_refs(*refs: str) -> bytes:
    paths = {f"/r{i}": {"get": {"operationId": f"r{i}", "parameters": [{"$ref": ref}],
                                "responses": {"200": {"description": "OK"}}}} for i, ref in enumerate(refs)}
    paths["/things"] = {"get": {"operationId": "listThings", "responses": {"200": {"description": "OK"}}}}
    return json.dumps({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": paths}).encode()


def test_a_spec_read_from_a_url_may_not_reference_another_origin_or_local_files(sites: list[_Site]) -> None:
    parameter = json.dumps({"P": {"name": "p", "in": "query", "schema": {"type": "string"}}}).encode()
    other = _Site({"/p.json": (200, {"content-type": "application/json"}, parameter)})
    sites.append(other)
    home = _Site({"/p.json": (200, {"content-type": "application/json"}, parameter)})
    sites.append(home)
    home.pages["/spec.json"] = (200, {"content-type": "application/json"}, _spec_with_refs(
        f"{other.url}/p.json#/P", "file:///etc/hostname#/P", "/p.json#/P"))
    spec = load_spec(f"{home.url}/spec.json")
    assert [str(p) for p in spec.problems] == [
        f"#/paths/~1r0/get: $ref to '{other.url}/p.json' is refused: a document may only reference files in its "
        "own directory (or below it) or URLs on its own host; skipped",
        "#/paths/~1r1/get: $ref to 'file:///etc/hostname' is refused: a document may only reference files in its "
        "own directory (or below it) or URLs on its own host; skipped",
    ]
    assert [op.operation_id for op in spec.operations] == ["r2", "listThings"]  # same origin: allowed
    assert other.hits == [] and home.hits == ["/spec.json", "/p.json"]


def test_a_spec_file_cannot_pull_files_from_outside_its_directory_into_the_tools(tmp_path: Path) -> None:
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "creds.json").write_text('{"token": "s3cr3t-token"}', encoding="utf-8")
    (tmp_path / "api").mkdir()
    spec = tmp_path / "api" / "spec.json"
    spec.write_text(json.dumps({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {"/z": {"get": {
        "operationId": "getZ", "responses": {"200": {"description": "OK", "content": {"application/json": {
            "schema": {"$ref": "../secret/creds.json"}}}}}}}}}), encoding="utf-8")
    settings = load_settings(None, spec=str(spec), upstream_url="http://127.0.0.1:9")
    tools = json.dumps([p.tool.model_dump(mode="json") for p in build_catalog(settings).plans])
    assert "s3cr3t-token" not in tools


def test_a_spec_file_larger_than_the_limit_is_refused_after_reading_only_the_limit(tmp_path: Path) -> None:
    """The size bound of file reads (a $ref, or the spec itself): a regular file, so only the size
    check stops it (/dev/zero is refused earlier as not a regular file)."""
    from converter.spec.load import MAX_DOCUMENT_BYTES

    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(MAX_DOCUMENT_BYTES + 1)  # sparse: no disk used
    with pytest.raises(SpecError) as exc:
        load_spec(str(big))
    assert str(exc.value) == f"{big}: the document is larger than {MAX_DOCUMENT_BYTES} bytes"


def test_a_redirect_to_a_file_url_is_not_followed(sites: list[_Site]) -> None:
    site = _Site({"/spec.yaml": (302, {"location": "file:///etc/passwd"}, b"")})
    sites.append(site)
    with pytest.raises(SpecError) as exc:
        load_spec(f"{site.url}/spec.yaml")
    assert str(exc.value) == (f"{site.url}/spec.yaml: redirects to 'file:///etc/passwd', outside its origin "
                              f"{site.url}; only redirects within the origin are followed")


# -- spec sources that are not files or http(s) URLs ----------------------------------------------

SCHEMES = [
    ("ftp://example.com/spec.yaml", "ftp"),
    ("FTP://example.com/spec.yaml", "ftp"),
    ("gopher://127.0.0.1:70/1spec", "gopher"),
    ("data:application/json,{\"openapi\":\"3.0.3\"}", "data"),
    ("jar:file:///tmp/a.jar!/spec.yaml", "jar"),
    ("javascript:alert(1)", "javascript"),
]


@pytest.mark.parametrize(("source", "scheme"), SCHEMES, ids=[s for _, s in SCHEMES])
def test_a_spec_url_with_another_scheme_is_refused_with_one_clear_message(source: str, scheme: str) -> None:
    with pytest.raises(SpecError) as exc:
        load_spec(source)
    assert str(exc.value) == f"{source}: only files and http(s) URLs can be read, not {scheme!r} URLs"


def test_a_file_url_is_read_like_a_path() -> None:
    assert len(load_spec(MARKETPLACE.as_uri()).operations) == len(load_spec(str(MARKETPLACE)).operations) == 10


def test_the_cli_refuses_another_scheme_in_one_line_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools", "gopher://127.0.0.1:70/1spec"]) == 2
    done = capsys.readouterr()
    assert done.out == ""
    assert done.err == ("openapi-mcp: error: gopher://127.0.0.1:70/1spec: only files and http(s) URLs can be "
                           "read, not 'gopher' URLs\n")
