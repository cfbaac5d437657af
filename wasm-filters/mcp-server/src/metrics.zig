//! Per-call bookkeeping for the data-plane metrics and the MCP access log:
//! what a request was (method, tool), how it ended (the outcome set), and
//! the metric names Envoy exports. No host calls: `Cache` takes the host's
//! `define_metric` as a parameter, so all of this is tested natively.
//!
//! Names. Envoy names a Wasm metric `wasmcustom.<name>`; the labels ride in
//! the name as `.<label>=<value>;` segments, and the bootstrap's
//! `stats_config.stats_tags` (one regex `(\.<label>=([^;]*);)` per label,
//! controlplane/mcpgw/stats_tags.py) cuts each out into a Prometheus label.
//! No label value can contain `=` or `;`: namespaces and servers are DNS
//! labels, tool names `[A-Za-z0-9_.-]` (registry/tools.py), the rest come
//! from the fixed sets below. Dots and underscores in a tool name are thus
//! safe: the value ends at the `;`, never at a `.`.
//!
//! Cardinality: tools come from the registry only; a tools/call naming a tool
//! the server does not serve counts under `unknown_tool`, never its own
//! series. Hook for consumers (issue 16): a `consumer` label would be one
//! more segment in `toolName`, added only where the registry enables it.

const std = @import("std");
const Out = @import("jsonw.zig").Out;

/// How a tools/call ended (docs/observability.md).
pub const Outcome = enum {
    /// The tool answered and the result is not an error.
    ok,
    /// A result with `isError: true` the backend did not cause by an HTTP
    /// error: arguments the schema refused, a missing client credential, an
    /// answer over the size limit, a proxied server's own tool error.
    tool_error,
    /// A JSON-RPC error instead of a result (unknown tool, bad params, …);
    /// its code is counted in `mcpgw_tool_jsonrpc_errors`.
    jsonrpc_error,
    /// The backend answered HTTP 4xx (not 429).
    backend_4xx,
    /// The backend answered HTTP 5xx.
    backend_5xx,
    /// No answer from the backend: connection refused or reset, no healthy
    /// host, Envoy's own 503.
    backend_unavailable,
    /// Envoy gave up waiting for the backend (the tool's timeout, HTTP 504).
    timeout,
    /// Refused by a gateway policy before reaching the backend. Reserved for
    /// the consumer/auth rules (issue 16): not produced yet.
    refused,
    /// The backend answered 429, or Envoy's circuit breakers refused the call
    /// (`x-envoy-overloaded`).
    rate_limited,
};

/// The label value of every tool the server does not serve. Outside the
/// tool-name alphabet, so no registered tool can take it.
pub const unknown_tool = "(unknown)";

/// JSON-RPC methods the per-server counter names; everything else is
/// `other`, so a client cannot mint series.
pub const Method = enum {
    initialize,
    tools_list,
    tools_call,
    ping,
    server_discover,
    notification,
    other,

    pub fn label(self: Method) []const u8 {
        return switch (self) {
            .initialize => "initialize",
            .tools_list => "tools/list",
            .tools_call => "tools/call",
            .ping => "ping",
            .server_discover => "server/discover",
            .notification => "notification",
            .other => "other",
        };
    }

    pub fn parse(text: ?[]const u8) Method {
        const n = text orelse return .notification;
        const map = [_]struct { []const u8, Method }{
            .{ "tools/call", .tools_call },
            .{ "tools/list", .tools_list },
            .{ "initialize", .initialize },
            .{ "ping", .ping },
            .{ "server/discover", .server_discover },
        };
        for (map) |e| if (std.mem.eql(u8, n, e[0])) return e[1];
        if (std.mem.startsWith(u8, n, "notifications/")) return .notification;
        return .other;
    }
};

/// Protocol revisions the per-server counter names as they are; any other
/// value a client sends counts as `other`, none as `none`.
pub const known_versions = [_][]const u8{ "2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28" };

pub fn versionLabel(v: ?[]const u8) []const u8 {
    const got = v orelse return "none";
    for (known_versions) |k| if (std.mem.eql(u8, k, got)) return k;
    return "other";
}

/// The server's identity in names, from the filter configuration's
/// `observability` block (CONFIG.md).
pub const Settings = struct {
    namespace: []const u8 = "",
    server: []const u8 = "",
    /// Off: no metric is defined or touched (the bench's baseline).
    metrics: bool = false,
    /// Off: no access-log fields are set.
    access_log: bool = false,
    /// The tools/call arguments go into the access log too (debugging only).
    log_arguments: bool = false,
    /// The trace span's MCP name is set (`span_property`, observe.zig).
    span_name: bool = false,
};

