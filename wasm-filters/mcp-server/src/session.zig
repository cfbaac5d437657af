//! Self-validating session tokens (CONFIG.md, "Sessions"): the filter mints
//! them at `initialize` (Streamable HTTP) and `GET …/sse` (HTTP+SSE) and
//! verifies them on every later request, on any replica, without a shared
//! store: the token carries what the session is, and an HMAC-SHA256 over it
//! with a key the control plane distributes proves the gateway minted it.
//! No host calls here; the caller brings the time and the random nonce.
//!
//! Token: `base64url(payload) "." base64url(mac)`, both without padding, so
//! only `A-Z a-z 0-9 - _ .`: valid as a header value and in a query string.
//!
//! payload (bytes):
//!   0       format, 1
//!   1       key id length k (1..32)
//!   2..     key id (k bytes)
//!   +8      issued, unix ms, u64 big-endian
//!   +1      protocol version length v, then v bytes of version
//!   +16     nonce (random)
//!   rest    extra (opaque bytes, may be empty)
//!
//! mac = the first 16 bytes of
//!   HMAC-SHA256(secret, "mcpgw session v1" ‖ u32be(len(base_path)) ‖ base_path ‖ payload)
//! so a token of one server is worthless at another's path.

const std = @import("std");
const Allocator = std.mem.Allocator;
/// std's HMAC over `Sha256` below: the same MAC as
/// `std.crypto.auth.hmac.sha2.HmacSha256` (the tests compare them).
pub const HmacSha256 = std.crypto.auth.hmac.Hmac(Sha256);

pub const format: u8 = 1;
pub const domain_tag = "mcpgw session v1";
pub const mac_len = 16;
pub const nonce_len = 16;
pub const max_key_id_len = 32;
/// Longer tokens are refused unread, and never minted.
pub const max_token_len = 4096;
/// Tolerated clock difference between the replica that minted a token and
/// the one verifying it: an issue time further in the future is refused.
pub const max_skew_ms: u64 = 5 * 60 * 1000;
pub const default_ttl_ms: u64 = 24 * 60 * 60 * 1000;

const b64 = std.base64.url_safe_no_pad;
const mac_text_len = b64.Encoder.calcSize(mac_len);

pub const Key = struct {
    id: []const u8,
    secret: []const u8,
    /// Tokens signed with this key are refused after this unix ms; 0 = never.
    accept_until_ms: u64 = 0,
    /// Keyed with `secret` and fed the MAC prefix for `Sessions.base_path`,
    /// once at configure time: a request's MAC then only hashes its payload.
    prepared: HmacSha256,

    pub fn init(id: []const u8, secret: []const u8, accept_until_ms: u64, base_path: []const u8) Key {
        var h = HmacSha256.init(secret);
        absorbPrefix(&h, base_path);
        return .{ .id = id, .secret = secret, .accept_until_ms = accept_until_ms, .prepared = h };
    }
};

pub const Sessions = struct {
    /// `keys[0]` signs new sessions; every key verifies.
    keys: []const Key,
    ttl_ms: u64 = default_ttl_ms,
    /// Live ended-session records a revocation slot keeps (from
    /// `sessions.max_ended`); the oldest go first when it is full.
    ended_per_slot: u32 = revocation_slot_max,
    /// The path `Key.prepared` was computed for (the server's `base_path`).
    base_path: []const u8,

    pub fn findKey(self: *const Sessions, id: []const u8) ?*const Key {
        for (self.keys) |*k| {
            if (std.mem.eql(u8, k.id, id)) return k;
        }
        return null;
    }
};

pub const Verified = struct {
    key_id: []const u8,
    issued_ms: u64,
    /// The protocol version the session was minted with.
    version: []const u8,
    extra: []const u8,
    nonce: [nonce_len]u8,
    /// `nonce` as 32 lower-case hex digits: the session's SSE channel.
    nonce_hex: [2 * nonce_len]u8,
};

pub const IssueError = Allocator.Error || error{TooLong};
pub const VerifyError = Allocator.Error || error{ Invalid, Expired };

/// `[A-Za-z0-9_-]{1,32}`: what the token can carry as a key id.
pub fn validKeyId(id: []const u8) bool {
    if (id.len == 0 or id.len > max_key_id_len) return false;
    for (id) |c| switch (c) {
        'A'...'Z', 'a'...'z', '0'...'9', '_', '-' => {},
        else => return false,
    };
    return true;
}

fn absorbPrefix(h: *HmacSha256, base_path: []const u8) void {
    var len: [4]u8 = undefined;
    std.mem.writeInt(u32, &len, @intCast(base_path.len), .big);
    h.update(domain_tag);
    h.update(&len);
    h.update(base_path);
}

fn computeMac(s: *const Sessions, key: *const Key, base_path: []const u8, payload: []const u8) [mac_len]u8 {
    // The configured server's own path (every request) uses the prepared
    // state; any other path is computed from the secret.
    var h = if (std.mem.eql(u8, base_path, s.base_path)) key.prepared else blk: {
        var fresh = HmacSha256.init(key.secret);
        absorbPrefix(&fresh, base_path);
        break :blk fresh;
    };
    h.update(payload);
    var full: [HmacSha256.mac_length]u8 = undefined;
    h.final(&full);
    return full[0..mac_len].*;
}

