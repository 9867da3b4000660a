"""Keep only keyword values the JSON Schema 2020-12 meta-schema accepts.

Real specs carry `maxLength: "255"`, `minimum: "0"`, `uniqueItems: "true"`, `required` lists with
duplicates, `multipleOf: 0`... One such value makes a whole tool schema invalid for strict
clients, so numeric strings are read as numbers and anything else that does not fit is dropped
with a warning.
"""

from __future__ import annotations

from typing import Any, Final

from converter.models import Problem

_COUNTS: Final = frozenset({"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
                            "minContains", "maxContains"})
_NUMBERS: Final = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
_BOOLEANS: Final = frozenset({"uniqueItems", "readOnly", "writeOnly", "deprecated"})
_STRINGS: Final = frozenset({"title", "description", "format", "contentMediaType", "contentEncoding", "$comment"})


def check_keywords(schema: dict[str, Any], where: str, problems: list[Problem]) -> None:
    """Fix or drop, in place, the keyword values of one (already converted) schema object."""
    for key in [k for k in schema if k in _COUNTS or k in _NUMBERS or k in _BOOLEANS or k in _STRINGS]:
        value = schema[key]
        fixed = _fixed(key, value)
        if fixed is _DROP:
            del schema[key]
            problems.append(Problem(where, f"{key} {value!r} is not {_EXPECTED[_kind(key)]}; ignored"))
        elif fixed is not value:
            schema[key] = fixed
    required = schema.get("required")
    if isinstance(required, list) and len(set(required)) != len(required):
        schema["required"] = list(dict.fromkeys(required))  # the meta-schema wants unique names
    dependent = schema.get("dependentRequired")
    if dependent is not None and not (
        isinstance(dependent, dict) and all(isinstance(v, list) and all(isinstance(n, str) for n in v)
                                            for v in dependent.values())
    ):
        del schema["dependentRequired"]
        problems.append(Problem(where, "dependentRequired must map names to lists of names; ignored"))


_DROP: Final = object()
_EXPECTED: Final = {
    "count": "a non-negative integer", "number": "a number", "positive": "a number greater than 0",
    "boolean": "a boolean", "string": "a string",
}


def _kind(key: str) -> str:
    if key in _COUNTS:
        return "count"
    if key == "multipleOf":
        return "positive"
    if key in _NUMBERS:
        return "number"
    return "boolean" if key in _BOOLEANS else "string"


def _fixed(key: str, value: Any) -> Any:
    kind = _kind(key)
    if kind == "string":
        return value if isinstance(value, str) else _DROP
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        return {"true": True, "false": False}.get(value.strip().lower(), _DROP) if isinstance(value, str) else _DROP
    number = _number(value)
    if number is None:
        return _DROP
    if kind == "count":
        if number < 0 or number != int(number):
            return _DROP
        return value if type(value) is int else int(number)
    if kind == "positive" and number <= 0:
        return _DROP
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else number


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        if number != number or number in (float("inf"), float("-inf")):
            return None
        return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    return None
