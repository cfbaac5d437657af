//! Who a JWT says the caller is (CONFIG.md "auth", the `jwt` providers).
//!
//! Envoy's `jwt_authn` filter, before this one, verifies the token and,
//! when it is valid for a provider, writes the payload into the stream's
//! dynamic metadata under `envoy.filters.http.jwt_authn` / the provider's
//! name (`payload_in_metadata`); it never answers itself. This module reads
//! that metadata through `get_property` (the only way in: a client cannot
//! write it) and turns it into an identity, or says the token was refused.
//! Envoy serializes a property as: a string claim as its bytes, a list
//! claim as a proxy-wasm pairs map whose keys are the items.
//!
//! `decide` is the minimal decision for a server with JWT auth (401
//! missing / invalid_token, 403 insufficient_scope); with the API-key
//! module (`auth.zig`) merged, its hook calls `read` and maps `Found` onto
//! its `Jwt` union, and the decision is auth.zig's.

const std = @import("std");
const Allocator = std.mem.Allocator;
const Value = std.json.Value;
const Store = @import("store.zig").Store;
const jsonw = @import("jsonw.zig");
const Out = jsonw.Out;
const pw = @import("proxywasm.zig");

pub const metadata_namespace = "envoy.filters.http.jwt_authn";

pub const Provider = struct {
    name: []const u8,
    consumer_claim: []const u8,
    groups_claim: []const u8,
};

pub const Jwt = struct {
    /// False: callers without a token are admitted anonymously.
    required: bool,
    providers: []const Provider,
    /// Every token must carry each of these scopes.
    required_scopes: []const []const u8,
    /// Pre-rendered `WWW-Authenticate` values.
    challenge_missing: []const u8,
    challenge_invalid: []const u8,
    challenge_scope: []const u8,
};

/// What the metadata said about this request.
pub const Found = union(enum) {
    /// No provider accepted a token.
    none,
    valid: Claims,
};

pub const Claims = struct {
    provider: []const u8,
    consumer: []const u8,
    /// A compact JSON array of strings.
    groups_json: []const u8,
    /// Space-separated, as the `scope` claim (RFC 9068) carries them.
    scopes: []const u8,
};

pub const Reason = enum { missing, invalid, insufficient_scope };

pub const Decision = union(enum) {
    /// null: admitted anonymously (`required: false`, no token).
    admit: ?Claims,
    deny: struct { status: u32, reason: Reason },
};

/// The decision: `found` from `read`, `bearer` whether the request carried
/// `Authorization: Bearer …` (a token jwt_authn did not accept is invalid).
pub fn decide(j: *const Jwt, found: Found, bearer: bool) Decision {
    switch (found) {
        .valid => |c| {
            for (j.required_scopes) |scope| if (!hasScope(c.scopes, scope))
                return .{ .deny = .{ .status = 403, .reason = .insufficient_scope } };
            return .{ .admit = c };
        },
        .none => {},
    }
    if (bearer) return .{ .deny = .{ .status = 401, .reason = .invalid } };
    if (j.required) return .{ .deny = .{ .status = 401, .reason = .missing } };
    return .{ .admit = null };
}

pub fn hasScope(scopes: []const u8, scope: []const u8) bool {
    var it = std.mem.tokenizeScalar(u8, scopes, ' ');
    while (it.next()) |s| if (std.mem.eql(u8, s, scope)) return true;
    return false;
}

/// Whether the `Authorization` header value carries a bearer token.
pub fn isBearer(value: ?[]const u8) bool {
    const v = std.mem.trim(u8, value orelse return false, " \t");
    return v.len > 7 and std.ascii.eqlIgnoreCase(v[0..7], "bearer ");
}

pub fn challenge(j: *const Jwt, reason: Reason) []const u8 {
    return switch (reason) {
        .missing => j.challenge_missing,
        .invalid => j.challenge_invalid,
        .insufficient_scope => j.challenge_scope,
    };
}

pub fn body(reason: Reason) []const u8 {
    return switch (reason) {
        .missing => "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32001,\"message\":\"Unauthorized: this MCP server requires authentication\"}}",
        .invalid => "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32001,\"message\":\"Unauthorized: invalid credential\"}}",
        .insufficient_scope => "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32001,\"message\":\"Forbidden: the token lacks a scope this MCP server requires\"}}",
    };
}

