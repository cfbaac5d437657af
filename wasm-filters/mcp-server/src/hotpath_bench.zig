//! The filter's per-request work without the host, for timing builds in V8
//! (the engine Envoy embeds): `bench/dataplane_hotpath.py` compiles this file
//! to wasm with each optimize mode and runs it under Node. Exports
//! `bench_run(kind, n)`: n requests of one kind, each in a reset arena, as
//! the filter handles them (parse + validate + build the upstream request,
//! then turn the upstream answer into the JSON-RPC result).

const std = @import("std");
const config = @import("config.zig");
const mcp = @import("mcp.zig");
const pw = @import("proxywasm.zig");
const session = @import("session.zig");
const tpl = @import("template.zig");
const auth = @import("auth.zig");
const Store = @import("store.zig").Store;

pub const panic = std.debug.FullPanic(pw.panic);

const cfg_text =
    \\{"server":{"name":"bench/pets","version":"1.0.0"},"base_path":"/mcp/bench/pets",
    \\"tools_list":{"tools":[{"name":"getPet","description":"Get one pet by id.","inputSchema":{"type":"object","properties":{"id":{"type":"integer","description":"The pet's id."}},"required":["id"]}}]},
    \\"tools":[{"name":"getPet","args":[{"name":"id","type":"integer","required":true}],"request":{"method":"GET","path":[{"lit":"/v1/pets/"},{"out":{"args":["id"]},"enc":"path"}],"query":[],"headers":[],"cookies":[],"body":null,"auth":null},"response":{"body":null,"prepend":null,"append":null,"error_body":null,"structured":false}}],
    \\"upstream":{"cluster":"mcpgw/bench/pets","authority":"127.0.0.1:8080","timeout_ms":5000}}
;
const call_body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"getPet\",\"arguments\":{\"id\":1}}}";
const list_body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}";
const init_body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"wrk\",\"version\":\"1\"}}}";
const pet = "{\"id\":1,\"name\":\"Rex\",\"tag\":\"dog\"}";
const upstream_headers = [_]tpl.Header{
    .{ .name = ":status", .value = "200" },
    .{ .name = "content-type", .value = "application/json" },
    .{ .name = "content-length", .value = "33" },
};

var cfg_arena = std.heap.ArenaAllocator.init(std.heap.wasm_allocator);
var req_arena = std.heap.ArenaAllocator.init(std.heap.wasm_allocator);
var cfg: ?config.Config = null;
/// Kind 3: the keys as configure prepares them for the server's path.
var keys: [1]session.Key = undefined;
var sessions: session.Sessions = undefined;
var token: []const u8 = "";
/// Kind 4: a server's `auth` with 100 consumers' keys, and one of the keys.
var auth_cfg: ?*const auth.Auth = null;
const bench_key = "mcpgw_bench-key-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

/// Parses the configuration once; returns 0 on success.
export fn bench_init() u32 {
    var why: []const u8 = "";
    var scratch = std.heap.ArenaAllocator.init(std.heap.wasm_allocator);
    defer scratch.deinit();
    cfg = config.parse(cfg_arena.allocator(), scratch.allocator(), cfg_text, &why) catch return 1;
    const base_path = cfg.?.base_path;
    keys[0] = session.Key.init("k1a2b3c4", &([_]u8{1} ** 32), 0, base_path);
    sessions = .{ .keys = &keys, .base_path = base_path };
    token = session.issue(cfg_arena.allocator(), &sessions, base_path, 1_750_000_000_000, "2025-06-18", "", [_]u8{7} ** 16) catch return 1;
    auth_cfg = authConfig(scratch.allocator()) catch return 1;
    return 0;
}

fn authConfig(scratch: std.mem.Allocator) !*const auth.Auth {
    var text: std.ArrayList(u8) = .empty;
    try text.appendSlice(scratch, "{\"namespace\":\"bench\",\"apiKeys\":{");
    for (0..100) |i| {
        var digest: auth.Digest = undefined;
        if (i == 0) std.crypto.hash.sha2.Sha256.hash(bench_key, &digest, .{}) else std.crypto.hash.sha2.Sha256.hash(std.mem.asBytes(&i), &digest, .{});
        const hex = std.fmt.bytesToHex(digest, .lower);
        try text.print(scratch, "{s}\"{s}\":{{\"consumer\":\"c{d}\",\"namespace\":\"bench\",\"keyId\":\"k\",\"groups\":[\"g\"]}}", .{ if (i == 0) "" else ",", &hex, i });
    }
    try text.appendSlice(scratch, "}}");
    const raw = try std.json.parseFromSliceLeaky(std.json.Value, scratch, text.items, .{});
    var store = Store.init(cfg_arena.allocator(), scratch);
    var why: []const u8 = "";
    return (try auth.compile(&store, raw, &why)).?;
}

/// kind 0: tools/call (request and result), 1: tools/list, 2: initialize,
/// 3: verifying a session token (what a request with `Mcp-Session-Id`
/// adds, besides the host's clock and shared-data reads), 4: the API-key
/// decision of a server with `auth` (SHA-256, lookup, the identity JSON).
/// Returns the total answer bytes, so nothing is optimised away.
export fn bench_run(kind: u32, n: u32) u32 {
    const c = &(cfg orelse return 0);
    const client: mcp.Client = .{};
    var total: u32 = 0;
    var i: u32 = 0;
    while (i < n) : (i += 1) {
        _ = req_arena.reset(.retain_capacity);
        const arena = req_arena.allocator();
        if (kind == 4) {
            // The decision for a right key, and the identity the filter sets.
            const id = switch (auth.decide(auth_cfg.?, "Bearer " ++ bench_key, .none)) {
                .admit => |a| a orelse return 0,
                .deny => return 0,
            };
            total +%= @intCast((auth.identityJson(arena, id) catch return 0).len);
            continue;
        }
        if (kind == 3) {
            const v = session.verify(arena, &sessions, c.base_path, 1_750_000_001_000, token) catch return 0;
            total +%= v.nonce_hex[0];
            continue;
        }
        const body = switch (kind) {
            0 => call_body,
            1 => list_body,
            else => init_body,
        };
        const outcome = mcp.handle(arena, c, body, &client) catch return 0;
        switch (outcome) {
            .reply => |r| total +%= @intCast(r.body.len),
            .call => |call| {
                const headers = pw.serializeHeaders(arena, call.headers) catch return 0;
                const answer = mcp.toolResult(arena, &call, .{ .status = 200, .headers = &upstream_headers, .body = pet }) catch return 0;
                total +%= @intCast(headers.len + answer.len);
            },
        }
    }
    return total;
}
