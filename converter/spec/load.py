"""Read an API description from a path or an http(s) URL and parse it as JSON or YAML."""

from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from converter.errors import SpecError


@functools.cache
def _yaml_loader() -> Any:
    """A safe YAML loader that stays inside JSON's data model: `2020-01-01` is a string, as in JSON.

    OpenAPI documents are JSON data; a YAML timestamp turned into a `date` would reach tool
    schemas (`default`, `example`) as a value no JSON encoder or validator accepts. Built on
    first use: a JSON spec (or a cached one) never needs PyYAML.
    """
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~10x faster on big specs

    class Loader(base):  # type: ignore[misc]
        yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML's own class attribute, replaced whole
            first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
            for first, resolvers in base.yaml_implicit_resolvers.items()
        }

    Loader.add_constructor("tag:yaml.org,2002:timestamp", Loader.construct_yaml_str)
    return Loader


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
    scheme = urlsplit(uri).scheme
    if scheme == "file":
        return decode_text(read_file(uri, display=name), name)
    if scheme in ("http", "https"):
        return _fetch(uri, name)
    raise SpecError(f"{name}: only files and http(s) URLs can be read, not {scheme!r} URLs", source=name)


def read_file(uri: str, *, display: str | None = None) -> bytes:
    """The bytes of the regular file behind a file:// URI, at most MAX_DOCUMENT_BYTES of them.

    Raises:
        SpecError: no such file, not a regular file, too big, or unreadable.
    """
    name = display or uri
    path = Path(_file_path(uri))
    try:
        if path.exists() and not path.is_file():
            raise SpecError(f"{name}: is not a regular file", source=name)  # /dev/zero, a FIFO, ...
        with path.open("rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError as exc:
        raise SpecError(f"{name}: no such file", source=name) from exc
    except IsADirectoryError as exc:
        raise SpecError(f"{name}: is a directory, not an OpenAPI document", source=name) from exc
    except OSError as exc:
        raise SpecError(f"{name}: cannot be read ({exc.strerror})", source=name) from exc
    if len(data) > MAX_DOCUMENT_BYTES:
        raise SpecError(f"{name}: the document is larger than {MAX_DOCUMENT_BYTES} bytes", source=name)
    return data


def decode_text(data: bytes, name: str) -> str:
    """Raises: SpecError when `data` is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{name}: is not UTF-8 text", source=name) from exc


def _fetch(uri: str, name: str) -> str:
    """GET a document with a size cap (decoded bytes) and a deadline for the whole transfer.

    Redirects are followed by hand, at most MAX_REDIRECTS of them, and only within the origin of
    `uri`: every hop is checked, so a same-origin `$ref` (or spec URL) that answers 302 to another
    host, a loopback address or a file:// URL cannot make us fetch it (SSRF).
    """
    import httpx

    from converter.bodies import ACCEPT_ENCODING, BodyDecodingError, BoundedBody

    deadline = time.monotonic() + _FETCH_TIMEOUT
    url, seen = uri, {uri}
    try:
        with httpx.Client(timeout=_FETCH_TIMEOUT, follow_redirects=False,
                          headers={"accept-encoding": ACCEPT_ENCODING}) as client:
            for _ in range(MAX_REDIRECTS + 1):
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = _next_hop(uri, url, response.headers["location"], seen, name)
                        continue
                    if response.status_code != 200:
                        raise SpecError(f"{name}: fetching it answered HTTP {response.status_code}", source=name)
                    consumed = response.is_stream_consumed  # made in memory (respx): already read and decoded
                    body = BoundedBody(None if consumed else response.headers.get("content-encoding"),
                                       MAX_DOCUMENT_BYTES)
                    for chunk in [response.content] if consumed else response.iter_raw():
                        if not body.add(chunk):
                            raise SpecError(f"{name}: the document is larger than {MAX_DOCUMENT_BYTES} bytes",
                                            source=name)
                        if time.monotonic() > deadline:
                            raise SpecError(f"{name}: fetching it took longer than {_FETCH_TIMEOUT:g} s",
                                            source=name)
                    data = body.finish()
                    encoding = response.encoding or "utf-8"
                    return data.decode(encoding, errors="replace")
    except BodyDecodingError as exc:
        raise SpecError(f"{name}: cannot be fetched ({exc})", source=name) from exc
    except httpx.HTTPError as exc:
        raise SpecError(f"{name}: cannot be fetched ({type(exc).__name__}: {exc})", source=name) from exc
    raise SpecError(f"{name}: more than {MAX_REDIRECTS} redirects", source=name)


MAX_REDIRECTS = 5


def _next_hop(first: str, current: str, location: str, seen: set[str], name: str) -> str:
    """The URL a redirect points at, if it may be followed: on the origin of `first`, never seen."""
    target = urldefrag(urljoin(current, location)).url
    if not same_origin(target, first):
        parts = urlsplit(first)
        raise SpecError(f"{name}: redirects to {target!r}, outside its origin {parts.scheme}://{parts.netloc}; "
                        "only redirects within the origin are followed", source=name)
    if target in seen:
        raise SpecError(f"{name}: redirect loop through {target!r}", source=name)
    seen.add(target)
    return target


def same_origin(a: str, b: str) -> bool:
    """RFC 6454 origins: scheme, host (case-insensitive) and port (the default one filled in)."""
    pa, pb = urlsplit(a), urlsplit(b)
    try:
        ports = (pa.port or _DEFAULT_PORTS.get(pa.scheme.lower()), pb.port or _DEFAULT_PORTS.get(pb.scheme.lower()))
    except ValueError:  # a port that is not a number
        return False
    return (pa.scheme.lower() == pb.scheme.lower() and pa.scheme.lower() in _DEFAULT_PORTS
            and (pa.hostname or "") == (pb.hostname or "") and ports[0] == ports[1])


_DEFAULT_PORTS = {"http": 80, "https": 443}


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
    import yaml

    try:
        doc = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a safe loader
        if _ALIAS.search(text):
            check_expansion(doc, source=source)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SpecError(f"{source}: is not valid JSON or YAML{where}: {exc.problem}", source=source) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: is not valid JSON or YAML: {exc}", source=source) from exc
    except RecursionError as exc:
        raise SpecError(f"{source}: is nested too deeply to be read", source=source) from exc


# A YAML alias (`*name` after a separator) can make a tiny text stand for billions of values.
_ALIAS = re.compile(r"(?:^|[\s\[{,:-])\*[^\s\[\]{},]+", re.M)
MAX_EXPANDED_VALUES = 10_000_000


def check_expansion(doc: Any, *, source: str, limit: int = MAX_EXPANDED_VALUES, skip_extensions: bool = True) -> None:
    """Refuse a document whose aliases expand past `limit` values (billion laughs).

    Counts each shared node once per use (what every later walk would pay), in linear time over
    the distinct nodes. Top-level `x-` extensions are not read by anything, so they do not count.

    Raises:
        SpecError: the expanded size is over the limit.
    """
    roots = [v for k, v in doc.items() if not (skip_extensions and str(k).startswith("x-"))] \
        if isinstance(doc, dict) else [doc]
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False) for root in roots]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, (dict, list)) or (not children_done and id(node) in sizes):
            continue
        children = list(node.values()) if isinstance(node, dict) else node
        if children_done:
            total = 1 + sum(sizes.get(id(c), 1) for c in children)
            sizes[id(node)] = total
            if total > limit:
                raise SpecError(f"{source}: expands to more than {limit:,} values through YAML aliases; refused",
                                source=source)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list)) and id(c) not in sizes)


def load_document(source: str) -> tuple[Any, str]:
    """Read and parse the document at `source`; return it with its absolute URI."""
    uri = source_uri(source)
    return parse_document(read_text(uri, display=source), source=source), uri


def _file_path(uri: str) -> str:
    from urllib.request import url2pathname

    return url2pathname(urlsplit(uri).path)
