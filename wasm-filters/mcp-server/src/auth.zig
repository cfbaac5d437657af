//! Who may call a server with `auth` (CONFIG.md "auth"): the decision for
//! every MCP path, made once at request headers. API keys are checked here:
//! the presented key's SHA-256 is looked up among the consumers' hashes the
//! control plane sent (the configuration holds no key). JWT identities come
//! from `jwt_authn`'s metadata through the `Jwt` hook (`jwtidentity.zig`, the
//! JWT part). Every denial has one shape: 401 with `WWW-Authenticate`, or 403
//! for a known caller of another namespace. No host calls: main.zig reads the
//! header, answers, logs and counts.

const std = @import("std");
const Allocator = std.mem.Allocator;
const Value = std.json.Value;
const Store = @import("store.zig").Store;
const jsonw = @import("jsonw.zig");
const Out = jsonw.Out;
const jwtidentity = @import("jwtidentity.zig");
/// SHA-256 with its rounds in a loop (session.zig): std's unrolled one
/// took 7.5 µs for a key in V8, this 0.7 µs (bench/results/auth_apikeys.md).
const Sha256 = @import("session.zig").Sha256;

pub const Digest = [Sha256.digest_length]u8;

/// One API key of a consumer, by its SHA-256.
pub const Key = struct {
    digest: Digest,
    consumer: []const u8,
    /// Empty: a global consumer.
    namespace: []const u8,
    key_id: []const u8,
    /// The consumer's groups as a compact JSON array, for the identity.
    groups_json: []const u8,
};

pub const Auth = struct {
    /// False: callers without a credential are admitted anonymously.
    required: bool,
    /// The server's namespace: a consumer of another one is refused (403).
    namespace: []const u8,
    /// Lower-case; null when the server does not take API keys.
    api_key_header: ?[]const u8,
    /// By the key's SHA-256.
    keys: std.AutoHashMapUnmanaged(Digest, Key),
    /// Pre-rendered `WWW-Authenticate` values.
    challenge_missing: []const u8,
    challenge_invalid: []const u8,
    /// `jwt` providers configured (the JWT part reads them).
    jwt: bool,

    /// Whether API keys travel as `Authorization: Bearer <key>`.
    pub fn bearer(self: *const Auth) bool {
        const h = self.api_key_header orelse return false;
        return std.mem.eql(u8, h, "authorization");
    }

    /// Whether request header `name` (any case) is where the gateway's own
    /// credential travels: the API-key header, and `Authorization` with JWT.
    /// Such a header is never captured for a backend, whichever method
    /// admitted the caller (MCP: no token passthrough). The registry refuses
    /// a passthrough of it (registry/passthrough.py); this holds even for a
    /// configuration that slipped by, e.g. an included tool.
    pub fn isGatewayHeader(self: *const Auth, name: []const u8) bool {
        if (self.jwt and std.ascii.eqlIgnoreCase(name, "authorization")) return true;
        const h = self.api_key_header orelse return false;
        return std.ascii.eqlIgnoreCase(name, h);
    }
};

pub const Method = enum { apikey, jwt };

pub const Identity = struct {
    consumer: []const u8,
    namespace: []const u8,
    groups_json: []const u8 = "[]",
    key_id: []const u8 = "",
    method: Method,
};

/// What a JWT said, as `jwtidentity.zig` reads `jwt_authn`'s metadata.
pub const Jwt = union(enum) {
    /// No token, or no JWT providers.
    none,
    valid: Identity,
    /// A token was presented and `jwt_authn` refused it.
    invalid,
};

pub const Reason = enum {
    missing,
    invalid,
    namespace,
    /// A valid JWT without a scope the server requires (jwtidentity.zig).
    insufficient_scope,

    pub fn name(self: Reason) []const u8 {
        return @tagName(self);
    }
};

pub const Denial = struct {
    status: u32,
    reason: Reason,
    /// The consumer when known (a 403), for the log line.
    consumer: []const u8 = "",
};

pub const Decision = union(enum) {
    /// null: admitted anonymously (`required: false`, no credential).
    admit: ?Identity,
    deny: Denial,
};

