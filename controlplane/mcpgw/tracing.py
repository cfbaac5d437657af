"""OpenTelemetry traces of the MCP listener: Envoy's OpenTelemetry tracer, OTLP gRPC to a collector.

The collector is a cluster the control plane sends over CDS (not a bootstrap cluster): the address
is a `mcpgw serve` flag like every other part of the listener, and changing it needs no Envoy
restart. The listener's HttpConnectionManager gets a `tracing` block naming that cluster; Envoy
then continues a client's W3C `traceparent` (or starts a trace, sampled at `sampling` percent) and
exports one server span per request, named as OpenTelemetry's MCP conventions say
(`{mcp.method.name} {tool}`, which the filter sets as filter state `wasm.mcpgw.span`). The span
carries the filter's MCP fields (filter state `wasm.mcpgw.mcp`, the same JSON object the access
log prints) as the tag `mcpgw.mcp`: Envoy's Wasm filter state has no field access, so a
formatter can only print the whole object. The filter's backend calls are `proxy_http_call`s,
which Envoy sends without trace context: the filter copies the client's `traceparent` and
`tracestate` onto them (src/tracecontext.zig).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcpgw import observability
from mcpgw.registry.validate import is_ip

OTLP_CLUSTER = "mcpgw-otlp"
TRACER = "envoy.tracers.opentelemetry"
OTEL_CONFIG_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
_SAMPLERS = "type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3."
PARENT_BASED_TYPE = _SAMPLERS + "ParentBasedSamplerConfig"
RATIO_TYPE = _SAMPLERS + "TraceIdRatioBasedSamplerConfig"
# The OTLP service name of every span Envoy exports for the MCP listener.
SERVICE_NAME = "mcpgw"
# The span tag holding the filter's MCP fields (a JSON object as text).
MCP_TAG = "mcpgw.mcp"
DEFAULT_SAMPLING = 100.0
# The stream property holding the span's MCP name (observe.zig's `span_property`).
SPAN_PROPERTY = "mcpgw.span"
_MCP_FIELDS = f"%FILTER_STATE(wasm.{observability.FILTER_PROPERTY}:PLAIN)%"


@dataclass(frozen=True)
class TraceSettings:
    """Where Envoy sends spans (an OTLP gRPC collector) and which share of new traces it samples."""

    host: str
    port: int
    # Percent of requests without a `traceparent` that start a trace; a client's `traceparent`
    # decides for its request (sampled flag set: traced; unset: not).
    sampling: float = DEFAULT_SAMPLING


def parse_endpoint(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[v6]:PORT` for an IPv6 address); ValueError with the reason otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{text!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port {number} is outside 1..65535")
    return host, number


def parse_sampling(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r}: a percentage from 0 to 100") from None
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"{text!r}: a percentage from 0 to 100")
    return value


def otlp_cluster(settings: TraceSettings) -> dict[str, Any]:
    """The collector's cluster: HTTP/2 (gRPC), static for an IP address, DNS otherwise."""
    address = {"socket_address": {"address": settings.host, "port_value": settings.port}}
    return {
        "name": OTLP_CLUSTER,
        "type": "STATIC" if is_ip(settings.host) else "STRICT_DNS",
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": OTLP_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }


def hcm_tracing(settings: TraceSettings) -> dict[str, Any]:
    """The MCP listener's HttpConnectionManager `tracing` block."""
    # Percent as parts per million: the ratio sampler's FractionalPercent.
    ratio = {"numerator": round(settings.sampling * 10_000), "denominator": "MILLION"}
    return {
        # Evaluated when the span ends, after the filter set the fields (observe.zig `finish`).
        "custom_tags": [
            {"tag": MCP_TAG, "value": f"%FILTER_STATE(wasm.{observability.FILTER_PROPERTY}:PLAIN)%"}
        ],
        # OpenTelemetry's MCP span name (`tools/call get_weather`), which the filter sets (observe.zig).
        "operation": f"%FILTER_STATE(wasm.{SPAN_PROPERTY}:PLAIN)%",
        "provider": {
            "name": TRACER,
            "typed_config": {
                "@type": OTEL_CONFIG_TYPE,
                "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "2s"},
                "service_name": SERVICE_NAME,
                # The OpenTelemetry sampler decides, not the manager's `random_sampling` (which
                # ignores a client's sampled flag): a client's traceparent is followed either way
                # (sampled or not), a request without one starts a trace at `sampling` percent.
                "sampler": {
                    "name": "envoy.tracers.opentelemetry.samplers.parent_based",
                    "typed_config": {
                        "@type": PARENT_BASED_TYPE,
                        "wrapped_sampler": {
                            "name": "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based",
                            "typed_config": {"@type": RATIO_TYPE, "sampling_percentage": ratio},
                        },
                    },
                },
            },
        },
    }
