"""`python -m converter` is the same as `openapi-mcp`."""

from converter.cli import main

raise SystemExit(main())
