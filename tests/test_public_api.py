from __future__ import annotations

import types

import converter


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name, value in vars(converter).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"}
    assert set(converter.__all__) - {"__version__"} == public
    for name in converter.__all__:
        assert hasattr(converter, name)
