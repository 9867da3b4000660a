"""Build a tool's input and output JSON Schemas from an `Operation`.

Path, query, header and cookie parameters and the request body become one object schema. An
object body is flattened into the top level (its properties become arguments); any other body
is one `body` argument. A name used in two locations becomes `name__location` in every location
(fastmcp's convention). Only the `$defs` a schema reaches are attached to it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from converter.invoke.media import names_decoded_codings
from converter.models import JsonSchema, Operation, Slot, SlotLocation

BODY: Final = "body"
MAX_OUTPUT_SCHEMA_BYTES: Final = 32_000

_FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")


class DefsIndex:
    """Finds the `$defs` a schema reaches; each definition's own references are computed once."""

    def __init__(self, defs: Mapping[str, JsonSchema]) -> None:
        self.defs = defs
        self._direct: dict[str, frozenset[str]] = {}
        self._sizes: dict[str, int] = {}

    def size(self, key: str) -> int:
        """Serialized size of one definition (computed once)."""
        size = self._sizes.get(key)
        if size is None:
            size = self._sizes[key] = len(json.dumps(self.defs[key], separators=(",", ":")))
        return size

    def closure(self, schema: Any) -> dict[str, JsonSchema]:
        todo = list(_refs(schema))
        reached: dict[str, JsonSchema] = {}
        while todo:
            key = todo.pop()
            if key in reached or key not in self.defs:
                continue
            reached[key] = self.defs[key]
            direct = self._direct.get(key)
            if direct is None:
                direct = self._direct[key] = frozenset(_refs(self.defs[key]))
            todo.extend(direct)
        return dict(sorted(reached.items()))

    def deref(self, schema: Any) -> Any:
        """Follow a top-level `{"$ref": "#/$defs/x"}` (chains included) to the schema it names."""
        seen: set[str] = set()
        while isinstance(schema, dict) and set(schema) == {"$ref"} and schema["$ref"].startswith("#/$defs/"):
            key = schema["$ref"][len("#/$defs/"):]
            if key in seen or key not in self.defs:
                break
            seen.add(key)
            schema = self.defs[key]
        return schema


