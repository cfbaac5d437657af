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
    if (!set.metrics and !set.access_log) return;
    const now = pw.nowNs();
    const method = metrics.Method.parse(seen.method);
    const version = metrics.versionLabel(a.protocol_version);
    const is_call = method == .tools_call;
    const tool = seen.tool orelse metrics.unknown_tool;
    const shape = if (is_call) metrics.shapeOf(a.body) else metrics.Shape{};
    const outcome = metrics.classify(rec, a.status, shape);
    const took = now -| rec.start_ns;
    const backend_ns: ?u64 = if (rec.backend) |b| b.end_ns -| b.start_ns else null;

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
    if (set.access_log) accessLog(arena, set, rec, seen, a, .{
        .method = method,
        .version = version,
        .tool = if (is_call) tool else null,
        .outcome = if (is_call) outcome else null,
        .shape = shape,
        .backend_ns = backend_ns,
    });
}

const Facts = struct {
    method: metrics.Method,
    version: []const u8,
    tool: ?[]const u8,
    outcome: ?metrics.Outcome,
    shape: metrics.Shape,
    backend_ns: ?u64,
};

/// Longest client-sent text (method, request id) the log carries.
const max_logged = 128;

fn clip(s: []const u8) []const u8 {
    return s[0..@min(s.len, max_logged)];
}

fn prop(path: []const u8, value: []const u8) void {
    _ = pw.setProperty(path, value);
}

/// The access-log fields (docs/observability.md): OpenTelemetry's MCP and
/// GenAI attribute names where they exist, `mcpgw.*` otherwise.
fn accessLog(arena: std.mem.Allocator, cfg: *const metrics.Settings, rec: *const metrics.Record, seen: *const mcp.Seen, a: Answer, f: Facts) void {
    prop("mcpgw.namespace", cfg.namespace);
    prop("mcpgw.server", cfg.server);
    if (seen.method) |m| prop("mcp.method.name", clip(m));
    prop("mcp.protocol.version", f.version);
    if (seen.id) |id| {
        const bare = if (id.len >= 2 and id[0] == '"') id[1 .. id.len - 1] else id;
        prop("jsonrpc.request.id", clip(bare));
    }
    if (a.session) |token| if (token.len != 0) {
        const h = metrics.hashSession(token);
        prop("mcp.session.id", &h);
    };
    if (f.tool) |t| {
        prop("gen_ai.tool.name", t);
        prop("gen_ai.operation.name", "execute_tool");
    }
    var nbuf: [24]u8 = undefined;
    if (f.shape.error_code) |code| prop("rpc.response.status_code", std.fmt.bufPrint(&nbuf, "{d}", .{code}) catch "0");
    if (f.outcome) |o| {
        prop("mcpgw.outcome", @tagName(o));
        if (o != .ok) prop("error.type", if (o == .jsonrpc_error) std.fmt.bufPrint(&nbuf, "{d}", .{f.shape.error_code.?}) catch "0" else @tagName(o));
    }
    if (rec.backend) |b| {
        prop("mcpgw.backend.status", std.fmt.bufPrint(&nbuf, "{d}", .{b.status}) catch "0");
    }
    if (f.backend_ns) |b| prop("mcpgw.backend.duration_ms", std.fmt.bufPrint(&nbuf, "{d}", .{ms(b)}) catch "0");
    if (cfg.log_arguments) if (seen.arguments) |args| {
        const text = jsonw.stringifyAlloc(arena, args) catch return;
        prop("mcpgw.arguments", text);
    };
}