/// The identity as the JSON object set for access logs and later rules.
pub fn identityJson(arena: Allocator, c: Claims, namespace: []const u8) Allocator.Error![]const u8 {
    var out = Out.init(arena);
    try out.add("{\"consumer\":");
    try out.str(c.consumer);
    try out.add(",\"namespace\":");
    try out.str(namespace);
    try out.add(",\"groups\":");
    try out.add(c.groups_json);
    try out.add(",\"scopes\":[");
    var it = std.mem.tokenizeScalar(u8, c.scopes, ' ');
    var first = true;
    while (it.next()) |s| {
        if (!first) try out.byte(',');
        first = false;
        try out.str(s);
    }
    try out.add("],\"method\":\"jwt\"}");
    return out.bytes();
}

// ---------------------------------------------------------------- host side

/// The first provider whose payload jwt_authn wrote, with its claims. One
/// host call per provider: the payload arrives as a pairs map of claims.
pub fn read(arena: Allocator, j: *const Jwt) Allocator.Error!Found {
    for (j.providers) |p| {
        const path = try std.mem.join(arena, "\x00", &.{ "metadata", "filter_metadata", metadata_namespace, p.name });
        const got = pw.getProperty(path) orelse continue;
        defer got.free();
        if (try claims(arena, p, got.slice())) |c| return .{ .valid = c };
    }
    return .none;
}

/// The claims of a payload (a pairs map of claim name → value; a string
/// value is its bytes, a list a pairs map of its items); null when the
/// consumer claim is missing or not a string.
pub fn claims(arena: Allocator, p: Provider, payload: []const u8) Allocator.Error!?Claims {
    const Item = struct { name: []const u8, value: []const u8 };
    const items = pw.deserializeHeaders(Item, arena, payload) catch return null;
    var consumer: ?[]const u8 = null;
    var groups: ?[]const u8 = null;
    var scope: []const u8 = "";
    for (items) |item| {
        if (std.mem.eql(u8, item.name, p.consumer_claim)) consumer = item.value;
        if (std.mem.eql(u8, item.name, p.groups_claim)) groups = item.value;
        if (std.mem.eql(u8, item.name, "scope")) scope = item.value;
    }
    const id = consumer orelse return null;
    if (!isText(id)) return null;
    return .{
        .provider = p.name,
        .consumer = try arena.dupe(u8, id),
        .groups_json = try groupsJson(arena, groups),
        .scopes = if (isText(scope)) try arena.dupe(u8, scope) else "",
    };
}

/// A string claim (not a number's 8 bytes, a list or a map): printable, no controls.
fn isText(v: []const u8) bool {
    if (v.len == 0 or v.len > 1024 or !std.unicode.utf8ValidateSlice(v)) return false;
    for (v) |c| if (c < 0x20 or c == 0x7f) return false;
    return true;
}

/// What jwt_authn said about a refused token (its `failed_status_in_metadata`), for the log.
pub fn failure(arena: Allocator, j: *const Jwt) Allocator.Error!?[]const u8 {
    for (j.providers) |p| {
        const key = try std.fmt.allocPrint(arena, "{s}#failed", .{p.name});
        if (try claim(arena, key, "message")) |m| return m;
    }
    return null;
}

fn claim(arena: Allocator, provider: []const u8, name: []const u8) Allocator.Error!?[]const u8 {
    const path = try std.mem.join(arena, "\x00", &.{ "metadata", "filter_metadata", metadata_namespace, provider, name });
    const got = pw.getProperty(path) orelse return null;
    defer got.free();
    return try arena.dupe(u8, got.slice());
}

/// A groups claim as a JSON array: a list (pairs map of items) or one string.
pub fn groupsJson(arena: Allocator, raw: ?[]const u8) Allocator.Error![]const u8 {
    const v = raw orelse return "[]";
    var out = Out.init(arena);
    try out.byte('[');
    const Item = struct { name: []const u8, value: []const u8 };
    if (listItems(Item, arena, v)) |items| {
        for (items, 0..) |item, i| {
            if (i != 0) try out.byte(',');
            try out.str(item.name);
        }
    } else if (v.len != 0) {
        try out.str(v);
    }
    try out.byte(']');
    return out.bytes();
}

