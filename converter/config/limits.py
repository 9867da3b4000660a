"""The `limits:` config: a list of rate-limit and quota rules, all of which apply.

```yaml
limits:
  - {tools: ["get*"], per: subject, requests: 100, window: 60}     # 100 calls a minute per caller
  - {per: global, requests: 5000, window: 60}                      # no `tools`: every request
  - {tools: ["create_order"], per: subject, requests: 1000, window: 86400, name: daily-orders}  # a quota
```

`per`: `subject` (the token's identity; the client address when auth is off), `subject_tool`
(each caller and tool apart), `tool` (all callers together, per tool), `global` (everything
the rule covers together). `window` in seconds.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

Per = Literal["subject", "subject_tool", "tool", "global"]
MAX_WINDOW = 366 * 86400.0  # a year: longer quotas are not what a rate limiter is for


class LimitRule(BaseModel):
    """One rule: at most `requests` per `window` seconds, counted per `per`, for `tools` (globs)."""

    model_config = ConfigDict(extra="forbid", frozen=True, ignored_types=(cached_property,))

    tools: list[str] | None = Field(default=None, min_length=1)  # fnmatch globs on tool names; None: everything
    per: Per = "subject"
    requests: int = Field(gt=0, le=1_000_000_000)
    window: float = Field(gt=0, le=MAX_WINDOW)
    name: str | None = Field(default=None, min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.:-]+$")

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not glob for glob in value):
            raise ValueError("a tool glob cannot be empty")
        return value

    @cached_property
    def tool_pattern(self) -> re.Pattern[str] | None:
        if self.tools is None:
            return None
        return re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in self.tools))

    def covers(self, tool: str | None) -> bool:
        """Does this rule count a request for `tool` (None: not a tool call, e.g. tools/list)?"""
        pattern = self.tool_pattern
        if pattern is None:
            return True
        return tool is not None and pattern.match(tool) is not None

    @cached_property
    def rule_id(self) -> str:
        """Stable across restarts and replicas while the rule is unchanged: counters survive a reload."""
        text = f"{self.tools!r}|{self.per}|{self.requests}|{self.window!r}"
        return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()

    @property
    def label(self) -> str:
        """How the rule is named to users (tool errors, logs, metrics)."""
        if self.name:
            return self.name
        what = "" if self.tools is None else f" for {', '.join(self.tools)}"
        return f"{self.requests} requests per {self.window:g} s per {self.per.replace('_', ' and ')}{what}"


class LimitsSettings(RootModel[list[LimitRule]]):
    """The whole `limits:` list."""

    model_config = ConfigDict(frozen=True)
