"""Build the configured sinks once at startup."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from converter.config import TelemetrySettings
from converter.errors import ConfigError
from converter.telemetry.sinks import AccessLog, Fanout, Metrics, Recent, Sink

if TYPE_CHECKING:
    from converter.credentials.stats import CredentialStats


@dataclass
class Telemetry:
    """The sinks every layer emits to, and the pieces routes read (metrics, recent records)."""

    fanout: Fanout
    metrics: Metrics | None
    recent: Recent
    log_payloads: bool
    log_file: IO[str] | None = None
    access_log: AccessLog | None = None  # its lines wait for the end of the loop's turn

    def close(self) -> None:
        if self.access_log is not None:
            self.access_log.flush()
        if self.log_file is not None:
            self.log_file.close()


def build_telemetry(settings: TelemetrySettings, tool_names: Iterable[str], *, transport: str = "http",
                    cache_stats: Callable[[], tuple[int, int]] | None = None,
                    credential_stats: Callable[[], CredentialStats | None] | None = None) -> Telemetry:
    """Raises: ConfigError when the access log cannot be opened (or would corrupt stdio)."""
    sinks: list[Sink] = []
    log_file = None
    access_log = None
    target = settings.access_log
    if target == "stderr":
        access_log = AccessLog(sys.stderr)
    elif target == "stdout":
        if transport == "stdio":
            raise ConfigError("telemetry.access_log: stdout carries the MCP protocol on stdio; use stderr or a file",
                              key="telemetry.access_log")
        access_log = AccessLog(sys.stdout)
    elif target != "off":
        try:
            log_file = open(target, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by Telemetry.close
        except OSError as exc:
            raise ConfigError(f"telemetry.access_log: cannot open {target!r} ({exc.strerror})",
                              key="telemetry.access_log") from exc
        access_log = AccessLog(log_file)
    if access_log is not None:
        sinks.append(access_log)
    metrics = Metrics(tool_names, cache_stats=cache_stats, credential_stats=credential_stats) \
        if settings.metrics else None
    if metrics is not None:
        sinks.append(metrics)
    recent = Recent()
    sinks.append(recent)
    return Telemetry(Fanout(sinks), metrics, recent, settings.log_payloads, log_file, access_log)
