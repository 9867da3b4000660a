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
    # single-type anyOf branches (single-type dialects reject type lists); the enum keeps its meaning in
    # the null branch too (null is refused, as OAS 3.0.3 says: see the next test)
    assert spec.operations[0].parameters[0].schema == {"examples": [3], "anyOf": [
        {"type": "integer", "exclusiveMinimum": 0, "enum": [1, 2]}, {"type": "null", "enum": [1, 2]}]}


def test_nullable_means_what_openapi_303_says_and_nothing_in_31(make_spec) -> None:
    # OAS 3.0.3 `nullable`: "A true value adds "null" to the allowed types specified by the type keyword, only if
    # type is explicitly defined within the same Schema Object. Other Schema Object constraints retain their defined
    # behavior" (an enum without null refuses it; a $ref's siblings are ignored anyway). OAS 3.1 has no `nullable`.
    # Documents relying on more (telnyx.com's nullable enums, codat.io's 3.1 `nullable`) sent nulls their API
    # description refuses (issue 20).
    schemas = {"S": {"type": "object", "properties": {"a": {"type": "string"}}}}

    def body_property(prop: dict, version: str = "3.0.3") -> dict:
        spec = make_spec({"/x": {"post": {"requestBody": {"content": {"application/json": {"schema": {
            "type": "object", "properties": {"p": prop}}}}}, "responses": {}}}},
            components={"schemas": schemas}, version=version)
        return spec.operations[0].request_body.schema["properties"]["p"]

    null = {"type": "null"}
    assert body_property({"type": "string", "nullable": True}) == {"anyOf": [{"type": "string"}, null]}
    assert body_property({"type": "string", "enum": ["a", "b"], "nullable": True}) == {
        "anyOf": [{"type": "string", "enum": ["a", "b"]}, {**null, "enum": ["a", "b"]}]}  # null still refused
    assert body_property({"type": "string", "enum": ["a", None], "nullable": True}) == {
        "anyOf": [{"type": "string", "enum": ["a", None]}, {**null, "enum": ["a", None]}]}
    assert body_property({"nullable": True, "allOf": [{"$ref": "#/components/schemas/S"}]}) == {
        "allOf": [{"$ref": "#/$defs/S"}]}
    assert body_property({"$ref": "#/components/schemas/S", "nullable": True}) == {"$ref": "#/$defs/S"}
    assert body_property({"type": "string", "nullable": True}, "3.1.0") == {"type": "string"}
    # the 3.0.3 way to let a $ref be null (what the Swagger 2.0 conversion makes of x-nullable)
    assert body_property({"anyOf": [{"$ref": "#/components/schemas/S"}, {
        "type": "string", "nullable": True, "enum": [None]}]}) == {
        "anyOf": [{"$ref": "#/$defs/S"}, {"anyOf": [{"type": "string", "enum": [None]}, {**null, "enum": [None]}]}]}


def test_read_only_through_all_of_is_not_asked_for_in_requests(make_spec) -> None:
    # asana.com: the flag on an allOf member of the property; Azure: a property readOnly in the allOf
    # base that the schema declares again without the flag (openapi-core refused every such request)
    spec = make_spec({"/p": {"put": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Profile"}}}},
        "responses": {"200": {"description": "ok"}},
    }}}, components={"schemas": {
        "Resource": {"type": "object", "properties": {"name": {"type": "string", "readOnly": True},
                                                      "location": {"type": "string"}}},
        "Compact": {"type": "object", "properties": {"gid": {"type": "string"}}},
        "Profile": {"type": "object", "required": ["name", "owner", "etag"], "allOf": [{"$ref": "#/components/schemas/Resource"}],
                    "properties": {"name": {"type": "string"}, "etag": {"type": "string"},
                                   "owner": {"allOf": [{"$ref": "#/components/schemas/Compact"}, {"readOnly": True}]}}}}})
    assert spec.input_defs["Profile"] == {"type": "object", "required": ["etag"], "allOf": [{"$ref": "#/$defs/Resource"}],
                                          "properties": {"etag": {"type": "string"}}}
    assert spec.input_defs["Resource"] == {"type": "object", "properties": {"location": {"type": "string"}}}


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