/// What the filter learnt about one request, filled in as it goes.
pub const Record = struct {
    /// When the request headers arrived (host clock, ns).
    start_ns: u64 = 0,
    method: Method = .other,
    /// tools/call: the registry's name of the tool, or `unknown_tool`.
    tool: ?[]const u8 = null,
    /// The request's JSON-RPC id as JSON text (access log only).
    request_id: ?[]const u8 = null,
    /// tools/call arguments as JSON text (access log, only when enabled).
    arguments: ?[]const u8 = null,
    request_bytes: u64 = 0,
    /// The backend call, when one was made.
    backend: ?Backend = null,
    /// Set once the answer is counted: an answer handed to the broker and
    /// then the POST's 202 are one call.
    done: bool = false,
};

pub const Backend = struct {
    start_ns: u64,
    end_ns: u64 = 0,
    /// HTTP status; 0 when no answer came (reset, refused).
    status: u32 = 0,
    /// Envoy answered instead of the backend (no `x-envoy-upstream-service-time`).
    local: bool = false,
    /// Envoy's circuit breakers refused the call (`x-envoy-overloaded`).
    overloaded: bool = false,
};

/// The parts of an answer the outcome depends on. The filter writes its own
/// answers, so a JSON-RPC error is always `{"jsonrpc":"2.0","id":<id>,"error":{"code":<n>`
/// and a result ends with `"isError":true}}` (or `…,"resultType":"complete"}}`).
pub const Shape = struct { error_code: ?i64 = null, is_error: bool = false };

pub fn shapeOf(body: []const u8) Shape {
    const head = "{\"jsonrpc\":\"2.0\",\"id\":";
    if (!std.mem.startsWith(u8, body, head)) return .{ .is_error = hasIsErrorTrue(body) };
    var i: usize = head.len;
    // Skip the id: a string (with escapes), or a number/null up to the comma.
    if (i < body.len and body[i] == '"') {
        i += 1;
        while (i < body.len and body[i] != '"') : (i += 1) {
            if (body[i] == '\\') i += 1;
        }
        i += 1;
    } else {
        while (i < body.len and body[i] != ',') : (i += 1) {}
    }
    if (i > body.len) return .{};
    const rest = body[i..];
    const err_head = ",\"error\":{\"code\":";
    if (std.mem.startsWith(u8, rest, err_head)) {
        var j: usize = err_head.len;
        while (j < rest.len and (rest[j] == '-' or std.ascii.isDigit(rest[j]))) : (j += 1) {}
        const code = std.fmt.parseInt(i64, rest[err_head.len..j], 10) catch return .{ .error_code = 0 };
        return .{ .error_code = code };
    }
    return .{ .is_error = hasIsErrorTrue(rest) };
}

/// The filter's results end with their `isError`; a proxied server's answer
/// is the upstream's JSON, where it may stand anywhere.
fn hasIsErrorTrue(body: []const u8) bool {
    const tail = std.mem.trimRight(u8, body, " \t\r\n");
    if (std.mem.endsWith(u8, tail, "\"isError\":true}}") or std.mem.endsWith(u8, tail, "\"isError\":true,\"resultType\":\"complete\"}}")) return true;
    if (std.mem.endsWith(u8, tail, "\"isError\":false}}") or std.mem.endsWith(u8, tail, "\"isError\":false,\"resultType\":\"complete\"}}")) return false;
    return std.mem.indexOf(u8, body, "\"isError\":true") != null;
}

/// How a tools/call ended, from its backend call (if any) and its answer.
pub fn classify(rec: *const Record, http_status: u32, shape: Shape) Outcome {
    if (shape.error_code != null) return .jsonrpc_error;
    if (http_status == 429) return .rate_limited;
    if (rec.backend) |b| {
        if (b.overloaded) return .rate_limited;
        if (b.status == 0) return .backend_unavailable;
        if (b.local) return if (b.status == 504) .timeout else .backend_unavailable;
        if (b.status == 429) return .rate_limited;
        if (b.status >= 500) return .backend_5xx;
        if (b.status >= 400) return .backend_4xx;
    }
    if (shape.is_error) return .tool_error;
    return .ok;
}

// --------------------------------------------------------------- names

/// A namespace or server name as the registry allows it (a DNS label), the
/// only form a name segment may take.
pub fn validName(s: []const u8) bool {
    if (s.len == 0 or s.len > 63) return false;
    for (s) |c| switch (c) {
        'a'...'z', '0'...'9', '-' => {},
        else => return false,
    };
    return true;
}

