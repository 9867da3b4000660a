from __future__ import annotations

import base64
import re

import anyio
import httpx
import pytest
import respx

from converter import ArgumentError, UpstreamError
from converter.invoke.request import HttpRequest
from converter.invoke.result import map_response
from converter.invoke.upstream import Upstream
from converter.tools import build_plans

OK = {"200": {"description": "ok"}}
BASE = "http://up.test/api"


def build(make_plans, paths, name, args, **extra) -> HttpRequest:
    plan = make_plans(paths, **extra)[name]
    plan.validate_arguments(args)
    return plan.request.build(args, BASE)


def q(name: str, schema: dict, **kw) -> dict:
    return {"name": name, "in": "query", "schema": schema, **kw}


def test_path_values_are_percent_encoded_and_cannot_escape(make_plans) -> None:
    paths = {"/files/{name}/meta": {"get": {"operationId": "f", "parameters": [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}], "responses": OK}}}
    assert build(make_plans, paths, "f", {"name": "../admin?x=1#"}).url == f"{BASE}/files/..%2Fadmin%3Fx%3D1%23/meta"
    assert build(make_plans, paths, "f", {"name": "%2e%2e"}).url == f"{BASE}/files/%252e%252e/meta"
    for bad in ("..", "."):
        with pytest.raises(ArgumentError, match=re.escape("must not be empty, '.' or '..'")):
            build(make_plans, paths, "f", {"name": bad})
    # brex.io's `/pep/{type}`: an empty segment is refused by the tool's schema, where a client sees it
    assert make_plans(paths)["f"].input_schema["properties"]["name"] == {"type": "string", "minLength": 1}
    with pytest.raises(ArgumentError, match=re.escape("at $.name: '' should be non-empty")):
        build(make_plans, paths, "f", {"name": ""})


def test_query_styles(make_plans) -> None:
    params = [
        q("form", {"type": "array", "items": {"type": "string"}}, explode=False),
        q("multi", {"type": "array", "items": {"type": "integer"}}),
        q("space", {"type": "array", "items": {"type": "string"}}, style="spaceDelimited", explode=False),
        q("pipe", {"type": "array", "items": {"type": "string"}}, style="pipeDelimited", explode=False),
        q("deep", {"type": "object"}, style="deepObject", explode=True),
        q("flag", {"type": "boolean"}),
        q("text", {"type": "string"}),
    ]
    request = build(make_plans, {"/s": {"get": {"operationId": "s", "parameters": params, "responses": OK}}}, "s", {
        "form": ["a", "b c"], "multi": [1, 2], "space": ["x", "y"], "pipe": ["p", "q"],
        "deep": {"min": 1, "max": 2}, "flag": True, "text": "a&b=c",
    })
    assert request.url == (f"{BASE}/s?form=a,b%20c&multi=1&multi=2&space=x%20y&pipe=p|q"
                           "&deep%5Bmin%5D=1&deep%5Bmax%5D=2&flag=true&text=a%26b%3Dc")


def test_path_label_and_matrix_styles(make_plans) -> None:
    params = [{"name": "l", "in": "path", "required": True, "style": "label", "schema": {"type": "array"}},
              {"name": "m", "in": "path", "required": True, "style": "matrix", "schema": {"type": "string"}}]
    request = build(make_plans, {"/x/{l}/{m}": {"get": {"operationId": "x", "parameters": params, "responses": OK}}},
                    "x", {"l": [1, 2], "m": "v"})
    assert request.url == f"{BASE}/x/.1,2/;m=v"


def test_headers_and_cookies(make_plans) -> None:
    params = [{"name": "X-Ids", "in": "header", "schema": {"type": "array", "items": {"type": "integer"}}},
              {"name": "session", "in": "cookie", "schema": {"type": "string"}}]
    paths = {"/h": {"get": {"operationId": "h", "parameters": params, "responses": OK}}}
    request = build(make_plans, paths, "h", {"X-Ids": [1, 2], "session": "a b"})
    assert request.headers["X-Ids"] == "1,2"
    assert request.headers["cookie"] == "session=a%20b"


def test_header_injection_is_refused(make_plans) -> None:
    paths = {"/h": {"get": {"operationId": "h", "parameters": [
        {"name": "X-Note", "in": "header", "schema": {"type": "string"}}], "responses": OK}}}
    with pytest.raises(ArgumentError, match="must be ASCII without CR, LF or NUL"):
        build(make_plans, paths, "h", {"X-Note": "a\r\nX-Admin: 1"})


