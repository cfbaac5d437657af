//! Fuzz targets for the filter's host-agnostic core: what a client sends
//! (headers and JSON-RPC body), what a backend answers (status, headers,
//! body through the response templates), what a `type: mcp` upstream
//! answers, session tokens, and the configuration text. Each target takes
//! one input, runs the code `main.zig` runs for it (minus the host calls),
//! and checks what came out: a documented HTTP status, JSON that parses,
//! header values without CR/LF/NUL, session tokens that round-trip.
//!
//! Built by `wasm-filters/mcp-server/fuzz/run.py` as a static library with
//! `-ffuzz` (LLVM's inline 8-bit counters and compare tracing) and linked
//! with clang's libFuzzer: coverage-guided, one binary, the target chosen
//! by `MCPGW_FUZZ_TARGET`. Every input of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` also runs here as a unit test (`zig test
//! src/tests.zig`, cwd `wasm-filters/mcp-server`), under the testing
//! allocator's leak check.
//!
//! Input formats (parts separated by NUL bytes; a missing part is empty):
//!   request  headers NUL body                     (REST server, sessions on)
//!   answer   "TOOL STATUS" NUL arguments NUL headers NUL body
//!   proxy    headers NUL body NUL upstream-headers NUL upstream-body
//!   session  token NUL slot-value
//!   config   the configuration text
//! `headers` are `name: value` lines (`\n`); `:path` and `:method` too.

const std = @import("std");
const builtin = @import("builtin");
const Allocator = std.mem.Allocator;
const config = @import("config.zig");
const mcp = @import("mcp.zig");
const proxy = @import("proxy.zig");
const session = @import("session.zig");
const cors = @import("cors.zig");
const tpl = @import("template.zig");
const jsonw = @import("jsonw.zig");

pub const Target = enum { request, answer, proxy, session, config };

/// Every status the filter answers with itself (docs/security.md lists
/// them); anything else out of the core is a defect.
pub const documented_statuses = [_]u32{ 200, 202, 204, 400, 401, 403, 404, 405, 406, 413, 500, 502, 503, 504 };

/// The clock every target runs at: session tokens in the seeds were minted
/// for it (`@valid` stands for "a session the filter verified").
pub const now_ms: u64 = 1_750_000_000_000;

pub const Failure = error{ UndocumentedStatus, NotJson, HeaderInjection, EmptyBody, SessionRoundTrip, CacheDisagrees, RevocationLost };

/// The configurations the targets serve, compiled once.
pub const Fixtures = struct {
    rest: config.Compact,
    mcp: config.Compact,
    /// The key the `session` target signs and checks with.
    sessions: session.Sessions,

    pub fn load(gpa: Allocator, dir: std.fs.Dir) !Fixtures {
        const rest = try compile(gpa, dir, "configs/rest.json");
        errdefer rest.deinit(gpa);
        const up = try compile(gpa, dir, "configs/mcp.json");
        const base = "/mcp/fuzz/sessions";
        const keys = try gpa.alloc(session.Key, 2);
        keys[0] = session.Key.init("k2", "0123456789abcdef0123456789abcdef", 0, base);
        // A retired key: its tokens verify until `now_ms`, then expire.
        keys[1] = session.Key.init("k1", "fedcba9876543210fedcba9876543210", now_ms, base);
        return .{ .rest = rest, .mcp = up, .sessions = .{ .keys = keys, .ttl_ms = 3_600_000, .base_path = base } };
    }

    pub fn deinit(self: *const Fixtures, gpa: Allocator) void {
        self.rest.deinit(gpa);
        self.mcp.deinit(gpa);
        gpa.free(self.sessions.keys);
    }

    fn compile(gpa: Allocator, dir: std.fs.Dir, path: []const u8) !config.Compact {
        const text = try dir.readFileAlloc(gpa, path, 1 << 20);
        defer gpa.free(text);
        var scratch = std.heap.ArenaAllocator.init(gpa);
        defer scratch.deinit();
        var why: []const u8 = "";
        return config.parseCompact(gpa, scratch.allocator(), text, &why) catch |err| {
            std.debug.print("fuzz fixture {s}: {s} ({s})\n", .{ path, why, @errorName(err) });
            return err;
        };
    }
};

