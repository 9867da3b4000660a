"""What is served: the `Catalog` of every source's tools (`catalog`), and dynamic mode (`dynamic`)."""

from converter.catalog.catalog import Catalog, OpenAPISource, build_catalog, inline_tools_spec
from converter.catalog.dynamic import DynamicCatalog, build_served_catalog

__all__ = ["Catalog", "DynamicCatalog", "OpenAPISource", "build_catalog", "build_served_catalog", "inline_tools_spec"]