/// A new token signed with `keys[0]`.
pub fn issue(
    arena: Allocator,
    s: *const Sessions,
    base_path: []const u8,
    now_ms: u64,
    version: []const u8,
    extra: []const u8,
    nonce: [nonce_len]u8,
) IssueError![]const u8 {
    const key = &s.keys[0];
    if (version.len > 255 or key.id.len > 255) return error.TooLong;
    const payload_len = 2 + key.id.len + 8 + 1 + version.len + nonce_len + extra.len;
    const text_len = b64.Encoder.calcSize(payload_len) + 1 + mac_text_len;
    if (text_len > max_token_len) return error.TooLong;

    const payload = try arena.alloc(u8, payload_len);
    var w: usize = 0;
    payload[w] = format;
    payload[w + 1] = @intCast(key.id.len);
    w += 2;
    @memcpy(payload[w..][0..key.id.len], key.id);
    w += key.id.len;
    std.mem.writeInt(u64, payload[w..][0..8], now_ms, .big);
    w += 8;
    payload[w] = @intCast(version.len);
    w += 1;
    @memcpy(payload[w..][0..version.len], version);
    w += version.len;
    @memcpy(payload[w..][0..nonce_len], &nonce);
    w += nonce_len;
    @memcpy(payload[w..], extra);

    const mac = computeMac(s, key, base_path, payload);
    const token = try arena.alloc(u8, text_len);
    const head = b64.Encoder.encode(token, payload);
    token[head.len] = '.';
    _ = b64.Encoder.encode(token[head.len + 1 ..], &mac);
    return token;
}

/// Checks a token: well-formed, signed by a configured key for `base_path`,
/// that key still accepted, and not older than `ttl_ms`. `error.Invalid`
/// for anything not minted by us (for this path), `error.Expired` for a
/// genuine token past its time. The returned slices point into `arena`.
pub fn verify(arena: Allocator, s: *const Sessions, base_path: []const u8, now_ms: u64, token: []const u8) VerifyError!Verified {
    if (token.len == 0 or token.len > max_token_len) return error.Invalid;
    const dot = std.mem.indexOfScalar(u8, token, '.') orelse return error.Invalid;
    const payload_text = token[0..dot];
    const mac_text = token[dot + 1 ..];
    if (mac_text.len != mac_text_len) return error.Invalid;
    var mac: [mac_len]u8 = undefined;
    b64.Decoder.decode(&mac, mac_text) catch return error.Invalid;

    const payload_len = b64.Decoder.calcSizeForSlice(payload_text) catch return error.Invalid;
    const payload = try arena.alloc(u8, payload_len);
    // The decoder refuses stray bits in the last character, so one payload
    // has exactly one spelling.
    b64.Decoder.decode(payload, payload_text) catch return error.Invalid;

    // The key id comes before the MAC can be checked; everything is
    // bounds-checked before it is read.
    if (payload.len < 2 or payload[0] != format) return error.Invalid;
    const kid_len = payload[1];
    if (payload.len < 2 + @as(usize, kid_len) + 8 + 1) return error.Invalid;
    const key_id = payload[2..][0..kid_len];
    const key = s.findKey(key_id) orelse return error.Invalid;
    const expected = computeMac(s, key, base_path, payload);
    if (!std.crypto.timing_safe.eql([mac_len]u8, expected, mac)) return error.Invalid;

    var r: usize = 2 + kid_len;
    const issued_ms = std.mem.readInt(u64, payload[r..][0..8], .big);
    r += 8;
    const version_len = payload[r];
    r += 1;
    if (payload.len < r + version_len + nonce_len) return error.Invalid;
    const version = payload[r..][0..version_len];
    r += version_len;
    const nonce = payload[r..][0..nonce_len].*;
    r += nonce_len;

    try checkTimes(s, issued_ms, key.accept_until_ms, now_ms);
    return .{
        .key_id = key_id,
        .issued_ms = issued_ms,
        .version = version,
        .extra = payload[r..],
        .nonce = nonce,
        .nonce_hex = std.fmt.bytesToHex(nonce, .lower),
    };
}

/// The checks that depend on the time: a token verified earlier is still
/// checked against them on every request.
fn checkTimes(s: *const Sessions, issued_ms: u64, accept_until_ms: u64, now_ms: u64) error{ Invalid, Expired }!void {
    if (issued_ms > now_ms +| max_skew_ms) return error.Invalid;
    if (accept_until_ms != 0 and now_ms > accept_until_ms) return error.Expired;
    if (now_ms >= issued_ms +| s.ttl_ms) return error.Expired;
}

/// What a request needs of its verified session.
pub const Checked = struct {
    issued_ms: u64,
    nonce: [nonce_len]u8,
    /// The protocol version the session was minted with (request arena).
    version: []const u8 = "",
};