def test_json_form_and_multipart_bodies(make_plans) -> None:
    obj = {"type": "object", "properties": {"a": {"type": "string"}, "n": {"type": "array", "items": {"type": "integer"}}}}
    paths = {
        "/j": {"post": {"operationId": "j", "requestBody": {"content": {"application/json": {"schema": obj}}}, "responses": OK}},
        "/f": {"post": {"operationId": "f", "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": obj}}}, "responses": OK}},
        "/m": {"post": {"operationId": "m", "requestBody": {"content": {"multipart/form-data": {"schema": {
            "type": "object", "properties": {"file": {"type": "string", "format": "binary"}, "meta": {"type": "object"}}}}}}, "responses": OK}},
    }
    j = build(make_plans, paths, "j", {"a": "é", "n": [1]})
    assert (j.content, j.headers["content-type"]) == ('{"a":"é","n":[1]}'.encode(), "application/json")
    f = build(make_plans, paths, "f", {"a": "x y", "n": [1, 2]})
    assert f.content == b"a=x%20y&n=1&n=2"
    m = build(make_plans, paths, "m", {"file": base64.b64encode(b"\x00bin").decode(), "meta": {"k": 1}})
    boundary = m.headers["content-type"].split("boundary=")[1]
    assert m.content == (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="file"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + b"\x00bin\r\n"
        + f'--{boundary}\r\nContent-Disposition: form-data; name="meta"\r\nContent-Type: application/json\r\n\r\n'
        f'{{"k":1}}\r\n--{boundary}--\r\n'.encode())
    with pytest.raises(ArgumentError, match="must be base64-encoded"):
        build(make_plans, paths, "m", {"file": "not base64!"})