def test_invalid_pattern_is_dropped_with_a_warning_but_ecma_classes_are_kept_portably(make_spec) -> None:
    spec = make_spec({"/x": {"get": {"parameters": [
        {"name": "a", "in": "query", "schema": {"type": "string", "pattern": "^\\p{L}+$"}},
        {"name": "b", "in": "query", "schema": {"type": "string", "pattern": "([unclosed"}},
    ], "responses": {}}}})
    a, b = spec.operations[0].parameters
    assert a.schema["pattern"] == "^[A-Za-z\\u0080-\U0010ffff]+$"  # see converter/spec/pattern.py
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
    assert spec.operations[0].parameters[0].schema == {"anyOf": [{"type": "string"}, {"type": "null"}]}


def test_type_lists_become_single_type_branches_that_accept_exactly_the_same(make_spec) -> None:
    import jsonschema

    original = {"type": ["string", "integer", "null"], "description": "d", "maxLength": 3, "minimum": 1,
                "enum": ["ab", 5, None, "toolong"]}
    spec = make_spec({"/x": {"get": {"parameters": [{"name": "n", "in": "query", "schema": original}],
                                     "responses": {}}}}, version="3.1.0")
    converted = spec.operations[0].parameters[0].schema
    assert converted["description"] == "d" and [b["type"] for b in converted["anyOf"]] == ["string", "integer", "null"]
    assert "maxLength" not in converted["anyOf"][2]  # no-ops for null are left out of its branch
    for value in ("ab", 5, None, "toolong", 0, "zz", 2.5, [], True):
        assert jsonschema.Draft202012Validator(converted).is_valid(value) == \
            jsonschema.Draft202012Validator(original).is_valid(value), value


# -- defects found by the real-world corpus (tests/test_corpus.py, bench/corpus.py), and their kin ----


def _param_schema(make_spec, schema: dict) -> tuple[dict, list]:
    spec = make_spec({"/x": {"get": {"parameters": [{"name": "p", "in": "query", "schema": schema}], "responses": {}}}})
    return spec.operations[0].parameters[0].schema, [p.message for p in spec.problems]


@pytest.mark.parametrize(("pattern", "portable"), [
    ("\\A[a-z]+\\z", "^[a-z]+$"),                                   # Ruby/Java/Python anchors (AWS)
    ("^[\\w-.+]+@[\\w-.+]+$", "^[\\w\\-.+]+@[\\w\\-.+]+$"),        # Annex B literal '-' next to \w
    ("[^/:|\\000-\\037]+", "[^/:|\\x00-\\x1f]+"),                  # octal escapes
    ("who's {Name}?", "who's \\{Name\\}?"),                          # a brace that is not a repetition
    ("^[\\p{Alnum}_:.\\-]+$", "^[0-9A-Za-z_:.\\-]+$"),               # Java's POSIX classes are ASCII
    ("^(?<year>\\d{4})$", "^(\\d{4})$"),                             # named groups: (?<n>) vs (?P<n>)
    ("[\\p{L}\\p{N}_.:/=+\\-@]*", "[A-Za-z\\u0080-\U0010ffff0-9_.:/=+\\-@]*"),  # AWS tag values
    ("^[^\\p{C}]*$", "^[^\\x00-\\x1f\\x7f]*$"),                       # negated: ASCII part only, never stricter
    ("^(\\/(?!\\.)+[^/]+){1,4}$", "^(\\/(?!\\.)[^/]+){1,4}$"),            # a repeated assertion is itself (AWS EFS)
    ("a(?=b)*c(?<!x){0,2}", "ac"),                                     # ... and repeated from zero, nothing
])
def test_patterns_are_rewritten_for_every_regex_dialect(make_spec, pattern: str, portable: str) -> None:
    import re

    import jsonschema
    import jsonschema_rs

    schema, problems = _param_schema(make_spec, {"type": "string", "pattern": pattern})
    assert schema["pattern"] == portable and problems == []
    re.compile(portable)
    jsonschema.Draft202012Validator.check_schema(schema)  # its `regex` format is Python's `re`
    jsonschema_rs.Draft202012Validator(schema)


