"""The command line, called in-process: exit codes and the one-line error contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from converter.cli import main

OK = {"200": {"description": "ok"}}


def spec_file(tmp_path: Path, paths: dict) -> str:
    path = tmp_path / "api.yaml"
    path.write_text(yaml.safe_dump({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": paths}))
    return str(path)


@pytest.fixture
def broken(tmp_path: Path) -> str:
    return spec_file(tmp_path, {
        "/ok": {"get": {"operationId": "ok", "responses": OK}},
        "/bad": {"get": {"operationId": "bad", "parameters": [{"$ref": "#/nope"}], "responses": OK}},
        "/renamed": {"get": {"operationId": "has space", "responses": OK}},
    })


def test_check_lists_skipped_operations_and_warnings(broken: str, capsys) -> None:
    assert main(["check", broken]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "skipped  #/paths/~1bad/get: $ref '#/nope' points at nothing; skipped"
    assert out[1] == ("renamed  1 operationId(s) made into valid tool names (A-Z a-z 0-9 _ -, at most 64 characters; "
                      "the first: operationId 'has space' is not a valid tool name; using 'has_space'); "
                      "`openapi-mcp check --verbose` lists them")
    assert out[-1] == "2 tools, 1 operation(s) skipped, 0 warning(s), 1 name(s) made valid"


def test_check_strict_fails_on_warnings_too(tmp_path: Path, capsys) -> None:
    path = spec_file(tmp_path, {"/r": {"get": {"operationId": "ok", "x-mcp-name": "has space", "responses": OK}}})
    assert main(["check", path]) == 0
    assert main(["check", path, "--strict"]) == 1






def test_an_empty_document_is_warned_about_instead_of_serving_nothing_silently(tmp_path: Path, capsys) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("openapi: 3.0.0\n")
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"warning  {path}: the document has no operations (no paths): it adds no tools",
        "0 tools, 0 operation(s) skipped, 1 warning(s)"]
    assert main(["check", str(path), "--strict"]) == 1


def test_serve_strict_refuses_a_spec_with_skipped_operations(broken: str, capsys) -> None:
    assert main(["serve", broken, "--upstream", "http://127.0.0.1:9", "--strict"]) == 2
    err = capsys.readouterr().err
    assert err == (f"openapi-mcp: error: {broken}: 1 operation(s) cannot be converted (--strict): "
                   "#/paths/~1bad/get: $ref '#/nope' points at nothing; skipped\n")


def test_serve_without_an_upstream_url_is_one_clear_error(tmp_path: Path, capsys) -> None:
    path = spec_file(tmp_path, {"/r": {"get": {"responses": OK}}})
    assert main(["serve", path]) == 2
    assert capsys.readouterr().err == (f"openapi-mcp: error: {path}: no absolute upstream URL for 1 tool(s); "
                                       "pass --upstream URL or set upstream.url in the config\n")


def test_tools_json_and_token_estimate(tmp_path: Path, capsys) -> None:
    path = spec_file(tmp_path, {"/r": {"get": {"operationId": "r", "summary": "Read", "responses": OK}}})
    assert main(["tools", path, "--json"]) == 0
    [tool] = json.loads(capsys.readouterr().out)
    assert set(tool) == {"name", "title", "description", "inputSchema", "annotations", "_meta"}
    assert main(["tools", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith("r ") and "1 tools; tools/list is" in out and "tokens)" in out


def test_bad_config_is_one_clear_error(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("spec: x.yaml\nupstream: {timeout: -1}\n")
    assert main(["tools", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (f"openapi-mcp: error: {config}: upstream.timeout: Input should be greater "
                                       "than 0\n")


def test_the_entry_point_pauses_the_collector_only_while_it_runs(tmp_path, capsys) -> None:
    import gc

    from converter import entry

    seen: list[bool] = []
    real = entry.__dict__.get("main")
    spec = tmp_path / "api.json"
    spec.write_text('{"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "servers": [{"url": "http://x.test"}],'
                    ' "paths": {"/a": {"get": {"operationId": "getA", "responses": {"200": {"description": "ok"}}}}}}')
    import converter.cli as cli

    original = cli.main

    def spy(argv):
        seen.append(gc.isenabled())
        return original(argv)

    cli.main = spy
    try:
        assert real(["tools", str(spec), "--no-cache"]) == 0
    finally:
        cli.main = original
    assert seen == [False] and gc.isenabled()
    assert "getA" in capsys.readouterr().out


def test_serving_makes_young_collections_rarer_and_turns_the_collector_back_on() -> None:
    import gc

    from converter.serve import GC_THRESHOLD, serving

    before = gc.get_threshold()
    gc.disable()
    try:
        serving()
        assert gc.isenabled() and gc.get_threshold() == GC_THRESHOLD and GC_THRESHOLD[0] > 700
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
        gc.enable()