/// Runs one input through `target`. `gpa` is for what outlives the arena
/// in the filter (configurations, the upstream session pool): the caller
/// checks it for leaks.
pub fn run(target: Target, fx: *const Fixtures, gpa: Allocator, arena: Allocator, input: []const u8) !void {
    switch (target) {
        .request => try request(fx, arena, input),
        .answer => try answer(fx, arena, input),
        .proxy => try proxyTarget(fx, gpa, arena, input),
        .session => try sessionTarget(fx, arena, input),
        .config => try configTarget(gpa, arena, input),
    }
}

// ------------------------------------------------------------------ inputs

const Parts = struct {
    items: [4][]const u8 = .{ "", "", "", "" },

    fn of(input: []const u8, comptime n: usize) Parts {
        var p: Parts = .{};
        var rest = input;
        var i: usize = 0;
        while (i + 1 < n) : (i += 1) {
            const nul = std.mem.indexOfScalar(u8, rest, 0) orelse {
                p.items[i] = rest;
                return p;
            };
            p.items[i] = rest[0..nul];
            rest = rest[nul + 1 ..];
        }
        p.items[n - 1] = rest;
        return p;
    }
};

/// `name: value` lines; names compared without case, as Envoy hands them
/// over lower-cased. The first occurrence wins, as `pw.findHeader`.
const Headers = struct {
    text: []const u8,

    fn get(h: Headers, name: []const u8) ?[]const u8 {
        var it = std.mem.splitScalar(u8, h.text, '\n');
        while (it.next()) |line| {
            const colon = std.mem.indexOfScalarPos(u8, line, 1, ':') orelse continue;
            if (!std.ascii.eqlIgnoreCase(line[0..colon], name)) continue;
            return std.mem.trimLeft(u8, line[colon + 1 ..], " ");
        }
        return null;
    }

    fn list(h: Headers, arena: Allocator) ![]const tpl.Header {
        var out: std.ArrayList(tpl.Header) = .empty;
        var it = std.mem.splitScalar(u8, h.text, '\n');
        while (it.next()) |line| {
            const colon = std.mem.indexOfScalarPos(u8, line, 1, ':') orelse continue;
            try out.append(arena, .{ .name = try std.ascii.allocLowerString(arena, line[0..colon]), .value = std.mem.trimLeft(u8, line[colon + 1 ..], " ") });
        }
        return out.items;
    }
};

// ----------------------------------------------------------------- checks

fn checkStatus(status: u32) Failure!void {
    for (documented_statuses) |s| if (s == status) return;
    std.debug.print("undocumented status {d}\n", .{status});
    return error.UndocumentedStatus;
}

fn checkJson(arena: Allocator, what: []const u8, text: []const u8) !void {
    if (try std.json.validate(arena, text)) return;
    std.debug.print("{s} is not JSON: {s}\n", .{ what, text[0..@min(text.len, 400)] });
    return error.NotJson;
}

fn checkReply(arena: Allocator, status: u32, body: []const u8) !void {
    try checkStatus(status);
    if (status == 202 or status == 204) {
        if (body.len != 0) return error.NotJson;
        return;
    }
    if (body.len == 0) return error.EmptyBody;
    try checkJson(arena, "answer", body);
}

/// What the filter hands to `proxy_http_call`: Envoy refuses (or worse,
/// splits) header values with CR, LF or NUL.
fn checkHeaders(headers: []const tpl.Header) Failure!void {
    for (headers) |h| {
        if (h.name.len == 0) return error.HeaderInjection;
        for ([_][]const u8{ h.name, h.value }) |s| {
            if (std.mem.indexOfAny(u8, s, "\r\n\x00") != null) {
                std.debug.print("header {s}: value with CR/LF/NUL\n", .{h.name});
                return error.HeaderInjection;
            }
        }
    }
}

// ---------------------------------------------------------------- request

const Route = enum { mcp, sse, message };

fn routeOf(cfg: *const config.Config, path: []const u8) ?Route {
    const end = std.mem.indexOfScalar(u8, path, '?') orelse path.len;
    const p = path[0..end];
    if (!std.mem.startsWith(u8, p, cfg.base_path)) return null;
    const rest = p[cfg.base_path.len..];
    if (rest.len == 0) return .mcp;
    if (cfg.broker == null or cfg.mcp_upstream != null) return null;
    if (std.mem.eql(u8, rest, "/sse")) return .sse;
    if (std.mem.eql(u8, rest, "/message")) return .message;
    return null;
}

