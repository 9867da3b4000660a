"""Media types and content codings of an upstream request: the Content-Type a body is sent
with, a `content` parameter's text, a form body, and the Accept-Encoding values a call may send."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from converter.errors import ArgumentError
from converter.invoke import serialize
from converter.models import Parameter

_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_PARAMETER: Final = re.compile(rf"\s*{_TOKEN}\s*=\s*(?:{_TOKEN}|\"(?:[^\"\\]|\\.)*\")\s*")


def concrete_media_type(media_range: str, body: Any, *, binary: bool) -> str:
    """What to call a body the document allows under a media range (RFC 9110 §12.5.1)."""
    if binary:
        return "application/octet-stream"
    if media_range.startswith("text/") or (media_range == "*/*" and isinstance(body, str)):
        return "text/plain; charset=utf-8"
    return "application/json"


def content_text(param: Parameter, value: Any) -> str:
    """A `content` parameter's value in its media type: JSON text for a JSON one, strings included
    (OAS 3.x §4.8.12: stream-io-api.com's path `name` as `application/json` is `"L"`, not `L`)."""
    essence = (param.content_type or "").split(";", 1)[0].strip().lower()
    if essence == "application/json" or essence.endswith("+json"):
        return json.dumps(serialize.whole_floats_as_ints(value), separators=(",", ":"), ensure_ascii=False)
    return serialize.scalar(value)


def is_form_media(media_type: str | None) -> bool:
    essence = (media_type or "").split(";", 1)[0].strip().lower()
    return essence in ("application/x-www-form-urlencoded", "multipart/form-data")


def well_formed_media_type(media_type: str) -> str:
    """The document's media type without the parameters that are not `name=value` (RFC 9110 §8.3.1).

    anchore.io writes `text/plain; utf-8`; as a Content-Type that is malformed, so it is sent as
    `text/plain`. A quoted value with a `;` in it keeps the media type as written.
    """
    essence, _, rest = media_type.partition(";")
    if not rest or '"' in rest:
        return media_type
    parameters = rest.split(";")
    kept = [p.strip() for p in parameters if _MEDIA_PARAMETER.fullmatch(p)]
    if len(kept) == len(parameters):
        return media_type  # as written: loket.nl's server may compare `application/json;version=2018-01-01` as text
    return "; ".join([essence.strip(), *kept])


def form_urlencoded(body: Any) -> str:
    pairs: list[str] = []
    for name, value in (body.items() if isinstance(body, Mapping) else ()):
        if isinstance(value, list):  # OAS: form fields default to style form, explode true
            pairs.extend(f"{serialize.encode(name)}={serialize.encode(serialize.scalar(v))}" for v in value)
        elif isinstance(value, Mapping):
            pairs.extend(
                f"{serialize.encode(str(k))}={serialize.encode(serialize.scalar(v))}" for k, v in value.items()
            )
        elif value is not None:
            pairs.append(f"{serialize.encode(name)}={serialize.encode(serialize.scalar(value))}")
    return "&".join(pairs)


_DECODED_CODINGS: Final = frozenset({"gzip", "x-gzip", "deflate", "identity", "*"})


def names_decoded_codings(value: str) -> bool:
    """Does an Accept-Encoding value name only codings this server decodes (see `check_codings`)?"""
    return not {part.split(";", 1)[0].strip().lower() for part in value.split(",") if part.strip()} - _DECODED_CODINGS


def check_codings(tool: str, argument: str, value: str) -> None:
    """A document may declare Accept-Encoding; a value may only name codings this server decodes in
    bounded steps (converter.bodies): another one could come back as a body nothing here can cap.

    Raises:
        ArgumentError: the value names another coding.
    """
    names = {part.split(";", 1)[0].strip().lower() for part in value.split(",") if part.strip()}
    others = sorted(names - _DECODED_CODINGS)
    if others:
        raise ArgumentError(f"{tool}: argument {argument!r} names {', '.join(map(repr, others))} in Accept-Encoding; "
                            "this server accepts only gzip, deflate or identity answers", tool=tool,
                            json_path=f"$.{argument}")
