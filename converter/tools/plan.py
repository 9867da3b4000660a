"""Compile each operation once into a `ToolPlan`: the MCP tool plus everything a call needs."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

import jsonschema_rs
import mcp.types as types

from converter.errors import ArgumentError
from converter.invoke.media import names_decoded_codings
from converter.invoke.request import RequestTemplate
from converter.models import SERVER_OWNED_HEADERS, JsonSchema, Operation, Problem, Slot, Spec
from converter.spec.pathkey import split_path_key
from converter.tools.names import assign_names
from converter.tools.schemas import BODY, DefsIndex, build_input_schema, build_output_schema

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

    from converter.tools.shaping import Shaping

META_KEY = "openapi-mcp/operation"
MAX_ARGUMENT_DEPTH = 250  # the SDK transports already refuse JSON deeper than 200; native validators crash far deeper
MAX_MESSAGE_CHARS = 300  # an error quotes the bad value: a 1 MB value must not come back whole


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "...[cut]"


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """Iteratively: is any list or object in `value` nested deeper than `limit`?"""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


_BASE64_HINT = "File content, base64-encoded."


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> Any:
    import regex

    return regex.compile(pattern)


@cache
def _explainer() -> Any:
    """python-jsonschema's 2020-12 validator with ECMA-262 `pattern`s; imported on the first bad
    argument (it is ~30 ms of startup that a server with only good calls never needs)."""
    import jsonschema
    from jsonschema.exceptions import ValidationError

    def pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterable[ValidationError]:
        # JSON Schema patterns are ECMA-262; the `regex` module understands \p{L} and friends, `re` does not.
        if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")

    # types-jsonschema leaves `extend` untyped
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": pattern})  # type: ignore[no-untyped-call]


class SchemaCheck:
    """A compiled schema: a Rust validator answers "valid?" per call (~50x faster than
    python-jsonschema here); python-jsonschema's `best_match` explains the rare failures."""

    __slots__ = ("_explain", "_fast", "_schema")

    def __init__(self, schema: JsonSchema) -> None:
        self._schema = schema
        self._explain: Any = None
        try:
            self._fast: Any = jsonschema_rs.Draft202012Validator(schema, validate_formats=False)
        except (jsonschema_rs.ValidationError, ValueError):  # e.g. a regex fancy-regex cannot compile
            self._fast = None

    def error(self, instance: Any) -> ValidationError | None:
        """None when `instance` is valid, else the error most worth showing."""
        if self._fast is not None and self._fast.is_valid(instance):
            return None
        from jsonschema.exceptions import ValidationError, best_match

        if self._explain is None:
            self._explain = _explainer()(self._schema)
        error: ValidationError | None = best_match(self._explain.iter_errors(instance))
        if error is None and self._fast is not None:  # the two disagree: report the Rust verdict
            first = next(iter(self._fast.iter_errors(instance)))
            return ValidationError(first.message, path=list(first.instance_path))
        return error


def _message(error: ValidationError) -> str:
    """The error's message, except for "give at least one of" (an `anyOf` of single `required`s,
    as a required form body whose fields are all optional gets), whose own words quote the value."""
    branches = error.validator_value if error.validator == "anyOf" else None
    if isinstance(branches, list) and branches and all(
            isinstance(b, dict) and set(b) == {"required"} and len(b["required"]) == 1 for b in branches):
        return "give at least one of: " + ", ".join(b["required"][0] for b in branches)
    return error.message


@dataclass(frozen=True, slots=True)
class Selection:
    """include/exclude filters from the config (PRODUCT.md `include:` / `exclude:`)."""

    tags: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.tags or self.operations or self.paths or self.methods)

    def matches(self, op: Operation, name: str) -> bool:
        return (
            any(tag in self.tags for tag in op.tags)
            or (op.operation_id in self.operations or name in self.operations)
            or any(fnmatch.fnmatchcase(op.path, pattern) for pattern in self.paths)
            or op.method in self.methods
        )


