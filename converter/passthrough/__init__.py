"""Passthrough: an existing MCP server fronted under the same auth, rules and telemetry.

`source` connects to the upstream (the SDK client), `transport` is its HTTP side, `view` merges
the sources' resources and prompts, `subscriptions` relays resource updates, `tasks` relays MCP
tasks bound to their creator, `log_levels` keeps what `logging/setLevel` chose, `handlers` serves it all to clients.
"""

from converter.passthrough.handlers import (
    Downstream,
    install_downstream,
    notification_relay,
    progress_relay,
    register_handlers,
    request_relay,
)
from converter.passthrough.log_levels import LogLevels, SharedLogLevels
from converter.passthrough.source import MCPUpstreamSource
from converter.passthrough.view import Passthrough, template_regex

__all__ = ["Downstream", "LogLevels", "MCPUpstreamSource", "Passthrough", "SharedLogLevels", "install_downstream",
           "notification_relay", "progress_relay", "register_handlers", "request_relay", "template_regex"]
