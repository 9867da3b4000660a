"""Seeded, schema-valid tool arguments for the request-fidelity judge (bench/fidelity.py).

`generate(schema, rng, mode, hints)` returns one argument object for a tool's `inputSchema`, or
raises `Unsatisfiable`. Modes:

* `required`: only what is required, at every depth;
* `all`: every property down to `MAX_DEPTH` levels (below it, only what is required);
* `mixed`: each optional property with probability 1/2, random array lengths, some nulls.

The generator covers the JSON Schema 2020-12 that converters emit: `type` (and type lists),
`enum`/`const`, `$ref` into the schema itself, `allOf` (merged), `anyOf`/`oneOf` (a branch is drawn
and the result checked), `not`, object keywords (`properties`, `required`, `additionalProperties`,
`patternProperties`, `minProperties`/`maxProperties`, `dependentRequired`), array keywords (`items`,
`prefixItems`, `minItems`/`maxItems`, `uniqueItems`), string keywords (`minLength`/`maxLength`,
`pattern` through a small regex generator, `format`, `contentEncoding: base64`) and numeric bounds
with `multipleOf`. Every result is checked by `Checker` (python-jsonschema 2020-12 with its format
checker, `pattern`s in ECMA-262 style through the `regex` module) before it is used.

`Hints` say where each top-level argument goes (path, query, header, cookie, body), so strings
stay within what that place can carry: path segments are never empty, `.` or `..`; header and
cookie values are printable ASCII without `,` and `;`; and characters a parameter's style uses
as its delimiter are left out of its items (see the judge's limits in bench/fidelity.py). Strings
of path, query and body values sometimes carry reserved and non-ASCII characters (`/ ? & = # % +`,
space, `é`), to prove they are percent-encoded exactly once.
"""

from __future__ import annotations

import base64
import math
import random
import re
import string
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any, Final

import jsonschema
import referencing.exceptions
import regex
from jsonschema.exceptions import ValidationError

MODES: Final = ("required", "all", "mixed")
MAX_DEPTH: Final = 4
MAX_ATTEMPTS: Final = 12
TAME: Final = string.ascii_letters + string.digits
SPICY: Final = " /?&=#%+é:@!$'()*;~"
PARAMETER_LOCATIONS: Final = frozenset({"path", "query", "header", "cookie"})


class Unsatisfiable(Exception):
    """No valid value could be made for this schema (an impossible or unsupported schema)."""


@dataclass(frozen=True)
class Hints:
    """Where each top-level argument goes, and the characters its strings leave out."""

    where: Mapping[str, str] = field(default_factory=dict)
    forbid: Mapping[str, str] = field(default_factory=dict)


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterable[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> Any:
    return regex.compile(pattern)


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})


