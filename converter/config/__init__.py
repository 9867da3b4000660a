"""Settings: one validated model from YAML, `${ENV}` and command-line flags (`load_settings`).

`settings` holds the models (`auth`, `credentials`, `pdp`, `limits`, `responses`, `server`: the blocks
that have their own module; `base` what they are all built from),
`file` reads the YAML file, `load` puts it all together. Nothing here imports the rest of the
package.
"""

from converter.config.auth import AuthSettings, ClaimHeader
from converter.config.limits import LimitRule
from converter.config.load import load_settings
from converter.config.pdp import PdpSettings
from converter.config.responses import ResponseSettings, ToolResponseSettings
from converter.config.server import RedisSettings, ReloadSettings, ServerSettings, TelemetrySettings
from converter.config.settings import (
    UNSAFE_METHODS,
    InlineTool,
    McpUpstreamSettings,
    SelectionSettings,
    Settings,
    SourceSettings,
    UpstreamSettings,
)

__all__ = ["UNSAFE_METHODS", "AuthSettings", "ClaimHeader", "InlineTool", "LimitRule", "McpUpstreamSettings",
           "PdpSettings", "RedisSettings", "ReloadSettings", "ResponseSettings", "SelectionSettings", "ServerSettings",
           "Settings", "SourceSettings", "TelemetrySettings", "ToolResponseSettings", "UpstreamSettings",
           "load_settings"]
