//! Output side of JSON and URL encoding: a growable byte buffer with the few
//! writers the filter needs. Kept separate from `std.json.Stringify` so that
//! invalid UTF-8 coming from upstream bodies is repaired (U+FFFD) instead of
//! producing an invalid JSON document, and so that numbers kept as their
//! original text (`.number_string`) are written back byte for byte.

const std = @import("std");
const Allocator = std.mem.Allocator;
const Value = std.json.Value;

pub const Out = struct {
    list: std.ArrayList(u8) = .empty,
    gpa: Allocator,

    pub fn init(gpa: Allocator) Out {
        return .{ .gpa = gpa };
    }

    pub fn initCapacity(gpa: Allocator, n: usize) Allocator.Error!Out {
        return .{ .gpa = gpa, .list = try .initCapacity(gpa, n) };
    }

    pub fn bytes(self: *const Out) []const u8 {
        return self.list.items;
    }

    /// The buffer keeps ownership; with an arena this is free.
    pub fn toOwned(self: *Out) Allocator.Error![]u8 {
        return self.list.toOwnedSlice(self.gpa);
    }

    pub fn add(self: *Out, s: []const u8) Allocator.Error!void {
        try self.list.appendSlice(self.gpa, s);
    }

    pub fn byte(self: *Out, c: u8) Allocator.Error!void {
        try self.list.append(self.gpa, c);
    }

    pub fn int(self: *Out, n: anytype) Allocator.Error!void {
        var buf: [24]u8 = undefined;
        const s = std.fmt.bufPrint(&buf, "{d}", .{n}) catch unreachable;
        try self.add(s);
    }

    /// Formatted text. Uses only fixed-buffer formatting: `std.fmt.allocPrint`
    /// and `std.fmt.count` pull in file-backed writer code that imports WASI
    /// functions Envoy does not provide.
    pub fn print(self: *Out, comptime fmt: []const u8, args: anytype) Allocator.Error!void {
        var want: usize = 64;
        while (true) {
            try self.list.ensureUnusedCapacity(self.gpa, want);
            const free = self.list.unusedCapacitySlice();
            if (std.fmt.bufPrint(free, fmt, args)) |written| {
                self.list.items.len += written.len;
                return;
            } else |_| {
                want = free.len * 2;
            }
        }
    }

    /// A JSON string literal (with quotes).
    pub fn str(self: *Out, s: []const u8) Allocator.Error!void {
        try self.byte('"');
        try self.strBody(s);
        try self.byte('"');
    }

    /// The escaped characters of a JSON string, without quotes. Control
    /// characters are escaped, valid UTF-8 is copied, and every byte that is
    /// not part of a valid UTF-8 sequence becomes U+FFFD so the output always
    /// parses.
    pub fn strBody(self: *Out, s: []const u8) Allocator.Error!void {
        // Worst case grows 6x for control characters; reserve the common case.
        try self.list.ensureUnusedCapacity(self.gpa, s.len + 2);
        var start: usize = 0;
        var i: usize = 0;
        while (i < s.len) {
            const c = s[i];
            if (c >= 0x20 and c < 0x80 and c != '"' and c != '\\') {
                i += 1;
                continue;
            }
            if (c >= 0x80) {
                if (validSequenceLen(s[i..])) |n| {
                    i += n;
                    continue;
                }
            }
            try self.add(s[start..i]);
            switch (c) {
                '"' => try self.add("\\\""),
                '\\' => try self.add("\\\\"),
                '\n' => try self.add("\\n"),
                '\r' => try self.add("\\r"),
                '\t' => try self.add("\\t"),
                0x08 => try self.add("\\b"),
                0x0c => try self.add("\\f"),
                0x00...0x07, 0x0b, 0x0e...0x1f => {
                    const hex = "0123456789abcdef";
                    try self.add(&.{ '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] });
                },
                else => try self.add("\u{FFFD}"),
            }
            i += 1;
            start = i;
        }
        try self.add(s[start..]);
    }

    /// Compact JSON serialisation of a parsed value. Numbers parsed with
    /// `parse_numbers = false` are written verbatim.
    pub fn value(self: *Out, v: Value) Allocator.Error!void {
        switch (v) {
            .null => try self.add("null"),
            .bool => |b| try self.add(if (b) "true" else "false"),
            .integer => |n| try self.int(n),
            .float => |f| {
                var buf: [64]u8 = undefined;
                const s = std.fmt.bufPrint(&buf, "{e}", .{f}) catch unreachable;
                try self.add(s);
            },
            .number_string => |s| try self.add(s),
            .string => |s| try self.str(s),
            .array => |a| {
                try self.byte('[');
                for (a.items, 0..) |item, idx| {
                    if (idx != 0) try self.byte(',');
                    try self.value(item);
                }
                try self.byte(']');
            },
            .object => |o| {
                try self.byte('{');
                var it = o.iterator();
                var first = true;
                while (it.next()) |e| {
                    if (!first) try self.byte(',');
                    first = false;
                    try self.str(e.key_ptr.*);
                    try self.byte(':');
                    try self.value(e.value_ptr.*);
                }
                try self.byte('}');
            },
        }
    }

    /// Percent-encodes `s`, keeping only RFC 3986 unreserved characters, so
    /// the result is safe both as one path segment (`/` is encoded) and as a
    /// query component (space is `%20`, `&`, `=`, `+` are encoded).
    pub fn percent(self: *Out, s: []const u8) Allocator.Error!void {
        const hex = "0123456789ABCDEF";
        try self.list.ensureUnusedCapacity(self.gpa, s.len);
        for (s) |c| {
            if (isUnreserved(c)) {
                try self.byte(c);
            } else {
                try self.add(&.{ '%', hex[c >> 4], hex[c & 15] });
            }
        }
    }

    /// Go's `url.QueryEscape` (templates' `urlquery`): `percent`, except
    /// that a space becomes `+`.
    pub fn formEncode(self: *Out, s: []const u8) Allocator.Error!void {
        var start: usize = 0;
        for (s, 0..) |c, i| {
            if (c != ' ') continue;
            try self.percent(s[start..i]);
            try self.byte('+');
            start = i + 1;
        }
        try self.percent(s[start..]);
    }
};

pub fn isUnreserved(c: u8) bool {
    return switch (c) {
        'A'...'Z', 'a'...'z', '0'...'9', '-', '.', '_', '~' => true,
        else => false,
    };
}

/// Length of the valid UTF-8 sequence at the start of `s`, or null.
fn validSequenceLen(s: []const u8) ?usize {
    const n = std.unicode.utf8ByteSequenceLength(s[0]) catch return null;
    if (n > s.len) return null;
    _ = std.unicode.utf8Decode(s[0..n]) catch return null;
    return n;
}

/// `std.fmt.allocPrint` without the WASI imports (see `Out.print`).
pub fn allocPrint(gpa: Allocator, comptime fmt: []const u8, args: anytype) Allocator.Error![]u8 {
    var out = Out.init(gpa);
    try out.print(fmt, args);
    return out.toOwned();
}

/// Serialises `v` compactly into a new slice.
pub fn stringifyAlloc(gpa: Allocator, v: Value) Allocator.Error![]u8 {
    var out = Out.init(gpa);
    try out.value(v);
    return out.toOwned();
}

/// Whether the arrays and objects of the JSON text `s` nest at most `max`
/// levels deep. A byte scan (brackets inside strings do not count), run
/// before parsing: std.json parses deep nesting iteratively but allocates
/// per level (a 1 MiB body of `[` grew a VM's memory by 258 MiB, which Wasm
/// never gives back), and every serialiser here recurses once per level.
/// Text that is not JSON passes when it does not nest too deep; the parser
/// then says what is wrong with it.
pub fn nestingWithin(s: []const u8, max: u32) bool {
    var depth: u32 = 0;
    var i: usize = 0;
    while (i < s.len) : (i += 1) {
        switch (s[i]) {
            '[', '{' => {
                depth += 1;
                if (depth > max) return false;
            },
            ']', '}' => depth -|= 1,
            '"' => {
                // Skip the string: up to the next quote not escaped.
                i += 1;
                while (i < s.len and s[i] != '"') : (i += 1) {
                    if (s[i] == '\\') i += 1;
                }
            },
            else => {},
        }
    }
    return true;
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

fn escaped(s: []const u8) ![]u8 {
    var out = Out.init(testing.allocator);
    errdefer out.list.deinit(testing.allocator);
    try out.str(s);
    return out.toOwned();
}

test "json string escapes quotes, backslash and control characters" {
    const got = try escaped("a\"b\\c\n\r\t\x08\x0c\x00\x1f\x7f");
    defer testing.allocator.free(got);
    try testing.expectEqualStrings("\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0000\\u001f\x7f\"", got);
}

test "json string keeps valid unicode and repairs invalid UTF-8" {
    const got = try escaped("h\u{e9}llo \u{1F600} \u{2028}");
    defer testing.allocator.free(got);
    try testing.expectEqualStrings("\"h\u{e9}llo \u{1F600} \u{2028}\"", got);

    // Lone continuation byte, truncated sequence, overlong encoding, surrogate.
    const bad = try escaped("a\x80b\xe2\x82c\xc0\xafd\xed\xa0\x80");
    defer testing.allocator.free(bad);
    try testing.expect(std.unicode.utf8ValidateSlice(bad));
    try testing.expectEqualStrings("\"a\u{FFFD}b\u{FFFD}\u{FFFD}c\u{FFFD}\u{FFFD}d\u{FFFD}\u{FFFD}\u{FFFD}\"", bad);
}

test "value serialisation is compact and keeps number text verbatim" {
    const src = "{ \"a\" : [1, 2.50, -0, 1e400, 123456789012345678901234567890], \"b\": {\"c\": null, \"d\": true}, \"e\": \"x\\u0001\" }";
    const parsed = try std.json.parseFromSlice(Value, testing.allocator, src, .{ .parse_numbers = false });
    defer parsed.deinit();
    const got = try stringifyAlloc(testing.allocator, parsed.value);
    defer testing.allocator.free(got);
    try testing.expectEqualStrings("{\"a\":[1,2.50,-0,1e400,123456789012345678901234567890],\"b\":{\"c\":null,\"d\":true},\"e\":\"x\\u0001\"}", got);
}

test "print grows as needed" {
    const long = "x" ** 300;
    const got = try allocPrint(testing.allocator, "{s}-{d}", .{ long, 42 });
    defer testing.allocator.free(got);
    try testing.expectEqualStrings(long ++ "-42", got);
}

test "percent encoding keeps only unreserved characters" {
    var out = Out.init(testing.allocator);
    defer out.list.deinit(testing.allocator);
    try out.percent("a b/../c?d=e&f+g~h_i.j-k\u{e9}%");
    try testing.expectEqualStrings("a%20b%2F..%2Fc%3Fd%3De%26f%2Bg~h_i.j-k%C3%A9%25", out.bytes());
}

test "form encoding turns spaces into plus" {
    var out = Out.init(testing.allocator);
    defer out.list.deinit(testing.allocator);
    try out.formEncode(" a b+c  ");
    try testing.expectEqualStrings("+a+b%2Bc++", out.bytes());
}

test "nesting depth counts brackets outside strings only" {
    try testing.expect(nestingWithin("", 0));
    try testing.expect(nestingWithin("1", 0));
    try testing.expect(!nestingWithin("[]", 0));
    try testing.expect(nestingWithin("[[{}],{\"a\":[1]}]", 3));
    try testing.expect(!nestingWithin("[[{}],{\"a\":[[1]]}]", 3));
    // Brackets in strings, escaped quotes and backslashes do not count.
    try testing.expect(nestingWithin("{\"[[[[\":\"{{{{\\\"[[[\"}", 1));
    try testing.expect(nestingWithin("[\"\\\\\",[1]]", 2));
    try testing.expect(!nestingWithin("[\"\\\\\",[[1]]]", 2));
    // Unbalanced or unterminated text is the parser's to refuse.
    try testing.expect(nestingWithin("]]]]{", 1));
    try testing.expect(nestingWithin("[\"[[[[", 1));
    const deep = "[" ** 100_000 ++ "]" ** 100_000;
    try testing.expect(!nestingWithin(deep, 64));
    try testing.expect(nestingWithin(deep, 100_000));
}