/// Tokens that verified recently. A session sends the same token with every
/// request; measured inside Envoy, decoding and MAC-checking it was ~2.5 µs
/// of the ~15 µs the filter spends on a request, a cache hit a fraction of
/// that. An entry holds the exact token bytes and the configuration
/// `generation` it verified under (a new configuration, e.g. a rotated or
/// dropped key, starts from nothing), so a hit is a token this filter
/// already proved genuine with the same keys; the time checks (expiry, a
/// retired key) still run on every hit. Fixed size, direct-mapped, never
/// allocates: one per VM, ~50 KB.
pub const VerifiedCache = struct {
    pub const capacity = 256;
    /// Longer tokens (proxied servers' ids carry the upstream session id)
    /// are verified every time.
    pub const max_cached_token = 160;
    /// Protocol versions are dates (10 bytes); a longer one is not cached.
    const max_cached_version = 16;

    const Entry = struct {
        generation: u64 = 0,
        token_len: u8 = 0,
        token: [max_cached_token]u8 = undefined,
        issued_ms: u64 = 0,
        accept_until_ms: u64 = 0,
        nonce: [nonce_len]u8 = undefined,
        version_len: u8 = 0,
        version: [max_cached_version]u8 = undefined,
    };

    entries: [capacity]Entry = [_]Entry{.{}} ** capacity,

    /// `verify`, answered from the cache when this token verified before
    /// under `generation` (non-zero; unique per configuration).
    pub fn check(
        self: *VerifiedCache,
        generation: u64,
        arena: Allocator,
        s: *const Sessions,
        base_path: []const u8,
        now_ms: u64,
        token: []const u8,
    ) VerifyError!Checked {
        std.debug.assert(generation != 0);
        const cacheable = token.len <= max_cached_token;
        const entry = &self.entries[@intCast(std.hash.Wyhash.hash(0, token) % capacity)];
        if (cacheable and entry.generation == generation and entry.token_len == token.len and
            sameBytes(entry.token[0..token.len], token))
        {
            try checkTimes(s, entry.issued_ms, entry.accept_until_ms, now_ms);
            // Copied: the entry may be replaced while the request still runs.
            const version = try arena.dupe(u8, entry.version[0..entry.version_len]);
            return .{ .issued_ms = entry.issued_ms, .nonce = entry.nonce, .version = version };
        }
        const v = try verify(arena, s, base_path, now_ms, token);
        if (cacheable and v.version.len <= max_cached_version) {
            entry.* = .{
                .generation = generation,
                .token_len = @intCast(token.len),
                .issued_ms = v.issued_ms,
                // `verify` found it: the id is one of `s`'s keys.
                .accept_until_ms = s.findKey(v.key_id).?.accept_until_ms,
                .nonce = v.nonce,
                .version_len = @intCast(v.version.len),
            };
            @memcpy(entry.token[0..token.len], token);
            @memcpy(entry.version[0..v.version.len], v.version);
        }
        return .{ .issued_ms = v.issued_ms, .nonce = v.nonce, .version = v.version };
    }

    /// Equal-length comparison that reads every byte: how long a miss takes
    /// says nothing about a cached token.
    fn sameBytes(a: []const u8, b: []const u8) bool {
        var diff: u8 = 0;
        for (a, b) |x, y| diff |= x ^ y;
        return diff == 0;
    }
};

/// SHA-256 with its 64 rounds in a loop. std's `Sha256` unrolls them, and
/// V8 (the engine Envoy embeds) runs that unrolled block about 15 times
/// slower than this loop: two blocks took 10 µs against 0.65 µs in Node's V8,
/// which would make checking a session cost more than the rest of a request.
/// Same interface as std's hash functions, same digests (tested).
pub const Sha256 = struct {
    pub const block_length = 64;
    pub const digest_length = 32;
    pub const Options = struct {};

    s: [8]u32,
    buf: [64]u8 = undefined,
    buf_len: u8 = 0,
    total_len: u64 = 0,

    const iv = [8]u32{ 0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19 };
    const k = [64]u32{
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    };

    pub fn init(options: Options) Sha256 {
        _ = options;
        return .{ .s = iv };
    }

    pub fn hash(data: []const u8, out: *[digest_length]u8, options: Options) void {
        var h = init(options);
        h.update(data);
        h.final(out);
    }

    pub fn update(d: *Sha256, data: []const u8) void {
        var rest = data;
        d.total_len +%= data.len;
        if (d.buf_len != 0) {
            const take = @min(rest.len, block_length - d.buf_len);
            @memcpy(d.buf[d.buf_len..][0..take], rest[0..take]);
            d.buf_len += @intCast(take);
            rest = rest[take..];
            if (d.buf_len < block_length) return;
            compress(&d.s, &d.buf);
            d.buf_len = 0;
        }
        while (rest.len >= block_length) : (rest = rest[block_length..]) compress(&d.s, rest[0..block_length]);
        @memcpy(d.buf[0..rest.len], rest);
        d.buf_len = @intCast(rest.len);
    }

    pub fn final(d: *Sha256, out: *[digest_length]u8) void {
        const bits = d.total_len *% 8;
        @memset(d.buf[d.buf_len..], 0);
        d.buf[d.buf_len] = 0x80;
        if (d.buf_len >= block_length - 8) {
            compress(&d.s, &d.buf);
            @memset(&d.buf, 0);
        }
        std.mem.writeInt(u64, d.buf[block_length - 8 ..], bits, .big);
        compress(&d.s, &d.buf);
        for (d.s, 0..) |word, i| std.mem.writeInt(u32, out[4 * i ..][0..4], word, .big);
    }

    fn compress(state: *[8]u32, block: *const [block_length]u8) void {
        var w: [64]u32 = undefined;
        for (0..16) |i| w[i] = std.mem.readInt(u32, block[4 * i ..][0..4], .big);
        for (16..64) |i| {
            const s0 = std.math.rotr(u32, w[i - 15], 7) ^ std.math.rotr(u32, w[i - 15], 18) ^ (w[i - 15] >> 3);
            const s1 = std.math.rotr(u32, w[i - 2], 17) ^ std.math.rotr(u32, w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] +% s0 +% w[i - 7] +% s1;
        }
        var a = state[0];
        var b = state[1];
        var c = state[2];
        var d = state[3];
        var e = state[4];
        var f = state[5];
        var g = state[6];
        var h = state[7];
        for (0..64) |i| {
            const t1 = h +% (std.math.rotr(u32, e, 6) ^ std.math.rotr(u32, e, 11) ^ std.math.rotr(u32, e, 25)) +%
                ((e & f) ^ (~e & g)) +% k[i] +% w[i];
            const t2 = (std.math.rotr(u32, a, 2) ^ std.math.rotr(u32, a, 13) ^ std.math.rotr(u32, a, 22)) +%
                ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d +% t1;
            d = c;
            c = b;
            b = a;
            a = t1 +% t2;
        }
        for (state, [_]u32{ a, b, c, d, e, f, g, h }) |*x, y| x.* +%= y;
    }
};

