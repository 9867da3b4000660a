"""What is served: the `Catalog` of every source's tools (`catalog`), and dynamic mode (`dynamic`)."""

from converter.catalog.catalog import Catalog, build_catalog
from converter.catalog.dynamic import DynamicCatalog, build_served_catalog
from converter.catalog.openapi import OpenAPISource, inline_tools_spec

__all__ = ["Catalog", "DynamicCatalog", "OpenAPISource", "build_catalog", "build_served_catalog", "inline_tools_spec"]
