//! mcp-server filter: the glue between the Proxy-Wasm host and the pure MCP
//! core. One VM serves every MCP server of the registry; each server is a
//! plugin with its own root context and configuration, and each HTTP stream
//! finds its configuration through the root context that created it.

const std = @import("std");
const jsonw = @import("jsonw.zig");
const pw = @import("proxywasm.zig");
const config = @import("config.zig");
const mcp = @import("mcp.zig");
const tpl = @import("template.zig");
const proxy = @import("proxy.zig");

comptime {
    pw.exportAbi(@This());
}

pub const panic = std.debug.FullPanic(pw.panic);

const gpa = pw.allocator();

/// A compiled configuration (one exactly sized block, see
/// `config.parseCompact`). Streams hold a reference so a configuration
/// replaced or deleted mid-request stays valid until they finish.
const Loaded = struct {
    compact: config.Compact,
    refs: u32,

    fn retain(self: *Loaded) *Loaded {
        self.refs += 1;
        return self;
    }

    fn release(self: *Loaded) void {
        self.refs -= 1;
        if (self.refs == 0) {
            self.compact.deinit(gpa);
            gpa.destroy(self);
        }
    }
};

const Root = struct {
    loaded: ?*Loaded = null,
};

const Stream = struct {
    root_id: u32,
    /// Per-request memory, reset when the stream is deleted.
    arena: std.heap.ArenaAllocator,
    loaded: ?*Loaded = null,
    state: enum { headers, body, calling, done } = .headers,
    call: mcp.Call = undefined,
    token: u32 = 0,
    /// Captured at request headers: credentials only for servers with
    /// passthrough tools; the 2026-07-28 routing headers always.
    client: mcp.Client = .{},
    /// `type: mcp` servers: this request's progress (proxy.zig).
    proxy: proxy.Exchange = .{},
};

var roots: std.AutoHashMapUnmanaged(u32, *Root) = .empty;
var streams: std.AutoHashMapUnmanaged(u32, *Stream) = .empty;
/// http_call token → stream context id. Callbacks arrive on the root
/// context, so this is how an answer finds its request.
var calls: std.AutoHashMapUnmanaged(u32, u32) = .empty;

/// Recycled streams keep their arena's first buffer, so steady traffic does
/// not allocate fresh pages per request. Bounded so bursts give memory back.
var spare: std.ArrayList(*Stream) = .empty;
const max_spare = 64;
const arena_keep_bytes = 64 * 1024;

const json_headers = pw.serializeHeadersComptime(&.{.{ .name = "content-type", .value = "application/json" }});
const json_allow_headers = pw.serializeHeadersComptime(&.{
    .{ .name = "content-type", .value = "application/json" },
    .{ .name = "allow", .value = "POST" },
});
const no_headers = pw.serializeHeadersComptime(&.{});
const details = "mcp_server_local_reply";

/// `wasmcustom.mcpgw_vm_memory_bytes`: this VM's linear memory, set when it
/// changes (checked after each configuration and each finished stream, a
/// register read). With several VMs the last writer wins; they hold the same
/// configurations, so the figures agree.
var memory_gauge: ?u32 = null;
var memory_pages_seen: usize = 0;

fn noteMemory() void {
    const pages = @wasmMemorySize(0);
    if (pages == memory_pages_seen) return;
    memory_pages_seen = pages;
    if (memory_gauge == null) memory_gauge = pw.defineMetric(.gauge, "mcpgw_vm_memory_bytes");
    if (memory_gauge) |g| pw.recordMetric(g, @as(u64, pages) * std.wasm.page_size);
}

// ---------------------------------------------------------------- lifecycle

