"""Tool names: from x-mcp-name or operationId, else method + path; valid, short and unique."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Final

from converter.models import Operation, Problem

MAX_NAME_LENGTH: Final = 64  # what common clients (Cursor, OpenAI) accept
_VALID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]+")
_BRACES: Final = re.compile(r"[{}]")


def is_valid_name(name: str) -> bool:
    """True when `name` is usable as-is as an MCP tool name."""
    return bool(_VALID.match(name))


def slugify(text: str) -> str:
    """Turn arbitrary text into `[A-Za-z0-9_-]+`, at most 64 characters, deterministically."""
    slug = _UNSAFE.sub("_", text).strip("_") or "tool"
    return shorten(slug)


def shorten(name: str, limit: int = MAX_NAME_LENGTH) -> str:
    """Cut a name to `limit` characters, keeping it unique by ending it with a hash of the whole."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('_-')}_{digest}"


def base_name(op: Operation) -> tuple[str, Problem | None]:
    """The name an operation asks for, and a note when it had to be changed.

    An operationId made valid (`repos/get` -> `repos_get`, a long one cut and hashed) is routine:
    APIs such as GitHub's have a thousand of them. An `x-mcp-name` that had to be changed is not:
    someone chose that name for the tool.
    """
    if op.mcp_name is not None:
        if is_valid_name(op.mcp_name):
            return op.mcp_name, None
        fixed = slugify(op.mcp_name)
        return fixed, Problem(op.pointer, f"x-mcp-name {op.mcp_name!r} is not a valid tool name; using {fixed!r} "
                                          "(use A-Z a-z 0-9 _ -)")
    if op.operation_id:
        if is_valid_name(op.operation_id):
            return op.operation_id, None
        fixed = slugify(op.operation_id)
        reason = (
            "is longer than 64 characters" if len(op.operation_id) > MAX_NAME_LENGTH else "is not a valid tool name"
        )
        return fixed, Problem(op.pointer, f"operationId {op.operation_id!r} {reason}; using {fixed!r}", routine=True)
    path = _BRACES.sub("", op.path).strip("/").replace("/", "_")
    return slugify(f"{op.method.lower()}_{path}" if path else op.method.lower()), None


def assign_names(operations: Sequence[Operation]) -> tuple[list[str], list[Problem]]:
    """Name every operation; collisions get `_2`, `_3`, ... in document order and are reported."""
    names: list[str] = []
    problems: list[Problem] = []
    first_owner: dict[str, Operation] = {}
    taken: set[str] = set()
    for op in operations:
        name, note = base_name(op)
        if note is not None:
            problems.append(note)
        if name in taken:
            n = 2
            candidate = shorten(f"{name}_{n}")
            while candidate in taken:
                n += 1
                candidate = shorten(f"{name}_{n}")
            owner = first_owner[name]
            problems.append(
                Problem(op.pointer, f"tool name {name!r} is already used by {owner.pointer}; using {candidate!r}")
            )
            name = candidate
        taken.add(name)
        first_owner.setdefault(name, op)
        names.append(name)
    return names, problems
