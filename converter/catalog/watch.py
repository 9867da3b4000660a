"""What triggers a reload (converter.catalog.reload): SIGHUP always; with `reload.watch` (or
`--watch`) a change of the config file, of a spec file or of a file a spec references, and a
changed URL spec.

Files are polled every `POLL_SECONDS` (no watcher dependency; works on network file systems and
in containers with bind mounts): a change of size or modification time is confirmed by the hash
of the content, so touching a file does not reload, and a change is reloaded only once the file
has stopped changing for `SETTLE_SECONDS` (an editor's save in several writes is one reload).
URL specs are fetched every `reload.interval` seconds with a conditional GET (`If-None-Match`
with the last ETag, `If-Modified-Since` with the last `Last-Modified`): 304 costs nothing, and a
200 is a change only when its validator or its content differs.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import anyio

from converter.catalog.catalog import Catalog
from converter.catalog.dynamic import DynamicCatalog
from converter.catalog.reload import Reloader
from converter.spec.load import MAX_REDIRECTS, same_origin

log = logging.getLogger("openapi_mcp")

POLL_SECONDS: Final = 1.0
SETTLE_SECONDS: Final = 0.3
_FETCH_TIMEOUT: Final = 30.0
_MAX_BYTES: Final = 64 * 1024 * 1024

Signature = tuple[int, int, str] | None  # (mtime_ns, size, sha256) of a file; None: missing


def watched(reloader: Reloader) -> tuple[list[Path], list[str]]:
    """The files (the config file, spec files and the files they reference) and the URL specs
    (and the URL documents they reference) the running settings read."""
    catalog = reloader.live.current
    inner = catalog.inner if isinstance(catalog, DynamicCatalog) else catalog
    files: dict[Path, None] = {}
    urls: dict[str, None] = {}
    if reloader.settings.config_file:
        files[Path(reloader.settings.config_file).resolve()] = None
    for uri in _documents(inner):
        scheme = urlsplit(uri).scheme
        if scheme == "file":
            files[Path(url2pathname(urlsplit(uri).path))] = None
        elif scheme in ("http", "https"):
            urls[uri] = None
    return list(files), list(urls)


def _documents(catalog: Catalog) -> Iterable[str]:
    for source in catalog.sources:
        yield from source.files


def signature(path: Path, known: Signature = None) -> Signature:
    """The file's (mtime, size, content hash); the hash is only computed when mtime or size moved."""
    try:
        info = path.stat()
        if known is not None and (info.st_mtime_ns, info.st_size) == known[:2]:
            return known
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, digest


def same_content(a: Signature, b: Signature) -> bool:
    return (a is None) == (b is None) and (a is None or b is None or a[2] == b[2])


class FileWatch:
    """The files a reloader's settings read, and whether any of them changed since the last look."""

    def __init__(self, reloader: Reloader) -> None:
        self._reloader = reloader
        self._known: dict[Path, Signature] = {}
        self.rebase()

    def rebase(self, *, fresh: bool = False) -> None:
        """Follow the files the settings read now (after a reload they may differ): a new file is
        taken as it is; a known one keeps its last look, so an edit made during the reload is
        still seen as a change (`fresh`: take every file as it is now)."""
        files, _ = watched(self._reloader)
        known = {} if fresh else self._known
        self._known = {path: known[path] if path in known else signature(path) for path in files}

    def changed(self) -> list[Path]:
        """The files whose content differs from the last look (their new state is taken)."""
        moved = []
        for path, known in list(self._known.items()):
            now = signature(path, known)
            if not same_content(now, known):
                moved.append(path)
            self._known[path] = now
        return moved


@dataclass
class _Validators:
    etag: str | None = None
    last_modified: str | None = None
    digest: str | None = None


