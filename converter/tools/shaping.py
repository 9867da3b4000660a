"""Response shaping: keep a big JSON answer from flooding the model.

Three knobs (config `responses:`), all off by default:
- `max_bytes`: the largest result text a tool returns. A longer JSON answer becomes an `isError`
  result that says how big it was, shows its start and tells the model how to ask for less (a
  cut JSON text is not JSON); longer plain text is cut with a note.
- `filter`: a JMESPath expression the server applies to one tool's JSON answers (per tool, in
  `responses.tools`). The shape then differs from the spec's response, so such a tool declares
  no outputSchema.
- `filter_argument`: adds an optional `response_filter` argument (a JMESPath expression) to every
  tool; the model picks what it needs, e.g. `[].{id: id, name: name}`. Its result is
  `{"filtered": <selection>}`; the tool's outputSchema is widened to allow that shape beside the
  documented one, so clients that validate structured results accept both.

Per-tool settings are keyed by tool name or glob (`repos_*`); the first matching key wins.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from converter.config.responses import (
    DEFAULT_ARGUMENT,
    FILTERED_KEY,
    MAX_EXPRESSION_CHARS,
    PREVIEW_CHARS,
    ResponseSettings,
    compile_expression,
)
from converter.errors import ArgumentError

__all__ = ["FILTERED_KEY", "PREVIEW_CHARS", "Shaping", "compile_expression", "shaping_for"]


def shaping_for(responses: ResponseSettings, name: str, input_properties: Mapping[str, Any]) -> Shaping | None:
    """What applies to tool `name` (None: nothing)."""
    own = next((tool for pattern, tool in responses.tools.items() if fnmatch.fnmatchcase(name, pattern)), None)
    max_bytes = own.max_bytes if own is not None and own.max_bytes is not None else responses.max_bytes
    fixed = own.filter if own is not None else None
    argument = None
    if responses.filter_argument:
        argument = responses.filter_argument if isinstance(responses.filter_argument, str) else DEFAULT_ARGUMENT
        while argument in input_properties:  # never shadow one of the operation's own arguments
            argument = f"_{argument}"
    if max_bytes is None and fixed is None and argument is None:
        return None
    return Shaping(max_bytes=max_bytes, fixed=compile_expression(fixed) if fixed is not None else None,
                   argument=argument)


@dataclass(frozen=True, slots=True)
class Shaping:
    """What one tool does to its answers; see the module docstring."""

    max_bytes: int | None
    fixed: Any  # compiled JMESPath, or None
    argument: str | None  # the filter argument's name, or None when not offered

    def input_schema(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """The tool's input schema with the filter argument added (when offered)."""
        if self.argument is None:
            return dict(schema)
        description = ("Optional JMESPath expression (https://jmespath.org) applied to the JSON response, to "
                       "return only what you need, e.g. `[].{id: id, name: name}` or `items[:5]`. The result "
                       f"is then {{\"{FILTERED_KEY}\": <what it selected>}}.")
        properties = {**schema.get("properties", {}),
                      self.argument: {"type": "string", "maxLength": MAX_EXPRESSION_CHARS,
                                      "description": description}}
        return {**schema, "properties": properties}

    def output_schema(self, schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The outputSchema to declare: none with a fixed filter; widened with the argument."""
        if self.fixed is not None or schema is None:
            return None
        if self.argument is None:
            return dict(schema)
        documented = {key: value for key, value in schema.items() if key not in ("$defs", "$schema")}
        filtered = {"type": "object", "properties": {FILTERED_KEY: {
            "description": f"what `{self.argument}` selected from the response"}},
            "required": [FILTERED_KEY], "additionalProperties": False}
        top = {key: schema[key] for key in ("$schema", "$defs") if key in schema}
        return {**top, "type": "object", "anyOf": [documented, filtered]}

    def take_expression(self, arguments: Mapping[str, Any], tool: str) -> tuple[Mapping[str, Any], Any]:
        """(the arguments without the filter, the compiled filter or None).

        Raises:
            ArgumentError: the filter is not a string or not valid JMESPath.
        """
        if self.argument is None or self.argument not in arguments:
            return arguments, None
        rest = {key: value for key, value in arguments.items() if key != self.argument}
        expression = arguments[self.argument]
        if not isinstance(expression, str):
            raise ArgumentError(f"Invalid arguments for tool {tool!r} at $.{self.argument}: must be a JMESPath "
                                "expression (a string)", tool=tool, json_path=f"$.{self.argument}")
        try:
            return rest, compile_expression(expression)
        except ValueError as exc:
            raise ArgumentError(f"Invalid arguments for tool {tool!r} at $.{self.argument}: not a valid JMESPath "
                                f"expression: {str(exc)[:300]}", tool=tool, json_path=f"$.{self.argument}") from None

    def apply(self, data: Any, chosen: Any) -> Any:
        """`data` through the fixed filter, then the caller's.

        Raises:
            ValueError: an expression failed on this data (e.g. a function given the wrong type).
        """
        from jmespath.exceptions import JMESPathError

        try:
            if self.fixed is not None:
                data = self.fixed.search(data)
            if chosen is not None:
                data = chosen.search(data)
        except JMESPathError as exc:
            raise ValueError(str(exc).replace("\n", " ")[:300]) from None
        return data

    def too_big(self, text: str, where: str) -> str | None:
        """The message for a JSON text over max_bytes, or None when it fits."""
        if self.max_bytes is None:
            return None
        size = len(text.encode("utf-8"))
        if size <= self.max_bytes:
            return None
        hint = (f" Call again with `{self.argument}` (a JMESPath expression) to select only what you need, "
                "e.g. `[].{id: id, name: name}` or `items[:10]`, or narrow the request with the tool's own "
                "arguments (filters, page size)." if self.argument is not None
                else " Narrow the request with the tool's arguments (filters, page size).")
        return (f"The response of {where} is {size:,} bytes of JSON, over this server's limit of "
                f"{self.max_bytes:,} bytes (responses.max_bytes), so it is not returned.{hint} "
                f"Its start: {text[:PREVIEW_CHARS]}")

    def cut_text(self, text: str) -> str:
        """Plain text cut to max_bytes, with a note saying so."""
        if self.max_bytes is None:
            return text
        data = text.encode("utf-8")
        if len(data) <= self.max_bytes:
            return text
        kept = data[: self.max_bytes].decode("utf-8", errors="ignore")
        return (f"{kept}\n[cut: the response is {len(data):,} bytes; this server returns at most "
                f"{self.max_bytes:,} (responses.max_bytes)]")
