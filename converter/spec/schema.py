"""Convert OpenAPI 3.0/3.1 schema objects to JSON Schema 2020-12 for tool schemas.

Every `$ref` to a schema becomes `{"$ref": "#/$defs/<key>"}` and its target is converted once
and stored under that key, so recursive schemas work and each tool can later take only the
definitions it reaches. Request-side and response-side variants are kept apart because
`readOnly` properties must not be asked for in requests and `writeOnly` ones never come back.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import unquote, urldefrag

from converter.errors import SpecError
from converter.models import JsonSchema, Problem
from converter.spec.keywords import check_keywords
from converter.spec.pattern import portable_pattern
from converter.spec.resolve import Resolver

Mode = Literal["in", "out"]

_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_ONE = frozenset(
    {"items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
     "unevaluatedItems", "unevaluatedProperties", "additionalItems", "contentSchema"}
)
# OpenAPI-only or identity keywords that would change meaning (or just add bulk) in a tool schema.
_DROPPED = frozenset(
    {"discriminator", "xml", "externalDocs", "example", "nullable", "$schema", "$id", "$anchor",
     "$dynamicAnchor", "$dynamicRef", "$comment", "$defs", "definitions", "$vocabulary"}
)
_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_DEPTH = 256
_MAX_ALL_OF = 16  # nested allOf levels looked through for readOnly/writeOnly (a loop ends here)


class SchemaConverter:
    """Converts schemas of one document set, collecting the definitions they reference."""

    def __init__(self, resolver: Resolver, *, is_31: bool) -> None:
        self._resolver = resolver
        self._is_31 = is_31
        self.defs: dict[Mode, dict[str, JsonSchema]] = {"in": {}, "out": {}}
        self.problems: list[Problem] = []
        self._keys: dict[str, str] = {}  # absolute ref URI -> def key
        self._taken: set[str] = set()
        self._added: list[tuple[Mode, str]] = []  # definitions added by the conversion under way, in order
        self._depth = 0

    def convert(self, node: Any, base: str, mode: Mode, where: str) -> Any:
        """Return the JSON Schema 2020-12 form of the schema `node` found in document `base`.

        Args:
            node: the OpenAPI schema object (or boolean schema).
            base: URI of the document the node is in (for relative `$ref`s).
            mode: "in" for request schemas, "out" for response schemas.
            where: JSON Pointer of the node, used in problem messages.
        """
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict):
            self.problems.append(Problem(where, f"a schema must be an object, not {type(node).__name__}; ignored"))
            return {}
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise SpecError(f"{where}: schema is nested more than {_MAX_DEPTH} levels deep", pointer=where)
            return self._convert_object(node, base, mode, where)
        finally:
            self._depth -= 1

    def ref(self, ref: Any, base: str, mode: Mode) -> JsonSchema:
        """Register the schema behind `ref` as a definition and return a reference to it."""
        target, uri = self._resolver.lookup(ref, base)
        key = self._keys.get(uri)
        if key is None:
            key = self._new_key(uri)
        defs = self.defs[mode]
        if key not in defs:
            if isinstance(target, dict) and "$ref" in target:
                # A schema that is only another $ref: follow the chain now, so that one that never reaches
                # a schema (S -> T -> S, Self -> Self) is a loop, not a definition with no base case
                # (validators would recurse on it forever).
                self._resolver.deref(target, urldefrag(uri).url)
            added, noted = len(self._added), len(self.problems)
            self._added.append((mode, key))
            defs[key] = {}  # placeholder first: a recursive schema refers back to itself
            try:
                defs[key] = self.convert(target, urldefrag(uri).url, mode, f"#{urldefrag(uri).fragment}")
            except BaseException:
                # The operation being converted is skipped. What this conversion added must not serve the
                # next operation: the placeholder would accept anything, and the definitions completed
                # meanwhile may refer to it (their warnings would be reported twice).
                for added_mode, added_key in self._added[added:]:
                    self.defs[added_mode].pop(added_key, None)
                del self._added[added:]
                del self.problems[noted:]
                raise
            if not added:
                self._added.clear()  # an outermost definition is complete: nothing left to undo
        return {"$ref": f"#/$defs/{key}"}

    # -- internals -------------------------------------------------------------------------

    def _convert_object(self, node: dict[str, Any], base: str, mode: Mode, where: str) -> Any:
        if "$ref" in node:
            target = self._ref_or_anything(node["$ref"], base, mode, where)
            if not self._is_31:
                return target  # OAS 3.0: the siblings of a $ref are ignored (`nullable` too: see _nullable)
            for key in ("description", "default", "title"):
                if key in node:
                    target[key] = node[key]
            return target

        out: dict[str, Any] = {}
        hidden_by_all_of = self._hidden_in_all_of(node, base, mode)
        for key, value in node.items():
            if key in _DROPPED or key.startswith("x-"):
                continue
            if key == "properties" and isinstance(value, dict):
                out[key] = {
                    str(name): self.convert(sub, base, mode, f"{where}/properties/{name}")  # YAML: `200:` is an int
                    for name, sub in value.items()
                    if not self._is_hidden(sub, base, mode) and name not in hidden_by_all_of
                }
            elif key == "patternProperties" and isinstance(value, dict):
                out[key] = self._pattern_properties(value, base, mode, where)
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {
                    str(name): self.convert(sub, base, mode, f"{where}/{key}/{name}") for name, sub in value.items()
                }
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [self.convert(sub, base, mode, f"{where}/{key}/{i}") for i, sub in enumerate(value)]
            elif key == "items" and isinstance(value, list):  # draft-4 tuple form
                out["prefixItems"] = [
                    self.convert(sub, base, mode, f"{where}/items/{i}") for i, sub in enumerate(value)
                ]
            elif key in _SCHEMA_ONE:
                out[key] = self.convert(value, base, mode, f"{where}/{key}")
            elif key == "type":
                self._type(value, out, where)
            elif key == "required":
                if isinstance(value, list):
                    out[key] = [name for name in value if isinstance(name, str)]
            elif key == "pattern":
                self._pattern(value, out, where)
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                if value and bound in node:  # OAS 3.0 boolean form -> 2020-12 numeric form
                    out[key] = node[bound]
            elif key == "enum" and not isinstance(value, list):
                self.problems.append(Problem(where, "enum must be a list; ignored"))
            elif key == "examples" and not isinstance(value, list):
                continue  # 2020-12 wants a list; a map of OpenAPI Example objects here is misplaced
            else:
                out[key] = value
        check_keywords(out, where, self.problems)
        if "example" in node and "examples" not in out:
            out["examples"] = [node["example"]]
        if "exclusiveMinimum" in out and out.get("minimum") == out["exclusiveMinimum"]:
            del out["minimum"]
        if "exclusiveMaximum" in out and out.get("maximum") == out["exclusiveMaximum"]:
            del out["maximum"]
        if "required" in out and ("properties" in out or hidden_by_all_of):
            hidden = set(node.get("properties", {})) - set(out.get("properties", {})) | hidden_by_all_of
            if hidden:
                out["required"] = [name for name in out["required"] if name not in hidden]
        if node.get("nullable") is True and not self._is_31:  # OAS 3.1 has no `nullable`
            return _nullable(out)
        return _single_types(out)

    def _ref_or_anything(self, ref: Any, base: str, mode: Mode, where: str) -> JsonSchema:
        """A reference to a converted definition; `{}` (with a warning) when a local `$ref` is broken."""
        if isinstance(ref, str) and ref.startswith("#"):
            try:
                self._resolver.lookup(ref, base)
            except SpecError as exc:
                self.problems.append(Problem(where, f"{exc}; any value is accepted there"))
                return {}
        return self.ref(ref, base, mode)

    def _type(self, value: Any, out: dict[str, Any], where: str) -> None:
        if value == "file":  # Swagger 2.0 leftover
            out["type"] = "string"
            out.setdefault("format", "binary")
        elif isinstance(value, str) and value in _JSON_TYPES:
            out["type"] = value
        elif isinstance(value, list) and value and all(isinstance(t, str) and t in _JSON_TYPES for t in value):
            out["type"] = list(dict.fromkeys(value))
        else:
            self.problems.append(Problem(where, f"type {value!r} is not a JSON Schema type; ignored"))

    def _is_hidden(self, prop: Any, base: str, mode: Mode, depth: int = 0) -> bool:
        """readOnly properties are left out of requests, writeOnly ones out of responses.

        The flag may sit on the property's schema, behind its `$ref`, or on a member of its `allOf`,
        whose annotations apply to the value itself (asana.com: `{allOf: [{$ref: ProjectCompact},
        {readOnly: true}]}`; Azure's `{allOf: [{$ref: OSProfile}]}` with OSProfile readOnly).
        """
        flag = "readOnly" if mode == "in" else "writeOnly"
        if isinstance(prop, dict) and "$ref" in prop and flag not in prop:
            try:
                prop, base = self._resolver.deref(prop, base)
            except SpecError:
                return False
        if not isinstance(prop, dict) or depth > _MAX_ALL_OF:
            return False
        members = prop.get("allOf")
        return prop.get(flag) is True or (isinstance(members, list) and any(
            self._is_hidden(member, base, mode, depth + 1) for member in members))

    def _hidden_in_all_of(self, node: dict[str, Any], base: str, mode: Mode, depth: int = 0) -> set[str]:
        """Names of properties hidden (`_is_hidden`) by a member of the node's `allOf`, at any depth.

        They apply to the same value, so a property the node declares again without the flag is still
        readOnly (Azure's `Profile` redeclares `name`, readOnly in its `allOf: [Resource]`), and
        `required` must not ask for it.
        """
        members = node.get("allOf")
        found: set[str] = set()
        if not isinstance(members, list) or depth > _MAX_ALL_OF:
            return found
        for member in members:
            member_base = base
            if isinstance(member, dict) and "$ref" in member:
                try:
                    member, member_base = self._resolver.deref(member, base)
                except SpecError:
                    continue
            if not isinstance(member, dict):
                continue
            properties = member.get("properties")
            if isinstance(properties, dict):
                found.update(str(name) for name, sub in properties.items() if self._is_hidden(sub, member_base, mode))
            found |= self._hidden_in_all_of(member, member_base, mode, depth + 1)
        return found

    def _pattern(self, value: Any, out: dict[str, Any], where: str) -> None:
        if not isinstance(value, str):
            self.problems.append(Problem(where, f"pattern {value!r} is not a string; ignored"))
            return
        portable, why = portable_pattern(value)
        if portable is None:
            self.problems.append(Problem(where, f"pattern {value!r} {why}; left out of the tool schema"))
        else:
            out["pattern"] = portable

    def _pattern_properties(self, value: dict[str, Any], base: str, mode: Mode, where: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for pattern, sub in value.items():
            portable, why = portable_pattern(str(pattern))
            if portable is None:
                self.problems.append(Problem(f"{where}/patternProperties", f"pattern {pattern!r} {why}; left out of "
                                                                            "the tool schema"))
                continue
            result[portable] = self.convert(sub, base, mode, f"{where}/patternProperties/{pattern}")
        return result

    def _new_key(self, uri: str) -> str:
        fragment = urldefrag(uri).fragment
        token = unquote(fragment.rsplit("/", 1)[-1]).replace("~1", "/").replace("~0", "~") if fragment else ""
        if not token:
            token = urldefrag(uri).url.rsplit("/", 1)[-1].split(".", 1)[0] or "schema"
        stem = _KEY_UNSAFE.sub("_", token).strip("_") or "schema"
        key, n = stem, 1
        while key in self._taken:
            n += 1
            key = f"{stem}_{n}"
        self._taken.add(key)
        self._keys[uri] = key
        return key


# Keywords that describe a schema rather than constrain it: kept outside `anyOf` when types are split.
_ANNOTATIONS = ("title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """OAS 3.0 `nullable: true` -> 2020-12, as OAS 3.0.3 defines it: "adds "null" to the allowed types
    specified by the type keyword, only if type is explicitly defined within the same Schema Object. Other
    Schema Object constraints retain their defined behavior" (an enum without null still refuses it).
    Validators such as openapi-core read it so, and the tool must not accept what the API refuses.
    The type list is then written as single-type `anyOf` branches (`_single_types`): the null branch
    keeps the constraints that apply to null too (an `enum`), so exactly the same values pass."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return _single_types({**schema, "type": [kind, "null"]})
    if isinstance(kind, list) and "null" not in kind:
        return _single_types({**schema, "type": [*kind, "null"]})
    return _single_types(schema)


_TYPE_SPECIFIC = frozenset({
    "minLength", "maxLength", "pattern", "format", "contentEncoding", "contentMediaType",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains", "minContains", "maxContains",
    "properties", "required", "additionalProperties", "patternProperties", "propertyNames", "minProperties",
    "maxProperties", "dependentRequired", "dependentSchemas", "unevaluatedProperties", "unevaluatedItems",
})


def _single_types(schema: dict[str, Any]) -> dict[str, Any]:
    """`type: [a, b]` -> `anyOf` branches with one `type` each, which mean the same.

    A type list is valid JSON Schema, but clients that map tool schemas onto a single-`type`
    dialect (Gemini's OpenAPI subset) reject it, and MCP Inspector's `--strict` warns about it.
    Each branch keeps every constraint (exactly the same instances pass); the null branch leaves
    out those that only apply to other types, which null passes anyway.
    """
    kinds = schema.get("type")
    if not isinstance(kinds, list):
        return schema
    if len(kinds) == 1:
        return {**schema, "type": kinds[0]}
    annotations = {k: schema[k] for k in _ANNOTATIONS if k in schema}
    rest = {k: v for k, v in schema.items() if k not in annotations and k != "type"}
    branches = [{"type": kind, **({k: v for k, v in rest.items() if k not in _TYPE_SPECIFIC} if kind == "null"
                                 else rest)} for kind in kinds]
    return {**annotations, "anyOf": branches}
