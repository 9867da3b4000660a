"""OpenTelemetry traces (opt-in): the SDK's server span per MCP request gets a client span per
upstream call as its child, and the trace context travels upstream in `traceparent`.

The exporter is OTLP over HTTP, configured by the standard `OTEL_*` variables
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`, ...).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

log = logging.getLogger("openapi_mcp")
_tracer = trace.get_tracer("openapi-mcp")


def setup_tracing() -> Any:
    """Install a TracerProvider exporting over OTLP/HTTP; returns it (shut it down at exit).

    Raises:
        ImportError: the `otel` extra (opentelemetry-sdk, the OTLP exporter) is not installed.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "openapi-mcp")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("OpenTelemetry traces on (OTLP/HTTP to %s)", os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")))
    return provider


@contextmanager
def upstream_span(method: str, template: str, url: str, headers: dict[str, str]) -> Iterator[Any]:
    """A CLIENT span around one upstream call; injects `traceparent` into `headers`."""
    with _tracer.start_as_current_span(f"{method} {template or '/'}", kind=SpanKind.CLIENT, attributes={
        "http.request.method": method, "url.template": template, "url.full": url.split("?", 1)[0],
    }) as span:
        propagate.inject(headers)
        try:
            yield span
        except Exception as exc:
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            raise


def record_status(span: Any, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)
