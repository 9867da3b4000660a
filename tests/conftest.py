"""Shared fixtures: build specs and plans from small documents written in the tests."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from converter import Spec, spec_from_document
from converter.tools import ToolPlan, build_plans

ROOT = Path(__file__).resolve().parent.parent
SPECS = Path(__file__).resolve().parent / "specs"

# Compiled-tools cache of this test run (inherited by the servers the tests start): never the user's.
os.environ["OPENAPI_MCP_CACHE_DIR"] = tempfile.mkdtemp(prefix="openapi-mcp-test-cache-")


def openapi(paths: dict[str, Any], *, version: str = "3.0.3", **extra: Any) -> dict[str, Any]:
    """A minimal OpenAPI document around `paths`."""
    return {"openapi": version, "info": {"title": "t", "version": "1"}, "paths": paths, **extra}


@pytest.fixture
def make_spec() -> Callable[..., Spec]:
    def make(paths: dict[str, Any], **extra: Any) -> Spec:
        return spec_from_document(openapi(paths, **extra), "file:///virtual/spec.yaml", source="spec.yaml")

    return make


@pytest.fixture
def make_plans(make_spec: Callable[..., Spec]) -> Callable[..., dict[str, ToolPlan]]:
    def make(paths: dict[str, Any], **extra: Any) -> dict[str, ToolPlan]:
        plans, _ = build_plans(make_spec(paths, **extra))
        return {plan.name: plan for plan in plans}

    return make


@pytest.fixture
def anyio_backend() -> str:
    """Every async test runs on asyncio (the server's loop), once."""
    return "asyncio"
