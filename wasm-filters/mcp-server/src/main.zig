//! mcp-server filter: the glue between the Proxy-Wasm host and the pure MCP
//! core. One VM serves every MCP server of the registry; each server is a
//! plugin with its own root context and configuration, and each HTTP stream
//! finds its configuration through the root context that created it.

const std = @import("std");
const jsonw = @import("jsonw.zig");
const pw = @import("proxywasm.zig");
const config = @import("config.zig");
const mcp = @import("mcp.zig");
const session = @import("session.zig");
const tpl = @import("template.zig");
const proxy = @import("proxy.zig");
const cors = @import("cors.zig");
const auth = @import("auth.zig");
const jwtidentity = @import("jwtidentity.zig");
const metrics = @import("metrics.zig");
const observe = @import("observe.zig");
const tracecontext = @import("tracecontext.zig");

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
    /// Unique per configuration: the verified-session cache's entries of a
    /// replaced configuration never answer for its successor.
    generation: u64,

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
    /// `calling`: waiting for the upstream of a tools/call; `publishing`:
    /// waiting for the broker to take an HTTP+SSE answer.
    state: enum { headers, body, calling, publishing, done } = .headers,
    call: mcp.Call = undefined,
    token: u32 = 0,
    /// Captured at request headers: credentials only for servers with
    /// passthrough tools; the 2026-07-28 routing headers always.
    client: mcp.Client = .{},
    /// `type: mcp` servers: this request's progress (proxy.zig).
    proxy: proxy.Exchange = .{},
    /// HTTP+SSE messages: the session's channel (its nonce in hex), where
    /// the answer is published.
    channel: [2 * session.nonce_len]u8 = undefined,
    /// A proxied DELETE's session, recorded as ended when the answer is 204.
    ends: ?struct { nonce: [session.nonce_len]u8, expires_ms: u64 } = null,
    /// Envoy's `x-request-id` (empty when absent or odd): failure answers
    /// quote it, and the log line with the details carries it too.
    request_id: []const u8 = "",
    /// The request's `Origin` when the server accepts it (cors.zig): every
    /// answer names it back, so the page may read the answer.
    cors_origin: ?[]const u8 = null,
    /// Metrics and access log (metrics.zig): what the request was and how
    /// it went; `client.seen` points at `seen` once the body is handled.
    rec: metrics.Record = .{},
    seen: mcp.Seen = .{},
    /// The client's `Mcp-Session-Id`, for the access log (hashed there).
    session_token: ?[]const u8 = null,
};