def build_input_schema(op: Operation, defs: DefsIndex) -> tuple[JsonSchema, tuple[Slot, ...]]:
    """Return the tool's inputSchema and the map saying where each argument goes."""
    entries: list[tuple[str, SlotLocation, Any, bool]] = []  # wire name, location, schema, required
    for param in op.parameters:
        schema = param.schema
        if param.required and param.content_type is None:
            # A null value is undefined (RFC 6570 §2.3): nothing could be sent for a required parameter
            # (gettyimages.com's path `board_id`: `{type: string, nullable: true}`).
            schema = _without_null(schema)
            # RFC 6570 §2.3: an empty list or object is undefined, so nothing is sent for it; a required
            # parameter must therefore hold something.
            if _is_array(schema, defs):
                schema = {**schema, "minItems": max(1, int(defs.deref(schema).get("minItems", 0) or 0))}
            elif _is_object(schema, defs):
                schema = {**schema, "minProperties": max(1, int(defs.deref(schema).get("minProperties", 0) or 0))}
            elif param.location == "path" and _is_string(schema, defs):
                # An empty path segment cannot be sent (brex.io's `type`: `/pep/{type}` would lose a segment),
                # so the request builder refuses it; the schema says so, where a client can see it.
                schema = {**schema, "minLength": max(1, int(defs.deref(schema).get("minLength", 0) or 0))}
        if param.location == "header" and param.name.lower() == "accept-encoding" and param.content_type is None:
            schema = _decodable_codings(schema, defs)
        entries.append((param.name, param.location, schema, param.required))
    body = op.request_body
    if body is not None:
        fields = _flattenable(body.schema, body.media_type, body.required, defs)
        if fields is None:
            schema = _required_body(body.schema, defs) if body.required else body.schema
            top = defs.deref(schema)
            if _is_form(body.media_type) and top == {}:
                schema = {"type": "object"}  # codat.io's multipart `schema: {}`: only an object makes a form
            if body.required and _is_form(body.media_type) and (_is_object(schema, defs)
                                                                 or _is_object(body.schema, defs)):
                # A required form body given whole (Azure's `{type: object, format: file}` multipart
                # images, stream-io-api.com's nullable upload objects): `{}` makes no part and no pair
                # (RFC 2046 §5.1.1), so it needs a property.
                least = defs.deref(schema).get("minProperties", 0) if isinstance(defs.deref(schema), dict) else 0
                schema = {**schema, "minProperties": max(1, int(least or 0))}
            elif body.required and _is_string(schema, defs):
                # cdcgov.local's required text/csv body: an empty body cannot be told from none at all.
                schema = {**schema, "minLength": max(1, int(defs.deref(schema).get("minLength", 0) or 0))}
            if body.description and isinstance(schema, dict) and "description" not in schema:
                schema = {**schema, "description": body.description}
            entries.append((BODY, "body", schema, body.required))
        else:
            body_properties, body_required = fields
            is_form = _is_form(body.media_type)
            for name, schema in body_properties.items():
                if is_form and name in body_required and _is_array(schema, defs):
                    # An empty list puts no pair (or part) in a form: the required field would be missing.
                    schema = {**schema, "minItems": max(1, int(defs.deref(schema).get("minItems", 0) or 0))}
                elif is_form and name in body_required and _is_object(schema, defs) \
                        and body.media_type.startswith("application/x-www-form-urlencoded"):
                    # Nor does an empty object in an urlencoded form (salesloft.com's required `recording`).
                    schema = {**schema, "minProperties": max(1, int(defs.deref(schema).get("minProperties", 0) or 0))}
                entries.append((name, "body_field", schema, name in body_required))

    counts: dict[str, int] = {}
    for name, *_ in entries:
        counts[name] = counts.get(name, 0) + 1
    properties: dict[str, Any] = {}
    required: list[str] = []
    slots: list[Slot] = []
    for name, location, schema, is_required in entries:
        argument = name if counts[name] == 1 else f"{name}__{'body' if location == 'body_field' else location}"
        properties[argument] = schema
        if is_required:
            required.append(argument)
        slots.append(Slot(argument=argument, location=location, name=name))

    result: JsonSchema = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    body_fields = [slot.argument for slot in slots if slot.location == "body_field"]
    if body is not None and body.required and body_fields \
            and not any(argument in required for argument in body_fields) \
            and (_is_form(body.media_type) or defs.deref(body.schema).get("minProperties") == 1):
        # A required form body whose fields are all optional: an empty form cannot be told from no
        # body at all (and a multipart body has at least one part, RFC 2046 §5.1.1), so one field is needed;
        # so it is for a JSON body with minProperties 1 (webflow.com's PATCH bodies), once spread.
        result["anyOf"] = [_given(argument, properties[argument], defs) for argument in body_fields]
    result["additionalProperties"] = False
    reached = defs.closure(properties)
    if reached:
        result["$defs"] = reached
    return result, tuple(slots)


def build_output_schema(op: Operation, defs: DefsIndex) -> tuple[JsonSchema | None, bool]:
    """Return the outputSchema (or None) and whether results are wrapped as `{"result": ...}`.

    MCP needs an object at the top (through 2025-11-25), so any other JSON response is wrapped.
    A schema larger than MAX_OUTPUT_SCHEMA_BYTES is left out: it would cost clients more context
    than it is worth.
    """
    response = op.response
    if response is None or response.schema is None:
        return None, False
    top = defs.deref(response.schema)
    if isinstance(top, dict) and _is_object_schema(top):
        schema: JsonSchema = dict(top)
        schema.setdefault("type", "object")  # MCP: an outputSchema is a "type": "object" schema
        wrapped = False
    else:
        schema = {"type": "object", "properties": {"result": response.schema}, "required": ["result"]}
        wrapped = True
    schema.pop("$defs", None)
    reached = defs.closure(schema)
    # Sizes of definitions are cached: on Stripe, dumping each tool's whole schema cost 3.5 s.
    size = len(json.dumps(schema, separators=(",", ":"))) + sum(defs.size(key) + len(key) + 4 for key in reached)
    if size > MAX_OUTPUT_SCHEMA_BYTES:
        return None, False
    if reached:
        schema["$defs"] = reached
    return schema, wrapped


