"""`responses:` settings (response shaping, see converter.tools.shaping): validated at startup."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from converter.config.base import ConfigModel

DEFAULT_ARGUMENT = "response_filter"
PREVIEW_CHARS = 2_000
MAX_EXPRESSION_CHARS = 1_000
FILTERED_KEY = "filtered"


def compile_expression(expression: str) -> Any:
    """A compiled JMESPath expression.

    Raises:
        ValueError: the expression is not valid JMESPath (the message says where).
    """
    import jmespath
    from jmespath.exceptions import JMESPathError

    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(str(exc).replace("\n", " ")) from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


class ToolResponseSettings(ConfigModel):
    """`responses.tools.<name or glob>`."""

    max_bytes: int | None = Field(default=None, ge=1)
    filter: str | None = None

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_expression(value)
            except ValueError as exc:
                raise ValueError(f"not a valid JMESPath expression: {exc}") from None
        return value


class ResponseSettings(ConfigModel):
    """`responses:` (PRODUCT.md has no such block yet; documented in the README)."""

    max_bytes: int | None = Field(default=None, ge=1)
    filter_argument: bool | str = False  # True: `response_filter`; a string: that argument name
    tools: dict[str, ToolResponseSettings] = Field(default_factory=dict)

    @field_validator("filter_argument")
    @classmethod
    def _argument(cls, value: bool | str) -> bool | str:
        if isinstance(value, str) and not (value.replace("_", "a").replace("-", "a").isalnum() and len(value) <= 64):
            raise ValueError("an argument name: letters, digits, '_' or '-', at most 64 characters")
        return value

    @property
    def is_off(self) -> bool:
        return self.max_bytes is None and not self.filter_argument and not self.tools
