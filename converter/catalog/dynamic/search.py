"""Ranked text search over operations: BM25F over name, summary, tags, path and description.

BM25F (Robertson & Zaragoza, "The Probabilistic Relevance Framework", 2009, §3.4): each field's
term frequency is normalised by that field's length, weighted, summed into one pseudo-frequency,
then saturated once. A word in a three-word summary thus counts far more than the same word in a
2,000-character description full of boilerplate. Everything that does not depend on the query
is computed when the index is built, so a search only walks the postings of its few terms.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

from converter.tools import ToolPlan

# (field, weight, length normalisation b)
FIELDS: Final = (("name", 0.6, 0.8), ("summary", 0.9, 0.8), ("tags", 0.45, 0.3), ("path", 0.45, 0.5),
                 ("description", 0.15, 0.75))
K1: Final = 1.2
EXACT_NAME_BONUS: Final = 1000.0  # a query that is an operation's name or operationId finds it first
SYNONYM_WEIGHT: Final = 0.5

_WORDS = re.compile(r"[^\W_]+")
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_URL = re.compile(r"https?://\S+")
_STOP: Final = frozenset(
    "a an and are as at be by can do for from i in into is it its me my of on or our that the their this to "
    "was we what which with you your all any".split())
# Words people use for the words APIs use, both ways where it makes sense. Stemmed on use.
_SYNONYMS: Final[dict[str, tuple[str, ...]]] = {
    "repo": ("repository",), "repository": ("repo",),
    "org": ("organization",), "organization": ("org",), "organisation": ("organization", "org"),
    "pr": ("pull",), "prs": ("pull",),
    "config": ("configuration", "settings"), "configuration": ("config",), "settings": ("config",),
    "remove": ("delete",), "delete": ("remove",), "erase": ("delete",), "destroy": ("delete",),
    "add": ("create",), "create": ("add",), "new": ("create",), "make": ("create",),
    "edit": ("update",), "modify": ("update",), "change": ("update",), "update": ("edit",),
    "set": ("update",),
    "fetch": ("get",), "retrieve": ("get",), "show": ("get",), "read": ("get",), "view": ("get",),
    "find": ("search", "list"), "lookup": ("get", "search"), "query": ("search",),
    "auth": ("authentication",), "info": ("information",),
    "comments": ("comment",), "msg": ("message",), "doc": ("document",), "docs": ("document",),
}


def _stem(word: str) -> str:
    """A light English stemmer: plurals and a final 'e', so 'issues' = 'issue', 'branches' = 'branch'."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 4 and word.endswith(("sses", "uses", "ches", "shes", "xes", "zes")):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lower-case stems of the words in `text`, camelCase and snake_case split, stop words dropped."""
    tokens: list[str] = []
    for word in _WORDS.findall(_URL.sub(" ", text)):
        tokens.extend(_word_tokens(word))
    return tokens


@lru_cache(maxsize=65_536)  # a spec's vocabulary is small; descriptions repeat it endlessly
def _word_tokens(word: str) -> tuple[str, ...]:
    parts = _CAMEL.findall(word) if word.isascii() and not word.islower() and not word.isupper() else [word]
    return tuple(_stem(lowered) for lowered in (part.lower() for part in parts) if lowered not in _STOP)


class OperationIndex:
    """An inverted index over operations; `scores(query)` ranks them."""

    def __init__(self, plans: list[ToolPlan], postings: dict[str, list[tuple[int, float]]],
                 idf: dict[str, float], exact: dict[str, list[int]]) -> None:
        self.plans = plans
        self._postings = postings
        self._idf = idf
        self._exact = exact

    def __repr__(self) -> str:
        return f"OperationIndex(operations={len(self.plans)}, terms={len(self._postings)})"

    @classmethod
    def build(cls, plans: Iterable[ToolPlan]) -> OperationIndex:
        """Tokenize every operation's fields once and precompute each term's postings and IDF."""
        plans = list(plans)
        fields = [_fields(plan) for plan in plans]
        average = {name: (sum(len(f[name]) for f in fields) / len(fields) if fields else 0.0) or 1.0
                   for name, _, _ in FIELDS}
        # term -> [(document, BM25F pseudo-frequency: weighted, length-normalised, not yet saturated)]
        weighted: dict[str, list[tuple[int, float]]] = {}
        exact: dict[str, list[int]] = {}
        for doc, (plan, tokens) in enumerate(zip(plans, fields, strict=True)):
            pseudo: dict[str, float] = {}
            for name, weight, b in FIELDS:
                norm = 1.0 - b + b * len(tokens[name]) / average[name]
                for term, count in Counter(tokens[name]).items():
                    pseudo[term] = pseudo.get(term, 0.0) + weight * count / norm
            for term, tf in pseudo.items():
                weighted.setdefault(term, []).append((doc, tf))
            for key in {plan.name, plan.operation.operation_id or ""} - {""}:
                exact.setdefault(key.casefold(), []).append(doc)
        n = len(plans)
        idf = {term: math.log(1.0 + (n - len(p) + 0.5) / (len(p) + 0.5)) for term, p in weighted.items()}
        return cls(plans, weighted, idf, exact)

    def scores(self, query: str) -> dict[int, float]:
        """Score every operation that shares a term with `query` (document index -> score)."""
        terms: dict[str, float] = {}
        for term in tokenize(query):
            terms[term] = terms.get(term, 0.0) + 1.0
        for word in _WORDS.findall(query.lower()):
            for synonym in _SYNONYMS.get(word, ()):
                stem = _stem(synonym)
                terms[stem] = max(terms.get(stem, 0.0), SYNONYM_WEIGHT)
        scores: dict[int, float] = {}
        for term, query_weight in terms.items():
            idf = self._idf.get(term)
            if idf is None:
                continue
            for doc, tf in self._postings[term]:
                scores[doc] = scores.get(doc, 0.0) + query_weight * idf * tf * (K1 + 1.0) / (tf + K1)
        for doc in self._exact.get(query.strip().casefold(), ()):
            scores[doc] = scores.get(doc, 0.0) + EXACT_NAME_BONUS
        return scores


def _fields(plan: ToolPlan) -> dict[str, list[str]]:
    op = plan.operation
    name = tokenize(plan.name)
    seen = set(name)
    name += [t for t in tokenize(op.operation_id or "") if t not in seen]
    description = plan.tool.description or ""
    if op.summary and description.startswith(op.summary):
        description = description[len(op.summary):]  # the summary is its own field
    return {
        "name": name,
        "summary": tokenize(op.summary or ""),
        "tags": tokenize(" ".join(op.tags)),
        "path": [op.method.lower(), *tokenize(op.path)],
        "description": tokenize(description),
    }
