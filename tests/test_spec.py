from __future__ import annotations

import json
from pathlib import Path

import pytest

from converter import SpecError, load_spec
from tests.conftest import openapi


def write(tmp_path: Path, name: str, doc: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if name.endswith(".json") else __import__("yaml").safe_dump(doc))
    return str(path)


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        load_spec(str(tmp_path / "nope.yaml"))
    assert str(exc.value) == f"{tmp_path / 'nope.yaml'}: no such file"


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("openapi: 3.0.3\ninfo: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad.yaml: is not valid JSON or YAML at line 3"):
        load_spec(str(path))


def test_not_openapi_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no 'openapi' or 'swagger' version field"):
        load_spec(write(tmp_path, "x.json", {"hello": "world"}))


def test_unsupported_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"OpenAPI version '4.0.0' is not supported"):
        load_spec(write(tmp_path, "x.json", {"openapi": "4.0.0", "info": {}, "paths": {}}))


def test_non_http_url_scheme_is_refused() -> None:
    with pytest.raises(SpecError, match="only files and http"):
        load_spec("ftp://example.com/spec.yaml")


def test_relative_file_refs_are_followed(tmp_path: Path) -> None:
    write(tmp_path, "common.yaml", {"components": {"schemas": {"Pet": {"type": "object", "properties": {"name": {"type": "string"}}}}}})
    main = openapi({"/pets": {"post": {
        "operationId": "addPet",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "common.yaml#/components/schemas/Pet"}}}},
        "responses": {"200": {"description": "ok"}},
    }}})
    spec = load_spec(write(tmp_path, "main.yaml", main))
    body = spec.operations[0].request_body
    assert body is not None and body.schema == {"$ref": "#/$defs/Pet"}
    assert spec.input_defs["Pet"] == {"type": "object", "properties": {"name": {"type": "string"}}}


def test_unresolvable_ref_skips_only_that_operation(make_spec) -> None:
    spec = make_spec({
        "/a": {"get": {"operationId": "a", "parameters": [{"$ref": "#/components/parameters/Nope"}], "responses": {}}},
        "/b": {"get": {"operationId": "b", "responses": {}}},
    })
    assert [op.operation_id for op in spec.operations] == ["b"]
    [problem] = [p for p in spec.problems if p.fatal]
    assert problem.pointer == "#/paths/~1a/get"
    assert "points at nothing" in problem.message and problem.message.endswith("; skipped")


def test_recursive_schema_is_kept_as_a_def(make_spec) -> None:
    spec = make_spec({"/n": {"post": {
        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}},
        "responses": {"200": {"description": "ok"}},
    }}}, components={"schemas": {"Node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}}}})
    assert spec.input_defs["Node"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}


def test_openapi_30_keywords_become_2020_12(make_spec) -> None:
    spec = make_spec({"/x": {"get": {"parameters": [{"name": "n", "in": "query", "schema": {
        "type": "integer", "nullable": True, "minimum": 0, "exclusiveMinimum": True, "example": 3,
        "x-internal": 1, "enum": [1, 2]}}], "responses": {}}}})
    assert spec.operations[0].parameters[0].schema == {
        "type": ["integer", "null"], "exclusiveMinimum": 0, "examples": [3], "enum": [1, 2, None]}


def test_read_only_properties_are_not_asked_for_in_requests(make_spec) -> None:
    spec = make_spec({"/o": {"post": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}},
        "responses": {"201": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}}},
    }}}, components={"schemas": {"Order": {"type": "object", "required": ["id", "item", "secret"], "properties": {
        "id": {"type": "string", "readOnly": True}, "item": {"type": "string"},
        "secret": {"type": "string", "writeOnly": True}}}}})
    assert spec.input_defs["Order"] == {"type": "object", "required": ["item", "secret"], "properties": {
        "item": {"type": "string"}, "secret": {"type": "string", "writeOnly": True}}}
    assert spec.output_defs["Order"] == {"type": "object", "required": ["id", "item"], "properties": {
        "id": {"type": "string", "readOnly": True}, "item": {"type": "string"}}}


def test_invalid_pattern_is_dropped_with_a_warning_but_ecma_classes_are_kept(make_spec) -> None:
    spec = make_spec({"/x": {"get": {"parameters": [
        {"name": "a", "in": "query", "schema": {"type": "string", "pattern": "^\\p{L}+$"}},
        {"name": "b", "in": "query", "schema": {"type": "string", "pattern": "([unclosed"}},
    ], "responses": {}}}})
    a, b = spec.operations[0].parameters
    assert a.schema["pattern"] == "^\\p{L}+$"
    assert "pattern" not in b.schema
    assert any("is not a valid regular expression" in p.message for p in spec.problems)


def test_servers_variables_are_substituted(make_spec) -> None:
    spec = make_spec({}, servers=[{"url": "https://{region}.api.test/{v}", "variables": {
        "region": {"default": "eu"}, "v": {"default": "v2"}}}])
    assert spec.servers == ("https://eu.api.test/v2",)


def test_undeclared_path_parameter_is_synthesised_with_a_warning(make_spec) -> None:
    spec = make_spec({"/u/{id}": {"get": {"responses": {}}}})
    [param] = spec.operations[0].parameters
    assert (param.name, param.location, param.required) == ("id", "path", True)
    assert any("path parameter 'id' is not declared" in p.message for p in spec.problems)


def test_operation_level_parameters_override_path_level(make_spec) -> None:
    spec = make_spec({"/x": {
        "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}],
        "get": {"parameters": [{"name": "q", "in": "query", "required": True, "schema": {"type": "integer"}}], "responses": {}},
    }})
    [param] = spec.operations[0].parameters
    assert param.required and param.schema == {"type": "integer"}


def test_x_mcp_exclude_and_reserved_headers_are_honoured(make_spec) -> None:
    spec = make_spec({
        "/hidden": {"get": {"x-mcp-exclude": True, "responses": {}}},
        "/x": {"get": {"parameters": [{"name": "Authorization", "in": "header", "schema": {"type": "string"}}],
                       "responses": {}}},
    })
    assert [op.path for op in spec.operations] == ["/x"]
    assert spec.operations[0].parameters == ()


def test_openapi_31_document_with_type_lists(make_spec) -> None:
    spec = make_spec({"/x": {"get": {"parameters": [{"name": "n", "in": "query", "schema": {"type": ["string", "null"]}}],
                                     "responses": {}}}}, version="3.1.0")
    assert spec.operations[0].parameters[0].schema == {"type": ["string", "null"]}
