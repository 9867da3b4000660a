"""Fine-grained authorization through an OpenID AuthZEN 1.0 policy decision point (issue 14).

`Pdp(settings).decide(question)` / `.decide_many(questions)` answer "may this identity do this
MCP method on this tool, resource or prompt?" with a `Decision` (allow, deny or error; only
allow lets a request through). `PdpSettings` is the `pdp:` config block.
"""

from __future__ import annotations

from converter.config.pdp import PdpProperties, PdpSettings
from converter.policy.pdp.cache import DecisionCache
from converter.policy.pdp.client import Pdp, PdpStats, RoundTrip
from converter.policy.pdp.request import (
    Decision,
    Feature,
    Identity,
    Outcome,
    PdpQuestion,
    build_evaluation,
    subject_of,
)

__all__ = [
    "Decision",
    "DecisionCache",
    "Feature",
    "Identity",
    "Outcome",
    "Pdp",
    "PdpProperties",
    "PdpQuestion",
    "PdpSettings",
    "PdpStats",
    "RoundTrip",
    "build_evaluation",
    "subject_of",
]