pub fn onContextCreate(id: u32, parent: u32) void {
    if (parent == 0) {
        const root = gpa.create(Root) catch return oom();
        root.* = .{};
        roots.put(gpa, id, root) catch {
            gpa.destroy(root);
            return oom();
        };
        return;
    }
    const s: *Stream = spare.pop() orelse blk: {
        const fresh = gpa.create(Stream) catch return oom();
        fresh.arena = std.heap.ArenaAllocator.init(gpa);
        break :blk fresh;
    };
    s.* = .{ .root_id = parent, .arena = s.arena };
    streams.put(gpa, id, s) catch {
        s.arena.deinit();
        gpa.destroy(s);
        return oom();
    };
}

pub fn onConfigure(id: u32, size: usize) bool {
    const root = roots.get(id) orelse return false;
    const text = pw.getBufferBytes(.plugin_configuration, 0, size) orelse {
        pw.log(.err, "mcp-server: invalid configuration: no plugin configuration");
        return false;
    };
    defer text.free();

    // The JSON tree and everything else only compiling needs: gone on
    // return, so a server keeps just its compiled form (and the next
    // configuration reuses these pages).
    var scratch = std.heap.ArenaAllocator.init(gpa);
    defer scratch.deinit();
    var why: []const u8 = "";
    const compact = config.parseCompact(gpa, scratch.allocator(), text.slice(), &why) catch |err| {
        if (err == error.OutOfMemory) why = "out of memory";
        pw.logf(.err, "mcp-server: invalid configuration: {s}", .{why});
        return false;
    };
    const loaded = gpa.create(Loaded) catch {
        compact.deinit(gpa);
        return false;
    };
    loaded.* = .{ .compact = compact, .refs = 1 };
    if (root.loaded) |old| old.release();
    root.loaded = loaded;
    pw.logf(.info, "mcp-server: serving {s} with {d} tools", .{ compact.cfg.base_path, compact.cfg.tools.len });
    noteMemory();
    return true;
}

pub fn onDelete(id: u32) void {
    if (streams.fetchRemove(id)) |kv| {
        const s = kv.value;
        if (s.state == .calling) _ = calls.remove(s.token);
        if (s.loaded) |l| l.release();
        defer noteMemory();
        if (spare.items.len < max_spare) {
            if (spare.append(gpa, s)) |_| {
                _ = s.arena.reset(.{ .retain_with_limit = arena_keep_bytes });
                return;
            } else |_| {}
        }
        s.arena.deinit();
        gpa.destroy(s);
        return;
    }
    if (roots.fetchRemove(id)) |kv| {
        if (kv.value.loaded) |l| l.release();
        gpa.destroy(kv.value);
    }
}

// ------------------------------------------------------------ request path

