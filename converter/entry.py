"""The `openapi-mcp` console entry point: the command line with Python's cyclic GC paused while starting.

Loading a big spec allocates millions of objects that live as long as the server; every
generation-2 collection during startup walks all of them again for nothing (GitHub's spec:
~0.35 s of a ~1.5 s start). The collector stays off until the catalog is built, then the
startup objects are frozen out of its reach (`gc.freeze`) and it runs normally while serving.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    gc.disable()
    try:
        from converter.cli import main as cli_main

        return cli_main(argv)
    finally:
        gc.enable()

