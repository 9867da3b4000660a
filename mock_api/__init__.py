"""Mock upstream REST APIs for openapi-mcp demos and tests.

- `create_app()`: the marketplace demo API (`marketplace.yaml`), with in-memory state.
- `create_echo_app(spec_path)`: a mock for any OpenAPI 3.x document that echoes each request.

Both validate every request with openapi-core (400 when it does not conform) and keep the last
200 requests at `GET /__mock/requests` (`POST /__mock/reset` clears them and the state).
Run one with `python -m mock_api [--port 3000] [--spec PATH]`.
"""

from __future__ import annotations

from mock_api.app import SPEC_PATH, create_app
from mock_api.document import DocumentError, load_document
from mock_api.echo import create_echo_app

__all__ = ["SPEC_PATH", "DocumentError", "create_app", "create_echo_app", "load_document"]
