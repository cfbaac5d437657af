//! Execution of the pre-compiled templates of CONFIG.md: a template is a list
//! of parts (literal text, argument value, upstream JSON value, upstream
//! status, upstream header) rendered with an encoding. The control plane did
//! all parsing; this file only looks values up and writes them.

const std = @import("std");
const Value = std.json.Value;
const ObjectMap = std.json.ObjectMap;
const Out = @import("jsonw.zig").Out;

pub const Enc = enum { raw, json, path, query };

/// A path into a JSON document. For arguments the first element is the
/// argument name; for upstream documents `[]` is the whole document.
pub const Ref = struct {
    path: []const []const u8,
    enc: Enc = .raw,
};

pub const HeaderRef = struct {
    name: []const u8,
    enc: Enc = .raw,
};

pub const Part = union(enum) {
    lit: []const u8,
    arg: Ref,
    resp: Ref,
    status: Enc,
    resp_header: HeaderRef,
};

pub const Header = struct {
    name: []const u8,
    value: []const u8,
};

/// What a template can see. Request-side templates only have `args`;
/// response templates also have the upstream answer.
pub const Context = struct {
    args: ?*const ObjectMap = null,
    /// Parsed upstream body; null when absent or not JSON.
    resp: ?Value = null,
    status: ?u32 = null,
    headers: []const Header = &.{},
};

pub fn render(out: *Out, parts: []const Part, ctx: *const Context) std.mem.Allocator.Error!void {
    for (parts) |part| switch (part) {
        .lit => |s| try out.add(s),
        .arg => |r| {
            const root: ?Value = if (ctx.args) |a| a.get(r.path[0]) else null;
            const v = if (root) |rv| lookup(rv, r.path[1..]) else null;
            try writeValue(out, v, r.enc);
        },
        .resp => |r| {
            const v = if (ctx.resp) |doc| lookup(doc, r.path) else null;
            try writeValue(out, v, r.enc);
        },
        .status => |enc| if (ctx.status) |s| {
            var buf: [12]u8 = undefined;
            const text = std.fmt.bufPrint(&buf, "{d}", .{s}) catch unreachable;
            // A number: every encoding leaves digits unchanged.
            _ = enc;
            try out.add(text);
        },
        .resp_header => |h| {
            const v = findHeader(ctx.headers, h.name);
            if (v) |text| {
                try writeText(out, text, h.enc);
            } else if (h.enc == .json) {
                try out.add("null");
            }
        },
    };
}

/// Whether any part reads the upstream JSON body, so the filter parses it
/// only when a template needs it.
pub fn usesResp(parts: []const Part) bool {
    for (parts) |p| if (p == .resp) return true;
    return false;
}

pub fn findHeader(headers: []const Header, name: []const u8) ?[]const u8 {
    for (headers) |h| {
        if (std.ascii.eqlIgnoreCase(h.name, name)) return h.value;
    }
    return null;
}

/// Follows object keys and array indexes ("0", "1", ...) from `root`.
pub fn lookup(root: Value, path: []const []const u8) ?Value {
    var cur = root;
    for (path) |key| {
        switch (cur) {
            .object => |o| cur = o.get(key) orelse return null,
            .array => |a| {
                const idx = std.fmt.parseUnsigned(usize, key, 10) catch return null;
                if (idx >= a.items.len) return null;
                cur = a.items[idx];
            },
            else => return null,
        }
    }
    return cur;
}

/// Writes a looked-up value with an encoding. A missing value is empty,
/// except with `json`, where it is `null` so JSON bodies stay well-formed.
pub fn writeValue(out: *Out, v: ?Value, enc: Enc) std.mem.Allocator.Error!void {
    const val = v orelse {
        if (enc == .json) try out.add("null");
        return;
    };
    switch (enc) {
        .json => try out.value(val),
        .raw => try writeRaw(out, val),
        .path, .query => switch (val) {
            // A lone "." or ".." segment would let an argument climb the backend's
            // path once it normalises; encoded dots stay one literal segment.
            .string => |s| if (enc == .path and isDotSegment(s)) {
                for (s) |_| try out.add("%2E");
            } else try out.percent(s),
            else => {
                // Render the JSON literal first, then encode it in place.
                const start = out.list.items.len;
                try writeRaw(out, val);
                const n = out.list.items.len - start;
                var small: [64]u8 = undefined;
                if (n <= small.len) {
                    @memcpy(small[0..n], out.list.items[start..]);
                    out.list.shrinkRetainingCapacity(start);
                    try out.percent(small[0..n]);
                } else {
                    const copy = try out.gpa.dupe(u8, out.list.items[start..]);
                    defer out.gpa.free(copy);
                    out.list.shrinkRetainingCapacity(start);
                    try out.percent(copy);
                }
            },
        },
    }
}

fn isDotSegment(s: []const u8) bool {
    return std.mem.eql(u8, s, ".") or std.mem.eql(u8, s, "..");
}

/// `raw`: strings as their characters, everything else as compact JSON.
pub fn writeRaw(out: *Out, v: Value) std.mem.Allocator.Error!void {
    switch (v) {
        .string => |s| try out.add(s),
        else => try out.value(v),
    }
}

