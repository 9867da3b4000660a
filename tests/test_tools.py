from __future__ import annotations

import pytest

from converter import ArgumentError, spec_from_document
from converter.tools import META_KEY, Selection, build_plans
from converter.tools.names import MAX_NAME_LENGTH
from tests.conftest import openapi

OK = {"200": {"description": "ok"}}


def test_names_come_from_operation_id_then_method_and_path(make_plans) -> None:
    plans = make_plans({
        "/users/{id}/orders": {"get": {"responses": OK}, "post": {"operationId": "createOrder", "responses": OK}},
    })
    assert sorted(plans) == ["createOrder", "get_users_id_orders"]


def test_long_operation_ids_are_cut_to_64_with_a_stable_hash(make_spec) -> None:
    long_id = "getTheVeryLongNamedResourceCollectionForTheCurrentlyAuthenticatedUserAccount"  # 76 chars
    spec = make_spec({"/a": {"get": {"operationId": long_id, "responses": OK}}})
    plans, problems = build_plans(spec)
    name = plans[0].name
    assert len(name) == MAX_NAME_LENGTH and name.startswith("getTheVeryLong")
    assert build_plans(spec)[0][0].name == name  # deterministic
    assert problems[0].message.startswith(f"operationId {long_id!r} is longer than 64 characters")


def test_invalid_operation_ids_are_slugged_and_reported(make_spec) -> None:
    plans, problems = build_plans(make_spec({"/a": {"get": {"operationId": "list pets!", "responses": OK}}}))
    assert plans[0].name == "list_pets"
    assert str(problems[0]) == "#/paths/~1a/get: operationId 'list pets!' is not a valid tool name; using 'list_pets'"


def test_duplicate_names_get_suffixes_and_are_reported(make_spec) -> None:
    spec = make_spec({
        "/a": {"get": {"operationId": "same", "responses": OK}},
        "/b": {"get": {"operationId": "same", "responses": OK}},
    })
    plans, problems = build_plans(spec)
    assert [p.name for p in plans] == ["same", "same_2"]
    assert str(problems[0]) == "#/paths/~1b/get: tool name 'same' is already used by #/paths/~1a/get; using 'same_2'"


def test_x_mcp_name_wins(make_plans) -> None:
    assert list(make_plans({"/a": {"get": {"operationId": "x", "x-mcp-name": "nicer", "responses": OK}}})) == ["nicer"]


def test_input_schema_merges_locations_and_renames_collisions(make_plans) -> None:
    plan = make_plans({"/items/{id}": {"put": {
        "operationId": "put",
        "parameters": [
            {"name": "id", "in": "path", "schema": {"type": "string"}},
            {"name": "id", "in": "query", "schema": {"type": "integer"}},
            {"name": "X-Trace", "in": "header", "required": True, "schema": {"type": "string"}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["id", "name"],
            "properties": {"id": {"type": "string"}, "name": {"type": "string"}}}}}},
        "responses": OK,
    }}})["put"]
    schema = plan.input_schema
    assert list(schema["properties"]) == ["id__path", "id__query", "X-Trace", "id__body", "name"]
    assert schema["required"] == ["id__path", "X-Trace", "id__body", "name"]
    assert schema["additionalProperties"] is False