/// Headers a client could send to look like an identity the gateway set:
/// removed from every request of a server with `auth`.
pub const identity_headers = [_][]const u8{
    "x-mcpgw-consumer",
    "x-mcpgw-namespace",
    "x-mcpgw-groups",
    "x-mcpgw-identity",
    "x-mcpgw-auth",
};

/// The key in a header value: `Bearer <key>` for `authorization`, the raw
/// value otherwise; null when there is none (then the caller is "missing").
pub fn presented(a: *const Auth, value: ?[]const u8) ?[]const u8 {
    const v = std.mem.trim(u8, value orelse return null, " \t");
    if (v.len == 0) return null;
    if (!a.bearer()) return v;
    const scheme = "bearer ";
    if (std.ascii.eqlIgnoreCase(v, scheme[0 .. scheme.len - 1])) return null;
    // Another scheme (Basic …) is a credential, just not one we take.
    if (v.len < scheme.len or !std.ascii.eqlIgnoreCase(v[0..scheme.len], scheme)) return v;
    const token = std.mem.trim(u8, v[scheme.len..], " \t");
    return if (token.len == 0) null else token;
}

/// The decision for one request. `value`: the API-key header's value (null
/// when absent or when the server takes no API keys); `jwt`: the JWT hook's.
pub fn decide(a: *const Auth, value: ?[]const u8, jwt: Jwt) Decision {
    switch (jwt) {
        .valid => |id| return admitted(a, id),
        .invalid, .none => {},
    }
    const key = if (a.api_key_header != null) presented(a, value) else null;
    if (key) |k| {
        if (lookup(a, k)) |found| return admitted(a, .{
            .consumer = found.consumer,
            .namespace = found.namespace,
            .groups_json = found.groups_json,
            .key_id = found.key_id,
            .method = .apikey,
        });
        return .{ .deny = .{ .status = 401, .reason = .invalid } };
    }
    if (jwt == .invalid) return .{ .deny = .{ .status = 401, .reason = .invalid } };
    if (a.required) return .{ .deny = .{ .status = 401, .reason = .missing } };
    return .{ .admit = null };
}

fn admitted(a: *const Auth, id: Identity) Decision {
    if (id.namespace.len != 0 and !std.mem.eql(u8, id.namespace, a.namespace))
        return .{ .deny = .{ .status = 403, .reason = .namespace, .consumer = id.consumer } };
    return .{ .admit = id };
}

/// The key whose hash is `key`'s. The map finds the candidate by its digest
/// (what it reveals through timing is about the caller's own guess, never a
/// stored key); the final compare is constant-time all the same.
pub fn lookup(a: *const Auth, key: []const u8) ?*const Key {
    var digest: Digest = undefined;
    Sha256.hash(key, &digest, .{});
    const found = a.keys.getPtr(digest) orelse return null;
    if (!std.crypto.timing_safe.eql(Digest, found.digest, digest)) return null;
    return found;
}

/// The identity as the JSON object set for access logs and later rules.
pub fn identityJson(arena: Allocator, id: Identity) Allocator.Error![]const u8 {
    var out = Out.init(arena);
    try out.add("{\"consumer\":");
    try out.str(id.consumer);
    try out.add(",\"namespace\":");
    try out.str(id.namespace);
    try out.add(",\"groups\":");
    try out.add(id.groups_json);
    try out.add(",\"method\":");
    try out.str(@tagName(id.method));
    if (id.key_id.len != 0) {
        try out.add(",\"keyId\":");
        try out.str(id.key_id);
    }
    try out.byte('}');
    return out.bytes();
}

/// The answer's body: a JSON-RPC error, as every other local answer (the
/// JWT module's words for the reasons both parts share).
pub fn body(d: Denial) []const u8 {
    return switch (d.reason) {
        .missing => jwtidentity.body(.missing),
        .invalid => jwtidentity.body(.invalid),
        .insufficient_scope => jwtidentity.body(.insufficient_scope),
        .namespace => "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32001,\"message\":\"Forbidden: this consumer may not call servers of this namespace\"}}",
    };
}