def _flattenable(
    schema: Any, media_type: str, required: bool, defs: DefsIndex
) -> tuple[dict[str, Any], set[str]] | None:
    """The properties of an object body that can be spread into the arguments, or None."""
    top = defs.deref(schema)
    if not isinstance(top, dict) or not isinstance(top.get("properties"), dict) or not top["properties"]:
        return None
    if top.get("type", "object") != "object":
        return None  # xtrf.eu's CategoriesDTO: `type: array` with `properties` (only objects are spread)
    if any(k in top for k in ("allOf", "anyOf", "oneOf", "not", "if", "patternProperties", "maxProperties",
                              "dependentRequired", "dependentSchemas", "propertyNames", "unevaluatedProperties")):
        return None  # rules about the body object as a whole: spread into arguments they would be lost
    if isinstance(top.get("minProperties"), int) and top["minProperties"] > 1:
        return None  # (minProperties 1 is kept: build_input_schema asks for one field)
    inner_required = {n for n in top.get("required", ()) if isinstance(n, str)}
    is_form = _is_form(media_type)
    if not required and inner_required and not is_form:
        return None  # an optional body with required fields cannot be spread: keep it whole
    properties = dict(top["properties"])
    if top.get("additionalProperties", True) is not False:
        for name in sorted(inner_required - set(properties)):
            properties[name] = {}  # required, with no schema of its own: any value
    return properties, inner_required if required or is_form else set()


def _is_form(media_type: str) -> bool:
    return media_type.split(";", 1)[0].strip().lower() in _FORM_TYPES


def _is_array(schema: Any, defs: DefsIndex) -> bool:
    top = defs.deref(schema)
    kind = top.get("type") if isinstance(top, dict) else None
    found = top.get("anyOf") if isinstance(top, dict) else None
    branches: list[Any] = found if isinstance(found, list) else []
    return kind == "array" or (isinstance(kind, list) and "array" in kind) or \
        (isinstance(top, dict) and kind is None and "items" in top) or \
        any(isinstance(b, dict) and b.get("type") == "array" for b in branches)  # a nullable array


# A content coding the server decodes in bounded steps (converter.bodies), with an optional weight; the
# request builder refuses any other (invoke.media.check_codings). Lower case: ECMA-262 has no (?i).
_CODING: Final = r"\s*(?:gzip|x-gzip|deflate|identity|\*)\s*(?:;\s*q\s*=\s*[0-9.]{1,5}\s*)?"


def _decodable_codings(schema: Any, defs: DefsIndex) -> Any:
    """A declared Accept-Encoding names only codings this server decodes: the schema says so.

    beezup.com's is any list of strings; a value such as 'br' was refused at call time, after the
    schema had accepted it. An `enum` keeps the values the server decodes.
    """
    top = defs.deref(schema)
    if not isinstance(top, dict):
        return schema
    if isinstance(top.get("enum"), list):  # conjur.local: ["application/json", "base64"] (see build_plans)
        kept = [v for v in top["enum"] if not isinstance(v, str) or names_decoded_codings(v)]
        return schema if len(kept) == len(top["enum"]) or not kept else {"allOf": [schema, {"enum": kept}]}
    if top.get("type") == "string":
        rule = {"pattern": f"^{_CODING}(?:,{_CODING})*$"}
        return {**schema, **rule} if "pattern" not in schema and "$ref" not in schema else {"allOf": [schema, rule]}
    if _is_array(schema, defs) and not (isinstance(top.get("items"), dict) and "enum" in top["items"]):
        item_rule = {"type": "string", "pattern": f"^{_CODING}$"}
        items = top.get("items")
        return {**schema, "items": {"allOf": [items, item_rule]} if isinstance(items, dict) and items else item_rule}
    return schema


