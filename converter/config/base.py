"""What every block of the config is built from: the strict model base, header names, URL checks."""

from __future__ import annotations

import re
from typing import Final, TypeVar

from pydantic import BaseModel, ConfigDict

HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token

_Url = TypeVar("_Url", str, None, "str | None")


class ConfigModel(BaseModel):
    """Unknown keys are errors, settings never change once read, and a YAML number where text is
    expected (`client_id: 12345`, a header value `2`) is that text."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


def http_url(value: _Url) -> _Url:
    """Shared check for every URL setting: None passes, anything else must be http(s)."""
    if value is not None and not str(value).startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, not {value!r}")
    return value
