"""Follow `$ref`s inside one document and across relative files or same-origin URLs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit
from urllib.request import url2pathname

from converter.errors import SpecError
from converter.spec.load import parse_document, read_text

_MAX_CHAIN = 64


def escape_pointer_token(token: str) -> str:
    """Escape one JSON Pointer reference token (RFC 6901 §3)."""
    return token.replace("~", "~0").replace("/", "~1")


def _unescape(token: str) -> str:
    return unquote(token).replace("~1", "/").replace("~0", "~")


class Resolver:
    """Looks up `$ref` targets, loading referenced files once each.

    A document read from a file may reference other files; one read from a URL may reference
    URLs of the same origin. Anything else is refused (SSRF: a spec must not make us fetch
    arbitrary hosts).
    """

    def __init__(
        self,
        root: Any,
        root_uri: str,
        *,
        read: Callable[[str], str] = read_text,
        prepare: Callable[[Any, str], Any] | None = None,
    ) -> None:
        self.root_uri = urldefrag(root_uri).url
        self._docs: dict[str, Any] = {self.root_uri: root}
        self._read = read
        self._prepare = prepare
        self._origin = _origin(self.root_uri)
        # Files a document may pull in: its own directory and below (a downloaded spec must not be
        # able to read ~/.aws/credentials and serve it in tools/list).
        self._root_dir = _file_dir(self.root_uri)

    def document(self, uri: str) -> Any:
        """Return the parsed document at `uri` (without fragment), loading it on first use."""
        doc_uri = urldefrag(uri).url
        if doc_uri in self._docs:
            return self._docs[doc_uri]
        if _origin(doc_uri) != self._origin or not self._inside_root(doc_uri):
            raise SpecError(
                f"$ref to {doc_uri!r} is refused: a document may only reference files in its own directory "
                "(or below it) or URLs on its own host",
                source=self.root_uri,
            )
        doc = parse_document(self._read(doc_uri), source=doc_uri)
        if self._prepare is not None:
            doc = self._prepare(doc, doc_uri)
        self._docs[doc_uri] = doc
        return doc

    def lookup(self, ref: str, base: str) -> tuple[Any, str]:
        """Return the target of `ref` (relative to document `base`) and its absolute URI."""
        if not isinstance(ref, str):
            raise SpecError(f"$ref must be a string, not {type(ref).__name__}", source=base)
        absolute = urljoin(base, ref) if ref and not ref.startswith("#") else urldefrag(base).url + ref
        doc_uri, fragment = urldefrag(absolute)
        node = self.document(doc_uri)
        if fragment and not fragment.startswith("/"):
            raise SpecError(f"$ref {ref!r}: only JSON Pointer fragments are supported", source=base)
        for token in fragment.split("/")[1:] if fragment else ():
            key = _unescape(token)
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise SpecError(f"$ref {ref!r} points at nothing", source=base)
        return node, f"{doc_uri}#{fragment}"

    def deref(self, node: Any, base: str) -> tuple[Any, str]:
        """Follow a chain of `$ref`s (for non-schema objects) to the object it ends at."""
        seen: set[str] = set()
        while isinstance(node, dict) and "$ref" in node:
            node, where = self.lookup(node["$ref"], base)
            base = urldefrag(where).url
            if where in seen or len(seen) > _MAX_CHAIN:
                raise SpecError(f"$ref loop through {where!r}", source=base)
            seen.add(where)
        return node, base


    def _inside_root(self, uri: str) -> bool:
        if self._root_dir is None:
            return True
        directory = _file_dir(uri)
        target = Path(url2pathname(urlsplit(uri).path)).resolve()
        return directory is not None and target.is_relative_to(self._root_dir)


def _file_dir(uri: str) -> Path | None:
    if urlsplit(uri).scheme != "file":
        return None
    return Path(url2pathname(urlsplit(uri).path)).resolve().parent


def _origin(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    return parts.scheme, parts.netloc
