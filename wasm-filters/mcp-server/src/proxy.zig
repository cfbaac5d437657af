//! `type: mcp` servers: the filter proxies MCP to an upstream MCP server
//! (Streamable HTTP) instead of answering from compiled tools. Pure logic,
//! no host calls: what to send upstream for a client request, and what to
//! answer the client for the upstream's answer. main.zig does the calls.
//!
//! - initialize goes to one upstream host (round robin); the upstream's
//!   `Mcp-Session-Id` is kept inside the session id the client gets, with
//!   the host index, so every later request of that session goes to the
//!   same host with the upstream's own session id
//!   (`encodeClientSession` / `decodeClientSession`).
//! - Answers may be JSON or SSE-framed (`event: message` / `data: …`): the
//!   JSON-RPC response is extracted and the client always gets JSON.
//! - tools/list drops tools outside `allow_tools` and applies description /
//!   title overrides; tools/call of a tool not allowed is refused here.
//! - Credentials toward the upstream: static ones from the registry, or the
//!   client's own (passthrough); the client's headers are never forwarded
//!   otherwise.
//! - Upstreams that speak only HTTP+SSE (2024-11-05) are reached through
//!   the session broker's bridge: such a host has `sse_url`, its cluster is
//!   the broker's, and every call names the upstream in
//!   `x-mcpgw-upstream-url`. The bridge answers like a Streamable HTTP
//!   upstream (JSON, `Mcp-Session-Id`), so nothing else changes here.

const std = @import("std");
const Allocator = std.mem.Allocator;
const Value = std.json.Value;
const ObjectMap = std.json.ObjectMap;
const jsonw = @import("jsonw.zig");
const Out = jsonw.Out;
const config = @import("config.zig");
const mcp = @import("mcp.zig");
const Store = @import("store.zig").Store;
const sessions_mod = @import("session.zig");

pub const Header = mcp.Header;

pub const internal_error = -32603;

// ------------------------------------------------------------ configuration

pub const Host = struct {
    /// `<server cluster>|h<index>`: one Envoy cluster per upstream host;
    /// the broker's cluster for a bridged host.
    cluster: []const u8,
    authority: []const u8,
    /// A bridged host (an HTTP+SSE upstream): its SSE URL, sent as
    /// `x-mcpgw-upstream-url` on every call.
    sse_url: ?[]const u8 = null,
    /// Names the host's pooled session (`Pool`): the cluster, or for a
    /// bridged host (whose cluster every bridged host shares) the server's
    /// base path and the SSE URL, so no other host or server uses it.
    pool_key: []const u8,
};

/// The request header naming a bridged host's SSE URL to the broker.
pub const upstream_url_header = "x-mcpgw-upstream-url";

pub const Override = struct {
    description: ?[]const u8 = null,
    title: ?[]const u8 = null,
};

/// The compiled `mcp_upstream` section (CONFIG.md).
pub const Upstream = struct {
    hosts: []const Host,
    /// Path (and optional query) of the upstream's MCP endpoint.
    path: []const u8,
    timeout_ms: u32,
    /// null: every upstream tool is served.
    allow: ?std.StringHashMapUnmanaged(void),
    overrides: std.StringHashMapUnmanaged(Override),
    static_auth: []const config.StaticCredential,
    passthrough: ?config.Passthrough,
    /// The server's `limits.max_json_depth`: for client messages and
    /// upstream answers alike.
    max_json_depth: u32,

    pub fn allowed(self: *const Upstream, name: []const u8) bool {
        const set = self.allow orelse return true;
        return set.contains(name);
    }
};

const RawEnd = struct { in: config.In, name: []const u8, prefix: []const u8 = "" };

/// `mcp_upstream` as delivered; unknown keys are ignored like elsewhere.
pub const RawUpstream = struct {
    hosts: []const struct { cluster: []const u8, authority: ?[]const u8 = null, sse_url: ?[]const u8 = null },
    path: []const u8 = "/mcp",
    timeout_ms: u32 = 10000,
    allow_tools: ?[]const []const u8 = null,
    tools: []const struct { name: []const u8, description: ?[]const u8 = null, title: ?[]const u8 = null } = &.{},
    auth: ?struct {
        static: []const config.StaticCredential = &.{},
        passthrough: ?struct { from: RawEnd, to: RawEnd } = null,
    } = null,
};

/// Compiles `mcp_upstream` into the configuration's block (`store.out`). A
/// passthrough source is added to `sources`, so the filter captures the
/// client's credential with the request headers as it does for REST tools.
/// `base_path` (the server's) keeps bridged hosts' pool keys apart.
pub fn compile(store: *Store, raw: RawUpstream, base_path: []const u8, max_json_depth: u32, why: *[]const u8, sources: *std.ArrayList(config.CredentialSource)) config.Error!*const Upstream {
    const fail = struct {
        fn f(w: *[]const u8, s: *Store, comptime fmt: []const u8, args: anytype) config.Error {
            w.* = try jsonw.allocPrint(s.scratch, fmt, args);
            return error.InvalidConfig;
        }
    }.f;
    if (raw.hosts.len == 0) return fail(why, store, "mcp_upstream.hosts: must not be empty", .{});
    if (raw.path.len == 0 or raw.path[0] != '/' or config.hasControl(raw.path))
        return fail(why, store, "mcp_upstream.path: must start with '/'", .{});
    const hosts = try store.out.alloc(Host, raw.hosts.len);
    for (raw.hosts, hosts, 0..) |h, *d, i| {
        if (h.cluster.len == 0) return fail(why, store, "mcp_upstream.hosts[{d}].cluster: must not be empty", .{i});
        const authority = h.authority orelse h.cluster;
        if (config.hasControl(authority)) return fail(why, store, "mcp_upstream.hosts[{d}].authority: contains a control character", .{i});
        d.* = .{ .cluster = try store.str(h.cluster), .authority = try store.str(authority), .pool_key = undefined };
        d.pool_key = d.cluster;
        if (h.sse_url) |url| {
            if (!(std.mem.startsWith(u8, url, "http://") or std.mem.startsWith(u8, url, "https://")) or !isSessionId(url))
                return fail(why, store, "mcp_upstream.hosts[{d}].sse_url: must be an http:// or https:// URL of visible ASCII", .{i});
            d.sse_url = try store.str(url);
            d.pool_key = try store.str(try jsonw.allocPrint(store.scratch, "{s}|{d}|{s}", .{ base_path, i, url }));
        }
    }

    var allow: ?std.StringHashMapUnmanaged(void) = null;
    if (raw.allow_tools) |names| {
        var set: std.StringHashMapUnmanaged(void) = .empty;
        try set.ensureTotalCapacity(store.out, @intCast(names.len));
        for (names) |n| set.putAssumeCapacity(try store.str(n), {});
        allow = set;
    }
    var overrides: std.StringHashMapUnmanaged(Override) = .empty;
    try overrides.ensureTotalCapacity(store.out, @intCast(raw.tools.len));
    for (raw.tools, 0..) |t, i| {
        if (t.name.len == 0) return fail(why, store, "mcp_upstream.tools[{d}].name: must not be empty", .{i});
        const gop = overrides.getOrPutAssumeCapacity(try store.str(t.name));
        if (gop.found_existing) return fail(why, store, "mcp_upstream.tools[{d}].name: duplicate tool name \"{s}\"", .{ i, t.name });
        gop.value_ptr.* = .{
            .description = if (t.description) |d| try store.bytes(d) else null,
            .title = if (t.title) |d| try store.bytes(d) else null,
        };
    }

    var static_auth: []const config.StaticCredential = &.{};
    var passthrough: ?config.Passthrough = null;
    if (raw.auth) |auth| {
        const list = try store.out.alloc(config.StaticCredential, auth.static.len);
        for (auth.static, list, 0..) |sc, *d, i| {
            if (sc.name.len == 0) return fail(why, store, "mcp_upstream.auth.static[{d}].name: must not be empty", .{i});
            if (sc.in == .header) if (config.headerNameProblem(sc.name)) |problem|
                return fail(why, store, "mcp_upstream.auth.static[{d}].name: must be a regular header name: \"{s}\": {s}", .{ i, sc.name, problem });
            if (config.hasControl(sc.value)) return fail(why, store, "mcp_upstream.auth.static[{d}].value: contains a control character", .{i});
            d.* = .{ .in = sc.in, .name = try lowerIfHeader(store, sc.in, sc.name), .value = try store.str(sc.value) };
        }
        static_auth = list;
        if (auth.passthrough) |pt| {
            for ([_]RawEnd{ pt.from, pt.to }, [_][]const u8{ "from", "to" }) |end, which| {
                if (end.name.len == 0 or (end.in == .header and !isHeaderName(end.name)))
                    return fail(why, store, "mcp_upstream.auth.passthrough.{s}.name: must be a regular header or parameter name", .{which});
            }
            // The client's header is only read; the upstream's is sent.
            if (pt.to.in == .header) if (config.headerNameProblem(pt.to.name)) |problem|
                return fail(why, store, "mcp_upstream.auth.passthrough.to.name: must be a regular header name: \"{s}\": {s}", .{ pt.to.name, problem });
            if (config.hasControl(pt.to.prefix)) return fail(why, store, "mcp_upstream.auth.passthrough.to.prefix: contains a control character", .{});
            const from_name = try lowerIfHeader(store, pt.from.in, pt.from.name);
            const source: u32 = for (sources.items, 0..) |s, k| {
                if (s.in == pt.from.in and std.mem.eql(u8, s.name, from_name)) break @intCast(k);
            } else blk: {
                try sources.append(store.scratch, .{ .in = pt.from.in, .name = from_name });
                break :blk @intCast(sources.items.len - 1);
            };
            passthrough = .{
                .source = source,
                .from_name = try store.str(pt.from.name),
                .from_prefix = try store.str(pt.from.prefix),
                .to_in = pt.to.in,
                .to_name = try lowerIfHeader(store, pt.to.in, pt.to.name),
                .to_prefix = try store.str(pt.to.prefix),
            };
        }
    }

    const up = try store.out.create(Upstream);
    up.* = .{
        .hosts = hosts,
        .path = try store.str(raw.path),
        .timeout_ms = raw.timeout_ms,
        .allow = allow,
        .overrides = overrides,
        .static_auth = static_auth,
        .passthrough = passthrough,
        .max_json_depth = max_json_depth,
    };
    return up;
}

fn isHeaderName(name: []const u8) bool {
    return name.len != 0 and name[0] != ':' and config.isToken(name);
}

fn lowerIfHeader(store: *Store, in: config.In, name: []const u8) Allocator.Error![]const u8 {
    if (in == .query) return store.str(name);
    return store.str(try std.ascii.allocLowerString(store.scratch, name));
}

