"""Passthrough: an existing MCP server fronted under the same auth, rules and telemetry.

`source` connects to the upstream (the SDK client), `transport` is its HTTP side, `view` merges
the sources' resources and prompts, `subscriptions` relays resource updates, `handlers` serves it
all to clients.
"""

from converter.passthrough.handlers import progress_relay, register_handlers, request_relay
from converter.passthrough.source import MCPUpstreamSource
from converter.passthrough.view import Passthrough, template_regex

__all__ = ["MCPUpstreamSource", "Passthrough", "progress_relay", "register_handlers", "request_relay",
           "template_regex"]
