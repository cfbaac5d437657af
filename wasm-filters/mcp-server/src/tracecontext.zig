//! W3C trace context on the filter's backend calls. They are
//! `proxy_http_call`s, which Envoy sends without the trace context its
//! tracer puts on routed requests: the filter copies the client's
//! `traceparent` and `tracestate` onto them, so the backend's work joins the
//! client's trace (its parent is the client's span; Envoy's own span is a
//! sibling under the same trace id). Only a well-formed `traceparent` is
//! copied, and `tracestate` only with it.

const std = @import("std");
const tpl = @import("template.zig");

const Header = tpl.Header;

/// The W3C Trace Context limit on `tracestate` (32 members of 512 bytes at most).
pub const max_tracestate = 512;

/// `version-traceid-parentid-flags`, lower-case hex, ids not all zero
/// (version 00's form; a later version may append fields after a dash).
pub fn validTraceparent(v: []const u8) bool {
    if (v.len < 55 or (v.len > 55 and v[55] != '-')) return false;
    if (std.mem.eql(u8, v[0..2], "ff")) return false;
    const parts = [_][2]usize{ .{ 0, 2 }, .{ 3, 35 }, .{ 36, 52 }, .{ 53, 55 } };
    for (parts, 0..) |p, i| {
        if (i > 0 and v[p[0] - 1] != '-') return false;
        var zero = true;
        for (v[p[0]..p[1]]) |c| {
            if (!std.ascii.isDigit(c) and !(c >= 'a' and c <= 'f')) return false;
            if (c != '0') zero = false;
        }
        if (zero and (i == 1 or i == 2)) return false;
    }
    return true;
}

fn validTracestate(v: []const u8) bool {
    if (v.len == 0 or v.len > max_tracestate) return false;
    for (v) |c| if (c < 0x20 or c == 0x7f) return false;
    return true;
}

/// `headers` with the client's `traceparent` (and `tracestate`) added,
/// unless `headers` already names them (a tool's own template wins).
pub fn withContext(arena: std.mem.Allocator, headers: []const Header, traceparent: ?[]const u8, tracestate: ?[]const u8) std.mem.Allocator.Error![]const Header {
    const parent = traceparent orelse return headers;
    if (!validTraceparent(parent)) return headers;
    for (headers) |h| if (std.ascii.eqlIgnoreCase(h.name, "traceparent")) return headers;
    var out: std.ArrayList(Header) = try .initCapacity(arena, headers.len + 2);
    out.appendSliceAssumeCapacity(headers);
    out.appendAssumeCapacity(.{ .name = "traceparent", .value = parent });
    if (tracestate) |st| if (validTracestate(st)) out.appendAssumeCapacity(.{ .name = "tracestate", .value = st });
    return out.items;
}

const testing = std.testing;
const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

test "a well-formed traceparent and its tracestate are added" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const base = [_]Header{.{ .name = ":method", .value = "POST" }};
    const out = try withContext(arena.allocator(), &base, good, "vendor=1");
    try testing.expectEqual(@as(usize, 3), out.len);
    try testing.expectEqualStrings(good, out[1].value);
    try testing.expectEqualStrings("tracestate", out[2].name);
}

test "a malformed traceparent, or none, adds nothing" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const base = [_]Header{.{ .name = ":method", .value = "POST" }};
    const bad = [_][]const u8{
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "short",
    };
    for (bad) |b| try testing.expectEqual(@as(usize, 1), (try withContext(arena.allocator(), &base, b, "a=b")).len);
    try testing.expectEqual(@as(usize, 1), (try withContext(arena.allocator(), &base, null, "a=b")).len);
    try testing.expect(validTraceparent(good ++ "-later"));
}

test "a tracestate with a control character or too long is dropped" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    try testing.expectEqual(@as(usize, 1), (try withContext(arena.allocator(), &.{}, good, "a=\nb")).len);
    try testing.expectEqual(@as(usize, 1), (try withContext(arena.allocator(), &.{}, good, "a" ** 513)).len);
}

test "a traceparent the tool's template set is kept" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const base = [_]Header{.{ .name = "TraceParent", .value = "mine" }};
    const out = try withContext(arena.allocator(), &base, good, null);
    try testing.expectEqualStrings("mine", out[0].value);
    try testing.expectEqual(@as(usize, 1), out.len);
}
