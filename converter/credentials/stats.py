"""Counters of the upstream credentials of every source, summed for /metrics (no values, no labels from callers)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from converter.credentials.upstream import UpstreamCredentials


@dataclass(frozen=True, slots=True)
class CredentialStats:
    """Totals since start. `token_requests` is by (kind, result): kind token_exchange or
    client_credentials; result ok, unreachable, timeout, refused or invalid_response."""

    token_requests: Mapping[tuple[str, str], int] = field(default_factory=dict)
    exchange_cache_hits: int = 0
    exchange_cache_misses: int = 0
    upstream_401_retries: int = 0


def combined_stats(credentials: Iterable[UpstreamCredentials]) -> CredentialStats:
    """The counters of all `credentials`, added up."""
    requests: dict[tuple[str, str], int] = {}
    hits = misses = retries = 0
    for creds in credentials:
        for key, count in creds.token_requests().items():
            requests[key] = requests.get(key, 0) + count
        stats = creds.stats()
        hits += stats["exchange_cache_hits"]
        misses += stats["exchange_cache_misses"]
        retries += stats["upstream_401_retries"]
    return CredentialStats(requests, hits, misses, retries)
