"""OpenAPI parameter serialization (OAS 3.x §4.8.12.4 style values) and percent-encoding."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import quote

# RFC 3986 reserved characters a parameter may carry unencoded when allowReserved is true, minus
# the ones that would change the query's meaning: '&' (a new parameter), '#' (cuts the URL) and '+'
# (read as a space) (OAS 3.1.1 §4.8.12.4.1 and Appendix E say these stay percent-encoded).
_RESERVED = ":/?[]@!$'()*,;="


def scalar(value: Any) -> str:
    """The text form of a primitive value (booleans as JSON does, not as Python does)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 2.0 is a JSON Schema integer; servers typed `integer` refuse "2.0"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def encode(text: str, *, allow_reserved: bool = False) -> str:
    """Percent-encode everything but unreserved characters (and reserved ones if allowed)."""
    return quote(text, safe=_RESERVED if allow_reserved else "")


def path_value(value: Any, style: str, explode: bool, name: str) -> str:
    """Serialize a path parameter value, already percent-encoded (simple, label or matrix style)."""
    if style == "label":
        prefix, sep = ".", "." if explode else ","
    elif style == "matrix":
        return _matrix(value, explode, name)
    else:
        prefix, sep = "", ","
    if isinstance(value, list):
        return prefix + sep.join(encode(scalar(v)) for v in value)
    if isinstance(value, Mapping):
        if explode:
            return prefix + sep.join(f"{encode(str(k))}={encode(scalar(v))}" for k, v in value.items())
        return prefix + sep.join(f"{encode(str(k))},{encode(scalar(v))}" for k, v in value.items())
    return prefix + encode(scalar(value))


def _matrix(value: Any, explode: bool, name: str) -> str:
    key = encode(name)
    if isinstance(value, list):
        if explode:
            return "".join(f";{key}={encode(scalar(v))}" for v in value)
        return f";{key}=" + ",".join(encode(scalar(v)) for v in value)
    if isinstance(value, Mapping):
        if explode:
            return "".join(f";{encode(str(k))}={encode(scalar(v))}" for k, v in value.items())
        return f";{key}=" + ",".join(f"{encode(str(k))},{encode(scalar(v))}" for k, v in value.items())
    return f";{key}={encode(scalar(value))}"


def query_pairs(
    name: str, value: Any, style: str, explode: bool, allow_reserved: bool
) -> list[str]:
    """Serialize one query parameter into encoded `key=value` pieces (joined later with `&`)."""
    key = encode(name)

    def enc(v: Any) -> str:
        return encode(scalar(v), allow_reserved=allow_reserved)

    if isinstance(value, list):
        if style == "spaceDelimited" and not explode:
            return [f"{key}=" + "%20".join(enc(v) for v in value)]
        if style == "pipeDelimited" and not explode:
            return [f"{key}=" + "|".join(enc(v) for v in value)]
        if explode:
            return [f"{key}={enc(v)}" for v in value]
        return [f"{key}=" + ",".join(enc(v) for v in value)]
    if isinstance(value, Mapping):
        if style == "deepObject":
            return [f"{key}%5B{encode(str(k))}%5D={enc(v)}" for k, v in value.items()]
        if explode:
            return [f"{encode(str(k))}={enc(v)}" for k, v in value.items()]
        return [f"{key}=" + ",".join(f"{encode(str(k))},{enc(v)}" for k, v in value.items())]
    return [f"{key}={enc(value)}"]


def unescaped_delimiters(location: str, style: str, explode: bool, value: Any) -> str:
    """The characters that separate the parts of `value` on the wire with no way to escape them.

    Header values are never percent-encoded, so the simple style's ',' (and '=' between an exploded
    object's keys and values) cannot appear inside a part. A spaceDelimited item's space is sent as
    %20, the delimiter's own bytes; a pipeDelimited item's '|' as %7C, which is what HTTP stacks turn
    the delimiter into. OAS 3.1.1 §4.8.12.4 leaves such collisions to the user. RFC 6570 styles
    (form, simple, label, matrix in the query, path and cookies) percent-encode a delimiter inside an
    item, so they carry any value.
    """
    if location == "header":
        if isinstance(value, list):
            return ","
        if isinstance(value, Mapping):
            return ",=" if explode else ","
    elif location == "query" and isinstance(value, list) and not explode:
        if style == "spaceDelimited":
            return " "
        if style == "pipeDelimited":
            return "|"
    return ""


def delimiter_inside(value: Any, delimiters: str) -> str | None:
    """The first of `delimiters` found inside an item of a list or a key or value of an object."""
    if isinstance(value, Mapping):
        parts = [text for k, v in value.items() for text in (str(k), scalar(v))]
    elif isinstance(value, list):
        parts = [scalar(v) for v in value]
    else:
        return None
    for delimiter in delimiters:
        if any(delimiter in part for part in parts):
            return delimiter
    return None


def header_value(value: Any, explode: bool) -> str:
    """Serialize a header parameter (simple style); the caller refuses CR/LF."""
    if isinstance(value, list):
        return ",".join(scalar(v) for v in value)
    if isinstance(value, Mapping):
        if explode:
            return ",".join(f"{k}={scalar(v)}" for k, v in value.items())
        return ",".join(f"{k},{scalar(v)}" for k, v in value.items())
    return scalar(value)


def cookie_pair(name: str, value: Any, explode: bool) -> str:
    """Serialize a cookie parameter (form style) into `name=value`."""
    if isinstance(value, list):
        return f"{name}=" + ",".join(encode(scalar(v)) for v in value)
    if isinstance(value, Mapping):
        return f"{name}=" + ",".join(f"{encode(str(k))},{encode(scalar(v))}" for k, v in value.items())
    return f"{name}={encode(scalar(value))}"


class Part(NamedTuple):
    """One part of a multipart/form-data body."""

    name: str
    data: bytes
    content_type: str | None = None
    filename: str | None = None


def multipart(parts: Sequence[Part]) -> tuple[bytes, str]:
    """Encode multipart/form-data (RFC 7578); returns the body and its boundary."""
    boundary = secrets.token_hex(16)
    out: list[bytes] = []
    for part in parts:
        disposition = f'form-data; name="{_quote_param(part.name)}"'
        if part.filename is not None:
            disposition += f'; filename="{_quote_param(part.filename)}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if part.content_type:
            head += f"Content-Type: {part.content_type}\r\n"
        out.append(head.encode() + b"\r\n" + part.data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), boundary


def _quote_param(value: str) -> str:
    # RFC 7578 §4.2 / HTML: percent-encode the characters that would end the quoted string.
    return value.replace("\\", "%5C").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def whole_floats_as_ints(value: Any) -> Any:
    """JSON bodies: 2.0 passes `type: integer`, so send it as 2 (typed servers refuse 2.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: whole_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_floats_as_ints(v) for v in value]
    return value
