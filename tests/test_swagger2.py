"""Swagger 2.0 -> OpenAPI 3.0.3 conversion (converter.spec.swagger2)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import OpenAPIV30SpecValidator, validate

from converter.errors import SpecError
from converter.spec.swagger2 import convert_swagger2

SPECS = Path(__file__).parent / "specs"


def _doc(paths: str = "{}", **top: Any) -> dict[str, Any]:
    """Return a minimal Swagger 2.0 document with `paths` (YAML) and other top-level keys."""
    return {"swagger": "2.0", "info": {"title": "T", "version": "1"}, "paths": yaml.safe_load(paths), **top}


def _convert(doc: dict[str, Any]) -> dict[str, Any]:
    """Convert `doc`, check the input is untouched and the result is a valid OpenAPI 3.0 document."""
    before = copy.deepcopy(doc)
    out = convert_swagger2(doc)
    assert doc == before
    validate(out, cls=OpenAPIV30SpecValidator)
    return out


def test_top_level_fields_and_extensions_are_kept() -> None:
    doc = _doc(
        """
        x-paths-ext: {a: 1}  # a mapping: openapi-spec-validator reads every Paths value as a Path Item
        /a:
          x-item-ext: 2
          get:
            x-op-ext: 3
            security: [{oauth: [read]}]
            responses: {"200": {description: ok, x-resp-ext: 4}, x-responses-ext: 5}
        """,
        tags=[{"name": "a", "description": "A", "x-tag": True}],
        externalDocs={"url": "https://docs.example"},
        security=[{"key": []}],
        consumes=["application/json"],
        produces=["application/json"],
        securityDefinitions={"key": {"type": "apiKey", "name": "k", "in": "query"},
                             "oauth": {"type": "oauth2", "flow": "application",
                                       "tokenUrl": "https://t.example", "scopes": {"read": "r"}}},
        **{"x-root": {"a": [1]}},
    )
    out = _convert(doc)
    assert list(out) == [
        "openapi", "info", "externalDocs", "tags", "security", "paths", "components", "x-root",
    ]
    assert out["openapi"] == "3.0.3"
    assert out["info"] == doc["info"]
    assert out["tags"] == [{"name": "a", "description": "A", "x-tag": True}]
    assert out["security"] == [{"key": []}]
    assert out["x-root"] == {"a": [1]}
    assert out["paths"] == {
        "x-paths-ext": {"a": 1},
        "/a": {"x-item-ext": 2, "get": {
            "x-op-ext": 3,
            "security": [{"oauth": ["read"]}],
            "responses": {"200": {"description": "ok", "x-resp-ext": 4}, "x-responses-ext": 5},
        }},
    }


def test_input_is_not_mutated_and_shares_no_objects_with_the_result() -> None:
    doc = yaml.safe_load((SPECS / "swagger2-petstore.yaml").read_text())
    before = copy.deepcopy(doc)
    out = convert_swagger2(doc)
    out["info"]["title"] = "changed"
    out["components"]["schemas"]["Pet"]["properties"]["name"]["example"] = "changed"
    out["paths"]["/pets"]["get"]["tags"].append("changed")
    assert doc == before


@pytest.mark.parametrize(
    ("top", "servers"),
    [
        ({"host": "api.example.com", "basePath": "/v1", "schemes": ["http", "https"]},
         [{"url": "http://api.example.com/v1"}, {"url": "https://api.example.com/v1"}]),
        ({"host": "api.example.com:8443", "basePath": "/"}, [{"url": "https://api.example.com:8443"}]),
        ({"host": "api.example.com"}, [{"url": "https://api.example.com"}]),
        ({"basePath": "/v2/", "schemes": ["http"]}, [{"url": "/v2"}]),
        ({}, None),
    ],
)
def test_host_base_path_and_schemes_become_servers(top: dict[str, Any], servers: Any) -> None:
    assert _convert(_doc(**top)).get("servers") == servers


def test_operation_schemes_become_operation_servers() -> None:
    doc = _doc("{/a: {get: {schemes: [wss], responses: {'200': {description: ok}}}}}",
               host="h.example", basePath="/b", schemes=["https"])
    assert _convert(doc)["paths"]["/a"]["get"] == {
        "servers": [{"url": "wss://h.example/b"}], "responses": {"200": {"description": "ok"}},
    }


def test_definitions_become_component_schemas_with_oas3_keywords() -> None:
    definitions = yaml.safe_load(
        """
        Node:
          type: object
          discriminator: kind
          required: [kind]
          properties:
            kind: {type: string}
            parent: {$ref: '#/definitions/Node'}
            maybe: {$ref: '#/definitions/Node', x-nullable: true, description: d}
            note: {type: string, x-nullable: true, x-extra: 1}
            blob: {type: file}
            $ref: {type: string}
            tags: {type: array, items: {$ref: '#/definitions/Tag'}}
            map: {type: object, additionalProperties: {$ref: '#/definitions/Tag'}}
            any: {type: object, additionalProperties: true}
        Tag:
          allOf: [{$ref: '#/definitions/Base'}, {type: object, default: {a: 1}}]
        Base: {type: object}
        """
    )
    out = _convert(_doc(definitions=definitions))
    assert out["components"]["schemas"] == yaml.safe_load(
        """
        Node:
          type: object
          discriminator: {propertyName: kind}
          required: [kind]
          properties:
            kind: {type: string}
            parent: {$ref: '#/components/schemas/Node'}
            maybe: {description: d, anyOf: [{$ref: '#/components/schemas/Node'}, {type: string, nullable: true, enum: [null]}]}
            note: {type: string, nullable: true, x-extra: 1}
            blob: {type: string, format: binary}
            $ref: {type: string}
            tags: {type: array, items: {$ref: '#/components/schemas/Tag'}}
            map: {type: object, additionalProperties: {$ref: '#/components/schemas/Tag'}}
            any: {type: object, additionalProperties: true}
        Tag:
          allOf: [{$ref: '#/components/schemas/Base'}, {type: object, default: {a: 1}}]
        Base: {type: object}
        """
    )


def test_refs_inside_example_enum_and_default_values_are_data_and_left_alone() -> None:
    data = {"$ref": "#/definitions/A"}
    doc = _doc(definitions={"A": {"type": "object", "example": data, "default": data, "enum": [data]}})
    # not validated: openapi-spec-validator would follow these $refs too
    assert convert_swagger2(doc)["components"]["schemas"]["A"] == {
        "type": "object", "example": data, "default": data, "enum": [data],
    }


def test_refs_to_other_files_keep_the_file_part() -> None:
    doc = _doc(
        """
        /a:
          parameters: [{$ref: 'common.yaml#/parameters/Limit'}]
          get:
            responses:
              '200': {description: ok, schema: {$ref: 'models.yaml#/definitions/Pet/properties/id'}}
              '404': {$ref: 'common.yaml#/responses/NotFound'}
              '500': {description: x, schema: {$ref: 'whole-file.yaml'}}
        """
    )
    out = convert_swagger2(doc)  # not validated: the validator would fetch the other files
    item = out["paths"]["/a"]
    assert item["parameters"] == [{"$ref": "common.yaml#/components/parameters/Limit"}]
    assert item["get"]["responses"] == {
        "200": {"description": "ok", "content": {"application/json": {
            "schema": {"$ref": "models.yaml#/components/schemas/Pet/properties/id"}}}},
        "404": {"$ref": "common.yaml#/components/responses/NotFound"},
        "500": {"description": "x", "content": {"application/json": {"schema": {"$ref": "whole-file.yaml"}}}},
    }


def test_body_parameter_becomes_request_body_for_each_consumed_type() -> None:
    paths = """
      /a:
        post:
          consumes: [application/json, text/plain]
          parameters:
            - {name: payload, in: body, required: true, description: d, x-b: 1, schema: {type: string}}
          responses: {'200': {description: ok}}
        put:
          parameters: [{name: payload, in: body, schema: {type: string}}]
          responses: {'200': {description: ok}}
    """
    out = _convert(_doc(paths, consumes=["application/xml"]))
    assert out["paths"]["/a"]["post"]["requestBody"] == {
        "description": "d",
        "content": {"application/json": {"schema": {"type": "string"}},
                    "text/plain": {"schema": {"type": "string"}}},
        "required": True,
        "x-codegen-request-body-name": "payload",
        "x-b": 1,
    }
    assert out["paths"]["/a"]["put"]["requestBody"] == {
        "content": {"application/xml": {"schema": {"type": "string"}}},
        "x-codegen-request-body-name": "payload",
    }
    assert "consumes" not in out and "produces" not in out["paths"]["/a"]["post"]


def test_body_parameter_defaults_to_json_and_sits_before_responses() -> None:
    out = _convert(_doc("{/a: {post: {parameters: [{name: b, in: body, schema: {}}], "
                        "responses: {'200': {description: ok}}, x-after: 1}}}"))
    post = out["paths"]["/a"]["post"]
    assert list(post) == ["requestBody", "responses", "x-after"]
    assert post["requestBody"]["content"] == {"application/json": {"schema": {}}}


def test_form_data_parameters_become_one_urlencoded_object_body() -> None:
    paths = """
      /a:
        post:
          parameters:
            - {name: q, in: query, type: string}
            - {name: name, in: formData, type: string, required: true, description: The name, x-f: 1}
            - {name: ids, in: formData, type: array, items: {type: integer}}
            - {name: tags, in: formData, type: array, items: {type: string}, collectionFormat: multi}
            - {name: mode, in: formData, type: string, enum: [a, b], default: a, x-nullable: true}
          responses: {'200': {description: ok}}
    """
    post = _convert(_doc(paths))["paths"]["/a"]["post"]
    assert post["parameters"] == [{"name": "q", "in": "query", "schema": {"type": "string"}}]
    assert post["requestBody"] == yaml.safe_load(
        """
        required: true
        content:
          application/x-www-form-urlencoded:
            schema:
              type: object
              properties:
                name: {type: string, x-f: 1, description: The name}
                ids: {type: array, items: {type: integer}}
                tags: {type: array, items: {type: string}}
                mode: {type: string, enum: [a, b], default: a, nullable: true}
              required: [name]
            encoding:
              ids: {style: form, explode: false}
              tags: {style: form, explode: true}
        """
    )


def test_file_parameter_makes_the_form_body_multipart() -> None:
    paths = """
      /a:
        post:
          consumes: [application/x-www-form-urlencoded]
          parameters:
            - {name: file, in: formData, type: file, required: true}
            - {name: note, in: formData, type: string}
          responses: {'200': {description: ok}}
    """
    assert _convert(_doc(paths))["paths"]["/a"]["post"]["requestBody"] == {
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"}, "note": {"type": "string"}},
            "required": ["file"],
        }}},
        "required": True,
    }


def test_form_body_uses_every_form_type_the_operation_consumes() -> None:
    paths = """
      /a:
        post:
          consumes: [multipart/form-data, application/x-www-form-urlencoded, application/json]
          parameters: [{name: n, in: formData, type: string}]
          responses: {'200': {description: ok}}
    """
    schema = {"type": "object", "properties": {"n": {"type": "string"}}}
    assert _convert(_doc(paths))["paths"]["/a"]["post"]["requestBody"] == {
        "content": {
            "multipart/form-data": {"schema": schema},
            "application/x-www-form-urlencoded": {"schema": schema},
        },
    }


def test_non_body_parameter_moves_type_and_constraints_into_schema() -> None:
    paths = """
      /a/{id}:
        get:
          parameters:
            - {name: id, in: path, required: true, type: string, format: uuid, pattern: '^[a-f0-9-]+$',
               x-p: 1}
            - name: n
              in: query
              description: d
              allowEmptyValue: true
              type: integer
              minimum: 1
              maximum: 10
              exclusiveMaximum: true
              multipleOf: 1
              default: 5
              x-nullable: true
            - {name: X-Trace, in: header, type: string, enum: [a], minLength: 1, maxLength: 3}
          responses: {'200': {description: ok}}
    """
    assert _convert(_doc(paths))["paths"]["/a/{id}"]["get"]["parameters"] == [
        {"name": "id", "in": "path", "required": True, "x-p": 1,
         "schema": {"type": "string", "format": "uuid", "pattern": "^[a-f0-9-]+$"}},
        {"name": "n", "in": "query", "description": "d", "allowEmptyValue": True,
         "schema": {"type": "integer", "minimum": 1, "maximum": 10, "exclusiveMaximum": True,
                    "multipleOf": 1, "default": 5, "nullable": True}},
        {"name": "X-Trace", "in": "header",
         "schema": {"type": "string", "enum": ["a"], "minLength": 1, "maxLength": 3}},
    ]


@pytest.mark.parametrize(
    ("location", "collection_format", "style"),
    [
        ("query", None, {"style": "form", "explode": False}),  # OAS 2.0 default is csv
        ("query", "csv", {"style": "form", "explode": False}),
        ("query", "ssv", {"style": "spaceDelimited", "explode": False}),
        ("query", "tsv", {"style": "form", "explode": False, "x-collection-format": "tsv"}),
        ("query", "pipes", {"style": "pipeDelimited", "explode": False}),
        ("query", "multi", {"style": "form", "explode": True}),
        ("path", "csv", {"style": "simple", "explode": False}),
        ("path", "pipes", {"style": "simple", "explode": False, "x-collection-format": "pipes"}),
        ("header", None, {"style": "simple", "explode": False}),
        ("header", "ssv", {"style": "simple", "explode": False, "x-collection-format": "ssv"}),
    ],
)
def test_collection_format_becomes_style_and_explode(
    location: str, collection_format: str | None, style: dict[str, Any]
) -> None:
    param: dict[str, Any] = {"name": "p", "in": location, "required": True, "type": "array",
                             "items": {"type": "string", "maxLength": 3}}
    if collection_format:
        param["collectionFormat"] = collection_format
    path = "/a/{p}" if location == "path" else "/a"
    doc = _doc(paths=f"{{'{path}': {{get: {{responses: {{'200': {{description: ok}}}}}}}}}}")
    doc["paths"][path]["get"]["parameters"] = [param]
    assert _convert(doc)["paths"][path]["get"]["parameters"] == [{
        "name": "p", "in": location, "required": True,
        "schema": {"type": "array", "items": {"type": "string", "maxLength": 3}}, **style,
    }]


def test_nested_collection_format_is_kept_as_an_extension() -> None:
    paths = """
      /a:
        get:
          parameters:
            - {name: m, in: query, type: array, collectionFormat: pipes,
               items: {type: array, collectionFormat: csv, items: {type: integer}}}
          responses: {'200': {description: ok}}
    """
    assert _convert(_doc(paths))["paths"]["/a"]["get"]["parameters"][0]["schema"] == {
        "type": "array",
        "items": {"type": "array", "x-collection-format": "csv", "items": {"type": "integer"}},
    }


def test_path_level_parameters_are_converted_and_bodies_merged_into_each_operation() -> None:
    paths = """
      /a/{id}:
        parameters:
          - {name: id, in: path, required: true, type: integer}
          - {name: note, in: formData, type: string, description: path-level}
          - {name: color, in: query, type: string}
        post:
          parameters:
            - {name: note, in: formData, type: integer, description: operation-level}
            - {name: color, in: query, type: string, enum: [red]}
          responses: {'200': {description: ok}}
        put:
          consumes: [multipart/form-data]
          responses: {'200': {description: ok}}
        get:
          responses: {'200': {description: ok}}
    """
    item = _convert(_doc(paths))["paths"]["/a/{id}"]
    assert item["parameters"] == [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
        {"name": "color", "in": "query", "schema": {"type": "string"}},
    ]
    assert item["post"]["parameters"] == [
        {"name": "color", "in": "query", "schema": {"type": "string", "enum": ["red"]}},
    ]
    assert item["post"]["requestBody"] == {"content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": {"note": {"type": "integer", "description": "operation-level"}}}}}}
    assert item["put"]["requestBody"] == {"content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": {"note": {"type": "string", "description": "path-level"}}}}}}
    assert item["get"]["requestBody"] == {"content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": {"note": {"type": "string", "description": "path-level"}}}}}}


def test_path_level_body_parameter_becomes_each_operations_request_body() -> None:
    paths = """
      /a:
        parameters: [{name: b, in: body, required: true, schema: {$ref: '#/definitions/A'}}]
        put: {responses: {'200': {description: ok}}}
        patch: {produces: [text/plain], responses: {'200': {description: ok}}}
    """
    item = _convert(_doc(paths, definitions={"A": {"type": "object"}}))["paths"]["/a"]
    body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}},
            "required": True, "x-codegen-request-body-name": "b"}
    assert "parameters" not in item
    assert item["put"]["requestBody"] == body
    assert item["patch"]["requestBody"] == body


def test_shared_parameters_become_components_and_form_data_ones_are_inlined() -> None:
    parameters = yaml.safe_load(
        """
        Limit: {name: limit, in: query, type: integer, default: 10}
        Ids: {name: ids, in: header, type: array, items: {type: string}}
        Pet: {name: pet, in: body, required: true, schema: {$ref: '#/definitions/Pet'}}
        Upload: {name: upload, in: formData, type: file}
        """
    )
    paths = """
      /a:
        get:
          parameters: [{$ref: '#/parameters/Limit'}, {$ref: '#/parameters/Ids'}]
          responses: {'200': {description: ok}}
        post:
          parameters: [{$ref: '#/parameters/Pet'}]
          responses: {'200': {description: ok}}
        put:
          consumes: [application/xml]
          parameters: [{$ref: '#/parameters/Pet'}]
          responses: {'200': {description: ok}}
      /b:
        post:
          parameters: [{$ref: '#/parameters/Upload'}]
          responses: {'200': {description: ok}}
    """
    out = _convert(_doc(paths, parameters=parameters, definitions={"Pet": {"type": "object"}}))
    assert out["components"]["parameters"] == {
        "Limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 10}},
        "Ids": {"name": "ids", "in": "header", "schema": {"type": "array", "items": {"type": "string"}},
                "style": "simple", "explode": False},
    }
    assert out["components"]["requestBodies"] == {"Pet": {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}},
        "required": True, "x-codegen-request-body-name": "pet",
    }}
    paths_out = out["paths"]
    assert paths_out["/a"]["get"]["parameters"] == [
        {"$ref": "#/components/parameters/Limit"}, {"$ref": "#/components/parameters/Ids"},
    ]
    assert paths_out["/a"]["post"]["requestBody"] == {"$ref": "#/components/requestBodies/Pet"}
    # this operation consumes another type, so the shared body is inlined with it
    assert paths_out["/a"]["put"]["requestBody"]["content"] == {
        "application/xml": {"schema": {"$ref": "#/components/schemas/Pet"}},
    }
    assert paths_out["/b"]["post"]["requestBody"] == {"content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": {"upload": {"type": "string", "format": "binary"}}}}}}


def test_response_schema_headers_and_examples_become_content() -> None:
    paths = """
      /a:
        get:
          produces: [application/json, application/xml]
          responses:
            '200':
              description: ok
              x-r: 1
              schema: {$ref: '#/definitions/A'}
              headers:
                X-Rate: {type: integer, format: int32, description: left, x-h: 1}
                X-Ids: {type: array, items: {type: string}, collectionFormat: pipes}
              examples:
                application/json: {id: 1}
                text/csv: "id\\n1"
            '204': {description: none, examples: {text/plain: empty}}
            default: {description: error}
    """
    out = _convert(_doc(paths, definitions={"A": {"type": "object"}}))
    responses = out["paths"]["/a"]["get"]["responses"]
    schema = {"$ref": "#/components/schemas/A"}
    assert responses == {
        "200": {
            "description": "ok",
            "content": {
                "application/json": {"schema": schema, "example": {"id": 1}},
                "application/xml": {"schema": schema},
                "text/csv": {"schema": schema, "example": "id\n1"},
            },
            "headers": {
                "X-Rate": {"description": "left", "x-h": 1, "schema": {"type": "integer", "format": "int32"}},
                "X-Ids": {"schema": {"type": "array", "items": {"type": "string"}},
                          "style": "simple", "explode": False, "x-collection-format": "pipes"},
            },
            "x-r": 1,
        },
        "204": {"description": "none", "content": {"text/plain": {"example": "empty"}}},
        "default": {"description": "error"},
    }


def test_shared_responses_become_components_and_are_inlined_for_other_produces() -> None:
    paths = """
      /a:
        get: {responses: {'404': {$ref: '#/responses/NotFound'}}}
        put:
          produces: [text/plain]
          responses: {'404': {$ref: '#/responses/NotFound'}, '410': {$ref: '#/responses/Gone'}}
    """
    responses = {"NotFound": {"description": "gone", "schema": {"type": "string"}},
                 "Gone": {"$ref": "#/responses/NotFound"}}
    out = _convert(_doc(paths, responses=responses))
    assert out["components"]["responses"] == {
        "NotFound": {"description": "gone", "content": {"application/json": {"schema": {"type": "string"}}}},
        "Gone": {"$ref": "#/components/responses/NotFound"},
    }
    assert out["paths"]["/a"]["get"]["responses"] == {"404": {"$ref": "#/components/responses/NotFound"}}
    assert out["paths"]["/a"]["put"]["responses"] == {
        "404": {"description": "gone", "content": {"text/plain": {"schema": {"type": "string"}}}},
        "410": {"$ref": "#/components/responses/Gone"},  # a chain of shared responses is left as is
    }


def test_security_definitions_become_security_schemes() -> None:
    definitions = yaml.safe_load(
        """
        basic: {type: basic, description: Basic auth, x-s: 1}
        key: {type: apiKey, name: X-Key, in: header}
        implicit: {type: oauth2, flow: implicit, authorizationUrl: 'https://a.example/auth',
                   scopes: {r: read}}
        password: {type: oauth2, flow: password, tokenUrl: 'https://a.example/token', scopes: {}}
        app: {type: oauth2, flow: application, tokenUrl: 'https://a.example/token', scopes: {w: write}}
        code: {type: oauth2, flow: accessCode, authorizationUrl: 'https://a.example/auth',
               tokenUrl: 'https://a.example/token'}
        """
    )
    out = _convert(_doc(securityDefinitions=definitions, security=[{"code": ["r"]}, {"basic": []}]))
    assert out["security"] == [{"code": ["r"]}, {"basic": []}]
    assert out["components"]["securitySchemes"] == yaml.safe_load(
        """
        basic: {type: http, scheme: basic, description: Basic auth, x-s: 1}
        key: {type: apiKey, name: X-Key, in: header}
        implicit:
          type: oauth2
          flows: {implicit: {authorizationUrl: 'https://a.example/auth', scopes: {r: read}}}
        password: {type: oauth2, flows: {password: {tokenUrl: 'https://a.example/token', scopes: {}}}}
        app:
          type: oauth2
          flows: {clientCredentials: {tokenUrl: 'https://a.example/token', scopes: {w: write}}}
        code:
          type: oauth2
          flows:
            authorizationCode:
              authorizationUrl: 'https://a.example/auth'
              tokenUrl: 'https://a.example/token'
              scopes: {}
        """
    )


def test_unquoted_yaml_version_is_accepted() -> None:
    doc = yaml.safe_load("swagger: 2.0\ninfo: {title: T, version: '1'}\npaths: {}")
    assert doc["swagger"] == 2.0
    assert _convert(doc)["openapi"] == "3.0.3"


_NOT_SWAGGER2 = "#/swagger: expected a Swagger 2.0 document (swagger: '2.0')"


@pytest.mark.parametrize(
    ("doc", "message", "pointer"),
    [
        ({"openapi": "3.0.0"}, f"{_NOT_SWAGGER2}, got None", "#/swagger"),
        (["swagger"], f"{_NOT_SWAGGER2}, got 'list'", "#/swagger"),
        (_doc(securityDefinitions={"s": {"type": "oauth2", "flow": "device"}}),
         "#/securityDefinitions/s: unknown oauth2 flow 'device'; OAS 2.0 allows basic, apiKey and oauth2 "
         "with flow implicit, password, application or accessCode", "#/securityDefinitions/s"),
        (_doc(securityDefinitions={"s": {"type": "bearer"}}),
         "#/securityDefinitions/s: unknown type 'bearer'; OAS 2.0 allows basic, apiKey and oauth2 "
         "with flow implicit, password, application or accessCode", "#/securityDefinitions/s"),
    ],
)
def test_documents_that_cannot_be_converted_raise_spec_error(doc: Any, message: str, pointer: str) -> None:
    with pytest.raises(SpecError) as exc:
        convert_swagger2(doc, source="api.yaml")
    assert str(exc.value) == message
    assert exc.value.pointer == pointer
    assert exc.value.source == "api.yaml"


def test_petstore_converts_to_a_valid_openapi_3_document() -> None:
    doc = yaml.safe_load((SPECS / "swagger2-petstore.yaml").read_text())
    out = _convert(doc)
    assert out["servers"] == [{"url": "https://petstore.example.com/v2"}, {"url": "http://petstore.example.com/v2"}]
    assert out["x-api-id"] == "petstore-v2"
    components = out["components"]
    assert set(components) == {"schemas", "responses", "parameters", "requestBodies", "securitySchemes"}
    category = components["schemas"]["Category"]["properties"]["parent"]
    assert category == {"$ref": "#/components/schemas/Category"}
    assert components["schemas"]["Pet"]["discriminator"] == {"propertyName": "petType"}
    assert components["securitySchemes"]["petstore_auth"] == {"type": "oauth2", "flows": {"implicit": {
        "authorizationUrl": "https://petstore.example.com/oauth/authorize",
        "scopes": {"write:pets": "modify pets in your account", "read:pets": "read your pets"},
    }}}
    assert components["securitySchemes"]["api_key"] == {"type": "apiKey", "name": "api_key", "in": "header"}
    pets = out["paths"]["/pets"]
    assert pets["get"]["parameters"][0] == {"$ref": "#/components/parameters/limit"}
    assert pets["get"]["parameters"][1]["style"] == "form" and pets["get"]["parameters"][1]["explode"] is True
    assert pets["put"]["requestBody"] == {"$ref": "#/components/requestBodies/PetBody"}
    assert list(pets["post"]["requestBody"]["content"]) == ["application/json", "application/xml"]
    assert list(pets["post"]["responses"]["405"]["content"]) == ["application/json", "application/xml"]
    assert pets["post"]["security"] == [{"petstore_auth": ["write:pets", "read:pets"]}]
    form = out["paths"]["/pets/{petId}"]["post"]["requestBody"]["content"]
    assert list(form) == ["application/x-www-form-urlencoded"]
    upload = out["paths"]["/pets/{petId}/photos"]
    assert [p["name"] for p in upload["parameters"]] == ["petId"]
    assert upload["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"] == {
        "additionalMetadata": {"type": "string", "description": "Additional data to pass to the server"},
        "file": {"type": "string", "format": "binary", "description": "The photo to upload"},
    }
    order_ids = out["paths"]["/store/orders/{orderIds}"]["get"]["parameters"][0]
    assert (order_ids["style"], order_ids["explode"]) == ("simple", False)


@pytest.mark.parametrize(
    ("doc", "message", "pointer"),
    [
        (_doc("{/a/b: {post: {parameters: [{name: a, in: body, schema: {}}, "
              "{name: b, in: formData, type: string}], responses: {}}}}"),
         "#/paths/~1a~1b/post: has 1 body and 1 formData parameters; OAS 2.0 allows at most one body "
         "parameter and no formData next to it", "#/paths/~1a~1b/post"),
        (_doc("{/a: {get: {parameters: [{in: query, type: string}], responses: {}}}}"),
         "#/paths/~1a/get/parameters/0: a parameter needs a string name and an in",
         "#/paths/~1a/get/parameters/0"),
        (_doc("{/a: {get: {parameters: {name: q}, responses: {}}}}"),
         "#/paths/~1a/get/parameters: expected a list, got dict", "#/paths/~1a/get/parameters"),
        (_doc("{/a: [get]}"), "#/paths/~1a: expected an object, got list", "#/paths/~1a"),
    ],
)
def test_parts_that_cannot_be_converted_are_marked_and_skipped_by_the_loader(doc: Any, message: str, pointer: str) -> None:
    """One broken operation must not cost the user the rest of the API (STYLE.md, errors rule 3)."""
    from converter.spec import spec_from_document

    doc = dict(doc)
    doc["paths"] = {**doc["paths"], "/ok": {"get": {"operationId": "fine", "responses": {"200": {"description": "ok"}}}}}
    spec = spec_from_document(doc, "file:///virtual/s.json", source="s.json")
    assert [op.operation_id for op in spec.operations] == ["fine"]
    [problem] = [p for p in spec.problems if p.fatal]
    assert problem.pointer.startswith(pointer.rsplit("/parameters", 1)[0])
    assert message.split(": ", 1)[1] in problem.message and problem.message.endswith("; skipped")
