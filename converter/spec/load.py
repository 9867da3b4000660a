"""Read an API description from a path or an http(s) URL and parse it as JSON or YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from converter.errors import SpecError

try:  # the C loader is ~10x faster on big specs
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _YamlLoader = yaml.SafeLoader

_FETCH_TIMEOUT = 30.0
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


def is_url(source: str) -> bool:
    """True when `source` names an http(s) URL rather than a file."""
    return urlsplit(source).scheme in ("http", "https")


def source_uri(source: str) -> str:
    """Return the absolute URI of a spec source (a file path becomes a file:// URI)."""
    if is_url(source):
        return source
    scheme = urlsplit(source).scheme
    if scheme == "file":
        return source
    if scheme and len(scheme) > 1:  # one letter is a Windows drive
        raise SpecError(f"{source}: only files and http(s) URLs can be read, not {scheme!r} URLs", source=source)
    return Path(source).expanduser().resolve().as_uri()


def read_text(uri: str, *, display: str | None = None) -> str:
    """Read the text behind a file:// or http(s) URI.

    Raises:
        SpecError: the file does not exist, cannot be read, or the URL does not answer 200.
    """
    name = display or uri
    parts = urlsplit(uri)
    if parts.scheme == "file":
        path = Path(_file_path(uri))
        try:
            if path.stat().st_size > MAX_DOCUMENT_BYTES:
                raise SpecError(f"{name}: the document is larger than {MAX_DOCUMENT_BYTES} bytes", source=name)
            return path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise SpecError(f"{name}: no such file", source=name) from exc
        except IsADirectoryError as exc:
            raise SpecError(f"{name}: is a directory, not an OpenAPI document", source=name) from exc
        except UnicodeDecodeError as exc:
            raise SpecError(f"{name}: is not UTF-8 text", source=name) from exc
        except OSError as exc:
            raise SpecError(f"{name}: cannot be read ({exc.strerror})", source=name) from exc
    if parts.scheme in ("http", "https"):
        try:
            response = httpx.get(uri, timeout=_FETCH_TIMEOUT, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise SpecError(f"{name}: cannot be fetched ({type(exc).__name__}: {exc})", source=name) from exc
        if response.status_code != 200:
            raise SpecError(f"{name}: fetching it answered HTTP {response.status_code}", source=name)
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise SpecError(f"{name}: the document is larger than {MAX_DOCUMENT_BYTES} bytes", source=name)
        return response.text
    raise SpecError(f"{name}: only files and http(s) URLs can be read, not {parts.scheme!r} URLs", source=name)


def parse_document(text: str, *, source: str) -> Any:
    """Parse JSON or YAML text (JSON is tried first: it is much faster and YAML is a superset).

    Raises:
        SpecError: the text is neither valid JSON nor valid YAML.
    """
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            pass  # fall through: YAML flow style also starts with `{`
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SpecError(f"{source}: is not valid JSON or YAML{where}: {exc.problem}", source=source) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: is not valid JSON or YAML: {exc}", source=source) from exc
    except RecursionError as exc:
        raise SpecError(f"{source}: is nested too deeply to be read", source=source) from exc


def load_document(source: str) -> tuple[Any, str]:
    """Read and parse the document at `source`; return it with its absolute URI."""
    uri = source_uri(source)
    return parse_document(read_text(uri, display=source), source=source), uri


def _file_path(uri: str) -> str:
    from urllib.request import url2pathname

    return url2pathname(urlsplit(uri).path)