// ------------------------------------------------- client session ids

/// Where a client session lives upstream: the host that created it and the
/// upstream's own session id (empty when the upstream issued none).
pub const UpstreamSession = struct { host: u32, id: []const u8 };

/// The opaque payload naming an upstream session: `<host index>.<upstream
/// session id>`. This is the `extra` a signed session token carries.
pub fn encodeExtra(arena: Allocator, s: UpstreamSession) Allocator.Error![]const u8 {
    return jsonw.allocPrint(arena, "{d}.{s}", .{ s.host, s.id });
}

/// `encodeExtra` read back; null when malformed or when the host index is
/// not one of `hosts` (the host list changed since).
pub fn decodeExtra(extra: []const u8, hosts: usize) ?UpstreamSession {
    const dot = std.mem.indexOfScalar(u8, extra, '.') orelse return null;
    if (dot == 0 or dot > 9) return null;
    for (extra[0..dot]) |c| if (c < '0' or c > '9') return null;
    const host = std.fmt.parseUnsigned(u32, extra[0..dot], 10) catch return null;
    if (host >= hosts) return null;
    const id = extra[dot + 1 ..];
    if (!isSessionId(id)) return null;
    return .{ .host = host, .id = id };
}

/// Signed session ids (session.zig) for servers with `sessions`; filled in
/// by main.zig, which owns the clock and the random source.
pub const Signing = struct {
    sessions: *const sessions_mod.Sessions,
    base_path: []const u8,
    now_ms: u64,
    nonce: [sessions_mod.nonce_len]u8,
};

/// The session id the client gets for an upstream session; `version` is the
/// protocol version the upstream negotiated (null when its answer named
/// none). With `sessions`: a signed token whose `extra` is `encodeExtra(s)`,
/// issued even when the upstream is stateless. Without: the plain
/// `encodeExtra` text, and none at all when the upstream issued none (the
/// client's later requests then go round robin).
pub fn encodeClientSession(arena: Allocator, signing: ?*const Signing, s: UpstreamSession, version: ?[]const u8) Allocator.Error!?[]const u8 {
    const sg = signing orelse {
        if (s.id.len == 0) return null;
        return try encodeExtra(arena, s);
    };
    const extra = try encodeExtra(arena, s);
    return sessions_mod.issue(arena, sg.sessions, sg.base_path, sg.now_ms, version orelse mcp.latest_version, extra, sg.nonce) catch |err| switch (err) {
        error.OutOfMemory => error.OutOfMemory,
        else => null,
    };
}

/// The upstream session a client's `Mcp-Session-Id` names; null → 404
/// "Session not found" (tampered, expired, another server's, or naming a
/// host that is no longer configured).
pub fn decodeClientSession(arena: Allocator, up: *const Upstream, signing: ?*const Signing, token: []const u8) ?UpstreamSession {
    const sg = signing orelse {
        const s = decodeExtra(token, up.hosts.len) orelse return null;
        return if (s.id.len == 0) null else s;
    };
    const v = sessions_mod.verify(arena, sg.sessions, sg.base_path, sg.now_ms, token) catch return null;
    return decodeExtra(v.extra, up.hosts.len);
}

fn signingOf(ex: *const Exchange) ?*const Signing {
    return if (ex.signing) |*sg| sg else null;
}

/// Visible ASCII (0x21-0x7E), as the spec requires of session ids; empty
/// is allowed here (no upstream session).
fn isSessionId(id: []const u8) bool {
    for (id) |c| if (c < 0x21 or c > 0x7e) return false;
    return true;
}

// ---------------------------------------------------------- request path

/// A complete answer to the client.
pub const Reply = struct {
    status: u32,
    /// Empty for 202 / 204.
    body: []const u8,
    /// `mcp-session-id` on the answer (initialize).
    session: ?[]const u8 = null,
    /// For the operator's log, not the client: what a failure answer leaves
    /// out (the upstream host, Envoy's reason, the upstream's error text).
    detail: []const u8 = "",
};

/// An upstream request to make with proxy_http_call.
pub const Call = struct {
    cluster: []const u8,
    /// Pseudo-headers first.
    headers: []const Header,
    body: []const u8,
    timeout_ms: u32,
};

pub const Step = union(enum) {
    reply: Reply,
    call: Call,
};

pub const Kind = enum { initialize, tools_list, tools_call, request, notification, delete, discover };

/// One client request's progress, kept in the stream.
pub const Exchange = struct {
    /// The client's `Mcp-Session-Id`, captured with the request headers.
    client_session: ?[]const u8 = null,
    kind: Kind = .request,
    /// The request id as JSON text, for answers made here.
    id: []const u8 = "null",
    host: u32 = 0,
    /// The upstream session the request was sent in, if any.
    upstream_session: ?[]const u8 = null,
    /// A 2026-07-28 request, served in an upstream session the filter
    /// opened itself (`Pool`).
    modern: ?*Modern = null,
    /// Set when the server has `sessions`: session ids are signed tokens and
    /// required on every request but initialize (as for REST servers).
    signing: ?Signing = null,
    /// Envoy's `x-request-id` of the client request: failure answers quote
    /// it, so a client's report finds the operator's log line.
    request_id: []const u8 = "",
};

/// Per VM: the round robin counter for new sessions, and the upstream
/// sessions the filter keeps for 2026-07-28 clients.
pub const Vm = struct {
    gpa: Allocator,
    round_robin: u32 = 0,
    pool: Pool = .{},
};

/// What the upstream answered (`status` 0 is never passed: a failed call
/// goes to `failed`).
pub const Response = mcp.UpstreamResponse;

const accept_both = "application/json, text/event-stream";

fn errorReply(arena: Allocator, status: u32, id: []const u8, code: i32, comptime fmt: []const u8, args: anytype) Allocator.Error!Step {
    const message = try jsonw.allocPrint(arena, fmt, args);
    return .{ .reply = .{ .status = status, .body = try mcp.errorBody(arena, id, code, message) } };
}

fn sessionNotFound(arena: Allocator, id: []const u8) Allocator.Error!Step {
    return errorReply(arena, 404, id, mcp.invalid_request, "Session not found", .{});
}

/// The first step for a POST body: a local answer (parse errors, a tool
/// outside `allow_tools`, an unknown session) or the upstream call.
pub fn start(arena: Allocator, vm: *Vm, up: *const Upstream, ex: *Exchange, body: []const u8, client: *const mcp.Client) Allocator.Error!Step {
    var m = switch (try mcp.parseMessage(arena, body, up.max_json_depth)) {
        .message => |m| m,
        .reply => |r| return .{ .reply = .{ .status = r.status, .body = r.body } },
    };
    const obj = &m.obj;
    const id = m.id;
    ex.id = id orelse "null";
    const method = m.method;
    const params = m.params;

    if (mcp.isModern(params, client)) return startModern(arena, vm, up, ex, obj, id != null, method, client);

    if (id == null or method == null) {
        ex.kind = .notification;
    } else if (std.mem.eql(u8, method.?, "initialize")) {
        ex.kind = .initialize;
    } else if (std.mem.eql(u8, method.?, "tools/list")) {
        ex.kind = .tools_list;
    } else if (std.mem.eql(u8, method.?, "tools/call")) {
        ex.kind = .tools_call;
        if (try refuseTool(arena, up, ex.id, params, 200)) |refused| return refused;
    } else {
        ex.kind = .request;
    }

    if (ex.kind != .initialize) if (ex.client_session) |token| {
        const s = decodeClientSession(arena, up, signingOf(ex), token) orelse return sessionNotFound(arena, ex.id);
        ex.host = s.host;
        ex.upstream_session = if (s.id.len == 0) null else s.id;
    } else if (ex.signing != null) {
        return errorReply(arena, 400, ex.id, mcp.invalid_request, "Bad Request: Mcp-Session-Id header is required", .{});
    } else {
        ex.host = pick(up, &vm.round_robin);
    } else {
        ex.host = pick(up, &vm.round_robin);
    }
    return request(arena, up, ex, "POST", body, client, client.protocol_version);
}

/// tools/call of a tool outside `allow_tools` (or without a name): answered
/// here, the upstream never sees it.
fn refuseTool(arena: Allocator, up: *const Upstream, id: []const u8, params: ?Value, status: u32) Allocator.Error!?Step {
    const name = toolName(params) orelse
        return try errorReply(arena, status, id, mcp.invalid_params, "invalid params: name must be a string", .{});
    if (!up.allowed(name)) return try errorReply(arena, status, id, mcp.invalid_params, "unknown tool: {s}", .{name});
    return null;
}

/// DELETE: ends the upstream session the client's session names.
pub fn startDelete(arena: Allocator, up: *const Upstream, ex: *Exchange, client: *const mcp.Client) Allocator.Error!Step {
    ex.kind = .delete;
    const token = ex.client_session orelse
        return errorReply(arena, 400, "null", mcp.invalid_request, "Bad Request: Mcp-Session-Id header is required", .{});
    const s = decodeClientSession(arena, up, signingOf(ex), token) orelse return sessionNotFound(arena, "null");
    ex.host = s.host;
    // A stateless upstream has no session to end: the gateway's own ends (main.zig records it).
    if (s.id.len == 0) return .{ .reply = .{ .status = 204, .body = "" } };
    ex.upstream_session = s.id;
    return request(arena, up, ex, "DELETE", "", client, client.protocol_version);
}

fn pick(up: *const Upstream, round_robin: *u32) u32 {
    const host: u32 = @intCast(round_robin.* % up.hosts.len);
    round_robin.* +%= 1;
    return host;
}

fn toolName(params: ?Value) ?[]const u8 {
    const p = params orelse return null;
    if (p != .object) return null;
    const n = p.object.get("name") orelse return null;
    return if (n == .string) n.string else null;
}