// ------------------------------------------------------------ revocation
//
// An ended session (DELETE) is recorded in the host's shared data (one
// store per Envoy, shared by its workers and every plugin of the VM id) so
// that no worker accepts its token again. The ABI cannot delete keys, so the
// records live in a fixed set of slots chosen by the nonce, and every write
// drops the records whose token has expired anyway. A slot holds at most
// `Sessions.ended_per_slot` live records (by default `revocation_slot_max`,
// ~6 MB for all slots): without that bound a client looping initialize +
// DELETE would grow Envoy's memory, and every session check copies its
// slot, for a whole TTL. A full slot drops its oldest records (they expire
// first) to take the new one: DELETE keeps working, and what is given up is
// the revocation of the oldest ended sessions on this Envoy, which then
// verify again until their TTL ends (as they do on other replicas anyway).
//
// slot value: records of 24 bytes, nonce (16) ‖ expiry unix ms (u64 LE).

pub const revocation_slots = 1024;
pub const revocation_record_len = nonce_len + 8;
pub const revocation_slot_max = 256;
/// `sessions.max_ended` by default: every slot at `revocation_slot_max`.
pub const default_max_ended: u64 = revocation_slots * revocation_slot_max;

/// Records per slot for a `sessions.max_ended` (at least 1; at most
/// `revocation_slot_max`, the bound on the memory the table can take).
pub fn endedPerSlot(max_ended: u64) u32 {
    const per_slot = std.math.divCeil(u64, max_ended, revocation_slots) catch unreachable;
    return @intCast(std.math.clamp(per_slot, 1, revocation_slot_max));
}
const revocation_prefix = "mcpgw/revoked/";
pub const RevocationKey = [revocation_prefix.len + 3]u8;

/// The shared-data key of the slot that holds `nonce`'s record.
pub fn revocationKey(nonce: [nonce_len]u8) RevocationKey {
    const slot = (@as(u16, nonce[0]) << 8 | nonce[1]) % revocation_slots;
    var key: RevocationKey = undefined;
    @memcpy(key[0..revocation_prefix.len], revocation_prefix);
    const digits = "0123456789abcdef";
    key[revocation_prefix.len] = digits[slot >> 8];
    key[revocation_prefix.len + 1] = digits[(slot >> 4) & 15];
    key[revocation_prefix.len + 2] = digits[slot & 15];
    return key;
}

/// Whether a slot value records `nonce` as ended (and not yet expired).
pub fn isRevoked(slot_value: []const u8, nonce: [nonce_len]u8, now_ms: u64) bool {
    var i: usize = 0;
    while (i + revocation_record_len <= slot_value.len) : (i += revocation_record_len) {
        const rec = slot_value[i..][0..revocation_record_len];
        if (std.mem.eql(u8, rec[0..nonce_len], &nonce) and std.mem.readInt(u64, rec[nonce_len..][0..8], .little) > now_ms) return true;
    }
    return false;
}

pub const Revoked = struct {
    /// The new slot value.
    value: []const u8,
    /// Live records dropped to make room (the oldest: earliest expiry).
    evicted: usize,
};