pub fn onRequestHeaders(id: u32, num_headers: usize, end_of_stream: bool) pw.Action {
    _ = num_headers;
    const s = streams.get(id) orelse return .@"continue";
    const root = roots.get(s.root_id) orelse return .@"continue";
    const loaded = root.loaded orelse {
        reply(s, .{ .status = 500, .body = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"MCP server not configured\"}}" });
        return .pause;
    };
    s.loaded = loaded.retain();
    const cfg = &loaded.compact.cfg;
    const arena = s.arena.allocator();

    // Every header the filter needs, in one host call (and one allocation).
    const pairs = pw.getHeaderPairs(.http_request_headers) orelse return replyOrOom(s, mcp.notFound(arena));
    defer pairs.free();
    const headers = pairs.slice();
    const path = pw.findHeader(headers, ":path") orelse return replyOrOom(s, mcp.notFound(arena));
    if (!std.mem.eql(u8, stripQuery(path), cfg.base_path)) return replyOrOom(s, mcp.notFound(arena));
    // DNS rebinding: a browser page of another site must not reach us.
    // Requests without `Origin` (SDKs, curl) are not from a browser page.
    if (pw.findHeader(headers, "origin")) |origin| {
        const ok = mcp.originAllowed(arena, cfg, origin) catch return oomAction(s);
        if (!ok) return replyOrOom(s, mcp.forbiddenOrigin(arena));
    }
    const method = pw.findHeader(headers, ":method") orelse return replyOrOom(s, mcp.methodNotAllowed(arena));
    // type: mcp servers: DELETE ends the upstream session.
    const proxy_delete = cfg.mcp_upstream != null and std.mem.eql(u8, method, "DELETE");
    // GET (no server-initiated stream) and DELETE (no session to end) too.
    if (!std.mem.eql(u8, method, "POST") and !proxy_delete) return replyOrOom(s, mcp.methodNotAllowed(arena));
    if (pw.findHeader(headers, "accept")) |accept| {
        if (!mcp.acceptable(accept)) return replyOrOom(s, mcp.notAcceptable(arena));
    }

    // Headers are only readable now; the body (and so the tool) comes later.
    if (cfg.credential_sources.len != 0) {
        s.client = captureCredentials(arena, cfg, headers, path) catch return oomAction(s);
    }
    // 2026-07-28 routing headers, validated against the body later.
    s.client.protocol_version = dupeHeader(arena, headers, "mcp-protocol-version") catch return oomAction(s);
    s.client.method = dupeHeader(arena, headers, "mcp-method") catch return oomAction(s);
    s.client.name = dupeHeader(arena, headers, "mcp-name") catch return oomAction(s);
    if (cfg.mcp_upstream) |up| {
        s.proxy.client_session = dupeHeader(arena, headers, "mcp-session-id") catch return oomAction(s);
        if (proxy_delete) {
            proxyStep(id, s, up, proxy.startDelete(arena, up, &s.proxy, &s.client) catch return oomAction(s));
            return .pause;
        }
    }

    if (end_of_stream) {
        handleBody(id, s, cfg, "");
        return .pause;
    }
    s.state = .body;
    return .pause;
}

pub fn onRequestBody(id: u32, body_size: usize, end_of_stream: bool) pw.Action {
    const s = streams.get(id) orelse return .@"continue";
    // Still `.headers` only when the headers callback let the request through.
    if (s.state == .headers) return .@"continue";
    if (s.state != .body) return .pause;
    const cfg = &s.loaded.?.compact.cfg;
    if (body_size > cfg.max_request_bytes) return replyOrOom(s, mcp.tooLarge(s.arena.allocator(), cfg.max_request_bytes));
    // Keep buffering in the host until the whole message is there.
    if (!end_of_stream) return .pause;

    const body = pw.getBufferBytes(.http_request_body, 0, body_size) orelse {
        handleBody(id, s, cfg, "");
        return .pause;
    };
    defer body.free();
    handleBody(id, s, cfg, body.slice());
    return .pause;
}

fn handleBody(id: u32, s: *Stream, cfg: *const config.Config, body: []const u8) void {
    const arena = s.arena.allocator();
    if (cfg.mcp_upstream) |up| {
        const step = proxy.start(arena, &proxy_vm, up, &s.proxy, body, &s.client) catch return oomReply(s);
        return proxyStep(id, s, up, step);
    }
    const outcome = mcp.handle(arena, cfg, body, &s.client) catch return oomReply(s);
    switch (outcome) {
        .reply => |r| reply(s, r),
        .call => |c| {
            s.call = c;
            const headers = pw.serializeHeaders(arena, c.headers) catch return oomReply(s);
            const up = c.tool.upstream;
            const token = pw.httpCall(up.cluster, headers, c.body, up.timeout_ms) catch {
                const why = jsonw.allocPrint(arena, "upstream cluster {s} is unavailable (proxy_http_call status {d})", .{
                    up.cluster, @intFromEnum(pw.last_http_call_status),
                }) catch return oomReply(s);
                return reply(s, .{ .status = 200, .body = mcp.toolFailure(arena, &s.call, why) catch return oomReply(s) });
            };
            calls.put(gpa, token, id) catch return oomReply(s);
            s.token = token;
            s.state = .calling;
        },
    }
}

