"""Small, tricky OpenAPI documents (tests/specs/) called through the catalog against the echo mock.

For each document: the tools have the right shapes, every call is accepted by the echo mock (it
validates the request against the document with openapi-core, so acceptance proves the request
conforms), and the mock echoes exactly the values given. Bodies (multipart, form, binary,
images), Swagger 2.0 and OpenAPI 3.1 are in test_tricky_bodies.py, which uses the helpers here.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import jsonschema
import pytest
import yaml
from mcp import Client
from openapi_core.deserializing.styles.util import label_loads, matrix_loads

from converter.catalog import Catalog, build_catalog
from converter.config import load_settings
from converter.server.app import build_server
from converter.spec import load_spec
from converter.spec.swagger2 import convert_swagger2
from mock_api import create_echo_app

pytestmark = pytest.mark.anyio

SPECS = Path(__file__).parent / "specs"
ALL_SPECS = ["recursive.yaml", "collisions.yaml", "styles.yaml", "multipart.yaml", "no-operation-ids.yaml",
             "long-operation-ids.yaml", "image.yaml", "swagger2-petstore.yaml", "openapi31.yaml",
             "servers-vars.yaml"]



class EchoMock:
    """The echo mock of one document; keeps (status, JSON) of every answer it gives."""

    def __init__(self, document: Path) -> None:
        self.app = create_echo_app(document)
        self.answers: list[tuple[int, Any]] = []

    def log(self) -> list[dict[str, Any]]:
        return self.app.state.request_log.entries()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        status, chunks = 0, []

        async def record(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, record)
        self.answers.append((status, json.loads(b"".join(chunks) or b"null")))


def echo_document(spec: str, tmp_path: Path) -> Path:
    """The OpenAPI 3 document the echo mock validates against for `spec`.

    openapi-core needs one valid OpenAPI 3 file: Swagger 2.0 is converted, `servers-vars.yaml`'s
    references into its companion file are bundled, and the duplicate operationId of
    `no-operation-ids.yaml` (which openapi-spec-validator refuses) is renamed.
    """
    doc = yaml.safe_load((SPECS / spec).read_text(encoding="utf-8"))
    if "swagger" in doc:
        doc = convert_swagger2(doc)
    elif spec == "servers-vars.yaml":
        common = yaml.safe_load((SPECS / "servers-vars-common.yaml").read_text(encoding="utf-8"))
        for section, items in common["components"].items():
            doc.setdefault("components", {}).setdefault(section, {}).update(items)
        doc = json.loads(json.dumps(doc).replace('"servers-vars-common.yaml#', '"#'))
    elif spec == "no-operation-ids.yaml":
        doc["paths"]["/archive/orders"]["get"]["operationId"] = "listArchivedOrders"
    else:
        return SPECS / spec
    path = tmp_path / (Path(spec).stem + ".echo.json")
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@asynccontextmanager
async def serve(spec: str, tmp_path: Path, *, upstream_url: str | None = "http://echo.test",
                ) -> AsyncIterator[tuple[Catalog, EchoMock]]:
    """A catalog for tests/specs/`spec` whose upstream is the echo mock, in process."""
    mock = EchoMock(echo_document(spec, tmp_path))
    settings = load_settings(None, spec=str(SPECS / spec), upstream_url=upstream_url)
    catalog = build_catalog(settings, transport=httpx.ASGITransport(app=mock))
    async with catalog:
        yield catalog, mock


async def call(catalog: Catalog, mock: EchoMock, name: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Call a tool; the echo mock must have accepted the request. Returns (echo, tool result)."""
    before = len(mock.answers)
    result = await catalog.call_tool(name, arguments)
    assert len(mock.answers) == before + 1, f"{name} sent nothing: {result.content[0].text}"
    status, echo = mock.answers[-1]
    assert status == 200, f"the echo mock refused {name}({arguments}): {echo}"
    return echo, result


