"""`python -m converter` is the same as `openapi-mcp`."""

from converter.entry import main

raise SystemExit(main())
