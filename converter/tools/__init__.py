"""Tools: names, input/output schemas and compiled plans built from `Operation`s."""

from converter.tools.plan import META_KEY, Selection, ToolPlan, build_plans

__all__ = ["META_KEY", "Selection", "ToolPlan", "build_plans"]