def _required_body(schema: Any, defs: DefsIndex) -> Any:
    """A required body given whole cannot be null: nothing would be sent (stream-io-api.com's nullable
    FileUploadRequest). The null alternative is taken out, or refused beside a `$ref`."""
    if isinstance(schema, dict) and "$ref" not in schema:
        return _without_null(schema)
    top = defs.deref(schema)
    if isinstance(schema, dict) and "not" not in schema and _without_null(top) is not top:
        return {**schema, "not": {"type": "null"}}
    return schema


def _without_null(schema: Any) -> Any:
    """`schema` without its null alternative (`type: [.., "null"]`, or an anyOf branch `{type: null}`)."""
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if isinstance(kind, list) and "null" in kind and len(kind) > 1:
        rest = [k for k in kind if k != "null"]
        return {**schema, "type": rest[0] if len(rest) == 1 else rest}
    branches = schema.get("anyOf")
    if not isinstance(branches, list):
        return schema
    rest = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
    if not rest or len(rest) == len(branches):
        return schema
    others = {k: v for k, v in schema.items() if k != "anyOf"}
    if len(rest) == 1 and isinstance(rest[0], dict) and not set(rest[0]) & set(others):
        return {**others, **rest[0]}
    return {**others, "anyOf": rest}


def _is_string(schema: Any, defs: DefsIndex) -> bool:
    top = defs.deref(schema)
    return isinstance(top, dict) and top.get("type") == "string"


def _is_object(schema: Any, defs: DefsIndex) -> bool:
    """An object schema, a nullable one (`anyOf` of objects and `{type: null}`: OAS 3.0's
    `nullable: true` once converted, stream-io-api.com's upload bodies), or an `allOf` of objects."""
    top = defs.deref(schema)
    if not isinstance(top, dict):
        return False
    kind = top.get("type")
    if kind == "object" or (kind is None and isinstance(top.get("properties"), dict)):
        return True
    members = top.get("allOf")
    if kind is None and isinstance(members, list) and members:  # mineskin.org's form: allOf [$ref, {properties}]
        tops = [defs.deref(m) for m in members]
        return any(_is_object(m, defs) for m in members) and all(
            isinstance(m, dict) and m.get("type") in (None, "object") for m in tops)
    branches = top.get("anyOf")
    if not isinstance(branches, list) or "type" in top:
        return False
    objects = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
    return bool(objects) and len(objects) < len(branches) and all(_is_object(b, defs) for b in objects)


def _given(argument: str, schema: Any, defs: DefsIndex) -> JsonSchema:
    """A schema saying that `argument` is given with a value that puts at least one field in a form."""
    if _is_array(schema, defs):  # one part (or pair) per item: an empty list adds nothing to the form
        return {"required": [argument], "properties": {argument: {"minItems": 1}}}
    if _is_object(schema, defs):  # seldon.local's `json` field given as {}: an empty form, no body at all
        return {"required": [argument], "properties": {argument: {"minProperties": 1}}}
    return {"required": [argument]}


def _is_object_schema(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "object":
        return True
    return kind is None and isinstance(schema.get("properties"), dict) and not any(
        k in schema for k in ("anyOf", "oneOf", "allOf")
    )


def _refs(node: Any) -> set[str]:
    """The `#/$defs/<key>` keys referenced anywhere in `node` (not following them)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                found.add(ref[len("#/$defs/"):])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