class _Checks:
    """The compiled validators of one plan, made on first use (GitHub has 1,223 tools; most are
    never called). Never pickled: a cached plan compiles them again when first called."""

    __slots__ = ("input", "output")

    def __init__(self) -> None:
        self.input: SchemaCheck | None = None
        self.output: SchemaCheck | None = None

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _Checks, ()


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """A compiled tool: its MCP definition and the request template its calls follow.

    Frozen: what the configuration adds (a name prefix, response shaping) makes a bound copy
    (`bound`), so a compiled plan (and the compiled-tools cache) is never changed in place.
    """

    name: str
    operation: Operation
    tool: types.Tool
    input_schema: JsonSchema
    output_schema: JsonSchema | None
    wraps_result: bool
    request: RequestTemplate
    shaping: Shaping | None = field(default=None, repr=False)  # config `responses:` (converter.tools.shaping)
    _checks: _Checks = field(default_factory=_Checks, repr=False, compare=False)

    def bound(self, *, prefix: str = "", shaping: Shaping | None = None) -> ToolPlan:
        """This plan served as `prefix` + name, with `shaping` applied to its definition."""
        if not prefix and shaping is None:
            return self
        name = prefix + self.name
        update: dict[str, Any] = {"name": name}
        if shaping is not None:
            update["input_schema"] = shaping.input_schema(self.tool.input_schema)
            update["output_schema"] = shaping.output_schema(self.tool.output_schema)
        return replace(self, name=name, tool=self.tool.model_copy(update=update),
                       shaping=shaping if shaping is not None else self.shaping, _checks=_Checks())

    @property
    def method(self) -> str:
        return self.operation.method

    @property
    def path(self) -> str:
        return self.operation.path

    def validate_arguments(self, arguments: Mapping[str, Any]) -> None:
        """Check arguments against the input schema before anything is sent.

        Raises:
            ArgumentError: naming the argument (JSON path) and the rule it broke.
        """
        checks = self._checks
        if checks.input is None:
            checks.input = SchemaCheck(self.input_schema)
        for key, value in arguments.items():
            if _nesting_exceeds(value, MAX_ARGUMENT_DEPTH):
                # Validators recurse natively: a 20,000-deep value would overflow the stack.
                path = f"$.{_cut(str(key))}"
                raise ArgumentError(f"Invalid arguments for tool {self.name!r} at {path}: nested more than "
                                    f"{MAX_ARGUMENT_DEPTH} levels deep", tool=self.name, json_path=path)
        try:
            error = checks.input.error(arguments)
        except RecursionError:
            raise ArgumentError(f"Invalid arguments for tool {self.name!r}: too deeply nested to check",
                                tool=self.name) from None
        if error is not None:
            raise ArgumentError(
                f"Invalid arguments for tool {self.name!r} at {_cut(error.json_path)}: {_cut(_message(error))}",
                tool=self.name, json_path=error.json_path,
            )

    def check_output(self, structured: Any) -> str | None:
        """Return why `structured` does not match the output schema, or None when it does."""
        if self.output_schema is None:
            return None
        checks = self._checks
        if checks.output is None:
            checks.output = SchemaCheck(self.output_schema)
        error = checks.output.error(structured)
        return None if error is None else f"at {error.json_path}: {error.message}"

    def __repr__(self) -> str:
        return f"ToolPlan(name={self.name!r}, method={self.method!r}, path={self.path!r})"


def build_plans(
    spec: Spec,
    *,
    include: Selection = Selection(),
    exclude: Selection = Selection(),
    reserved_headers: frozenset[str] = frozenset(),
) -> tuple[list[ToolPlan], list[Problem]]:
    """Compile every selected operation of `spec` into a ToolPlan; report what was renamed.

    Header parameters the caller must not set are left out of the tools, each with a warning:
    those named in `reserved_headers` (lower case: the server fills them from claim_to_header or
    upstream.headers, so a caller cannot spoof an identity or replace a credential) and the
    framing and hop-by-hop headers HTTP owns (`SERVER_OWNED_HEADERS`: Host, Content-Length,
    Transfer-Encoding, Connection, ...; a caller setting them could reach another virtual host
    or desynchronise the connection).
    """
    names, problems = assign_names(spec.operations)
    in_defs, out_defs = DefsIndex(spec.input_defs), DefsIndex(spec.output_defs)
    plans: list[ToolPlan] = []
    for op, name in zip(spec.operations, names, strict=True):
        if not include.is_empty() and not include.matches(op, name):
            continue
        if not exclude.is_empty() and exclude.matches(op, name):
            continue
        kept = _without_key_pairs(_without_headers(op, reserved_headers, problems, in_defs), problems)
        plans.append(_plan(kept, name, in_defs, out_defs, declared=op))
    return plans, problems


def _without_headers(op: Operation, reserved: frozenset[str], problems: list[Problem], defs: DefsIndex) -> Operation:
    kept = []
    for p in op.parameters:
        lowered = p.name.lower()
        undecodable = lowered == "accept-encoding" and _names_no_decoded_coding(p.schema, defs)
        if p.location != "header" or (lowered not in reserved and lowered not in SERVER_OWNED_HEADERS
                                      and not undecodable):
            kept.append(p)
            continue
        why = ("HTTP framing and hop-by-hop headers are set by the server, never by the caller"
               if lowered in SERVER_OWNED_HEADERS else
               "each value it allows names a coding this server does not decode (only gzip, deflate and identity)"
               if undecodable else
               "the server sets it (upstream.headers or auth.claim_to_header), so the caller may not")
        problems.append(Problem(op.pointer, f"header parameter {p.name!r} is left out of the tool: {why}"))
    return op if len(kept) == len(op.parameters) else replace(op, parameters=tuple(kept))


