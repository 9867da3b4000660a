"""A disk cache of compiled tools, so a big spec is converted once, not at every start.

Converting GitHub's REST spec (13 MB, 1,223 operations) costs ~0.5 s and ~40 MB of peak memory
at every start; reading the compiled result back costs ~0.07 s. An entry is keyed by everything
the result depends on: the bytes of the spec and of every file it references, the source name,
the include/exclude selection, the reserved headers, and the code that compiled it (a digest of
this package's source and the versions of Python, the MCP SDK and pydantic). Change any of them
and the entry is not found; a changed referenced file is caught by re-hashing it on every hit.

Only file specs whose references stay in files are cached: a document fetched over HTTP may
change without notice and is converted every time.

Entries are pickles, so the directory must be trustworthy: it is created private (0700) and
refused, with a warning, when another user owns it or others can write to it. An unreadable or
stale entry is a miss, never an error: the spec is converted as if there were no cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from converter.models import Problem, Spec
from converter.spec.load import decode_text, parse_document, read_file, read_text, source_uri
from converter.tools.plan import Selection, ToolPlan, build_plans

log = logging.getLogger("openapi_mcp.cache")

ENV_DIR = "OPENAPI_MCP_CACHE_DIR"
MAX_ENTRIES = 16  # newest kept; one entry per (spec, selection) a user serves
_FORMAT = 1

Compiled = tuple[Spec, list[ToolPlan], list[Problem]]
_EVERYTHING = Selection()  # include: no filter
_NOTHING = Selection()  # exclude: no filter


def default_directory() -> Path:
    """$OPENAPI_MCP_CACHE_DIR, else $XDG_CACHE_HOME/openapi-mcp, else ~/.cache/openapi-mcp."""
    explicit = os.environ.get(ENV_DIR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "openapi-mcp"


@dataclass(frozen=True, slots=True)
class _Entry:
    format: int
    dependencies: tuple[tuple[str, str], ...]  # (file URI, sha256 of its text) of every referenced file
    value: Compiled


class CompileCache:
    """Compile a spec's tools, or read them back from `directory` (None: no cache, always compile)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = _usable(directory) if directory is not None else None
        self.hits = 0
        self.misses = 0
        # The URI of every document compiled or read back, and of every document they reference:
        # what a live reload watches (converter.catalog.watch).
        self.files: list[str] = []

    def compile(self, source: str, *, include: Selection = _EVERYTHING, exclude: Selection = _NOTHING,
                reserved_headers: frozenset[str] = frozenset()) -> Compiled:
        """The spec at `source` and its plans, as `load_spec` + `build_plans` would give them.

        Raises:
            SpecError: as `load_spec` does (nothing is cached then).
        """
        uri = source_uri(source)
        self.files.append(uri)
        if self.directory is None or not uri.startswith("file:"):
            def noting_read(dep_uri: str) -> str:
                self.files.append(dep_uri)
                return read_text(dep_uri)

            return _build(read_text(uri, display=source), uri, source, include, exclude, reserved_headers,
                          noting_read)
        data = read_file(uri, display=source)
        key = _digest(_code_digest(), source, uri, _sha(data), repr(include), repr(exclude),
                      ",".join(sorted(reserved_headers)))
        path = self.directory / f"{key}.pickle"
        found = self._read(path)
        if found is not None:
            self.hits += 1
            self.files.extend(dep_uri for dep_uri, _ in found[1])
            return found[0]
        self.misses += 1
        deps: list[tuple[str, str]] = []
        cacheable = True

        def recording_read(dep_uri: str) -> str:
            nonlocal cacheable
            dep_text = read_text(dep_uri)
            self.files.append(dep_uri)
            deps.append((dep_uri, _sha(dep_text.encode())))  # the file's bytes: it decoded as strict UTF-8
            cacheable = cacheable and dep_uri.startswith("file:")
            return dep_text

        text = decode_text(data, source)
        del data  # 13 MB for GitHub's spec: not kept through the conversion
        value = _build(text, uri, source, include, exclude, reserved_headers, recording_read)
        if cacheable:
            self._write(path, _Entry(_FORMAT, tuple(deps), value))
        return value

    def _read(self, path: Path) -> tuple[Compiled, tuple[tuple[str, str], ...]] | None:
        try:
            with path.open("rb") as handle:
                entry = pickle.load(handle)  # noqa: S301 - our own private directory, checked by _usable
            if not isinstance(entry, _Entry) or entry.format != _FORMAT:
                return None
            for dep_uri, digest in entry.dependencies:
                if _sha(read_file(dep_uri)) != digest:
                    log.debug("cache entry %s is stale: %s changed", path.name, dep_uri)
                    return None
            os.utime(path)  # most recently used: kept longest by _prune
            return entry.value, entry.dependencies
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign entry is a miss, the spec is converted
            log.debug("cache entry %s not used: %s: %s", path.name, type(exc).__name__, exc)
            return None

    def _write(self, path: Path, entry: _Entry) -> None:
        assert self.directory is not None
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as handle:
                pickle.dump(entry, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
            _prune(self.directory)
        except Exception as exc:  # noqa: BLE001 - a full disk or an unpicklable plan costs speed, not correctness
            log.warning("could not write the compiled-tools cache in %s: %s", self.directory, exc)
            tmp.unlink(missing_ok=True)


def _build(text: str, uri: str, source: str, include: Selection, exclude: Selection,
           reserved: frozenset[str], read: Callable[[str], str]) -> Compiled:
    from converter.spec import spec_from_document  # the converter proper: not imported when the cache answers

    spec = spec_from_document(parse_document(text, source=source), uri, source=source, read=read)
    plans, naming = build_plans(spec, include=include, exclude=exclude, reserved_headers=reserved)
    return spec, plans, naming


def _usable(directory: Path) -> Path | None:
    """`directory`, created private if missing; None (with a warning) if it cannot be trusted."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as exc:
        log.warning("compiled-tools cache disabled: cannot create %s (%s)", directory, exc.strerror or exc)
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning("compiled-tools cache disabled: %s must be a directory owned by this user and writable "
                    "by no one else", directory)
        return None
    return directory


def _prune(directory: Path) -> None:
    entries = sorted(directory.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[MAX_ENTRIES:]:
        old.unlink(missing_ok=True)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:40]


@cache
def _code_digest() -> str:
    """What compiled the entry: this package's source and the versions of what shapes a plan."""
    from importlib.metadata import version

    h = hashlib.sha256(f"{_FORMAT}|{sys.version}|mcp {version('mcp')}|pydantic {version('pydantic')}".encode())
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()