def test_unicode_property_approximation_accepts_what_the_original_accepts(make_spec) -> None:
    import regex

    schema, _ = _param_schema(make_spec, {"type": "string", "pattern": "^[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*$"})
    original, portable = regex.compile("^[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*$"), regex.compile(schema["pattern"])
    for value in ("Zoë 42", "東京/タワー", "key:value=1", "a@b.c", "ünïcödé"):
        assert original.match(value) and portable.match(value)
    assert not portable.match("<script>") and not portable.match("a;b")  # the ASCII rules still hold


@pytest.mark.parametrize(("pattern", "why"), [
    ("[a-zA-Z]{1-70}", "has '{1-70}', which is not a valid repetition"),
    ("^[a-z]{,2}$", "has '{,2}$', which is not a valid repetition"),
    ("[\\u0020-\\uD7FF\\uE000-\\uFFFD\\uD800\\uDBFF-\\uDC00\\uDFFF]*", "matches lone surrogates, which most "
                                                                        "validators cannot represent"),
    ("[\\p{Print}&&[^|:/]]+", "uses class intersection '&&', which ECMA-262 (without the v flag) does not have"),
    ("(?i)abc", "uses the group syntax '(?i)', which ECMA-262 does not have"),
    ("a*+", "uses a possessive quantifier, which ECMA-262 does not have"),
    ("^\\p{Klingon}+$", "uses the Unicode property 'Klingon', which is not known"),
])
def test_patterns_no_dialect_reads_alike_are_left_out_with_the_reason(make_spec, pattern: str, why: str) -> None:
    schema, problems = _param_schema(make_spec, {"type": "string", "pattern": pattern})
    assert "pattern" not in schema
    assert problems == [f"pattern {pattern!r} {why}; left out of the tool schema"]


def test_a_pattern_the_argument_validator_cannot_compile_is_left_out(make_spec, monkeypatch) -> None:
    """Whatever jsonschema-rs release is installed refuses (its limits change between releases:
    0.61 compiles `^.{0,262144}$`, earlier ones did not), such a pattern is left out and reported.
    The refusal is made on purpose here, for one pattern every regex engine accepts."""
    import jsonschema_rs

    from converter.spec import pattern as patterns

    refused = "^[a-z]{2,9}-refused$"
    real = jsonschema_rs.Draft202012Validator

    def refusing(schema: dict, *args: object, **kwargs: object) -> object:
        if schema.get("pattern") == refused:
            raise ValueError("Regular expression is too large\n(the rest of the report)")
        return real(schema, *args, **kwargs)

    monkeypatch.setattr(jsonschema_rs, "Draft202012Validator", refusing)
    patterns._portable.cache_clear()
    try:
        schema, problems = _param_schema(make_spec, {"type": "string", "pattern": refused})
    finally:
        patterns._portable.cache_clear()  # the verdict for this pattern must not outlive the patch
    assert schema == {"type": "string"}
    assert problems == [f"pattern {refused!r} cannot be compiled by jsonschema-rs (Regular expression is too large); "
                        "left out of the tool schema"]


def test_a_pattern_no_regex_engine_reads_is_left_out(make_spec) -> None:
    """An unterminated class is invalid in ECMA-262, Python and Rust alike: no release changes that."""
    schema, problems = _param_schema(make_spec, {"type": "string", "pattern": "^[a-z"})
    assert schema == {"type": "string"}
    assert len(problems) == 1 and problems[0].startswith("pattern '^[a-z' ")
    assert problems[0].endswith("; left out of the tool schema")


def test_pattern_properties_keys_are_made_portable_too(make_spec) -> None:
    schema, problems = _param_schema(make_spec, {"type": "object", "patternProperties": {
        "\\A[a-z]+\\z": {"type": "string"}, "[a-z]{1-3}": {"type": "integer"}}})
    assert schema["patternProperties"] == {"^[a-z]+$": {"type": "string"}}
    assert problems == ["pattern '[a-z]{1-3}' has '{1-3}', which is not a valid repetition; left out of the tool "
                        "schema"]


