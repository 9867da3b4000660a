"""Dynamic mode for huge APIs: search/describe/call meta-tools over a `Catalog` (`mode: dynamic`).

`meta` holds the `DynamicCatalog` and its three tools; `search` the ranked operation index.
"""

from converter.catalog.dynamic.meta import CALL, DESCRIBE, MODE_META_KEY, SEARCH, DynamicCatalog, build_served_catalog
from converter.catalog.dynamic.search import OperationIndex, tokenize

__all__ = ["CALL", "DESCRIBE", "MODE_META_KEY", "SEARCH", "DynamicCatalog", "OperationIndex",
           "build_served_catalog", "tokenize"]
