"""ACL evaluation cost: one `tools/call` decision and one `tools/list` filter with 100 rules.

    .venv/bin/python bench/acl.py

Rules are realistic: glob/regex/literal name patterns, a third with CEL conditions on claims.
Prints microseconds per decision: "cold" is a caller seen for the first time (its claims are
converted to CEL once), "warm" a caller whose token the verifier has cached (the decision is
reused, as long as the principal lives).
"""

from __future__ import annotations

import time

from converter.auth.principal import Principal
from converter.policy.acl import compile_acl

TOOLS = [f"{verb}{noun}" for verb in ("get", "list", "create", "update", "delete") for noun in ("User", "Order")]


def rules(n: int) -> list[dict]:
    out = []
    for i in range(n):
        kind = i % 3
        rule: dict = {"features": ["tools"], "operations": ["list", "call"]}
        if kind == 0:
            rule["name"] = {"type": "glob", "pattern": f"get*{i}"}
        elif kind == 1:
            rule["name"] = {"type": "regex", "pattern": f"(list|create)Order{i}"}
        else:
            rule["name"] = {"type": "any"}
            rule["when"] = f"'role{i}' in claims.realm_access.roles"
        out.append(rule)
    out.append({"name": {"type": "glob", "pattern": "*"}, "when": "'admin' in claims.realm_access.roles"})
    return out


def timed(fn, n: int = 2000) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    claims = {"realm_access": {"roles": ["admin", "user"]}, "sub": "a", "scope": "mcp:tools", "email": "a@b.c"}
    principal = Principal(subject="a", claims=claims, is_authenticated=True)
    fresh = lambda: Principal(subject="a", claims=claims, is_authenticated=True)  # noqa: E731
    print(f"{'rules':>6} {'call cold us':>13} {'call warm us':>13} {'list 10 cold us':>16} {'list 10 warm us':>16}")
    for n in (1, 10, 100):
        acl = compile_acl({"rules": rules(n)})
        call_cold = timed(lambda acl=acl: acl.decide("tools", "call", "deleteOrder", fresh()), 500)
        call_warm = timed(lambda acl=acl: acl.decide("tools", "call", "deleteOrder", principal))
        list_cold = timed(lambda acl=acl: [t for t in TOOLS if acl.decide("tools", "list", t, p)] if (p := fresh()) else 0, 200)
        list_warm = timed(lambda acl=acl: [t for t in TOOLS if acl.decide("tools", "list", t, principal)], 500)
        print(f"{n:>6} {call_cold:>13.1f} {call_warm:>13.1f} {list_cold:>16.1f} {list_warm:>16.1f}")


if __name__ == "__main__":
    main()