/// The items of a list property, or null when `v` is a plain string.
fn listItems(comptime T: type, arena: Allocator, v: []const u8) ?[]T {
    // A pairs map ends with a NUL after the last value; a string claim does not.
    if (v.len < 4 or v[v.len - 1] != 0) return null;
    const items = pw.deserializeHeaders(T, arena, v) catch return null;
    for (items) |item| if (std.mem.indexOfScalar(u8, item.name, 0) != null) return null;
    return items;
}

// ------------------------------------------------------------ configuration

pub const Error = error{ InvalidConfig, OutOfMemory };

/// Compiles the JWT part of the configuration's `auth` object; null when
/// it has no `jwt` providers. On `error.InvalidConfig`, `why` says which field.
/// `auth.required` (default true), read by both halves of the `auth` block
/// (API keys in auth.zig, JWT here) so they cannot disagree.
pub fn requiredField(store: *Store, why: *[]const u8, obj: std.json.ObjectMap) Error!bool {
    return switch (obj.get("required") orelse Value{ .bool = true }) {
        .bool => |b| b,
        else => return fail(store, why, "auth.required: must be true or false", .{}),
    };
}

/// `auth.resourceMetadata`: the URL the challenges name, or null; checked
/// once for both halves since it goes into a `WWW-Authenticate` header.
pub fn resourceMetadata(store: *Store, why: *[]const u8, obj: std.json.ObjectMap) Error!?[]const u8 {
    const metadata: ?[]const u8 = if (obj.get("resourceMetadata")) |m| switch (m) {
        .null => null,
        .string => |s| s,
        else => return fail(store, why, "auth.resourceMetadata: must be a URL or null", .{}),
    } else null;
    if (metadata) |m| if (std.mem.indexOfAny(u8, m, "\"\\\r\n") != null)
        return fail(store, why, "auth.resourceMetadata: must not contain quotes, backslashes or line breaks", .{});
    return metadata;
}

pub fn compile(store: *Store, raw: Value, why: *[]const u8) Error!?*const Jwt {
    const obj = switch (raw) {
        .null => return null,
        .object => |o| o,
        else => return fail(store, why, "auth: must be an object", .{}),
    };
    const list = switch (obj.get("jwt") orelse return null) {
        .null => return null,
        .array => |a| a.items,
        else => return fail(store, why, "auth.jwt: must be a list", .{}),
    };
    if (list.len == 0) return null;
    const required = try requiredField(store, why, obj);
    const providers = try store.out.alloc(Provider, list.len);
    for (list, providers, 0..) |item, *p, i| {
        if (item != .object) return fail(store, why, "auth.jwt[{d}]: must be an object", .{i});
        p.* = .{
            .name = try text(store, why, item, "provider", i, null),
            .consumer_claim = try text(store, why, item, "consumerClaim", i, "sub"),
            .groups_claim = try text(store, why, item, "groupsClaim", i, "groups"),
        };
    }
    var scopes: []const []const u8 = &.{};
    if (obj.get("requiredScopes")) |r| if (r != .null) {
        if (r != .array) return fail(store, why, "auth.requiredScopes: must be a list of strings", .{});
        const found = try store.scratch.alloc([]const u8, r.array.items.len);
        for (r.array.items, found) |s, *f| {
            if (s != .string or s.string.len == 0 or std.mem.indexOfAny(u8, s.string, " \"\\") != null)
                return fail(store, why, "auth.requiredScopes: must be scope tokens", .{});
            f.* = s.string;
        }
        scopes = try store.strs(found);
    };
    const metadata = try resourceMetadata(store, why, obj);
    const j = try store.out.create(Jwt);
    j.* = .{
        .required = required,
        .providers = providers,
        .required_scopes = scopes,
        .challenge_missing = try store.bytes(try challengeText(store.scratch, null, metadata, scopes)),
        .challenge_invalid = try store.bytes(try challengeText(store.scratch, "invalid_token", metadata, &.{})),
        .challenge_scope = try store.bytes(try challengeText(store.scratch, "insufficient_scope", metadata, scopes)),
    };
    return j;
}