/// The upstream request: headers built from scratch, so nothing of the
/// client's request but its body, session and protocol version goes out.
fn request(arena: Allocator, up: *const Upstream, ex: *const Exchange, method: []const u8, body: []const u8, client: *const mcp.Client, version: ?[]const u8) Allocator.Error!Step {
    var cred: ?[]const u8 = null;
    if (up.passthrough) |*pt| {
        cred = mcp.credential(pt, client) orelse
            return errorReply(arena, 401, ex.id, mcp.invalid_request, "Unauthorized: this MCP server needs the client's credential in {s}", .{pt.from_name});
    }
    const host = up.hosts[ex.host];

    var path = Out.init(arena);
    try path.add(up.path);
    var has_query = std.mem.indexOfScalar(u8, up.path, '?') != null;
    for (up.static_auth) |sc| if (sc.in == .query) {
        try path.byte(if (has_query) '&' else '?');
        has_query = true;
        try path.percent(sc.name);
        try path.byte('=');
        try path.percent(sc.value);
    };
    if (up.passthrough) |pt| if (pt.to_in == .query) {
        try path.byte(if (has_query) '&' else '?');
        try path.percent(pt.to_name);
        try path.byte('=');
        try path.percent(pt.to_prefix);
        try path.percent(cred.?);
    };

    var headers: std.ArrayList(Header) = try .initCapacity(arena, 10 + up.static_auth.len);
    headers.appendAssumeCapacity(.{ .name = ":method", .value = method });
    headers.appendAssumeCapacity(.{ .name = ":path", .value = path.bytes() });
    headers.appendAssumeCapacity(.{ .name = ":authority", .value = host.authority });
    headers.appendAssumeCapacity(.{ .name = "accept", .value = accept_both });
    if (body.len != 0) {
        headers.appendAssumeCapacity(.{ .name = "content-type", .value = "application/json" });
        headers.appendAssumeCapacity(.{ .name = "content-length", .value = try jsonw.allocPrint(arena, "{d}", .{body.len}) });
    }
    if (ex.upstream_session) |sid| headers.appendAssumeCapacity(.{ .name = "mcp-session-id", .value = sid });
    if (version) |v| headers.appendAssumeCapacity(.{ .name = "mcp-protocol-version", .value = v });
    if (host.sse_url) |url| headers.appendAssumeCapacity(.{ .name = upstream_url_header, .value = url });
    for (up.static_auth) |sc| if (sc.in == .header) headers.appendAssumeCapacity(.{ .name = sc.name, .value = sc.value });
    if (up.passthrough) |pt| if (pt.to_in == .header) {
        headers.appendAssumeCapacity(.{ .name = pt.to_name, .value = try std.mem.concat(arena, u8, &.{ pt.to_prefix, cred.? }) });
    };
    for (headers.items) |h| if (config.hasControl(h.value)) {
        return errorReply(arena, 400, ex.id, mcp.invalid_request, "Bad Request: header {s}: value contains a control character", .{h.name});
    };
    return .{ .call = .{ .cluster = host.cluster, .headers = headers.items, .body = body, .timeout_ms = up.timeout_ms } };
}

// ------------------------------------------------------- upstream answers

/// The client's answer when the upstream could not be reached or answered
/// too much (reset, no healthy host, timeout, unknown cluster, size): HTTP
/// 502 with -32603 "upstream MCP server <public>"; `detail` (the cluster,
/// Envoy's reason) is for the operator's log only (`Reply.detail`).
pub fn failed(arena: Allocator, up: *const Upstream, ex: *const Exchange, public: []const u8, detail: []const u8) Allocator.Error!Reply {
    return upstreamFailure(arena, up, ex, public, "{s}", .{detail});
}

/// What follows the upstream's answer: the client's answer, or (for a
/// 2026-07-28 request) the next call of the session the filter opens.
pub fn finish(arena: Allocator, vm: *Vm, up: *const Upstream, ex: *Exchange, resp: Response, client: *const mcp.Client) Allocator.Error!Step {
    if (ex.modern) |md| return modernNext(arena, vm, up, ex, md, resp, client);
    return .{ .reply = try legacyAnswer(arena, up, ex, resp) };
}

fn legacyAnswer(arena: Allocator, up: *const Upstream, ex: *const Exchange, resp: Response) Allocator.Error!Reply {
    const ok = resp.status >= 200 and resp.status < 300;
    if (resp.status == 404 and ex.upstream_session != null) {
        // The upstream forgot the session (restart, expiry): the client must
        // initialize again, which a 404 tells it.
        return (try sessionNotFound(arena, ex.id)).reply;
    }
    if (ex.kind == .delete) {
        if (ok) return .{ .status = 204, .body = "" };
        if (resp.status == 405) return .{ .status = 405, .body = try mcp.errorBody(arena, "null", mcp.invalid_request, "Method Not Allowed: the upstream MCP server does not end sessions") };
        return upstreamError(arena, up, ex, resp);
    }
    if (ex.kind == .notification) {
        if (ok) return .{ .status = 202, .body = "" };
        return passError(arena, up, ex, resp);
    }
    if (!ok) return passError(arena, up, ex, resp);

    const text = responseMessage(arena, resp, up.max_json_depth) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        error.NoResponse => return protocolFailure(arena, up, ex, "answered without a JSON-RPC response", .{}),
        error.TooDeep => return tooDeep(arena, up, ex),
    };
    var reply: Reply = .{ .status = 200, .body = text.bytes };
    if (ex.kind == .tools_list and text.msg.object.get("result") != null) {
        reply.body = try rewriteResult(arena, up, text.msg, ex.kind, false, "");
    }
    if (ex.kind == .initialize) if (findHeader(resp.headers, "mcp-session-id")) |sid| {
        if (!isSessionId(sid) or sid.len == 0) return protocolFailure(arena, up, ex, "sent an invalid Mcp-Session-Id", .{});
        reply.session = try encodeClientSession(arena, signingOf(ex), .{ .host = ex.host, .id = sid }, negotiated(text.msg));
        // Signed sessions carry the upstream's id: one too long to fit fails the handshake
        // here rather than leaving the client without a session.
        if (reply.session == null and ex.signing != null) return protocolFailure(arena, up, ex, "sent an Mcp-Session-Id too long to carry", .{});
    } else if (ex.signing != null) {
        // A stateless upstream: the client still gets the gateway's session.
        reply.session = try encodeClientSession(arena, signingOf(ex), .{ .host = ex.host, .id = "" }, negotiated(text.msg));
    };
    return reply;
}

/// `result.protocolVersion` of an initialize answer.
fn negotiated(msg: Value) ?[]const u8 {
    const result = msg.object.get("result") orelse return null;
    if (result != .object) return null;
    const v = result.object.get("protocolVersion") orelse return null;
    return if (v == .string) v.string else null;
}

/// A non-2xx answer: a JSON-RPC error body is passed on with its status
/// (the client learns what the upstream said), anything else is a -32603.
/// The bridge words its own failures (502, 504) as JSON-RPC errors naming
/// the upstream: those pass too.
fn passError(arena: Allocator, up: *const Upstream, ex: *const Exchange, resp: Response) Allocator.Error!Reply {
    const bridged = up.hosts[ex.host].sse_url != null;
    if ((resp.status >= 400 and resp.status < 500) or (bridged and (resp.status == 502 or resp.status == 504))) {
        if (responseMessage(arena, resp, up.max_json_depth)) |m| {
            if (m.msg.object.get("error") != null) return .{ .status = resp.status, .body = m.bytes };
        } else |err| if (err == error.OutOfMemory) return error.OutOfMemory;
    }
    return upstreamError(arena, up, ex, resp);
}

fn upstreamError(arena: Allocator, up: *const Upstream, ex: *const Exchange, resp: Response) Allocator.Error!Reply {
    const snippet = std.mem.trim(u8, resp.body[0..@min(resp.body.len, 200)], " \t\r\n");
    if (envoyFailure(resp.status, snippet)) {
        const public = if (resp.status == 504) "did not answer in time" else "is unavailable";
        return upstreamFailure(arena, up, ex, public, "is unreachable: {s}", .{snippet});
    }
    // The upstream's own words may carry its internals (a stack trace): logged, not passed on.
    const public = try jsonw.allocPrint(arena, "answered HTTP {d}", .{resp.status});
    return upstreamFailure(arena, up, ex, public, "answered HTTP {d}: {s}", .{ resp.status, snippet });
}

/// Envoy's own answer when it could not get one from the host (connection
/// refused or reset, timeout, no healthy host), as opposed to the upstream's.
fn envoyFailure(status: u32, text: []const u8) bool {
    if (status != 503 and status != 504) return false;
    for ([_][]const u8{ "upstream connect error", "upstream request timeout", "no healthy upstream" }) |prefix| {
        if (std.mem.startsWith(u8, text, prefix)) return true;
    }
    return false;
}

/// A failure answer: the client reads "upstream MCP server <public>" and
/// the request id; the host and `fmt` (Envoy's reason, the upstream's text)
/// go to the operator's log only (`Reply.detail`).
fn upstreamFailure(arena: Allocator, up: *const Upstream, ex: *const Exchange, public: []const u8, comptime fmt: []const u8, args: anytype) Allocator.Error!Reply {
    const what = try jsonw.allocPrint(arena, fmt, args);
    const detail = try jsonw.allocPrint(arena, "upstream MCP server {s} {s}", .{ up.hosts[ex.host].authority, what });
    const message = if (ex.request_id.len == 0)
        try jsonw.allocPrint(arena, "upstream MCP server {s}", .{public})
    else
        try jsonw.allocPrint(arena, "upstream MCP server {s} (request id {s})", .{ public, ex.request_id });
    return .{ .status = 502, .body = try mcp.errorBody(arena, ex.id, internal_error, message), .detail = detail };
}

/// `upstreamFailure` for what the upstream did wrong at the protocol level:
/// the client may read it (no address, no Envoy detail in it).
fn protocolFailure(arena: Allocator, up: *const Upstream, ex: *const Exchange, comptime fmt: []const u8, args: anytype) Allocator.Error!Reply {
    const what = try jsonw.allocPrint(arena, fmt, args);
    return upstreamFailure(arena, up, ex, what, "{s}", .{what});
}

fn tooDeep(arena: Allocator, up: *const Upstream, ex: *const Exchange) Allocator.Error!Reply {
    return protocolFailure(arena, up, ex, "answered JSON nested deeper than the limit of {d} levels", .{up.max_json_depth});
}

pub const Message = struct {
    /// The message as the upstream wrote it (one SSE event's data, or the
    /// JSON body trimmed).
    bytes: []const u8,
    /// Parsed: an object with `result` or `error` and no `method`.
    msg: Value,
};

/// The JSON-RPC response in an upstream answer: the JSON body, or the first
/// response among the messages of an SSE-framed body (notifications and
/// server requests before it are dropped: a JSON answer cannot carry them).
/// `TooDeep`: the response, or a message skipped looking for it, nests
/// deeper than `max_depth` (not parsed, see `jsonw.nestingWithin`).
pub fn responseMessage(arena: Allocator, resp: Response, max_depth: u32) error{ OutOfMemory, NoResponse, TooDeep }!Message {
    const ct = findHeader(resp.headers, "content-type") orelse "";
    if (std.ascii.startsWithIgnoreCase(std.mem.trimLeft(u8, ct, " \t"), "text/event-stream")) {
        var it = SseIterator{ .body = resp.body };
        var skipped_deep = false;
        while (try it.next(arena)) |ev| {
            if (!std.mem.eql(u8, ev.event, "message")) continue;
            // A deep notification before the response must not cost the response.
            if (!jsonw.nestingWithin(ev.data, max_depth)) {
                skipped_deep = true;
                continue;
            }
            if (try asResponse(arena, ev.data)) |m| return m;
        }
        return if (skipped_deep) error.TooDeep else error.NoResponse;
    }
    const text = std.mem.trim(u8, resp.body, " \t\r\n");
    if (!jsonw.nestingWithin(text, max_depth)) return error.TooDeep;
    return (try asResponse(arena, text)) orelse error.NoResponse;
}