def tools(catalog: Catalog) -> dict[str, Any]:
    return {plan.name: plan for plan in catalog.plans}


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(value) for key, value in node.items() if key != "$defs"))
    if isinstance(node, list):
        return set().union(*(refs(item) for item in node))
    return set()


# -- every document -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_every_tool_schema_is_valid_2020_12_with_exactly_the_defs_it_reaches(spec: str) -> None:
    settings = load_settings(None, spec=str(SPECS / spec), upstream_url="http://echo.test")
    for plan in build_catalog(settings).plans:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", plan.name), plan.name
        for schema in filter(None, (plan.input_schema, plan.output_schema)):
            jsonschema.Draft202012Validator.check_schema(schema)
            defs = schema.get("$defs", {})
            reached = refs(schema) | set().union(*(refs(d) for d in defs.values()))
            assert reached == {f"#/$defs/{key}" for key in defs}, (plan.name, reached, list(defs))
        assert plan.tool.input_schema == plan.input_schema
        assert plan.tool.output_schema == plan.output_schema


# -- recursive.yaml -------------------------------------------------------------------------------

CATEGORY_IN = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "minLength": 1}, "children": {"$ref": "#/$defs/CategoryList"}}}
CATEGORY_LIST = {"type": "array", "items": {"$ref": "#/$defs/Category"}}


async def test_recursive_schemas_round_trip_and_keep_only_the_reached_defs(tmp_path: Path) -> None:
    tree = {"name": "Home", "children": [
        {"name": "Kitchen", "children": [{"name": "Knives", "children": []}, {"name": "Pans"}]},
        {"name": "Garden"}]}
    department = {"name": "R&D", "manager": {"login": "ada", "department": {"name": "Board"},
                                             "reports": [{"login": "bob", "reports": [{"login": "eve"}]}]}}
    async with serve("recursive.yaml", tmp_path) as (catalog, mock):
        plans = tools(catalog)
        assert list(plans) == ["createCategoryTree", "createDepartment"]
        assert plans["createCategoryTree"].input_schema == {
            "type": "object", "properties": CATEGORY_IN["properties"], "required": ["name"],
            "additionalProperties": False, "$defs": {"Category": CATEGORY_IN, "CategoryList": CATEGORY_LIST}}
        out = plans["createCategoryTree"].output_schema
        assert out["properties"] == {"body": {"$ref": "#/$defs/Category"}} and out["required"] == ["body"]
        # readOnly `id` is not asked for in requests but documented in responses
        assert out["$defs"]["Category"]["properties"]["id"] == {"type": "integer", "readOnly": True}
        department_in = plans["createDepartment"].input_schema
        assert department_in["properties"] == {"name": {"type": "string"}, "manager": {"$ref": "#/$defs/Employee"}}
        assert sorted(department_in["$defs"]) == ["Department", "Employee"]  # A -> B -> A, and no `Unused`
        assert department_in["$defs"]["Employee"]["properties"]["department"] == {"$ref": "#/$defs/Department"}

        echo, result = await call(catalog, mock, "createCategoryTree", tree)
        assert echo["body"] == tree and result.structured_content == echo
        echo, result = await call(catalog, mock, "createDepartment", department)
        assert echo["body"] == department and result.structured_content == echo


async def test_recursive_tools_work_through_the_sdk_client(tmp_path: Path) -> None:
    async with serve("recursive.yaml", tmp_path) as (catalog, _mock), Client(build_server(catalog)) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert listed["createDepartment"].input_schema == catalog.plan("createDepartment").input_schema
        result = await client.call_tool("createCategoryTree", {"name": "a", "children": [{"name": "b"}]})
        assert not result.is_error, result.content[0].text
        assert result.structured_content["body"] == {"name": "a", "children": [{"name": "b"}]}


# -- collisions.yaml ------------------------------------------------------------------------------