fn text(store: *Store, why: *[]const u8, v: Value, comptime name: []const u8, i: usize, default: ?[]const u8) Error![]const u8 {
    const f = v.object.get(name) orelse {
        if (default) |d| return d;
        return fail(store, why, "auth.jwt[{d}]." ++ name ++ ": required", .{i});
    };
    if (f != .string or f.string.len == 0 or std.mem.indexOfScalar(u8, f.string, 0) != null)
        return fail(store, why, "auth.jwt[{d}]." ++ name ++ ": must be a non-empty string", .{i});
    return store.str(f.string);
}

/// `Bearer [error="…", ][scope="…", ]resource_metadata="…"` (RFC 6750 3, RFC 9728 5.1).
pub fn challengeText(scratch: Allocator, err: ?[]const u8, metadata: ?[]const u8, scopes: []const []const u8) Allocator.Error![]const u8 {
    var out = Out.init(scratch);
    try out.add("Bearer");
    var sep: []const u8 = " ";
    if (err) |e| {
        try out.add(sep);
        try out.add("error=\"");
        try out.add(e);
        try out.byte('"');
        sep = ", ";
    }
    if (scopes.len != 0) {
        try out.add(sep);
        try out.add("scope=\"");
        for (scopes, 0..) |s, i| {
            if (i != 0) try out.byte(' ');
            try out.add(s);
        }
        try out.byte('"');
        sep = ", ";
    }
    if (metadata) |m| {
        try out.add(sep);
        try out.add("resource_metadata=\"");
        try out.add(m);
        try out.byte('"');
    }
    return out.bytes();
}

fn fail(store: *Store, why: *[]const u8, comptime fmt: []const u8, args: anytype) Error {
    why.* = std.fmt.allocPrint(store.scratch, fmt, args) catch "auth: invalid";
    return error.InvalidConfig;
}

// -------------------------------------------------------------------- tests

const testing = std.testing;

fn compiled(arena: Allocator, json: []const u8) !*const Jwt {
    const parsed = try std.json.parseFromSliceLeaky(Value, arena, json, .{});
    var store = Store.init(arena, arena);
    var why: []const u8 = "";
    return (try compile(&store, parsed, &why)).?;
}

test "challenges name the metadata, the error and the required scopes" {
    var a = std.heap.ArenaAllocator.init(testing.allocator);
    defer a.deinit();
    const j = try compiled(a.allocator(),
        \\{"required": true, "jwt": [{"provider": "p", "consumerClaim": "sub"}],
        \\ "resourceMetadata": "http://gw/.well-known/oauth-protected-resource/mcp/a/b",
        \\ "requiredScopes": ["tools:call"]}
    );
    try testing.expectEqualStrings("Bearer scope=\"tools:call\", resource_metadata=\"http://gw/.well-known/oauth-protected-resource/mcp/a/b\"", j.challenge_missing);
    try testing.expectEqualStrings("Bearer error=\"invalid_token\", resource_metadata=\"http://gw/.well-known/oauth-protected-resource/mcp/a/b\"", j.challenge_invalid);
    try testing.expectEqualStrings("Bearer error=\"insufficient_scope\", scope=\"tools:call\", resource_metadata=\"http://gw/.well-known/oauth-protected-resource/mcp/a/b\"", j.challenge_scope);
    try testing.expectEqualStrings("groups", j.providers[0].groups_claim);
}