/// The slot value with `nonce` recorded until `expires_ms`, without the
/// records that expired by `now_ms` (and any earlier record of `nonce`),
/// and, when it already holds `slot_max` live records, without the oldest
/// of them (earliest expiry) to make room.
pub fn withRevoked(arena: Allocator, slot_value: []const u8, nonce: [nonce_len]u8, expires_ms: u64, now_ms: u64, slot_max: u32) Allocator.Error!Revoked {
    var out: std.ArrayList(u8) = try .initCapacity(arena, slot_value.len + revocation_record_len);
    var i: usize = 0;
    while (i + revocation_record_len <= slot_value.len) : (i += revocation_record_len) {
        const rec = slot_value[i..][0..revocation_record_len];
        if (std.mem.readInt(u64, rec[nonce_len..][0..8], .little) <= now_ms) continue;
        if (std.mem.eql(u8, rec[0..nonce_len], &nonce)) continue;
        out.appendSliceAssumeCapacity(rec);
    }
    var evicted: usize = 0;
    while (out.items.len / revocation_record_len >= @max(slot_max, 1)) : (evicted += 1) {
        var oldest: usize = 0;
        var oldest_expiry: u64 = std.math.maxInt(u64);
        var j: usize = 0;
        while (j < out.items.len) : (j += revocation_record_len) {
            const expiry = std.mem.readInt(u64, out.items[j + nonce_len ..][0..8], .little);
            if (expiry < oldest_expiry) {
                oldest = j;
                oldest_expiry = expiry;
            }
        }
        out.replaceRangeAssumeCapacity(oldest, revocation_record_len, &.{});
    }
    out.appendSliceAssumeCapacity(&nonce);
    var exp: [8]u8 = undefined;
    std.mem.writeInt(u64, &exp, expires_ms, .little);
    out.appendSliceAssumeCapacity(&exp);
    return .{ .value = out.items, .evicted = evicted };
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

const secret_a = [_]u8{0xa1} ** 32;
const secret_b = [_]u8{0xb2} ** 32;
const path = "/mcp/default/petstore";
const t0: u64 = 1_750_000_000_000;
const nonce_1 = [_]u8{ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };

fn oneKey(base_path: []const u8, ttl_ms: u64) Sessions {
    const keys = testing.allocator.alloc(Key, 1) catch unreachable;
    keys[0] = Key.init("k1", &secret_a, 0, base_path);
    return .{ .keys = keys, .ttl_ms = ttl_ms, .base_path = base_path };
}

fn free(s: Sessions) void {
    testing.allocator.free(s.keys);
}

test "round trip carries version, extra, nonce and issue time" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const s = oneKey(path, default_ttl_ms);
    defer free(s);

    const token = try issue(a, &s, path, t0, "2025-06-18", "", nonce_1);
    for (token) |c| try testing.expect(std.ascii.isAlphanumeric(c) or c == '-' or c == '_' or c == '.');
    try testing.expectEqual(@as(usize, 1), std.mem.count(u8, token, "."));
    // 39 payload bytes -> 52 characters, '.', 22 for the MAC (an 8-character
    // key id as the control plane makes them: 83).
    try testing.expectEqual(@as(usize, 75), token.len);

    const v = try verify(a, &s, path, t0 + 1000, token);
    try testing.expectEqualStrings("k1", v.key_id);
    try testing.expectEqualStrings("2025-06-18", v.version);
    try testing.expectEqualStrings("", v.extra);
    try testing.expectEqual(t0, v.issued_ms);
    try testing.expectEqualSlices(u8, &nonce_1, &v.nonce);
    try testing.expectEqualStrings("000102030405060708090a0b0c0d0e0f", &v.nonce_hex);
    // Same inputs, same token: nothing else goes in.
    try testing.expectEqualStrings(token, try issue(a, &s, path, t0, "2025-06-18", "", nonce_1));
}

test "the MAC is HMAC-SHA256 over tag, path and payload, truncated" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const s = oneKey(path, default_ttl_ms);
    defer free(s);
    const token = try issue(a, &s, path, t0, "2024-11-05", "x", nonce_1);
    const dot = std.mem.indexOfScalar(u8, token, '.').?;
    const payload = try a.alloc(u8, try b64.Decoder.calcSizeForSlice(token[0..dot]));
    try b64.Decoder.decode(payload, token[0..dot]);

    var msg: std.ArrayList(u8) = .empty;
    try msg.appendSlice(a, "mcpgw session v1");
    try msg.appendSlice(a, &.{ 0, 0, 0, path.len });
    try msg.appendSlice(a, path);
    try msg.appendSlice(a, payload);
    var full: [32]u8 = undefined;
    std.crypto.auth.hmac.sha2.HmacSha256.create(&full, msg.items, &secret_a);
    var mac_text: [mac_text_len]u8 = undefined;
    try testing.expectEqualStrings(b64.Encoder.encode(&mac_text, full[0..16]), token[dot + 1 ..]);
    // The payload layout.
    try testing.expectEqualSlices(u8, &.{ 1, 2, 'k', '1' }, payload[0..4]);
    try testing.expectEqual(t0, std.mem.readInt(u64, payload[4..12], .big));
    try testing.expectEqual(@as(u8, 10), payload[12]);
    try testing.expectEqualStrings("2024-11-05", payload[13..23]);
    try testing.expectEqualSlices(u8, &nonce_1, payload[23..39]);
    try testing.expectEqualStrings("x", payload[39..]);
}