pub fn onHttpCallResponse(root_id: u32, token: u32, num_headers: usize, body_size: usize, num_trailers: usize) void {
    _ = .{ root_id, num_trailers };
    const kv = calls.fetchRemove(token) orelse return;
    const s = streams.get(kv.value) orelse return;
    if (s.state != .calling) return;
    _ = pw.setEffectiveContext(kv.value);
    const arena = s.arena.allocator();
    const cfg = &s.loaded.?.compact.cfg;
    if (cfg.mcp_upstream) |up| return proxyResponse(kv.value, s, cfg, up, num_headers, body_size);

    if (num_headers == 0) {
        // The host signals a failed call (reset, no healthy host, ...) by an
        // empty header map; its status message names the cause.
        var why: []const u8 = "upstream request failed";
        if (pw.getStatus()) |st| {
            defer st.message.free();
            if (st.message.len != 0) {
                why = jsonw.allocPrint(arena, "upstream request failed: {s}", .{st.message.slice()}) catch why;
            }
        }
        return reply(s, .{ .status = 200, .body = mcp.toolFailure(arena, &s.call, why) catch return oomReply(s) });
    }
    if (body_size > cfg.max_response_bytes) {
        const why = jsonw.allocPrint(arena, "upstream response of {d} bytes exceeds the limit of {d} bytes", .{ body_size, cfg.max_response_bytes }) catch return oomReply(s);
        return reply(s, .{ .status = 200, .body = mcp.toolFailure(arena, &s.call, why) catch return oomReply(s) });
    }

    const pairs = pw.getHeaderPairs(.http_call_response_headers);
    defer if (pairs) |p| p.free();
    const headers = pw.deserializeHeaders(tpl.Header, arena, if (pairs) |p| p.slice() else "") catch &.{};
    const status_text = tpl.findHeader(headers, ":status") orelse "";
    const status = std.fmt.parseUnsigned(u32, status_text, 10) catch 0;

    const body = if (body_size == 0) null else pw.getBufferBytes(.http_call_response_body, 0, body_size);
    defer if (body) |b| b.free();
    const answer = mcp.toolResult(arena, &s.call, .{
        .status = status,
        .headers = headers,
        .body = if (body) |b| b.slice() else "",
    }) catch return oomReply(s);
    reply(s, .{ .status = 200, .body = answer });
}

// ------------------------------------------------ type: mcp (proxy.zig)

/// Per VM: round robin over a `type: mcp` server's hosts for new sessions,
/// and the upstream sessions kept for 2026-07-28 clients.
var proxy_vm: proxy.Vm = .{ .gpa = gpa };

fn proxyStep(id: u32, s: *Stream, up: *const proxy.Upstream, step: proxy.Step) void {
    const arena = s.arena.allocator();
    switch (step) {
        .reply => |r| proxyReply(s, r),
        .call => |c| {
            const headers = pw.serializeHeaders(arena, c.headers) catch return oomReply(s);
            const token = pw.httpCall(c.cluster, headers, c.body, c.timeout_ms) catch {
                const why = jsonw.allocPrint(arena, "is unavailable: cluster {s} (proxy_http_call status {d})", .{
                    c.cluster, @intFromEnum(pw.last_http_call_status),
                }) catch return oomReply(s);
                return proxyReply(s, proxy.failed(arena, up, &s.proxy, why) catch return oomReply(s));
            };
            calls.put(gpa, token, id) catch return oomReply(s);
            s.token = token;
            s.state = .calling;
        },
    }
}