class Checker:
    """python-jsonschema's verdict on a whole argument object (formats checked)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._validator = _Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

    def error(self, instance: Any) -> str | None:
        try:
            error = jsonschema.exceptions.best_match(self._validator.iter_errors(instance))
        except (regex.error, RecursionError, jsonschema.exceptions.SchemaError, TypeError,
                referencing.exceptions.Unresolvable) as exc:
            return f"the schema cannot be checked: {type(exc).__name__}: {exc}"[:300]
        return None if error is None else f"at {error.json_path}: {error.message}"[:300]


# -- the generator ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Place:
    location: str | None  # path, query, header, cookie, body, body_field; None inside FastMCP's unknowns
    forbid: str


class _Generator:
    def __init__(self, root: Mapping[str, Any], rng: random.Random, mode: str) -> None:
        self.root = root
        self.rng = rng
        self.mode = mode

    # schema plumbing
    def resolve(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            ref = schema["$ref"]
            if not ref.startswith("#"):
                raise Unsatisfiable(f"external $ref {ref!r}")
            node: Any = self.root
            for token in filter(None, ref[1:].split("/")):
                token = token.replace("~1", "/").replace("~0", "~")
                node = node.get(token) if isinstance(node, dict) else None
            if node is None:
                raise Unsatisfiable(f"dangling $ref {ref!r}")
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**node, **siblings} if isinstance(node, dict) and siblings else node
            seen += 1
            if seen > 64:
                raise Unsatisfiable("$ref loop")
        return schema

    def merge(self, schemas: Iterable[Any]) -> dict[str, Any]:
        """`allOf` as one schema: properties combined, `required` united, bounds tightened."""
        merged: dict[str, Any] = {}
        for part in schemas:
            part = self.resolve(part)
            if part is False:
                raise Unsatisfiable("allOf with false")
            if not isinstance(part, dict):
                continue
            if "allOf" in part:
                part = {**{k: v for k, v in part.items() if k != "allOf"}, **self.merge(part["allOf"])}
            for key, value in part.items():
                if key not in merged:
                    merged[key] = value
                elif key == "properties" and isinstance(value, dict):
                    props = dict(merged[key])
                    for name, prop in value.items():
                        props[name] = {"allOf": [props[name], prop]} if name in props else prop
                    merged[key] = props
                elif key == "required" and isinstance(value, list):
                    merged[key] = list(dict.fromkeys([*merged[key], *value]))
                elif key == "type":
                    old = set(merged[key]) if isinstance(merged[key], list) else {merged[key]}
                    new = set(value) if isinstance(value, list) else {value}
                    both = old & new or ({"integer"} if {"integer", "number"} <= old | new else set())
                    if not both:
                        raise Unsatisfiable("allOf with disjoint types")
                    merged[key] = sorted(both)
                elif key in ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"):
                    merged[key] = max(merged[key], value)
                elif key in ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"):
                    merged[key] = min(merged[key], value)
                elif key in ("anyOf", "oneOf"):
                    merged.setdefault("allOf", []).append({key: value})
                else:
                    merged[key] = value
        return merged

    # values
    def value(self, schema: Any, depth: int, place: _Place) -> Any:
        schema = self.resolve(schema)
        if schema is True or schema == {} or schema is None:
            return self.any_value(place)
        if schema is False:
            raise Unsatisfiable("false schema")
        if not isinstance(schema, dict):
            raise Unsatisfiable(f"not a schema: {schema!r}")
        if "allOf" in schema:
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            merged = self.merge([rest, *schema["allOf"]])
            if "allOf" in merged:  # branches of anyOf/oneOf inside the allOf: draw and check
                return self.checked(merged, depth, place)
            return self.value(merged, depth, place)
        for key in ("oneOf", "anyOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.branch(schema, key, depth, place)
        if "not" in schema:
            return self.checked(schema, depth, place)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            choices = [v for v in schema["enum"] if v is not None or self.mode == "mixed"] or schema["enum"]
            return self.rng.choice(choices)
        kind = self.pick_type(schema, place)
        return getattr(self, "make_" + kind)(schema, depth, place)

    def validator(self, schema: dict[str, Any]) -> Any:
        """A validator for a part of the tool's schema (its `$ref`s point into the root's `$defs`)."""
        defs = self.root.get("$defs")
        if isinstance(defs, dict) and "$defs" not in schema:
            schema = {**schema, "$defs": defs}
        return _Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

    def checked(self, schema: dict[str, Any], depth: int, place: _Place) -> Any:
        """Draw values of `schema` without its combinators until one passes all of it."""
        check = self.validator(schema)
        base = {k: v for k, v in schema.items() if k not in ("not", "allOf")}
        parts = [self.resolve(p) for p in schema.get("allOf", [])]
        for _ in range(MAX_ATTEMPTS):
            drawn = dict(base)
            for part in parts:
                if isinstance(part, dict):
                    for key in ("anyOf", "oneOf"):
                        if isinstance(part.get(key), list) and part[key]:
                            drawn = self.merge([drawn, self.rng.choice(part[key])])
                    drawn = self.merge([drawn, {k: v for k, v in part.items() if k not in ("anyOf", "oneOf")}])
            try:
                candidate = self.value(drawn, depth, place)
            except Unsatisfiable:
                continue
            if _valid(check, candidate):
                return candidate
        raise Unsatisfiable("no value passes not/allOf")

    def branch(self, schema: dict[str, Any], key: str, depth: int, place: _Place) -> Any:
        check = self.validator(schema)
        rest = {k: v for k, v in schema.items() if k != key}
        branches = list(schema[key])
        self.rng.shuffle(branches)
        for branch in branches * 2:
            try:
                candidate = self.value(self.merge([rest, branch]), depth, place)
            except Unsatisfiable:
                continue
            if _valid(check, candidate):
                return candidate
        raise Unsatisfiable(f"no {key} branch can be met")

    def pick_type(self, schema: Mapping[str, Any], place: _Place) -> str:
        declared = schema.get("type")
        if isinstance(declared, str):
            return declared if declared in _KINDS else "string"
        if isinstance(declared, list) and declared:
            kinds = [t for t in declared if t in _KINDS]
            solid = [t for t in kinds if t != "null"]
            if not solid:
                return "null"
            if "null" in kinds and self.mode == "mixed" and self.rng.random() < 0.15:
                return "null"
            return self.rng.choice(solid)
        if any(k in schema for k in ("properties", "additionalProperties", "required", "patternProperties")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
            return "number"
        return "string"

    def any_value(self, place: _Place) -> Any:
        if place.location in PARAMETER_LOCATIONS:
            return self.text(1, 8, place)
        return self.rng.choice([self.text(1, 8, place), self.rng.randint(0, 99), True, {"k": self.text(1, 5, place)}])

    def make_null(self, schema: Mapping[str, Any], depth: int, place: _Place) -> Any:
        return None

    def make_boolean(self, schema: Mapping[str, Any], depth: int, place: _Place) -> Any:
        return self.rng.random() < 0.5

    def make_integer(self, schema: Mapping[str, Any], depth: int, place: _Place) -> int:
        low, high = _bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, (int, float)) and step > 0 and float(step).is_integer():
            step = int(step)
            first, last = math.ceil(low / step), math.floor(high / step)
            if first > last:
                raise Unsatisfiable("no multiple in range")
            return step * self.rng.randint(first, min(last, first + 50))
        if low > high:
            raise Unsatisfiable("empty integer range")
        if self.mode == "required":
            return low if low > -1000 else min(high, 1)
        return self.rng.randint(low, min(high, low + 500 if low > -1000 else 500))

    def make_number(self, schema: Mapping[str, Any], depth: int, place: _Place) -> float | int:
        step = schema.get("multipleOf")
        if isinstance(step, (int, float)) and step > 0:
            low, high = _bounds(schema, integer=False)
            first, last = math.ceil(low / step), math.floor(high / step)
            if first > last:
                raise Unsatisfiable("no multiple in range")
            k = self.rng.randint(first, min(last, first + 50))
            value = k * step
            return int(value) if float(value).is_integer() else round(value, 10)
        low, high = _bounds(schema, integer=False)
        if low > high:
            raise Unsatisfiable("empty number range")
        if self.rng.random() < 0.5:
            ints = (math.ceil(low), math.floor(high))
            if ints[0] <= ints[1]:
                return self.rng.randint(ints[0], min(ints[1], ints[0] + 500 if ints[0] > -1000 else 500))
        top = min(high, low + 500 if low > -1000 else 500)
        value = round(self.rng.uniform(max(low, -500), top), 2)
        return value if low <= value <= high else low

    def make_string(self, schema: Mapping[str, Any], depth: int, place: _Place) -> str:
        low = int(schema.get("minLength", 0) or 0)
        high = int(schema["maxLength"]) if isinstance(schema.get("maxLength"), (int, float)) else 10**6
        if place.location in PARAMETER_LOCATIONS:
            low = max(low, 1)  # an empty path segment or query value cannot be sent (see Hints)
        if high < low:
            raise Unsatisfiable("maxLength < minLength")
        if schema.get("contentEncoding") == "base64" or schema.get("format") == "byte":
            size = max(1, (low * 3) // 4)
            return base64.b64encode(self.rng.randbytes(self.rng.randint(size, size + 8))).decode()
        fmt = schema.get("format")
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            stretch = 0
            for _ in range(MAX_ATTEMPTS * 2):
                text = _from_regex(pattern, self.rng, place.forbid, stretch)
                if low <= len(text) <= high and _safe_search(pattern, text) and _placeable(text, place):
                    return text
                # short of minLength: lengthen the open-ended repeats next time, else shrink them again
                if len(text) < low:
                    stretch += low - len(text)
                elif len(text) > high:
                    stretch = max(0, stretch - (len(text) - high))
            raise Unsatisfiable(f"no string of {low}-{high} characters matching {pattern!r} was found")
        if isinstance(fmt, str) and fmt in _FORMATS:
            text = _FORMATS[fmt](self.rng)
            if low <= len(text) <= high:
                return text
        return self.text(low, high, place)

    def text(self, low: int, high: int, place: _Place) -> str:
        size = max(low, 1 if high >= 1 else 0) if self.mode == "required" else self.rng.randint(low, min(high, low + 12))
        spicy = place.location in ("path", "query", "body", "body_field", None) and self.mode != "required"
        alphabet = TAME + (SPICY if spicy and self.rng.random() < 0.4 else "")
        alphabet = "".join(c for c in alphabet if c not in place.forbid)
        for _ in range(MAX_ATTEMPTS):
            text = "".join(self.rng.choice(alphabet) for _ in range(size))
            if _placeable(text, place):
                return text
        return "a" * size if size else ""

    def make_array(self, schema: Mapping[str, Any], depth: int, place: _Place) -> list[Any]:
        prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
        low = int(schema.get("minItems", 0) or 0)
        if place.location in PARAMETER_LOCATIONS and depth <= 1:
            low = max(low, 1)  # an empty list parameter is not sent at all (RFC 6570 §2.3)
        high = int(schema.get("maxItems", max(low, 3)))
        if high < low:
            raise Unsatisfiable("maxItems < minItems")
        if self.mode == "required" or depth >= MAX_DEPTH:
            count = max(low, len(prefix) if low else 0)
        elif self.mode == "all":
            count = max(low, min(high, 2))
        else:
            count = self.rng.randint(low, max(low, min(high, low + 3)))
        count = min(count, high)
        items = schema.get("items", True)
        out: list[Any] = []
        unique = schema.get("uniqueItems") is True
        for i in range(count):
            item_schema = prefix[i] if i < len(prefix) else items
            if item_schema is False:
                break
            for _ in range(MAX_ATTEMPTS):
                item = self.value(item_schema, depth + 1, place)
                if not unique or item not in out:
                    break
            else:
                if len(out) >= low:
                    break
                raise Unsatisfiable("no unique items")
            out.append(item)
        if len(out) < low:
            raise Unsatisfiable("too few items")
        return out

    def make_object(self, schema: Mapping[str, Any], depth: int, place: _Place) -> dict[str, Any]:
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = [k for k in schema.get("required", []) if isinstance(k, str)]
        optional = [k for k in properties if k not in required]
        if self.mode == "required" or depth >= MAX_DEPTH:
            chosen = []
        elif self.mode == "all":
            chosen = optional
        else:
            chosen = [k for k in optional if self.rng.random() < 0.5]
        low = int(schema.get("minProperties", 0) or 0)
        extra_ok = schema.get("additionalProperties", True) is not False and schema.get("unevaluatedProperties") is not False
        keys = list(dict.fromkeys([*required, *chosen]))
        for k in optional:
            if len(keys) >= low:
                break
            if k not in keys:
                keys.append(k)
        dependent = schema.get("dependentRequired") if isinstance(schema.get("dependentRequired"), dict) else {}
        for k in list(keys):
            for needed in dependent.get(k, []):
                if needed not in keys:
                    keys.append(needed)
        high = schema.get("maxProperties")
        if isinstance(high, int):
            keys = [k for k in keys if k in required] + [k for k in keys if k not in required][: max(0, high - len(required))]
        out: dict[str, Any] = {}
        for key in keys:
            out[key] = self.value(self.property_schema(schema, key), depth + 1, place)
        while len(out) < low and extra_ok:
            key = f"extra{len(out)}"
            out[key] = self.value(self.property_schema(schema, key), depth + 1, place)
        return out

    def property_schema(self, schema: Mapping[str, Any], key: str) -> Any:
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        if key in properties:
            return properties[key]
        for pattern, sub in (schema.get("patternProperties") or {}).items():
            if _compiled(pattern).search(key):
                return sub
        extra = schema.get("additionalProperties", True)
        return {} if extra is True else extra


_KINDS: Final = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})


def _valid(validator: Any, instance: Any) -> bool:
    try:
        return bool(validator.is_valid(instance))
    except (regex.error, RecursionError, TypeError, referencing.exceptions.Unresolvable):
        return False


def _bounds(schema: Mapping[str, Any], *, integer: bool) -> tuple[Any, Any]:
    low: Any = schema.get("minimum", -(10**6) if "maximum" in schema else 0)
    high: Any = schema.get("maximum", 10**6)
    if isinstance(schema.get("exclusiveMinimum"), (int, float)) and not isinstance(schema["exclusiveMinimum"], bool):
        low = max(low, schema["exclusiveMinimum"] + (1 if integer else 0.01))
    if isinstance(schema.get("exclusiveMaximum"), (int, float)) and not isinstance(schema["exclusiveMaximum"], bool):
        high = min(high, schema["exclusiveMaximum"] - (1 if integer else 0.01))
    fmt = schema.get("format")
    if fmt == "int32":
        low, high = max(low, -(2**31)), min(high, 2**31 - 1)
    if integer:
        low, high = math.ceil(low), math.floor(high)
    return low, high


def _safe_search(pattern: str, text: str) -> bool:
    try:
        return bool(_compiled(pattern).search(text))
    except regex.error:
        return False


def _placeable(text: str, place: _Place) -> bool:
    if place.location == "path" and text in ("", ".", ".."):
        return False
    if place.location in ("header", "cookie"):
        return text.isascii() and text.isprintable() and not set(text) & set(",;\\\"") and text.strip() == text
    return not set(text) & set(place.forbid)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_FORMATS: Final = {
    "date": lambda r: f"20{r.randint(10, 29)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "date-time": lambda r: f"20{r.randint(10, 29)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T"
                           f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z",
    "email": lambda r: f"user{r.randint(1, 999)}@example.com",
    "idn-email": lambda r: f"user{r.randint(1, 999)}@example.com",
    "hostname": lambda r: f"host{r.randint(1, 99)}.example.com",
    "idn-hostname": lambda r: f"host{r.randint(1, 99)}.example.com",
    "ipv4": lambda r: f"192.0.2.{r.randint(1, 254)}",
    "ipv6": lambda r: f"2001:db8::{r.randint(1, 65535):x}",
    "uri": lambda r: f"https://example.com/item/{r.randint(1, 999)}?q=a",
    "url": lambda r: f"https://example.com/item/{r.randint(1, 999)}",
    "uri-reference": lambda r: f"/item/{r.randint(1, 999)}",
    "iri": lambda r: f"https://example.com/item/{r.randint(1, 999)}",
    "iri-reference": lambda r: f"/item/{r.randint(1, 999)}",
    "uri-template": lambda r: "https://example.com/{id}",
    "uuid": _uuid,
    "guid": _uuid,
    "duration": lambda r: f"P{r.randint(1, 30)}D",
    "regex": lambda r: "^[a-z]+$",
    "json-pointer": lambda r: "/a/b",
    "relative-json-pointer": lambda r: "0/a",
    "int32": lambda r: str(r.randint(0, 99999)),
    "int64": lambda r: str(r.randint(0, 99999)),
    "double": lambda r: f"{r.randint(0, 999)}.5",
    "float": lambda r: f"{r.randint(0, 999)}.5",
    "decimal": lambda r: f"{r.randint(0, 999)}.25",
}


# -- strings from a regular expression -------------------------------------------------------------

_CATEGORIES: Final = {
    sre_parse.CATEGORY_DIGIT: string.digits,
    sre_parse.CATEGORY_WORD: TAME + "_",
    sre_parse.CATEGORY_SPACE: " ",
    sre_parse.CATEGORY_NOT_DIGIT: string.ascii_letters,
    sre_parse.CATEGORY_NOT_WORD: "-.",
    sre_parse.CATEGORY_NOT_SPACE: TAME,
}
_PRINTABLE: Final = TAME + "-_.~ "


_PROPERTIES: Final = {"L": "a-zA-Z", "Lu": "A-Z", "Ll": "a-z", "N": "0-9", "Nd": "0-9", "Z": " ", "Zs": " ",
                      "P": ".,", "S": "+", "ASCII": " -~", "Alpha": "a-zA-Z", "Digit": "0-9", "Alnum": "a-zA-Z0-9"}
_PROPERTY: Final = re.compile(r"\\p\{(\w+)\}")


def _pythonic(pattern: str) -> str:
    r"""The pattern in what `re` parses, for generating only (results are checked with `regex`):
    `\p{L}` and friends become ASCII ranges, and a `-` after a class shorthand inside `[...]` a literal."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            match = _PROPERTY.match(pattern, i)
            if match and match.group(1) in _PROPERTIES:
                ranges = _PROPERTIES[match.group(1)]
                out.append(ranges if in_class else f"[{ranges}]")
                i = match.end()
                continue
            pair = pattern[i:i + 2]
            out.append(pair)
            i += 2
            if in_class and pair[1] in "wdsWDS" and pattern[i:i + 1] == "-" and pattern[i + 1:i + 2] != "]":
                out.append("\\-")
                i += 1
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