fn asResponse(arena: Allocator, text: []const u8) Allocator.Error!?Message {
    const v = std.json.parseFromSliceLeaky(Value, arena, text, .{
        .duplicate_field_behavior = .use_last,
        .parse_numbers = false,
    }) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return null,
    };
    if (v != .object or v.object.contains("method")) return null;
    if (!(v.object.contains("result") or v.object.contains("error"))) return null;
    return .{ .bytes = text, .msg = v };
}

/// A response's result rewritten: for tools/list, tools outside
/// `allow_tools` dropped and overrides applied (every other key, such as
/// nextCursor, kept); for a 2026-07-28 client, the fields that revision
/// requires (`resultType`, and `ttlMs` / `cacheScope` on cacheable
/// methods; private: answers may depend on the caller's credential).
pub fn rewriteResult(arena: Allocator, up: *const Upstream, msg: Value, kind: Kind, modern: bool, method: []const u8) Allocator.Error![]const u8 {
    var message = msg;
    const result = message.object.getPtr("result").?;
    if (kind == .tools_list and result.* == .object) if (result.object.getPtr("tools")) |tools| if (tools.* == .array) {
        var kept: usize = 0;
        for (tools.array.items) |tool| {
            if (tool != .object) continue;
            const name = tool.object.get("name") orelse continue;
            if (name != .string or !up.allowed(name.string)) continue;
            var t = tool;
            if (up.overrides.get(name.string)) |o| {
                if (o.description) |d| try t.object.put("description", .{ .string = d });
                if (o.title) |d| try t.object.put("title", .{ .string = d });
            }
            tools.array.items[kept] = t;
            kept += 1;
        }
        tools.array.items.len = kept;
    };
    if (modern and result.* == .object) {
        const fields = &result.object;
        if (isCacheable(method)) {
            if (!fields.contains("ttlMs")) try fields.put("ttlMs", .{ .number_string = "0" });
            if (!fields.contains("cacheScope")) try fields.put("cacheScope", .{ .string = "private" });
        }
        if (!fields.contains("resultType")) try fields.put("resultType", .{ .string = "complete" });
    }
    var out = Out.init(arena);
    try out.value(message);
    return out.bytes();
}

/// 2026-07-28 methods whose results carry `ttlMs` / `cacheScope`.
fn isCacheable(method: []const u8) bool {
    for ([_][]const u8{ "tools/list", "prompts/list", "resources/list", "resources/read", "resources/templates/list", "server/discover" }) |m| {
        if (std.mem.eql(u8, m, method)) return true;
    }
    return false;
}

fn findHeader(headers: []const Header, name: []const u8) ?[]const u8 {
    for (headers) |h| if (std.ascii.eqlIgnoreCase(h.name, name)) return h.value;
    return null;
}

// --------------------------------------------- 2026-07-28 (stateless) clients
//
// A client of the stateless revision sends no initialize and no session,
// but most upstream servers speak only the session-based revisions. The
// filter therefore keeps, per VM, one upstream session per host (per host
// and client credential for passthrough servers): opened on first use
// (initialize, notifications/initialized), reused by every 2026-07-28
// request that lands on that host, opened again once when the upstream
// answers 404. Requests are sent in the legacy form (the `_meta` envelope
// keys removed, the negotiated `MCP-Protocol-Version`), and results get the
// fields the stateless revision requires. `server/discover` is answered
// from the upstream's initialize result.

/// Upstream sessions the filter opened itself, by pool key.
pub const Pool = struct {
    entries: std.StringHashMapUnmanaged(Entry) = .empty,

    /// Passthrough servers key sessions by credential: bounded, so many
    /// callers cannot grow a VM without limit (full → start over).
    pub const max_entries = 1024;

    pub const Entry = struct {
        /// The upstream's `Mcp-Session-Id`; empty when it issued none.
        session: []const u8,
        /// The protocol version the upstream negotiated.
        version: []const u8,
        /// Its initialize result (compact JSON), for server/discover.
        init_result: []const u8,
    };

    pub fn get(self: *const Pool, key: []const u8) ?Entry {
        return self.entries.get(key);
    }

    /// Stores copies of `key` and `entry`, replacing what was there.
    pub fn put(self: *Pool, gpa: Allocator, key: []const u8, entry: Entry) Allocator.Error!void {
        if (self.entries.count() >= max_entries and !self.entries.contains(key)) self.clear(gpa);
        const copy: Entry = .{
            .session = try gpa.dupe(u8, entry.session),
            .version = try gpa.dupe(u8, entry.version),
            .init_result = try gpa.dupe(u8, entry.init_result),
        };
        errdefer freeEntry(gpa, copy);
        const gop = try self.entries.getOrPut(gpa, key);
        if (gop.found_existing) {
            freeEntry(gpa, gop.value_ptr.*);
        } else {
            gop.key_ptr.* = gpa.dupe(u8, key) catch |err| {
                self.entries.removeByPtr(gop.key_ptr);
                return err;
            };
        }
        gop.value_ptr.* = copy;
    }

    /// Forgets `key` if it still names upstream session `session`.
    pub fn drop(self: *Pool, gpa: Allocator, key: []const u8, session: []const u8) void {
        const e = self.entries.getEntry(key) orelse return;
        if (!std.mem.eql(u8, e.value_ptr.session, session)) return;
        const owned = e.key_ptr.*;
        freeEntry(gpa, e.value_ptr.*);
        self.entries.removeByPtr(e.key_ptr);
        gpa.free(owned);
    }

    pub fn clear(self: *Pool, gpa: Allocator) void {
        var it = self.entries.iterator();
        while (it.next()) |e| {
            freeEntry(gpa, e.value_ptr.*);
            gpa.free(e.key_ptr.*);
        }
        self.entries.clearRetainingCapacity();
    }

    pub fn deinit(self: *Pool, gpa: Allocator) void {
        self.clear(gpa);
        self.entries.deinit(gpa);
    }

    fn freeEntry(gpa: Allocator, e: Entry) void {
        gpa.free(e.session);
        gpa.free(e.version);
        gpa.free(e.init_result);
    }
};

/// A 2026-07-28 request's progress through the session the filter uses.
pub const Modern = struct {
    method: []const u8,
    phase: enum { open, opened, request } = .request,
    /// Opened again once after the upstream forgot the pooled session.
    retried: bool = false,
    key: []const u8,
    /// The request in its legacy form (empty for server/discover).
    body: []const u8,
    /// The pooled session's version and initialize result, copied.
    version: []const u8 = "",
    init_result: []const u8 = "",
};

/// The session the filter opens: the latest revision before the stateless one.
const open_body = "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"" ++
    mcp.latest_version ++ "\",\"capabilities\":{},\"clientInfo\":{\"name\":\"mcpgw\",\"version\":\"0.1.0\"}}}";
const initialized_body = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}";

fn startModern(arena: Allocator, vm: *Vm, up: *const Upstream, ex: *Exchange, obj: *ObjectMap, has_id: bool, method: ?[]const u8, client: *const mcp.Client) Allocator.Error!Step {
    // Notifications and responses have no session to go to (and the
    // revision has nothing for them to act on upstream): accepted, dropped.
    if (!has_id or method == null) return .{ .reply = .{ .status = 202, .body = "" } };
    const m = method.?;
    const params = obj.get("params");
    if (try mcp.checkModern(arena, ex.id, m, params, client)) |rejected| return .{ .reply = .{ .status = rejected.reply.status, .body = rejected.reply.body } };
    if (std.mem.eql(u8, m, "initialize") or std.mem.eql(u8, m, "ping"))
        return errorReply(arena, 404, ex.id, mcp.method_not_found, "method not found: {s}", .{m});
    ex.kind = .request;
    if (std.mem.eql(u8, m, "server/discover")) ex.kind = .discover;
    if (std.mem.eql(u8, m, "tools/list")) ex.kind = .tools_list;
    if (std.mem.eql(u8, m, "tools/call")) {
        ex.kind = .tools_call;
        if (try refuseTool(arena, up, ex.id, params, 400)) |refused| return refused;
    }
    ex.host = pick(up, &vm.round_robin);
    const md = try arena.create(Modern);
    md.* = .{
        .method = m,
        .key = try poolKey(arena, up, ex.host, client),
        .body = if (ex.kind == .discover) "" else try legacyForm(arena, obj),
    };
    ex.modern = md;
    const pooled = vm.pool.get(md.key) orelse return open(arena, up, ex, md, client);
    // Copied: another stream may replace the pooled entry meanwhile.
    md.version = try arena.dupe(u8, pooled.version);
    md.init_result = try arena.dupe(u8, pooled.init_result);
    ex.upstream_session = if (pooled.session.len == 0) null else try arena.dupe(u8, pooled.session);
    if (ex.kind == .discover) return .{ .reply = try discoverReply(arena, ex.id, md.init_result) };
    return request(arena, up, ex, "POST", md.body, client, md.version);
}

/// The host's pool key (its cluster, or what names a bridged host); for
/// passthrough servers also a digest of the client's credential, so no
/// caller uses a session opened with another's.
fn poolKey(arena: Allocator, up: *const Upstream, host: u32, client: *const mcp.Client) Allocator.Error![]const u8 {
    const cluster = up.hosts[host].pool_key;
    const pt = up.passthrough orelse return cluster;
    const cred = mcp.credential(&pt, client) orelse return cluster;
    var digest: [32]u8 = undefined;
    std.crypto.hash.sha2.Sha256.hash(cred, &digest, .{});
    return jsonw.allocPrint(arena, "{s}#{x}", .{ cluster, digest });
}

/// The request without the 2026-07-28 envelope keys in `params._meta`
/// (other `_meta` keys, such as a progress token, stay).
fn legacyForm(arena: Allocator, obj: *ObjectMap) Allocator.Error![]const u8 {
    if (obj.getPtr("params")) |params| if (params.* == .object) if (params.object.getPtr("_meta")) |meta| if (meta.* == .object) {
        var names: std.ArrayList([]const u8) = .empty;
        for (meta.object.keys()) |k| {
            if (std.mem.startsWith(u8, k, "io.modelcontextprotocol/")) try names.append(arena, k);
        }
        for (names.items) |k| _ = meta.object.orderedRemove(k);
        if (meta.object.count() == 0) _ = params.object.orderedRemove("_meta");
    };
    var out = Out.init(arena);
    try out.value(.{ .object = obj.* });
    return out.bytes();
}