def test_keyword_values_outside_the_meta_schema_are_fixed_or_dropped(make_spec) -> None:
    schema, problems = _param_schema(make_spec, {
        "type": "string", "maxLength": "255", "minLength": -1, "multipleOf": 0, "uniqueItems": "true",
        "maximum": "10", "description": 5, "required": ["a", "a"], "examples": {"one": {"value": "x"}}})
    assert schema == {"type": "string", "maxLength": 255, "uniqueItems": True, "maximum": 10, "required": ["a"]}
    assert problems == ["minLength -1 is not a non-negative integer; ignored",
                        "multipleOf 0 is not a number greater than 0; ignored",
                        "description 5 is not a string; ignored"]


def test_schema_ref_to_a_missing_component_accepts_anything_and_keeps_the_operation(make_spec) -> None:
    spec = make_spec({"/x": {"post": {
        "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
            "a": {"$ref": "#/components/schemas/Gone"}, "b": {"type": "string"}}}}}},
        "responses": {}}}})
    [op] = spec.operations
    assert op.request_body is not None and op.request_body.schema["properties"]["a"] == {}
    [problem] = spec.problems
    assert not problem.fatal
    assert problem.message == "$ref '#/components/schemas/Gone' points at nothing; any value is accepted there"


def test_non_string_property_names_from_yaml_become_strings(make_spec) -> None:
    schema, _ = _param_schema(make_spec, {"type": "object", "properties": {200: {"type": "string"}, True: {}}})
    assert list(schema["properties"]) == ["200", "True"]


def test_extensions_in_paths_are_not_paths(make_spec) -> None:
    spec = make_spec({"x-codegen-contextRoot": "/apis/registry", "/a": {"get": {"responses": {}}}})
    assert [op.path for op in spec.operations] == ["/a"] and spec.problems == ()


def test_nameless_parameter_is_ignored_and_the_operation_kept(make_spec) -> None:
    spec = make_spec({"/a": {"get": {"parameters": [{"name": "", "in": "query", "schema": {"type": "string"}},
                                                    {"name": "q", "in": "query"}], "responses": {}}}})
    [op] = spec.operations
    assert [p.name for p in op.parameters] == ["q"]
    assert [(p.pointer, p.message, p.fatal) for p in spec.problems] == [
        ("#/paths/~1a/get/parameters/0", "a parameter needs a non-empty string 'name', not ''; ignored", False)]


def test_request_body_without_content_is_no_body(make_spec) -> None:
    spec = make_spec({"/a": {"post": {"requestBody": {"content": {}, "required": False}, "responses": {}}}})
    [op] = spec.operations
    assert op.request_body is None
    assert [(p.message, p.fatal) for p in spec.problems] == [
        ("has no media types in 'content'; the operation is called without a body", False)]


def test_yaml_dates_stay_strings_as_in_json(tmp_path: Path) -> None:
    # A YAML timestamp read as a `date` would reach tool schemas as a value JSON cannot carry.
    path = tmp_path / "dates.yaml"
    path.write_text("""
openapi: 3.0.3
info: {title: t, version: 2024-01-01}
paths:
  /a:
    get:
      operationId: getA
      parameters:
        - {name: since, in: query, schema: {type: string, format: date, default: 2021-02-03, example: !!timestamp 2020-01-01}}
      responses: {"200": {description: ok}}
""")
    spec = load_spec(str(path))
    assert spec.version == "2024-01-01"
    schema = spec.operations[0].parameters[0].schema
    assert schema["default"] == "2021-02-03"
    assert json.loads(json.dumps(schema)) == schema


