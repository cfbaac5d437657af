//! JSON value semantics shared by templates and argument validation:
//! equality (numbers by value), Go-template truthiness and "raw text".
//! Values come from parsing with `parse_numbers = false`, so numbers are
//! usually `.number_string`; comparisons work on the decimal text so that
//! integers of any length compare exactly.

const std = @import("std");
const Allocator = std.mem.Allocator;
const Value = std.json.Value;
const Out = @import("jsonw.zig").Out;

/// Go template truthiness; `null` (the optional) is a missing value.
pub fn truthy(v: ?Value) bool {
    const val = v orelse return false;
    return switch (val) {
        .null => false,
        .bool => |b| b,
        .integer => |n| n != 0,
        .float => |f| f != 0,
        .number_string => |s| if (Decimal.parse(s)) |d| !d.isZero() else true,
        .string => |s| s.len != 0,
        .array => |a| a.items.len != 0,
        .object => |o| o.count() != 0,
    };
}

/// JSON equality: numbers by value whatever their spelling (`1` = `1.0` =
/// `1e0`), strings byte for byte, arrays element-wise, objects as unordered
/// key sets. A value never equals one of another JSON type.
pub fn equal(a: Value, b: Value) bool {
    var abuf: [64]u8 = undefined;
    var bbuf: [64]u8 = undefined;
    if (numberText(a, &abuf)) |at| {
        const bt = numberText(b, &bbuf) orelse return false;
        return numbersEqual(at, bt);
    }
    return switch (a) {
        .null => b == .null,
        .bool => |x| b == .bool and b.bool == x,
        .string => |x| b == .string and std.mem.eql(u8, x, b.string),
        .array => |x| {
            if (b != .array or b.array.items.len != x.items.len) return false;
            for (x.items, b.array.items) |p, q| if (!equal(p, q)) return false;
            return true;
        },
        .object => |x| {
            if (b != .object or b.object.count() != x.count()) return false;
            var it = x.iterator();
            while (it.next()) |e| {
                const other = b.object.get(e.key_ptr.*) orelse return false;
                if (!equal(e.value_ptr.*, other)) return false;
            }
            return true;
        },
        .integer, .float, .number_string => unreachable,
    };
}

fn numberText(v: Value, buf: *[64]u8) ?[]const u8 {
    return switch (v) {
        .number_string => |s| s,
        .integer => |n| std.fmt.bufPrint(buf, "{d}", .{n}) catch unreachable,
        .float => |f| std.fmt.bufPrint(buf, "{e}", .{f}) catch unreachable,
        else => null,
    };
}

/// Exact comparison of two JSON number texts. Text that is not a JSON
/// number only equals the same text.
pub fn numbersEqual(a: []const u8, b: []const u8) bool {
    const x = Decimal.parse(a) orelse return std.mem.eql(u8, a, b);
    const y = Decimal.parse(b) orelse return false;
    return x.eql(y);
}

/// The longest plain decimal form `canonicalNumber` writes: an integer has
/// at most this many digits (else it is refused), a number with more digits
/// in plain form is written in exponent form instead. It bounds what an
/// exponent can expand to (`1E+999999999` is 10 bytes of input).
pub const max_number_digits = 64;

pub const Canonical = union(enum) {
    ok: []const u8,
    /// `integer` asked for and the value has a fractional part.
    not_integer,
    /// An integer of more than `max_number_digits` digits, or an exponent
    /// beyond any representable range.
    out_of_range,
};

/// The one spelling of a JSON number forwarded to backends, so that `1.0`,
/// `1E+2` and `-0` reach them as `1`, `100` and `0`. Exact (decimal, never
/// through binary floating point): trailing fractional zeros and leading
/// integer zeros go, the exponent is applied. With `integer` the result is
/// plain digits; otherwise plain decimal when it fits `max_number_digits`
/// digits, else `d.ddde+N` (the significant digits as given, so the output
/// is never much longer than the input). Text that is not a JSON number is
/// `out_of_range` (the parser never hands us one).
pub fn canonicalNumber(arena: Allocator, s: []const u8, integer: bool) Allocator.Error!Canonical {
    const d = Decimal.parse(s) orelse return .out_of_range;
    // `parse` saturates the exponent: anything this large is no real number.
    if (d.exp >= 1 << 40 or d.exp <= -(1 << 40)) return .out_of_range;
    const sig = d.significant() orelse return .{ .ok = "0" };
    const n: i64 = @intCast(sig[1] - sig[0]);
    // The value is 0.DIGITS x 10^point, DIGITS being the significant digits.
    const point: i64 = @as(i64, @intCast(d.int.len)) + d.exp - @as(i64, @intCast(sig[0]));
    if (integer and point < n) return .not_integer;
    const plain_digits: i64 = if (point >= n) point else if (point > 0) n else n - point + 1;
    if (plain_digits > max_number_digits) {
        if (integer) return .out_of_range;
        var out = try Out.initCapacity(arena, @intCast(n + 24));
        if (d.neg) try out.byte('-');
        try out.byte(d.digit(sig[0]));
        if (n > 1) {
            try out.byte('.');
            for (sig[0] + 1..sig[1]) |k| try out.byte(d.digit(k));
        }
        try out.print("e{s}{d}", .{ if (point - 1 < 0) "-" else "+", @abs(point - 1) });
        return .{ .ok = out.bytes() };
    }
    var out = try Out.initCapacity(arena, @intCast(plain_digits + 2));
    if (d.neg) try out.byte('-');
    if (point <= 0) {
        try out.add("0.");
        for (0..@intCast(-point)) |_| try out.byte('0');
        for (sig[0]..sig[1]) |k| try out.byte(d.digit(k));
    } else {
        for (0..@intCast(point)) |i| {
            const k = sig[0] + i;
            try out.byte(if (k < sig[1]) d.digit(k) else '0');
        }
        if (point < n) {
            try out.byte('.');
            for (sig[0] + @as(usize, @intCast(point))..sig[1]) |k| try out.byte(d.digit(k));
        }
    }
    return .{ .ok = out.bytes() };
}

