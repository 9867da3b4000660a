"""Settings: one validated model from YAML, `${ENV}` and command-line flags (`load_settings`).

`settings` holds the models, `responses` the `responses:` block, `file` reads the YAML file,
`load` puts it all together. Nothing here imports the rest of the package.
"""

from converter.config.load import load_settings
from converter.config.responses import ResponseSettings, ToolResponseSettings
from converter.config.settings import (
                                       UNSAFE_METHODS,
                                       AuthSettings,
                                       ClaimHeader,
                                       InlineTool,
                                       McpUpstreamSettings,
                                       SelectionSettings,
                                       ServerSettings,
                                       Settings,
                                       SourceSettings,
                                       TelemetrySettings,
                                       UpstreamSettings,
)

__all__ = ["UNSAFE_METHODS", "AuthSettings", "ClaimHeader", "InlineTool", "McpUpstreamSettings", "ResponseSettings",
           "SelectionSettings", "ServerSettings", "Settings", "SourceSettings", "TelemetrySettings",
           "ToolResponseSettings", "UpstreamSettings", "load_settings"]