test "extra with odd characters survives" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const s = oneKey(path, default_ttl_ms);
    defer free(s);
    const extras = [_][]const u8{
        "0:3f2a9c1e-7b6d-4e8f-9a0b-1c2d3e4f5a6b",
        " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        "a.b.c",
        "\x00\xff\r\n",
        "x" ** 2000,
    };
    for (extras) |extra| {
        const token = try issue(a, &s, path, t0, "2025-11-25", extra, nonce_1);
        try testing.expectEqual(@as(usize, 1), std.mem.count(u8, token, "."));
        const v = try verify(a, &s, path, t0, token);
        try testing.expectEqualStrings(extra, v.extra);
        try testing.expectEqualStrings("2025-11-25", v.version);
    }
    try testing.expectError(error.TooLong, issue(a, &s, path, t0, "v", "x" ** 4000, nonce_1));
    try testing.expectError(error.TooLong, issue(a, &s, path, t0, "v" ** 256, "", nonce_1));
}

test "tampering with any part is refused" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const s = oneKey(path, default_ttl_ms);
    defer free(s);
    const token = try issue(a, &s, path, t0, "2025-06-18", "0:abc", nonce_1);
    _ = try verify(a, &s, path, t0, token);

    // Every single character replaced by every other token character.
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    const copy = try a.dupe(u8, token);
    for (0..token.len) |i| {
        for (alphabet) |c| {
            if (c == token[i]) continue;
            copy[i] = c;
            if (verify(a, &s, path, t0, copy)) |_| {
                std.debug.print("accepted with [{d}] = {c}\n", .{ i, c });
                return error.TestUnexpectedResult;
            } else |err| try testing.expectEqual(error.Invalid, err);
        }
        copy[i] = token[i];
    }

    // Each field of the payload changed and re-encoded, keeping the MAC.
    const dot = std.mem.indexOfScalar(u8, token, '.').?;
    const payload = try a.alloc(u8, try b64.Decoder.calcSizeForSlice(token[0..dot]));
    try b64.Decoder.decode(payload, token[0..dot]);
    const fields = [_]usize{ 0, 1, 2, 5, 11, 12, 14, 25, payload.len - 1 };
    for (fields) |at| {
        const p = try a.dupe(u8, payload);
        p[at] ^= 0x01;
        const enc = try a.alloc(u8, b64.Encoder.calcSize(p.len));
        const forged = try std.mem.concat(a, u8, &.{ b64.Encoder.encode(enc, p), token[dot..] });
        try testing.expectError(error.Invalid, verify(a, &s, path, t0, forged));
    }
    // Extra appended, truncated, MAC cut or missing, junk.
    for ([_][]const u8{
        try std.mem.concat(a, u8, &.{ token[0..dot], "AA", token[dot..] }),
        try std.mem.concat(a, u8, &.{ token[0 .. dot - 4], token[dot..] }),
        token[0 .. token.len - 1],
        token[0..dot],
        token[0 .. dot + 1],
        token[dot..],
        try std.mem.concat(a, u8, &.{ token, "A" }),
        try std.mem.concat(a, u8, &.{ token, ".A" }),
        "",
        ".",
        "abc",
        "not a token at all",
        "x" ** 5000,
    }) |bad| try testing.expectError(error.Invalid, verify(a, &s, path, t0, bad));
}

test "a token is bound to its base_path" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const s = oneKey(path, default_ttl_ms);
    defer free(s);
    const other = oneKey("/mcp/default/other", default_ttl_ms);
    defer free(other);

    const token = try issue(a, &s, path, t0, "2025-06-18", "", nonce_1);
    try testing.expectError(error.Invalid, verify(a, &other, "/mcp/default/other", t0, token));
    try testing.expectError(error.Invalid, verify(a, &s, "/mcp/default/petstore2", t0, token));
    try testing.expectError(error.Invalid, verify(a, &s, "", t0, token));
    // A path the keys were not prepared for is computed from the secret,
    // with the same result as a prepared one.
    const there = try issue(a, &s, "/mcp/default/other", t0, "2025-06-18", "", nonce_1);
    _ = try verify(a, &other, "/mcp/default/other", t0, there);
    try testing.expectError(error.Invalid, verify(a, &s, path, t0, there));
}

test "expiry: ttl, accept_until and clock skew" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const s = oneKey(path, 60_000);
    defer free(s);
    const token = try issue(a, &s, path, t0, "2025-06-18", "", nonce_1);
    _ = try verify(a, &s, path, t0 + 59_999, token);
    try testing.expectError(error.Expired, verify(a, &s, path, t0 + 60_000, token));
    try testing.expectError(error.Expired, verify(a, &s, path, std.math.maxInt(u64), token));
    // Minted by a replica whose clock runs ahead: tolerated up to the skew.
    _ = try verify(a, &s, path, t0 - max_skew_ms, token);
    try testing.expectError(error.Invalid, verify(a, &s, path, t0 - max_skew_ms - 1, token));

    // A key past its accept_until refuses its tokens, however young.
    var keys = [_]Key{Key.init("k1", &secret_a, t0 + 10, path)};
    const limited = Sessions{ .keys = &keys, .ttl_ms = 60_000, .base_path = path };
    _ = try verify(a, &limited, path, t0 + 10, token);
    try testing.expectError(error.Expired, verify(a, &limited, path, t0 + 11, token));
}