/// The session state a request's token gives. `@valid` stands for a token
/// the filter verified (so the fuzzer reaches what comes after); anything
/// else is verified as the filter does.
fn sessionOf(arena: Allocator, cfg: *const config.Config, token: []const u8, client: *mcp.Client) !void {
    if (std.mem.eql(u8, token, "@valid")) {
        client.session = .valid;
        client.session_version = "2025-06-18";
        return;
    }
    const sessions = cfg.sessions orelse return;
    if (session.verify(arena, sessions, cfg.base_path, now_ms, token)) |v| {
        client.session = .valid;
        client.session_version = v.version;
    } else |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => client.session = .invalid,
    }
}

/// A REST server's request, as `main.zig`'s `onRequestHeaders` and
/// `handleBody` take it, up to the backend call.
fn request(fx: *const Fixtures, arena: Allocator, input: []const u8) !void {
    const parts = Parts.of(input, 2);
    const h = Headers{ .text = parts.items[0] };
    const cfg = &fx.rest.cfg;
    const path = h.get(":path") orelse cfg.base_path;
    const method = h.get(":method") orelse "POST";
    const route = routeOf(cfg, path) orelse return checkReply(arena, 404, (try mcp.notFound(arena)).body);
    var client: mcp.Client = .{};
    if (h.get("origin")) |origin| {
        if (!try mcp.originAllowed(arena, cfg, origin)) return checkReply(arena, 403, (try mcp.forbiddenOrigin(arena)).body);
        if (cors.isPreflight(method, h.get("access-control-request-method"))) {
            try checkHeaders(try cors.preflightHeaders(arena, cfg.credential_sources, origin));
            return;
        }
        try checkHeaders(&cors.responseHeaders(origin));
    }
    switch (route) {
        .sse => {
            if (h.get("accept")) |a| _ = mcp.acceptsEventStream(a);
            return;
        },
        .message => {
            const token = (try mcp.queryParam(arena, path, "sessionId")) orelse "";
            if (token.len == 0) return checkReply(arena, 400, (try mcp.sessionRequired(arena, "null", "sessionId query parameter")).body);
            try sessionOf(arena, cfg, token, &client);
            if (client.session != .valid) return checkReply(arena, 404, (try mcp.sessionNotFound(arena, "null")).body);
            client.transport = .sse;
        },
        .mcp => {
            if (!std.mem.eql(u8, method, "POST")) return checkReply(arena, 405, (try mcp.methodNotAllowed(arena)).body);
            if (h.get("accept")) |a| if (!mcp.acceptable(a)) return checkReply(arena, 406, (try mcp.notAcceptable(arena)).body);
            if (h.get("mcp-session-id")) |token| if (token.len != 0) try sessionOf(arena, cfg, token, &client);
            client.protocol_version = h.get("mcp-protocol-version");
            client.method = h.get("mcp-method");
            client.name = h.get("mcp-name");
        },
    }
    if (h.get("content-length")) |cl| {
        const size = std.fmt.parseUnsigned(u64, cl, 10) catch 0;
        if (size > cfg.max_request_bytes) return checkReply(arena, 413, (try mcp.tooLarge(arena, cfg.max_request_bytes)).body);
    }
    if (cfg.credential_sources.len != 0) {
        const values = try arena.alloc(?[]const u8, cfg.credential_sources.len);
        for (cfg.credential_sources, values) |src, *v| v.* = switch (src.in) {
            .header => h.get(src.name),
            .query => try mcp.queryParam(arena, path, src.name),
        };
        client.credentials = values;
    }
    const body = parts.items[1];
    if (body.len > cfg.max_request_bytes) return checkReply(arena, 413, (try mcp.tooLarge(arena, cfg.max_request_bytes)).body);
    switch (try mcp.handle(arena, cfg, body, &client)) {
        .reply => |r| try checkReply(arena, r.status, r.body),
        .call => |c| {
            try checkHeaders(c.headers);
            // The backend answered nothing useful: the answer must still be JSON.
            try checkJson(arena, "tool failure", try mcp.toolFailure(arena, &c, "backend unavailable"));
            try checkJson(arena, "tool result", try mcp.toolResult(arena, &c, .{ .status = 200, .headers = &.{}, .body = body }));
        },
    }
}