def _without_key_pairs(op: Operation, problems: list[Problem]) -> Operation:
    """Query parameters named by a literal pair of the path key's query string are the key's.

    opensuse.org's `.../{file_name}?view=fileinfo` also declares a query parameter `view`: sent
    beside the key's own pair, the query said `view` twice, which no reading of the key allows.
    """
    key = split_path_key(op.path)
    literal = {name for name, eq, value in (pair.partition("=") for pair in key.query.split("&") if pair)
               if eq and "{" not in value}
    if not literal:
        return op
    kept = []
    for p in op.parameters:
        if p.location == "query" and p.name in literal:
            problems.append(Problem(op.pointer, f"query parameter {p.name!r} is left out of the tool: the path key "
                                                f"sets it ({op.path!r})"))
        else:
            kept.append(p)
    return op if len(kept) == len(op.parameters) else replace(op, parameters=tuple(kept))


def _names_no_decoded_coding(schema: Any, defs: DefsIndex) -> bool:
    """An Accept-Encoding enum none of whose values the server could decode (conjur.local's `base64`)."""
    top = defs.deref(schema)
    values = top.get("enum") if isinstance(top, dict) else None
    return isinstance(values, list) and bool(values) and not any(
        isinstance(v, str) and names_decoded_codings(v) for v in values)


def _plan(op: Operation, name: str, in_defs: DefsIndex, out_defs: DefsIndex,
          declared: Operation | None = None) -> ToolPlan:
    input_schema, slots = build_input_schema(op, in_defs)
    binary = _binary_arguments(op, input_schema, slots, in_defs)
    output_schema, wraps = build_output_schema(op, out_defs)
    tool = types.Tool(
        name=name,
        title=op.summary,
        description=_description(op),
        input_schema=input_schema,
        output_schema=output_schema,
        annotations=_annotations(op),
        _meta={META_KEY: _operation_meta(op)},
    )
    return ToolPlan(
        name=name, operation=op, tool=tool, input_schema=input_schema, output_schema=output_schema,
        wraps_result=wraps, request=RequestTemplate.compile(name, op, slots, binary, declared=declared),
    )


def _binary_arguments(op: Operation, schema: JsonSchema, slots: Sequence[Slot], defs: DefsIndex) -> frozenset[str]:
    """Body arguments that carry file bytes: their schema becomes a base64 string."""
    body = op.request_body
    if body is None:
        return frozenset()
    essence = body.media_type.split(";", 1)[0].strip().lower()
    binary: set[str] = set()
    properties = schema["properties"]
    for slot in slots:
        if slot.location == "body_field" and essence == "multipart/form-data":
            prop = defs.deref(properties[slot.argument])
            if _is_file(prop):
                properties[slot.argument] = _base64_schema(prop)
                binary.add(slot.name)
        elif slot.location == "body" and not _is_textual(essence):
            prop = defs.deref(properties[slot.argument])
            if isinstance(prop, dict) and (prop.get("format") == "binary" or not prop.get("type")):
                properties[slot.argument] = _base64_schema(prop)
                binary.add(BODY)
    return frozenset(binary)


def _is_file(prop: Any) -> bool:
    """A file field: OAS 3.0 `format: binary`, or OAS 3.1 `contentMediaType` without an encoding."""
    if not isinstance(prop, dict):
        return False
    if prop.get("format") == "binary":
        return True
    media = prop.get("contentMediaType")
    return (isinstance(media, str) and "contentEncoding" not in prop and prop.get("type", "string") == "string"
            and not media.startswith("text/"))


def _base64_schema(prop: Mapping[str, Any]) -> JsonSchema:
    description = prop.get("description")
    text = f"{description} ({_BASE64_HINT})" if description else _BASE64_HINT
    return {"type": "string", "contentEncoding": "base64", "description": text}


def _is_textual(essence: str) -> bool:
    return essence.startswith("text/") or essence.endswith(("json", "xml")) or essence in (
        "application/x-www-form-urlencoded", "multipart/form-data")


def _description(op: Operation) -> str:
    parts = [p for p in (op.summary, op.description) if p]
    if len(parts) == 2 and parts[1].startswith(parts[0]):
        parts = parts[1:]
    text = "\n\n".join(parts) or f"{op.method} {op.path}"
    return f"(Deprecated) {text}" if op.deprecated else text


def _annotations(op: Operation) -> types.ToolAnnotations:
    method = op.method
    read_only = method in ("GET", "HEAD", "OPTIONS")
    return types.ToolAnnotations(
        title=op.summary,
        read_only_hint=read_only,
        destructive_hint=None if read_only else method == "DELETE",
        idempotent_hint=method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE"),
        open_world_hint=True,
    )


def _operation_meta(op: Operation) -> dict[str, Any]:
    meta: dict[str, Any] = {"method": op.method, "path": op.path}
    if op.operation_id is not None:
        meta["operationId"] = op.operation_id
    return meta