pub const max_name = 512;

pub const Label = struct { []const u8, []const u8 };

/// `<metric>.<l1>=<v1>;.<l2>=<v2>;…` into `buf`.
pub fn metricName(buf: []u8, metric: []const u8, pairs: []const Label) error{NoSpaceLeft}![]const u8 {
    var w = std.Io.Writer.fixed(buf);
    w.writeAll(metric) catch return error.NoSpaceLeft;
    for (pairs) |l| w.print(".{s}={s};", .{ l[0], l[1] }) catch return error.NoSpaceLeft;
    return w.buffered();
}

/// Every label the names carry, in the order `stats_tags` lists them
/// (controlplane/mcpgw/stats_tags.py holds the same list; a unit test
/// compares them).
pub const label_names = [_][]const u8{ "mcp_namespace", "mcp_server", "mcp_tool", "outcome", "code", "mcp_method", "mcp_protocol_version" };

pub const Kind = enum { counter, histogram };

/// Metric ids by full name, defined once per VM per name: a configuration
/// replaced with the same server keeps counting into the same series.
pub const Cache = struct {
    ids: std.StringHashMapUnmanaged(u32) = .empty,

    /// The id of `full`, defining it through `define` the first time; null
    /// when the host refused or memory ran out (the call is then not counted).
    pub fn id(self: *Cache, gpa: std.mem.Allocator, kind: Kind, full: []const u8, define: *const fn (Kind, []const u8) ?u32) ?u32 {
        if (self.ids.get(full)) |got| return got;
        const got = define(kind, full) orelse return null;
        const key = gpa.dupe(u8, full) catch return got;
        self.ids.put(gpa, key, got) catch gpa.free(key);
        return got;
    }

    pub fn deinit(self: *Cache, gpa: std.mem.Allocator) void {
        var it = self.ids.keyIterator();
        while (it.next()) |k| gpa.free(k.*);
        self.ids.deinit(gpa);
    }
};

/// The MCP fields of one access-log line (docs/observability.md): null
/// fields are left out.
pub const LogFields = struct {
    namespace: []const u8,
    server: []const u8,
    method: ?[]const u8 = null,
    version: []const u8 = "none",
    request_id: ?[]const u8 = null,
    session: ?[32]u8 = null,
    tool: ?[]const u8 = null,
    error_code: ?i64 = null,
    outcome: ?Outcome = null,
    backend_status: ?u32 = null,
    backend_ms: ?u64 = null,
    /// JSON text (the arguments as parsed, re-serialised): embedded as it is.
    arguments: ?[]const u8 = null,
};

/// Longest client-sent text (method, request id) a line carries.
pub const max_logged = 128;

fn clip(s: []const u8) []const u8 {
    return s[0..@min(s.len, max_logged)];
}

/// The fields as one JSON object: the filter sets it as one property (one
/// host call), the access log prints it as its `mcp` field. Names follow
/// OpenTelemetry's MCP and GenAI conventions where they exist.
pub fn writeLog(out: *Out, f: LogFields) std.mem.Allocator.Error!void {
    try out.add("{\"mcpgw.namespace\":");
    try out.str(f.namespace);
    try out.add(",\"mcpgw.server\":");
    try out.str(f.server);
    if (f.method) |m| {
        try out.add(",\"mcp.method.name\":");
        try out.str(clip(m));
    }
    try out.add(",\"mcp.protocol.version\":");
    try out.str(f.version);
    if (f.request_id) |id| {
        // The id as JSON text. Always logged as a string: a string id as
        // it came (already a JSON string), a number quoted; a long one clipped.
        try out.add(",\"jsonrpc.request.id\":");
        if (id.len >= 2 and id[0] == '"' and id.len <= max_logged) {
            try out.add(id);
        } else {
            const bare = if (id.len >= 2 and id[0] == '"') id[1 .. id.len - 1] else id;
            try out.str(clip(bare));
        }
    }
    if (f.session) |h| {
        try out.add(",\"mcp.session.id\":\"");
        try out.add(&h);
        try out.byte('"');
    }
    if (f.tool) |t| {
        try out.add(",\"gen_ai.tool.name\":");
        try out.str(t);
        try out.add(",\"gen_ai.operation.name\":\"execute_tool\"");
    }
    if (f.error_code) |code| {
        try out.add(",\"rpc.response.status_code\":\"");
        try out.int(code);
        try out.byte('"');
    }
    if (f.outcome) |o| {
        try out.add(",\"mcpgw.outcome\":\"");
        try out.add(@tagName(o));
        try out.byte('"');
        if (o != .ok) {
            try out.add(",\"error.type\":\"");
            if (o == .jsonrpc_error) try out.int(f.error_code orelse 0) else try out.add(@tagName(o));
            try out.byte('"');
        }
    }
    if (f.backend_status) |st| {
        try out.add(",\"mcpgw.backend.status\":");
        try out.int(st);
    }
    if (f.backend_ms) |ms| {
        try out.add(",\"mcpgw.backend.duration_ms\":");
        try out.int(ms);
    }
    if (f.arguments) |a| {
        try out.add(",\"mcpgw.arguments\":");
        try out.add(a);
    }
    try out.byte('}');
}