/// `WWW-Authenticate` for a denial of a server without JWT providers (with
/// them, jwtidentity.zig's challenges name the scopes too); null for a 403.
pub fn challenge(a: *const Auth, d: Denial) ?[]const u8 {
    return switch (d.reason) {
        .missing => a.challenge_missing,
        .invalid => a.challenge_invalid,
        .namespace, .insufficient_scope => null,
    };
}

// ------------------------------------------------------------ configuration

pub const Error = error{ InvalidConfig, OutOfMemory };

/// Compiles the configuration's `auth` object (null / absent: no auth).
/// On `error.InvalidConfig`, `why` says which field, in scratch.
pub fn compile(store: *Store, raw: Value, why: *[]const u8) Error!?*const Auth {
    const obj = switch (raw) {
        .null => return null,
        .object => |o| o,
        else => return fail(store, why, "auth: must be an object", .{}),
    };
    const required = try jwtidentity.requiredField(store, why, obj);
    const namespace = switch (obj.get("namespace") orelse Value{ .string = "" }) {
        .string => |s| s,
        else => return fail(store, why, "auth.namespace: must be a string", .{}),
    };
    var header: ?[]const u8 = null;
    var keys: std.AutoHashMapUnmanaged(Digest, Key) = .empty;
    if (obj.get("apiKeys")) |raw_keys| if (raw_keys != .null) {
        if (raw_keys != .object) return fail(store, why, "auth.apiKeys: must be an object of SHA-256 → key", .{});
        const h = switch (obj.get("apiKeyHeader") orelse Value{ .string = "authorization" }) {
            .string => |s| s,
            else => return fail(store, why, "auth.apiKeyHeader: must be a string", .{}),
        };
        if (h.len == 0 or h[0] == ':') return fail(store, why, "auth.apiKeyHeader: must be a header name", .{});
        const lower = try std.ascii.allocLowerString(store.scratch, h);
        header = try store.str(lower);
        try keys.ensureTotalCapacity(store.out, @intCast(raw_keys.object.count()));
        var it = raw_keys.object.iterator();
        while (it.next()) |entry| {
            const hex = entry.key_ptr.*;
            var digest: Digest = undefined;
            if (hex.len != 2 * digest.len) return fail(store, why, "auth.apiKeys: \"{s}\" is not a SHA-256 (64 hex digits)", .{hex});
            _ = std.fmt.hexToBytes(&digest, hex) catch
                return fail(store, why, "auth.apiKeys: \"{s}\" is not a SHA-256 (64 hex digits)", .{hex});
            const v = entry.value_ptr.*;
            if (v != .object) return fail(store, why, "auth.apiKeys[\"{s}\"]: must be an object", .{hex});
            const consumer = try field(store, why, v, "consumer", hex, true);
            var groups = Out.init(store.scratch);
            try groups.byte('[');
            if (v.object.get("groups")) |g| {
                if (g != .array) return fail(store, why, "auth.apiKeys[\"{s}\"].groups: must be a list of strings", .{hex});
                for (g.array.items, 0..) |item, i| {
                    if (item != .string) return fail(store, why, "auth.apiKeys[\"{s}\"].groups: must be a list of strings", .{hex});
                    if (i != 0) try groups.byte(',');
                    try groups.str(item.string);
                }
            }
            try groups.byte(']');
            keys.putAssumeCapacity(digest, .{
                .digest = digest,
                .consumer = consumer,
                .namespace = try field(store, why, v, "namespace", hex, false),
                .key_id = try field(store, why, v, "keyId", hex, false),
                .groups_json = try store.str(groups.bytes()),
            });
        }
    };
    const jwt = if (obj.get("jwt")) |j| switch (j) {
        .null => false,
        .array => |list| list.items.len != 0,
        else => return fail(store, why, "auth.jwt: must be a list", .{}),
    } else false;
    if (header == null and !jwt) return fail(store, why, "auth: no way to authenticate (neither apiKeys nor jwt)", .{});
    const metadata = try jwtidentity.resourceMetadata(store, why, obj);
    const a = try store.out.create(Auth);
    a.* = .{
        .required = required,
        .namespace = try store.str(namespace),
        .api_key_header = header,
        .keys = keys,
        .challenge_missing = try store.bytes(try jwtidentity.challengeText(store.scratch, null, metadata, &.{})),
        .challenge_invalid = try store.bytes(try jwtidentity.challengeText(store.scratch, "invalid_token", metadata, &.{})),
        .jwt = jwt,
    };
    return a;
}

