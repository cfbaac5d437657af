//! CORS for the browser pages a server accepts: the origins
//! `mcp.originAllowed` lets through (loopback pages, and `allowed_origins`),
//! and no other. The filter decides both, so the origin check and CORS are
//! one rule set, not two lists to keep in step.
//!
//! Why here and not Envoy's CORS filter: Envoy applies a `CorsPolicy` only
//! on routes with a route entry, and each server's route is a direct
//! response (the filter answers MCP itself; the route only says "not ready"
//! when the filter's configuration has not arrived), so Envoy would never
//! answer a preflight or add a header on it. Envoy's filter also sends no
//! `Vary: Origin`.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//! from an accepted origin is answered 204 with what the page may send; any
//! other answer to a request with an accepted `Origin` names that origin and
//! the response headers the page may read. A refused origin gets the
//! filter's 403 and no `Access-Control-*` header, so the browser reports a
//! CORS failure. No credentials mode: MCP clients send `Authorization`
//! themselves, and cookies are never needed.

const std = @import("std");
const Allocator = std.mem.Allocator;
const config = @import("config.zig");
const tpl = @import("template.zig");

const Header = tpl.Header;

pub const allow_methods = "POST, GET, DELETE, OPTIONS";
/// What Streamable HTTP clients send beyond the CORS-safelisted headers,
/// for every revision (2026-07-28 adds `Mcp-Method` and `Mcp-Name`).
pub const allow_headers = "Content-Type, Accept, Authorization, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name";
/// What clients read from answers: the session to send back, the
/// negotiated revision, and an authorization challenge a proxied server
/// may send.
pub const expose_headers = "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate";
/// Seconds a browser may reuse a preflight answer (Chromium caps it at
/// 7200); short, as the configuration may change at any time.
pub const max_age = "600";

/// An `OPTIONS` request naming the method a page wants to send: a
/// preflight (Fetch standard, "CORS-preflight request").
pub fn isPreflight(method: []const u8, request_method: ?[]const u8) bool {
    return std.mem.eql(u8, method, "OPTIONS") and request_method != null and request_method.?.len != 0;
}

/// The headers of the 204 answering a preflight from `origin` (already
/// accepted). Passthrough credentials a server takes from a header of the
/// client's request (the server's `credential_sources`) are allowed too.
pub fn preflightHeaders(arena: Allocator, sources: []const config.CredentialSource, origin: []const u8) Allocator.Error![]const Header {
    var names: std.ArrayList(u8) = .empty;
    try names.appendSlice(arena, allow_headers);
    for (sources) |src| if (src.in == .header and !listed(names.items, src.name)) {
        try names.appendSlice(arena, ", ");
        try names.appendSlice(arena, src.name);
    };
    const headers = try arena.alloc(Header, 5);
    headers[0] = .{ .name = "access-control-allow-origin", .value = origin };
    headers[1] = .{ .name = "vary", .value = "Origin" };
    headers[2] = .{ .name = "access-control-allow-methods", .value = allow_methods };
    headers[3] = .{ .name = "access-control-allow-headers", .value = names.items };
    headers[4] = .{ .name = "access-control-max-age", .value = max_age };
    return headers;
}

/// The headers every other answer to a request from `origin` (already
/// accepted) carries.
pub fn responseHeaders(origin: []const u8) [3]Header {
    return .{
        .{ .name = "access-control-allow-origin", .value = origin },
        .{ .name = "vary", .value = "Origin" },
        .{ .name = "access-control-expose-headers", .value = expose_headers },
    };
}

/// Whether the comma-separated `list` names header `name` (any case).
fn listed(list: []const u8, name: []const u8) bool {
    var it = std.mem.splitScalar(u8, list, ',');
    while (it.next()) |item| {
        if (std.ascii.eqlIgnoreCase(std.mem.trim(u8, item, " "), name)) return true;
    }
    return false;
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

test "a preflight is OPTIONS with Access-Control-Request-Method" {
    try testing.expect(isPreflight("OPTIONS", "POST"));
    try testing.expect(!isPreflight("OPTIONS", null));
    try testing.expect(!isPreflight("OPTIONS", ""));
    try testing.expect(!isPreflight("POST", "POST"));
}

test "preflight headers name the origin and allow the MCP headers and header credentials once" {
    var state = std.heap.ArenaAllocator.init(testing.allocator);
    defer state.deinit();
    const arena = state.allocator();
    const sources = [_]config.CredentialSource{
        .{ .in = .header, .name = "X-Api-Key" },
        .{ .in = .header, .name = "authorization" },
        .{ .in = .query, .name = "key" },
    };
    const h = try preflightHeaders(arena, &sources, "https://app.example.com");
    try testing.expectEqualStrings("https://app.example.com", tpl.findHeader(h, "access-control-allow-origin").?);
    try testing.expectEqualStrings("Origin", tpl.findHeader(h, "vary").?);
    try testing.expectEqualStrings("POST, GET, DELETE, OPTIONS", tpl.findHeader(h, "access-control-allow-methods").?);
    try testing.expectEqualStrings(allow_headers ++ ", X-Api-Key", tpl.findHeader(h, "access-control-allow-headers").?);
    try testing.expectEqualStrings("600", tpl.findHeader(h, "access-control-max-age").?);
    const r = responseHeaders("http://127.0.0.1:5173");
    try testing.expectEqualStrings("http://127.0.0.1:5173", tpl.findHeader(&r, "access-control-allow-origin").?);
    try testing.expectEqualStrings("Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate", tpl.findHeader(&r, "access-control-expose-headers").?);
}