fn proxyResponse(id: u32, s: *Stream, cfg: *const config.Config, up: *const proxy.Upstream, num_headers: usize, body_size: usize) void {
    const arena = s.arena.allocator();
    if (num_headers == 0) {
        var why: []const u8 = "is unreachable";
        if (pw.getStatus()) |st| {
            defer st.message.free();
            if (st.message.len != 0) why = jsonw.allocPrint(arena, "is unreachable: {s}", .{st.message.slice()}) catch why;
        }
        return proxyReply(s, proxy.failed(arena, up, &s.proxy, why) catch return oomReply(s));
    }
    if (body_size > cfg.max_response_bytes) {
        const why = jsonw.allocPrint(arena, "answered {d} bytes, over the limit of {d} bytes", .{ body_size, cfg.max_response_bytes }) catch return oomReply(s);
        return proxyReply(s, proxy.failed(arena, up, &s.proxy, why) catch return oomReply(s));
    }
    const pairs = pw.getHeaderPairs(.http_call_response_headers);
    defer if (pairs) |p| p.free();
    const headers = pw.deserializeHeaders(tpl.Header, arena, if (pairs) |p| p.slice() else "") catch &.{};
    const status = std.fmt.parseUnsigned(u32, tpl.findHeader(headers, ":status") orelse "", 10) catch 0;
    const body = if (body_size == 0) null else pw.getBufferBytes(.http_call_response_body, 0, body_size);
    defer if (body) |b| b.free();
    const step = proxy.finish(arena, &proxy_vm, up, &s.proxy, .{
        .status = status,
        .headers = headers,
        .body = if (body) |b| b.slice() else "",
    }, &s.client) catch return oomReply(s);
    proxyStep(id, s, up, step);
}

fn proxyReply(s: *Stream, r: proxy.Reply) void {
    s.state = .done;
    var pairs: [2]tpl.Header = undefined;
    var n: usize = 0;
    if (r.body.len != 0) {
        pairs[n] = .{ .name = "content-type", .value = "application/json" };
        n += 1;
    }
    if (r.session) |sid| {
        pairs[n] = .{ .name = "mcp-session-id", .value = sid };
        n += 1;
    }
    const headers = pw.serializeHeaders(s.arena.allocator(), pairs[0..n]) catch return oomReply(s);
    const st = pw.sendLocalResponse(r.status, details, r.body, headers);
    if (st != .ok) pw.logf(.warn, "mcp-server: send_local_response failed with status {d}", .{@intFromEnum(st)});
}

// ------------------------------------------------------------------ helpers

/// The client's value at each credential source, copied into the stream
/// arena (the host's header buffer is freed right away).
fn captureCredentials(arena: std.mem.Allocator, cfg: *const config.Config, headers: []const u8, path: []const u8) std.mem.Allocator.Error!mcp.Client {
    const values = try arena.alloc(?[]const u8, cfg.credential_sources.len);
    for (cfg.credential_sources, values) |src, *v| switch (src.in) {
        .header => v.* = if (pw.findHeader(headers, src.name)) |h| try arena.dupe(u8, h) else null,
        .query => v.* = if (try mcp.queryParam(arena, path, src.name)) |q| try arena.dupe(u8, q) else null,
    };
    return .{ .credentials = values };
}

/// A request header's value copied into the stream arena, when present.
fn dupeHeader(arena: std.mem.Allocator, headers: []const u8, name: []const u8) std.mem.Allocator.Error!?[]const u8 {
    const v = pw.findHeader(headers, name) orelse return null;
    return try arena.dupe(u8, v);
}

fn stripQuery(path: []const u8) []const u8 {
    const end = std.mem.indexOfScalar(u8, path, '?') orelse path.len;
    return path[0..end];
}

fn reply(s: *Stream, r: mcp.Reply) void {
    s.state = .done;
    const headers = if (r.status == 202) no_headers else if (r.allow_post) json_allow_headers else json_headers;
    const st = pw.sendLocalResponse(r.status, details, r.body, headers);
    if (st != .ok) pw.logf(.warn, "mcp-server: send_local_response failed with status {d}", .{@intFromEnum(st)});
}

fn replyOrOom(s: *Stream, r: std.mem.Allocator.Error!mcp.Reply) pw.Action {
    reply(s, r catch return oomAction(s));
    return .pause;
}

fn oomAction(s: *Stream) pw.Action {
    oomReply(s);
    return .pause;
}

fn oomReply(s: *Stream) void {
    oom();
    reply(s, .{ .status = 500, .body = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"out of memory\"}}" });
}

fn oom() void {
    pw.log(.critical, "mcp-server: out of memory");
}
