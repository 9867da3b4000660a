"""A small multipart/form-data parser for the mocks (RFC 7578).

openapi-core deserializes multipart bodies through the stdlib `email` parser, which drops the
file names the echo mock reports; this parser keeps every part's name, file name, content type
and bytes, and `multipart_loads` plugs it into openapi-core.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from typing import Any

from starlette.datastructures import ImmutableMultiDict


@dataclass(frozen=True)
class MultipartPart:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(body: bytes, boundary: str) -> list[MultipartPart]:
    """Split a multipart/form-data body into its parts (RFC 7578 / RFC 2046 §5.1.1).

    Raises:
        ValueError: the body is not well-formed multipart with this boundary.
    """
    sections = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        raise ValueError("multipart body without a closing boundary")
    parts = []
    for section in sections[1:-1]:
        line_end = section.find(b"\r\n")  # the rest of the delimiter line is transport padding
        if line_end < 0:
            raise ValueError("multipart part without headers")
        rest = section[line_end + 2 :]
        if rest.startswith(b"\r\n"):  # a part without any header lines
            head, data = b"", rest[2:]
        else:
            head, separator, data = rest.partition(b"\r\n\r\n")
            if not separator:
                raise ValueError("multipart part headers are not terminated")
        headers = Message()
        for line in head.decode("utf-8", errors="replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip()] = value.strip()
        field_name = headers.get_param("name", header="content-disposition")
        if not isinstance(field_name, str):
            raise ValueError("multipart part without a name in Content-Disposition")
        parts.append(MultipartPart(field_name, headers.get_filename(), headers.get("content-type"), data))
    return parts


def multipart_loads(value: bytes, **parameters: str) -> ImmutableMultiDict[str, Any]:
    """Deserialize multipart/form-data for openapi-core: text parts as `str`, files as `bytes`.

    Replaces openapi-core's own deserializer, which goes through the stdlib `email` parser
    and loses file names (see QUIRK 4 in `mock_api.validation`).
    """
    boundary = parameters.get("boundary")
    if not boundary:
        raise ValueError("multipart/form-data without a boundary parameter")
    items: list[tuple[str, Any]] = []
    for part in parse_multipart(value, boundary):
        is_text = part.filename is None and (part.content_type or "text/plain").startswith("text/")
        if is_text:
            charset = Message()
            charset["content-type"] = part.content_type or "text/plain"
            try:
                items.append((part.name, part.data.decode(charset.get_content_charset("utf-8"))))
                continue
            except (LookupError, UnicodeDecodeError):
                pass
        items.append((part.name, part.data))
    return ImmutableMultiDict(items)


def multipart_parts(content_type: str, body: bytes) -> list[MultipartPart]:
    """Return the parts of a multipart/form-data body, or [] when it is not one (or is broken)."""
    if not content_type.lower().startswith("multipart/form-data"):
        return []
    message = Message()
    message["content-type"] = content_type
    boundary = message.get_boundary()
    try:
        return parse_multipart(body, boundary) if boundary else []
    except ValueError:
        return []