fn open(arena: Allocator, up: *const Upstream, ex: *Exchange, md: *Modern, client: *const mcp.Client) Allocator.Error!Step {
    md.phase = .open;
    ex.upstream_session = null;
    return request(arena, up, ex, "POST", open_body, client, null);
}

fn modernNext(arena: Allocator, vm: *Vm, up: *const Upstream, ex: *Exchange, md: *Modern, resp: Response, client: *const mcp.Client) Allocator.Error!Step {
    const ok = resp.status >= 200 and resp.status < 300;
    switch (md.phase) {
        .open => {
            if (!ok) return .{ .reply = try upstreamError(arena, up, ex, resp) };
            const m = responseMessage(arena, resp, up.max_json_depth) catch |err| switch (err) {
                error.OutOfMemory => return error.OutOfMemory,
                error.NoResponse => return .{ .reply = try protocolFailure(arena, up, ex, "answered initialize without a JSON-RPC response", .{}) },
                error.TooDeep => return .{ .reply = try tooDeep(arena, up, ex) },
            };
            const result = m.msg.object.get("result") orelse
                return .{ .reply = try protocolFailure(arena, up, ex, "refused to open a session: {s}", .{m.bytes}) };
            const version = if (result == .object) result.object.get("protocolVersion") else null;
            if (version == null or version.? != .string) return .{ .reply = try protocolFailure(arena, up, ex, "answered initialize without a protocolVersion", .{}) };
            const sid = findHeader(resp.headers, "mcp-session-id") orelse "";
            if (!isSessionId(sid)) return .{ .reply = try protocolFailure(arena, up, ex, "sent an invalid Mcp-Session-Id", .{}) };
            var text = Out.init(arena);
            try text.value(result);
            md.version = try arena.dupe(u8, version.?.string);
            md.init_result = text.bytes();
            ex.upstream_session = if (sid.len == 0) null else try arena.dupe(u8, sid);
            try vm.pool.put(vm.gpa, md.key, .{ .session = sid, .version = md.version, .init_result = md.init_result });
            md.phase = .opened;
            return request(arena, up, ex, "POST", initialized_body, client, md.version);
        },
        .opened => {
            // Whatever it answered, the session is open; the request tells.
            md.phase = .request;
            if (ex.kind == .discover) return .{ .reply = try discoverReply(arena, ex.id, md.init_result) };
            return request(arena, up, ex, "POST", md.body, client, md.version);
        },
        .request => {
            if (resp.status == 404 and ex.upstream_session != null and !md.retried) {
                vm.pool.drop(vm.gpa, md.key, ex.upstream_session.?);
                md.retried = true;
                return open(arena, up, ex, md, client);
            }
            if (!ok) return .{ .reply = try passError(arena, up, ex, resp) };
            const m = responseMessage(arena, resp, up.max_json_depth) catch |err| switch (err) {
                error.OutOfMemory => return error.OutOfMemory,
                error.NoResponse => return .{ .reply = try protocolFailure(arena, up, ex, "answered without a JSON-RPC response", .{}) },
                error.TooDeep => return .{ .reply = try tooDeep(arena, up, ex) },
            };
            if (m.msg.object.get("result") == null) return .{ .reply = .{ .status = 200, .body = m.bytes } };
            return .{ .reply = .{ .status = 200, .body = try rewriteResult(arena, up, m.msg, ex.kind, true, md.method) } };
        },
    }
}

/// `server/discover` from the upstream's initialize result: its
/// capabilities, serverInfo and instructions.
fn discoverReply(arena: Allocator, id: []const u8, init_result: []const u8) Allocator.Error!Reply {
    const parsed = std.json.parseFromSliceLeaky(Value, arena, init_result, .{ .parse_numbers = false }) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => Value{ .object = ObjectMap.init(arena) },
    };
    const r = if (parsed == .object) parsed.object else ObjectMap.init(arena);
    var out = Out.init(arena);
    try out.add("{\"jsonrpc\":\"2.0\",\"id\":");
    try out.add(id);
    try out.add(",\"result\":{\"supportedVersions\":[\"2025-03-26\",\"2025-06-18\",\"2025-11-25\",\"" ++ mcp.modern_version ++ "\"],\"capabilities\":");
    try out.value(r.get("capabilities") orelse Value{ .object = ObjectMap.init(arena) });
    try out.add(",\"cacheScope\":\"private\",\"ttlMs\":0,\"resultType\":\"complete\"");
    if (r.get("serverInfo")) |info| {
        try out.add(",\"_meta\":{\"io.modelcontextprotocol/serverInfo\":");
        try out.value(info);
        try out.byte('}');
    }
    if (r.get("instructions")) |ins| if (ins == .string) {
        try out.add(",\"instructions\":");
        try out.value(ins);
    };
    try out.add("}}");
    return .{ .status = 200, .body = out.bytes() };
}

// -------------------------------------------------------- SSE framing

pub const SseEvent = struct {
    /// `message` when the event names none.
    event: []const u8,
    /// The data lines joined by `\n`.
    data: []const u8,
};

/// Server-sent events of a complete body (HTML Living Standard, "event
/// stream interpretation"): lines end in CRLF, LF or CR; `:` starts a
/// comment; one space after the colon is dropped; a blank line dispatches
/// the event, and so does the end of the body (the upstream closed the
/// stream after its last event). Events without data are skipped.
pub const SseIterator = struct {
    body: []const u8,
    pos: usize = 0,

    pub fn next(self: *SseIterator, arena: Allocator) Allocator.Error!?SseEvent {
        var event: []const u8 = "message";
        var data: ?[]const u8 = null;
        var joined: ?Out = null;
        while (self.pos < self.body.len) {
            const rest = self.body[self.pos..];
            const end = std.mem.indexOfAny(u8, rest, "\r\n") orelse rest.len;
            const line = rest[0..end];
            self.pos += end;
            if (self.pos < self.body.len) {
                if (self.body[self.pos] == '\r' and self.pos + 1 < self.body.len and self.body[self.pos + 1] == '\n') self.pos += 1;
                self.pos += 1;
            }
            if (line.len == 0) {
                if (data) |d| return .{ .event = event, .data = if (joined) |j| j.bytes() else d };
                event = "message";
                continue;
            }
            if (line[0] == ':') continue;
            const colon = std.mem.indexOfScalar(u8, line, ':') orelse line.len;
            const field = line[0..colon];
            var val = if (colon < line.len) line[colon + 1 ..] else "";
            if (val.len != 0 and val[0] == ' ') val = val[1..];
            if (std.mem.eql(u8, field, "event")) {
                event = if (val.len == 0) "message" else val;
            } else if (std.mem.eql(u8, field, "data")) {
                if (data) |d| {
                    if (joined == null) {
                        joined = Out.init(arena);
                        try joined.?.add(d);
                    }
                    try joined.?.byte('\n');
                    try joined.?.add(val);
                }
                data = val;
            }
        }
        if (data) |d| return .{ .event = event, .data = if (joined) |j| j.bytes() else d };
        return null;
    }
};

// ---------------------------------------------------------------- tests

const testing = std.testing;

const weather =
    \\{"server": {"name": "team/weather", "version": "1"}, "base_path": "/mcp/team/weather",
    \\ "mcp_upstream": {
    \\   "hosts": [{"cluster": "c|h0", "authority": "10.0.0.5:8080"}, {"cluster": "c|h1", "authority": "up.example"}],
    \\   "path": "/v1/mcp", "timeout_ms": 3000,
    \\   "allow_tools": ["forecast", "alerts"],
    \\   "tools": [{"name": "forecast", "description": "Better words.", "title": "Forecast"}],
    \\   "auth": {"static": [{"in": "header", "name": "X-Api-Key", "value": "k1"}, {"in": "query", "name": "sig", "value": "a b"}]}}}
;

const Fixture = struct {
    arena_state: std.heap.ArenaAllocator,
    cfg: config.Config,
    client: mcp.Client = .{},
    vm: Vm = .{ .gpa = testing.allocator },

    fn init(text: []const u8) !*Fixture {
        const f = try testing.allocator.create(Fixture);
        f.* = .{ .arena_state = std.heap.ArenaAllocator.init(testing.allocator), .cfg = undefined };
        f.cfg = try config.parseFreed(f.arena_state.allocator(), text);
        return f;
    }

    fn deinit(f: *Fixture) void {
        f.vm.pool.deinit(testing.allocator);
        f.arena_state.deinit();
        testing.allocator.destroy(f);
    }

    fn arena(f: *Fixture) Allocator {
        return f.arena_state.allocator();
    }

    fn up(f: *Fixture) *const Upstream {
        return f.cfg.mcp_upstream.?;
    }

    fn start(f: *Fixture, ex: *Exchange, body: []const u8) !Step {
        return proxy_start(f.arena(), &f.vm, f.up(), ex, body, &f.client);
    }

    fn call(f: *Fixture, ex: *Exchange, body: []const u8) !Call {
        return switch (try f.start(ex, body)) {
            .call => |c| c,
            .reply => |r| {
                std.debug.print("unexpected reply {d}: {s}\n", .{ r.status, r.body });
                return error.TestUnexpectedResult;
            },
        };
    }

    fn finish(f: *Fixture, ex: *Exchange, resp: Response) !Step {
        return proxy_finish(f.arena(), &f.vm, f.up(), ex, resp, &f.client);
    }

    /// The client's answer for an upstream answer.
    fn answer(f: *Fixture, ex: *Exchange, resp: Response) !Reply {
        return switch (try f.finish(ex, resp)) {
            .reply => |r| r,
            .call => error.TestUnexpectedResult,
        };
    }

    fn reply(f: *Fixture, ex: *Exchange, body: []const u8) !Reply {
        return switch (try f.start(ex, body)) {
            .reply => |r| r,
            .call => error.TestUnexpectedResult,
        };
    }
};

const proxy_start = start;
const proxy_finish = finish;

fn header(c: Call, name: []const u8) ?[]const u8 {
    return findHeader(c.headers, name);
}