def test_bodies_a_media_type_cannot_carry_are_refused_or_reported(make_spec) -> None:
    # libretranslate: a multipart body whose schema is a string; no form can carry it, so every call failed
    # with "give at least one of:" and nothing after the colon (issue 20)
    def body(media_type: str, schema: dict) -> dict:
        return {"post": {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}},
                         "responses": {}}}

    spec = make_spec({
        "/form": body("multipart/form-data", {"type": "string"}),
        "/urlencoded": body("application/x-www-form-urlencoded", {"type": "array", "items": {}}),
        "/xml": body("text/xml", {"type": "object", "properties": {"a": {"type": "string"}}}),
        "/bytes": body("application/octet-stream", {"type": "object"}),
        "/file": body("application/octet-stream", {"type": "string", "format": "binary"}),
        "/ok": body("multipart/form-data", {"type": "object", "properties": {"a": {"type": "string"}}}),
    })
    assert [op.path for op in spec.operations] == ["/xml", "/bytes", "/file", "/ok"]
    assert [(p.pointer, p.message, p.fatal) for p in spec.problems] == [
        ("#/paths/~1form/post", "its multipart/form-data body carries fields (an object), not type 'string'; "
                                "skipped", True),
        ("#/paths/~1urlencoded/post", "its application/x-www-form-urlencoded body carries fields (an object), "
                                      "not type 'array'; skipped", True),
        ("#/paths/~1xml/post/requestBody", "the body is an object but its media type text/xml has no JSON "
                                           "form; it is sent as JSON text", False),
        ("#/paths/~1bytes/post/requestBody", "the body is an object but its media type application/octet-stream "
                                             "has no JSON form; it is sent as JSON text", False),
    ]


def test_parameters_no_openapi_style_can_serialize_are_reported(make_spec) -> None:
    # AWS's `Tags` (a list of {Key, Value} in the query) and sinao.app's `filters`: OAS styles serialize
    # primitives, lists of primitives and flat objects only; what the tool sends for the rest is said in check
    spec = make_spec({"/t": {"get": {"parameters": [
        {"name": "Tags", "in": "query", "schema": {"type": "array", "items": {"allOf": [
            {"$ref": "#/components/schemas/Tag"}, {"xml": {"name": "Tag"}}]}}},
        {"name": "grid", "in": "query", "schema": {"type": "array", "items": {"type": "array", "items": {}}}},
        {"name": "target", "in": "query", "schema": {"type": "object", "properties": {"resize": {"type": "object"}}}},
        {"name": "flat", "in": "query", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
        {"name": "ids", "in": "query", "schema": {"type": "array", "items": {"type": "integer"}}},
        {"name": "json", "in": "query", "content": {"application/json": {"schema": {"type": "array", "items": {
            "type": "object"}}}}},
    ], "responses": {}}}}, components={"schemas": {"Tag": {"type": "object", "properties": {"Key": {"type": "string"}}}}})
    assert [(p.pointer, p.message) for p in spec.problems] == [
        ("#/paths/~1t/get/parameters/0", "no OpenAPI style serializes a list of objects (query parameter 'Tags'); "
                                         "the tool sends each of them as JSON text"),
        ("#/paths/~1t/get/parameters/1", "no OpenAPI style serializes a list of lists (query parameter 'grid'); "
                                         "the tool sends each of them as JSON text"),
        ("#/paths/~1t/get/parameters/2", "no OpenAPI style serializes an object with objects or lists in it (query "
                                         "parameter 'target'); the tool sends each of them as JSON text"),
    ]


def test_exploded_object_parameters_whose_keys_clash_are_reported(make_spec) -> None:
    # sinao.app: the exploded object `movements` has a property `type`, and `type` is a parameter of its own:
    # `?type=sales&type=bank_entry` cannot be told apart by any server
    spec = make_spec({"/r": {"post": {"parameters": [
        {"name": "type", "in": "query", "schema": {"type": "string"}},
        {"name": "movements", "in": "query", "schema": {"type": "object", "properties": {
            "type": {"type": "string"}, "amount": {"type": "number"}}}},
        {"name": "page", "in": "query", "style": "deepObject", "schema": {"type": "object", "properties": {
            "type": {"type": "string"}}}},
    ], "responses": {}}}})
    assert [(p.pointer, p.message) for p in spec.problems] == [
        ("#/paths/~1r/post", "query parameters 'movements' and 'type' both put 'type' in the query (an exploded "
                             "object's properties are query keys of their own); the upstream cannot tell them apart")]
