from __future__ import annotations

import converter


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(converter) if not name.startswith("_")} - {
        "errors", "models", "spec", "tools", "invoke", "config", "catalog", "app", "cli", "demo", "annotations"}
    assert set(converter.__all__) - {"__version__"} == public
    for name in converter.__all__:
        assert hasattr(converter, name)
