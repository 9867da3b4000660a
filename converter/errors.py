"""The exception hierarchy: every error a user can cause is one of these.

```
ConverterError
├── ConfigError      bad setting: names the key and the file (or the flag)
├── SpecError        bad OpenAPI document: carries .pointer (JSON Pointer) and .source (file)
├── ArgumentError    tool arguments fail the input schema: carries .tool and .json_path
└── UpstreamError    network failure, timeout or non-2xx: carries .method, .url, .status
```

Only these cross a module boundary; third-party exceptions are translated where they occur,
chained with ``raise ... from exc``.
"""

from __future__ import annotations


class ConverterError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(ConverterError):
    """A setting is missing or wrong."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.source = source


class SpecError(ConverterError):
    """The OpenAPI document cannot be read or an operation in it cannot be converted."""

    def __init__(self, message: str, *, pointer: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.pointer = pointer
        self.source = source


class ArgumentError(ConverterError):
    """Tool arguments do not satisfy the tool's input schema."""

    def __init__(self, message: str, *, tool: str, json_path: str = "$") -> None:
        super().__init__(message)
        self.tool = tool
        self.json_path = json_path


class UpstreamError(ConverterError):
    """The upstream API could not be reached, timed out, or answered with an error status."""

    def __init__(self, message: str, *, method: str, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status