test "rotation: old key verifies until accept_until, unknown ids are refused" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    var before_keys = [_]Key{Key.init("old", &secret_a, 0, path)};
    const before = Sessions{ .keys = &before_keys, .base_path = path };
    const old_token = try issue(a, &before, path, t0, "2025-06-18", "", nonce_1);

    // After rotation: the new key signs, the old one verifies for a grace period.
    var after_keys = [_]Key{ Key.init("new", &secret_b, 0, path), Key.init("old", &secret_a, t0 + 5_000, path) };
    const after = Sessions{ .keys = &after_keys, .base_path = path };
    const new_token = try issue(a, &after, path, t0 + 1, "2025-06-18", "", nonce_1);
    try testing.expectEqualStrings("old", (try verify(a, &after, path, t0 + 2, old_token)).key_id);
    try testing.expectEqualStrings("new", (try verify(a, &after, path, t0 + 2, new_token)).key_id);
    try testing.expectError(error.Expired, verify(a, &after, path, t0 + 5_001, old_token));
    _ = try verify(a, &after, path, t0 + 5_001, new_token);

    // The old key dropped: its tokens are unknown. A known id with another
    // secret does not verify either.
    var dropped_keys = [_]Key{Key.init("new", &secret_b, 0, path)};
    const dropped = Sessions{ .keys = &dropped_keys, .base_path = path };
    try testing.expectError(error.Invalid, verify(a, &dropped, path, t0 + 2, old_token));
    var swapped_keys = [_]Key{Key.init("old", &secret_b, 0, path)};
    const swapped = Sessions{ .keys = &swapped_keys, .base_path = path };
    try testing.expectError(error.Invalid, verify(a, &swapped, path, t0 + 2, old_token));
}

test "the verified cache answers like verify, and re-verifies under a new generation" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const cache = try testing.allocator.create(VerifiedCache);
    defer testing.allocator.destroy(cache);
    cache.* = .{};
    var keys = [_]Key{Key.init("k1", &secret_a, t0 + 50_000, path)};
    const s = Sessions{ .keys = &keys, .ttl_ms = 60_000, .base_path = path };
    const token = try issue(a, &s, path, t0, "2025-06-18", "", nonce_1);

    // First sight verifies; the second is a hit with the same answer.
    for (0..2) |_| {
        const c = try cache.check(1, a, &s, path, t0 + 1, token);
        try testing.expectEqual(t0, c.issued_ms);
        try testing.expectEqualSlices(u8, &nonce_1, &c.nonce);
        try testing.expectEqualStrings("2025-06-18", c.version);
    }
    // Time checks run on hits: the key retires at t0 + 50 s, the token
    // expires at t0 + 60 s, and an issue time too far ahead is refused.
    try testing.expectError(error.Expired, cache.check(1, a, &s, path, t0 + 50_001, token));
    try testing.expectError(error.Invalid, cache.check(1, a, &s, path, t0 - max_skew_ms - 1, token));
    _ = try cache.check(1, a, &s, path, t0 + 2, token);

    // Every single-character change is a different token: never a hit.
    var forged = try a.dupe(u8, token);
    for (0..forged.len) |i| {
        const orig = forged[i];
        forged[i] = if (orig == 'A') 'B' else 'A';
        try testing.expectError(error.Invalid, cache.check(1, a, &s, path, t0 + 2, forged));
        forged[i] = orig;
    }

    // A new configuration without the key: the cached entry is not used.
    var other_keys = [_]Key{Key.init("k2", &secret_b, 0, path)};
    const rotated = Sessions{ .keys = &other_keys, .ttl_ms = 60_000, .base_path = path };
    try testing.expectError(error.Invalid, cache.check(2, a, &rotated, path, t0 + 2, token));
    // Bound to its path, cached or not.
    try testing.expectError(error.Invalid, cache.check(3, a, &s, "/mcp/other/server", t0 + 2, token));

    // Tokens too long to cache still verify, every time.
    const long_extra = [_]u8{'x'} ** 100;
    const long = try issue(a, &s, path, t0, "2025-06-18", &long_extra, nonce_1);
    try testing.expect(long.len > VerifiedCache.max_cached_token);
    for (0..2) |_| _ = try cache.check(1, a, &s, path, t0 + 1, long);
}

test "key ids" {
    for ([_][]const u8{ "k", "k1a2b3c4", "A_b-9", "x" ** 32 }) |id| try testing.expect(validKeyId(id));
    for ([_][]const u8{ "", "x" ** 33, "a.b", "a b", "é", "a:b" }) |id| try testing.expect(!validKeyId(id));
}