// ----------------------------------------------------------------- answer

/// A backend's answer to a tools/call of the REST server, rendered by the
/// tool's response (or error) template.
fn answer(fx: *const Fixtures, arena: Allocator, input: []const u8) !void {
    const parts = Parts.of(input, 4);
    const cfg = &fx.rest.cfg;
    var words = std.mem.tokenizeScalar(u8, parts.items[0], ' ');
    const tool_index = std.fmt.parseUnsigned(usize, words.next() orelse "0", 10) catch 0;
    const status = std.fmt.parseUnsigned(u32, words.next() orelse "200", 10) catch 200;
    const tool = cfg.tools[tool_index % cfg.tools.len];
    const modern = words.next() != null;
    const args = if (parts.items[1].len == 0) "{}" else parts.items[1];
    var out = jsonw.Out.init(arena);
    try out.add("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":");
    try out.str(tool.name);
    try out.add(",\"arguments\":");
    try out.add(args);
    try out.add("}}");
    const client: mcp.Client = .{ .session = .valid, .session_version = if (modern) "2025-11-25" else "2025-06-18" };
    const c = switch (try mcp.handle(arena, cfg, out.bytes(), &client)) {
        .reply => |r| return checkReply(arena, r.status, r.body),
        .call => |c| c,
    };
    try checkHeaders(c.headers);
    const headers = try (Headers{ .text = parts.items[2] }).list(arena);
    const result = try mcp.toolResult(arena, &c, .{ .status = status, .headers = headers, .body = parts.items[3] });
    try checkJson(arena, "tool result", result);
}

// ------------------------------------------------------------------ proxy

/// A `type: mcp` server: the client's request, then the upstream's answer
/// to every call the filter makes for it (the 2026-07-28 path opens an
/// upstream session first: several calls).
fn proxyTarget(fx: *const Fixtures, gpa: Allocator, arena: Allocator, input: []const u8) !void {
    const parts = Parts.of(input, 4);
    const h = Headers{ .text = parts.items[0] };
    const cfg = &fx.mcp.cfg;
    const up = cfg.mcp_upstream.?;
    var vm: proxy.Vm = .{ .gpa = gpa };
    defer vm.pool.deinit(gpa);
    var client: mcp.Client = .{
        .protocol_version = h.get("mcp-protocol-version"),
        .method = h.get("mcp-method"),
        .name = h.get("mcp-name"),
    };
    var ex: proxy.Exchange = .{ .request_id = h.get("x-request-id") orelse "" };
    ex.client_session = h.get("mcp-session-id");
    if (ex.client_session) |sid| if (sid.len == 0) {
        ex.client_session = null;
    };
    if (cfg.sessions) |sessions| {
        if (ex.client_session) |token| {
            try sessionOf(arena, cfg, token, &client);
            if (client.session == .invalid) ex.client_session = "";
        }
        ex.signing = .{ .sessions = sessions, .base_path = cfg.base_path, .now_ms = now_ms, .nonce = [_]u8{7} ** session.nonce_len };
    }
    const method = h.get(":method") orelse "POST";
    var step = if (std.mem.eql(u8, method, "DELETE"))
        try proxy.startDelete(arena, up, &ex, &client)
    else
        try proxy.start(arena, &vm, up, &ex, parts.items[1], &client);
    const resp_headers = try (Headers{ .text = parts.items[2] }).list(arena);
    const status = std.fmt.parseUnsigned(u32, tpl.findHeader(resp_headers, ":status") orelse "200", 10) catch 0;
    var calls: usize = 0;
    while (true) : (calls += 1) switch (step) {
        // A JSON-RPC error the upstream answered with a 4xx (or, bridged, 502/504) passes
        // on with its status (proxy.zig's passError, CONFIG.md).
        .reply => |r| return checkReply(arena, if (calls > 0 and r.status == status) 502 else r.status, r.body),
        .call => |c| {
            try checkHeaders(c.headers);
            if (calls == 8) return;
            step = try proxy.finish(arena, &vm, up, &ex, .{ .status = status, .headers = resp_headers, .body = parts.items[3] }, &client);
        },
    };
}

// ---------------------------------------------------------------- session

/// Session tokens: whatever a client sends is verified without a crash,
/// the verified-session cache agrees with `verify`, tokens minted with the
/// input's bytes as version and extra verify to the same values, and an
/// ended-session slot keeps the record just added.
fn sessionTarget(fx: *const Fixtures, arena: Allocator, input: []const u8) !void {
    const parts = Parts.of(input, 2);
    const token = parts.items[0];
    const s = &fx.sessions;
    const direct = session.verify(arena, s, s.base_path, now_ms, token);
    var cache: session.VerifiedCache = .{};
    for (0..2) |_| {
        const cached = cache.check(1, arena, s, s.base_path, now_ms, token);
        if (direct) |v| {
            const c = cached catch return error.CacheDisagrees;
            if (c.issued_ms != v.issued_ms or !std.mem.eql(u8, c.version, v.version)) return error.CacheDisagrees;
        } else |err| {
            if (cached) |_| return error.CacheDisagrees else |e| if (e != err) return error.CacheDisagrees;
        }
    }
    // A later clock: expiry, never a crash.
    _ = session.verify(arena, s, s.base_path, now_ms + 7_200_000, token) catch {};
    _ = proxy.decodeExtra(token, 3);

    // Minting with arbitrary version and extra bytes round-trips.
    const split = @min(token.len, 255) / 2;
    const version = token[0..split];
    const extra = token[split..];
    var nonce = [_]u8{0} ** session.nonce_len;
    for (parts.items[1][0..@min(parts.items[1].len, nonce.len)], 0..) |b, i| nonce[i] = b;
    if (session.issue(arena, s, s.base_path, now_ms, version, extra, nonce)) |minted| {
        const v = session.verify(arena, s, s.base_path, now_ms, minted) catch return error.SessionRoundTrip;
        if (!std.mem.eql(u8, v.version, version) or !std.mem.eql(u8, v.extra, extra) or
            !std.mem.eql(u8, &v.nonce, &nonce) or v.issued_ms != now_ms) return error.SessionRoundTrip;
        // Another server's path: refused.
        if (session.verify(arena, s, "/mcp/fuzz/other", now_ms, minted)) |_| return error.SessionRoundTrip else |_| {}
    } else |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        error.TooLong => {},
    }

    // Ended sessions: any slot value (the shared data another VM wrote).
    const slot = parts.items[1];
    _ = session.isRevoked(slot, nonce, now_ms);
    const revoked = try session.withRevoked(arena, slot, nonce, now_ms + 1000, now_ms, 4);
    if (!session.isRevoked(revoked.value, nonce, now_ms)) return error.RevocationLost;
    if (revoked.value.len % session.revocation_record_len != 0 or revoked.value.len > 4 * session.revocation_record_len) return error.RevocationLost;
}