pub fn writeText(out: *Out, s: []const u8, enc: Enc) std.mem.Allocator.Error!void {
    switch (enc) {
        .raw => try out.add(s),
        .json => try out.str(s),
        .path, .query => try out.percent(s),
    }
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

fn parseValue(arena: std.mem.Allocator, s: []const u8) !Value {
    return std.json.parseFromSliceLeaky(Value, arena, s, .{ .parse_numbers = false });
}

fn renderToString(arena: std.mem.Allocator, parts: []const Part, ctx: *const Context) ![]const u8 {
    var out = Out.init(arena);
    try render(&out, parts, ctx);
    return out.bytes();
}

test "arguments with every encoding" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    const args = try parseValue(arena,
        \\{"id": "a b/../\u00e9?&=", "n": 42, "f": 1.50, "b": true, "o": {"k": [1, "x"]}, "s": "q\"uote"}
    );
    const ctx = Context{ .args = &args.object };

    const P = Part;
    try testing.expectEqualStrings("/v1/a%20b%2F..%2F%C3%A9%3F%26%3D", try renderToString(arena, &[_]P{
        .{ .lit = "/v1/" }, .{ .arg = .{ .path = &.{"id"}, .enc = .path } },
    }, &ctx));
    try testing.expectEqualStrings("a b/../\u{e9}?&=|42|1.50|true|{\"k\":[1,\"x\"]}", try renderToString(arena, &[_]P{
        .{ .arg = .{ .path = &.{"id"} } }, .{ .lit = "|" },
        .{ .arg = .{ .path = &.{"n"} } },  .{ .lit = "|" },
        .{ .arg = .{ .path = &.{"f"} } },  .{ .lit = "|" },
        .{ .arg = .{ .path = &.{"b"} } },  .{ .lit = "|" },
        .{ .arg = .{ .path = &.{"o"} } },
    }, &ctx));
    try testing.expectEqualStrings("\"q\\\"uote\" 42 {\"k\":[1,\"x\"]} null", try renderToString(arena, &[_]P{
        .{ .arg = .{ .path = &.{"s"}, .enc = .json } },       .{ .lit = " " },
        .{ .arg = .{ .path = &.{"n"}, .enc = .json } },       .{ .lit = " " },
        .{ .arg = .{ .path = &.{"o"}, .enc = .json } },       .{ .lit = " " },
        .{ .arg = .{ .path = &.{"missing"}, .enc = .json } },
    }, &ctx));
    // Objects are rendered as compact JSON, then encoded.
    try testing.expectEqualStrings("%7B%22k%22%3A%5B1%2C%22x%22%5D%7D", try renderToString(arena, &[_]P{
        .{ .arg = .{ .path = &.{"o"}, .enc = .query } },
    }, &ctx));
}

test "nested argument paths and missing values" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    const args = try parseValue(arena,
        \\{"owner": {"name": "ann", "tags": ["x", "y"]}}
    );
    const ctx = Context{ .args = &args.object };
    try testing.expectEqualStrings("ann/y/||", try renderToString(arena, &[_]Part{
        .{ .arg = .{ .path = &.{ "owner", "name" } } },           .{ .lit = "/" },
        .{ .arg = .{ .path = &.{ "owner", "tags", "1" } } },      .{ .lit = "/" },
        .{ .arg = .{ .path = &.{ "owner", "tags", "9" } } },      .{ .lit = "|" },
        .{ .arg = .{ .path = &.{ "owner", "name", "deeper" } } }, .{ .lit = "|" },
        .{ .arg = .{ .path = &.{"nope"} } },
    }, &ctx));
    // No arguments at all (response-only context) renders empty.
    const empty = Context{};
    try testing.expectEqualStrings("", try renderToString(arena, &[_]Part{.{ .arg = .{ .path = &.{"x"} } }}, &empty));
}

test "response values, whole document, status and headers" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    const doc = try parseValue(arena,
        \\{"data": [{"name": "Rex", "age": 3}], "ok": true}
    );
    const ctx = Context{
        .resp = doc,
        .status = 404,
        .headers = &.{ .{ .name = "x-request-id", .value = "r 1" }, .{ .name = "content-type", .value = "application/json" } },
    };
    try testing.expectEqualStrings("Rex is 3; 404; r%201; r 1; \"r 1\"; ; {\"data\":[{\"name\":\"Rex\",\"age\":3}],\"ok\":true}", try renderToString(arena, &[_]Part{
        .{ .resp = .{ .path = &.{ "data", "0", "name" } } },            .{ .lit = " is " },
        .{ .resp = .{ .path = &.{ "data", "0", "age" } } },             .{ .lit = "; " },
        .{ .status = .raw },                                            .{ .lit = "; " },
        .{ .resp_header = .{ .name = "X-Request-Id", .enc = .query } }, .{ .lit = "; " },
        .{ .resp_header = .{ .name = "x-request-id" } },                .{ .lit = "; " },
        .{ .resp_header = .{ .name = "x-request-id", .enc = .json } },  .{ .lit = "; " },
        .{ .resp_header = .{ .name = "absent" } },                      .{ .lit = "; " },
        .{ .resp = .{ .path = &.{} } },
    }, &ctx));
    try testing.expect(usesResp(&[_]Part{ .{ .lit = "a" }, .{ .resp = .{ .path = &.{} } } }));
    try testing.expect(!usesResp(&[_]Part{ .{ .lit = "a" }, .{ .status = .raw } }));
}

test "long non-string values are percent-encoded correctly" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    const args = try parseValue(arena,
        \\{"a": ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}
    );
    const ctx = Context{ .args = &args.object };
    const got = try renderToString(arena, &[_]Part{ .{ .lit = "x=" }, .{ .arg = .{ .path = &.{"a"}, .enc = .query } } }, &ctx);
    try testing.expect(std.mem.startsWith(u8, got, "x=%5B%22aaaa"));
    try testing.expect(std.mem.endsWith(u8, got, "aaa%22%5D"));
}
