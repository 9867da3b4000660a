"""Turn validated tool arguments into the upstream HTTP request, following a compiled plan."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from converter.errors import ArgumentError
from converter.invoke import media, serialize
from converter.models import Operation, Parameter, Slot, compact_pickle
from converter.spec.pathkey import split_path_key

_TEMPLATE_PART = re.compile(r"{([^{}/]+)}")
_BAD_HEADER_CHARS = re.compile(r"[\r\n\x00]")
_PERCENT_ESCAPE: Final = re.compile(r"(%[0-9A-Fa-f]{2})")


@dataclass(slots=True)
class HttpRequest:
    """Everything needed to send one upstream request (fed to `httpx.AsyncClient.build_request`)."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None = None
    template: str = ""  # the path template, for logs and messages
    # Headers the HTTP client must not add on its own: an operation that declares Accept-Encoding gets
    # exactly the value given, or none (the client's default would not be one the document allows).
    skip_defaults: tuple[str, ...] = ()


@compact_pickle
@dataclass(slots=True)
class RequestTemplate:
    """The per-tool, precomputed part of request building: where each argument goes and how."""

    tool: str
    method: str
    path_parts: tuple[str | Slot, ...]
    path_template: str
    slots: tuple[Slot, ...]
    params: dict[str, Parameter]  # argument name -> parameter, for path/query/header/cookie slots
    body_media_type: str | None
    body_required: bool
    body_encoding: Mapping[str, str]
    binary_fields: frozenset[str]  # body arguments whose value is base64 to be sent as bytes
    accept: str
    base_url: str | None
    static_headers: dict[str, str] = field(default_factory=dict)
    # The query string a path key carries (`/forecast?city={city}`): (encoded name, value pieces)
    # per pair, a piece being literal text or the slot whose value goes there; `None` for `?flag`.
    key_query: tuple[tuple[str, tuple[str | Slot, ...] | None], ...] = ()
    key_arguments: frozenset[str] = frozenset()  # the arguments placed by `key_query`
    declares_accept_encoding: bool = False

    @classmethod
    def compile(
        cls, tool: str, op: Operation, slots: tuple[Slot, ...], binary_fields: frozenset[str],
        *, declared: Operation | None = None,
    ) -> RequestTemplate:
        """Precompute everything that does not depend on argument values.

        `declared` is the operation as the document declares it, when header parameters were left out
        of `op`: one that declares Accept-Encoding gets none from the HTTP client either.
        """
        by_wire = {(s.name, s.location): s for s in slots}
        key = split_path_key(op.path)  # a fragment is never sent; a query string joins the query
        parts = _pieces(key.path, lambda name: by_wire[(name, "path")])
        key_query: list[tuple[str, tuple[str | Slot, ...] | None]] = []
        for pair in filter(None, key.query.split("&")):
            name, eq, value = pair.partition("=")
            found = _pieces(value, lambda var: by_wire.get((var, "path")) or by_wire[(var, "query")])
            key_query.append((_literal(name), tuple(found) if eq else None))
        params = {
            s.argument: p
            for s in slots
            for p in op.parameters
            if s.location == p.location and s.name == p.name
        }
        response = op.response
        accept = response.media_type if response and response.media_type else "application/json"
        body = op.request_body
        placed = frozenset(p.argument for _, pieces in key_query for p in pieces or () if isinstance(p, Slot))
        return cls(
            tool=tool, method=op.method,
            path_parts=tuple(_path_literal(p) if isinstance(p, str) else p for p in parts if p != ""),
            key_query=tuple(key_query), key_arguments=placed,
            declares_accept_encoding=any(p.location == "header" and p.name.lower() == "accept-encoding"
                                         for p in (declared or op).parameters),
            path_template=op.path, slots=slots, params=params,
            body_media_type=media.well_formed_media_type(body.media_type) if body else None,
            body_required=body.required if body else False,
            body_encoding=dict(body.encoding) if body else {},
            binary_fields=binary_fields, accept=accept, base_url=op.base_url,
        )

    def build(self, arguments: Mapping[str, Any], base_url: str, extra_headers: Mapping[str, str] = {}) -> HttpRequest:
        """Build the request for already validated `arguments`.

        Raises:
            ArgumentError: a value cannot be placed safely (a path segment `.`/`..`/empty, CR/LF in a header,
                a list item holding its own delimiter where it cannot be escaped).
        """
        path: list[str] = []
        for part in self.path_parts:
            if isinstance(part, str):
                path.append(part)
                continue
            value = arguments.get(part.argument)
            param = self.params[part.argument]
            if isinstance(value, dict) and not param.content_type:
                value = {k: v for k, v in value.items() if v is not None}  # RFC 6570 §2.3, as below
            text = (serialize.encode(media.content_text(param, value)) if param.content_type
                    else serialize.path_value(value, param.style, param.explode, param.name))
            if text in ("", ".", "..") or value is None:
                raise ArgumentError(
                    f"{self.tool}: argument {part.argument!r} must not be empty, '.' or '..' "
                    "(it is a path segment)", tool=self.tool, json_path=f"$.{part.argument}",
                )
            path.append(text)
        query = self._key_query(arguments) if self.key_query else []
        headers: dict[str, str] = {"accept": self.accept}
        cookies: list[str] = []
        body_fields: dict[str, Any] = {}
        whole_body: Any = _MISSING
        for slot in self.slots:
            if slot.argument not in arguments or slot.argument in self.key_arguments:
                continue
            value = arguments[slot.argument]
            location = slot.location
            if location in ("query", "header", "cookie") and isinstance(value, dict) \
                    and not self.params[slot.argument].content_type:
                # RFC 6570 §2.3: a pair whose value is undefined (null) is left out of an object
                # (visualstudio.com's header object: `clientTenantId=` is not a uuid)
                value = {k: v for k, v in value.items() if v is not None}
            if location in ("query", "header", "cookie") and _undefined(value, self.params[slot.argument]):
                continue  # RFC 6570 §2.3: empty lists and objects are undefined; "" needs allowEmptyValue
            if location == "query" and value == "":
                raise ArgumentError(f"Invalid arguments for tool {self.tool!r} at $.{slot.argument}: must not be "
                                    "empty (a required query parameter)", tool=self.tool,
                                    json_path=f"$.{slot.argument}")
            if location in ("query", "header") and not self.params[slot.argument].content_type:
                self._check_delimiters(slot.argument, self.params[slot.argument], value)
            if location == "query":
                p = self.params[slot.argument]
                if p.content_type:
                    query.append(f"{serialize.encode(p.name)}={serialize.encode(media.content_text(p, value))}")
                else:
                    query.extend(serialize.query_pairs(p.name, value, p.style, p.explode, p.allow_reserved))
            elif location == "header":
                p = self.params[slot.argument]
                text = media.content_text(p, value) if p.content_type else serialize.header_value(value, p.explode)
                if _BAD_HEADER_CHARS.search(text) or not text.isascii():
                    raise ArgumentError(
                        f"{self.tool}: argument {slot.argument!r} must be ASCII without CR, LF or NUL (it is sent "
                        f"as the header {p.name!r})", tool=self.tool, json_path=f"$.{slot.argument}",
                    )
                if p.name.lower() == "accept-encoding":
                    media.check_codings(self.tool, slot.argument, text)
                headers[p.name] = text
            elif location == "cookie":
                p = self.params[slot.argument]
                cookies.append(serialize.cookie_pair(p.name, value, p.explode))
            elif location == "body_field":
                body_fields[slot.name] = value
            elif location == "body":
                whole_body = value
        if cookies:
            _put(headers, {"cookie": "; ".join(cookies)})
        # Configured headers (credentials) win over arguments, and claim headers over both, whatever
        # the case of their names: one value each, never the caller's next to the configured one.
        _put(headers, self.static_headers)
        _put(headers, extra_headers)
        url = base_url.rstrip("/") + "".join(path)
        if query:
            url += "?" + "&".join(query)
        request = HttpRequest(method=self.method, url=url, headers=headers, template=self.path_template)
        if self.declares_accept_encoding and not any(k.lower() == "accept-encoding" for k in headers):
            request.skip_defaults = ("accept-encoding",)
        if whole_body == {} and not self.body_required and media.is_form_media(self.body_media_type):
            whole_body = _MISSING  # an empty form is no body (as with no field given): codat.io's optional multipart
        if self.body_media_type is not None and (body_fields or whole_body is not _MISSING or self.body_required):
            # A required body goes out even when none of its (optional) fields were given.
            self._encode_body(request, body_fields if whole_body is _MISSING else whole_body)
        return request

    def _key_query(self, arguments: Mapping[str, Any]) -> list[str]:
        """The pairs of the path key's query string, each value encoded once."""
        pairs: list[str] = []
        for name, pieces in self.key_query:
            if pieces is None:
                pairs.append(name)
                continue
            text: list[str] = []
            for piece in pieces:
                if isinstance(piece, str):
                    text.append(_literal(piece))
                    continue
                value = arguments.get(piece.argument)
                if value is None and piece.location == "query":
                    break  # an optional query parameter left out: its pair goes with it
                if value is None or _undefined(value, self.params[piece.argument]) or value == "":
                    raise ArgumentError(
                        f"{self.tool}: argument {piece.argument!r} must not be empty (it is part of the query "
                        "string of the path key)", tool=self.tool, json_path=f"$.{piece.argument}",
                    )
                text.append(serialize.path_value(value, "simple", False, piece.name))
            else:
                pairs.append(f"{name}={''.join(text)}")
        return pairs

    def _check_delimiters(self, argument: str, param: Parameter, value: Any) -> None:
        """Refuse a list item or object entry that holds its own (unescapable) delimiter."""
        delimiter = serialize.delimiter_inside(
            value, serialize.unescaped_delimiters(param.location, param.style, param.explode, value))
        if delimiter is None:
            return
        part = "a key or value" if isinstance(value, Mapping) else "an item"
        where = f"the header {param.name!r}" if param.location == "header" else \
            f"the {param.style} query parameter {param.name!r}"
        raise ArgumentError(
            f"{self.tool}: argument {argument!r} must not contain {delimiter!r} inside {part} (it separates the "
            f"parts of {where} and cannot be escaped there)", tool=self.tool, json_path=f"$.{argument}",
        )

    def _encode_body(self, request: HttpRequest, body: Any) -> None:
        media_type = self.body_media_type or "application/json"
        essence = media_type.split(";", 1)[0].strip().lower()
        if "*" in essence:  # a media range (`*/*`, `text/*`) names no media type: send a concrete one
            media_type = media.concrete_media_type(essence, body, binary="body" in self.binary_fields)
            essence = media_type.split(";", 1)[0]
        if essence == "multipart/form-data":
            parts = self._parts(body)
            if not parts:  # RFC 2046 §5.1.1: a multipart body has at least one part
                fields = ", ".join(s.argument for s in self.slots if s.location == "body_field")
                wanted = f"give at least one of: {fields}" if fields else "give it at least one field"
                raise ArgumentError(f"{self.tool}: the request body is required; {wanted}", tool=self.tool)
            content, boundary = serialize.multipart(parts)
            request.headers["content-type"] = f"multipart/form-data; boundary={boundary}"
            request.content = content
            return
        if essence == "application/x-www-form-urlencoded":
            request.headers["content-type"] = media_type
            request.content = media.form_urlencoded(body).encode()
            return
        request.headers["content-type"] = media_type
        if essence == "application/json" or essence.endswith("+json"):
            body = serialize.whole_floats_as_ints(body)
            request.content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        elif "body" in self.binary_fields:
            request.content = self._decode("body", body)
        elif isinstance(body, str):
            request.content = body.encode()
        else:
            request.content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    def _parts(self, body: Any) -> list[serialize.Part]:
        """Multipart parts (OAS 3.x §4.8.14.3): files as bytes, arrays as one part per item,
        objects as application/json, primitives as text; `encoding.contentType` wins."""
        parts: list[serialize.Part] = []
        for name, value in (body.items() if isinstance(body, Mapping) else ()):
            declared = self.body_encoding.get(name)
            if name in self.binary_fields:
                parts.append(
                    serialize.Part(name, self._decode(name, value), declared or "application/octet-stream", name)
                )
                continue
            if value is None:
                continue  # a form has no null (openai.com's `n`: '' is not an integer): the field is left out
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, (dict, list)):
                    data = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
                    parts.append(serialize.Part(name, data, declared or "application/json"))
                else:
                    parts.append(serialize.Part(name, serialize.scalar(item).encode(), declared))
        return parts

    def _decode(self, name: str, value: Any) -> bytes:
        try:
            return base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ArgumentError(
                f"{self.tool}: argument {name!r} must be base64-encoded file content", tool=self.tool,
                json_path=f"$.{name}",
            ) from exc