/// A JSON number split into its parts, compared without converting to
/// binary floating point (which would equate distinct large integers).
const Decimal = struct {
    neg: bool,
    int: []const u8,
    frac: []const u8,
    exp: i64,

    fn parse(s: []const u8) ?Decimal {
        var i: usize = 0;
        var d = Decimal{ .neg = false, .int = "", .frac = "", .exp = 0 };
        if (i < s.len and s[i] == '-') {
            d.neg = true;
            i += 1;
        }
        const int_start = i;
        while (i < s.len and std.ascii.isDigit(s[i])) i += 1;
        d.int = s[int_start..i];
        if (d.int.len == 0) return null;
        if (i < s.len and s[i] == '.') {
            i += 1;
            const frac_start = i;
            while (i < s.len and std.ascii.isDigit(s[i])) i += 1;
            d.frac = s[frac_start..i];
            if (d.frac.len == 0) return null;
        }
        if (i < s.len and (s[i] == 'e' or s[i] == 'E')) {
            i += 1;
            var exp_neg = false;
            if (i < s.len and (s[i] == '+' or s[i] == '-')) {
                exp_neg = s[i] == '-';
                i += 1;
            }
            const exp_start = i;
            while (i < s.len and std.ascii.isDigit(s[i])) : (i += 1) {
                // Saturate: any exponent this large already decides the comparison.
                if (d.exp < 1 << 40) d.exp = d.exp * 10 + (s[i] - '0');
            }
            if (i == exp_start) return null;
            if (exp_neg) d.exp = -d.exp;
        }
        if (i != s.len) return null;
        return d;
    }

    fn digit(d: Decimal, k: usize) u8 {
        return if (k < d.int.len) d.int[k] else d.frac[k - d.int.len];
    }

    fn len(d: Decimal) usize {
        return d.int.len + d.frac.len;
    }

    /// Index of the first and one past the last significant (non-zero) digit.
    fn significant(d: Decimal) ?[2]usize {
        var first: usize = 0;
        while (first < d.len() and d.digit(first) == '0') first += 1;
        if (first == d.len()) return null;
        var end = d.len();
        while (d.digit(end - 1) == '0') end -= 1;
        return .{ first, end };
    }

    fn isZero(d: Decimal) bool {
        return d.significant() == null;
    }

    fn eql(x: Decimal, y: Decimal) bool {
        const sx = x.significant() orelse return y.isZero();
        const sy = y.significant() orelse return false;
        if (x.neg != y.neg) return false;
        // Position of the decimal point relative to the first significant digit.
        const px = @as(i64, @intCast(x.int.len)) + x.exp - @as(i64, @intCast(sx[0]));
        const py = @as(i64, @intCast(y.int.len)) + y.exp - @as(i64, @intCast(sy[0]));
        if (px != py or sx[1] - sx[0] != sy[1] - sy[0]) return false;
        for (0..sx[1] - sx[0]) |k| {
            if (x.digit(sx[0] + k) != y.digit(sy[0] + k)) return false;
        }
        return true;
    }
};

