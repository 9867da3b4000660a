"""Tests of the mock upstream APIs: the marketplace app, the echo app and `python -m mock_api`."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from starlette.applications import Starlette

import mock_api
from mock_api import SPEC_PATH, DocumentError, create_app, create_echo_app
from mock_api.validation import RequestValidator

REPO = Path(__file__).resolve().parents[1]
NOT_CONFORMING = "request does not conform to the OpenAPI document"



def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")




# --- the documents --------------------------------------------------------------------------


def test_packaged_spec_is_byte_identical_to_specs_copy() -> None:
    assert (REPO / "specs" / "marketplace.yaml").read_bytes() == SPEC_PATH.read_bytes()


def test_marketplace_spec_is_valid_and_every_operation_is_documented() -> None:
    document = mock_api.load_document(SPEC_PATH)
    OpenAPI.from_dict(document)  # raises when openapi-spec-validator rejects it
    operations = {
        op["operationId"]: (method, path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    }
    assert set(operations) == set(mock_api.app.HANDLERS)
    for _, _, op in operations.values():
        assert op["summary"] and op["description"] and op["tags"][0] in {"users", "orders"}
        assert any(code.startswith("2") for code in op["responses"])
    assert document["openapi"] == "3.0.3"


def test_tools_config_follows_kong_tutorial() -> None:
    config = yaml.safe_load((REPO / "specs" / "marketplace-tools.yaml").read_text())
    assert config["upstream"] == {"url": "${MARKETPLACE_URL:-http://127.0.0.1:3000}", "timeout": 60}
    assert [(t["name"], t["description"], t["method"], t["path"]) for t in config["tools"]] == [
        ("get_users", "Get users", "GET", "/marketplace/users"),
        ("get_user_orders", "Get orders for a user", "GET", "/marketplace/orders"),
    ]
    assert config["tools"][0]["parameters"] == [
        {
            "name": "id",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "Optional user ID",
        }
    ]
    assert config["tools"][1]["parameters"][0]["required"] is True


# --- the marketplace ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_root_returns_the_api_name() -> None:
    async with client_for(create_app()) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.json() == {"name": "Sample Users API"}


@pytest.mark.anyio
async def test_users_are_listed_and_filtered_by_id() -> None:
    async with client_for(create_app()) as client:
        everyone = (await client.get("/marketplace/users")).json()
        bob = (await client.get("/marketplace/users", params={"id": "u2"})).json()
        nobody = await client.get("/marketplace/users", params={"id": "u99"})
        one = await client.get("/marketplace/users/u1")
        missing = await client.get("/marketplace/users/u99")
    assert [user["id"] for user in everyone] == ["u1", "u2", "u3", "u4", "u5"]
    assert bob == [{"id": "u2", "name": "Bob Smith", "email": "bob@example.com"}]
    assert (nobody.status_code, nobody.json()) == (200, [])
    assert one.json() == {"id": "u1", "name": "Alice Johnson", "email": "alice@example.com"}
    assert (missing.status_code, missing.json()) == (404, {"error": "user 'u99' not found"})


@pytest.mark.anyio
async def test_orders_by_path_and_by_query_are_the_same_seed_data() -> None:
    async with client_for(create_app()) as client:
        for user_id in ["u1", "u2", "u3", "u4", "u5"]:
            by_path = (await client.get(f"/marketplace/{user_id}/orders")).json()
            by_query = (await client.get("/marketplace/orders", params={"userid": user_id})).json()
            assert by_path == by_query
            assert 2 <= len(by_path) <= 5
            assert {order["userId"] for order in by_path} == {user_id}
        first = (await client.get("/marketplace/u1/orders")).json()[0]
        unknown_path = await client.get("/marketplace/u99/orders")
        unknown_query = await client.get("/marketplace/orders", params={"userid": "u99"})
    assert first == {
        "id": "o1001",
        "userId": "u1",
        "item": "Mechanical keyboard",
        "quantity": 1,
        "price": 89.99,
        "status": "delivered",
        "createdAt": "2025-01-06T09:30:00Z",
        "note": None,
    }
    assert unknown_path.status_code == unknown_query.status_code == 404
    assert unknown_query.json() == {"error": "user 'u99' not found"}


@pytest.mark.anyio
async def test_orders_are_created_updated_and_deleted() -> None:
    async with client_for(create_app()) as client:
        created = await client.post(
            "/marketplace/u2/orders", json={"item": "Standing desk", "quantity": 1, "price": 499.0}
        )
        assert created.status_code == 201
        order = created.json()
        assert order["id"] == "o1017" and order["status"] == "pending" and order["note"] is None
        assert order in (await client.get("/marketplace/u2/orders")).json()

        updated = await client.put(
            f"/marketplace/u2/orders/{order['id']}", json={"quantity": 2, "note": "Oak top"}
        )
        assert updated.status_code == 200
        assert updated.json() == {**order, "quantity": 2, "note": "Oak top"}

        deleted = await client.delete(f"/marketplace/u2/orders/{order['id']}")
        assert (deleted.status_code, deleted.content) == (204, b"")
        assert order["id"] not in [o["id"] for o in (await client.get("/marketplace/u2/orders")).json()]

        again = await client.delete(f"/marketplace/u2/orders/{order['id']}")
        someone_elses = await client.put("/marketplace/u2/orders/o1001", json={"quantity": 5})
        unknown_user = await client.post(
            "/marketplace/u99/orders", json={"item": "x", "quantity": 1, "price": 1}
        )
    assert (again.status_code, again.json()) == (404, {"error": "order 'o1017' of user 'u2' not found"})
    assert someone_elses.status_code == 404
    assert unknown_user.json() == {"error": "user 'u99' not found"}


@pytest.mark.anyio
async def test_each_app_has_its_own_state() -> None:
    async with client_for(create_app()) as first, client_for(create_app()) as second:
        await first.delete("/marketplace/u1/orders/o1001")
        assert len((await first.get("/marketplace/u1/orders")).json()) == 2
        assert len((await second.get("/marketplace/u1/orders")).json()) == 3


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "detail"),
    [
        ("GET", "/marketplace/orders", {}, "Missing required query parameter: userid"),
        (
            "GET",
            "/marketplace/users?id=u1&userId=u1",
            {},
            "Unexpected query parameter: userId (declared: id)",
        ),
        (
            "GET",
            "/marketplace/search?limit=500",
            {},
            "Invalid query parameter: limit: 500 is greater than the maximum of 100",
        ),
        (
            "GET",
            "/marketplace/search?limit=ten",
            {},
            "Query parameter error: limit: Failed to cast value to integer type: ten",
        ),
        (
            "POST",
            "/marketplace/u1/orders",
            {"json": {"item": "Pen", "quantity": "2", "price": 1.5}},
            "Request body validation error: '2' is not of type 'integer' (at $.quantity)",
        ),
        (
            "POST",
            "/marketplace/u1/orders",
            {"json": {"quantity": 0, "price": 1.5}},
            "Request body validation error: 'item' is a required property; "
            "0 is less than the minimum of 1 (at $.quantity)",
        ),
        ("POST", "/marketplace/u1/orders", {}, "Missing required request body"),
        (
            "POST",
            "/marketplace/u1/orders",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            "Request body validation error: the body cannot be decoded as application/json",
        ),
        (
            "POST",
            "/marketplace/u1/orders",
            {"data": {"item": "Pen", "quantity": "1", "price": "1"}},
            "Request body validation error: Content for the following mimetype not found: "
            "application/x-www-form-urlencoded. Valid mimetypes: ['application/json']",
        ),
        (
            "PUT",
            "/marketplace/u1/orders/o1001",
            {"json": {"status": "shipped"}},
            "Request body validation error: Additional properties are not allowed ('status' was unexpected)",
        ),
    ],
)
@pytest.mark.anyio
async def test_non_conforming_request_gets_400_with_the_validation_message(
    method: str, url: str, kwargs: dict[str, Any], detail: str
) -> None:
    async with client_for(create_app()) as client:
        response = await client.request(method, url, **kwargs)
        orders = (await client.get("/marketplace/u1/orders")).json()
    assert response.status_code == 400
    body = response.json()
    assert (body["error"], body["detail"]) == (NOT_CONFORMING, detail)
    assert body["errors"] == [detail] or "; ".join(body["errors"]) == detail
    assert body["operation"]["method"] == method
    assert [o["id"] for o in orders] == ["o1001", "o1002", "o1003"]  # the handler never ran


@pytest.mark.anyio
async def test_content_type_parameters_openapi_core_cannot_split_do_not_crash() -> None:
    order = b'{"item": "Pen", "quantity": 1, "price": 2}'
    async with client_for(create_app()) as client:
        odd_parameter = await client.post(
            "/marketplace/u1/orders", content=order, headers={"content-type": 'application/json; x="a=b"'}
        )
        odd_boundary = await client.post(
            "/marketplace/u1/orders",
            content=b"--a=b--\r\n",
            headers={"content-type": 'multipart/form-data; boundary="a=b"'},
        )
    assert odd_parameter.status_code == 201
    assert odd_boundary.status_code == 400
    assert odd_boundary.json()["detail"].startswith(
        "Request body validation error: Content for the following mimetype"
    )


@pytest.mark.anyio
async def test_unknown_paths_and_methods_are_json_errors() -> None:
    async with client_for(create_app()) as client:
        unknown = await client.get("/nope")
        wrong_method = await client.patch("/marketplace/users")
        trailing = await client.get("/marketplace/users/")
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"error": "no operation of the OpenAPI document matches /nope"},
    )
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {"error": "method PATCH is not allowed on /marketplace/users"},
    )
    assert trailing.status_code == 400  # {userId} would be empty: minLength 1


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        offset += 12 + length
    return chunks


@pytest.mark.anyio
async def test_avatar_is_a_valid_png_that_differs_per_user() -> None:
    async with client_for(create_app()) as client:
        first = await client.get("/marketplace/users/u1/avatar")
        second = await client.get("/marketplace/users/u2/avatar")
        missing = await client.get("/marketplace/users/u99/avatar")
    assert first.headers["content-type"] == "image/png"
    chunks = _png_chunks(first.content)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height, depth, colour) == (32, 32, 8, 2)
    assert len(zlib.decompress(chunks[1][1])) == height * (1 + width * 3)
    assert first.content != second.content
    assert (missing.status_code, missing.json()) == (404, {"error": "user 'u99' not found"})


@pytest.mark.anyio
async def test_search_understands_each_serialization_style() -> None:
    query = (
        "tags=mouse,KEYBOARD&status=shipped&status=delivered"
        "&filter[minPrice]=10&filter[maxPrice]=100&sort=-price|item&limit=5"
    )
    async with client_for(create_app()) as client:
        response = await client.get(f"/marketplace/search?{query}", headers={"X-Request-Id": "req-42"})
        defaults = (await client.get("/marketplace/search")).json()
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    body = response.json()
    assert body["query"] == {
        "tags": ["mouse", "KEYBOARD"],
        "status": ["shipped", "delivered"],
        "filter": {"minPrice": 10, "maxPrice": 100},
        "sort": ["-price", "item"],
        "limit": 5,
        "requestId": "req-42",
    }
    assert [(o["id"], o["price"]) for o in body["orders"]] == [
        ("o1001", 89.99),
        ("o1002", 24.5),
        ("o1013", 12.99),
    ]
    assert body["count"] == 3
    assert defaults["query"]["limit"] == 20 and defaults["count"] == 16
    assert [o["id"] for o in defaults["orders"]][:2] == ["o1001", "o1002"]


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        (
            "filter=10",
            "Unexpected query parameter: filter (declared: filter[...], limit, sort, status, tags)",
        ),
        (
            "filter[minPrice]=cheap",
            "Query parameter error: filter: Failed to cast value to number type: cheap",
        ),
        (
            "status=lost",
            "Invalid query parameter: status: 'lost' is not one of "
            "['pending', 'shipped', 'delivered'] (at $[0])",
        ),
        (
            "sort=price,item",
            "Invalid query parameter: sort: 'price,item' is not one of "
            "['price', '-price', 'quantity', '-quantity', 'createdAt', '-createdAt', 'item', '-item']"
            " (at $[0])",
        ),
    ],
)
@pytest.mark.anyio
async def test_search_rejects_wrongly_serialized_parameters(query: str, detail: str) -> None:
    async with client_for(create_app()) as client:
        response = await client.get(f"/marketplace/search?{query}")
    assert (response.status_code, response.json()["detail"]) == (400, detail)


@pytest.mark.anyio
async def test_openapi_json_is_the_document_pointing_at_this_server() -> None:
    async with client_for(create_app()) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    served = response.json()
    assert served["servers"] == [{"url": "http://testserver"}]
    assert {**served, "servers": None} == {**mock_api.load_document(SPEC_PATH), "servers": None}


@pytest.mark.anyio
async def test_responses_conform_to_the_document() -> None:
    openapi = OpenAPI.from_file_path(str(SPEC_PATH))
    calls = [
        ("GET", "/", "/", None),
        ("GET", "/marketplace/users", "/marketplace/users", None),
        ("GET", "/marketplace/users/u1", "/marketplace/users/{userId}", None),
        ("GET", "/marketplace/users/u9", "/marketplace/users/{userId}", None),
        ("GET", "/marketplace/users/u1/avatar", "/marketplace/users/{userId}/avatar", None),
        ("GET", "/marketplace/u3/orders", "/marketplace/{userId}/orders", None),
        ("GET", "/marketplace/orders?userid=u4", "/marketplace/orders", None),
        (
            "POST",
            "/marketplace/u1/orders",
            "/marketplace/{userId}/orders",
            {"item": "a", "quantity": 1, "price": 0},
        ),
        ("PUT", "/marketplace/u1/orders/o1001", "/marketplace/{userId}/orders/{orderId}", {"note": None}),
        ("DELETE", "/marketplace/u1/orders/o1002", "/marketplace/{userId}/orders/{orderId}", None),
        ("GET", "/marketplace/search?filter[minPrice]=1", "/marketplace/search", None),
        ("GET", "/marketplace/orders", "/marketplace/orders", None),
    ]
    async with client_for(create_app()) as client:
        for method, url, template, body in calls:
            response = await client.request(method, url, json=body)
            path, _, query = url.partition("?")
            request = MockRequest(
                "http://127.0.0.1:3000",
                method.lower(),
                path,
                path_pattern=template,
                args=dict(pair.split("=") for pair in query.split("&")) if query else None,
            )
            result = openapi.unmarshal_response(
                request,
                MockResponse(
                    response.content,
                    status_code=response.status_code,
                    content_type=response.headers.get("content-type", "application/json"),
                ),
            )
            assert result.errors == [], (method, url, result.errors)


@pytest.mark.anyio
async def test_request_log_shows_what_arrived_and_reset_restores_everything() -> None:
    app = create_app()
    async with client_for(app) as client:
        await client.post(
            "/marketplace/u1/orders?",
            json={"item": "Pen", "quantity": 1, "price": 2},
            headers={"Authorization": "Bearer upstream-secret", "X-Dup": "a"},
        )
        await client.get("/marketplace/search?tags=a,b&filter%5BminPrice%5D=1")
        await client.post(
            "/marketplace/u1/orders", content=b"\xff\x00", headers={"content-type": "image/png"}
        )
        log = (await client.get("/__mock/requests")).json()
        reset = await client.post("/__mock/reset")
        after = (await client.get("/__mock/requests")).json()
        orders = (await client.get("/marketplace/u1/orders")).json()
    assert len(log) == 3  # the debug endpoints themselves are not logged
    created, search, binary = log
    assert created["method"] == "POST" and created["path"] == "/marketplace/u1/orders"
    assert created["headers"]["authorization"] == "Bearer upstream-secret"
    assert created["headers"]["content-type"] == "application/json"
    assert json.loads(created["body"]) == {"item": "Pen", "quantity": 1, "price": 2}
    assert created["body_encoding"] == "utf-8" and created["status"] == 201
    assert created["operation"] == {
        "method": "POST",
        "path": "/marketplace/{userId}/orders",
        "operationId": "createOrder",
    }
    assert created["validation"] == {"outcome": "valid", "errors": [], "warnings": []}
    assert search["query"] == "tags=a,b&filter%5BminPrice%5D=1"
    assert binary["body"] == "/wA=" and binary["body_encoding"] == "base64"
    assert binary["status"] == 400 and binary["validation"]["outcome"] == "invalid"
    assert reset.json() == {"reset": True}
    assert after == []
    assert [o["id"] for o in orders] == ["o1001", "o1002", "o1003"]


@pytest.mark.anyio
async def test_refuse_answers_the_next_requests_401_and_records_them() -> None:
    async with client_for(create_app()) as client:
        assert (await client.post("/__mock/refuse", json={"count": 2})).json() == {"refusals": 2}
        first = await client.get("/marketplace/users/u1")
        second = await client.get("/marketplace/users/u1")
        third = await client.get("/marketplace/users/u1")
        assert (await client.post("/__mock/refuse", json={"count": "x"})).status_code == 400
        log = (await client.get("/__mock/requests")).json()
        await client.post("/__mock/refuse", json={"count": 1})
        await client.post("/__mock/reset")
        after_reset = await client.get("/marketplace/users/u1")
    assert (first.status_code, second.status_code, third.status_code) == (401, 401, 200)
    assert first.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert [entry["status"] for entry in log] == [401, 401, 200]
    assert after_reset.status_code == 200


@pytest.mark.anyio
async def test_request_log_keeps_the_last_200_requests() -> None:
    async with client_for(create_app()) as client:
        for index in range(205):
            await client.get("/marketplace/users", params={"id": f"u{index}"})
        log = (await client.get("/__mock/requests")).json()
    assert len(log) == 200
    assert (log[0]["query"], log[-1]["query"]) == ("id=u5", "id=u204")


def test_unreadable_documents_raise_document_error(tmp_path: Path) -> None:
    swagger = tmp_path / "swagger.json"
    swagger.write_text(json.dumps({"swagger": "2.0", "info": {"title": "t", "version": "1"}, "paths": {}}))
    with pytest.raises(DocumentError) as swagger_error:
        create_echo_app(swagger)
    assert str(swagger_error.value) == (
        f"{swagger}: OpenAPI version '2.0' is not supported; use 3.0, 3.1 or 3.2"
    )
    with pytest.raises(DocumentError, match="cannot read the OpenAPI document"):
        create_app(tmp_path / "missing.yaml")


@pytest.mark.anyio
async def test_documents_the_spec_validator_rejects_are_refused_by_the_marketplace_only(
    tmp_path: Path,
) -> None:
    duplicated = tmp_path / "duplicated.yaml"
    operation = {"operationId": "listOrders", "responses": {"200": {"description": "ok"}}}
    duplicated.write_text(
        yaml.safe_dump(
            {
                "openapi": "3.0.3",
                "info": {"title": "t", "version": "1"},
                "paths": {"/orders": {"get": operation}, "/archive/orders": {"get": operation}},
            }
        )
    )
    with pytest.raises(DocumentError, match=r"duplicated\.yaml: not a valid OpenAPI document: "):
        create_app(duplicated)
    echo = create_echo_app(duplicated)
    assert echo.state.document_problems == [
        f"{duplicated}: not a valid OpenAPI document: "
        "Operation ID 'listOrders' for 'get' in '/orders' is not unique"
    ]
    async with client_for(echo) as client:
        response = await client.get("/archive/orders")
    assert response.json()["operation"]["path"] == "/archive/orders"


# --- the echo app ---------------------------------------------------------------------------

ECHO_DOCUMENT: dict[str, Any] = {
    "info": {"title": "Tricky serialization", "version": "1"},
    "servers": [{"url": "https://api.example.com/v2"}],
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Upload": {
                "type": "object",
                "required": ["file", "title"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "title": {"type": "string"},
                    "pages": {"type": "integer"},
                    "draft": {"type": "boolean"},
                    "labels": {"type": "array", "items": {"type": "string"}},
                    "meta": {"type": "object", "properties": {"author": {"type": "string"}}},
                },
            }
        },
    },
    "paths": {
        "/items/{itemId}": {
            "get": {
                "operationId": "getItem",
                "parameters": [
                    {"name": "itemId", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "filter",
                        "in": "query",
                        "style": "deepObject",
                        "explode": True,
                        "schema": {
                            "type": "object",
                            "properties": {"min": {"type": "number"}, "colour": {"type": "string"}},
                        },
                    },
                    {
                        "name": "sort",
                        "in": "query",
                        "style": "pipeDelimited",
                        "explode": False,
                        "schema": {"type": "array", "items": {"type": "string"}},
                    },
                    {
                        "name": "ids",
                        "in": "query",
                        "style": "spaceDelimited",
                        "explode": False,
                        "schema": {"type": "array", "items": {"type": "integer"}},
                    },
                    {"name": "X-Trace", "in": "header", "schema": {"type": "integer"}},
                    {"name": "session", "in": "cookie", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/documents": {
            "post": {
                "operationId": "uploadDocument",
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/Upload"}}},
                },
                "responses": {"201": {"description": "created"}},
            }
        },
        "/login": {
            "post": {
                "operationId": "login",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["username"],
                                "properties": {
                                    "username": {"type": "string"},
                                    "remember": {"type": "boolean"},
                                    "age": {"type": "integer"},
                                    "scopes": {"type": "array", "items": {"type": "string"}},
                                },
                            }
                        }
                    },
                },
                "responses": {"204": {"description": "logged in"}},
            }
        },
    },
}


@pytest.fixture(params=["3.0.3", "3.1.0"])
def echo_app(request: pytest.FixtureRequest, tmp_path: Path) -> Starlette:
    path = tmp_path / "tricky.yaml"
    path.write_text(yaml.safe_dump({"openapi": request.param, **ECHO_DOCUMENT}))
    return create_echo_app(path)


@pytest.mark.anyio
async def test_echo_reports_typed_parameters_in_every_style(echo_app: Starlette) -> None:
    url = "/items/a%2Fb?filter[min]=1.5&filter[colour]=red&sort=name|-price&ids=1%202%203"
    async with client_for(echo_app) as client:
        response = await client.get(url, headers={"X-Trace": "7", "Cookie": "session=abc"})
        with_base_path = await client.get("/v2/items/9?ids=4+5")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "operation": {"method": "GET", "path": "/items/{itemId}", "operationId": "getItem"},
        "parameters": {
            "path": {"itemId": "a/b"},
            "query": {"filter": {"min": 1.5, "colour": "red"}, "sort": ["name", "-price"], "ids": [1, 2, 3]},
            "header": {"X-Trace": 7},
            "cookie": {"session": "abc"},
        },
        "body": None,
        "content_type": None,
    }
    assert with_base_path.json()["parameters"]["query"] == {"ids": [4, 5]}


@pytest.mark.anyio
async def test_echo_reports_a_multipart_upload_with_its_file(echo_app: Starlette) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    async with client_for(echo_app) as client:
        response = await client.post(
            "/documents",
            data={"title": "Report", "pages": "12", "draft": "true", "labels": ["q1", "final"]},
            files={
                "file": ("report.png", png, "image/png"),
                "meta": (None, '{"author": "Ann"}', "application/json"),
            },
        )
        without_labels = await client.post(
            "/documents", data={"title": "t"}, files={"file": ("a.txt", b"hello", "text/plain")}
        )
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["body"] == {
        "file": {
            "filename": "report.png",
            "content_type": "image/png",
            "size": len(png),
            "sha256": hashlib.sha256(png).hexdigest(),
        },
        "title": "Report",
        "pages": 12,
        "draft": True,
        "labels": ["q1", "final"],
        "meta": {"author": "Ann"},
    }
    assert echoed["content_type"].startswith("multipart/form-data; boundary=")
    assert [(p["name"], p["filename"]) for p in echoed["parts"]] == [
        ("title", None),
        ("pages", None),
        ("draft", None),
        ("labels", None),
        ("labels", None),
        ("file", "report.png"),
        ("meta", None),
    ]
    assert without_labels.status_code == 200, without_labels.text
    assert "labels" not in without_labels.json()["body"]  # absent, not []
    assert without_labels.json()["body"]["file"]["filename"] == "a.txt"


@pytest.mark.anyio
async def test_echo_reports_a_form_urlencoded_body(echo_app: Starlette) -> None:
    async with client_for(echo_app) as client:
        response = await client.post(
            "/login", data={"username": "ann", "remember": "true", "age": "41", "scopes": ["read", "write"]}
        )
    assert response.status_code == 200, response.text
    assert response.json()["body"] == {
        "username": "ann",
        "remember": True,
        "age": 41,
        "scopes": ["read", "write"],
    }
    assert response.json()["content_type"] == "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "detail"),
    [
        (
            "GET",
            "/items/1?filter=red",
            {},
            "Unexpected query parameter: filter (declared: filter[...], ids, sort)",
        ),
        (
            "GET",
            "/items/1?ids=1,2",
            {},
            "Query parameter error: ids: Failed to cast value to integer type: 1,2",
        ),
        (
            "POST",
            "/documents",
            {"data": {"title": "t", "pages": "many"}, "files": {"file": ("a", b"x")}},
            "Request body validation error: Failed to cast value to integer type: many",
        ),
        (
            "POST",
            "/documents",
            {"data": {"title": "t"}, "files": {"attachment": ("a", b"x")}},
            "Request body validation error: 'file' is a required property",
        ),
        (
            "POST",
            "/login",
            {"json": {"username": "ann"}},
            "Request body validation error: Content for the following mimetype not found: application/json. "
            "Valid mimetypes: ['application/x-www-form-urlencoded']",
        ),
        (
            "POST",
            "/login",
            {"data": {"remember": "yes"}},
            "Request body validation error: 'username' is a required property",
        ),
    ],
)
@pytest.mark.anyio
async def test_echo_rejects_non_conforming_requests(
    echo_app: Starlette, method: str, url: str, kwargs: dict[str, Any], detail: str
) -> None:
    async with client_for(echo_app) as client:
        response = await client.request(method, url, **kwargs)
        log = (await client.get("/__mock/requests")).json()
    assert response.status_code == 400
    assert (response.json()["error"], response.json()["detail"]) == (NOT_CONFORMING, detail)
    assert log[-1]["validation"]["outcome"] == "invalid" and log[-1]["validation"]["errors"] == [detail]


@pytest.mark.anyio
async def test_echo_answers_unknown_operations_with_404_and_405(echo_app: Starlette) -> None:
    async with client_for(echo_app) as client:
        unknown = await client.get("/pets")
        wrong_method = await client.delete("/login")
        reset = await client.post("/__mock/reset")
        log = (await client.get("/__mock/requests")).json()
    assert unknown.status_code == 404 and wrong_method.status_code == 405
    assert reset.status_code == 200 and log == []


QUIRKY_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Styles openapi-core needs help with", "version": "1"},
    "paths": {
        "/near": {
            "get": {
                "parameters": [
                    {
                        "name": "point",
                        "in": "query",
                        "required": True,
                        "style": "form",
                        "explode": True,
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["lat", "lon"],
                            "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                        },
                    },
                    {"name": "since", "in": "query", "schema": {"type": ["integer", "null"]}},
                ],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/colors/{color}/shapes/{shape}": {
            "get": {
                "parameters": [
                    {
                        "name": "color",
                        "in": "path",
                        "required": True,
                        "style": "label",
                        "schema": {"type": "array", "items": {"type": "string"}},
                    },
                    {
                        "name": "shape",
                        "in": "path",
                        "required": True,
                        "style": "matrix",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/stock": {
            "get": {
                "parameters": [{"$ref": "common.yaml#/components/parameters/PageSize"}],
                "responses": {"200": {"description": "ok"}},
            }
        },
    },
}
COMMON_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Shared components", "version": "1"},
    "paths": {},
    "components": {
        "parameters": {
            "PageSize": {"name": "pageSize", "in": "query", "schema": {"type": "integer", "maximum": 100}}
        }
    },
}


@pytest.mark.anyio
async def test_echo_handles_styles_and_references_openapi_core_needs_help_with(tmp_path: Path) -> None:
    (tmp_path / "common.yaml").write_text(yaml.safe_dump(COMMON_DOCUMENT))
    (tmp_path / "quirky.yaml").write_text(yaml.safe_dump(QUIRKY_DOCUMENT))
    async with client_for(create_echo_app(tmp_path / "quirky.yaml")) as client:
        near = await client.get("/near?lat=48.85&lon=2.35&since=3")
        near_missing = await client.get("/near?since=3")
        near_wrong = await client.get("/near?point=48.85,2.35")
        shapes = await client.get("/colors/.blue,black/shapes/;shape=round")
        stock = await client.get("/stock?pageSize=20")
        stock_too_big = await client.get("/stock?pageSize=500")
    assert near.status_code == 200, near.text
    assert near.json()["parameters"]["query"] == {"point": {"lat": 48.85, "lon": 2.35}, "since": 3}
    assert near_missing.json()["detail"] == "Missing required query parameter: point"
    assert near_wrong.json()["detail"] == (
        "Unexpected query parameter: point (declared: lat, lon, since); "
        "Query parameter error: point: the value does not follow the 'form' style"
    )
    assert shapes.status_code == 200, shapes.text
    assert shapes.json()["parameters"]["path"] == {"color": ["blue", "black"], "shape": "round"}
    assert stock.json()["parameters"]["query"] == {"pageSize": 20}
    assert (
        stock_too_big.json()["detail"]
        == "Invalid query parameter: pageSize: 500 is greater than the maximum of 100"
    )


REAL_WORLD_DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Corners of real-world documents", "version": "1"},
    "paths": {
        "/names": {
            "get": {
                "parameters": [
                    {"name": "key", "in": "query", "required": True, "schema": {"type": "string", "format": "string"}},
                    {"name": "name", "in": "query", "schema": {"type": "string", "pattern": "^\\p{L}+$"}},
                    {"name": "slug", "in": "query", "schema": {"type": "string", "pattern": "^[\\w-.]+$"}},
                    {"name": "Authorization", "in": "header", "required": True, "schema": {"type": "string"}},
                    {"name": "Accept", "in": "header", "schema": {"type": "string", "enum": ["image/png"]}},
                ],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/forecast?city={city}": {
            "get": {
                "parameters": [
                    {"name": "city", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "key", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/items/{id}": {
            "patch": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/merge-patch+json": {"schema": {
                    "type": "object", "properties": {"n": {"type": "integer"}}}}}},
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/#Action=Describe": {
            "post": {
                "parameters": [{"name": "Action", "in": "query", "required": True,
                                "schema": {"type": "string", "enum": ["Describe"]}}],
                "responses": {"200": {"description": "ok"}},
            }
        },
    },
}


@pytest.mark.anyio
async def test_echo_copes_with_unknown_formats_ecma_patterns_and_ignored_headers(tmp_path: Path) -> None:
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(REAL_WORLD_DOCUMENT))
    async with client_for(create_echo_app(tmp_path / "real.yaml")) as client:
        good = await client.get("/names?key=abc&name=%C3%89mile&slug=a-b.c", headers={"accept": "application/json"})
        bad = await client.get("/names?key=abc&name=x1&slug=a%20b")
        patch = await client.patch("/items/1", content=b'{"n": 2}', headers={"content-type": "application/merge-patch+json"})
        bad_patch = await client.patch("/items/1", content=b'{"n": "2"}',
                                       headers={"content-type": "application/merge-patch+json"})
    assert (patch.status_code, patch.json()["body"]) == (200, {"n": 2})  # a +json type is read as JSON
    assert bad_patch.json()["errors"] == ["Request body validation error: '2' is not of type 'integer' (at $.n)"]
    assert good.status_code == 200, good.text  # format: string, \p{L}, [\w-.], Accept/Authorization ignored
    assert good.json()["parameters"]["query"] == {"key": "abc", "name": "Émile", "slug": "a-b.c"}
    letters, slug = r"^\p{L}+$", r"^[\w-.]+$"
    assert bad.json()["errors"] == [
        f"Invalid query parameter: name: 'x1' does not match {letters!r}",
        f"Invalid query parameter: slug: 'a b' does not match {slug!r}",
    ]


def test_a_request_is_validated_as_the_operation_a_judge_names(tmp_path: Path) -> None:
    validator = RequestValidator(REAL_WORLD_DOCUMENT, check_document=False)

    def request(method: str, target: str) -> Any:
        path, _, query = target.partition("?")
        return _request(method, path, query)

    ok = validator.validate_as(request("GET", "/forecast?city=Paris&key=k"), b"", "/forecast?city={city}",
                               {"city": "Paris"}, frozenset({"city"}))
    missing = validator.validate_as(request("GET", "/forecast?city=Paris"), b"", "/forecast?city={city}",
                                    {"city": "Paris"}, frozenset({"city"}))
    fragment = validator.validate_as(request("POST", "/?Action=Describe"), b"", "/#Action=Describe", {})
    wrong = validator.validate_as(request("POST", "/?Action=Other"), b"", "/#Action=Describe", {})
    assert (ok.status, ok.errors) == ("valid", [])
    assert missing.errors == ["Missing required query parameter: key"]
    assert (fragment.status, fragment.operation and fragment.operation.path) == ("valid", "/#Action=Describe")
    assert wrong.errors == ["Invalid query parameter: Action: 'Other' is not one of ['Describe']"]
    assert validator.validate_as(request("GET", "/"), b"", "/nowhere", {}).status == "no-path"


def _request(method: str, path: str, query: str) -> Any:
    from starlette.requests import Request

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "headers": []}
    return Request(scope)


# --- python -m mock_api ---------------------------------------------------------------------








@pytest.mark.anyio
async def test_the_echo_app_expects_an_api_key_its_spec_declares_in_the_query_and_nothing_else() -> None:
    secured = REPO / "tests" / "integration" / "specs" / "secured_api.yaml"
    async with client_for(create_echo_app(secured)) as client:
        keyed = await client.get("/api/search", params={"q": "lamp", "api_key": "k"})
        other = await client.get("/api/search", params={"q": "lamp", "apikey": "k"})
    assert keyed.status_code == 200 and keyed.json()["parameters"]["query"] == {"q": "lamp"}
    assert other.status_code == 400 and other.json()["errors"] == [
        "Unexpected query parameter: apikey (declared: api_key, q)"]


def test_a_long_validation_message_keeps_what_is_wrong() -> None:
    from mock_api.validation import _short

    message = "{" + ", ".join(f"'k{i}': 'v{i}'" for i in range(60)) + "} is not of type 'string'"
    short = _short(message)
    assert len(short) <= 240 and short.startswith("{'k0': 'v0'") and short.endswith("} is not of type 'string'")
    assert _short("brief") == "brief"