async def test_names_used_in_several_locations_get_location_suffixes(tmp_path: Path) -> None:
    note = {"id__path": 7, "id__query": "n-42", "lang__query": "fr", "lang__cookie": "de",
            "X-Request-Id": "req-1", "id__body": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "text": "hello & good bye", "lang__body": "en"}
    async with serve("collisions.yaml", tmp_path) as (catalog, mock):
        upsert, labels = tools(catalog)["upsertNote"].input_schema, tools(catalog)["setLabels"].input_schema
        assert list(upsert["properties"]) == ["id__path", "id__query", "lang__query", "lang__cookie",
                                              "X-Request-Id", "id__body", "text", "lang__body"]
        assert upsert["required"] == ["id__path", "X-Request-Id", "id__body", "text"]
        assert upsert["properties"]["id__path"] == {"type": "integer", "minimum": 1, "description": "Notebook id"}
        assert upsert["properties"]["id__body"] == {"type": "string", "format": "uuid"}
        # the operation-level `id` overrides the path-level one; a query parameter named `body`
        # collides with the (non-object) body argument
        assert list(labels["properties"]) == ["id", "body__query", "body__body"]
        assert labels["properties"]["id"]["type"] == "integer" and labels["required"] == ["id", "body__body"]

        echo, _ = await call(catalog, mock, "upsertNote", note)
        assert echo["parameters"] == {"path": {"id": 7}, "query": {"id": "n-42", "lang": "fr"},
                                      "header": {"X-Request-Id": "req-1"}, "cookie": {"lang": "de"}}
        assert echo["body"] == {"id": note["id__body"], "text": "hello & good bye", "lang": "en"}
        echo, _ = await call(catalog, mock, "setLabels", {"id": 12, "body__query": "full", "body__body": ["a", "b c"]})
        assert echo["parameters"]["path"] == {"id": 12} and echo["parameters"]["query"] == {"body": "full"}
        assert echo["body"] == ["a", "b c"]


# -- no-operation-ids.yaml ------------------------------------------------------------------------

DERIVED_NAMES = ["get", "get_users", "post_users", "get_users_userId", "delete_users_userId", "get_users_me",
                 "get_users_userId_2", "get_v1_0_health-check", "get_users_userId_orders_orderId_items",
                 "listOrders", "listOrders_2"]


async def test_names_from_method_and_path_are_valid_unique_stable_and_reach_their_operation(tmp_path: Path) -> None:
    settings = load_settings(None, spec=str(SPECS / "no-operation-ids.yaml"), upstream_url="http://echo.test")
    assert [plan.name for plan in build_catalog(settings).plans] == DERIVED_NAMES  # same on every build
    async with serve("no-operation-ids.yaml", tmp_path) as (catalog, mock):
        assert list(tools(catalog)) == DERIVED_NAMES
        assert [str(p) for p in catalog.problems] == [
            "#/paths/~1users~1userId/get: tool name 'get_users_userId' is already used by "
            "#/paths/~1users~1{userId}/get; using 'get_users_userId_2'",
            "#/paths/~1archive~1orders/get: tool name 'listOrders' is already used by #/paths/~1orders/get; "
            "using 'listOrders_2'"]
        assert tools(catalog)["get_users_userId_2"].tool.meta == {
            "openapi-mcp/operation": {"method": "GET", "path": "/users/userId"}}
        arguments = {"get_users_userId": {"userId": "u1"}, "delete_users_userId": {"userId": "u1"},
                     "post_users": {"login": "ada"},
                     "get_users_userId_orders_orderId_items": {"userId": "team/ada", "orderId": 5}}
        for plan in catalog.plans:
            echo, _ = await call(catalog, mock, plan.name, arguments.get(plan.name, {}))
            assert (echo["operation"]["method"], echo["operation"]["path"]) == (plan.method, plan.path)
            assert echo["parameters"]["path"] == {k: v for k, v in arguments.get(plan.name, {}).items() if k != "login"}
        assert "/users/team%2Fada/orders/5/items" in [entry["raw_path"] for entry in mock.log()]


# -- long-operation-ids.yaml ----------------------------------------------------------------------

