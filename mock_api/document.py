"""Reading OpenAPI documents, and the copy of one that openapi-core validates requests against.

The copy differs from the document only where openapi-core 0.23 needs help; the numbers refer
to the QUIRK list in `mock_api.validation`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

import yaml

JsonObject = dict[str, Any]

HTTP_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PRIMITIVE_TYPES: Final = ("string", "integer", "number", "boolean")


class DocumentError(Exception):
    """The OpenAPI document cannot be read or is not one we can serve."""


def load_document(path: str | Path) -> JsonObject:
    """Read an OpenAPI document from a JSON or YAML file.

    Raises:
        DocumentError: the file is missing, unparsable, or not an OpenAPI 3.x document.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        document = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise DocumentError(f"{path}: cannot read the OpenAPI document: {exc}") from exc
    if not isinstance(document, dict):
        raise DocumentError(f"{path}: not an OpenAPI document (the top level is not a mapping)")
    version = str(document.get("openapi", document.get("swagger", "")))
    if not version.startswith("3."):
        raise DocumentError(f"{path}: OpenAPI version {version!r} is not supported; use 3.0, 3.1 or 3.2")
    return document


def _resolve(document: JsonObject, node: Any) -> Any:
    """Follow local `$ref`s (`#/...`) until a node that is not a reference."""
    for _ in range(64):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#"):
            return node
        node = document
        for token in filter(None, ref[1:].split("/")):
            token = unquote(token).replace("~1", "/").replace("~0", "~")
            node = node.get(token) if isinstance(node, dict) else None
    return node


def _server_paths(servers: Any) -> list[JsonObject]:
    """Keep only the path of each server URL, plus `/` (QUIRK 1)."""
    paths: list[str] = []
    for server in servers if isinstance(servers, list) else []:
        url = str(server.get("url", "")) if isinstance(server, dict) else ""
        if "://" in url:
            rest = url.split("://", 1)[1]
            url = "/" + rest.split("/", 1)[1] if "/" in rest else ""
        path = "/" + url.strip("/") if url.strip("/") else "/"
        if path not in paths:
            paths.append(path)
    if "/" not in paths:
        paths.append("/")
    variables = {}
    for server in servers if isinstance(servers, list) else []:
        if isinstance(server, dict) and isinstance(server.get("variables"), dict):
            variables.update(server["variables"])
    return [{"url": path, "variables": variables} if "{" in path else {"url": path} for path in paths]


def _cast_multipart_fields(document: JsonObject, media_type: JsonObject) -> None:
    """Give primitive and array properties of a multipart schema a form-style encoding (QUIRK 4)."""
    schema = _resolve(document, media_type.get("schema"))
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return
    encoding = media_type.setdefault("encoding", {})
    for name, prop in properties.items():
        prop = _resolve(document, prop)
        if name in encoding or not isinstance(prop, dict):
            continue
        items = _resolve(document, prop.get("items")) if prop.get("type") == "array" else None
        if prop.get("type") in ("integer", "number", "boolean") or (
            isinstance(items, dict) and items.get("type") in _PRIMITIVE_TYPES
        ):
            encoding[name] = {"style": "form", "explode": True}


def _single_parameter_types(document: JsonObject, parameters: Any) -> None:
    """Replace a `[T, "null"]` type list in parameter schemas by `T` (QUIRK 6)."""
    for param in parameters if isinstance(parameters, list) else []:
        param = _resolve(document, param)
        schema = _resolve(document, param.get("schema")) if isinstance(param, dict) else None
        types = schema.get("type") if isinstance(schema, dict) else None
        if isinstance(schema, dict) and isinstance(types, list) and len(set(types) - {"null"}) == 1:
            param["schema"] = {**schema, "type": next(t for t in types if t != "null")}


_IGNORED_HEADERS: Final = frozenset({"accept", "content-type", "authorization"})


def _drop_ignored_headers(document: JsonObject, holder: JsonObject) -> None:
    """Remove header parameters named Accept, Content-Type or Authorization (QUIRK 12).

    OAS 3.x §4.8.12.1: such parameter definitions SHALL be ignored (HTTP owns those headers);
    openapi-core validates them like any other and fails requests that lack them.
    """
    parameters = holder.get("parameters")
    if not isinstance(parameters, list):
        return
    kept = []
    for param in parameters:
        found = _resolve(document, param)
        if (isinstance(found, dict) and found.get("in") == "header"
                and str(found.get("name", "")).lower() in _IGNORED_HEADERS):
            continue
        kept.append(param)
    holder["parameters"] = kept


def validation_copy(document: JsonObject) -> JsonObject:
    """Return the copy of the document that openapi-core validates against (QUIRKs 1, 2, 4, 6, 12)."""
    doc = copy.deepcopy(document)
    doc["servers"] = _server_paths(doc.get("servers"))
    doc.pop("security", None)
    for path_item in (doc.get("paths") or {}).values():
        if not isinstance(path_item, dict):
            continue
        if "servers" in path_item:
            path_item["servers"] = _server_paths(path_item["servers"])
        _drop_ignored_headers(doc, path_item)
        _single_parameter_types(doc, path_item.get("parameters"))
        for method in HTTP_METHODS:
            operation = path_item.get(method)
            if not isinstance(operation, dict):
                continue
            operation.pop("security", None)
            _drop_ignored_headers(doc, operation)
            _single_parameter_types(doc, operation.get("parameters"))
            if "servers" in operation:
                operation["servers"] = _server_paths(operation["servers"])
            request_body = _resolve(doc, operation.get("requestBody"))
            content = request_body.get("content") if isinstance(request_body, dict) else None
            for media_name, media_type in (content or {}).items():
                if str(media_name).lower().startswith("multipart/form-data") and isinstance(media_type, dict):
                    _cast_multipart_fields(doc, media_type)
    return doc