/// Text of a value as templates print it with `raw`: a string as its
/// characters, anything else as compact JSON, missing as empty.
pub fn rawText(arena: Allocator, v: ?Value) Allocator.Error![]const u8 {
    const val = v orelse return "";
    return switch (val) {
        .string => |s| s,
        .number_string => |s| s,
        .bool => |b| if (b) "true" else "false",
        .null => "null",
        else => {
            var out = Out.init(arena);
            try out.value(val);
            return out.bytes();
        },
    };
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

fn parse(arena: Allocator, s: []const u8) !Value {
    return std.json.parseFromSliceLeaky(Value, arena, s, .{ .parse_numbers = false });
}

test "numbers compare by value, exactly" {
    const same = [_][2][]const u8{
        .{ "1", "1.0" },        .{ "1", "1e0" },        .{ "100", "1e2" },
        .{ "100", "1.00E+2" },  .{ "0.001", "1e-3" },   .{ "0", "-0" },
        .{ "0", "0.000e99" },   .{ "-2.50", "-25e-1" }, .{ "12345678901234567890", "12345678901234567890.000" },
        .{ "1e400", "10e399" },
    };
    for (same) |c| {
        try testing.expect(numbersEqual(c[0], c[1]));
        try testing.expect(numbersEqual(c[1], c[0]));
    }
    const differ = [_][2][]const u8{
        .{ "1", "2" },                                       .{ "1", "-1" },    .{ "1", "10" }, .{ "0.1", "1" },
        .{ "12345678901234567890", "12345678901234567891" }, .{ "1e3", "1e4" }, .{ "1", "x" },
    };
    for (differ) |c| try testing.expect(!numbersEqual(c[0], c[1]));
    try testing.expect(equal(.{ .integer = 200 }, .{ .number_string = "200.0" }));
    try testing.expect(!equal(.{ .integer = 200 }, .{ .string = "200" }));
}

test "deep equality of arrays and objects" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    try testing.expect(equal(try parse(a, "{\"a\":[1,{\"b\":null}],\"c\":\"x\"}"), try parse(a, "{\"c\":\"x\",\"a\":[1.0,{\"b\":null}]}")));
    try testing.expect(!equal(try parse(a, "{\"a\":1}"), try parse(a, "{\"a\":1,\"b\":2}")));
    try testing.expect(!equal(try parse(a, "[1,2]"), try parse(a, "[2,1]")));
    try testing.expect(!equal(try parse(a, "null"), try parse(a, "false")));
    try testing.expect(equal(try parse(a, "true"), try parse(a, "true")));
}

test "Go truthiness" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    for ([_][]const u8{ "null", "false", "0", "-0.0", "0e5", "\"\"", "[]", "{}" }) |s| {
        try testing.expect(!truthy(try parse(a, s)));
    }
    for ([_][]const u8{ "true", "1", "0.001", "\"0\"", "\"false\"", "[0]", "{\"a\":null}" }) |s| {
        try testing.expect(truthy(try parse(a, s)));
    }
    try testing.expect(!truthy(null));
    try testing.expect(!truthy(.{ .integer = 0 }));
}

test "raw text" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    try testing.expectEqualStrings("", try rawText(a, null));
    try testing.expectEqualStrings("a\"b", try rawText(a, .{ .string = "a\"b" }));
    try testing.expectEqualStrings("1.50", try rawText(a, try parse(a, "1.50")));
    try testing.expectEqualStrings("null", try rawText(a, .null));
    try testing.expectEqualStrings("{\"k\":[1,\"x\"]}", try rawText(a, try parse(a, "{\"k\": [1, \"x\"]}")));
    try testing.expectEqualStrings("7", try rawText(a, .{ .integer = 7 }));
}

test "canonical numbers" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const both = [_][2][]const u8{
        .{ "1", "1" },                                             .{ "1.0", "1" },      .{ "1E+2", "100" }, .{ "1e2", "100" },
        .{ "-0", "0" },                                            .{ "-0.0e7", "0" },   .{ "0", "0" },      .{ "007", "7" },
        .{ "12.5e1", "125" },                                      .{ "1500e-2", "15" }, .{ "-42", "-42" },  .{ "100", "100" },
        .{ "12345678901234567890123", "12345678901234567890123" },
    };
    for (both) |c| for ([_]bool{ true, false }) |integer| {
        const got = try canonicalNumber(a, c[0], integer);
        try testing.expectEqualStrings(c[1], got.ok);
    };
    const numbers = [_][2][]const u8{
        .{ "1.50", "1.5" },            .{ "1e-3", "0.001" },                   .{ "-2.5E-1", "-0.25" },         .{ "0.000", "0" },
        .{ "123.456", "123.456" },     .{ "1E+999999999", "1e+999999999" },    .{ "-1.25e-100", "-1.25e-100" }, .{ "1e64", "1e+64" },
        .{ "1e63", "1" ++ "0" ** 63 }, .{ "1e-63", "0." ++ "0" ** 62 ++ "1" }, .{ "1e-64", "1e-64" },           .{ "1234.5e-1000", "1.2345e-997" },
    };
    for (numbers) |c| {
        const got = try canonicalNumber(a, c[0], false);
        testing.expectEqualStrings(c[1], got.ok) catch |e| {
            std.debug.print("input {s}\n", .{c[0]});
            return e;
        };
    }
    for ([_][]const u8{ "1.5", "1e-1", "100e-3", "1.0000000000000000001" }) |s| {
        try testing.expectEqual(Canonical.not_integer, try canonicalNumber(a, s, true));
    }
    for ([_][]const u8{ "1E+999999999", "1e64", "1" ++ "0" ** 64, "1e99999999999999999999" }) |s| {
        try testing.expectEqual(Canonical.out_of_range, try canonicalNumber(a, s, true));
    }
    try testing.expectEqual(Canonical.out_of_range, try canonicalNumber(a, "1e99999999999999999999", false));
}