class UrlWatch:
    """Conditional GETs of the URL specs, every `reload.interval` seconds."""

    def __init__(self, reloader: Reloader, *, transport: Any = None) -> None:
        self._reloader = reloader
        self._transport = transport
        self._seen: dict[str, _Validators] = {}
        self._failing: set[str] = set()
        self.next_at = 0.0

    async def changed(self) -> list[str]:
        """The URL documents that changed since the last poll (the first poll takes them as they are)."""
        import httpx

        _, urls = watched(self._reloader)
        moved = []
        async with httpx.AsyncClient(timeout=_FETCH_TIMEOUT, follow_redirects=False, transport=self._transport,
                                     trust_env=False) as client:
            for url in urls:
                if await self._poll(client, url):
                    moved.append(url)
        return moved

    async def _poll(self, client: Any, url: str) -> bool:
        import httpx

        seen = self._seen.get(url)
        headers = {}
        if seen is not None and seen.etag:
            headers["if-none-match"] = seen.etag
        if seen is not None and seen.last_modified:
            headers["if-modified-since"] = seen.last_modified
        try:
            target = url
            for _ in range(MAX_REDIRECTS + 1):
                async with client.stream("GET", target, headers=headers) as response:
                    if not response.has_redirect_location:
                        now = await self._answer(url, response)
                        break
                    # Followed as the loader follows them: only within the document's origin (SSRF).
                    location = urljoin(target, response.headers.get("location", ""))
                    if not same_origin(location, url):
                        self._failed(url, f"it redirects to {location!r}, outside its origin")
                        return False
                    target = location
            else:
                self._failed(url, "too many redirects")
                return False
        except httpx.HTTPError as exc:
            self._failed(url, f"{type(exc).__name__}: {exc}")
            return False
        if now is None:
            return False
        self._recovered(url)
        self._seen[url] = now
        return seen is not None and seen.digest != now.digest

    async def _answer(self, url: str, response: Any) -> _Validators | None:
        """The validators and content hash of a 200 answer; None for a 304 (unchanged) or a failure."""
        if response.status_code == 304:
            self._recovered(url)
            return None
        if response.status_code != 200:
            self._failed(url, f"HTTP {response.status_code}")
            return None
        digest = hashlib.sha256()
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > _MAX_BYTES:
                break  # too large: a reload reports it
            digest.update(chunk)
        return _Validators(response.headers.get("etag"), response.headers.get("last-modified"), digest.hexdigest())

    def _failed(self, url: str, why: str) -> None:
        if url not in self._failing:  # once per outage, not every interval
            self._failing.add(url)
            log.warning("reload: polling %s failed (%s); still serving what was loaded before", url, why)

    def _recovered(self, url: str) -> None:
        self._failing.discard(url)


async def watch(reloader: Reloader, *, poll_seconds: float = POLL_SECONDS, url_transport: Any = None) -> None:
    """Reload on SIGHUP, and (while `reload.watch` is on) when a watched file or URL changes. Runs until cancelled."""
    async with anyio.create_task_group() as tasks:
        if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
            tasks.start_soon(_on_sighup, reloader)
        files = FileWatch(reloader)
        urls = UrlWatch(reloader, transport=url_transport)
        watching = reloader.settings.reload.watch
        while True:
            await anyio.sleep(poll_seconds)
            if not reloader.settings.reload.watch:
                watching = False
                continue
            try:
                if not watching:  # turned on by a reload: start from the files as they are
                    watching = True
                    files.rebase(fresh=True)
                    continue
                await _look(reloader, files, urls, poll_seconds)
            except Exception:  # a bug of ours here must not stop the server (or the next look)
                log.exception("reload: watching the config and specs failed; trying again")


async def _look(reloader: Reloader, files: FileWatch, urls: UrlWatch, poll_seconds: float) -> None:
    moved = files.changed()
    if moved:
        await _settle(files, poll_seconds)
        await reloader.reload(f"file changed: {moved[0]}")
        files.rebase()
    if time.monotonic() >= urls.next_at:
        urls.next_at = time.monotonic() + reloader.settings.reload.interval
        changed = await urls.changed()
        if changed:
            await reloader.reload(f"URL changed: {changed[0]}")
            files.rebase()


async def _settle(files: FileWatch, poll_seconds: float) -> None:
    """Wait until the changed files stop changing (an editor's save in several writes), bounded."""
    for _ in range(max(1, round(5 / SETTLE_SECONDS))):
        await anyio.sleep(min(SETTLE_SECONDS, poll_seconds))
        if not files.changed():
            return


async def _on_sighup(reloader: Reloader) -> None:
    with anyio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            await reloader.reload("SIGHUP")
