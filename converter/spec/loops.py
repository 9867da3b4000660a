"""Schemas with no base case: a cycle of `$defs` that never moves to a part of the instance.

`S: {allOf: [{$ref: T}]}`, `T: {anyOf: [{$ref: S}, ...]}` applies S to an instance, then T to the
same instance, then S again: every validator recurses forever, whatever the instance. A cycle
through `properties`, `items` and the like is fine (recursive data: each step goes one level
down a finite instance). Plain `$ref` chains are caught while converting (SchemaConverter.ref);
this finds the cycles that pass through in-place applicators.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

_DEF_PREFIX = "#/$defs/"
# Keywords whose subschemas apply to the same instance (JSON Schema 2020-12, applicator vocabulary).
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_ONE = ("not", "if", "then", "else")


def _def_key(ref: Any) -> str | None:
    return ref[len(_DEF_PREFIX):] if isinstance(ref, str) and ref.startswith(_DEF_PREFIX) else None


def _in_place_refs(schema: Any) -> Iterator[str]:
    """The `$defs` keys `schema` applies to its own instance."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, Mapping):
            continue
        key = _def_key(node.get("$ref"))
        if key is not None:
            yield key
        for keyword in _IN_PLACE_LISTS:
            if isinstance(node.get(keyword), list):
                stack.extend(node[keyword])
        stack.extend(node[keyword] for keyword in _IN_PLACE_ONE if keyword in node)
        if isinstance(node.get("dependentSchemas"), Mapping):
            stack.extend(node["dependentSchemas"].values())


def looping_defs(defs: Mapping[str, Any]) -> set[str]:
    """The keys of `defs` that lie on an in-place cycle (Tarjan's strongly connected components)."""
    edges = {key: [k for k in set(_in_place_refs(schema)) if k in defs] for key, schema in defs.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: set[str] = set()
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    found.update(component)
    return found


def reached_defs(schema: Any, defs: Mapping[str, Any]) -> set[str]:
    """Every `$defs` key `schema` refers to, directly or through other definitions."""
    seen: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            key = _def_key(node.get("$ref"))
            if key is not None and key not in seen and key in defs:
                seen.add(key)
                stack.append(defs[key])
            stack.extend(v for k, v in node.items() if k != "$ref")
        elif isinstance(node, list):
            stack.extend(node)
    return seen
