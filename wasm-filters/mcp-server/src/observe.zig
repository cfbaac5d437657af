//! The host side of metrics.zig: counts and records a finished MCP request
//! through the Proxy-Wasm metric calls, and sets its access-log fields as
//! stream properties (Envoy's filter state `wasm.<field>`). main.zig calls
//! `finish` once per answered MCP message and `sessionOpened` per session.

const std = @import("std");
const pw = @import("proxywasm.zig");
const metrics = @import("metrics.zig");
const mcp = @import("mcp.zig");
const jsonw = @import("jsonw.zig");

/// Metric ids of this VM, by name.
var cache: metrics.Cache = .{};

fn define(kind: metrics.Kind, name: []const u8) ?u32 {
    return pw.defineMetric(switch (kind) {
        .counter => .counter,
        .histogram => .histogram,
    }, name);
}

fn count(metric: []const u8, labels: []const metrics.Label, n: u64) void {
    var buf: [metrics.max_name]u8 = undefined;
    const full = metrics.metricName(&buf, metric, labels) catch return;
    const id = cache.id(pw.allocator(), .counter, full, define) orelse return;
    pw.incrementMetric(id, @intCast(n));
}

fn record(metric: []const u8, labels: []const metrics.Label, value: u64) void {
    var buf: [metrics.max_name]u8 = undefined;
    const full = metrics.metricName(&buf, metric, labels) catch return;
    const id = cache.id(pw.allocator(), .histogram, full, define) orelse return;
    pw.recordMetric(id, value);
}

/// Nanoseconds to whole milliseconds, rounded: Envoy's histograms take integers.
fn ms(ns: u64) u64 {
    return (ns + std.time.ns_per_ms / 2) / std.time.ns_per_ms;
}

/// A session was opened on this server (initialize answered with a
/// session id, or an HTTP+SSE stream).
pub fn sessionOpened(set: *const metrics.Settings) void {
    if (!set.metrics) return;
    count("mcpgw_server_sessions", &.{ .{ "mcp_namespace", set.namespace }, .{ "mcp_server", set.server } }, 1);
}

/// What the access log and the counters need besides the record.
pub const Answer = struct {
    status: u32,
    body: []const u8,
    /// The client's `Mcp-Session-Id` (hashed before it is logged).
    session: ?[]const u8 = null,
    protocol_version: ?[]const u8 = null,
};

/// Counts one answered MCP message and sets its access-log fields. Called
/// once: `rec.done` guards the HTTP+SSE path (the answer, then the 202).
pub fn finish(arena: std.mem.Allocator, set: *const metrics.Settings, rec: *metrics.Record, seen: *const mcp.Seen, a: Answer) void {
    if (rec.done) return;
    rec.done = true;
    if (!set.metrics and !set.access_log and !set.span_name) return;
    const now = pw.nowNs();
    const method = metrics.Method.parse(seen.method);
    const version = metrics.versionLabel(a.protocol_version);
    const is_call = method == .tools_call;
    const tool = seen.tool orelse metrics.unknown_tool;
    const shape = if (is_call) metrics.shapeOf(a.body) else metrics.Shape{};
    const outcome = metrics.classify(rec, a.status, shape);
    const took = now -| rec.start_ns;
    // No end: Envoy refused to start the call (its outcome says so), there is no duration.
    const backend_ns: ?u64 = if (rec.backend) |b| if (b.end_ns == 0) null else b.end_ns -| b.start_ns else null;

    if (set.metrics) {
        const server = [_]metrics.Label{ .{ "mcp_namespace", set.namespace }, .{ "mcp_server", set.server } };
        count("mcpgw_server_requests", &(server ++ [_]metrics.Label{ .{ "mcp_method", method.label() }, .{ "mcp_protocol_version", version } }), 1);
        if (is_call) {
            const per_tool = server ++ [_]metrics.Label{.{ "mcp_tool", tool }};
            count("mcpgw_tool_calls", &(per_tool ++ [_]metrics.Label{.{ "outcome", @tagName(outcome) }}), 1);
            if (shape.error_code) |code| {
                var cbuf: [24]u8 = undefined;
                const text = std.fmt.bufPrint(&cbuf, "{d}", .{code}) catch "0";
                count("mcpgw_tool_jsonrpc_errors", &(per_tool ++ [_]metrics.Label{.{ "code", text }}), 1);
            }
            record("mcpgw_tool_duration_ms", &per_tool, ms(took));
            if (backend_ns) |b| record("mcpgw_tool_backend_duration_ms", &per_tool, ms(b));
            count("mcpgw_tool_request_bytes", &per_tool, rec.request_bytes);
            count("mcpgw_tool_response_bytes", &per_tool, a.body.len);
        }
    }
    if (set.span_name) setSpanName(arena, seen.method, if (is_call) tool else null);
    if (set.access_log) {
        var out = jsonw.Out.initCapacity(arena, 384) catch return;
        const args: ?[]const u8 = if (set.log_arguments and is_call) if (seen.arguments) |v| jsonw.stringifyAlloc(arena, v) catch null else null else null;
        metrics.writeLog(&out, .{
            .namespace = set.namespace,
            .server = set.server,
            .method = seen.method,
            .version = version,
            .request_id = seen.id,
            .session = if (a.session) |t| if (t.len != 0) metrics.hashSession(t) else null else null,
            .tool = if (is_call) tool else null,
            .error_code = shape.error_code,
            .outcome = if (is_call) outcome else null,
            .backend_status = if (rec.backend) |b| b.status else null,
            .backend_ms = if (backend_ns) |b| ms(b) else null,
            .arguments = args,
        }) catch return;
        _ = pw.setProperty(log_property, out.bytes());
    }
}

/// OpenTelemetry's MCP span name, `{mcp.method.name} {target}` (the tool of a
/// tools/call), as the stream property `span_property`: the tracer's
/// `operation` format reads it when the span ends (mcpgw.tracing).
fn setSpanName(arena: std.mem.Allocator, method: ?[]const u8, tool: ?[]const u8) void {
    const m = method orelse return;
    const name = if (tool) |t| std.mem.concat(arena, u8, &.{ m, " ", t }) catch return else m;
    _ = pw.setProperty(span_property, name);
}

/// The stream property (filter state `wasm.mcpgw.span`) holding the span's name.
pub const span_property = "mcpgw.span";

/// The stream property (filter state `wasm.mcpgw.mcp`) the access log prints as `mcp`.
pub const log_property = "mcpgw.mcp";