def _put(headers: dict[str, str], winners: Mapping[str, str]) -> None:
    """Set `winners` in `headers`, removing any header of the same name in another case first."""
    if not winners:
        return
    names = {name.lower() for name in winners}
    for name in [n for n in headers if n.lower() in names]:
        del headers[name]
    headers.update(winners)


def _pieces(template: str, slot_of: Any) -> list[str | Slot]:
    """`template` as literal text and the slots of its `{variables}`."""
    pieces: list[str | Slot] = []
    pos = 0
    for match in _TEMPLATE_PART.finditer(template):
        pieces.append(template[pos:match.start()])
        pieces.append(slot_of(match.group(1)))
        pos = match.end()
    pieces.append(template[pos:])
    return [p for p in pieces if p != ""]


def _path_literal(text: str) -> str:
    """Literal text of a path key as a path may carry it (RFC 3986 §3.3: pchar and '/').

    apisetu.gov.in's keys have spaces (`/Your Pull URI Request API Path`), others non-ASCII letters:
    sent as written, they make a request line no server can read. Such characters are
    percent-encoded (UTF-8); an escape the key already has (`%20`) is kept as written.
    """
    return "".join(piece if index % 2 else quote(piece, safe="!$&'()*+,;=:@/~")
                   for index, piece in enumerate(_PERCENT_ESCAPE.split(text)))


def _literal(text: str) -> str:
    """Literal text of a path key's query string, as written: only what a URL cannot carry is encoded."""
    return quote(text, safe="!$&'()*+,/:;=?@[]~%")


def _undefined(value: Any, param: Parameter) -> bool:
    if value is None or value == [] or value == {}:
        return True
    return value == "" and not param.required and param.location == "query"


class _Missing:
    pass


_MISSING: Any = _Missing()