fn field(store: *Store, why: *[]const u8, v: Value, comptime name: []const u8, hex: []const u8, required: bool) Error![]const u8 {
    const f = v.object.get(name) orelse {
        if (required) return fail(store, why, "auth.apiKeys[\"{s}\"]." ++ name ++ ": required", .{hex});
        return "";
    };
    if (f != .string) return fail(store, why, "auth.apiKeys[\"{s}\"]." ++ name ++ ": must be a string", .{hex});
    return store.str(f.string);
}

fn fail(store: *Store, why: *[]const u8, comptime fmt: []const u8, args: anytype) Error {
    why.* = try jsonw.allocPrint(store.scratch, fmt, args);
    return error.InvalidConfig;
}

// ------------------------------------------------------------------- tests

const testing = std.testing;

const alice_key = "mcpgw_alice-secret";
const bob_key = "mcpgw_bob-secret";

fn hexOf(key: []const u8) [64]u8 {
    var d: Digest = undefined;
    std.crypto.hash.sha2.Sha256.hash(key, &d, .{});
    return std.fmt.bytesToHex(d, .lower);
}

fn compiled(arena: Allocator, comptime extra: []const u8, header: []const u8) !*const Auth {
    const a = hexOf(alice_key);
    const b = hexOf(bob_key);
    const text = try std.fmt.allocPrint(arena,
        \\{{"required": true, "namespace": "team-a", "apiKeyHeader": "{s}", "apiKeys": {{
        \\  "{s}": {{"consumer": "alice", "namespace": "team-a", "keyId": "k1", "groups": ["readers"]}},
        \\  "{s}": {{"consumer": "bob", "namespace": "team-b", "keyId": "k2"}}}}{s}}}
    , .{ header, a, b, extra });
    const raw = try std.json.parseFromSliceLeaky(Value, arena, text, .{});
    var store = Store.init(arena, arena);
    var why: []const u8 = "";
    return (try compile(&store, raw, &why)).?;
}

test "a right key admits its consumer with its identity" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const a = try compiled(arena.allocator(), "", "Authorization");
    const d = decide(a, "Bearer " ++ alice_key, .none);
    try testing.expect(d == .admit);
    const id = d.admit.?;
    try testing.expectEqualStrings("alice", id.consumer);
    try testing.expectEqualStrings(
        "{\"consumer\":\"alice\",\"namespace\":\"team-a\",\"groups\":[\"readers\"],\"method\":\"apikey\",\"keyId\":\"k1\"}",
        try identityJson(arena.allocator(), id),
    );
    // The scheme is case-insensitive (RFC 9110 11.1).
    try testing.expect(decide(a, "bearer  " ++ alice_key, .none) == .admit);
}

test "missing, wrong and foreign keys are denied with their reasons" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const a = try compiled(arena.allocator(), "", "authorization");
    try testing.expectEqual(Reason.missing, decide(a, null, .none).deny.reason);
    try testing.expectEqual(Reason.missing, decide(a, "Bearer ", .none).deny.reason);
    try testing.expectEqual(Reason.invalid, decide(a, "Bearer mcpgw_wrong", .none).deny.reason);
    try testing.expectEqual(Reason.invalid, decide(a, "Basic " ++ alice_key, .none).deny.reason);
    const foreign = decide(a, "Bearer " ++ bob_key, .none).deny;
    try testing.expectEqual(@as(u32, 403), foreign.status);
    try testing.expectEqualStrings("bob", foreign.consumer);
    try testing.expectEqualStrings("Bearer", challenge(a, .{ .status = 401, .reason = .missing }).?);
    try testing.expectEqualStrings("Bearer error=\"invalid_token\"", challenge(a, .{ .status = 401, .reason = .invalid }).?);
    try testing.expect(challenge(a, foreign) == null);
}

