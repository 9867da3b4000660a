from __future__ import annotations

import pytest

import converter


def test_all_names_resolve_and_are_listed() -> None:
    for name in converter.__all__:
        assert getattr(converter, name) is not None
        assert name in dir(converter)
    assert converter.load_spec.__module__ == "converter.spec.convert"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        converter.nope  # noqa: B018


