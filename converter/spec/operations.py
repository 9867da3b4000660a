"""Walk `paths` and turn every operation into an `Operation` record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

from converter.errors import SpecError
from converter.models import HTTP_METHODS, Operation, Parameter, Problem, RequestBody, Response
from converter.spec.pathkey import split_path_key
from converter.spec.resolve import Resolver, escape_pointer_token
from converter.spec.schema import SchemaConverter

_LOCATIONS = ("path", "query", "header", "cookie")
# OAS 3.x §4.8.12.1: these header parameters SHALL be ignored (HTTP owns them).
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
CONVERSION_ERROR = "x-openapi-mcp-error"  # set by the Swagger 2.0 conversion on parts it could not convert
_BODY_PREFERENCE = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")


def is_json_media_type(media_type: str) -> bool:
    """True for application/json and its relatives (`+json`, `json-patch`, `x-ndjson` excluded)."""
    essence = media_type.split(";", 1)[0].strip().lower()
    return essence == "application/json" or essence.endswith("+json") or essence == "text/json"


def resolve_servers(servers: Any, base_uri: str) -> tuple[str, ...]:
    """Server URLs with `{variables}` replaced by their defaults, made absolute where possible."""
    urls: list[str] = []
    for server in servers if isinstance(servers, list) else ():
        if not isinstance(server, dict) or not isinstance(server.get("url"), str):
            continue
        url = server["url"]
        raw_variables = server.get("variables")
        variables: dict[str, Any] = raw_variables if isinstance(raw_variables, dict) else {}
        for name, var in variables.items():
            default = var.get("default") if isinstance(var, dict) else None
            if default is not None:
                url = url.replace("{" + name + "}", str(default))
        if base_uri.startswith(("http://", "https://")) and not url.startswith(("http://", "https://")):
            url = urljoin(base_uri, url)  # OAS: a relative server URL is relative to the document
        urls.append(url)
    return tuple(urls)


class OperationBuilder:
    """Builds `Operation`s from one loaded document; problems are collected, not raised."""

    def __init__(self, doc: Mapping[str, Any], resolver: Resolver, schemas: SchemaConverter) -> None:
        self._doc = doc
        self._resolver = resolver
        self._schemas = schemas
        self.problems: list[Problem] = []

    def build_all(self) -> list[Operation]:
        """Return every convertible operation; the rest become fatal `Problem`s."""
        operations: list[Operation] = []
        paths = self._doc.get("paths")
        if paths is None:
            return operations
        if not isinstance(paths, dict):
            raise SpecError("#/paths: must be an object", pointer="#/paths")
        root = self._resolver.root_uri
        global_security = self._doc.get("security")
        for path, item in paths.items():
            if isinstance(path, str) and path.startswith("x-"):
                continue  # a specification extension, not a path (OAS 3.x §4.8.8)
            item_pointer = f"#/paths/{escape_pointer_token(str(path))}"
            if not isinstance(path, str) or not path.startswith("/"):
                self.problems.append(Problem(item_pointer, "a path must start with '/'; skipped", fatal=True))
                continue
            try:
                item, item_base = self._resolver.deref(item, root)
            except SpecError as exc:
                self.problems.append(Problem(item_pointer, f"{exc}; skipped", fatal=True))
                continue
            if not isinstance(item, dict) or item.get("x-mcp-exclude") is True:
                continue
            if isinstance(item.get(CONVERSION_ERROR), str):
                self.problems.append(Problem(item_pointer, f"{_strip_pointer(item[CONVERSION_ERROR], item_pointer)}; "
                                                           "skipped", fatal=True))
                continue
            for method in HTTP_METHODS:
                op = item.get(method)
                if op is None:
                    continue
                pointer = f"{item_pointer}/{method}"
                if not isinstance(op, dict):
                    self.problems.append(Problem(pointer, "an operation must be an object; skipped", fatal=True))
                    continue
                if op.get("x-mcp-exclude") is True:
                    continue
                if isinstance(op.get(CONVERSION_ERROR), str):
                    self.problems.append(Problem(pointer, f"{_strip_pointer(op[CONVERSION_ERROR], pointer)}; skipped",
                                                 fatal=True))
                    continue
                try:
                    operations.append(self._operation(path, method, op, item, item_base, pointer, global_security))
                except SpecError as exc:
                    self.problems.append(Problem(pointer, f"{_strip_pointer(str(exc), pointer)}; skipped", fatal=True))
        return operations

    # -- one operation ---------------------------------------------------------------------

    def _operation(
        self, path: str, method: str, op: dict[str, Any], item: dict[str, Any], base: str,
        pointer: str, global_security: Any,
    ) -> Operation:
        key = split_path_key(path)
        if key.fragment_variables:
            raise SpecError(f"{pointer}: the path key has {{{key.fragment_variables[0]}}} after '#', in the URL "
                            "fragment, which is never sent")
        if key.query:
            self.problems.append(Problem(pointer, f"the path key carries the query string {key.query!r} (OpenAPI "
                                                  "path keys are paths); its pairs are sent as query parameters"))
        parameters = self._parameters(path, item.get("parameters"), op.get("parameters"), base, pointer)
        servers = op.get("servers") or item.get("servers")
        base_urls = resolve_servers(servers, self._resolver.root_uri) if servers else ()
        mcp_name = op.get("x-mcp-name")
        if mcp_name is not None and not isinstance(mcp_name, str):
            raise SpecError(f"{pointer}: x-mcp-name must be a string")
        return Operation(
            method=method.upper(),
            path=path,
            pointer=pointer,
            operation_id=op["operationId"] if isinstance(op.get("operationId"), str) else None,
            summary=_text(op.get("summary")),
            description=_text(op.get("description")),
            tags=tuple(t for t in op.get("tags", ()) if isinstance(t, str)) if isinstance(op.get("tags"), list) else (),
            parameters=parameters,
            request_body=self._request_body(op.get("requestBody"), base, pointer),
            response=self._response(op.get("responses"), base, pointer),
            security=_security(op.get("security", global_security), pointer),
            deprecated=op.get("deprecated") is True,
            mcp_name=mcp_name,
            base_url=base_urls[0] if base_urls else None,
        )

    def _parameters(self, path: str, shared: Any, own: Any, base: str, pointer: str) -> tuple[Parameter, ...]:
        merged: dict[tuple[str, str], Parameter] = {}
        for where, group in ((pointer.rsplit("/", 1)[0], shared), (pointer, own)):
            if group is None:
                continue
            if not isinstance(group, list):
                raise SpecError(f"{where}/parameters: must be a list")
            for i, raw in enumerate(group):
                param = self._parameter(raw, base, f"{where}/parameters/{i}")
                if param is not None:
                    # operation level overrides path level; header names are case-insensitive (RFC 9110 §5.1)
                    name = param.name.lower() if param.location == "header" else param.name
                    merged[(name, param.location)] = param
        key = split_path_key(path)
        in_template = set(key.path_variables) | set(key.query_variables)
        # A variable in the key's query string may be declared `in: query` (medium.com) or `in: path`.
        declared = {name for name, location in merged
                    if location == "path" or (location == "query" and name in key.query_variables)}
        for name in dict.fromkeys([*key.path_variables, *key.query_variables]):
            if name not in declared:
                self.problems.append(
                    Problem(pointer, f"path parameter {name!r} is not declared; treated as a required string")
                )
                merged[(name, "path")] = Parameter(name=name, location="path", schema={"type": "string"},
                                                   required=True, style="simple", explode=False)
        for (name, location) in list(merged):
            if location == "path" and name not in in_template:
                self.problems.append(Problem(pointer, f"path parameter {name!r} is not in the path {path!r}; ignored"))
                del merged[(name, location)]
        self._report_clashing_keys(list(merged.values()), pointer)
        return tuple(merged.values())

    def _report_clashing_keys(self, parameters: list[Parameter], pointer: str) -> None:
        """An exploded form object's properties are query keys of their own: say where they clash."""
        owner: dict[str, str] = {p.name: p.name for p in parameters if p.location == "query"}
        for param in parameters:
            if param.location != "query" or param.style != "form" or not param.explode or param.content_type:
                continue
            schema = param.schema
            ref = schema.get("$ref") if isinstance(schema, dict) else None
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                schema = self._schemas.defs["in"].get(ref[len("#/$defs/"):], {})
            properties = schema.get("properties") if isinstance(schema, dict) else None
            for key in properties if isinstance(properties, dict) else ():
                other = owner.setdefault(key, param.name)
                if other != param.name:
                    first, second = sorted((param.name, other))
                    self.problems.append(Problem(pointer, f"query parameters {first!r} and {second!r} both put {key!r} "
                                                          "in the query (an exploded object's properties are query "
                                                          "keys of their own); the upstream cannot tell them apart"))

    def _parameter(self, raw: Any, base: str, where: str) -> Parameter | None:
        node, node_base = self._resolver.deref(raw, base)
        if not isinstance(node, dict):
            raise SpecError(f"{where}: a parameter must be an object")
        name, location = node.get("name"), node.get("in")
        if not isinstance(name, str) or not name:
            # Nothing can be sent for it; the rest of the operation still works.
            self.problems.append(Problem(where, f"a parameter needs a non-empty string 'name', not {name!r}; ignored"))
            return None
        if location not in _LOCATIONS:
            raise SpecError(
                f"{where}: parameter {name!r} has 'in' {location!r}; expected one of {', '.join(_LOCATIONS)}"
            )
        if location == "header" and name.lower() in _IGNORED_HEADERS:
            return None
        content_type = None
        if isinstance(node.get("schema"), (dict, bool)):
            schema = self._schemas.convert(node["schema"], node_base, "in", f"{where}/schema")
            nested = self._nested(node["schema"], node_base)
            if nested:  # OAS 3.x §4.8.12.4: styles are defined for primitives, arrays of them and flat objects
                self.problems.append(Problem(where, f"no OpenAPI style serializes {nested} ({location} parameter "
                                                    f"{name!r}); the tool sends each of them as JSON text"))
        elif isinstance(node.get("content"), dict) and node["content"]:
            content_type, media = next(iter(node["content"].items()))
            raw_schema = media.get("schema", {}) if isinstance(media, dict) else {}
            schema = self._schemas.convert(raw_schema, node_base, "in", f"{where}/content")
        else:
            schema = {"type": "string"}
        default_style = "simple" if location in ("path", "header") else "form"
        raw_style = node.get("style")
        style: str = raw_style if isinstance(raw_style, str) else default_style
        explode = node.get("explode")
        description = _text(node.get("description"))
        if isinstance(schema, dict) and description and "description" not in schema:
            schema = {**schema, "description": description}
        return Parameter(
            name=name,
            location=location,
            schema=schema,
            required=True if location == "path" else node.get("required") is True,
            description=description,
            style=style,
            explode=explode if isinstance(explode, bool) else style == "form",
            allow_reserved=node.get("allowReserved") is True,
            content_type=content_type,
        )

    def _nested(self, raw_schema: Any, base: str) -> str | None:
        """What a parameter schema nests that no serialization style defines, or None."""
        def kind(node: Any, node_base: str) -> tuple[dict[str, Any], str | None, str]:
            try:
                found, found_base = self._resolver.deref(node, node_base)
            except SpecError:
                return {}, None, node_base
            for _ in range(8):  # AWS wraps items as allOf [$ref, {xml: ...}]: the first branch says what it is
                if isinstance(found, dict) and "type" not in found and isinstance(found.get("allOf"), list) \
                        and found["allOf"]:
                    try:
                        found, found_base = self._resolver.deref(found["allOf"][0], found_base)
                    except SpecError:
                        return {}, None, node_base
            if not isinstance(found, dict):
                return {}, None, node_base
            declared = found.get("type")
            if declared is None and isinstance(found.get("properties"), dict):
                declared = "object"
            return found, declared if isinstance(declared, str) else None, found_base

        top, top_kind, top_base = kind(raw_schema, base)
        if top_kind == "array":
            item_kind = kind(top.get("items"), top_base)[1]
            return {"object": "a list of objects", "array": "a list of lists"}.get(item_kind or "")
        if top_kind == "object":
            props: dict[str, Any] = top["properties"] if isinstance(top.get("properties"), dict) else {}
            if any(kind(prop, top_base)[1] in ("object", "array") for prop in props.values()):
                return "an object with objects or lists in it"
        return None

    def _request_body(self, raw: Any, base: str, pointer: str) -> RequestBody | None:
        if raw is None:
            return None
        where = f"{pointer}/requestBody"
        node, node_base = self._resolver.deref(raw, base)
        if not isinstance(node, dict):
            raise SpecError(f"{where}: must be an object")
        if not isinstance(node.get("content"), dict) or not node["content"]:
            self.problems.append(
                Problem(where, "has no media types in 'content'; the operation is called without a body")
            )
            return None
        content: dict[str, Any] = node["content"]
        media_type = _choose_media_type(content)
        media = content[media_type] if isinstance(content[media_type], dict) else {}
        raw_schema = media.get("schema", {})
        schema = self._schemas.convert(
            raw_schema, node_base, "in", f"{where}/content/{escape_pointer_token(media_type)}/schema"
        )
        self._check_body_type(media_type, raw_schema, node_base, where)
        encoding = {
            prop: enc["contentType"]
            for prop, enc in (media.get("encoding") or {}).items()
            if isinstance(enc, dict) and isinstance(enc.get("contentType"), str)
        }
        return RequestBody(media_type=media_type, schema=schema, required=node.get("required") is True,
                           description=_text(node.get("description")), encoding=encoding)

    def _check_body_type(self, media_type: str, raw_schema: Any, base: str, where: str) -> None:
        """Refuse a form body that is not an object; say where an object goes out as JSON text."""
        node, _ = self._resolver.deref(raw_schema, base)
        kind = node.get("type") if isinstance(node, dict) else None
        essence = media_type.split(";", 1)[0].strip().lower()
        if essence in ("multipart/form-data", "application/x-www-form-urlencoded"):
            if isinstance(kind, str) and kind != "object":
                operation = where.rsplit("/", 1)[0]
                raise SpecError(f"{operation}: its {essence} body carries fields (an object), not type {kind!r}")
        elif kind in ("object", "array") and not is_json_media_type(essence) and "*" not in essence:
            self.problems.append(Problem(where, f"the body is an {kind} but its media type {essence} has no JSON form; "
                                                "it is sent as JSON text"))

    def _response(self, raw: Any, base: str, pointer: str) -> Response | None:
        if not isinstance(raw, dict):
            return None
        codes = sorted(str(code) for code in raw if str(code).startswith("2"))
        if not codes:
            return None
        status = codes[0]
        key = status if status in raw else int(status)
        node, node_base = self._resolver.deref(raw[key], base)
        if not isinstance(node, dict):
            return None
        content = node.get("content")
        if not isinstance(content, dict) or not content:
            return Response(status=status, media_type=None, schema=None, description=_text(node.get("description")))
        json_types = [mt for mt in content if is_json_media_type(mt)]
        media_type = json_types[0] if json_types else next(iter(content))
        schema = None
        media = content[media_type]
        if json_types and isinstance(media, dict) and "schema" in media:
            where = f"{pointer}/responses/{status}/content/{escape_pointer_token(media_type)}/schema"
            schema = self._schemas.convert(media["schema"], node_base, "out", where)
        return Response(status=status, media_type=media_type, schema=schema, description=_text(node.get("description")))


def _choose_media_type(content: Mapping[str, Any]) -> str:
    for preferred in _BODY_PREFERENCE:
        for media_type in content:
            if media_type.split(";", 1)[0].strip().lower() == preferred:
                return media_type
    for media_type in content:
        if is_json_media_type(media_type):
            return media_type
    return next(iter(content))


def _security(raw: Any, pointer: str) -> tuple[Mapping[str, tuple[str, ...]], ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise SpecError(f"{pointer}/security: must be a list of security requirement objects")
    alternatives = []
    for requirement in raw:
        if isinstance(requirement, dict):
            alternatives.append({
                str(name): tuple(s for s in scopes if isinstance(s, str)) if isinstance(scopes, list) else ()
                for name, scopes in requirement.items()
            })
    return tuple(alternatives)


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _strip_pointer(message: str, pointer: str) -> str:
    prefix = f"{pointer}: "
    return message[len(prefix):] if message.startswith(prefix) else message