test "mcp_upstream is compiled" {
    const f = try Fixture.init(weather);
    defer f.deinit();
    const up = f.up();
    try testing.expectEqual(@as(usize, 2), up.hosts.len);
    try testing.expectEqualStrings("c|h1", up.hosts[1].cluster);
    try testing.expectEqualStrings("/v1/mcp", up.path);
    try testing.expectEqual(@as(u32, 3000), up.timeout_ms);
    try testing.expect(up.allowed("forecast") and up.allowed("alerts") and !up.allowed("secret"));
    try testing.expectEqualStrings("Better words.", up.overrides.get("forecast").?.description.?);
    try testing.expectEqualStrings("x-api-key", up.static_auth[0].name);
    try testing.expect(up.passthrough == null);
    try testing.expectEqual(@as(usize, 0), f.cfg.credential_sources.len);

    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    // Defaults: path /mcp, every tool, authority = cluster; a passthrough source.
    const c = try config.parseFreed(a,
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m",
        \\ "mcp_upstream": {"hosts": [{"cluster": "x"}],
        \\   "auth": {"passthrough": {"from": {"in": "header", "name": "Authorization", "prefix": "Bearer "}, "to": {"in": "header", "name": "X-Token"}}}}}
    );
    const u = c.mcp_upstream.?;
    try testing.expectEqualStrings("/mcp", u.path);
    try testing.expectEqualStrings("x", u.hosts[0].authority);
    try testing.expect(u.allowed("anything"));
    try testing.expectEqualStrings("authorization", c.credential_sources[0].name);
    try testing.expectEqualStrings("x-token", u.passthrough.?.to_name);

    for ([_][]const u8{
        \\{"hosts": []}
        ,
        \\{"hosts": [{"cluster": ""}]}
        ,
        \\{"hosts": [{"cluster": "x"}], "path": "mcp"}
        ,
        \\{"hosts": [{"cluster": "x"}], "tools": [{"name": "a", "title": "t"}, {"name": "a", "title": "u"}]}
        ,
        \\{"hosts": [{"cluster": "x"}], "auth": {"static": [{"in": "header", "name": ":path", "value": "v"}]}}
        ,
        \\{"hosts": [{"cluster": "x"}], "auth": {"static": [{"in": "header", "name": "x", "value": "a\nb"}]}}
    }) |section| {
        const text = try jsonw.allocPrint(a, "{{\"server\": {{\"name\": \"s\", \"version\": \"1\"}}, \"base_path\": \"/m\", \"mcp_upstream\": {s}}}", .{section});
        var why: []const u8 = "";
        var scratch = std.heap.ArenaAllocator.init(testing.allocator);
        defer scratch.deinit();
        try testing.expectError(error.InvalidConfig, config.parse(a, scratch.allocator(), text, &why));
        try testing.expect(std.mem.startsWith(u8, why, "mcp_upstream."));
    }
}

test "client session ids name the host and the upstream session" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const e = try encodeExtra(a, .{ .host = 1, .id = "abc.def-9" });
    try testing.expectEqualStrings("1.abc.def-9", e);
    const d = decodeExtra(e, 2).?;
    try testing.expectEqual(@as(u32, 1), d.host);
    try testing.expectEqualStrings("abc.def-9", d.id);
    // No upstream session: an empty id round-trips.
    try testing.expectEqualStrings("", decodeExtra(try encodeExtra(a, .{ .host = 0, .id = "" }), 1).?.id);
    // A host the configuration no longer has, malformed texts, invisible characters.
    for ([_][]const u8{ "2.x", "x.1", ".x", "1x", "", "01234567890.x", "1.a b", "1.\xff", "-1.x" }) |bad| {
        try testing.expect(decodeExtra(bad, 2) == null);
    }
    const f = try Fixture.init(weather);
    defer f.deinit();
    try testing.expectEqualStrings("0.s1", (try encodeClientSession(a, null, .{ .host = 0, .id = "s1" }, "2025-11-25")).?);
    try testing.expect((try encodeClientSession(a, null, .{ .host = 0, .id = "" }, null)) == null);
    try testing.expect(decodeClientSession(a, f.up(), null, "1.") == null);
    try testing.expectEqualStrings("s1", decodeClientSession(a, f.up(), null, "1.s1").?.id);
}

test "initialize goes round robin; later requests follow their session" {
    const f = try Fixture.init(weather);
    defer f.deinit();
    const init_body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\"}}";
    var hosts: [3][]const u8 = undefined;
    for (&hosts) |*h| {
        var ex: Exchange = .{ .client_session = "1.ignored" };
        const c = try f.call(&ex, init_body);
        h.* = c.cluster;
        try testing.expect(header(c, "mcp-session-id") == null);
        try testing.expectEqualStrings(init_body, c.body);
    }
    try testing.expectEqualStrings("c|h0", hosts[0]);
    try testing.expectEqualStrings("c|h1", hosts[1]);
    try testing.expectEqualStrings("c|h0", hosts[2]);

    // The upstream's session comes back encoded, from an SSE-framed answer.
    var ex: Exchange = .{};
    _ = try f.call(&ex, init_body);
    const r = try f.answer(&ex, .{
        .status = 200,
        .headers = &.{ .{ .name = "content-type", .value = "text/event-stream" }, .{ .name = "mcp-session-id", .value = "up-42" } },
        .body = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-06-18\"}}\r\n\r\n",
    });
    try testing.expectEqual(@as(u32, 200), r.status);
    try testing.expectEqualStrings("1.up-42", r.session.?);
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-06-18\"}}", r.body);

    // A request in that session: same host, the upstream's id, the client's version.
    f.client = .{ .protocol_version = "2025-06-18" };
    var ex2: Exchange = .{ .client_session = r.session };
    const c = try f.call(&ex2, "{\"jsonrpc\":\"2.0\",\"id\":\"p\",\"method\":\"ping\"}");
    try testing.expectEqualStrings("c|h1", c.cluster);
    try testing.expectEqualStrings("up-42", header(c, "mcp-session-id").?);
    try testing.expectEqualStrings("2025-06-18", header(c, "mcp-protocol-version").?);
    try testing.expectEqualStrings("POST", header(c, ":method").?);
    try testing.expectEqualStrings("/v1/mcp?sig=a%20b", header(c, ":path").?);
    try testing.expectEqualStrings("up.example", header(c, ":authority").?);
    try testing.expectEqualStrings("application/json, text/event-stream", header(c, "accept").?);
    try testing.expectEqualStrings("k1", header(c, "x-api-key").?);
    try testing.expectEqualStrings("42", header(c, "content-length").?);
    try testing.expect(header(c, "authorization") == null);

    // An unknown or tampered session: 404 so the client initializes again.
    var ex3: Exchange = .{ .client_session = "7.up-42" };
    const nf = try f.reply(&ex3, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}");
    try testing.expectEqual(@as(u32, 404), nf.status);
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-32600,\"message\":\"Session not found\"}}", nf.body);
    // No session at all: round robin, no session header.
    var ex4: Exchange = .{};
    try testing.expect(header(try f.call(&ex4, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}"), "mcp-session-id") == null);
}

test "tools/call of a tool outside allow_tools never reaches the upstream" {
    const f = try Fixture.init(weather);
    defer f.deinit();
    var ex: Exchange = .{ .client_session = "0.s" };
    const r = try f.reply(&ex, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":\"secret\",\"arguments\":{}}}");
    try testing.expectEqual(@as(u32, 200), r.status);
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":5,\"error\":{\"code\":-32602,\"message\":\"unknown tool: secret\"}}", r.body);
    const bad = try f.reply(&ex, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":7}}");
    try testing.expect(std.mem.indexOf(u8, bad.body, "-32602") != null);
    const c = try f.call(&ex, "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"tools/call\",\"params\":{\"name\":\"alerts\",\"arguments\":{}}}");
    try testing.expectEqualStrings("c|h0", c.cluster);
    try testing.expectEqual(Kind.tools_call, ex.kind);
}

test "tools/list is filtered and overridden" {
    const f = try Fixture.init(weather);
    defer f.deinit();
    var ex: Exchange = .{ .client_session = "0.s" };
    _ = try f.call(&ex, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}");
    const upstream_answer =
        \\{"jsonrpc":"2.0","id":2,"result":{"tools":[
        \\ {"name":"forecast","description":"old","inputSchema":{"type":"object","properties":{"n":{"type":"number","maximum":1e3}}}},
        \\ {"name":"secret","description":"hidden"},
        \\ {"name":"alerts","title":"Alerts","description":"kept"},
        \\ "junk"],"nextCursor":"c2"}}
    ;
    const r = try f.answer(&ex, .{ .status = 200, .headers = &.{.{ .name = "Content-Type", .value = "application/json" }}, .body = upstream_answer });
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"forecast","description":"Better words.","inputSchema":{"type":"object","properties":{"n":{"type":"number","maximum":1e3}}},"title":"Forecast"},{"name":"alerts","title":"Alerts","description":"kept"}],"nextCursor":"c2"}}
    , r.body);
    try testing.expect(r.session == null);
    // An error answer to tools/list passes as is.
    const e = try f.answer(&ex, .{ .status = 200, .headers = &.{}, .body = "{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-1,\"message\":\"x\"}}" });
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-1,\"message\":\"x\"}}", e.body);
}

