"""Rate limits and quotas per caller and tool (issue 14): the `limits:` rules, counted in memory or Redis.

`RateLimiter(rules, backend=...).check(identity, tool)` returns a `LimitVerdict`: allowed, or the
rule that refused and the seconds until a retry fits. `RedisBackend` (needs the `redis` extra)
shares counters across replicas; import it from `converter.policy.limits.redis_backend`.
"""

from __future__ import annotations

from converter.config.limits import LimitRule, LimitsSettings, Per
from converter.policy.limits.limiter import ALLOWED, LimiterStats, LimitVerdict, RateLimiter, identity_of
from converter.policy.limits.window import Backend, Count, Counter, MemoryBackend

__all__ = [
    "ALLOWED",
    "Backend",
    "Count",
    "Counter",
    "LimitRule",
    "LimitVerdict",
    "LimiterStats",
    "LimitsSettings",
    "MemoryBackend",
    "Per",
    "RateLimiter",
    "identity_of",
]
