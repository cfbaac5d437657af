"""What the data plane reports about MCP traffic: per-tool metrics and the MCP access log.

The Wasm filter counts each call with Proxy-Wasm metrics whose names carry their labels as
`.<label>=<value>;` segments (wasm-filters/mcp-server/src/metrics.zig); the bootstrap's
`stats_config.stats_tags` (`STATS_TAGS`, one regex per label) cuts those segments out into
Prometheus labels. No label value can hold `=` or `;` (namespaces and servers are DNS labels,
tool names `[A-Za-z0-9_.-]`, the rest fixed sets), so a dot or underscore in a name cannot
shift a label. The filter also sets the call's MCP fields as stream properties (filter state
`wasm.<field>`), which the MCP listener's JSON access log (`access_log`) prints. docs/observability.md
lists every metric, label and field.
"""

from __future__ import annotations

from typing import Any

# The labels, in the order metrics.zig's `label_names` lists them (a unit test compares).
LABELS = ("mcp_namespace", "mcp_server", "mcp_tool", "outcome", "code", "mcp_method", "mcp_protocol_version")

# Envoy exports Wasm histograms with its default buckets (0.5 ms … 1 h) unless a
# `histogram_bucket_settings` entry matches their name; these suit tool calls (milliseconds).
DURATION_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
_HISTOGRAM_PREFIX = "wasmcustom.mcpgw_tool_"


def tag_regex(label: str) -> str:
    """The `stats_tags` regex of `label`: group 1 (the segment) leaves the name, group 2 is the value."""
    return rf"(\.{label}=([^;]*);)"


def stats_config_yaml() -> str:
    """The `stats_tags` and `histogram_bucket_settings` lines of the bootstrap's `stats_config`."""
    lines = ["  stats_tags:\n"]
    for label in LABELS:
        # Single-quoted YAML keeps the regex's backslashes as they are.
        lines.append(f"    - {{tag_name: {label}, regex: '{tag_regex(label)}'}}\n")
    buckets = ", ".join(f"{b:g}" for b in DURATION_BUCKETS_MS)
    lines.append("  histogram_bucket_settings:\n")
    lines.append(f"    - match: {{prefix: {_HISTOGRAM_PREFIX}}}\n")
    lines.append(f"      buckets: [{buckets}]\n")
    return "".join(lines)


def filter_block(
    namespace: str, server: str, *, metrics: bool = True, access_log: bool = True, log_arguments: bool = False
) -> dict[str, Any]:
    """The filter configuration's `observability` block (wasm-filters/mcp-server/CONFIG.md)."""
    return {
        "namespace": namespace,
        "server": server,
        "metrics": metrics,
        "access_log": access_log,
        "log_arguments": log_arguments,
    }


# The fields the filter knows, as one JSON object in one stream property (filter state
# `wasm.mcpgw.mcp`, observe.zig's `log_property`): one host call per request instead of one per
# field, which cost ~20 % more Envoy CPU per tools/call. OpenTelemetry's MCP and GenAI attribute
# names where they exist, `mcpgw.*` for the rest.
FILTER_FIELDS = (
    "mcp.method.name",
    "gen_ai.tool.name",
    "gen_ai.operation.name",
    "mcp.protocol.version",
    "mcp.session.id",
    "jsonrpc.request.id",
    "rpc.response.status_code",
    "error.type",
    "mcpgw.namespace",
    "mcpgw.server",
    "mcpgw.outcome",
    "mcpgw.backend.status",
    "mcpgw.backend.duration_ms",
    "mcpgw.arguments",
)
FILTER_PROPERTY = "mcpgw.mcp"

# Fields Envoy knows itself.
ENVOY_FIELDS = {
    "start_time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "http.request.method": "%REQ(:METHOD)%",
    "url.path": "%REQ(:PATH)%",
    "http.response.status_code": "%RESPONSE_CODE%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "response_flags": "%RESPONSE_FLAGS%",
}

STDOUT = "/dev/stdout"


def access_log(path: str) -> list[dict[str, Any]]:
    """The MCP listener's access log: one JSON object per request, to `path` (`/dev/stdout` by default)."""
    # `mcp`: the filter's JSON object, as a string (Envoy prints filter state as text).
    fields: dict[str, str] = dict(ENVOY_FIELDS) | {"mcp": f"%FILTER_STATE(wasm.{FILTER_PROPERTY}:PLAIN)%"}
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": path,
                "log_format": {"json_format": fields, "omit_empty_values": True},
            },
        }
    ]
