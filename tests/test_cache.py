"""The compiled-tools cache: hits only when nothing the result depends on has changed."""

from __future__ import annotations

import json
import logging
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from converter.cli import main
from converter.tools.cache import MAX_ENTRIES, CompileCache
from converter.tools.plan import Selection
from tests.conftest import openapi


def _write(path: Path, paths: dict[str, Any], **extra: Any) -> Path:
    path.write_text(json.dumps(openapi(paths, **extra)))
    return path


def _get(op_id: str, **extra: Any) -> dict[str, Any]:
    return {"get": {"operationId": op_id, "responses": {"200": {"description": "ok"}}, **extra}}


def _dump(compiled: Any) -> list[dict[str, Any]]:
    _spec, plans, _naming = compiled
    return [plan.tool.model_dump(mode="json", by_alias=True, exclude_none=True) for plan in plans]


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_second_compile_reads_the_same_tools_back(tmp_path: Path, cache_dir: Path) -> None:
    spec = _write(tmp_path / "api.json", {"/a/{id}": {**_get("getA"), "parameters": [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]}})
    first = CompileCache(cache_dir).compile(str(spec))
    again = CompileCache(cache_dir)
    second = again.compile(str(spec))
    assert (again.hits, again.misses) == (1, 0)
    assert _dump(second) == _dump(first)
    plan = second[1][0]
    plan.validate_arguments({"id": 3})  # the read-back plan is a working plan
    assert plan.request.base_url == first[1][0].request.base_url


def test_a_changed_spec_is_converted_again(tmp_path: Path, cache_dir: Path) -> None:
    spec = _write(tmp_path / "api.json", {"/a": _get("getA")})
    CompileCache(cache_dir).compile(str(spec))
    _write(spec, {"/a": _get("getA"), "/b": _get("getB")})
    cache = CompileCache(cache_dir)
    _spec, plans, _ = cache.compile(str(spec))
    assert cache.misses == 1 and [p.name for p in plans] == ["getA", "getB"]


def test_a_changed_referenced_file_is_converted_again(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "item.json").write_text(json.dumps({"type": "object", "properties": {"a": {"type": "string"}}}))
    spec = _write(tmp_path / "api.json", {"/a": {"post": {
        "operationId": "postA", "responses": {"200": {"description": "ok"}},
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "item.json"}}}}}}})
    CompileCache(cache_dir).compile(str(spec))
    hit = CompileCache(cache_dir)
    hit.compile(str(spec))
    assert hit.hits == 1
    (tmp_path / "item.json").write_text(json.dumps({"type": "object", "properties": {"b": {"type": "integer"}}}))
    stale = CompileCache(cache_dir)
    _spec, plans, _ = stale.compile(str(spec))
    assert stale.misses == 1
    assert "b" in json.dumps(plans[0].input_schema) and '"a"' not in json.dumps(plans[0].input_schema["properties"])


def test_the_selection_is_part_of_the_key(tmp_path: Path, cache_dir: Path) -> None:
    spec = _write(tmp_path / "api.json", {"/a": _get("getA", tags=["x"]), "/b": _get("getB")})
    CompileCache(cache_dir).compile(str(spec))
    cache = CompileCache(cache_dir)
    _spec, plans, _ = cache.compile(str(spec), include=Selection(tags=("x",)))
    assert cache.misses == 1 and [p.name for p in plans] == ["getA"]
    _spec, plans, _ = cache.compile(str(spec), reserved_headers=frozenset({"x-user"}))
    assert cache.misses == 2 and len(plans) == 2


def test_a_damaged_entry_is_a_miss_and_is_rewritten(tmp_path: Path, cache_dir: Path) -> None:
    spec = _write(tmp_path / "api.json", {"/a": _get("getA")})
    CompileCache(cache_dir).compile(str(spec))
    [entry] = cache_dir.glob("*.pickle")
    entry.write_bytes(b"\x80\x05garbage")
    cache = CompileCache(cache_dir)
    assert [p.name for p in cache.compile(str(spec))[1]] == ["getA"]
    assert cache.misses == 1
    again = CompileCache(cache_dir)
    again.compile(str(spec))
    assert again.hits == 1


def test_a_directory_others_can_write_is_not_used(tmp_path: Path, cache_dir: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cache_dir.mkdir()
    cache_dir.chmod(0o777)
    spec = _write(tmp_path / "api.json", {"/a": _get("getA")})
    with caplog.at_level(logging.WARNING, logger="openapi_mcp.cache"):
        cache = CompileCache(cache_dir)
    assert cache.directory is None
    assert "writable by no one else" in caplog.text
    cache.compile(str(spec))
    assert list(cache_dir.iterdir()) == []


def test_a_new_directory_is_private(cache_dir: Path) -> None:
    CompileCache(cache_dir / "deeper")
    assert (cache_dir / "deeper").stat().st_mode & 0o777 == 0o700


def test_only_the_newest_entries_are_kept(tmp_path: Path, cache_dir: Path) -> None:
    spec = tmp_path / "api.json"
    cache = CompileCache(cache_dir)
    for i in range(MAX_ENTRIES + 3):
        _write(spec, {"/a": _get(f"op{i}")})
        cache.compile(str(spec))
    assert len(list(cache_dir.glob("*.pickle"))) == MAX_ENTRIES


def test_a_spec_read_over_http_is_not_cached(tmp_path: Path, cache_dir: Path) -> None:
    _write(tmp_path / "api.json", {"/a": _get("getA")})

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cache = CompileCache(cache_dir)
        _spec, plans, _ = cache.compile(f"http://127.0.0.1:{server.server_address[1]}/api.json")
    finally:
        server.shutdown()
    assert [p.name for p in plans] == ["getA"]
    assert list(cache_dir.glob("*.pickle")) == []


def test_no_cache_flag_and_config_key(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENAPI_MCP_CACHE_DIR", str(cache_dir))
    spec = _write(tmp_path / "api.json", {"/a": _get("getA")}, servers=[{"url": "http://127.0.0.1:9"}])
    assert main(["tools", str(spec), "--no-cache"]) == 0
    assert not cache_dir.exists() or list(cache_dir.glob("*.pickle")) == []
    config = tmp_path / "c.yaml"
    config.write_text(f"spec: {spec}\ncache: false\n")
    assert main(["tools", "--config", str(config)]) == 0
    assert not cache_dir.exists() or list(cache_dir.glob("*.pickle")) == []
    assert main(["tools", str(spec)]) == 0
    assert len(list(cache_dir.glob("*.pickle"))) == 1
    assert capsys.readouterr().out.count("getA") == 3
    assert os.stat(cache_dir).st_mode & 0o077 == 0