def _from_regex(pattern: str, rng: random.Random, forbid: str = "", stretch: int = 0) -> str:
    """A string the regular expression matches (ASCII where it has a choice), or raise Unsatisfiable.

    `stretch` more repetitions go to the open-ended repeats met first, to reach a minimum length."""
    try:
        parsed = sre_parse.parse(_pythonic(pattern))
    except (re.error, OverflowError, RecursionError) as exc:
        raise Unsatisfiable(f"pattern {pattern!r} is not understood here: {exc}") from exc
    groups: dict[int, str] = {}
    return "".join(_emit(parsed, rng, groups, forbid, [stretch]))


def _emit(items: Any, rng: random.Random, groups: dict[int, str], forbid: str, budget: list[int]) -> list[str]:
    out: list[str] = []
    for op, arg in items:
        if op is sre_parse.LITERAL:
            out.append(chr(arg))
        elif op is sre_parse.NOT_LITERAL:
            out.append(rng.choice([c for c in TAME if ord(c) != arg]))
        elif op is sre_parse.ANY:
            out.append(rng.choice(TAME))
        elif op is sre_parse.IN:
            out.append(_one_of(arg, rng, forbid))
        elif op is sre_parse.BRANCH:
            out.extend(_emit(rng.choice(arg[1]), rng, groups, forbid, budget))
        elif op is sre_parse.SUBPATTERN:
            group, _, _, body = arg
            text = "".join(_emit(body, rng, groups, forbid, budget))
            if group is not None:
                groups[group] = text
            out.append(text)
        elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, getattr(sre_parse, "POSSESSIVE_REPEAT", None)):
            low, high, body = arg
            top = low + 3 if high == sre_parse.MAXREPEAT else min(high, low + 3)
            count = rng.randint(low, max(low, top))
            if budget[0] > 0 and high > count:
                extra = min(budget[0], (count + budget[0] if high == sre_parse.MAXREPEAT else high) - count)
                count, budget[0] = count + extra, budget[0] - extra
            for _ in range(count):
                out.extend(_emit(body, rng, groups, forbid, budget))
        elif op is sre_parse.GROUPREF:
            out.append(groups.get(arg, ""))
        elif op in (sre_parse.AT, sre_parse.ASSERT, sre_parse.ASSERT_NOT):
            continue  # anchors and look-arounds: the caller checks the result
        elif op is getattr(sre_parse, "ATOMIC_GROUP", None):
            out.extend(_emit(arg, rng, groups, forbid, budget))
        else:
            raise Unsatisfiable(f"regex construct {op} is not generated")
    return out