BY_PRODUCT = "listTheInvoiceLineItemsOfTheCurrentBillingPeriodForTheCustomerAccountByProductId"
BY_TAX_REGION = "listTheInvoiceLineItemsOfTheCurrentBillingPeriodForTheCustomerAccountByTaxRegion"
CURRENT = "getInvoiceLineItemsOfTheCurrentBillingPeriodForTheCustomerAccount"


async def test_long_operation_ids_are_cut_to_64_distinct_names_and_reported(tmp_path: Path) -> None:
    assert len(BY_PRODUCT) == len(BY_TAX_REGION) == 80 and BY_PRODUCT[:64] == BY_TAX_REGION[:64]
    async with serve("long-operation-ids.yaml", tmp_path) as (catalog, mock):
        assert list(tools(catalog)) == [
            "listTheInvoiceLineItemsOfTheCurrentBillingPeriodForTheC_1bae3ea4",
            "listTheInvoiceLineItemsOfTheCurrentBillingPeriodForTheC_a2e9fdf4",
            "getInvoiceLineItemsOfTheLatestBillingPeriodForTheCustomerAccount",  # exactly 64: kept
            "getInvoiceLineItemsOfTheCurrentBillingPeriodForTheCusto_af8298d8",  # 65
            "get_organizations_organizationId_projects_projectId_env_1fdb0425"]  # derived from the path
        assert [p.message for p in catalog.problems] == [
            f"operationId {BY_PRODUCT!r} is longer than 64 characters; using "
            "'listTheInvoiceLineItemsOfTheCurrentBillingPeriodForTheC_1bae3ea4'",
            f"operationId {BY_TAX_REGION!r} is longer than 64 characters; using "
            "'listTheInvoiceLineItemsOfTheCurrentBillingPeriodForTheC_a2e9fdf4'",
            f"operationId {CURRENT!r} is longer than 64 characters; using "
            "'getInvoiceLineItemsOfTheCurrentBillingPeriodForTheCusto_af8298d8'"]
        for plan in catalog.plans:
            # the full operationId stays in _meta, so clients can map the short name back
            assert plan.tool.meta["openapi-mcp/operation"].get("operationId") == plan.operation.operation_id
            arguments = {name: f"{name}-1" for name in plan.input_schema["properties"]}
            echo, _ = await call(catalog, mock, plan.name, arguments)
            assert echo["operation"]["path"] == plan.path and echo["parameters"]["path"] == arguments


# -- styles.yaml ----------------------------------------------------------------------------------


async def test_every_serialization_style_is_understood_by_openapi_core(tmp_path: Path) -> None:
    search = {"filter": {"brand": "Ben & Jerry's", "minPrice": 9.5, "inStock": True},
              "tag": ["new arrival", "50%", "été"], "ids": [1, 2, 3], "sizes": ["S", "M", "XL"],
              "colors": ["red", "dark blue"], "page": {"number": 2, "size": 50},
              "return_to": "https://shop.example.com/cart?step=2",
              "X-Feature-Flags": ["beta", "dark-mode"], "X-Client": {"name": "web", "version": "3"},
              "session": "abc123", "currency": "EUR"}
    async with serve("styles.yaml", tmp_path) as (catalog, mock):
        assert tools(catalog)["searchProducts"].input_schema["required"] == ["session"]
        echo, _ = await call(catalog, mock, "searchProducts", search)
        assert echo["parameters"] == {
            "path": {},
            "query": {k: search[k] for k in ("filter", "tag", "ids", "sizes", "colors", "page", "return_to")},
            "header": {"X-Feature-Flags": ["beta", "dark-mode"], "X-Client": {"name": "web", "version": "3"}},
            "cookie": {"session": "abc123", "currency": "EUR"}}
        entry = mock.log()[-1]
        assert entry["query"] == (
            "filter%5Bbrand%5D=Ben%20%26%20Jerry%27s&filter%5BminPrice%5D=9.5&filter%5BinStock%5D=true"
            "&tag=new%20arrival&tag=50%25&tag=%C3%A9t%C3%A9&ids=1,2,3&sizes=S%20M%20XL&colors=red|dark%20blue"
            "&page=number,2,size,50&return_to=https://shop.example.com/cart?step=2")
        assert entry["headers"]["x-feature-flags"] == "beta,dark-mode"
        assert entry["headers"]["x-client"] == "name=web,version=3"

        # a `;` in a cookie value cannot smuggle in a second cookie
        echo, _ = await call(catalog, mock, "searchProducts", {"session": "abc; currency=USD"})
        assert list(echo["parameters"]["cookie"]) == ["session"]
        assert unquote(echo["parameters"]["cookie"]["session"]) == "abc; currency=USD"

        # exploded form object: openapi-core 0.23 cannot unmarshal it (it looks for `point`), so
        # the spec keeps it optional and the raw query is checked instead
        await call(catalog, mock, "findNearby", {"point": {"lat": 48.85, "lon": 2.35}})
        assert mock.log()[-1]["query"] == "lat=48.85&lon=2.35"

        echo, _ = await call(catalog, mock, "getOrders", {"ids": [3, 14, 15]})
        assert echo["parameters"]["path"] == {"ids": [3, 14, 15]} and mock.log()[-1]["raw_path"] == "/orders/3,14,15"