test "SSE answers: the response among notifications, multi-line data, comments" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const sse = [_]Header{.{ .name = "content-type", .value = "text/event-stream; charset=utf-8" }};
    const body =
        ": keepalive\n\n" ++
        "event: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n" ++
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"sampling/createMessage\"}\n\n" ++
        "event: other\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"wrong\":true}}\n\n" ++
        "data:{\"jsonrpc\":\"2.0\",\"id\":1,\n" ++
        "data: \"result\":{\"ok\":true}}\n";
    const m = try responseMessage(a, .{ .status = 200, .headers = &sse, .body = body }, 64);
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":1,\n\"result\":{\"ok\":true}}", m.bytes);

    var it = SseIterator{ .body = "data: a\r\rdata: b\r\ndata\r\n\r\nevent: e\n\nevent: x\ndata: c" };
    const e1 = (try it.next(a)).?;
    try testing.expectEqualStrings("a", e1.data);
    const e2 = (try it.next(a)).?;
    try testing.expectEqualStrings("b\n", e2.data);
    const e3 = (try it.next(a)).?;
    try testing.expectEqualStrings("x", e3.event);
    try testing.expectEqualStrings("c", e3.data);
    try testing.expect((try it.next(a)) == null);

    try testing.expectError(error.NoResponse, responseMessage(a, .{ .status = 200, .headers = &sse, .body = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\n" }, 64));
    try testing.expectError(error.NoResponse, responseMessage(a, .{ .status = 200, .headers = &.{}, .body = "not json" }, 64));
    // Nesting past the limit is never parsed: a deep notification is
    // skipped, a deep response (or only deep messages) is TooDeep.
    const deep = "[" ** 100_000 ++ "]" ** 100_000;
    const note = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"n\",\"params\":" ++ deep ++ "}\n\n";
    const answer = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", (try responseMessage(a, .{ .status = 200, .headers = &sse, .body = note ++ answer }, 64)).bytes);
    try testing.expectError(error.TooDeep, responseMessage(a, .{ .status = 200, .headers = &sse, .body = note }, 64));
    try testing.expectError(error.TooDeep, responseMessage(a, .{ .status = 200, .headers = &.{}, .body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":" ++ deep ++ "}" }, 64));
    try testing.expectError(error.TooDeep, responseMessage(a, .{ .status = 200, .headers = &.{}, .body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":[[[]]]}" }, 3));
}

test "upstream failures, 404 sessions and notifications" {
    const f = try Fixture.init(weather);
    defer f.deinit();
    const a = f.arena();
    var ex: Exchange = .{ .client_session = "1.s" };
    _ = try f.call(&ex, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ping\"}");
    // The upstream forgot the session.
    const gone = try f.answer(&ex, .{ .status = 404, .headers = &.{}, .body = "" });
    try testing.expectEqual(@as(u32, 404), gone.status);
    try testing.expect(std.mem.indexOf(u8, gone.body, "Session not found") != null);
    // Envoy's own answer for a dead host, and a host-reported failure: the
    // client learns a stable reason and the request id, never the host or
    // Envoy's words; the operator's log gets those (`detail`).
    ex.request_id = "rid-1";
    const dead = try f.answer(&ex, .{ .status = 503, .headers = &.{}, .body = "upstream connect error or disconnect/reset before headers" });
    try testing.expectEqual(@as(u32, 502), dead.status);
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":4,"error":{"code":-32603,"message":"upstream MCP server is unavailable (request id rid-1)"}}
    , dead.body);
    try testing.expectEqualStrings("upstream MCP server up.example is unreachable: upstream connect error or disconnect/reset before headers", dead.detail);
    const late = try f.answer(&ex, .{ .status = 504, .headers = &.{}, .body = "upstream request timeout" });
    try testing.expect(std.mem.indexOf(u8, late.body, "\"upstream MCP server did not answer in time (request id rid-1)\"") != null);
    ex.request_id = "";
    // The upstream's own 5xx: its text may carry internals, so only the status.
    const broken = try f.answer(&ex, .{ .status = 500, .headers = &.{}, .body = "Internal Server Error" });
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":4,"error":{"code":-32603,"message":"upstream MCP server answered HTTP 500"}}
    , broken.body);
    try testing.expectEqualStrings("upstream MCP server up.example answered HTTP 500: Internal Server Error", broken.detail);
    const unreachable_ = try failed(a, f.up(), &ex, "is unavailable", "is unreachable: reset");
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":4,"error":{"code":-32603,"message":"upstream MCP server is unavailable"}}
    , unreachable_.body);
    for ([_][]const u8{ dead.body, late.body, broken.body, unreachable_.body }) |body| {
        try testing.expect(std.mem.indexOf(u8, body, "up.example") == null);
    }
    // A JSON-RPC error at a 4xx passes with its status.
    const bad = try f.answer(&ex, .{ .status = 400, .headers = &.{}, .body = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"no\"}}" });
    try testing.expectEqual(@as(u32, 400), bad.status);
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"no\"}}", bad.body);
    // Notifications and client responses: 202 once the upstream took them.
    var n: Exchange = .{ .client_session = "0.s" };
    const c = try f.call(&n, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
    try testing.expectEqualStrings("c|h0", c.cluster);
    try testing.expectEqual(Kind.notification, n.kind);
    try testing.expectEqual(@as(u32, 202), (try f.answer(&n, .{ .status = 202, .headers = &.{}, .body = "" })).status);
    var resp: Exchange = .{ .client_session = "0.s" };
    _ = try f.call(&resp, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}");
    try testing.expectEqual(Kind.notification, resp.kind);
    // An upstream that answers initialize with a bad session id.
    var i: Exchange = .{};
    _ = try f.call(&i, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"}");
    const weird = try f.answer(&i, .{ .status = 200, .headers = &.{.{ .name = "mcp-session-id", .value = "a b" }}, .body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}" });
    try testing.expectEqual(@as(u32, 502), weird.status);
}

test "malformed client messages are answered here" {
    const f = try Fixture.init(weather);
    defer f.deinit();
    var ex: Exchange = .{};
    try testing.expectEqual(@as(u32, 400), (try f.reply(&ex, "{\"jsonrpc\":")).status);
    try testing.expectEqual(@as(u32, 400), (try f.reply(&ex, "[]")).status);
    try testing.expectEqual(@as(u32, 400), (try f.reply(&ex, "{\"id\":1,\"method\":\"ping\"}")).status);
    try testing.expectEqual(@as(u32, 400), (try f.reply(&ex, "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}")).status);
    try testing.expectEqual(@as(u32, 400), (try f.reply(&ex, "{\"jsonrpc\":\"2.0\",\"id\":1}")).status);
}

test "DELETE ends the upstream session" {
    const f = try Fixture.init(weather);
    defer f.deinit();
    const a = f.arena();
    var ex: Exchange = .{ .client_session = "1.s9" };
    const c = switch (try startDelete(a, f.up(), &ex, &f.client)) {
        .call => |c| c,
        .reply => return error.TestUnexpectedResult,
    };
    try testing.expectEqualStrings("DELETE", header(c, ":method").?);
    try testing.expectEqualStrings("s9", header(c, "mcp-session-id").?);
    try testing.expect(header(c, "content-length") == null);
    try testing.expectEqual(@as(u32, 204), (try f.answer(&ex, .{ .status = 200, .headers = &.{}, .body = "" })).status);
    try testing.expectEqual(@as(u32, 404), (try f.answer(&ex, .{ .status = 404, .headers = &.{}, .body = "" })).status);
    var none: Exchange = .{};
    try testing.expectEqual(@as(u32, 400), (try startDelete(a, f.up(), &none, &f.client)).reply.status);
    var bad: Exchange = .{ .client_session = "x" };
    try testing.expectEqual(@as(u32, 404), (try startDelete(a, f.up(), &bad, &f.client)).reply.status);
}

test "passthrough: the client's credential in the upstream's scheme, or 401" {
    const f = try Fixture.init(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m",
        \\ "mcp_upstream": {"hosts": [{"cluster": "x"}],
        \\   "auth": {"passthrough": {"from": {"in": "header", "name": "authorization", "prefix": "Bearer "}, "to": {"in": "query", "name": "token", "prefix": "t-"}}}}}
    );
    defer f.deinit();
    var ex: Exchange = .{};
    const body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}";
    const r = try f.reply(&ex, body);
    try testing.expectEqual(@as(u32, 401), r.status);
    try testing.expect(std.mem.indexOf(u8, r.body, "credential in authorization") != null);
    const creds = [_]?[]const u8{"bearer u s"};
    f.client = .{ .credentials = &creds };
    const c = try f.call(&ex, body);
    try testing.expectEqualStrings("/mcp?token=t-u%20s", header(c, ":path").?);
    try testing.expect(header(c, "authorization") == null);
}

const envelope = "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}";

fn modernClient(method: []const u8, name: ?[]const u8) mcp.Client {
    return .{ .protocol_version = mcp.modern_version, .method = method, .name = name };
}

fn sseAnswer(f: *Fixture, sid: ?[]const u8, data: []const u8) !Response {
    const both = try f.arena().dupe(Header, &.{ .{ .name = "content-type", .value = "text/event-stream" }, .{ .name = "mcp-session-id", .value = sid orelse "" } });
    return .{ .status = 200, .headers = if (sid != null) both else both[0..1], .body = data };
}

test "2026-07-28: the filter opens an upstream session, then reuses it" {
    const f = try Fixture.init(weather);
    defer f.deinit();
    // server/discover on an empty pool: initialize, notifications/initialized, then the answer.
    f.client = modernClient("server/discover", null);
    var ex: Exchange = .{};
    const c1 = try f.call(&ex, "{\"jsonrpc\":\"2.0\",\"id\":\"d\",\"method\":\"server/discover\",\"params\":{" ++ envelope ++ "}}}");
    try testing.expectEqualStrings(open_body, c1.body);
    try testing.expectEqualStrings("c|h0", c1.cluster);
    try testing.expect(header(c1, "mcp-session-id") == null and header(c1, "mcp-protocol-version") == null);
    const c2 = (try f.finish(&ex, try sseAnswer(f, "up-1", "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{\"tools\":{\"listChanged\":true}},\"serverInfo\":{\"name\":\"up\",\"version\":\"2\"},\"instructions\":\"Be nice.\"}}\n\n"))).call;
    try testing.expectEqualStrings(initialized_body, c2.body);
    try testing.expectEqualStrings("up-1", header(c2, "mcp-session-id").?);
    try testing.expectEqualStrings("2025-06-18", header(c2, "mcp-protocol-version").?);
    const d = try f.answer(&ex, .{ .status = 202, .headers = &.{}, .body = "" });
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":"d","result":{"supportedVersions":["2025-03-26","2025-06-18","2025-11-25","2026-07-28"],"capabilities":{"tools":{"listChanged":true}},"cacheScope":"private","ttlMs":0,"resultType":"complete","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"up","version":"2"}},"instructions":"Be nice."}}
    , d.body);
    try testing.expectEqualStrings("up-1", f.vm.pool.get("c|h0").?.session);

    // tools/list on host 1 opens a session there; on host 0 it reuses the pooled one.
    f.client = modernClient("tools/list", null);
    const list = "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\",\"params\":{" ++ envelope ++ ",\"progressToken\":5}}}";
    var ex1: Exchange = .{};
    try testing.expectEqualStrings(open_body, (try f.call(&ex1, list)).body);
    try testing.expectEqualStrings("c|h1", f.up().hosts[ex1.host].cluster);
    var ex2: Exchange = .{};
    const c3 = try f.call(&ex2, list);
    try testing.expectEqualStrings("c|h0", c3.cluster);
    try testing.expectEqualStrings("up-1", header(c3, "mcp-session-id").?);
    try testing.expectEqualStrings("2025-06-18", header(c3, "mcp-protocol-version").?);
    // The envelope keys are gone, the progress token stays.
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\",\"params\":{\"_meta\":{\"progressToken\":5}}}", c3.body);
    const r = try f.answer(&ex2, try sseAnswer(f, null, "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"secret\"},{\"name\":\"forecast\",\"description\":\"x\"}]}}\n\n"));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"forecast","description":"Better words.","title":"Forecast"}],"ttlMs":0,"cacheScope":"private","resultType":"complete"}}
    , r.body);

    // The upstream forgot the pooled session: opened again once, then the request.
    f.client = modernClient("tools/call", "alerts");
    const call_body = "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"alerts\",\"arguments\":{}," ++ envelope ++ "}}}";
    f.vm.round_robin = 0;
    var ex3: Exchange = .{};
    try testing.expectEqualStrings("up-1", header(try f.call(&ex3, call_body), "mcp-session-id").?);
    const reopen = (try f.finish(&ex3, .{ .status = 404, .headers = &.{}, .body = "" })).call;
    try testing.expectEqualStrings(open_body, reopen.body);
    try testing.expect(f.vm.pool.get("c|h0") == null);
    _ = (try f.finish(&ex3, try sseAnswer(f, "up-2", "data: {\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2025-11-25\"}}\n\n"))).call;
    const again = (try f.finish(&ex3, .{ .status = 202, .headers = &.{}, .body = "" })).call;
    try testing.expectEqualStrings("up-2", header(again, "mcp-session-id").?);
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"alerts\",\"arguments\":{}}}", again.body);
    // A second 404 is not retried: the session was the filter's, not the client's.
    const gone = try f.answer(&ex3, .{ .status = 404, .headers = &.{}, .body = "" });
    try testing.expectEqual(@as(u32, 502), gone.status);
    const done = try f.answer(&ex3, .{ .status = 200, .headers = &.{}, .body = "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[],\"isError\":false}}" });
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[],\"isError\":false,\"resultType\":\"complete\"}}", done.body);
}