def _one_of(ranges: Any, rng: random.Random, forbid: str) -> str:
    negate = False
    allowed: list[str] = []
    for op, arg in ranges:
        if op is sre_parse.NEGATE:
            negate = True
        elif op is sre_parse.LITERAL:
            allowed.append(chr(arg))
        elif op is sre_parse.RANGE:
            low, high = arg
            allowed.extend(chr(c) for c in range(low, min(high, low + 200) + 1))
        elif op is sre_parse.CATEGORY:
            allowed.extend(_CATEGORIES.get(arg, TAME))
    if negate:
        allowed = [c for c in _PRINTABLE if c not in allowed]
    choices = [c for c in allowed if c not in forbid] or allowed
    if not choices:
        raise Unsatisfiable("empty character class")
    printable = [c for c in choices if c.isprintable() and c.isascii()]
    return rng.choice(printable or choices)


# -- the entry point -------------------------------------------------------------------------------


def generate(schema: Mapping[str, Any], rng: random.Random, mode: str, hints: Hints = Hints()) -> dict[str, Any]:
    """One argument object for a tool's inputSchema (not yet checked: see `Checker`).

    Raises:
        Unsatisfiable: a required argument cannot be made.
    """
    gen = _Generator(schema, rng, mode)
    top = gen.resolve(schema)
    for key in ("anyOf", "oneOf"):  # e.g. a required form body whose fields are all optional
        if isinstance(top, dict) and isinstance(top.get(key), list) and top[key]:
            top = gen.merge([{k: v for k, v in top.items() if k != key}, rng.choice(top[key])])
    if isinstance(top, dict) and "allOf" in top:
        top = gen.merge([{k: v for k, v in top.items() if k != "allOf"}, *top["allOf"]])
    if not isinstance(top, dict):
        raise Unsatisfiable("the input schema is not an object schema")
    properties = top.get("properties") if isinstance(top.get("properties"), dict) else {}
    required = [k for k in top.get("required", []) if isinstance(k, str)]
    optional = [k for k in properties if k not in required]
    if mode == "required":
        chosen = []
    elif mode == "all":
        chosen = optional
    else:
        chosen = [k for k in optional if rng.random() < 0.5]
    out: dict[str, Any] = {}
    for key in dict.fromkeys([*required, *chosen]):
        place = _Place(hints.where.get(key), hints.forbid.get(key, ""))
        try:
            out[key] = gen.value(gen.property_schema(top, key), 1, place)
        except Unsatisfiable:
            if key in required:
                raise
        except RecursionError as exc:
            raise Unsatisfiable("schema nested too deeply") from exc
    return out


__all__ = ["MODES", "Checker", "Hints", "Unsatisfiable", "generate"]