// ----------------------------------------------------------------- config

/// Configuration text: refused with a reason or compiled, never a crash;
/// what compiles also compiles compact (the filter's form) and frees all.
fn configTarget(gpa: Allocator, arena: Allocator, input: []const u8) !void {
    var why: []const u8 = "";
    var scratch = std.heap.ArenaAllocator.init(gpa);
    defer scratch.deinit();
    const compact = config.parseCompact(gpa, scratch.allocator(), input, &why) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        error.InvalidConfig => {
            if (why.len == 0) {
                std.debug.print("refused without a reason\n", .{});
                return error.EmptyBody;
            }
            return;
        },
    };
    defer compact.deinit(gpa);
    const cfg = &compact.cfg;
    try checkJson(arena, "tools_list_json", cfg.tools_list_json);
    // The compiled server answers the basic exchange.
    const client: mcp.Client = .{ .session = .valid };
    for ([_][]const u8{
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\"}}",
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}",
    }) |body| switch (try mcp.handle(arena, cfg, body, &client)) {
        .reply => |r| try checkReply(arena, r.status, r.body),
        .call => return error.NotJson,
    };
}

// ---------------------------------------------------- libFuzzer entry points

/// The libFuzzer build (`fuzz/run.py`): `LLVMFuzzerTestOneInput` runs the
/// target `MCPGW_FUZZ_TARGET` names; fixtures from `MCPGW_FUZZ_DIR`.
pub const libfuzzer = struct {
    var debug_allocator: std.heap.DebugAllocator(.{}) = .init;
    /// Per-input memory, kept between inputs as the filter keeps a
    /// recycled stream's arena (a fresh mapping per input halves the rate).
    var arena: std.heap.ArenaAllocator = .init(std.heap.c_allocator);
    var fixtures: Fixtures = undefined;
    var target: Target = .request;

    pub fn initialize() callconv(.c) c_int {
        const name = std.posix.getenv("MCPGW_FUZZ_TARGET") orelse @panic("MCPGW_FUZZ_TARGET is not set");
        target = std.meta.stringToEnum(Target, name) orelse @panic("MCPGW_FUZZ_TARGET: unknown target");
        const dir_name = std.posix.getenv("MCPGW_FUZZ_DIR") orelse "fuzz";
        var dir = std.fs.cwd().openDir(dir_name, .{}) catch @panic("MCPGW_FUZZ_DIR: cannot open");
        defer dir.close();
        fixtures = Fixtures.load(std.heap.page_allocator, dir) catch @panic("cannot load the fuzz fixtures");
        return 0;
    }

    pub fn testOneInput(data: [*]const u8, size: usize) callconv(.c) c_int {
        const gpa = debug_allocator.allocator();
        defer _ = arena.reset(.{ .retain_with_limit = 1 << 20 });
        run(target, &fixtures, gpa, arena.allocator(), data[0..size]) catch |err| {
            std.debug.print("fuzz target {s}: {s}\n", .{ @tagName(target), @errorName(err) });
            @panic("fuzz target failed");
        };
        // Whatever the target allocated from `gpa` is freed by now.
        if (debug_allocator.detectLeaks()) @panic("memory leaked");
        return 0;
    }
};

