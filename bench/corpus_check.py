"""What makes a tool list valid, for the corpus benchmark and tests/integration/test_corpus.py.

A tool name is valid when it matches `^[A-Za-z0-9_-]{1,64}$` and no other tool of the same spec
has it. A tool schema (input or output) is valid when:

* it is an object schema (`"type": "object"`, as MCP requires of both);
* it passes `jsonschema.Draft202012Validator.check_schema` (the 2020-12 meta-schema, with its
  default format checker: a `pattern` must compile with Python's `re`, which is what the MCP
  Python SDK client runs on every output schema before it validates a result);
* every `$ref` in it resolves inside the tool schema itself (no dangling or external reference);
* `jsonschema_rs.Draft202012Validator` compiles it.

Each tool repeats the `$defs` it reaches, so a big spec repeats the same definitions thousands of
times: the meta-schema check is done once per distinct part (the schema without `$defs`, and each
definition), which is equivalent because the meta-schema checks every `$defs` entry on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import jsonschema
import jsonschema_rs

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
               "unevaluatedItems", "unevaluatedProperties", "contentSchema")
_MISSING = object()


def subschemas(schema: Any) -> Iterator[Any]:
    """Every schema inside `schema`, itself included (only through schema keywords, not values)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield node
        for key in _SCHEMA_MAPS:
            if isinstance(node.get(key), dict):
                stack.extend(node[key].values())
        for key in _SCHEMA_LISTS:
            if isinstance(node.get(key), list):
                stack.extend(node[key])
        for key in _SCHEMA_ONE:
            if key in node:
                stack.append(node[key])


def refs_in(schema: Any) -> set[str]:
    """The `$ref` values used in `schema` (not following them)."""
    return {node["$ref"] for node in subschemas(schema) if isinstance(node.get("$ref"), str)}


def resolve_pointer(root: Any, ref: str) -> Any:
    """The node `ref` (a `#/json/pointer`) names inside `root`, or _MISSING."""
    if not ref.startswith("#"):
        return _MISSING
    fragment = unquote(ref[1:])
    if fragment and not fragment.startswith("/"):
        return _MISSING  # an anchor: this checker's schemas have none
    node = root
    for token in fragment.split("/")[1:] if fragment else ():
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return _MISSING
    return node


@dataclass
class SchemaChecker:
    """Checks tool schemas, remembering the verdict for each distinct part."""

    _meta: dict[str, str | None] = field(default_factory=dict)
    _refs: dict[str, frozenset[str]] = field(default_factory=dict)
    # Tools of one spec share their definition objects: skip re-serializing them. The object is
    # kept alive with its text, so its id cannot be reused while the checker lives.
    _texts: dict[int, tuple[Any, str]] = field(default_factory=dict)

    def errors(self, schema: Any) -> list[str]:
        """Why `schema` is not a valid tool schema (empty when it is)."""
        if not isinstance(schema, dict):
            return [f"is a {type(schema).__name__}, not an object schema"]
        problems: list[str] = []
        if schema.get("type") != "object":
            problems.append(f"top-level type is {schema.get('type')!r}, not 'object'")
        defs = schema.get("$defs") if isinstance(schema.get("$defs"), dict) else {}
        top = {k: v for k, v in schema.items() if k != "$defs"}
        refs: set[str] = set()
        for part in (top, *defs.values()):
            known = self._texts.get(id(part))
            if known is not None and known[0] is part:
                text = known[1]
            else:
                text = json.dumps(part, sort_keys=True)
                if part is not top:
                    self._texts[id(part)] = (part, text)
            if text not in self._meta:
                try:
                    jsonschema.Draft202012Validator.check_schema(part)
                    self._meta[text] = None
                except jsonschema.SchemaError as exc:
                    self._meta[text] = f"meta-schema: {exc.message} at {'/'.join(map(str, exc.path)) or '/'}"
                self._refs[text] = frozenset(refs_in(part))
            if self._meta[text] is not None:
                problems.append(self._meta[text])  # type: ignore[arg-type]
            refs |= self._refs[text]
        for ref in sorted(refs):
            if resolve_pointer(schema, ref) is _MISSING:
                problems.append(f"dangling $ref {ref!r}")
        if not problems:
            try:
                jsonschema_rs.Draft202012Validator(schema, validate_formats=False)
            except Exception as exc:
                problems.append(f"jsonschema-rs: {str(exc).splitlines()[0][:200]}")
        return problems


@dataclass
class ToolsReport:
    """Per-spec verdicts on a list of tools."""

    tools: int = 0
    names_valid: int = 0
    inputs_valid: int = 0
    outputs: int = 0
    outputs_valid: int = 0
    samples: list[str] = field(default_factory=list)  # a few failures, for the log
    causes: dict[str, int] = field(default_factory=dict)  # every failure, by cause

    def note(self, message: str, cause: str | None = None) -> None:
        if len(self.samples) < 5:
            self.samples.append(message)
        cause = cause or message
        self.causes[cause] = self.causes.get(cause, 0) + 1


def cause_of(problem: str) -> str:
    """A failure without the values in it, to count failures by kind."""
    if problem.startswith("meta-schema: "):
        detail = problem[len("meta-schema: "):]
        rule = detail.rsplit(" is ", 1)[-1].split(" at ", 1)[0] if " is " in detail else detail
        return "meta-schema: ... is " + rule[:60]
    if problem.startswith("dangling $ref"):
        return "dangling $ref"
    if problem.startswith("jsonschema-rs: "):
        return "jsonschema-rs: " + problem.rsplit(" is ", 1)[-1][:60] if " is " in problem else problem[:80]
    return problem[:80]


def check_tools(tools: list[Mapping[str, Any]], checker: SchemaChecker | None = None) -> ToolsReport:
    """Check names (valid, unique) and input/output schemas of one spec's tools."""
    checker = checker or SchemaChecker()
    report = ToolsReport(tools=len(tools))
    counts: dict[Any, int] = {}
    for tool in tools:
        counts[tool.get("name")] = counts.get(tool.get("name"), 0) + 1
    for tool in tools:
        name = tool.get("name")
        if isinstance(name, str) and NAME.match(name) and counts[name] == 1:
            report.names_valid += 1
        else:
            why = "used twice" if isinstance(name, str) and NAME.match(name) else "invalid"
            report.note(f"name {name!r}: {why}", f"name {why}")
        problems = checker.errors(tool.get("inputSchema"))
        if problems:
            report.note(f"{name}: inputSchema: {problems[0]}", "inputSchema: " + cause_of(problems[0]))
        else:
            report.inputs_valid += 1
        output = tool.get("outputSchema")
        if output is not None:
            report.outputs += 1
            problems = checker.errors(output)
            if problems:
                report.note(f"{name}: outputSchema: {problems[0]}", "outputSchema: " + cause_of(problems[0]))
            else:
                report.outputs_valid += 1
    return report
