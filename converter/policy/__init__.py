"""Who may see and call what: per-tool OAuth scopes (`decision`) and the access rules (`acl`)."""

from converter.policy.acl import Acl, compile_acl
from converter.policy.decision import Policy, build_policy, operation_scopes

__all__ = ["Acl", "Policy", "build_policy", "compile_acl", "operation_scopes"]