/// A session id as the access log shows it: a 128-bit SipHash-2-4 of it in
/// hex, enough to follow one session, never the token itself. SipHash, not
/// SHA-256: the token is long and random (its hash needs no collision
/// resistance against a chooser), and SHA-256 over it cost ~15 µs of Envoy CPU
/// per request in the V8 VM; the fixed key only makes the mapping a keyed PRF.
pub fn hashSession(token: []const u8) [32]u8 {
    const Sip = std.crypto.auth.siphash.SipHash128(2, 4);
    const key: [Sip.key_length]u8 = "mcpgw-session-id".*;
    var digest: [Sip.mac_length]u8 = undefined;
    Sip.create(&digest, token, &key);
    return std.fmt.bytesToHex(digest, .lower);
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

test "names carry their labels as segments the tag regexes cut out" {
    var buf: [max_name]u8 = undefined;
    const n = try metricName(&buf, "mcpgw_tool_calls", &.{ .{ "mcp_namespace", "team-a" }, .{ "mcp_server", "svc" }, .{ "mcp_tool", "get.pet_v2" }, .{ "outcome", "ok" } });
    try testing.expectEqualStrings("mcpgw_tool_calls.mcp_namespace=team-a;.mcp_server=svc;.mcp_tool=get.pet_v2;.outcome=ok;", n);
    var small: [8]u8 = undefined;
    try testing.expectError(error.NoSpaceLeft, metricName(&small, "mcpgw_tool_calls", &.{}));
    // The longest possible name fits: 63-char namespace and server, 128-char tool.
    const long = "x" ** 128;
    _ = try metricName(&buf, "mcpgw_tool_backend_duration_ms", &.{ .{ "mcp_namespace", long[0..63] }, .{ "mcp_server", long[0..63] }, .{ "mcp_tool", long }, .{ "outcome", "backend_unavailable" } });
}

test "the answer's shape: JSON-RPC error code, isError" {
    try testing.expectEqual(@as(?i64, -32602), shapeOf("{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32602,\"message\":\"unknown tool: x\"}}").error_code);
    try testing.expectEqual(@as(?i64, -32601), shapeOf("{\"jsonrpc\":\"2.0\",\"id\":\"a\\\",\\\"error\\\":{\",\"error\":{\"code\":-32601,\"message\":\"m\"}}").error_code);
    // A string id that looks like an error is still a result.
    const tricky = shapeOf("{\"jsonrpc\":\"2.0\",\"id\":\",\\\"error\\\":{\\\"code\\\":1\",\"result\":{\"content\":[],\"isError\":false}}");
    try testing.expectEqual(@as(?i64, null), tricky.error_code);
    try testing.expect(!tricky.is_error);
    try testing.expect(shapeOf("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[],\"isError\":true}}").is_error);
    try testing.expect(shapeOf("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[],\"isError\":true,\"resultType\":\"complete\"}}").is_error);
    // Backend text inside the result cannot make it an error.
    try testing.expect(!shapeOf("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"\\\"isError\\\":true\"}],\"isError\":false}}").is_error);
    try testing.expect(!shapeOf("").is_error);
}

test "outcomes" {
    var rec: Record = .{};
    try testing.expectEqual(Outcome.ok, classify(&rec, 200, .{}));
    try testing.expectEqual(Outcome.tool_error, classify(&rec, 200, .{ .is_error = true }));
    try testing.expectEqual(Outcome.jsonrpc_error, classify(&rec, 200, .{ .error_code = -32602 }));
    rec.backend = .{ .start_ns = 0, .status = 500 };
    try testing.expectEqual(Outcome.backend_5xx, classify(&rec, 200, .{ .is_error = true }));
    rec.backend.?.status = 404;
    try testing.expectEqual(Outcome.backend_4xx, classify(&rec, 200, .{ .is_error = true }));
    rec.backend.?.status = 429;
    try testing.expectEqual(Outcome.rate_limited, classify(&rec, 200, .{ .is_error = true }));
    rec.backend.?.status = 0;
    try testing.expectEqual(Outcome.backend_unavailable, classify(&rec, 200, .{ .is_error = true }));
    rec.backend = .{ .start_ns = 0, .status = 504, .local = true };
    try testing.expectEqual(Outcome.timeout, classify(&rec, 200, .{ .is_error = true }));
    rec.backend = .{ .start_ns = 0, .status = 503, .local = true };
    try testing.expectEqual(Outcome.backend_unavailable, classify(&rec, 200, .{ .is_error = true }));
    rec.backend.?.overloaded = true;
    try testing.expectEqual(Outcome.rate_limited, classify(&rec, 200, .{ .is_error = true }));
    rec.backend = .{ .start_ns = 0, .status = 200 };
    try testing.expectEqual(Outcome.tool_error, classify(&rec, 200, .{ .is_error = true }));
}

test "methods and versions map onto fixed label sets" {
    try testing.expectEqual(Method.tools_call, Method.parse("tools/call"));
    try testing.expectEqual(Method.notification, Method.parse("notifications/initialized"));
    try testing.expectEqual(Method.notification, Method.parse(null));
    try testing.expectEqual(Method.other, Method.parse("resources/list"));
    try testing.expectEqualStrings("tools/list", Method.tools_list.label());
    try testing.expectEqualStrings("2025-06-18", versionLabel("2025-06-18"));
    try testing.expectEqualStrings("other", versionLabel("1999-01-01;.mcp_tool=x;"));
    try testing.expectEqualStrings("none", versionLabel(null));
}

var defined: u32 = 0;
fn fakeDefine(kind: Kind, full: []const u8) ?u32 {
    _ = .{ kind, full };
    defined += 1;
    return defined;
}

test "each name is defined once" {
    var cache: Cache = .{};
    defer cache.deinit(testing.allocator);
    defined = 0;
    const a = cache.id(testing.allocator, .counter, "a.x=1;", fakeDefine).?;
    const b = cache.id(testing.allocator, .counter, "b.x=1;", fakeDefine).?;
    try testing.expect(a != b);
    try testing.expectEqual(a, cache.id(testing.allocator, .counter, "a.x=1;", fakeDefine).?);
    try testing.expectEqual(@as(u32, 2), defined);
}

test "session ids are hashed" {
    const h = hashSession("secret-token");
    try testing.expectEqual(@as(usize, 32), h.len);
    try testing.expect(std.mem.indexOf(u8, &h, "secret") == null);
    try testing.expectEqualSlices(u8, &h, &hashSession("secret-token"));
}

test "the access-log fields as one JSON object" {
    var out = try Out.initCapacity(testing.allocator, 64);
    defer out.list.deinit(testing.allocator);
    try writeLog(&out, .{
        .namespace = "team-a",
        .server = "svc",
        .method = "tools/call",
        .version = "2025-11-25",
        .request_id = "\"r-\\\"1\"",
        .session = hashSession("tok"),
        .tool = "pets.get",
        .error_code = -32602,
        .outcome = .jsonrpc_error,
        .backend_status = 500,
        .backend_ms = 12,
        .arguments = "{\"id\":1}",
    });
    const parsed = try std.json.parseFromSlice(std.json.Value, testing.allocator, out.bytes(), .{});
    defer parsed.deinit();
    const o = parsed.value.object;
    try testing.expectEqualStrings("tools/call", o.get("mcp.method.name").?.string);
    try testing.expectEqualStrings("r-\"1", o.get("jsonrpc.request.id").?.string);
    try testing.expectEqualStrings("-32602", o.get("error.type").?.string);
    try testing.expectEqualStrings("-32602", o.get("rpc.response.status_code").?.string);
    try testing.expectEqual(@as(i64, 500), o.get("mcpgw.backend.status").?.integer);
    try testing.expectEqual(@as(i64, 1), o.get("mcpgw.arguments").?.object.get("id").?.integer);
    try testing.expectEqualStrings(&hashSession("tok"), o.get("mcp.session.id").?.string);

    var bare = try Out.initCapacity(testing.allocator, 64);
    defer bare.list.deinit(testing.allocator);
    try writeLog(&bare, .{ .namespace = "n", .server = "s", .outcome = .ok });
    try testing.expectEqualStrings("{\"mcpgw.namespace\":\"n\",\"mcpgw.server\":\"s\",\"mcp.protocol.version\":\"none\",\"mcpgw.outcome\":\"ok\"}", bare.bytes());
}