def test_a_required_json_body_goes_out_even_with_no_field_given(make_plans) -> None:
    paths = {"/p": {"patch": {"operationId": "p", "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}, "responses": OK}}}
    assert build(make_plans, paths, "p", {}).content == b"{}"


def send(handler, request: HttpRequest, **kw):
    async def go():
        async with Upstream(transport=httpx.MockTransport(handler), **kw) as upstream:
            return await upstream.send(request)
    return anyio.run(go)


def test_timeout_connect_error_and_body_cap() -> None:
    request = HttpRequest("GET", f"{BASE}/x", {})

    async def slow(req):
        await anyio.sleep(5)

    with pytest.raises(UpstreamError) as exc:
        send(slow, request, timeout=0.2)
    assert str(exc.value) == f"GET {BASE}/x timed out after 0.2 s"

    def refuse(req):
        raise httpx.ConnectError("Connection refused")

    with pytest.raises(UpstreamError, match=r"cannot connect \(Connection refused\)"):
        send(refuse, request)
    response = send(lambda req: httpx.Response(200, content=b"x" * 100), request, max_response_bytes=10)
    assert (response.body, response.truncated) == (b"x" * 10, True)


@respx.mock
def test_respx_upstream_sees_exact_request(make_plans) -> None:
    route = respx.get(f"{BASE}/u/42").mock(return_value=httpx.Response(200, json={"ok": True}))
    plan = make_plans({"/u/{id}": {"get": {"operationId": "u", "parameters": [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}], "responses": OK}}})["u"]

    async def go():
        async with Upstream(transport=httpx.AsyncHTTPTransport()) as upstream:
            return await upstream.send(plan.request.build({"id": 42}, BASE))

    assert anyio.run(go).status == 200
    assert route.calls.last.request.headers["accept"] == "application/json"


def result_for(make_plans, response_schema, status=200, body=b"{}", content_type="application/json", truncated=False):
    from converter.invoke.upstream import UpstreamResponse

    responses = {"200": {"description": "ok", "content": {"application/json": {"schema": response_schema}}}} \
        if response_schema is not None else OK
    plan = make_plans({"/r": {"get": {"operationId": "r", "responses": responses}}})["r"]
    return map_response(UpstreamResponse(status, "OK" if status == 200 else "Error", content_type, body, truncated, 0.0,
                                         f"{BASE}/r"), plan)


def test_results(make_plans) -> None:
    obj = {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}
    ok = result_for(make_plans, obj, body=b'{"a":"x"}')
    assert (ok.is_error, ok.structured_content, ok.content[0].text) == (False, {"a": "x"}, '{"a":"x"}')
    wrapped = result_for(make_plans, {"type": "array"}, body=b"[1]")
    assert wrapped.structured_content == {"result": [1]}
    mismatch = result_for(make_plans, obj, body=b'{"a":1}')
    assert mismatch.is_error and mismatch.structured_content is None
    assert "does not match the documented response schema (at $.a: 1 is not of type 'string')" in mismatch.content[0].text
    failed = result_for(make_plans, obj, status=404, body=b'{"error":"no such thing"}')
    assert failed.is_error and failed.content[0].text == 'Upstream answered HTTP 404 Error to GET /r: {"error":"no such thing"}'
    image = result_for(make_plans, None, body=b"\x89PNG\r\n", content_type="image/png")
    assert (image.content[0].type, base64.b64decode(image.content[0].data)) == ("image", b"\x89PNG\r\n")
    blob = result_for(make_plans, None, body=b"\x00\x01\xff", content_type="application/pdf")
    assert blob.content[0].type == "resource" and blob.content[0].resource.mime_type == "application/pdf"
    cut = result_for(make_plans, None, body=b'{"a":', truncated=True)
    assert "[response truncated" in cut.content[0].text and cut.structured_content is None


# -- the production (aiohttp) path, against real sockets on loopback ---------------------------

async def _serve_raw(handler):
    """A tiny HTTP server on 127.0.0.1 whose connection handler is `handler(reader, writer)`."""
    import asyncio

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def aio(handler, request_path="/x", **kw):
    async def go():
        server, base = await _serve_raw(handler)
        try:
            async with Upstream(**kw) as upstream:
                return await upstream.send(HttpRequest("GET", base + request_path, {"accept": "*/*"}))
        finally:
            server.close()
    return anyio.run(go)


async def _http_reply(reader, writer, body=b'{"ok":true}', delay=0.0, chunks=1):
    import asyncio

    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(delay)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body))
    step = max(1, len(body) // chunks)
    for i in range(0, len(body), step):
        writer.write(body[i:i + step])
        await writer.drain()
    writer.close()


def test_aiohttp_path_reads_a_real_response() -> None:
    response = aio(_http_reply)
    assert (response.status, response.body, response.truncated) == (200, b'{"ok":true}', False)


def test_aiohttp_path_times_out_on_a_slow_upstream() -> None:
    with pytest.raises(UpstreamError, match=r"^GET http://127.0.0.1:\d+/x timed out after 0.3 s$"):
        aio(lambda r, w: _http_reply(r, w, delay=5), timeout=0.3)


def test_aiohttp_path_caps_the_body() -> None:
    response = aio(lambda r, w: _http_reply(r, w, body=b"y" * 100_000, chunks=10), max_response_bytes=1000)
    assert (len(response.body), response.truncated) == (1000, True)


def test_aiohttp_path_reports_refused_connections() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now

    async def go():
        async with Upstream() as upstream:
            return await upstream.send(HttpRequest("GET", f"http://127.0.0.1:{port}/x", {}))

    with pytest.raises(UpstreamError, match=r"failed: cannot connect \(.*refused.*\)"):
        anyio.run(go)


def test_aiohttp_path_reports_a_connection_reset_mid_body() -> None:
    async def reset(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    with pytest.raises(UpstreamError, match="failed: "):
        aio(reset)


def test_aiohttp_path_cancellation_closes_the_upstream_connection() -> None:
    import asyncio

    async def go():
        closed = asyncio.Event()
        arrived = asyncio.Event()

        async def hang(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            arrived.set()
            await reader.read()  # returns b"" once the client closes the connection
            closed.set()

        server, base = await _serve_raw(hang)
        try:
            async with Upstream(timeout=30) as upstream:
                task = asyncio.ensure_future(upstream.send(HttpRequest("GET", base + "/x", {})))
                await asyncio.wait_for(arrived.wait(), 5)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await asyncio.wait_for(closed.wait(), 5)
        finally:
            server.close()

    anyio.run(go)


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
def test_an_unresolvable_upstream_host_says_so(client: str) -> None:
    # `.invalid` never resolves (RFC 6761 §6.4): the resolver answers at once, no network needed.
    import httpx

    async def go():
        transport = httpx.AsyncHTTPTransport() if client == "httpx" else None
        async with Upstream(transport=transport) as upstream:
            return await upstream.send(HttpRequest("GET", "https://api.github.invalid/repos", {}))

    with pytest.raises(UpstreamError) as exc:
        anyio.run(go)
    assert str(exc.value) == "GET https://api.github.invalid/repos failed: cannot resolve host api.github.invalid"


def test_configured_and_claim_headers_win_over_arguments_whatever_the_case(make_plans) -> None:
    # A plan built without the catalog's reserved headers still cannot let an argument replace a
    # configured credential: request building itself gives configured headers, then claims, the last word.
    plan = make_plans({"/x": {"get": {"operationId": "x", "parameters": [
        {"name": "x-api-key", "in": "header", "schema": {"type": "string"}},
        {"name": "X-User", "in": "header", "schema": {"type": "string"}},
        {"name": "Cookie", "in": "header", "schema": {"type": "string"}},
        {"name": "s", "in": "cookie", "schema": {"type": "string"}}], "responses": OK}}})["x"]
    plan.request.static_headers = {"X-Api-Key": "configured"}
    request = plan.request.build({"x-api-key": "callers", "X-User": "mallory", "Cookie": "a=b", "s": "1"}, BASE,
                                 {"x-user": "ada"})
    assert request.headers == {"accept": "application/json", "cookie": "s=1", "X-Api-Key": "configured",
                               "x-user": "ada"}


def test_framing_headers_are_left_out_of_tools_with_a_warning(make_spec) -> None:
    spec = make_spec({"/x": {"get": {"operationId": "x", "parameters": [
        {"name": name, "in": "header", "schema": {"type": "string"}}
        for name in ("Host", "transfer-encoding", "X-Keep", "x-user-id")], "responses": OK}}})
    plans, problems = build_plans(spec, reserved_headers=frozenset({"x-user-id"}))
    assert sorted(plans[0].input_schema["properties"]) == ["X-Keep"]
    assert [str(p) for p in problems] == [
        "#/paths/~1x/get: header parameter 'Host' is left out of the tool: HTTP framing and hop-by-hop headers are "
        "set by the server, never by the caller",
        "#/paths/~1x/get: header parameter 'transfer-encoding' is left out of the tool: HTTP framing and hop-by-hop "
        "headers are set by the server, never by the caller",
        "#/paths/~1x/get: header parameter 'x-user-id' is left out of the tool: the server sets it (upstream.headers "
        "or auth.claim_to_header), so the caller may not"]


# -- path keys that carry a query string or a fragment (issue 20: invalid OpenAPI, common in the corpus) --


def _param(name: str, where: str, **schema) -> dict:
    return {"name": name, "in": where, "required": True, "schema": {"type": "string", **schema}}


def test_a_path_key_with_a_query_string_sends_one_well_formed_query(make_plans) -> None:
    # weatherbit.io: `/forecast/daily?postal_code={postal_code}`, the variable declared `in: path`
    paths = {"/forecast/daily?postal_code={postal_code}": {"get": {"operationId": "daily", "parameters": [
        _param("postal_code", "path"), _param("key", "query")], "responses": OK}}}
    assert build(make_plans, paths, "daily", {"postal_code": "1", "key": "abc"}).url == (
        f"{BASE}/forecast/daily?postal_code=1&key=abc")
    assert build(make_plans, paths, "daily", {"postal_code": "a&b=c d/?#%", "key": "k+1"}).url == (
        f"{BASE}/forecast/daily?postal_code=a%26b%3Dc%20d%2F%3F%23%25&key=k%2B1")


def test_literal_path_text_a_path_cannot_carry_is_percent_encoded(make_plans) -> None:
    # apisetu.gov.in: `/Your Pull URI Request API Path` went out with raw spaces, a request line no server reads
    paths = {"/Your Pull URI Request API Path": {"post": {"operationId": "pull", "responses": OK}},
             "/caf\u00e9/{id}/100%/a%2Fb:c@d": {"get": {"operationId": "cafe", "parameters": [_param("id", "path")],
                                                       "responses": OK}}}
    assert build(make_plans, paths, "pull", {}).url == f"{BASE}/Your%20Pull%20URI%20Request%20API%20Path"
    assert build(make_plans, paths, "cafe", {"id": "x y"}).url == f"{BASE}/caf%C3%A9/x%20y/100%25/a%2Fb:c@d"


def test_a_query_string_in_the_key_takes_literal_pairs_and_variables_declared_in_the_query(make_plans) -> None:
    paths = {
        # flickr.com: a literal pair; medium.com: the variable declared `in: query`
        "/rest?method=flickr.test.echo": {"get": {"operationId": "echo", "parameters": [_param("api_key", "query")],
                                                  "responses": OK}},
        "/search/articles?query={query}": {"get": {"operationId": "search", "parameters": [
            _param("query", "query"), {"name": "page", "in": "query", "schema": {"type": "integer"}}],
            "responses": OK}},
        "/users/{id}/pic?size={size}&format=png": {"get": {"operationId": "pic", "parameters": [
            _param("id", "path"), _param("size", "path")], "responses": OK}},
    }
    assert build(make_plans, paths, "echo", {"api_key": "k"}).url == f"{BASE}/rest?method=flickr.test.echo&api_key=k"
    assert build(make_plans, paths, "search", {"query": "a b", "page": 2}).url == (
        f"{BASE}/search/articles?query=a%20b&page=2")
    assert build(make_plans, paths, "pic", {"id": "u/1", "size": "64"}).url == f"{BASE}/users/u%2F1/pic?size=64&format=png"
    plans = make_plans(paths)
    assert sorted(plans["search"].input_schema["properties"]) == ["page", "query"]  # one `query`, not two
    assert plans["search"].tool.meta["openapi-mcp/operation"]["path"] == "/search/articles?query={query}"


def test_a_fragment_in_the_key_is_never_sent_and_does_not_swallow_the_query(make_plans) -> None:
    # AWS: `/#Action=Describe` tells operations on `/` apart; the Action itself is a query parameter
    paths = {"/#Action=Describe": {"post": {"operationId": "describe", "parameters": [
        _param("Action", "query", enum=["Describe"]), _param("Version", "query")], "responses": OK}},
        "/things/{id}#detail": {"get": {"operationId": "detail", "parameters": [_param("id", "path")],
                                        "responses": OK}}}
    assert build(make_plans, paths, "describe", {"Action": "Describe", "Version": "2010-05-15"}).url == (
        f"{BASE}/?Action=Describe&Version=2010-05-15")
    assert build(make_plans, paths, "detail", {"id": "7"}).url == f"{BASE}/things/7"


def test_a_key_with_a_variable_after_the_fragment_is_refused_with_a_reason(make_spec) -> None:
    # mastercard.com: `/send/#env/v1/partners/{partnerId}/transfer`: the value could never be sent
    spec = make_spec({"/send/#env/v1/partners/{partnerId}/transfer": {"post": {"operationId": "t", "parameters": [
        _param("partnerId", "path")], "responses": OK}}, "/ok": {"get": {"operationId": "ok", "responses": OK}}})
    assert [op.operation_id for op in spec.operations] == ["ok"]
    assert [(p.pointer, p.message, p.fatal) for p in spec.problems] == [(
        "#/paths/~1send~1#env~1v1~1partners~1{partnerId}~1transfer/post",
        "the path key has {partnerId} after '#', in the URL fragment, which is never sent; skipped", True)]


def test_header_parameters_that_frame_the_message_are_left_to_the_http_client(make_spec, make_plans) -> None:
    # here.com declares a required `Content-Length` header: taken from the arguments, it contradicted the
    # body the client sent (the upstream read a truncated request or waited for bytes that never came).
    params = [_param("Content-Length", "header"), _param("transfer-encoding", "header"), _param("Host", "header"),
              _param("Connection", "header"), _param("X-Trace", "header")]
    paths = {"/shadows/{id}": {"put": {"operationId": "put", "parameters": [_param("id", "path"), *params],
                                       "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                                       "responses": OK}}}
    plan = make_plans(paths)["put"]
    assert sorted(plan.input_schema["properties"]) == ["X-Trace", "body", "id"]
    request = plan.request.build({"id": "1", "X-Trace": "t", "body": {"a": 1}}, BASE)
    assert {k.lower() for k in request.headers} == {"accept", "content-type", "x-trace"}


def test_a_media_type_parameter_that_is_not_name_value_is_not_sent(make_plans) -> None:
    # anchore.io's `text/plain; utf-8` went out as the Content-Type, which RFC 9110 §8.3.1 cannot parse
    paths = {f"/{i}": {"post": {"operationId": f"p{i}", "requestBody": {"required": True, "content": {
        media_type: {"schema": {"type": "string"}}}}, "responses": OK}} for i, media_type in enumerate(
        ["text/plain; utf-8", "text/plain;charset=utf-8; format=flowed", 'text/x; a="1;2"', "text/x;v=1; bad"])}
    assert [build(make_plans, paths, f"p{i}", {"body": "x"}).headers["content-type"] for i in range(4)] == [
        "text/plain", "text/plain;charset=utf-8; format=flowed", 'text/x; a="1;2"', "text/x; v=1"]


def test_a_media_range_is_never_sent_as_the_content_type(make_plans) -> None:
    # telnyx.com's `*/*` body went out as `Content-Type: */*`, which names no media type at all
    obj = {"type": "object", "properties": {"a": {"type": "string"}}}
    paths = {
        "/any": {"post": {"operationId": "any", "requestBody": {"content": {"*/*": {"schema": obj}}}, "responses": OK}},
        "/app": {"post": {"operationId": "app", "requestBody": {"content": {"application/*": {"schema": obj}}},
                          "responses": OK}},
        "/text": {"post": {"operationId": "text", "requestBody": {"content": {"text/*": {"schema": {"type": "string"}}}},
                           "responses": OK}},
        "/raw": {"post": {"operationId": "raw", "requestBody": {"content": {"*/*": {"schema": {
            "type": "string", "format": "binary"}}}}, "responses": OK}},
    }
    any_ = build(make_plans, paths, "any", {"a": "é"})
    assert (any_.headers["content-type"], any_.content) == ("application/json", '{"a":"é"}'.encode())
    assert build(make_plans, paths, "app", {"a": "x"}).headers["content-type"] == "application/json"
    text = build(make_plans, paths, "text", {"body": "hello"})
    assert (text.headers["content-type"], text.content) == ("text/plain; charset=utf-8", b"hello")
    raw = build(make_plans, paths, "raw", {"body": base64.b64encode(b"\x00\x01").decode()})
    assert (raw.headers["content-type"], raw.content) == ("application/octet-stream", b"\x00\x01")


def test_a_declared_accept_encoding_is_not_overridden_by_the_http_clients_default(make_plans) -> None:
    # influxdata.com declares `Accept-Encoding: gzip | identity`; left out, aiohttp's own `gzip, deflate` went up,
    # which the document refuses. Given: that value goes; not given: no Accept-Encoding at all (RFC 9110 §12.5.3).
    paths = {"/query": {"post": {"operationId": "query", "parameters": [{"name": "Accept-Encoding", "in": "header",
        "schema": {"type": "string", "enum": ["gzip", "identity"]}}], "responses": OK}},
        "/plain": {"get": {"operationId": "plain", "responses": OK}}}
    plans = make_plans(paths)
    seen: list[bytes] = []

    async def capture(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        writer.close()

    async def go(name, args):
        server, base = await _serve_raw(capture)
        try:
            async with Upstream() as upstream:
                await upstream.send(plans[name].request.build(args, base))
        finally:
            server.close()

    for name, args in (("query", {}), ("query", {"Accept-Encoding": "identity"}), ("plain", {})):
        anyio.run(go, name, args)
    encodings = [[line for line in head.decode().lower().split("\r\n") if line.startswith("accept-encoding")]
                 for head in seen]
    assert encodings == [[], ["accept-encoding: identity"], ["accept-encoding: gzip, deflate"]]
    httpx_seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        httpx_seen["accept-encoding"] = request.headers.get("accept-encoding")
        return httpx.Response(200)

    send(handler, plans["query"].request.build({}, BASE))
    assert httpx_seen == {"accept-encoding": None}


def test_header_parameters_differing_only_in_case_are_one_header(make_plans) -> None:
    # AWS codeartifact: `X-Amz-Content-Sha256` at path level and `x-amz-content-sha256` on the operation are one
    # HTTP header (RFC 9110 §5.1); as two arguments, one value silently replaced the other
    paths = {"/publish": {"parameters": [_param("X-Amz-Content-Sha256", "header")],
                          "post": {"operationId": "publish", "parameters": [
                              {"name": "x-amz-content-sha256", "in": "header", "required": True,
                               "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}], "responses": OK}}}
    plan = make_plans(paths)["publish"]
    assert list(plan.input_schema["properties"]) == ["x-amz-content-sha256"]  # the operation's own wins
    assert plan.request.build({"x-amz-content-sha256": "a" * 64}, BASE).headers["x-amz-content-sha256"] == "a" * 64


def test_a_declared_accept_encoding_may_only_name_codings_the_server_decodes(make_plans) -> None:
    """The answer is decoded in bounded steps (decompression bombs): br or zstd could not be capped."""
    paths = {"/q": {"get": {"operationId": "q", "parameters": [{"name": "Accept-Encoding", "in": "header",
                                                                  "schema": {"type": "string"}}], "responses": OK}}}
    plan = make_plans(paths)["q"]
    assert plan.request.build({"Accept-Encoding": "gzip;q=1, identity"}, BASE).headers["Accept-Encoding"] == (
        "gzip;q=1, identity")
    with pytest.raises(ArgumentError, match=r"names 'br' in Accept-Encoding; this server accepts only gzip"):
        plan.request.build({"Accept-Encoding": "br, gzip"}, BASE)


def test_a_declared_accept_encoding_schema_names_only_codings_the_server_decodes(make_plans) -> None:
    # beezup.com's required Accept-Encoding is any list of strings: 'br' passed the schema, then the call was refused
    def header(schema: dict) -> dict:
        return {"name": "Accept-Encoding", "in": "header", "required": True, "schema": schema}

    paths = {"/l": {"get": {"operationId": "l", "parameters": [header({"type": "array", "items": {"type": "string"}})],
                            "responses": OK}},
             "/s": {"get": {"operationId": "s", "parameters": [header({"type": "string"})], "responses": OK}},
             "/e": {"get": {"operationId": "e", "parameters": [header({"type": "string", "enum": ["gzip", "identity"]})],
                            "responses": OK}}}
    plans = make_plans(paths)
    assert build(make_plans, paths, "l", {"Accept-Encoding": ["gzip", "deflate;q=0.5"]}).headers["Accept-Encoding"] == (
        "gzip,deflate;q=0.5")
    assert build(make_plans, paths, "s", {"Accept-Encoding": "gzip;q=1, identity"}).headers["Accept-Encoding"] == (
        "gzip;q=1, identity")
    for name, value in (("l", ["br"]), ("s", "br, gzip"), ("s", "")):
        with pytest.raises(ArgumentError, match=r"Invalid arguments for tool .* at \$(\.Accept-Encoding|\['Accept-Encoding'\])"):
            plans[name].validate_arguments({"Accept-Encoding": value})
    assert plans["e"].input_schema["properties"]["Accept-Encoding"] == {"type": "string", "enum": ["gzip", "identity"]}


def test_an_accept_encoding_enum_keeps_the_codings_the_server_decodes(make_spec, make_plans) -> None:
    # conjur.local: ["application/json", "base64"], none of them a coding this server decodes
    def op(name: str, enum: list[str]) -> dict:
        return {"get": {"operationId": name, "parameters": [{"name": "Accept-Encoding", "in": "header", "schema": {
            "type": "string", "enum": enum}}], "responses": OK}}

    paths = {"/none": op("none", ["application/json", "base64"]), "/some": op("some", ["gzip", "br"])}
    plans = make_plans(paths)
    assert "Accept-Encoding" not in plans["none"].input_schema["properties"]
    request = plans["none"].request.build({}, BASE)
    assert "Accept-Encoding" not in request.headers and request.skip_defaults == ("accept-encoding",)
    assert plans["some"].input_schema["properties"]["Accept-Encoding"] == {
        "allOf": [{"type": "string", "enum": ["gzip", "br"]}, {"enum": ["gzip"]}]}
    from converter.tools import build_plans
    _, problems = build_plans(make_spec(paths))
    assert [p.message for p in problems] == [
        "header parameter 'Accept-Encoding' is left out of the tool: each value it allows names a coding this "
        "server does not decode (only gzip, deflate and identity)"]


def test_a_required_nullable_parameter_is_not_null_in_the_tool(make_plans) -> None:
    # gettyimages.com's path `board_id` is `{type: string, nullable: true}`: null cannot be sent in a path
    paths = {"/boards/{board_id}": {"get": {"operationId": "b", "parameters": [
        {"name": "board_id", "in": "path", "required": True, "schema": {"type": "string", "nullable": True}},
        {"name": "q", "in": "query", "schema": {"type": "string", "nullable": True}}], "responses": OK}}}
    props = make_plans(paths)["b"].input_schema["properties"]
    assert props["board_id"] == {"type": "string", "minLength": 1}
    assert props["q"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}  # optional: null is "not given"


def test_an_empty_optional_form_body_is_no_body(make_plans) -> None:
    # codat.io's optional multipart `schema: {}`: `{}` made no part, and the call was refused
    paths = {"/a": {"post": {"operationId": "a", "requestBody": {"content": {"multipart/form-data": {"schema": {}}}},
                             "responses": OK}}}
    request = build(make_plans, paths, "a", {"body": {}})
    assert (request.content, "content-type" in request.headers) == (None, False)
    assert build(make_plans, paths, "a", {"body": {"f": "x"}}).headers["content-type"].startswith("multipart/form-data")


def test_a_json_content_parameter_is_json_text_strings_included(make_plans) -> None:
    # stream-io-api.com: `name` in the path and `client_id` in the query as `content: application/json`;
    # a string went out bare (`L`), which is not JSON
    def content(name: str, where: str) -> dict:
        return {"name": name, "in": where, "required": where == "path",
                "content": {"application/json": {"schema": {"type": "string"}}}}

    paths = {"/blocklists/{name}": {"get": {"operationId": "b", "parameters": [
        content("name", "path"), content("client_id", "query"), content("X-Ids", "header"),
        {"name": "plain", "in": "query", "content": {"text/plain": {"schema": {"type": "string"}}}}], "responses": OK}}}
    request = build(make_plans, paths, "b", {"name": "L", "client_id": "a b", "X-Ids": "7", "plain": "p"})
    assert request.url == f"{BASE}/blocklists/%22L%22?client_id=%22a%20b%22&plain=p"
    assert request.headers["X-Ids"] == '"7"'


def test_null_has_no_place_in_an_object_parameter_or_a_form(make_plans) -> None:
    # visualstudio.com's header object sent `clientTenantId=` (not a uuid); openai.com's multipart `n: null`
    # went out as an empty part (not an integer)
    obj = {"type": "object", "properties": {"a": {"type": ["string", "null"]}, "b": {"type": "string"}}}
    paths = {"/h": {"post": {"operationId": "h", "parameters": [
        {"name": "X-O", "in": "header", "schema": obj}, {"name": "q", "in": "query", "schema": obj}],
        "requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
            "n": {"type": ["integer", "null"]}, "p": {"type": "string"}}}}}}, "responses": OK}}}
    request = build(make_plans, paths, "h", {"X-O": {"a": None, "b": "x"}, "q": {"a": None, "b": "y"},
                                             "n": None, "p": "z"})
    assert (request.headers["X-O"], request.url) == ("b,x", f"{BASE}/h?b=y")
    assert b'name="n"' not in request.content and b'name="p"' in request.content


def test_an_array_schema_with_properties_is_not_spread(make_plans) -> None:
    # xtrf.eu's CategoriesDTO is `type: array` with `properties: {empty}`: spread, a required body went out as {}
    paths = {"/c": {"put": {"operationId": "c", "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "array", "items": {"type": "integer"}, "properties": {"empty": {"type": "boolean"}}}}}},
        "responses": OK}}}
    assert make_plans(paths)["c"].input_schema["required"] == ["body"]
    assert build(make_plans, paths, "c", {"body": [1]}).content == b"[1]"


def test_a_query_parameter_the_path_key_sets_is_the_keys(make_spec, make_plans) -> None:
    # opensuse.org: `.../{file}?view=fileinfo` and a query parameter `view` too: the query said `view` twice
    paths = {"/b/{file}?view=fileinfo": {"get": {"operationId": "b", "parameters": [
        _param("file", "path"), _param("view", "query", enum=["fileinfo", "fileinfo_ext"])], "responses": OK}}}
    assert sorted(make_plans(paths)["b"].input_schema["properties"]) == ["file"]
    assert build(make_plans, paths, "b", {"file": "n"}).url == f"{BASE}/b/n?view=fileinfo"
    from converter.tools import build_plans
    assert [p.message for p in build_plans(make_spec(paths))[1]] == [
        "query parameter 'view' is left out of the tool: the path key sets it ('/b/{file}?view=fileinfo')"]