test "the decision: valid, missing scope, bad token, no token" {
    var a = std.heap.ArenaAllocator.init(testing.allocator);
    defer a.deinit();
    const j = try compiled(a.allocator(),
        \\{"jwt": [{"provider": "p"}], "requiredScopes": ["tools:call"]}
    );
    const ok: Claims = .{ .provider = "p", .consumer = "agent", .groups_json = "[]", .scopes = "tools:read tools:call" };
    try testing.expect(decide(j, .{ .valid = ok }, true) == .admit);
    var narrow = ok;
    narrow.scopes = "tools:read";
    try testing.expectEqual(@as(u32, 403), decide(j, .{ .valid = narrow }, true).deny.status);
    try testing.expectEqual(Reason.invalid, decide(j, .none, true).deny.reason);
    try testing.expectEqual(Reason.missing, decide(j, .none, false).deny.reason);
    const optional = try compiled(a.allocator(),
        \\{"required": false, "jwt": [{"provider": "p"}]}
    );
    try testing.expect(decide(optional, .none, false).admit == null);
    try testing.expectEqual(Reason.invalid, decide(optional, .none, true).deny.reason);
}

test "groups: a list property (pairs map) or one string" {
    var a = std.heap.ArenaAllocator.init(testing.allocator);
    defer a.deinit();
    const arena = a.allocator();
    const Pair = struct { name: []const u8, value: []const u8 };
    const list = try pw.serializeHeaders(arena, &[_]Pair{ .{ .name = "readers", .value = "" }, .{ .name = "ops", .value = "" } });
    try testing.expectEqualStrings("[\"readers\",\"ops\"]", try groupsJson(arena, list));
    try testing.expectEqualStrings("[\"admins\"]", try groupsJson(arena, "admins"));
    try testing.expectEqualStrings("[]", try groupsJson(arena, null));
}

test "claims from a payload pairs map: strings, a list, numbers ignored" {
    var a = std.heap.ArenaAllocator.init(testing.allocator);
    defer a.deinit();
    const arena = a.allocator();
    const Pair = struct { name: []const u8, value: []const u8 };
    const groups = try pw.serializeHeaders(arena, &[_]Pair{ .{ .name = "readers", .value = "" }, .{ .name = "ops", .value = "" } });
    var exp: [8]u8 = undefined;
    std.mem.writeInt(u64, &exp, @bitCast(@as(f64, 1.7e9)), .little);
    const payload = try pw.serializeHeaders(arena, &[_]Pair{
        .{ .name = "iss", .value = "https://idp" },
        .{ .name = "client_id", .value = "agent" },
        .{ .name = "exp", .value = &exp },
        .{ .name = "groups", .value = groups },
        .{ .name = "scope", .value = "tools:read tools:call" },
    });
    const p: Provider = .{ .name = "p", .consumer_claim = "client_id", .groups_claim = "groups" };
    const c = (try claims(arena, p, payload)).?;
    try testing.expectEqualStrings("agent", c.consumer);
    try testing.expectEqualStrings("[\"readers\",\"ops\"]", c.groups_json);
    try testing.expectEqualStrings("tools:read tools:call", c.scopes);
    // A numeric claim is no consumer id; a missing one neither.
    try testing.expect((try claims(arena, .{ .name = "p", .consumer_claim = "exp", .groups_claim = "g" }, payload)) == null);
    try testing.expect((try claims(arena, .{ .name = "p", .consumer_claim = "sub", .groups_claim = "g" }, payload)) == null);
    try testing.expect((try claims(arena, p, "garbage")) == null);
}

test "bearer and scope helpers" {
    try testing.expect(isBearer("Bearer abc"));
    try testing.expect(isBearer("bearer abc"));
    try testing.expect(!isBearer("Basic abc"));
    try testing.expect(!isBearer(null));
    try testing.expect(hasScope("a b c", "b"));
    try testing.expect(!hasScope("a bc", "b"));
}

test "configuration errors name the field" {
    var a = std.heap.ArenaAllocator.init(testing.allocator);
    defer a.deinit();
    const arena = a.allocator();
    var store = Store.init(arena, arena);
    var why: []const u8 = "";
    const bad = try std.json.parseFromSliceLeaky(Value, arena, "{\"jwt\": [{\"consumerClaim\": \"sub\"}]}", .{});
    try testing.expectError(error.InvalidConfig, compile(&store, bad, &why));
    try testing.expectEqualStrings("auth.jwt[0].provider: required", why);
    const none = try std.json.parseFromSliceLeaky(Value, arena, "{\"apiKeys\": {}}", .{});
    try testing.expect((try compile(&store, none, &why)) == null);
}