async def test_label_and_matrix_path_styles_follow_rfc_6570(tmp_path: Path) -> None:
    # The echo mock refuses both (openapi-core 0.23 looks the values up as `.color` / `;shape`,
    # which it is not given), so the raw paths are checked with openapi-core's own deserializers.
    async with serve("styles.yaml", tmp_path) as (catalog, mock):
        await catalog.call_tool("getColor", {"color": ["blue", "light grey"]})
        await catalog.call_tool("getShape", {"shape": "circle"})
    color, shape = mock.log()[-2:]
    assert (color["operation"]["operationId"], color["raw_path"]) == ("getColor", "/colors/.blue,light%20grey")
    assert (shape["operation"]["operationId"], shape["raw_path"]) == ("getShape", "/shapes/;shape=circle")
    segment = unquote(color["raw_path"].rsplit("/", 1)[1])
    assert label_loads(False, "color", "array", {".color": segment}) == ["blue", "light grey"]
    assert matrix_loads(False, "shape", "string", {";shape": shape["raw_path"].rsplit("/", 1)[1]}) == "circle"


# -- servers-vars.yaml + servers-vars-common.yaml -------------------------------------------------


async def test_server_variables_and_refs_into_a_second_file(tmp_path: Path) -> None:
    spec = load_spec(str(SPECS / "servers-vars.yaml"))
    assert spec.servers == ("https://eu.inventory.example.com/v2", "http://localhost:8080/v2")
    assert spec.problems == ()
    item = {"sku": "SKU-1234", "quantity": 3, "location": {"aisle": "B", "level": 2}}
    async with serve("servers-vars.yaml", tmp_path, upstream_url=None) as (catalog, mock):
        add = tools(catalog)["addStock"].input_schema
        assert list(add["properties"]) == ["warehouseId", "sku", "quantity", "location"]
        assert add["required"] == ["warehouseId", "sku", "quantity"]
        assert add["properties"]["warehouseId"] == {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$", "minLength": 1}
        assert add["$defs"] == {"Shelf": {"type": "object", "properties": {"aisle": {"type": "string"},
                                                                            "level": {"type": "integer"}}},
                                "Sku": {"type": "string", "pattern": "^[A-Z0-9-]{4,32}$"}}
        assert tools(catalog)["listStock"].input_schema["properties"]["pageSize"]["default"] == 20

        echo, result = await call(catalog, mock, "listStock", {"warehouseId": "PAR-01", "pageSize": 50})
        assert echo["parameters"]["path"] == {"warehouseId": "PAR-01"} and echo["parameters"]["query"] == {"pageSize": 50}
        assert result.structured_content == echo
        echo, _ = await call(catalog, mock, "addStock", {"warehouseId": "PAR-01", **item})
        assert echo["body"] == item
    # no upstream URL configured: the first server, with its variables' defaults
    assert [(e["headers"]["host"], e["raw_path"]) for e in mock.log()] == [
        ("eu.inventory.example.com", "/v2/warehouses/PAR-01/stock")] * 2


# -- bad arguments, for every document -------------------------------------------------------------

BAD_ARGUMENTS = [
    ("recursive.yaml", "createCategoryTree", {"name": "Home", "children": [{"name": "A", "children": [{"name": ""}]}]},
     "at $.children[0].children[0].name: '' should be non-empty"),
    ("recursive.yaml", "createDepartment", {"name": "R&D", "manager": {"reports": [{"login": "bob"}]}},
     "at $.manager: 'login' is a required property"),
    ("collisions.yaml", "upsertNote", {"id": 7, "X-Request-Id": "r", "id__path": 7, "id__body": "x", "text": "t"},
     "at $: Additional properties are not allowed ('id' was unexpected)"),
    ("styles.yaml", "searchProducts", {"session": "s", "ids": [1, "two"]}, "at $.ids[1]: 'two' is not of type 'integer'"),
    ("styles.yaml", "getOrders", {"ids": []}, "at $.ids: [] should be non-empty"),
    ("multipart.yaml", "uploadDocument", {"folderId": "f", "file": "AAEC", "title": "t", "pages": 0},
     "at $.pages: 0 is less than the minimum of 1"),
    ("multipart.yaml", "login", {"username": "ada"}, "at $: 'password' is a required property"),
    ("no-operation-ids.yaml", "post_users", {}, "at $: 'login' is a required property"),
    ("long-operation-ids.yaml", "getInvoiceLineItemsOfTheLatestBillingPeriodForTheCustomerAccount",
     {"accountId": 5}, "at $.accountId: 5 is not of type 'string'"),
    ("image.yaml", "getAvatar", {"userId": "u1", "size": 48}, "at $.size: 48 is not one of [32, 64, 128]"),
    ("swagger2-petstore.yaml", "listPets", {"limit": 500}, "at $.limit: 500 is greater than the maximum of 100"),
    ("swagger2-petstore.yaml", "addPet", {"name": "Rex", "petType": "dog", "photoUrls": [], "id": 1},
     "at $: Additional properties are not allowed ('id' was unexpected)"),
    ("openapi31.yaml", "updateProfile", {"handle": "ada", "schemaVersion": 3, "displayName": "Ada"},
     "at $.schemaVersion: 2 was expected"),
    ("openapi31.yaml", "updateProfile", {"handle": "Ada!", "schemaVersion": 2, "displayName": "Ada"},
     "at $.handle: 'Ada!' does not match '^[a-z0-9_]{3,20}$'"),
    ("servers-vars.yaml", "addStock", {"warehouseId": "PAR-01", "sku": "x", "quantity": 1},
     "at $.sku: 'x' does not match '^[A-Z0-9-]{4,32}$'"),
]


@pytest.mark.parametrize(("spec", "tool", "arguments", "message"), BAD_ARGUMENTS,
                         ids=[f"{s}-{t[:20]}-{i}" for i, (s, t, *_) in enumerate(BAD_ARGUMENTS)])
async def test_bad_arguments_are_tool_errors_that_never_reach_the_upstream(
        spec: str, tool: str, arguments: dict[str, Any], message: str, tmp_path: Path) -> None:
    async with serve(spec, tmp_path) as (catalog, mock):
        result = await catalog.call_tool(tool, arguments)
    assert result.is_error
    assert result.content[0].text == f"Invalid arguments for tool {tool!r} {message}"
    assert mock.log() == [] and mock.answers == []


async def test_a_header_value_that_http_cannot_carry_is_a_tool_error(tmp_path: Path) -> None:
    async with serve("collisions.yaml", tmp_path) as (catalog, mock):
        result = await catalog.call_tool("upsertNote", {"id__path": 7, "X-Request-Id": "requête-1",
                                                        "id__body": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "text": "t"})
    assert result.is_error and "'X-Request-Id'" in result.content[0].text
    assert mock.log() == []