test "revocation slots record ended sessions until they expire" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const n2 = [_]u8{0xff} ** 16;
    try testing.expectEqualStrings("mcpgw/revoked/001", &revocationKey(nonce_1));
    try testing.expectEqualStrings("mcpgw/revoked/3ff", &revocationKey(n2));

    try testing.expect(!isRevoked("", nonce_1, t0));
    const v1 = (try withRevoked(a, "", nonce_1, t0 + 100, t0, revocation_slot_max)).value;
    try testing.expectEqual(@as(usize, revocation_record_len), v1.len);
    try testing.expect(isRevoked(v1, nonce_1, t0 + 99));
    try testing.expect(!isRevoked(v1, nonce_1, t0 + 100));
    try testing.expect(!isRevoked(v1, n2, t0));

    const v2 = (try withRevoked(a, v1, n2, t0 + 500, t0, revocation_slot_max)).value;
    try testing.expect(isRevoked(v2, nonce_1, t0) and isRevoked(v2, n2, t0));
    // Recording again replaces, never duplicates.
    const v3 = (try withRevoked(a, v2, n2, t0 + 600, t0, revocation_slot_max)).value;
    try testing.expectEqual(@as(usize, 2 * revocation_record_len), v3.len);
    try testing.expect(isRevoked(v3, n2, t0 + 550));
    // Writes drop expired records.
    const v4 = (try withRevoked(a, v3, [_]u8{7} ** 16, t0 + 1000, t0 + 200, revocation_slot_max)).value;
    try testing.expectEqual(@as(usize, 2 * revocation_record_len), v4.len);
    try testing.expect(!isRevoked(v4, nonce_1, t0));
    try testing.expect(isRevoked(v4, n2, t0 + 200));
    // A torn value never reads past its end.
    try testing.expect(!isRevoked(v4[0 .. v4.len - 1], [_]u8{7} ** 16, t0));
}

test "Sha256 and its HMAC match std's for every length around the block edges" {
    var data: [300]u8 = undefined;
    for (&data, 0..) |*b, i| b.* = @truncate(i *% 131 +% 7);
    for (0..data.len) |n| {
        var ours: [32]u8 = undefined;
        var theirs: [32]u8 = undefined;
        Sha256.hash(data[0..n], &ours, .{});
        std.crypto.hash.sha2.Sha256.hash(data[0..n], &theirs, .{});
        try testing.expectEqualSlices(u8, &theirs, &ours);
        // Fed in uneven pieces.
        var h = Sha256.init(.{});
        var at: usize = 0;
        var step: usize = 1;
        while (at < n) : (step = step % 70 + 13) {
            const end = @min(n, at + step);
            h.update(data[at..end]);
            at = end;
        }
        h.final(&ours);
        try testing.expectEqualSlices(u8, &theirs, &ours);
        // HMAC with short, block-sized and long keys.
        for ([_]usize{ 0, 16, 32, 64, 65, 100 }) |key_len| {
            const key = data[data.len - key_len ..];
            HmacSha256.create(&ours, data[0..n], key);
            std.crypto.auth.hmac.sha2.HmacSha256.create(&theirs, data[0..n], key);
            try testing.expectEqualSlices(u8, &theirs, &ours);
        }
    }
    var abc: [32]u8 = undefined;
    Sha256.hash("abc", &abc, .{});
    try testing.expectEqualStrings("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", &std.fmt.bytesToHex(abc, .lower));
}

test "a full revocation slot drops its oldest records for the new one" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    var slot: []const u8 = "";
    var nonce = [_]u8{0} ** nonce_len;
    // Ended one after another: later records expire later.
    for (0..revocation_slot_max) |i| {
        std.mem.writeInt(u32, nonce[12..16], @intCast(i), .little);
        const r = try withRevoked(a, slot, nonce, 2_000 + i, 1_000, revocation_slot_max);
        try testing.expectEqual(@as(usize, 0), r.evicted);
        slot = r.value;
    }
    var first = [_]u8{0} ** nonce_len;
    std.mem.writeInt(u32, first[12..16], 0, .little);
    std.mem.writeInt(u32, nonce[12..16], 99_999, .little);
    const full = try withRevoked(a, slot, nonce, 9_000, 1_000, revocation_slot_max);
    // Still bounded; the new record is in, the oldest (first ended) is out.
    try testing.expectEqual(@as(usize, 1), full.evicted);
    try testing.expectEqual(@as(usize, revocation_slot_max * revocation_record_len), full.value.len);
    try testing.expect(isRevoked(full.value, nonce, 1_500));
    try testing.expect(!isRevoked(full.value, first, 1_500));
    // A smaller configured size (after a configuration change) trims to it.
    const small = try withRevoked(a, full.value, first, 9_500, 1_000, 2);
    try testing.expectEqual(@as(usize, revocation_slot_max - 1), small.evicted);
    try testing.expectEqual(@as(usize, 2 * revocation_record_len), small.value.len);
    try testing.expect(isRevoked(small.value, first, 1_500) and isRevoked(small.value, nonce, 1_500));
    // Once records expire, they leave without evicting anyone.
    const later = try withRevoked(a, small.value, [_]u8{9} ** nonce_len, 20_000, 9_600, 2);
    try testing.expectEqual(@as(usize, 0), later.evicted);
    try testing.expectEqual(@as(usize, revocation_record_len), later.value.len);
}

test "max_ended spreads over the slots, at least one and at most the bound per slot" {
    try testing.expectEqual(@as(u32, revocation_slot_max), endedPerSlot(default_max_ended));
    try testing.expectEqual(@as(u32, revocation_slot_max), endedPerSlot(1 << 40));
    try testing.expectEqual(@as(u32, 1), endedPerSlot(1));
    try testing.expectEqual(@as(u32, 1), endedPerSlot(revocation_slots));
    try testing.expectEqual(@as(u32, 2), endedPerSlot(revocation_slots + 1));
}