var next_generation: u64 = 0;
/// Session tokens this VM verified recently (session.zig).
var verified_sessions: session.VerifiedCache = .{};

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
const json_allow_get_headers = pw.serializeHeadersComptime(&.{
    .{ .name = "content-type", .value = "application/json" },
    .{ .name = "allow", .value = "GET" },
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
    next_generation += 1;
    loaded.* = .{ .compact = compact, .refs = 1, .generation = next_generation };
    if (root.loaded) |old| old.release();
    root.loaded = loaded;
    pw.logf(.info, "mcp-server: serving {s} with {d} tools", .{ compact.cfg.base_path, compact.cfg.tools.len });
    if (compact.cfg.sessions != null) prepareRevocationSlots();
    noteMemory();
    return true;
}

/// Creates every empty revocation slot in the host's shared data, once per
/// VM. The ABI has no "create if absent": a slot created while ending a
/// session could race with another worker creating it and lose a record;
/// created empty up front, every later write is a compare-and-swap.
var revocation_slots_ready = false;

fn prepareRevocationSlots() void {
    if (revocation_slots_ready) return;
    revocation_slots_ready = true;
    var i: usize = 0;
    while (i < session.revocation_slots) : (i += 1) {
        var nonce = [_]u8{0} ** session.nonce_len;
        nonce[0] = @intCast(i >> 8);
        nonce[1] = @intCast(i & 0xff);
        const key = session.revocationKey(nonce);
        if (pw.getSharedData(&key)) |got| {
            got.value.free();
            continue;
        }
        _ = pw.setSharedData(&key, "", 0);
    }
}

pub fn onDelete(id: u32) void {
    if (streams.fetchRemove(id)) |kv| {
        const s = kv.value;
        if (s.state == .calling or s.state == .publishing) _ = calls.remove(s.token);
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
    const watched = cfg.observability.metrics or cfg.observability.access_log or cfg.observability.span_name;
    if (watched) s.rec.start_ns = pw.nowNs();

    // Every header the filter needs, in one host call (and one allocation).
    const pairs = pw.getHeaderPairs(.http_request_headers) orelse return replyOrOom(s, mcp.notFound(arena));
    defer pairs.free();
    const headers = pairs.slice();
    s.request_id = requestId(arena, headers) catch return oomAction(s);
    s.proxy.request_id = s.request_id;
    const path = pw.findHeader(headers, ":path") orelse return replyOrOom(s, mcp.notFound(arena));
    const target = targetOf(cfg, stripQuery(path)) orelse return replyOrOom(s, mcp.notFound(arena));
    // DNS rebinding: a browser page of another site must not reach us.
    // Requests without `Origin` (SDKs, curl) are not from a browser page.
    if (pw.findHeader(headers, "origin")) |origin| {
        const ok = mcp.originAllowed(arena, cfg, origin) catch return oomAction(s);
        if (!ok) return replyOrOom(s, mcp.forbiddenOrigin(arena));
        s.cors_origin = arena.dupe(u8, origin) catch return oomAction(s);
    }
    const method = pw.findHeader(headers, ":method") orelse return replyOrOom(s, mcp.methodNotAllowed(arena));
    if (s.cors_origin) |origin| if (cors.isPreflight(method, pw.findHeader(headers, "access-control-request-method"))) {
        s.state = .done;
        const preflight = cors.preflightHeaders(arena, cfg.credential_sources, origin) catch return oomAction(s);
        const serialized = pw.serializeHeaders(arena, preflight) catch return oomAction(s);
        const st = pw.sendLocalResponse(204, details, "", serialized);
        if (st != .ok) pw.logf(.warn, "mcp-server: send_local_response failed with status {d}", .{@intFromEnum(st)});
        return .pause;
    };
    // Who calls, before any MCP path is served (preflights carry no credential).
    if (cfg.auth) |a| if (!authenticate(s, cfg, a, headers, target == .sse)) return .pause;
    var proxy_delete = false;
    // The session the request names, when it verified (checked once, here).
    var verified: ?session.Checked = null;
    switch (target) {
        .sse => return openSse(s, cfg, headers, method),
        .message => {
            if (!std.mem.eql(u8, method, "POST")) return replyOrOom(s, mcp.methodNotAllowed(arena));
            // Every message of an HTTP+SSE session names it; nothing is exempt.
            const token = (mcp.queryParam(arena, path, "sessionId") catch return oomAction(s)) orelse "";
            if (token.len == 0) return replyOrOom(s, mcp.sessionRequired(arena, "null", "sessionId query parameter"));
            const v = (checkSession(arena, loaded, token) catch return oomAction(s)) orelse
                return replyOrOom(s, mcp.sessionNotFound(arena, "null"));
            s.channel = std.fmt.bytesToHex(v.nonce, .lower);
            s.client.transport = .sse;
            s.client.session = .valid;
        },
        .mcp => {
            const delete = std.mem.eql(u8, method, "DELETE");
            // type: mcp servers: DELETE also ends the upstream session (below).
            proxy_delete = cfg.mcp_upstream != null and delete;
            // DELETE ends a session, when there are sessions to end.
            if (cfg.sessions != null and delete and !proxy_delete) return endSession(s, loaded, headers);
            // GET (no server-initiated stream) and DELETE without sessions too.
            if (!std.mem.eql(u8, method, "POST") and !proxy_delete) return replyOrOom(s, mcp.methodNotAllowed(arena));
            if (pw.findHeader(headers, "accept")) |accept| {
                if (!mcp.acceptable(accept)) return replyOrOom(s, mcp.notAcceptable(arena));
            }
            // Checked now, while the header is at hand; whether the message
            // needs a session is known from its body.
            if (cfg.sessions != null) if (pw.findHeader(headers, "mcp-session-id")) |token| if (token.len != 0) {
                verified = checkSession(arena, loaded, token) catch return oomAction(s);
                s.client.session = if (verified != null) .valid else .invalid;
                if (verified) |v| s.client.session_version = v.version;
            };
            // 2026-07-28 routing headers, validated against the body later.
            s.client.protocol_version = dupeHeader(arena, headers, "mcp-protocol-version") catch return oomAction(s);
            s.client.method = dupeHeader(arena, headers, "mcp-method") catch return oomAction(s);
            s.client.name = dupeHeader(arena, headers, "mcp-name") catch return oomAction(s);
            if (cfg.observability.access_log) s.session_token = dupeHeader(arena, headers, "mcp-session-id") catch return oomAction(s);
        },
    }

    // A declared size over the limit is refused before any of the body is
    // buffered (Envoy would otherwise buffer up to its own limit first).
    if (pw.findHeader(headers, "content-length")) |cl| {
        const size = std.fmt.parseUnsigned(u64, cl, 10) catch 0;
        if (size > cfg.max_request_bytes) return replyOrOom(s, mcp.tooLarge(arena, cfg.max_request_bytes));
    }

    // Headers are only readable now; the body (and so the tool) comes later.
    if (cfg.credential_sources.len != 0) {
        s.client.credentials = captureCredentials(arena, cfg, headers, path, cfg.auth) catch return oomAction(s);
    }
    if (cfg.mcp_upstream) |up| {
        s.proxy.client_session = dupeHeader(arena, headers, "mcp-session-id") catch return oomAction(s);
        // An empty header names no session (400 where one is needed, as for REST servers).
        if (s.proxy.client_session) |sid| if (sid.len == 0) {
            s.proxy.client_session = null;
        };
        if (cfg.sessions) |sessions| {
            // Checked above, with the ended-session records this Envoy keeps:
            // a token that failed there must fail in the proxy too.
            if (s.client.session == .invalid) s.proxy.client_session = "";
            s.proxy.signing = signing(sessions, cfg);
        }
        if (proxy_delete) {
            // Recorded as ended once the upstream agreed (proxyReply, on 204).
            if (verified) |v| s.ends = .{ .nonce = v.nonce, .expires_ms = v.issued_ms +| cfg.sessions.?.ttl_ms };
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
    // Answered already (at the headers, or over the limit): the rest of the
    // body is not needed. Buffered, it would fill Envoy's buffer up to its
    // own limit, whose plain-text 413 then replaces the JSON-RPC answer.
    if (s.state != .body) return .discard;
    const cfg = &s.loaded.?.compact.cfg;
    if (body_size > cfg.max_request_bytes) {
        reply(s, mcp.tooLarge(s.arena.allocator(), cfg.max_request_bytes) catch return oomAction(s));
        return .discard;
    }
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
    if (cfg.observability.metrics or cfg.observability.access_log or cfg.observability.span_name) {
        s.rec.request_bytes = body.len;
        s.client.seen = &s.seen;
    }
    const outcome = mcp.handle(arena, cfg, body, &s.client) catch return oomReply(s);
    switch (outcome) {
        .reply => |r| {
            // HTTP+SSE: answers travel on the session's stream, the POST
            // only says whether they got there. HTTP errors (400, 413) and
            // 202s are the POST's own.
            if (s.client.transport == .sse and r.status == 200) return publish(id, s, cfg, r.body);
            const version = r.new_session orelse return reply(s, r);
            const token = mint(arena, cfg, version) catch |err| {
                pw.logf(.err, "mcp-server: cannot mint a session: {s}", .{@errorName(err)});
                return reply(s, .{ .status = 500, .body = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"could not create a session\"}}" });
            };
            observe.sessionOpened(&cfg.observability);
            if (s.client.protocol_version == null) s.client.protocol_version = version;
            replyWith(s, r, token);
        },
        .call => |c| {
            s.call = c;
            const traced = withTraceContext(arena, c.headers) catch return oomReply(s);
            const headers = pw.serializeHeaders(arena, traced) catch return oomReply(s);
            const up = c.tool.upstream;
            if (s.client.seen != null) s.rec.backend = .{ .start_ns = pw.nowNs() };
            const token = pw.httpCall(up.cluster, headers, c.body, up.timeout_ms) catch {
                const why = failure(s, cfg, notDispatched("backend"), "cluster {s}: proxy_http_call status {d}", .{
                    up.cluster, @intFromEnum(pw.last_http_call_status),
                });
                return answer(id, s, cfg, mcp.toolFailure(arena, &s.call, why) catch return oomReply(s));
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
    const id = kv.value;
    const s = streams.get(id) orelse return;
    if (s.state != .calling and s.state != .publishing) return;
    _ = pw.setEffectiveContext(id);
    const arena = s.arena.allocator();
    const cfg = &s.loaded.?.compact.cfg;
    if (s.state == .publishing) return published(s, num_headers);
    if (cfg.mcp_upstream) |up| return proxyResponse(id, s, cfg, up, num_headers, body_size);
    if (s.rec.backend) |*b| b.end_ns = pw.nowNs();

    if (num_headers == 0) {
        // The host signals a failed call (reset, no healthy host, ...) by an
        // empty header map; its status message names the cause.
        const why = failure(s, cfg, "backend unavailable", "cluster {s}: call failed: {s}", .{ s.call.tool.upstream.cluster, callFailure(arena) });
        return answer(id, s, cfg, mcp.toolFailure(arena, &s.call, why) catch return oomReply(s));
    }
    if (body_size > cfg.max_response_bytes) {
        const why = jsonw.allocPrint(arena, "upstream response of {d} bytes exceeds the limit of {d} bytes", .{ body_size, cfg.max_response_bytes }) catch return oomReply(s);
        return answer(id, s, cfg, mcp.toolFailure(arena, &s.call, why) catch return oomReply(s));
    }

    const pairs = pw.getHeaderPairs(.http_call_response_headers);
    defer if (pairs) |p| p.free();
    const headers = pw.deserializeHeaders(tpl.Header, arena, if (pairs) |p| p.slice() else "") catch &.{};
    const status_text = tpl.findHeader(headers, ":status") orelse "";
    const status = std.fmt.parseUnsigned(u32, status_text, 10) catch 0;
    if (s.rec.backend) |*b| {
        b.status = status;
        b.local = tpl.findHeader(headers, "x-envoy-upstream-service-time") == null;
        b.overloaded = tpl.findHeader(headers, "x-envoy-overloaded") != null;
    }

    const body = if (body_size == 0) null else pw.getBufferBytes(.http_call_response_body, 0, body_size);
    defer if (body) |b| b.free();
    // Envoy answers itself when it cannot get an answer (connect failure, no healthy host,
    // timeout, overflow); its router marks every answer that did come from the upstream with
    // `x-envoy-upstream-service-time`. Envoy's own answer is not the backend's: no error
    // template renders it, the result says what happened in stable words (Envoy's own names
    // the cluster, the address and the reset reason: those go to the log).
    if ((status < 200 or status >= 300) and tpl.findHeader(headers, "x-envoy-upstream-service-time") == null) {
        const said = std.mem.trim(u8, if (body) |b| b.slice() else "", " \t\r\n");
        const public = if (tpl.findHeader(headers, "x-envoy-overloaded") != null)
            "backend busy: too many calls in flight, try again later"
        else if (status == 504) "backend did not answer in time" else "backend unavailable";
        const why = failure(s, cfg, public, "cluster {s}: Envoy answered HTTP {d}: {s}", .{ s.call.tool.upstream.cluster, status, said });
        return answer(id, s, cfg, mcp.toolFailure(arena, &s.call, why) catch return oomReply(s));
    }
    const result = mcp.toolResult(arena, &s.call, .{
        .status = status,
        .headers = headers,
        .body = if (body) |b| b.slice() else "",
    }) catch return oomReply(s);
    answer(id, s, cfg, result);
}

/// A tools/call's JSON-RPC answer: the POST's body, or on HTTP+SSE the
/// session stream's next message.
fn answer(id: u32, s: *Stream, cfg: *const config.Config, body: []const u8) void {
    if (s.client.transport == .sse) return publish(id, s, cfg, body);
    reply(s, .{ .status = 200, .body = body });
}

// ----------------------------------------------------------------- sessions

const Target = enum { mcp, sse, message };

/// Which of the server's paths a request is for: `base_path` itself, or
/// with a broker its HTTP+SSE stream and message paths.
fn targetOf(cfg: *const config.Config, path: []const u8) ?Target {
    if (!std.mem.startsWith(u8, path, cfg.base_path)) return null;
    const rest = path[cfg.base_path.len..];
    if (rest.len == 0) return .mcp;
    // A proxied (`type: mcp`) server keeps its upstream session per client
    // session id; HTTP+SSE sessions are not bridged to it (CONFIG.md).
    if (cfg.broker == null or cfg.mcp_upstream != null) return null;
    if (std.mem.eql(u8, rest, "/sse")) return .sse;
    if (std.mem.eql(u8, rest, "/message")) return .message;
    return null;
}

/// The verified session a token names, or null when it is not one of ours
/// for this server, has expired, or was ended (DELETE) on this Envoy.
fn checkSession(arena: std.mem.Allocator, loaded: *const Loaded, token: []const u8) std.mem.Allocator.Error!?session.Checked {
    const cfg = &loaded.compact.cfg;
    const now = pw.nowMs();
    const v = verified_sessions.check(loaded.generation, arena, cfg.sessions.?, cfg.base_path, now, token) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        error.Invalid, error.Expired => return null,
    };
    if (isRevoked(v.nonce, now)) return null;
    return v;
}

fn isRevoked(nonce: [session.nonce_len]u8, now: u64) bool {
    const key = session.revocationKey(nonce);
    // An empty slot costs the host no allocation in the VM.
    const got = pw.getSharedData(&key) orelse return false;
    defer got.value.free();
    return session.isRevoked(got.value.slice(), nonce, now);
}

/// `wasmcustom.mcpgw_ended_sessions_evicted`: ended-session records dropped
/// from a full slot (`session.withRevoked`), which verify again until they
/// expire. A rising count means clients end sessions faster than the table
/// (`sessions.max_ended`) holds them.
var evicted_counter: ?u32 = null;
var evicted_total: u64 = 0;

/// Records a session as ended in its shared-data slot (compare-and-swap,
/// retried a few times when another worker writes the slot meanwhile).
fn revoke(arena: std.mem.Allocator, nonce: [session.nonce_len]u8, expires_ms: u64, per_slot: u32) bool {
    const key = session.revocationKey(nonce);
    var tries: u32 = 0;
    while (tries < 16) : (tries += 1) {
        const now = pw.nowMs();
        const got = pw.getSharedData(&key) orelse {
            // Not prepared (another VM id's slots?): create it empty first.
            if (pw.setSharedData(&key, "", 0) != .ok) return false;
            continue;
        };
        defer got.value.free();
        const next = session.withRevoked(arena, got.value.slice(), nonce, expires_ms, now, per_slot) catch return false;
        switch (pw.setSharedData(&key, next.value, got.cas)) {
            .ok => {
                if (next.evicted != 0) noteEvicted(next.evicted);
                return true;
            },
            .cas_mismatch => continue,
            else => return false,
        }
    }
    return false;
}

fn noteEvicted(n: usize) void {
    if (evicted_counter == null) evicted_counter = pw.defineMetric(.counter, "mcpgw_ended_sessions_evicted");
    if (evicted_counter) |c| pw.incrementMetric(c, @intCast(n));
    // The first time, then every 1,000th: a flood of DELETEs must not flood the log too.
    const before = evicted_total;
    evicted_total += n;
    if (before == 0 or before / 1000 != evicted_total / 1000) {
        pw.logf(.warn, "mcp-server: the ended-session table is full: {d} oldest records dropped so far (sessions.max_ended)", .{evicted_total});
    }
}

/// The answer when an ended session could not be recorded (shared data
/// refused the write, or other workers kept winning the race): nothing was
/// ended, and the client may try again.
const not_ended_reply: mcp.Reply = .{ .status = 503, .body = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"could not end the session now: try again\"}}" };

const SessionError = std.mem.Allocator.Error || session.IssueError || error{NoRandom};

/// What a proxied server needs to issue and read signed session ids: the
/// clock, and (filled in `proxyResponse`, only for a handshake) a nonce.
fn signing(sessions: *const session.Sessions, cfg: *const config.Config) proxy.Signing {
    return .{ .sessions = sessions, .base_path = cfg.base_path, .now_ms = pw.nowMs(), .nonce = std.mem.zeroes([session.nonce_len]u8) };
}

const no_random_reply: mcp.Reply = .{ .status = 500, .body = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"could not create a session: no random source\"}}" };

/// A new session token for this server.
fn mint(arena: std.mem.Allocator, cfg: *const config.Config, version: []const u8) SessionError![]const u8 {
    var nonce: [session.nonce_len]u8 = undefined;
    if (!pw.randomBytes(&nonce)) return error.NoRandom;
    return session.issue(arena, cfg.sessions.?, cfg.base_path, pw.nowMs(), version, "", nonce);
}

/// DELETE `base_path`: ends the session named by `Mcp-Session-Id`.
fn endSession(s: *Stream, loaded: *const Loaded, headers: []const u8) pw.Action {
    const arena = s.arena.allocator();
    const cfg = &loaded.compact.cfg;
    const token = pw.findHeader(headers, "mcp-session-id") orelse "";
    if (token.len == 0) return replyOrOom(s, mcp.sessionRequired(arena, "null", "Mcp-Session-Id header"));
    const v = (checkSession(arena, loaded, token) catch return oomAction(s)) orelse
        return replyOrOom(s, mcp.sessionNotFound(arena, "null"));
    // Recorded until the token would expire anyway.
    if (!revoke(arena, v.nonce, v.issued_ms +| cfg.sessions.?.ttl_ms, cfg.sessions.?.ended_per_slot)) {
        pw.log(.err, "mcp-server: could not record an ended session in shared data");
        reply(s, not_ended_reply);
        return .pause;
    }
    reply(s, .{ .status = 204, .body = "" });
    return .pause;
}

/// GET `base_path/sse`: mints an HTTP+SSE session and lets the request go
/// on to the broker (Envoy routes the path there) with the session's
/// channel and message endpoint in headers only the filter sets.
fn openSse(s: *Stream, cfg: *const config.Config, headers: []const u8, method: []const u8) pw.Action {
    const arena = s.arena.allocator();
    if (!std.mem.eql(u8, method, "GET")) return replyOrOom(s, mcp.methodNotAllowedGet(arena));
    if (pw.findHeader(headers, "accept")) |accept| {
        if (!mcp.acceptsEventStream(accept)) return replyOrOom(s, mcp.notAcceptableEventStream(arena));
    }
    var nonce: [session.nonce_len]u8 = undefined;
    const token = if (pw.randomBytes(&nonce))
        session.issue(arena, cfg.sessions.?, cfg.base_path, pw.nowMs(), mcp.sse_version, "", nonce) catch return oomAction(s)
    else {
        pw.log(.err, "mcp-server: cannot mint a session: no random bytes");
        reply(s, .{ .status = 500, .body = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"could not create a session\"}}" });
        return .pause;
    };
    const channel = std.fmt.bytesToHex(nonce, .lower);
    const endpoint = std.mem.concat(arena, u8, &.{ cfg.base_path, "/message?sessionId=", token }) catch return oomAction(s);
    // Replacing drops whatever the client sent under these names.
    if (pw.replaceHeader(.http_request_headers, "x-mcpgw-sse-channel", &channel) != .ok or
        pw.replaceHeader(.http_request_headers, "x-mcpgw-sse-endpoint", endpoint) != .ok)
    {
        reply(s, .{ .status = 500, .body = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"could not open the stream\"}}" });
        return .pause;
    }
    observe.sessionOpened(&cfg.observability);
    // The stream lives for hours and the filter has nothing more to do on it:
    // do not keep this configuration alive past its replacement.
    s.loaded.?.release();
    s.loaded = null;
    return .@"continue";
}

/// The auth decision (auth.zig) with its host calls: the JWT identity read
/// from jwt_authn's metadata (jwtidentity.zig), the identity set as filter
/// state `wasm.mcpgw.auth`, or one log line, a counter and the 401/403.
/// False when the request was answered. `forwarded`: the request itself
/// goes on upstream (`GET …/sse`, to the broker): then look-alike identity
/// headers and the gateway's own credential are removed from it. Every
/// other request is answered by the filter, which builds its backend
/// requests itself and never captures the credential's header; removing
/// headers there would only cost (Envoy clears the route cache on each).
fn authenticate(s: *Stream, cfg: *const config.Config, a: *const auth.Auth, headers: []const u8, forwarded: bool) bool {
    const arena = s.arena.allocator();
    const value = if (a.api_key_header) |h| pw.findHeader(headers, h) else null;
    var found: jwtidentity.Found = .none;
    var jwt: auth.Jwt = .none;
    var decision: ?auth.Decision = null;
    if (cfg.jwt) |j| {
        found = jwtidentity.read(arena, j) catch {
            oomReply(s);
            return false;
        };
        switch (found) {
            .valid => |c| {
                jwt = .{ .valid = .{ .consumer = c.consumer, .namespace = "", .groups_json = c.groups_json, .method = .jwt } };
                for (j.required_scopes) |scope| if (!jwtidentity.hasScope(c.scopes, scope)) {
                    decision = .{ .deny = .{ .status = 403, .reason = .insufficient_scope, .consumer = c.consumer } };
                };
            },
            // A bearer token jwt_authn did not accept: invalid, unless it
            // may still be one of the consumers' API keys.
            .none => if (jwtidentity.isBearer(pw.findHeader(headers, "authorization")) and !a.bearer()) {
                jwt = .invalid;
            },
        }
    }
    switch (decision orelse auth.decide(a, value, jwt)) {
        .admit => |identity| {
            if (forwarded) for (auth.identity_headers) |name| if (pw.findHeader(headers, name) != null) {
                _ = pw.removeHeader(.http_request_headers, name);
            };
            // The gateway's own credential goes no further, whichever method
            // admitted the caller (jwt_authn removes only a token it verified).
            if (forwarded) for ([_]?[]const u8{ a.api_key_header, if (a.jwt) "authorization" else null }) |h| {
                if (h) |name| if (pw.findHeader(headers, name) != null) {
                    _ = pw.removeHeader(.http_request_headers, name);
                };
            };
            const id = identity orelse return true;
            const json = switch (found) {
                .valid => |c| if (id.method == .jwt) jwtidentity.identityJson(arena, c, "") else auth.identityJson(arena, id),
                .none => auth.identityJson(arena, id),
            } catch {
                oomReply(s);
                return false;
            };
            const st = pw.setProperty("mcpgw.auth", json);
            if (st != .ok) pw.logf(.warn, "mcp-server: cannot set the identity (filter state wasm.mcpgw.auth): status {d}", .{@intFromEnum(st)});
            return true;
        },
        .deny => |d| {
            const why = if (d.reason == .invalid and cfg.jwt != null) (jwtidentity.failure(arena, cfg.jwt.?) catch null) orelse "-" else "-";
            // Never the credential: the reason, the consumer when known, and
            // what jwt_authn said about a refused token.
            pw.logf(.warn, "mcp-server: auth_denied server={s} reason={s} status={d} consumer={s} detail=\"{s}\" request_id={s}", .{
                cfg.base_path, d.reason.name(), d.status, if (d.consumer.len != 0) d.consumer else "-", why, requestIdOrDash(s),
            });
            noteDenied(d.reason);
            var pairs: [5]tpl.Header = undefined;
            var n: usize = 0;
            pairs[n] = .{ .name = "content-type", .value = "application/json" };
            n += 1;
            const challenge: ?[]const u8 = if (cfg.jwt) |j| switch (d.reason) {
                .missing => jwtidentity.challenge(j, .missing),
                .invalid => jwtidentity.challenge(j, .invalid),
                .insufficient_scope => jwtidentity.challenge(j, .insufficient_scope),
                .namespace => null,
            } else auth.challenge(a, d);
            if (challenge) |c| {
                pairs[n] = .{ .name = "www-authenticate", .value = c };
                n += 1;
            }
            if (s.cors_origin) |origin| for (cors.responseHeaders(origin)) |h| {
                pairs[n] = h;
                n += 1;
            };
            const serialized = pw.serializeHeaders(arena, pairs[0..n]) catch {
                oomReply(s);
                return false;
            };
            send(s, .{ .status = d.status, .body = auth.body(d) }, serialized);
            return false;
        },
    }
}

/// `wasmcustom.mcpgw_auth_denied.<reason>`: denials by reason.
var denied_counters: [@typeInfo(auth.Reason).@"enum".fields.len]?u32 = @splat(null);

fn noteDenied(reason: auth.Reason) void {
    const i = @intFromEnum(reason);
    if (denied_counters[i] == null) {
        var buf: [64]u8 = undefined;
        const name = std.fmt.bufPrint(&buf, "mcpgw_auth_denied.{s}", .{reason.name()}) catch return;
        denied_counters[i] = pw.defineMetric(.counter, name);
    }
    if (denied_counters[i]) |c| pw.incrementMetric(c, 1);
}

/// Hands an HTTP+SSE answer to the broker, which puts it on the session's
/// stream (on whichever replica holds it); the POST is answered when the
/// broker has.
fn publish(id: u32, s: *Stream, cfg: *const config.Config, body: []const u8) void {
    const arena = s.arena.allocator();
    observed(s, 200, body);
    const broker = &cfg.broker.?;
    const pairs = mcp.publishHeaders(arena, broker, &s.channel, body.len) catch return oomReply(s);
    const headers = pw.serializeHeaders(arena, pairs) catch return oomReply(s);
    const token = pw.httpCall(broker.cluster, headers, body, broker.timeout_ms) catch {
        const why = failure(s, cfg, mcp.broker_unavailable, "cluster {s}: proxy_http_call status {d}", .{
            broker.cluster, @intFromEnum(pw.last_http_call_status),
        });
        return reply(s, mcp.brokerUnavailable(arena, why) catch return oomReply(s));
    };
    calls.put(gpa, token, id) catch return oomReply(s);
    s.token = token;
    s.state = .publishing;
}

/// The broker's answer to `publish`: 2xx → 202, 404 (no stream open for
/// the session) → 404, anything else → 503.
fn published(s: *Stream, num_headers: usize) void {
    const arena = s.arena.allocator();
    const cfg = &s.loaded.?.compact.cfg;
    if (num_headers == 0) {
        const why = failure(s, cfg, mcp.broker_unavailable, "publish failed: {s}", .{callFailure(arena)});
        return reply(s, mcp.brokerUnavailable(arena, why) catch return oomReply(s));
    }
    const status_value = pw.getHeaderValue(.http_call_response_headers, ":status");
    defer if (status_value) |v| v.free();
    const status = std.fmt.parseUnsigned(u32, if (status_value) |v| v.slice() else "", 10) catch 0;
    if (status >= 200 and status < 300) return reply(s, .{ .status = 202, .body = "" });
    if (status == 404) return reply(s, mcp.sessionNotConnected(arena) catch return oomReply(s));
    const why = failure(s, cfg, mcp.broker_unavailable, "publish: broker answered HTTP {d}", .{status});
    reply(s, mcp.brokerUnavailable(arena, why) catch return oomReply(s));
}

/// The backend call's headers plus the client's W3C trace context
/// (tracecontext.zig): a `proxy_http_call` carries none by itself.
fn withTraceContext(arena: std.mem.Allocator, headers: []const tpl.Header) std.mem.Allocator.Error![]const tpl.Header {
    const parent = pw.getHeaderValue(.http_request_headers, "traceparent") orelse return headers;
    defer parent.free();
    const state = pw.getHeaderValue(.http_request_headers, "tracestate");
    defer if (state) |st| st.free();
    const state_copy: ?[]const u8 = if (state) |st| try arena.dupe(u8, st.slice()) else null;
    return tracecontext.withContext(arena, headers, try arena.dupe(u8, parent.slice()), state_copy);
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
            const traced = withTraceContext(arena, c.headers) catch return oomReply(s);
            const headers = pw.serializeHeaders(arena, traced) catch return oomReply(s);
            const token = pw.httpCall(c.cluster, headers, c.body, c.timeout_ms) catch {
                const why = jsonw.allocPrint(arena, "cluster {s}: proxy_http_call status {d}", .{
                    c.cluster, @intFromEnum(pw.last_http_call_status),
                }) catch return oomReply(s);
                return proxyReply(s, proxy.failed(arena, up, &s.proxy, notDispatched("is"), why) catch return oomReply(s));
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
        const why = jsonw.allocPrint(arena, "is unreachable: {s}", .{callFailure(arena)}) catch return oomReply(s);
        return proxyReply(s, proxy.failed(arena, up, &s.proxy, "is unavailable", why) catch return oomReply(s));
    }
    if (body_size > cfg.max_response_bytes) {
        const why = jsonw.allocPrint(arena, "answered {d} bytes, over the limit of {d} bytes", .{ body_size, cfg.max_response_bytes }) catch return oomReply(s);
        const public = jsonw.allocPrint(arena, "answered more than the limit of {d} bytes", .{cfg.max_response_bytes}) catch return oomReply(s);
        return proxyReply(s, proxy.failed(arena, up, &s.proxy, public, why) catch return oomReply(s));
    }
    const pairs = pw.getHeaderPairs(.http_call_response_headers);
    defer if (pairs) |p| p.free();
    const headers = pw.deserializeHeaders(tpl.Header, arena, if (pairs) |p| p.slice() else "") catch &.{};
    const status = std.fmt.parseUnsigned(u32, tpl.findHeader(headers, ":status") orelse "", 10) catch 0;
    const body = if (body_size == 0) null else pw.getBufferBytes(.http_call_response_body, 0, body_size);
    defer if (body) |b| b.free();
    // Only an answered handshake issues a session id: one random read per
    // session, not per request.
    if (s.proxy.kind == .initialize) if (s.proxy.signing) |*sg| {
        if (!pw.randomBytes(&sg.nonce)) return reply(s, no_random_reply);
    };
    const step = proxy.finish(arena, &proxy_vm, up, &s.proxy, .{
        .status = status,
        .headers = headers,
        .body = if (body) |b| b.slice() else "",
    }, &s.client) catch return oomReply(s);
    proxyStep(id, s, up, step);
}

fn proxyReply(s: *Stream, r: proxy.Reply) void {
    if (r.detail.len != 0) {
        const cfg = &s.loaded.?.compact.cfg;
        pw.logf(.warn, "mcp-server: {s} request {s}: {s}", .{ cfg.base_path, requestIdOrDash(s), r.detail });
    }
    if (s.ends) |e| if (r.status == 204) {
        if (!revoke(s.arena.allocator(), e.nonce, e.expires_ms, s.loaded.?.compact.cfg.sessions.?.ended_per_slot)) {
            pw.log(.err, "mcp-server: could not record an ended session in shared data");
            return reply(s, not_ended_reply);
        }
    };
    s.state = .done;
    var pairs: [5]tpl.Header = undefined;
    var n: usize = 0;
    if (s.cors_origin) |origin| {
        for (cors.responseHeaders(origin)) |h| {
            pairs[n] = h;
            n += 1;
        }
    }
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

/// What the client is told when a backend or broker call failed: `public`,
/// stable words without cluster names, addresses or Envoy's reset reasons,
/// plus the request id to quote. The details go to Envoy's log (warn) under
/// the same id, for the operator.
fn failure(s: *Stream, cfg: *const config.Config, public: []const u8, comptime fmt: []const u8, args: anytype) []const u8 {
    const arena = s.arena.allocator();
    const detail = jsonw.allocPrint(arena, fmt, args) catch "(out of memory)";
    pw.logf(.warn, "mcp-server: {s} request {s}: {s}", .{ cfg.base_path, requestIdOrDash(s), detail });
    if (s.request_id.len == 0) return public;
    return jsonw.allocPrint(arena, "{s} (request id {s})", .{ public, s.request_id }) catch public;
}

fn requestIdOrDash(s: *const Stream) []const u8 {
    return if (s.request_id.len == 0) "-" else s.request_id;
}

/// What a client reads when Envoy refused to start a call. It does so when
/// the call ended before it began (internal_failure): the backend's request
/// slots are full (`upstream_rq_pending_overflow`) or it has no healthy host.
fn notDispatched(comptime subject: []const u8) []const u8 {
    return switch (pw.last_http_call_status) {
        .internal_failure => subject ++ " busy or unavailable: try again later",
        else => if (comptime std.mem.eql(u8, subject, "is")) "is unavailable" else subject ++ " unavailable",
    };
}

/// Why the host failed an http_call (its status message), for the log.
fn callFailure(arena: std.mem.Allocator) []const u8 {
    const st = pw.getStatus() orelse return "no reason given";
    defer st.message.free();
    if (st.message.len == 0) return "no reason given";
    return arena.dupe(u8, st.message.slice()) catch "no reason given";
}

/// Envoy's `x-request-id`, copied, when it is short and printable ASCII
/// (it is quoted to the client and logged); else empty.
fn requestId(arena: std.mem.Allocator, headers: []const u8) std.mem.Allocator.Error![]const u8 {
    const v = pw.findHeader(headers, "x-request-id") orelse return "";
    if (v.len == 0 or v.len > 64) return "";
    for (v) |c| if (c <= ' ' or c >= 0x7f or c == '"' or c == '\\') return "";
    return arena.dupe(u8, v);
}

/// The client's value at each credential source, copied into the stream
/// arena (the host's header buffer is freed right away).
/// `gateway`: the server's auth; its credential headers (the API-key
/// header, `Authorization` with JWT) are never passed through to a backend.
fn captureCredentials(arena: std.mem.Allocator, cfg: *const config.Config, headers: []const u8, path: []const u8, gateway: ?*const auth.Auth) std.mem.Allocator.Error![]const ?[]const u8 {
    const values = try arena.alloc(?[]const u8, cfg.credential_sources.len);
    for (cfg.credential_sources, values) |src, *v| switch (src.in) {
        // The gateway's own credential headers, whatever admitted the caller.
        .header => v.* = if (gateway != null and gateway.?.isGatewayHeader(src.name))
            null
        else if (pw.findHeader(headers, src.name)) |h| try arena.dupe(u8, h) else null,
        .query => v.* = if (try mcp.queryParam(arena, path, src.name)) |q| try arena.dupe(u8, q) else null,
    };
    return values;
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
    if (s.cors_origin != null) return replyWith(s, r, null);
    const headers = if (r.status == 202 or r.status == 204) no_headers else switch (r.allow) {
        .none => json_headers,
        .post => json_allow_headers,
        .get => json_allow_get_headers,
    };
    send(s, r, headers);
}

/// `reply` with headers made per request: for an initialize that opened a
/// session, and for a page of an accepted origin (its CORS headers).
fn replyWith(s: *Stream, r: mcp.Reply, session_id: ?[]const u8) void {
    var pairs: [6]tpl.Header = undefined;
    var n: usize = 0;
    if (r.status != 202 and r.status != 204) {
        pairs[n] = .{ .name = "content-type", .value = "application/json" };
        n += 1;
    }
    switch (r.allow) {
        .none => {},
        .post => {
            pairs[n] = .{ .name = "allow", .value = "POST" };
            n += 1;
        },
        .get => {
            pairs[n] = .{ .name = "allow", .value = "GET" };
            n += 1;
        },
    }
    if (session_id) |sid| {
        pairs[n] = .{ .name = "mcp-session-id", .value = sid };
        n += 1;
    }
    if (s.cors_origin) |origin| {
        for (cors.responseHeaders(origin)) |h| {
            pairs[n] = h;
            n += 1;
        }
    }
    const headers = pw.serializeHeaders(s.arena.allocator(), pairs[0..n]) catch return oomReply(s);
    send(s, r, headers);
}

fn send(s: *Stream, r: mcp.Reply, headers: []const u8) void {
    s.state = .done;
    observed(s, r.status, r.body);
    const st = pw.sendLocalResponse(r.status, details, r.body, headers);
    if (st != .ok) pw.logf(.warn, "mcp-server: send_local_response failed with status {d}", .{@intFromEnum(st)});
}

/// Counts an answered MCP message and sets its access-log fields (observe.zig).
fn observed(s: *Stream, status: u32, body: []const u8) void {
    if (s.client.seen == null) return;
    const loaded = s.loaded orelse return;
    observe.finish(s.arena.allocator(), &loaded.compact.cfg.observability, &s.rec, &s.seen, .{
        .status = status,
        .body = body,
        .session = s.session_token,
        .protocol_version = s.client.protocol_version orelse s.client.session_version,
    });
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
    // Headers made per request need memory too; this answer needs none.
    s.cors_origin = null;
    reply(s, .{ .status = 500, .body = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"out of memory\"}}" });
}

fn oom() void {
    pw.log(.critical, "mcp-server: out of memory");
}