def test_non_object_body_is_one_body_argument(make_plans) -> None:
    plan = make_plans({"/tags": {"post": {"operationId": "p", "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "string"}}}}}, "responses": OK}}})["p"]
    assert plan.input_schema["properties"] == {"body": {"type": "array", "items": {"type": "string"}}}
    assert plan.input_schema["required"] == ["body"]


def test_optional_body_with_required_fields_is_kept_whole(make_plans) -> None:
    plan = make_plans({"/x": {"post": {"operationId": "p", "requestBody": {"content": {"application/json": {"schema": {
        "type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}}}}, "responses": OK}}})["p"]
    assert list(plan.input_schema["properties"]) == ["body"]
    assert "required" not in plan.input_schema


def test_only_reached_defs_are_attached(make_plans) -> None:
    plans = make_plans({"/a": {"post": {"operationId": "a", "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/A"}}}}, "responses": OK}}},
        components={"schemas": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/components/schemas/B"}}},
            "B": {"type": "object", "properties": {"a": {"$ref": "#/components/schemas/A"}}},
            "Unused": {"type": "string"},
        }})
    schema = plans["a"].input_schema
    assert schema["properties"] == {"b": {"$ref": "#/$defs/B"}}
    assert sorted(schema["$defs"]) == ["A", "B"]


def test_output_schema_objects_are_used_and_arrays_wrapped(make_plans) -> None:
    plans = make_plans({
        "/one": {"get": {"operationId": "one", "responses": {"200": {"description": "ok", "content": {
            "application/json": {"schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}}}},
        "/many": {"get": {"operationId": "many", "responses": {"200": {"description": "ok", "content": {
            "application/json": {"schema": {"type": "array", "items": {"type": "string"}}}}}}}},
        "/text": {"get": {"operationId": "text", "responses": {"200": {"description": "ok", "content": {
            "text/plain": {"schema": {"type": "string"}}}}}}},
    })
    assert plans["one"].output_schema == {"type": "object", "properties": {"a": {"type": "string"}}}
    assert not plans["one"].wraps_result
    assert plans["many"].output_schema == {"type": "object", "properties": {"result": {
        "type": "array", "items": {"type": "string"}}}, "required": ["result"]}
    assert plans["many"].wraps_result
    assert plans["text"].output_schema is None


def test_annotations_and_meta(make_plans) -> None:
    plans = make_plans({"/r/{id}": {
        "get": {"operationId": "g", "responses": OK},
        "delete": {"operationId": "d", "responses": OK},
        "put": {"operationId": "p", "responses": OK},
        "post": {"responses": OK},
    }})
    g, d, p, post = (plans[n].tool for n in ("g", "d", "p", "post_r_id"))
    assert (g.annotations.read_only_hint, g.annotations.idempotent_hint) == (True, True)
    assert (d.annotations.destructive_hint, d.annotations.idempotent_hint) == (True, True)
    assert (p.annotations.destructive_hint, p.annotations.idempotent_hint) == (False, True)
    assert (post.annotations.read_only_hint, post.annotations.idempotent_hint) == (False, False)
    assert g.meta == {META_KEY: {"method": "GET", "path": "/r/{id}", "operationId": "g"}}
    assert post.meta == {META_KEY: {"method": "POST", "path": "/r/{id}"}}


def test_include_and_exclude_filters(make_spec) -> None:
    spec = make_spec({
        "/a": {"get": {"operationId": "a", "tags": ["x"], "responses": OK},
               "delete": {"operationId": "del_a", "tags": ["x"], "responses": OK}},
        "/b/c": {"get": {"operationId": "b", "responses": OK}},
    })
    names = lambda **kw: [p.name for p in build_plans(spec, **kw)[0]]  # noqa: E731
    assert names(include=Selection(tags=("x",))) == ["a", "del_a"]
    assert names(include=Selection(paths=("/b/*",))) == ["b"]
    assert names(exclude=Selection(methods=("DELETE",))) == ["a", "b"]
    assert names(exclude=Selection(operations=("a",))) == ["del_a", "b"]


def test_arguments_are_validated_with_a_message_naming_the_argument(make_plans) -> None:
    plan = make_plans({"/x": {"get": {"operationId": "x", "parameters": [
        {"name": "n", "in": "query", "required": True, "schema": {"type": "integer", "maximum": 5}},
        {"name": "name", "in": "query", "schema": {"type": "string", "pattern": "^\\p{Lu}"}}],
        "responses": OK}}})["x"]
    plan.validate_arguments({"n": 5, "name": "Émile"})
    with pytest.raises(ArgumentError) as exc:
        plan.validate_arguments({"n": 6})
    assert str(exc.value) == "Invalid arguments for tool 'x' at $.n: 6 is greater than the maximum of 5"
    assert exc.value.json_path == "$.n"
    with pytest.raises(ArgumentError, match=r"at \$: 'n' is a required property"):
        plan.validate_arguments({})
    with pytest.raises(ArgumentError, match=r"'bogus' was unexpected"):
        plan.validate_arguments({"n": 1, "bogus": 1})
    with pytest.raises(ArgumentError, match=r"at \$.name: 'emile' does not match"):  # \p{Lu}: ASCII part exact
        plan.validate_arguments({"n": 1, "name": "emile"})


def test_multipart_file_fields_become_base64_strings(make_plans) -> None:
    plan = make_plans({"/upload": {"post": {"operationId": "up", "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}, "note": {"type": "string"}}}}}}, "responses": OK}}})["up"]
    assert plan.input_schema["properties"]["file"]["contentEncoding"] == "base64"
    assert plan.request.binary_fields == frozenset({"file"})


def test_inline_document_uses_the_same_converter() -> None:
    spec = spec_from_document(openapi({"/x": {"get": {"responses": OK}}}), "inline:tools", source="cfg")
    assert build_plans(spec)[0][0].name == "get_x"


def test_output_schema_inferred_from_properties_says_type_object(make_plans) -> None:
    # Found by the corpus: MCP requires `"type": "object"` at the top of an outputSchema.
    plan = make_plans({"/x": {"get": {"operationId": "x", "responses": {"200": {"description": "ok", "content": {
        "application/json": {"schema": {"properties": {"id": {"type": "string"}}}}}}}}}})["x"]
    assert plan.output_schema == {"type": "object", "properties": {"id": {"type": "string"}}}
    assert plan.tool.output_schema == plan.output_schema


@pytest.mark.parametrize("media_type", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_required_list_in_a_form_body_needs_an_item(make_plans, media_type) -> None:
    # twilio.com's required `Permission` list: [] puts no pair (or part) in the form, so the field the document
    # requires was missing from the request (issue 20)
    body = {"type": "object", "required": ["Permission", "Tags"], "properties": {
        "Permission": {"type": "array", "items": {"type": "string"}},
        "Tags": {"$ref": "#/components/schemas/Tags"}, "Note": {"type": "array", "items": {"type": "string"}}}}
    paths = {"/roles": {"post": {"operationId": "role", "requestBody": {"required": True, "content": {
        media_type: {"schema": body}}}, "responses": OK}}}
    plan = make_plans(paths, components={"schemas": {"Tags": {"type": "array", "minItems": 0, "items": {}}}})["role"]
    props = plan.input_schema["properties"]
    assert props["Permission"] == {"type": "array", "items": {"type": "string"}, "minItems": 1}
    assert props["Tags"] == {"$ref": "#/$defs/Tags", "minItems": 1}
    assert props["Note"] == {"type": "array", "items": {"type": "string"}}  # optional: [] means "not given"
    with pytest.raises(ArgumentError, match=r"at \$\.Permission: \[\] should be non-empty"):
        plan.validate_arguments({"Permission": [], "Tags": ["a"]})


@pytest.mark.parametrize("media_type", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_required_form_body_given_whole_needs_a_property(make_plans, media_type) -> None:
    # Azure ComputerVision's images: `{type: object, format: file}` under multipart, no properties, so the
    # body is one argument; `{}` makes no part and no pair, and every such call was refused (issue 20)
    paths = {"/analyze": {"post": {"operationId": "analyze", "requestBody": {"required": True, "content": {
        media_type: {"schema": {"type": "object", "format": "file"}}}}, "responses": OK},
        "put": {"operationId": "optional", "requestBody": {"content": {
            media_type: {"schema": {"type": "object"}}}}, "responses": OK}}}
    plans = make_plans(paths)
    assert plans["analyze"].input_schema["properties"]["body"] == {"type": "object", "format": "file", "minProperties": 1}
    assert plans["optional"].input_schema["properties"]["body"] == {"type": "object"}
    with pytest.raises(ArgumentError, match=r"at \$\.body: \{\} should be non-empty"):
        plans["analyze"].validate_arguments({"body": {}})
    assert plans["analyze"].request.build({"body": {"image": "x"}}, "http://up.test").content


def test_a_required_form_body_that_is_nullable_or_an_allof_still_needs_a_field(make_plans) -> None:
    # stream-io-api.com's multipart uploads: a nullable object of optional fields (given whole, as an
    # anyOf with null); mineskin.org's urlencoded upload: an allOf of a $ref and {properties}. `{}` was
    # schema-valid and made no part (refused, with an empty list of fields) or an empty form (issue 20)
    nullable = {"$ref": "#/components/schemas/Upload"}
    upload = {"type": "object", "nullable": True, "properties": {"file": {"type": "string"}, "user": {"type": "object"}}}
    options = {"type": "object", "properties": {"name": {"type": "string"}}}
    paths = {"/up": {"post": {"operationId": "up", "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": nullable}}}, "responses": OK}},
        "/gen": {"post": {"operationId": "gen", "requestBody": {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": {"allOf": [
                {"$ref": "#/components/schemas/Options"},
                {"properties": {"file": {"type": "string", "format": "binary"}}}]}}}}, "responses": OK}}}
    plans = make_plans(paths, components={"schemas": {"Upload": upload, "Options": options}})
    for name in ("up", "gen"):
        assert plans[name].input_schema["properties"]["body"]["minProperties"] == 1, name
        with pytest.raises(ArgumentError, match=r"at \$\.body: \{\} should be non-empty"):
            plans[name].validate_arguments({"body": {}})
    assert plans["up"].request.build({"body": {"file": "x"}}, "http://up.test").content
    assert plans["gen"].request.build({"body": {"name": "n"}}, "http://up.test").content == b"name=n"


def test_a_required_body_given_whole_is_never_empty(make_plans) -> None:
    # codat.io's multipart `schema: {}` took `true` (no form can carry it); cdcgov.local's required text/csv
    # body took '' (an empty body cannot be told from none)
    paths = {"/a": {"post": {"operationId": "attach", "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {}}}}, "responses": OK}},
        "/r": {"post": {"operationId": "report", "requestBody": {"required": True, "content": {
            "text/csv": {"schema": {"type": "string"}}}}, "responses": OK}},
        "/o": {"post": {"operationId": "optional", "requestBody": {"content": {
            "text/csv": {"schema": {"type": "string"}}}}, "responses": OK}}}
    plans = make_plans(paths)
    assert plans["attach"].input_schema["properties"]["body"] == {"type": "object", "minProperties": 1}
    assert plans["report"].input_schema["properties"]["body"] == {"type": "string", "minLength": 1}
    assert plans["optional"].input_schema["properties"]["body"] == {"type": "string"}
    for name, value in (("attach", True), ("attach", {}), ("report", "")):
        with pytest.raises(ArgumentError, match=r"at \$\.body"):
            plans[name].validate_arguments({"body": value})


def test_a_json_body_keeps_its_empty_lists(make_plans) -> None:
    body = {"type": "object", "required": ["ids"], "properties": {"ids": {"type": "array", "items": {}}}}
    plan = make_plans({"/j": {"post": {"operationId": "j", "requestBody": {"required": True, "content": {
        "application/json": {"schema": body}}}, "responses": OK}}})["j"]
    assert plan.input_schema["properties"]["ids"] == {"type": "array", "items": {}}


def test_a_required_field_without_a_schema_is_still_asked_for(make_plans) -> None:
    # ndhm.gov.in requires a top-level `transactionId` that only a nested object describes: flattened into
    # arguments, the body lost the requirement and went out without it (issue 20)
    body = {"type": "object", "required": ["requestId", "transactionId"], "properties": {
        "requestId": {"type": "string"}, "auth": {"type": "object"}}}
    plan = make_plans({"/n": {"post": {"operationId": "n", "requestBody": {"required": True, "content": {
        "application/json": {"schema": body}}}, "responses": OK}}})["n"]
    assert plan.input_schema["properties"]["transactionId"] == {}
    assert plan.input_schema["required"] == ["requestId", "transactionId"]
    request = plan.request.build({"requestId": "r", "transactionId": "t"}, "http://up.test")
    assert request.content == b'{"requestId":"r","transactionId":"t"}'


def test_a_required_list_or_object_parameter_needs_something_in_it(make_plans) -> None:
    # Redshift's required `TargetAction` object, given as {}: an empty list or object is undefined in a URI
    # (RFC 6570 §2.3), so nothing was sent and the document's required parameter was missing (issue 20)
    params = [{"name": "TargetAction", "in": "query", "required": True, "schema": {"type": "object", "properties": {
        "Pause": {"type": "string"}}}},
        {"name": "ids", "in": "query", "required": True, "schema": {"$ref": "#/components/schemas/Ids"}},
        {"name": "X-Tags", "in": "header", "required": True, "schema": {"type": "array", "items": {"type": "string"}}},
        {"name": "opt", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}}]
    plan = make_plans({"/s": {"get": {"operationId": "s", "parameters": params, "responses": OK}}},
                      components={"schemas": {"Ids": {"type": "array", "items": {"type": "integer"}}}})["s"]
    props = plan.input_schema["properties"]
    assert props["TargetAction"]["minProperties"] == 1
    assert props["ids"] == {"$ref": "#/$defs/Ids", "minItems": 1}
    assert props["X-Tags"]["minItems"] == 1
    assert "minItems" not in props["opt"]
    with pytest.raises(ArgumentError, match=r"at \$\.TargetAction: \{\} should be non-empty"):
        plan.validate_arguments({"TargetAction": {}, "ids": [1], "X-Tags": ["a"]})


def test_rules_about_the_whole_body_object_survive_spreading(make_plans) -> None:
    # webflow.com's PATCH bodies say minProperties 1: spread into arguments, `{}` went out and was refused
    fields = {"name": {"type": "string"}, "color": {"type": "string"}}

    def op(name: str, schema: dict) -> dict:
        return {"patch": {"operationId": name, "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "properties": fields, **schema}}}}, "responses": OK}}
    plans = make_plans({"/one": op("one", {"minProperties": 1}), "/two": op("two", {"minProperties": 2}),
                        "/max": op("max", {"maxProperties": 1})})
    assert plans["one"].input_schema["anyOf"] == [{"required": ["name"]}, {"required": ["color"]}]
    with pytest.raises(ArgumentError, match="give at least one of: name, color"):
        plans["one"].validate_arguments({})
    assert list(plans["two"].input_schema["properties"]) == ["body"]  # kept whole, with its rule
    assert plans["max"].input_schema["properties"]["body"]["maxProperties"] == 1


def test_a_required_form_body_needs_a_field_that_puts_something_in_it(make_plans) -> None:
    # seldon.local: a required urlencoded body whose one field `json` is an object: `{"json": {}}` made no pair
    paths = {"/aggregate": {"post": {"operationId": "agg", "requestBody": {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
            "json": {"type": "object"}}}}}}, "responses": OK}}}
    plan = make_plans(paths)["agg"]
    assert plan.input_schema["anyOf"] == [{"required": ["json"], "properties": {"json": {"minProperties": 1}}}]
    with pytest.raises(ArgumentError, match=r"at \$\.json: \{\} should be non-empty"):
        plan.validate_arguments({"json": {}})


def test_a_required_body_is_not_null_and_a_required_urlencoded_object_field_not_empty(make_plans) -> None:
    # stream-io-api.com's required upload body is a nullable schema (null sent nothing); salesloft.com's
    # required urlencoded field `recording` is an object ({} put no pair in the form)
    upload = {"type": "object", "nullable": True, "properties": {"file": {"type": "string"}}, "required": ["file"]}
    paths = {"/up": {"post": {"operationId": "up", "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Upload"}}}}, "responses": OK}},
        "/in": {"post": {"operationId": "inline", "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "array", "items": {}, "nullable": True}}}}, "responses": OK}},
        "/calls": {"post": {"operationId": "calls", "requestBody": {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["recording"], "properties": {
                "recording": {"type": "object"}, "to": {"type": "string"}}}}}}, "responses": OK}}}
    plans = make_plans(paths, components={"schemas": {"Upload": upload}})
    assert plans["up"].input_schema["properties"]["body"] == {"$ref": "#/$defs/Upload", "not": {"type": "null"}}
    assert plans["inline"].input_schema["properties"]["body"] == {"type": "array", "items": {}}
    for name, args in (("up", {"body": None}), ("inline", {"body": None}), ("calls", {"recording": {}})):
        with pytest.raises(ArgumentError):
            plans[name].validate_arguments(args)
    plans["calls"].validate_arguments({"recording": {"a": 1}})