test "2026-07-28: checks, refusals and notifications are answered here" {
    const f = try Fixture.init(weather);
    defer f.deinit();
    var ex: Exchange = .{};
    f.client = modernClient("tools/call", "secret");
    const refused = try f.reply(&ex, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"secret\"," ++ envelope ++ "}}}");
    try testing.expectEqual(@as(u32, 400), refused.status);
    try testing.expect(std.mem.indexOf(u8, refused.body, "unknown tool: secret") != null);
    // The routing headers must match the body.
    f.client = modernClient("tools/list", null);
    const mismatch = try f.reply(&ex, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"alerts\"," ++ envelope ++ "}}}");
    try testing.expectEqual(@as(u32, 400), mismatch.status);
    try testing.expect(std.mem.indexOf(u8, mismatch.body, "-32020") != null);
    f.client = modernClient("ping", null);
    try testing.expectEqual(@as(u32, 404), (try f.reply(&ex, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{" ++ envelope ++ "}}}")).status);
    f.client = modernClient("notifications/cancelled", null);
    try testing.expectEqual(@as(u32, 202), (try f.reply(&ex, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{" ++ envelope ++ "}}}")).status);
    try testing.expectEqual(@as(usize, 0), f.vm.pool.entries.count());
}

test "2026-07-28: passthrough servers keep one upstream session per credential" {
    const f = try Fixture.init(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m",
        \\ "mcp_upstream": {"hosts": [{"cluster": "x"}],
        \\   "auth": {"passthrough": {"from": {"in": "header", "name": "authorization", "prefix": "Bearer "}, "to": {"in": "header", "name": "authorization", "prefix": "Bearer "}}}}}
    );
    defer f.deinit();
    const list = "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\",\"params\":{" ++ envelope ++ "}}}";
    var keys: [2][]const u8 = undefined;
    for ([_][]const u8{ "Bearer alice", "Bearer bob" }, &keys) |cred, *key| {
        const creds = [_]?[]const u8{cred};
        f.client = modernClient("tools/list", null);
        f.client.credentials = &creds;
        var ex: Exchange = .{};
        const c = try f.call(&ex, list);
        try testing.expectEqualStrings(cred, header(c, "authorization").?);
        key.* = ex.modern.?.key;
        _ = (try f.finish(&ex, try sseAnswer(f, "s", "data: {\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2025-11-25\"}}\n\n"))).call;
    }
    try testing.expect(!std.mem.eql(u8, keys[0], keys[1]));
    try testing.expect(std.mem.startsWith(u8, keys[0], "x#"));
    try testing.expectEqual(@as(usize, 2), f.vm.pool.entries.count());
    // Bounded: a full pool starts over instead of growing.
    var a = std.heap.ArenaAllocator.init(testing.allocator);
    defer a.deinit();
    for (0..Pool.max_entries + 5) |i| {
        try f.vm.pool.put(testing.allocator, try jsonw.allocPrint(a.allocator(), "k{d}", .{i}), .{ .session = "s", .version = "v", .init_result = "{}" });
    }
    try testing.expect(f.vm.pool.entries.count() <= Pool.max_entries);
    f.vm.pool.drop(testing.allocator, "k1028", "other");
    try testing.expect(f.vm.pool.get("k1028") != null);
    f.vm.pool.drop(testing.allocator, "k1028", "s");
    try testing.expect(f.vm.pool.get("k1028") == null);
}

const bridged_config =
    \\{"server": {"name": "team/legacy", "version": "1"}, "base_path": "/mcp/team/legacy",
    \\ "mcp_upstream": {
    \\   "hosts": [{"cluster": "mcpgw-broker", "authority": "10.0.0.5:8080", "sse_url": "http://10.0.0.5:8080/sse"},
    \\             {"cluster": "mcpgw-broker", "authority": "10.0.0.6:8080", "sse_url": "https://10.0.0.6:8080/sse?t=1"}],
    \\   "path": "/v1/bridge", "timeout_ms": 3000,
    \\   "auth": {"static": [{"in": "header", "name": "X-Api-Key", "value": "k1"}]}}}
;

test "bridged hosts: every call goes to the broker and names the SSE URL" {
    const f = try Fixture.init(bridged_config);
    defer f.deinit();
    const up = f.up();
    try testing.expectEqualStrings("http://10.0.0.5:8080/sse", up.hosts[0].sse_url.?);
    try testing.expectEqualStrings("/mcp/team/legacy|1|https://10.0.0.6:8080/sse?t=1", up.hosts[1].pool_key);
    // Both hosts share the broker's cluster, not their pooled sessions.
    try testing.expect(!std.mem.eql(u8, up.hosts[0].pool_key, up.hosts[1].pool_key));

    const init_body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2024-11-05\"}}";
    var ex0: Exchange = .{};
    const c0 = try f.call(&ex0, init_body);
    try testing.expectEqualStrings("mcpgw-broker", c0.cluster);
    try testing.expectEqualStrings("/v1/bridge", header(c0, ":path").?);
    try testing.expectEqualStrings("10.0.0.5:8080", header(c0, ":authority").?);
    try testing.expectEqualStrings("http://10.0.0.5:8080/sse", header(c0, "x-mcpgw-upstream-url").?);
    try testing.expectEqualStrings("k1", header(c0, "x-api-key").?);
    var ex1: Exchange = .{};
    try testing.expectEqualStrings("https://10.0.0.6:8080/sse?t=1", header(try f.call(&ex1, init_body), "x-mcpgw-upstream-url").?);

    // The bridge's session sticks to the host that opened it.
    const r = try f.answer(&ex1, .{
        .status = 200,
        .headers = &.{ .{ .name = "content-type", .value = "application/json" }, .{ .name = "mcp-session-id", .value = "b-7" } },
        .body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2024-11-05\"}}",
    });
    try testing.expectEqualStrings("1.b-7", r.session.?);
    var ex2: Exchange = .{ .client_session = r.session };
    const c2 = try f.call(&ex2, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}");
    try testing.expectEqualStrings("https://10.0.0.6:8080/sse?t=1", header(c2, "x-mcpgw-upstream-url").?);
    try testing.expectEqualStrings("b-7", header(c2, "mcp-session-id").?);

    // The bridge's own failures (timeout, upstream unreachable) are JSON-RPC errors: passed on.
    const timeout_body = "{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32603,\"message\":\"no answer\"}}";
    const t = try f.answer(&ex2, .{ .status = 504, .headers = &.{}, .body = timeout_body });
    try testing.expectEqual(@as(u32, 504), t.status);
    try testing.expectEqualStrings(timeout_body, t.body);
    // The bridge forgot the session (another replica's, expired, stream lost): 404 as usual.
    try testing.expectEqual(@as(u32, 404), (try f.answer(&ex2, .{ .status = 404, .headers = &.{}, .body = "" })).status);
    // Envoy's own answer when the broker is down is still "unavailable"; the
    // host is named in the log only.
    const down = try f.answer(&ex2, .{ .status = 503, .headers = &.{}, .body = "upstream connect error or disconnect/reset before headers" });
    try testing.expectEqual(@as(u32, 502), down.status);
    try testing.expect(std.mem.indexOf(u8, down.body, "upstream MCP server is unavailable") != null);
    try testing.expect(std.mem.indexOf(u8, down.detail, "10.0.0.6:8080 is unreachable") != null);

    // Hosts without sse_url send no such header; an unusable sse_url is refused.
    const plain = try Fixture.init(weather);
    defer plain.deinit();
    var ex3: Exchange = .{};
    try testing.expect(header(try plain.call(&ex3, init_body), "x-mcpgw-upstream-url") == null);
    try testing.expectEqualStrings("c|h0", plain.up().hosts[0].pool_key);
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    for ([_][]const u8{ "ftp://x/sse", "", "http://x/a b", "/sse" }) |url| {
        const text = try jsonw.allocPrint(a, "{{\"server\": {{\"name\": \"s\", \"version\": \"1\"}}, \"base_path\": \"/m\", \"mcp_upstream\": {{\"hosts\": [{{\"cluster\": \"b\", \"sse_url\": \"{s}\"}}]}}}}", .{url});
        var why: []const u8 = "";
        var scratch = std.heap.ArenaAllocator.init(testing.allocator);
        defer scratch.deinit();
        try testing.expectError(error.InvalidConfig, config.parse(a, scratch.allocator(), text, &why));
        try testing.expectEqualStrings("mcp_upstream.hosts[0].sse_url: must be an http:// or https:// URL of visible ASCII", why);
    }
}

test "bridged hosts: 2026-07-28 clients get one pooled session per bridged host" {
    const f = try Fixture.init(bridged_config);
    defer f.deinit();
    f.client = modernClient("tools/list", null);
    const list = "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\",\"params\":{" ++ envelope ++ "}}}";
    for ([_][]const u8{ "s0", "s1" }) |sid| {
        var ex: Exchange = .{};
        const c = try f.call(&ex, list);
        try testing.expectEqualStrings(open_body, c.body);
        try testing.expectEqualStrings("mcpgw-broker", c.cluster);
        _ = (try f.finish(&ex, .{ .status = 200, .headers = &.{.{ .name = "mcp-session-id", .value = sid }}, .body = "{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2024-11-05\"}}" })).call;
    }
    try testing.expectEqual(@as(usize, 2), f.vm.pool.entries.count());
    try testing.expectEqualStrings("s1", f.vm.pool.get(f.up().hosts[1].pool_key).?.session);
    // The next request on host 0 reuses host 0's bridge session, with host 0's URL.
    var ex: Exchange = .{};
    const c = try f.call(&ex, list);
    try testing.expectEqualStrings("s0", header(c, "mcp-session-id").?);
    try testing.expectEqualStrings("http://10.0.0.5:8080/sse", header(c, "x-mcpgw-upstream-url").?);
    try testing.expectEqualStrings("2024-11-05", header(c, "mcp-protocol-version").?);
}