comptime {
    if (!builtin.is_test) {
        @export(&libfuzzer.initialize, .{ .name = "LLVMFuzzerInitialize" });
        @export(&libfuzzer.testOneInput, .{ .name = "LLVMFuzzerTestOneInput" });
    }
}

// ------------------------------------------------------------------ tests

const testing = std.testing;

/// Every committed input (seeds and the inputs of fixed crashes) passes
/// its target, with nothing leaked.
fn replayDir(fx: *const Fixtures, target: Target, sub: []const u8) !usize {
    var path_buf: [128]u8 = undefined;
    const path = try std.fmt.bufPrint(&path_buf, "fuzz/{s}/{s}", .{ sub, @tagName(target) });
    var dir = std.fs.cwd().openDir(path, .{ .iterate = true }) catch |err| switch (err) {
        error.FileNotFound => return 0,
        else => return err,
    };
    defer dir.close();
    var n: usize = 0;
    var it = dir.iterate();
    while (try it.next()) |entry| {
        if (entry.kind != .file) continue;
        const data = try dir.readFileAlloc(testing.allocator, entry.name, 4 << 20);
        defer testing.allocator.free(data);
        var arena = std.heap.ArenaAllocator.init(testing.allocator);
        defer arena.deinit();
        run(target, fx, testing.allocator, arena.allocator(), data) catch |err| {
            std.debug.print("{s}/{s}: {s}\n", .{ path, entry.name, @errorName(err) });
            return err;
        };
        n += 1;
    }
    return n;
}

test "every seed and every fixed crash passes its fuzz target" {
    var dir = try std.fs.cwd().openDir("fuzz", .{});
    defer dir.close();
    const fx = try Fixtures.load(testing.allocator, dir);
    defer fx.deinit(testing.allocator);
    for (std.enums.values(Target)) |t| {
        const seeds = try replayDir(&fx, t, "corpus");
        try testing.expect(seeds > 0);
        _ = try replayDir(&fx, t, "regressions");
    }
}

test "the checks catch what they are for" {
    try testing.expectError(error.UndocumentedStatus, checkStatus(418));
    try testing.expectError(error.HeaderInjection, checkHeaders(&.{.{ .name = "x", .value = "a\r\nb: c" }}));
    try testing.expectError(error.NotJson, checkJson(testing.allocator, "x", "{\"a\":"));
    try testing.expectError(error.EmptyBody, checkReply(testing.allocator, 400, ""));
    const p = Parts.of("a\x00b\x00c\x00d\x00e", 4);
    try testing.expectEqualStrings("d\x00e", p.items[3]);
    const h = Headers{ .text = ":path: /x?y\nAccept: */*\naccept: no" };
    try testing.expectEqualStrings("*/*", h.get("accept").?);
    try testing.expectEqualStrings("/x?y", h.get(":path").?);
}
