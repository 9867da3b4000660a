"""Traffic visibility: CallRecords filled by each layer and emitted to sinks (access log, metrics)."""

from converter.telemetry.layers import McpTelemetry, TelemetryLayer
from converter.telemetry.record import RECORD_KEY, CallRecord, current_record
from converter.telemetry.sinks import AccessLog, Fanout, Metrics, Recent

__all__ = ["RECORD_KEY", "AccessLog", "CallRecord", "Fanout", "McpTelemetry", "Metrics", "Recent",
           "TelemetryLayer", "current_record"]