test "a custom header carries the raw key; global consumers pass; optional auth admits anonymous" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const al = arena.allocator();
    const a = try compiled(al, "", "X-Api-Key");
    try testing.expectEqualStrings("x-api-key", a.api_key_header.?);
    try testing.expect(decide(a, alice_key, .none) == .admit);
    try testing.expectEqual(Reason.invalid, decide(a, "Bearer " ++ alice_key, .none).deny.reason);

    const g = hexOf("mcpgw_global");
    const text = try std.fmt.allocPrint(al,
        \\{{"required": false, "namespace": "ns", "resourceMetadata": "https://gw/.well-known/x",
        \\  "apiKeys": {{"{s}": {{"consumer": "ops"}}}}}}
    , .{g});
    var store = Store.init(al, al);
    var why: []const u8 = "";
    const b = (try compile(&store, try std.json.parseFromSliceLeaky(Value, al, text, .{}), &why)).?;
    try testing.expect(decide(b, "Bearer mcpgw_global", .none) == .admit);
    try testing.expect(decide(b, null, .none).admit == null);
    try testing.expectEqual(Reason.invalid, decide(b, "Bearer nope", .none).deny.reason);
    try testing.expectEqualStrings("Bearer error=\"invalid_token\", resource_metadata=\"https://gw/.well-known/x\"", b.challenge_invalid);
}

test "the JWT hook's identity comes first and is held to the namespace" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const a = try compiled(arena.allocator(), "", "authorization");
    try testing.expect(decide(a, "Bearer x.y.z", .{ .valid = .{ .consumer = "c", .namespace = "", .method = .jwt } }) == .admit);
    try testing.expectEqual(Reason.invalid, decide(a, null, .invalid).deny.reason);
    try testing.expectEqual(@as(u32, 403), decide(a, null, .{ .valid = .{ .consumer = "c", .namespace = "other", .method = .jwt } }).deny.status);
}

test "the gateway's own credential headers are known in any case" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const keys = try compiled(arena.allocator(), "", "X-Api-Key");
    try testing.expect(keys.isGatewayHeader("x-api-key") and keys.isGatewayHeader("X-API-KEY"));
    // Without JWT, Authorization is the client's own (it may pass it on).
    try testing.expect(!keys.isGatewayHeader("authorization") and !keys.isGatewayHeader("x-backend-token"));
    const both = try compiled(arena.allocator(), ", \"jwt\": [{}]", "X-Api-Key");
    try testing.expect(both.isGatewayHeader("Authorization") and both.isGatewayHeader("x-api-key"));
    try testing.expect(!both.isGatewayHeader("cookie"));
    const bearer_keys = try compiled(arena.allocator(), "", "authorization");
    try testing.expect(bearer_keys.isGatewayHeader("AUTHORIZATION"));
}

test "bad auth configurations are refused with the field" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const al = arena.allocator();
    const cases = [_]struct { text: []const u8, why: []const u8 }{
        .{ .text = "{\"required\": 1, \"apiKeys\": {}}", .why = "auth.required" },
        .{ .text = "{\"apiKeys\": {\"abc\": {\"consumer\": \"a\"}}}", .why = "not a SHA-256" },
        .{ .text = "{\"required\": true}", .why = "no way to authenticate" },
        .{ .text = "{\"apiKeys\": {}, \"resourceMetadata\": \"a\\\"b\"}", .why = "auth.resourceMetadata" },
        .{ .text = "[]", .why = "auth: must be an object" },
    };
    for (cases) |c| {
        var store = Store.init(al, al);
        var why: []const u8 = "";
        const raw = try std.json.parseFromSliceLeaky(Value, al, c.text, .{});
        try testing.expectError(error.InvalidConfig, compile(&store, raw, &why));
        try testing.expect(std.mem.indexOf(u8, why, c.why) != null);
    }
}
