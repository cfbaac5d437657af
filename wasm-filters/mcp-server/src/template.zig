//! Templates of CONFIG.md: a tree of nodes (literal, output, if, range) over
//! expressions (argument / upstream / range-item paths, status, header,
//! constants, function calls). `compile` turns the configuration JSON into
//! this tree once per configuration, resolving function names, path indexes
//! and scope rules up front, so a request only walks the tree.

const std = @import("std");
const Allocator = std.mem.Allocator;
const Value = std.json.Value;
const Out = @import("jsonw.zig").Out;
const jsonw = @import("jsonw.zig");
const value = @import("value.zig");
const Store = @import("store.zig").Store;

/// How an output is encoded into the text around it. `json_string`: the
/// characters of a JSON string between its quotes (the control plane picks
/// it for outputs inside a quoted string of a JSON body template). `xml`:
/// character data of an XML element or attribute value; `xml_cdata`: the
/// inside of a CDATA section (both picked for XML body templates).
pub const Enc = enum { raw, json, json_string, path, query, xml, xml_cdata };

/// One step of a path. Digit keys and `#` are decided at compile time.
pub const Seg = struct {
    key: []const u8,
    /// Array position for an all-digit key (maxInt when it does not fit,
    /// which then never matches).
    index: ?usize = null,
    /// `#`: the length of an array.
    count: bool = false,
};

pub const Func = enum { default, toJson, quote, urlquery, b64enc, upper, lower, trim, join, len, not, eq, ne, @"and", @"or" };

pub const Expr = union(enum) {
    args: []const Seg,
    resp: []const Seg,
    item: []const Seg,
    status,
    header: []const u8,
    /// Behind a pointer: a Value is the largest payload, and every node
    /// holding an expression would pay for it.
    constant: *const Value,
    call: Call,

    pub const Call = struct { func: Func, args: []const Expr };
};

pub const Node = union(enum) {
    lit: []const u8,
    out: struct { expr: Expr, enc: Enc },
    cond: struct { expr: Expr, then: []const Node, otherwise: []const Node },
    range: struct { expr: Expr, body: []const Node, otherwise: []const Node },
};

pub const Template = struct {
    nodes: []const Node,
    /// Whether an expression reads `resp`: the upstream body is parsed only
    /// for templates that need it.
    reads_resp: bool = false,
};

pub const Header = struct {
    name: []const u8,
    value: []const u8,
};

/// What `status`, `header` and `resp` may be used in: request templates
/// run before there is an upstream answer.
pub const Side = enum { request, response };

// ------------------------------------------------------------- compilation

pub const Error = error{ InvalidConfig, OutOfMemory };

/// Compiles a TEMPLATE (a JSON list of nodes) into `store.out`; nothing
/// compiled points into `v`. `where` names it in error messages, e.g.
/// `tools[0].request.path`; on error.InvalidConfig `why` holds the reason
/// (in `store.scratch`) with the exact position inside the template.
pub fn compile(store: *Store, v: Value, side: Side, where: []const u8, why: *[]const u8) Error!Template {
    var c = Compiler{ .store = store, .why = why, .side = side };
    const root = Trail{ .parent = null, .key = where };
    const nodes = try c.nodeList(v, &root);
    return .{ .nodes = nodes, .reads_resp = c.reads_resp };
}

/// Where in the configuration a value sits, built on the stack while
/// descending and rendered only when reporting an error.
const Trail = struct {
    parent: ?*const Trail,
    key: []const u8 = "",
    index: ?usize = null,

    fn write(t: *const Trail, out: *Out) Allocator.Error!void {
        if (t.parent) |p| try p.write(out);
        if (t.index) |i| {
            try out.print("[{d}]", .{i});
        } else {
            if (t.parent != null) try out.byte('.');
            try out.add(t.key);
        }
    }

    fn at(t: *const Trail, i: usize) Trail {
        return .{ .parent = t, .index = i };
    }

    fn field(t: *const Trail, key: []const u8) Trail {
        return .{ .parent = t, .key = key };
    }
};

const Compiler = struct {
    store: *Store,
    why: *[]const u8,
    side: Side,
    reads_resp: bool = false,
    range_depth: u32 = 0,

    fn fail(c: *Compiler, trail: *const Trail, comptime fmt: []const u8, args: anytype) Error {
        var out = Out.init(c.store.scratch);
        try trail.write(&out);
        try out.add(": ");
        try out.print(fmt, args);
        c.why.* = out.bytes();
        return error.InvalidConfig;
    }

    fn nodeList(c: *Compiler, v: Value, trail: *const Trail) Error![]const Node {
        if (v != .array) return c.fail(trail, "must be a list of nodes", .{});
        const nodes = try c.store.out.alloc(Node, v.array.items.len);
        for (v.array.items, nodes, 0..) |item, *n, i| {
            const t = trail.at(i);
            n.* = try c.node(item, &t);
        }
        return nodes;
    }

    /// A missing or null branch is empty.
    fn optionalList(c: *Compiler, o: std.json.ObjectMap, key: []const u8, trail: *const Trail) Error![]const Node {
        const v = o.get(key) orelse return &.{};
        if (v == .null) return &.{};
        const t = trail.field(key);
        return c.nodeList(v, &t);
    }

    fn node(c: *Compiler, v: Value, trail: *const Trail) Error!Node {
        if (v != .object) return c.fail(trail, "must be an object", .{});
        const o = v.object;
        var kinds: u8 = 0;
        for ([_][]const u8{ "lit", "out", "if", "range" }) |k| {
            if (o.contains(k)) kinds += 1;
        }
        if (kinds != 1) return c.fail(trail, "needs exactly one of lit, out, if, range", .{});

        if (o.get("lit")) |lit| {
            if (lit != .string) return c.fail(trail, "lit: must be a string", .{});
            return .{ .lit = try c.store.str(lit.string) };
        }
        if (o.get("out")) |e| {
            const t = trail.field("out");
            var enc: Enc = .raw;
            if (o.get("enc")) |ev| {
                const name = if (ev == .string) ev.string else "";
                enc = std.meta.stringToEnum(Enc, name) orelse
                    return c.fail(trail, "enc: must be one of raw, json, json_string, path, query, xml, xml_cdata", .{});
            }
            return .{ .out = .{ .expr = try c.expr(e, &t), .enc = enc } };
        }
        if (o.get("if")) |e| {
            const t = trail.field("if");
            return .{ .cond = .{
                .expr = try c.expr(e, &t),
                .then = try c.optionalList(o, "then", trail),
                .otherwise = try c.optionalList(o, "else", trail),
            } };
        }
        const e = o.get("range").?;
        const t = trail.field("range");
        const over = try c.expr(e, &t);
        c.range_depth += 1;
        const body = try c.optionalList(o, "do", trail);
        c.range_depth -= 1;
        // `else` runs outside the range: `item` there is the enclosing one.
        return .{ .range = .{ .expr = over, .body = body, .otherwise = try c.optionalList(o, "else", trail) } };
    }

    fn expr(c: *Compiler, v: Value, trail: *const Trail) Error!Expr {
        if (v != .object) return c.fail(trail, "must be an object", .{});
        const o = v.object;
        if (o.get("fn")) |f| {
            const name = if (f == .string) f.string else "";
            const func = std.meta.stringToEnum(Func, name) orelse
                return c.fail(trail, "fn: unknown function \"{s}\"", .{name});
            const list: []const Value = if (o.get("args")) |a| switch (a) {
                .array => |arr| arr.items,
                .null => &.{},
                else => return c.fail(trail, "args: must be a list of expressions", .{}),
            } else &.{};
            const want: struct { min: usize, max: usize } = switch (func) {
                .default, .join, .eq, .ne => .{ .min = 2, .max = 2 },
                .@"and", .@"or" => .{ .min = 1, .max = std.math.maxInt(usize) },
                else => .{ .min = 1, .max = 1 },
            };
            if (list.len < want.min or list.len > want.max) {
                return c.fail(trail, "fn {s}: takes {d}{s} argument(s), got {d}", .{
                    name, want.min, if (want.max > want.min) " or more" else "", list.len,
                });
            }
            const args = try c.store.out.alloc(Expr, list.len);
            const at = trail.field("args");
            for (list, args, 0..) |a, *dst, i| {
                const t = at.at(i);
                dst.* = try c.expr(a, &t);
            }
            return .{ .call = .{ .func = func, .args = args } };
        }

        var kinds: u8 = 0;
        for ([_][]const u8{ "args", "resp", "item", "status", "header", "const" }) |k| {
            if (o.contains(k)) kinds += 1;
        }
        if (kinds != 1) return c.fail(trail, "needs exactly one of args, resp, item, status, header, const, fn", .{});

        if (o.get("args")) |p| {
            const t = trail.field("args");
            return .{ .args = try c.path(p, &t) };
        }
        if (o.get("resp")) |p| {
            const t = trail.field("resp");
            if (c.side == .request) return c.fail(&t, "only in response templates", .{});
            c.reads_resp = true;
            return .{ .resp = try c.path(p, &t) };
        }
        if (o.get("item")) |p| {
            const t = trail.field("item");
            if (c.range_depth == 0) return c.fail(&t, "outside of a range", .{});
            return .{ .item = try c.path(p, &t) };
        }
        if (o.get("status")) |s| {
            const t = trail.field("status");
            if (s != .bool or !s.bool) return c.fail(&t, "must be true", .{});
            if (c.side == .request) return c.fail(&t, "only in response templates", .{});
            return .status;
        }
        if (o.get("header")) |h| {
            const t = trail.field("header");
            if (h != .string or h.string.len == 0) return c.fail(&t, "must be a header name", .{});
            if (c.side == .request) return c.fail(&t, "only in response templates", .{});
            return .{ .header = try c.store.str(h.string) };
        }
        return .{ .constant = try c.store.valuePtr(o.get("const").?) };
    }

    fn path(c: *Compiler, v: Value, trail: *const Trail) Error![]const Seg {
        if (v != .array) return c.fail(trail, "must be a list of keys", .{});
        const segs = try c.store.out.alloc(Seg, v.array.items.len);
        for (v.array.items, segs, 0..) |k, *s, i| {
            if (k != .string) {
                const t = trail.at(i);
                return c.fail(&t, "must be a string", .{});
            }
            s.* = compileSeg(try c.store.str(k.string));
        }
        return segs;
    }
};

fn compileSeg(key: []const u8) Seg {
    if (std.mem.eql(u8, key, "#")) return .{ .key = key, .count = true };
    if (key.len == 0) return .{ .key = key };
    for (key) |ch| if (!std.ascii.isDigit(ch)) return .{ .key = key };
    return .{ .key = key, .index = std.fmt.parseUnsigned(usize, key, 10) catch std.math.maxInt(usize) };
}

// --------------------------------------------------------------- evaluation

/// What templates can see. Request templates have `args` only; response
/// templates also have the upstream answer. `item` is set while a range
/// body renders.
pub const Scope = struct {
    /// For strings computed by functions.
    arena: Allocator,
    args: ?Value = null,
    /// Parsed upstream body; null when absent or not JSON.
    resp: ?Value = null,
    status: ?u32 = null,
    headers: []const Header = &.{},
    item: ?Value = null,
    /// When set, every output records where it wrote, so a rendered path
    /// can be checked segment by segment and a bad one blamed on its
    /// argument (`unsafeSegment`).
    spans: ?*std.ArrayList(Span) = null,
};

/// The bytes `[start, end)` an output node wrote.
pub const Span = struct { start: usize, end: usize, expr: *const Expr };

pub fn render(out: *Out, t: Template, s: *Scope) Allocator.Error!void {
    return renderNodes(out, t.nodes, s);
}

/// Renders into a fresh buffer from the scope's arena.
pub fn renderAlloc(t: Template, s: *Scope) Allocator.Error![]const u8 {
    var out = Out.init(s.arena);
    try render(&out, t, s);
    return out.bytes();
}

fn renderNodes(out: *Out, nodes: []const Node, s: *Scope) Allocator.Error!void {
    for (nodes) |*n| switch (n.*) {
        .lit => |text| try out.add(text),
        .out => |*o| {
            const start = out.list.items.len;
            try writeValue(out, try eval(&o.expr, s), o.enc);
            if (s.spans) |spans| try spans.append(s.arena, .{ .start = start, .end = out.list.items.len, .expr = &o.expr });
        },
        .cond => |c| try renderNodes(out, if (value.truthy(try eval(&c.expr, s))) c.then else c.otherwise, s),
        .range => |r| {
            const over = try eval(&r.expr, s);
            if (!try renderRange(out, over, r.body, s)) try renderNodes(out, r.otherwise, s);
        },
    };
}

/// Returns false when there was nothing to iterate.
fn renderRange(out: *Out, over: ?Value, body: []const Node, s: *Scope) Allocator.Error!bool {
    const saved = s.item;
    defer s.item = saved;
    switch (over orelse return false) {
        .array => |a| {
            if (a.items.len == 0) return false;
            for (a.items) |it| {
                s.item = it;
                try renderNodes(out, body, s);
            }
            return true;
        },
        .object => |o| {
            if (o.count() == 0) return false;
            // Go templates visit map values in sorted key order.
            const keys = o.keys();
            const vals = o.values();
            var sorted = true;
            for (1..keys.len) |i| {
                if (std.mem.order(u8, keys[i - 1], keys[i]) == .gt) sorted = false;
            }
            if (sorted) {
                for (vals) |it| {
                    s.item = it;
                    try renderNodes(out, body, s);
                }
                return true;
            }
            const order = try s.arena.alloc(usize, keys.len);
            for (order, 0..) |*p, i| p.* = i;
            std.sort.heap(usize, order, keys, struct {
                fn less(k: []const []const u8, a: usize, b: usize) bool {
                    return std.mem.order(u8, k[a], k[b]) == .lt;
                }
            }.less);
            for (order) |i| {
                s.item = vals[i];
                try renderNodes(out, body, s);
            }
            return true;
        },
        else => return false,
    }
}

/// Evaluates an expression; null is a missing value.
pub fn eval(e: *const Expr, s: *const Scope) Allocator.Error!?Value {
    return switch (e.*) {
        .args => |p| if (s.args) |a| lookup(a, p) else null,
        .resp => |p| if (s.resp) |r| lookup(r, p) else null,
        .item => |p| if (s.item) |it| lookup(it, p) else null,
        .status => if (s.status) |st| Value{ .integer = st } else null,
        .header => |name| if (findHeader(s.headers, name)) |h| Value{ .string = h } else null,
        .constant => |v| v.*,
        .call => |c| try call(c.func, c.args, s),
    };
}

fn str(s: []const u8) ?Value {
    return Value{ .string = s };
}

fn call(func: Func, args: []const Expr, s: *const Scope) Allocator.Error!?Value {
    switch (func) {
        .@"and", .@"or" => {
            // Go: the first argument that decides the result, else the last;
            // later arguments are not evaluated.
            const stop_on = func == .@"or";
            var last: ?Value = null;
            for (args) |*a| {
                last = try eval(a, s);
                if (value.truthy(last) == stop_on) return last;
            }
            return last;
        },
        .default => {
            const v = try eval(&args[1], s);
            return if (value.truthy(v)) v else try eval(&args[0], s);
        },
        .not => return Value{ .bool = !value.truthy(try eval(&args[0], s)) },
        .eq, .ne => {
            // Missing compares like null, as toJson prints it.
            const a = (try eval(&args[0], s)) orelse .null;
            const b = (try eval(&args[1], s)) orelse .null;
            return Value{ .bool = value.equal(a, b) == (func == .eq) };
        },
        .len => {
            const n: usize = if (try eval(&args[0], s)) |v| switch (v) {
                .string => |x| x.len,
                .array => |x| x.items.len,
                .object => |x| x.count(),
                else => 0,
            } else 0;
            return Value{ .integer = @intCast(n) };
        },
        .toJson => {
            var out = Out.init(s.arena);
            try out.value((try eval(&args[0], s)) orelse .null);
            return str(out.bytes());
        },
        .join => {
            const sep = try value.rawText(s.arena, try eval(&args[0], s));
            const list = try eval(&args[1], s);
            if (list == null or list.? != .array) return str(try value.rawText(s.arena, list));
            var out = Out.init(s.arena);
            for (list.?.array.items, 0..) |it, i| {
                if (i != 0) try out.add(sep);
                try writeRaw(&out, it);
            }
            return str(out.bytes());
        },
        .quote, .urlquery, .b64enc, .upper, .lower, .trim => {
            const text = try value.rawText(s.arena, try eval(&args[0], s));
            return str(try textFunc(func, text, s.arena));
        },
    }
}

fn textFunc(func: Func, text: []const u8, arena: Allocator) Allocator.Error![]const u8 {
    switch (func) {
        .quote => {
            var out = try Out.initCapacity(arena, text.len + 2);
            try out.str(text);
            return out.bytes();
        },
        .urlquery => {
            var out = try Out.initCapacity(arena, text.len);
            try out.formEncode(text);
            return out.bytes();
        },
        .b64enc => {
            const enc = std.base64.standard.Encoder;
            const buf = try arena.alloc(u8, enc.calcSize(text.len));
            return enc.encode(buf, text);
        },
        .upper => return std.ascii.allocUpperString(arena, text),
        .lower => return std.ascii.allocLowerString(arena, text),
        .trim => return std.mem.trim(u8, text, &std.ascii.whitespace),
        else => unreachable,
    }
}

pub fn findHeader(headers: []const Header, name: []const u8) ?[]const u8 {
    for (headers) |h| {
        if (std.ascii.eqlIgnoreCase(h.name, name)) return h.value;
    }
    return null;
}

/// Follows a compiled path from `root`; null when it does not resolve.
pub fn lookup(root: Value, path: []const Seg) ?Value {
    var cur = root;
    for (path) |seg| {
        switch (cur) {
            // Objects take every key literally, digits and "#" included.
            .object => |o| cur = o.get(seg.key) orelse return null,
            .array => |a| {
                if (seg.count) {
                    cur = .{ .integer = @intCast(a.items.len) };
                    continue;
                }
                const idx = seg.index orelse return null;
                if (idx >= a.items.len) return null;
                cur = a.items[idx];
            },
            else => return null,
        }
    }
    return cur;
}

/// Writes a value with an encoding. A missing value is empty, except with
/// `json`, where it is `null` so JSON bodies stay well-formed.
pub fn writeValue(out: *Out, v: ?Value, enc: Enc) Allocator.Error!void {
    const val = v orelse {
        if (enc == .json) try out.add("null");
        return;
    };
    switch (enc) {
        .json => try out.value(val),
        .raw => try writeRaw(out, val),
        // Dot segments are not encoded away here: `%2E%2E` is `..` to a
        // normalising backend. The caller refuses them (`unsafeSegment`).
        .path, .query => switch (val) {
            .string => |s| try out.percent(s),
            else => try encodeRaw(out, val, Out.percent),
        },
        .json_string => switch (val) {
            .string => |s| try out.strBody(s),
            else => try encodeRaw(out, val, Out.strBody),
        },
        .xml => switch (val) {
            .string => |s| try xmlEscape(out, s, false),
            else => try encodeRaw(out, val, xmlText),
        },
        .xml_cdata => switch (val) {
            .string => |s| try xmlEscape(out, s, true),
            else => try encodeRaw(out, val, xmlCdata),
        },
    }
}

fn xmlText(out: *Out, s: []const u8) Allocator.Error!void {
    try xmlEscape(out, s, false);
}

fn xmlCdata(out: *Out, s: []const u8) Allocator.Error!void {
    try xmlEscape(out, s, true);
}

/// Go's `xml.EscapeText`, valid both in element text and in a quoted
/// attribute value: the five markup characters and tab, newline, carriage
/// return (which attribute values would normalise to spaces) become
/// references; what XML 1.0 forbids anywhere (other control characters,
/// U+FFFE, U+FFFF, invalid UTF-8) becomes U+FFFD, as there is no reference
/// for it. In a CDATA section references are not read, so `cdata` keeps
/// every character but ends and reopens the section after each `]` and
/// before each `>`: no `]]>` can form, inside the value or with the
/// template's own text before it (the control plane refuses a value right
/// after a `]` of the template, where an empty value would let that `]`
/// meet the text after). A carriage return goes between two sections as
/// `&#xD;`, which parsers do not turn into a newline.
fn xmlEscape(out: *Out, s: []const u8, cdata: bool) Allocator.Error!void {
    try out.list.ensureUnusedCapacity(out.gpa, s.len);
    var start: usize = 0;
    var i: usize = 0;
    while (i < s.len) {
        const c = s[i];
        var n: usize = 1;
        const replacement: []const u8 = if (c >= 0x80) blk: {
            const len = std.unicode.utf8ByteSequenceLength(c) catch break :blk "\u{FFFD}";
            if (len > s.len - i) break :blk "\u{FFFD}";
            const cp = std.unicode.utf8Decode(s[i .. i + len]) catch break :blk "\u{FFFD}";
            n = len;
            break :blk if (cp == 0xFFFE or cp == 0xFFFF) "\u{FFFD}" else "";
        } else if (cdata) switch (c) {
            ']' => "]]]><![CDATA[",
            '>' => "]]><![CDATA[>",
            // A parser turns a carriage return of a CDATA section into a newline.
            '\r' => "]]>&#xD;<![CDATA[",
            '\t', '\n' => "",
            0x00...0x08, 0x0b, 0x0c, 0x0e...0x1f => "\u{FFFD}",
            else => "",
        } else switch (c) {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&#34;",
            '\'' => "&#39;",
            '\t' => "&#x9;",
            '\n' => "&#xA;",
            '\r' => "&#xD;",
            0x00...0x08, 0x0b, 0x0c, 0x0e...0x1f => "\u{FFFD}",
            else => "",
        };
        if (replacement.len != 0) {
            try out.add(s[start..i]);
            try out.add(replacement);
            start = i + n;
        }
        i += n;
    }
    try out.add(s[start..]);
}

/// Renders the raw text of a non-string value, then encodes it in place.
fn encodeRaw(out: *Out, val: Value, comptime encode: fn (*Out, []const u8) Allocator.Error!void) Allocator.Error!void {
    const start = out.list.items.len;
    try writeRaw(out, val);
    const n = out.list.items.len - start;
    var small: [64]u8 = undefined;
    if (n <= small.len) {
        @memcpy(small[0..n], out.list.items[start..]);
        out.list.shrinkRetainingCapacity(start);
        try encode(out, small[0..n]);
    } else {
        const copy = try out.gpa.dupe(u8, out.list.items[start..]);
        defer out.gpa.free(copy);
        out.list.shrinkRetainingCapacity(start);
        try encode(out, copy);
    }
}

pub const SegmentProblem = struct {
    /// The output that wrote into the segment.
    expr: *const Expr,
    kind: enum { dot, empty },
};

/// The first segment of a rendered request path (up to its `?`) that an
/// output wrote and that would change which resource the path names once
/// a backend or a proxy in front of it normalises the path:
/// - `.` or `..`, spelled with dots or `%2E` in any case, also with a
///   `;parameter` suffix (`..;x`, which Tomcat and Jetty resolve as `..`);
/// - an empty segment before a further separator (`/a//b`), which
///   slash-merging proxies collapse (`/users/{id}/delete` with an empty id
///   would become `/users/delete`). A trailing empty segment stays allowed.
/// Separators are `/` and also `%2F`, `\` and `%5C` in any case, since
/// some backends decode or translate them before resolving dot segments;
/// a value containing `/` is still sent as one segment (`%2F`).
/// Segments made only of template literals are the operator's choice.
pub fn unsafeSegment(path: []const u8, spans: []const Span) ?SegmentProblem {
    const end = std.mem.indexOfScalar(u8, path, '?') orelse path.len;
    var seg_start: usize = 0;
    var i: usize = 0;
    while (i <= end) {
        const sep = if (i == end) 0 else separatorLen(path[i..end]);
        if (i < end and sep == 0) {
            i += 1;
            continue;
        }
        // The text before the first separator is not a segment of its own.
        if (seg_start != 0 or i != 0) {
            const seg = path[seg_start..i];
            const at_end = i == end;
            if (isDotSegment(seg)) {
                if (writer(spans, seg_start, i, false)) |e| return .{ .expr = e, .kind = .dot };
            } else if (seg.len == 0 and !at_end and seg_start != 0) {
                if (writer(spans, seg_start, i, true)) |e| return .{ .expr = e, .kind = .empty };
            }
        }
        if (i == end) break;
        i += sep;
        seg_start = i;
    }
    return null;
}

fn separatorLen(rest: []const u8) usize {
    if (rest[0] == '/' or rest[0] == '\\') return 1;
    if (rest.len >= 3 and rest[0] == '%' and (std.ascii.eqlIgnoreCase(rest[1..3], "2F") or std.ascii.eqlIgnoreCase(rest[1..3], "5C"))) return 3;
    return 0;
}

/// `.` or `..` (dots or `%2E`), ignoring a `;parameter` suffix.
fn isDotSegment(seg: []const u8) bool {
    var dots: usize = 0;
    var i: usize = 0;
    while (i < seg.len) {
        if (seg[i] == ';') break;
        if (seg[i] == '.') {
            i += 1;
        } else if (i + 3 <= seg.len and std.ascii.eqlIgnoreCase(seg[i .. i + 3], "%2E")) {
            i += 3;
        } else if (i + 3 <= seg.len and std.ascii.eqlIgnoreCase(seg[i .. i + 3], "%3B")) {
            break;
        } else return false;
        dots += 1;
    }
    return dots == 1 or dots == 2;
}

/// The output whose bytes overlap `[a, b)`; for an empty segment, one that
/// ends or starts at it (it wrote the empty value, or the separator before).
fn writer(spans: []const Span, a: usize, b: usize, empty: bool) ?*const Expr {
    for (spans) |sp| {
        const hit = if (empty) sp.start <= a and a <= sp.end else sp.start < b and sp.end > a;
        if (hit) return sp.expr;
    }
    return null;
}

/// The argument an expression reads first, for error messages; null when
/// it reads none (a range item, a constant).
pub fn argumentName(e: *const Expr) ?[]const u8 {
    return switch (e.*) {
        .args => |p| if (p.len > 0) p[0].key else null,
        .call => |c| for (c.args) |*a| {
            if (argumentName(a)) |n| break n;
        } else null,
        else => null,
    };
}

/// `raw`: strings as their characters, everything else as compact JSON.
pub fn writeRaw(out: *Out, v: Value) Allocator.Error!void {
    switch (v) {
        .string => |s| try out.add(s),
        else => try out.value(v),
    }
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

fn parseValue(arena: Allocator, s: []const u8) !Value {
    return std.json.parseFromSliceLeaky(Value, arena, s, .{ .parse_numbers = false });
}

/// Compiles `text` as a configuration is compiled: parsed in a scratch
/// arena (strings pointing into a copy of the text) that is poisoned and
/// freed before the template is used, so every render below also checks
/// that the compiled form keeps nothing of the parse tree.
fn compileScratch(out: Allocator, text: []const u8, side: Side, why: *[]const u8, why_buf: []u8) !Template {
    var poison = @import("store.zig").Poisoned{ .child = testing.allocator };
    var scratch_state = std.heap.ArenaAllocator.init(poison.allocator());
    defer scratch_state.deinit();
    const scratch = scratch_state.allocator();
    const copy = try scratch.dupe(u8, text);
    const v = try std.json.parseFromSliceLeaky(Value, scratch, copy, .{ .parse_numbers = false, .allocate = .alloc_if_needed });
    var store = Store.init(out, scratch);
    var scratch_why: []const u8 = "";
    return compile(&store, v, side, "t", &scratch_why) catch |err| {
        const n = @min(scratch_why.len, why_buf.len);
        @memcpy(why_buf[0..n], scratch_why[0..n]);
        why.* = why_buf[0..n];
        return err;
    };
}

const T = struct {
    arena_state: std.heap.ArenaAllocator,

    fn init() T {
        return .{ .arena_state = std.heap.ArenaAllocator.init(testing.allocator) };
    }

    fn deinit(t: *T) void {
        t.arena_state.deinit();
    }

    fn a(t: *T) Allocator {
        return t.arena_state.allocator();
    }

    fn compileText(t: *T, text: []const u8, side: Side) !Template {
        var why: []const u8 = "";
        var why_buf: [256]u8 = undefined;
        return compileScratch(t.a(), text, side, &why, &why_buf) catch |err| {
            std.debug.print("compile: {s}\n", .{why});
            return err;
        };
    }

    /// Renders a response-side template over `args` and `resp` JSON.
    fn render(t: *T, text: []const u8, args: []const u8, resp: ?[]const u8) ![]const u8 {
        const tmpl = try t.compileText(text, .response);
        var s = Scope{
            .arena = t.a(),
            .args = try parseValue(t.a(), args),
            .resp = if (resp) |r| try parseValue(t.a(), r) else null,
            .status = 404,
            .headers = &.{ .{ .name = "x-request-id", .value = "r 1" }, .{ .name = "content-type", .value = "application/json" } },
        };
        return renderAlloc(tmpl, &s);
    }

    fn expect(t: *T, want: []const u8, text: []const u8, args: []const u8) !void {
        try testing.expectEqualStrings(want, try t.render(text, args, null));
    }

    /// `{"out": {"fn": name, "args": [...]}}` over `args`.
    fn expectFn(t: *T, want: []const u8, func: []const u8, fn_args: []const u8, args: []const u8) !void {
        const text = try jsonw.allocPrint(t.a(), "[{{\"out\":{{\"fn\":\"{s}\",\"args\":[{s}]}}}}]", .{ func, fn_args });
        try t.expect(want, text, args);
    }

    fn expectInvalid(t: *T, text: []const u8, side: Side, reason: []const u8) !void {
        var why: []const u8 = "";
        var store = Store.init(t.a(), t.a());
        try testing.expectError(error.InvalidConfig, compile(&store, try parseValue(t.a(), text), side, "tools[0].x", &why));
        testing.expectEqualStrings(reason, why) catch |e| return e;
    }
};

test "out with every encoding" {
    var t = T.init();
    defer t.deinit();
    const args =
        \\{"id": "a b/../\u00e9?&=", "n": 42, "f": 1.50, "b": true, "o": {"k": [1, "x"]}, "s": "q\"uote"}
    ;
    try t.expect("/v1/a%20b%2F..%2F%C3%A9%3F%26%3D",
        \\[{"lit": "/v1/"}, {"out": {"args": ["id"]}, "enc": "path"}]
    , args);
    try t.expect("a b/../\u{e9}?&=|42|1.50|true|{\"k\":[1,\"x\"]}",
        \\[{"out": {"args": ["id"]}}, {"lit": "|"}, {"out": {"args": ["n"]}, "enc": "raw"}, {"lit": "|"},
        \\ {"out": {"args": ["f"]}}, {"lit": "|"}, {"out": {"args": ["b"]}}, {"lit": "|"}, {"out": {"args": ["o"]}}]
    , args);
    try t.expect("\"q\\\"uote\" 42 {\"k\":[1,\"x\"]} null",
        \\[{"out": {"args": ["s"]}, "enc": "json"}, {"lit": " "}, {"out": {"args": ["n"]}, "enc": "json"}, {"lit": " "},
        \\ {"out": {"args": ["o"]}, "enc": "json"}, {"lit": " "}, {"out": {"args": ["missing"]}, "enc": "json"}]
    , args);
    // Objects are rendered as compact JSON, then encoded.
    try t.expect("%7B%22k%22%3A%5B1%2C%22x%22%5D%7D",
        \\[{"out": {"args": ["o"]}, "enc": "query"}]
    , args);
    // Dots are unreserved: a dot segment is refused by the caller (unsafeSegment), not encoded.
    try t.expect("../a..b",
        \\[{"out": {"const": ".."}, "enc": "path"}, {"lit": "/"}, {"out": {"const": "a..b"}, "enc": "path"}]
    , "{}");
    // [] is the whole arguments object.
    try t.expect("{\"n\":1}",
        \\[{"out": {"args": []}}]
    , "{\"n\":1}");
}

test "paths: nested keys, array indexes, # length, missing" {
    var t = T.init();
    defer t.deinit();
    const args =
        \\{"owner": {"name": "ann", "tags": ["x", "y"], "0": "zero", "#": "hash"}}
    ;
    try t.expect("ann/y/||2|zero|hash|",
        \\[{"out": {"args": ["owner", "name"]}}, {"lit": "/"},
        \\ {"out": {"args": ["owner", "tags", "1"]}}, {"lit": "/"},
        \\ {"out": {"args": ["owner", "tags", "9"]}}, {"lit": "|"},
        \\ {"out": {"args": ["owner", "name", "deeper"]}}, {"lit": "|"},
        \\ {"out": {"args": ["owner", "tags", "#"]}}, {"lit": "|"},
        \\ {"out": {"args": ["owner", "0"]}}, {"lit": "|"},
        \\ {"out": {"args": ["owner", "#"]}}, {"lit": "|"},
        \\ {"out": {"args": ["owner", "tags", "99999999999999999999999"]}}]
    , args);
    const r = try t.render(
        \\[{"out": {"resp": ["data", "0", "name"]}}, {"lit": " of "}, {"out": {"resp": ["data", "#"]}}, {"lit": "; "},
        \\ {"out": {"status": true}}, {"lit": "; "}, {"out": {"header": "X-Request-Id"}, "enc": "query"}, {"lit": "; "},
        \\ {"out": {"header": "x-request-id"}, "enc": "json"}, {"lit": "; "}, {"out": {"header": "absent"}}, {"lit": "; "},
        \\ {"out": {"resp": []}}]
    , "{}", "{\"data\": [{\"name\": \"Rex\"}, {}], \"ok\": true}");
    try testing.expectEqualStrings("Rex of 2; 404; r%201; \"r 1\"; ; {\"data\":[{\"name\":\"Rex\"},{}],\"ok\":true}", r);
}

test "if / else with Go truthiness" {
    var t = T.init();
    defer t.deinit();
    const tmpl =
        \\[{"if": {"args": ["v"]}, "then": [{"lit": "T"}], "else": [{"lit": "F"}]}]
    ;
    for ([_][]const u8{ "{}", "{\"v\":null}", "{\"v\":false}", "{\"v\":0}", "{\"v\":0.0}", "{\"v\":\"\"}", "{\"v\":[]}", "{\"v\":{}}" }) |args| {
        try t.expect("F", tmpl, args);
    }
    for ([_][]const u8{ "{\"v\":true}", "{\"v\":1}", "{\"v\":\"0\"}", "{\"v\":[0]}", "{\"v\":{\"a\":0}}", "{\"v\":-0.5}" }) |args| {
        try t.expect("T", tmpl, args);
    }
    // "else" may be omitted; branches nest (else-if chains).
    try t.expect("",
        \\[{"if": {"args": ["v"]}, "then": [{"lit": "T"}]}]
    , "{}");
    try t.expect("two",
        \\[{"if": {"fn": "eq", "args": [{"args": ["v"]}, {"const": 1}]}, "then": [{"lit": "one"}],
        \\  "else": [{"if": {"fn": "eq", "args": [{"args": ["v"]}, {"const": 2}]}, "then": [{"lit": "two"}], "else": [{"lit": "many"}]}]}]
    , "{\"v\":2.0}");
}

test "range over arrays and object values, nested, with else" {
    var t = T.init();
    defer t.deinit();
    const nested =
        \\[{"range": {"args": ["groups"]}, "do": [
        \\   {"out": {"item": ["name"]}}, {"lit": ":"},
        \\   {"range": {"item": ["members"]}, "do": [{"out": {"item": []}}, {"lit": ","}], "else": [{"lit": "none"}, {"out": {"item": ["name"]}}]},
        \\   {"out": {"item": ["name"]}}, {"lit": ";"}],
        \\ "else": [{"lit": "empty"}]}]
    ;
    try t.expect("a:1,2,a;b:nonebb;", nested,
        \\{"groups": [{"name": "a", "members": [1, 2]}, {"name": "b", "members": []}]}
    );
    try t.expect("empty", nested, "{\"groups\": []}");
    try t.expect("empty", nested, "{}");
    try t.expect("empty", nested, "{\"groups\": \"not iterable\"}");
    // Object values in sorted key order, as Go visits map keys.
    const values =
        \\[{"range": {"args": ["m"]}, "do": [{"out": {"item": []}}]}]
    ;
    try t.expect("123", values, "{\"m\": {\"c\": 3, \"a\": 1, \"b\": 2}}");
    try t.expect("123", values, "{\"m\": {\"a\": 1, \"b\": 2, \"c\": 3}}");
    try t.expect("", values, "{\"m\": {}}");
    // Range over a response path, with "#" inside.
    const r = try t.render(
        \\[{"range": {"resp": ["items"]}, "do": [{"out": {"item": ["id"]}}, {"lit": "/"}, {"out": {"item": ["tags", "#"]}}, {"lit": " "}]}]
    , "{}", "{\"items\": [{\"id\": 1, \"tags\": [\"x\"]}, {\"id\": 2, \"tags\": []}]}");
    try testing.expectEqualStrings("1/1 2/0 ", r);
}

test "functions: default, toJson, quote" {
    var t = T.init();
    defer t.deinit();
    const args =
        \\{"s": "he said \"hi\"\\\n\u0001", "z": 0, "e": "", "n": 5, "o": {"a": [1, null]}}
    ;
    try t.expectFn("5", "default", "{\"const\": \"fb\"}, {\"args\": [\"n\"]}", args);
    try t.expectFn("fb", "default", "{\"const\": \"fb\"}, {\"args\": [\"z\"]}", args);
    try t.expectFn("fb", "default", "{\"const\": \"fb\"}, {\"args\": [\"e\"]}", args);
    try t.expectFn("fb", "default", "{\"const\": \"fb\"}, {\"args\": [\"missing\"]}", args);
    try t.expectFn("{\"a\":[1,null]}", "toJson", "{\"args\": [\"o\"]}", args);
    try t.expectFn("\"he said \\\"hi\\\"\\\\\\n\\u0001\"", "toJson", "{\"args\": [\"s\"]}", args);
    try t.expectFn("null", "toJson", "{\"args\": [\"missing\"]}", args);
    try t.expectFn("5", "toJson", "{\"args\": [\"n\"]}", args);
    try t.expectFn("\"he said \\\"hi\\\"\\\\\\n\\u0001\"", "quote", "{\"args\": [\"s\"]}", args);
    try t.expectFn("\"5\"", "quote", "{\"args\": [\"n\"]}", args);
    try t.expectFn("\"\"", "quote", "{\"args\": [\"missing\"]}", args);
    try t.expectFn("\"{\\\"a\\\":[1,null]}\"", "quote", "{\"args\": [\"o\"]}", args);
}

test "functions: urlquery, b64enc, upper, lower, trim" {
    var t = T.init();
    defer t.deinit();
    const args =
        \\{"q": "a b&c=d/e+f~g.h_i-j\u00e9%", "p": "  \t x y \n", "m": "MiXeD \u00c9"}
    ;
    try t.expectFn("a+b%26c%3Dd%2Fe%2Bf~g.h_i-j%C3%A9%25", "urlquery", "{\"args\": [\"q\"]}", args);
    try t.expectFn("", "urlquery", "{\"args\": [\"missing\"]}", args);
    // Base64 padding for 0, 1, 2 and 3 trailing bytes.
    try t.expectFn("", "b64enc", "{\"const\": \"\"}", args);
    try t.expectFn("YQ==", "b64enc", "{\"const\": \"a\"}", args);
    try t.expectFn("YWI=", "b64enc", "{\"const\": \"ab\"}", args);
    try t.expectFn("YWJj", "b64enc", "{\"const\": \"abc\"}", args);
    try t.expectFn("dXNlcjpwYXNz", "b64enc", "{\"const\": \"user:pass\"}", args);
    try t.expectFn("Pz8+", "b64enc", "{\"const\": \"??>\"}", args);
    try t.expectFn("MTI=", "b64enc", "{\"const\": 12}", args);
    try t.expectFn("MIXED \u{c9}", "upper", "{\"args\": [\"m\"]}", args);
    try t.expectFn("mixed \u{c9}", "lower", "{\"args\": [\"m\"]}", args);
    try t.expectFn("x y", "trim", "{\"args\": [\"p\"]}", args);
    try t.expectFn("", "trim", "{\"const\": \" \\t\\r\\n \"}", args);
}

test "functions: join, len" {
    var t = T.init();
    defer t.deinit();
    const args =
        \\{"l": ["a", 1, true, null, {"k": "v"}], "s": "h\u00e9", "o": {"a": 1, "b": 2}, "e": []}
    ;
    try t.expectFn("a, 1, true, null, {\"k\":\"v\"}", "join", "{\"const\": \", \"}, {\"args\": [\"l\"]}", args);
    try t.expectFn("", "join", "{\"const\": \",\"}, {\"args\": [\"e\"]}", args);
    // A non-array renders as its raw text.
    try t.expectFn("h\u{e9}", "join", "{\"const\": \",\"}, {\"args\": [\"s\"]}", args);
    try t.expectFn("{\"a\":1,\"b\":2}", "join", "{\"const\": \",\"}, {\"args\": [\"o\"]}", args);
    try t.expectFn("", "join", "{\"const\": \",\"}, {\"args\": [\"missing\"]}", args);
    try t.expectFn("a1true", "join", "{\"args\": [\"nosep\"]}, {\"const\": [\"a\", 1, true]}", args);
    try t.expectFn("5", "len", "{\"args\": [\"l\"]}", args);
    try t.expectFn("3", "len", "{\"args\": [\"s\"]}", args);
    try t.expectFn("2", "len", "{\"args\": [\"o\"]}", args);
    try t.expectFn("0", "len", "{\"args\": [\"e\"]}", args);
    try t.expectFn("0", "len", "{\"args\": [\"missing\"]}", args);
    try t.expectFn("0", "len", "{\"const\": 42}", args);
}

test "functions: not, eq, ne, and, or with Go semantics" {
    var t = T.init();
    defer t.deinit();
    const args =
        \\{"one": 1, "onef": 1.0, "big": 12345678901234567890, "s": "1", "z": 0, "e": "", "x": "x", "arr": [1, {"a": "b"}]}
    ;
    try t.expectFn("true", "not", "{\"args\": [\"z\"]}", args);
    try t.expectFn("false", "not", "{\"args\": [\"x\"]}", args);
    try t.expectFn("true", "not", "{\"args\": [\"missing\"]}", args);
    try t.expectFn("true", "eq", "{\"args\": [\"one\"]}, {\"args\": [\"onef\"]}", args);
    try t.expectFn("true", "eq", "{\"args\": [\"one\"]}, {\"const\": 1e0}", args);
    try t.expectFn("false", "eq", "{\"args\": [\"one\"]}, {\"args\": [\"s\"]}", args);
    try t.expectFn("false", "eq", "{\"args\": [\"big\"]}, {\"const\": 12345678901234567891}", args);
    try t.expectFn("true", "eq", "{\"args\": [\"arr\"]}, {\"const\": [1.0, {\"a\": \"b\"}]}", args);
    try t.expectFn("true", "eq", "{\"args\": [\"missing\"]}, {\"const\": null}", args);
    try t.expectFn("true", "eq", "{\"fn\": \"len\", \"args\": [{\"args\": [\"arr\"]}]}, {\"const\": 2}", args);
    try t.expectFn("false", "ne", "{\"args\": [\"one\"]}, {\"args\": [\"onef\"]}", args);
    try t.expectFn("true", "ne", "{\"args\": [\"one\"]}, {\"args\": [\"s\"]}", args);
    // and: the first falsy argument, else the last; or: the first truthy, else the last.
    try t.expectFn("x", "and", "{\"args\": [\"one\"]}, {\"args\": [\"x\"]}", args);
    try t.expectFn("0", "and", "{\"args\": [\"one\"]}, {\"args\": [\"z\"]}, {\"args\": [\"x\"]}", args);
    try t.expectFn("", "and", "{\"args\": [\"e\"]}, {\"args\": [\"z\"]}", args);
    try t.expectFn("", "and", "{\"args\": [\"missing\"]}, {\"args\": [\"x\"]}", args);
    try t.expectFn("1", "or", "{\"args\": [\"e\"]}, {\"args\": [\"one\"]}, {\"args\": [\"x\"]}", args);
    try t.expectFn("0", "or", "{\"args\": [\"e\"]}, {\"args\": [\"z\"]}", args);
    try t.expectFn("x", "or", "{\"args\": [\"x\"]}", args);
    // Results of and/or keep their type: JSON output shows it.
    try t.expect("null|0|\"x\"",
        \\[{"out": {"fn": "and", "args": [{"args": ["missing"]}, {"args": ["x"]}]}, "enc": "json"}, {"lit": "|"},
        \\ {"out": {"fn": "or", "args": [{"args": ["e"]}, {"args": ["z"]}]}, "enc": "json"}, {"lit": "|"},
        \\ {"out": {"fn": "or", "args": [{"args": ["z"]}, {"args": ["x"]}]}, "enc": "json"}]
    , args);
    // A desugared pipe: args.name | default "anon" | upper.
    try t.expect("ANON",
        \\[{"out": {"fn": "upper", "args": [{"fn": "default", "args": [{"const": "anon"}, {"args": ["name"]}]}]}}]
    , args);
}

test "compile errors name the position" {
    var t = T.init();
    defer t.deinit();
    try t.expectInvalid("{}", .request, "tools[0].x: must be a list of nodes");
    try t.expectInvalid("[{\"lit\": \"a\", \"out\": {\"args\": []}}]", .request, "tools[0].x[0]: needs exactly one of lit, out, if, range");
    try t.expectInvalid("[{}]", .request, "tools[0].x[0]: needs exactly one of lit, out, if, range");
    try t.expectInvalid("[{\"lit\": 1}]", .request, "tools[0].x[0]: lit: must be a string");
    try t.expectInvalid("[{\"out\": {\"args\": [\"a\"]}, \"enc\": \"base64\"}]", .request, "tools[0].x[0]: enc: must be one of raw, json, json_string, path, query, xml, xml_cdata");
    try t.expectInvalid("[{\"out\": {\"args\": [\"a\"], \"const\": 1}}]", .request, "tools[0].x[0].out: needs exactly one of args, resp, item, status, header, const, fn");
    try t.expectInvalid("[{\"out\": {\"fn\": \"sprintf\", \"args\": []}}]", .request, "tools[0].x[0].out: fn: unknown function \"sprintf\"");
    try t.expectInvalid("[{\"out\": {\"fn\": \"eq\", \"args\": [{\"const\": 1}]}}]", .request, "tools[0].x[0].out: fn eq: takes 2 argument(s), got 1");
    try t.expectInvalid("[{\"out\": {\"fn\": \"and\", \"args\": []}}]", .request, "tools[0].x[0].out: fn and: takes 1 or more argument(s), got 0");
    try t.expectInvalid("[{\"out\": {\"resp\": [\"a\"]}}]", .request, "tools[0].x[0].out.resp: only in response templates");
    try t.expectInvalid("[{\"if\": {\"status\": true}}]", .request, "tools[0].x[0].if.status: only in response templates");
    try t.expectInvalid("[{\"out\": {\"header\": \"x\"}}]", .request, "tools[0].x[0].out.header: only in response templates");
    try t.expectInvalid("[{\"out\": {\"status\": false}}]", .response, "tools[0].x[0].out.status: must be true");
    try t.expectInvalid("[{\"out\": {\"item\": []}}]", .request, "tools[0].x[0].out.item: outside of a range");
    try t.expectInvalid("[{\"range\": {\"args\": []}, \"do\": [], \"else\": [{\"out\": {\"item\": []}}]}]", .request, "tools[0].x[0].else[0].out.item: outside of a range");
    try t.expectInvalid("[{\"if\": {\"const\": 1}, \"then\": [{\"range\": {\"args\": []}, \"do\": [{\"out\": {\"fn\": \"not\", \"args\": [{\"item\": [1]}]}}]}]}]", .request, "tools[0].x[0].then[0].do[0].out.args[0].item[0]: must be a string");
    try t.expectInvalid("[{\"out\": {\"args\": \"a\"}}]", .request, "tools[0].x[0].out.args: must be a list of keys");
    // The response side accepts what the request side refuses.
    _ = try t.compileText("[{\"out\": {\"resp\": []}}, {\"out\": {\"status\": true}}, {\"out\": {\"header\": \"h\"}}]", .response);
    try testing.expect((try t.compileText("[{\"if\": {\"resp\": [\"a\"]}}]", .response)).reads_resp);
    try testing.expect(!(try t.compileText("[{\"out\": {\"status\": true}}]", .response)).reads_resp);
}

test "long non-string values are percent-encoded correctly" {
    var t = T.init();
    defer t.deinit();
    const got = try t.render("[{\"lit\": \"x=\"}, {\"out\": {\"args\": [\"a\"]}, \"enc\": \"query\"}]",
        \\{"a": ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}
    , null);
    try testing.expect(std.mem.startsWith(u8, got, "x=%5B%22aaaa"));
    try testing.expect(std.mem.endsWith(u8, got, "aaa%22%5D"));
}

test "json_string: the inside of a JSON string, whatever the value" {
    var t = T.init();
    defer t.deinit();
    const args =
        \\{"q": "x\", \"role\": \"admin", "n": 42, "o": {"k": "v\"w"}, "u": "\u00e9\u0001"}
    ;
    try t.expect("{\"q\": \"x\\\", \\\"role\\\": \\\"admin\"}",
        \\[{"lit": "{\"q\": \""}, {"out": {"args": ["q"]}, "enc": "json_string"}, {"lit": "\"}"}]
    , args);
    try t.expect("42|{\\\"k\\\":\\\"v\\\\\\\"w\\\"}|\u{e9}\\u0001|",
        \\[{"out": {"args": ["n"]}, "enc": "json_string"}, {"lit": "|"}, {"out": {"args": ["o"]}, "enc": "json_string"}, {"lit": "|"},
        \\ {"out": {"args": ["u"]}, "enc": "json_string"}, {"lit": "|"}, {"out": {"args": ["missing"]}, "enc": "json_string"}]
    , args);
}

test "xml: element text and attribute values cannot add markup" {
    var t = T.init();
    defer t.deinit();
    const args =
        \\{"q": "</q><role>admin</role><q>", "a": "x\" role='admin' y=\"", "e": "&amp; &#60;", "n": 42,
        \\ "o": {"k": "<v>"}, "w": "a\tb\nc\rd", "c": "\u0001\u0000\ufffe\uffff\u007f\u00e9\ud83d\ude00"}
    ;
    try t.expect("<r><q>&lt;/q&gt;&lt;role&gt;admin&lt;/role&gt;&lt;q&gt;</q></r>",
        \\[{"lit": "<r><q>"}, {"out": {"args": ["q"]}, "enc": "xml"}, {"lit": "</q></r>"}]
    , args);
    try t.expect("<r a=\"x&#34; role=&#39;admin&#39; y=&#34;\" b='x&#34; role=&#39;admin&#39; y=&#34;'/>",
        \\[{"lit": "<r a=\""}, {"out": {"args": ["a"]}, "enc": "xml"}, {"lit": "\" b='"}, {"out": {"args": ["a"]}, "enc": "xml"}, {"lit": "'/>"}]
    , args);
    // References a client writes are text, never read as references.
    try t.expect("&amp;amp; &amp;#60;|42|{&#34;k&#34;:&#34;&lt;v&gt;&#34;}|a&#x9;b&#xA;c&#xD;d|",
        \\[{"out": {"args": ["e"]}, "enc": "xml"}, {"lit": "|"}, {"out": {"args": ["n"]}, "enc": "xml"}, {"lit": "|"},
        \\ {"out": {"args": ["o"]}, "enc": "xml"}, {"lit": "|"}, {"out": {"args": ["w"]}, "enc": "xml"}, {"lit": "|"},
        \\ {"out": {"args": ["missing"]}, "enc": "xml"}]
    , args);
    // What XML 1.0 forbids has no reference: U+FFFD instead.
    try t.expect("\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\x7f\u{e9}\u{1F600}",
        \\[{"out": {"args": ["c"]}, "enc": "xml"}]
    , args);
    var out = Out.init(t.a());
    try writeValue(&out, .{ .string = "a\xffb\xc3" }, .xml);
    try testing.expectEqualStrings("a\u{FFFD}b\u{FFFD}", out.bytes());
}

test "xml_cdata: no ']]>' forms, inside the value or with the text around it" {
    var t = T.init();
    defer t.deinit();
    const args =
        \\{"v": "x]]><role>admin</role><![CDATA[", "gt": ">tail", "br": "head]]", "w": "<&\"'\t\n\r\u0001"}
    ;
    try t.expect("<q><![CDATA[x]]]><![CDATA[]]]><![CDATA[]]><![CDATA[><role]]><![CDATA[>admin</role]]><![CDATA[><![CDATA[]]></q>",
        \\[{"lit": "<q><![CDATA["}, {"out": {"args": ["v"]}, "enc": "xml_cdata"}, {"lit": "]]></q>"}]
    , args);
    // The template's own ']]' before a value that starts with '>', and a
    // value that ends with ']]' before the template's '>'.
    try t.expect("<![CDATA[a]]]]><![CDATA[>tail]]>",
        \\[{"lit": "<![CDATA[a]]"}, {"out": {"args": ["gt"]}, "enc": "xml_cdata"}, {"lit": "]]>"}]
    , args);
    try t.expect("<![CDATA[head]]]><![CDATA[]]]><![CDATA[>]]>",
        \\[{"lit": "<![CDATA["}, {"out": {"args": ["br"]}, "enc": "xml_cdata"}, {"lit": ">]]>"}]
    , args);
    // Markup characters stay as they are: a CDATA section reads no references.
    try t.expect("<&\"'\t\n]]>&#xD;<![CDATA[\u{FFFD}",
        \\[{"out": {"args": ["w"]}, "enc": "xml_cdata"}]
    , args);
}

fn expectSegment(t: *T, want: ?@TypeOf(@as(SegmentProblem, undefined).kind), text: []const u8, args: []const u8) !void {
    const tmpl = try t.compileText(text, .request);
    var spans: std.ArrayList(Span) = .empty;
    var s = Scope{ .arena = t.a(), .args = try parseValue(t.a(), args), .spans = &spans };
    const path = try renderAlloc(tmpl, &s);
    const got = unsafeSegment(path, spans.items);
    if (want) |k| {
        const p = got orelse {
            std.debug.print("no problem found in {s}\n", .{path});
            return error.TestExpectedProblem;
        };
        try testing.expectEqual(k, p.kind);
        try testing.expectEqualStrings("v", argumentName(p.expr).?);
    } else if (got != null) {
        std.debug.print("unexpected problem in {s}\n", .{path});
        return error.TestUnexpectedProblem;
    }
}

test "unsafeSegment: dot and empty segments written by an argument" {
    var t = T.init();
    defer t.deinit();
    const seg =
        \\[{"lit": "/api/users/"}, {"out": {"args": ["v"]}, "enc": "path"}, {"lit": "/profile"}]
    ;
    const query =
        \\[{"lit": "/api/users/"}, {"out": {"fn": "urlquery", "args": [{"args": ["v"]}]}, "enc": "raw"}, {"lit": "/profile?x=1"}]
    ;
    const tail =
        \\[{"lit": "/api/users/"}, {"out": {"fn": "lower", "args": [{"args": ["v"]}]}, "enc": "path"}]
    ;
    const prefix =
        \\[{"lit": "/api/x."}, {"out": {"args": ["v"]}, "enc": "path"}, {"lit": "/y"}]
    ;
    for ([_][]const u8{ seg, query, tail }) |tmpl| {
        for ([_][]const u8{ ".", "..", "%2e%2E", ".%2E", "..;x", "../admin", "a/../..", "..\\\\x", "%2E%2e;" }) |v| {
            const args = try jsonw.allocPrint(t.a(), "{{\"v\": \"{s}\"}}", .{v});
            // Every encoding escapes '%', so "%2e" in a value stays literal text.
            try expectSegment(&t, if (std.mem.indexOfScalar(u8, v, '%') != null) null else .dot, tmpl, args);
        }
        for ([_][]const u8{ "a", "a.b", "...", "a/b", ".a", "a.", "%", "%2", "..a" }) |v| {
            const args = try jsonw.allocPrint(t.a(), "{{\"v\": \"{s}\"}}", .{v});
            try expectSegment(&t, null, tmpl, args);
        }
    }
    // A dot completed by the value: "x." + "." is a segment "x..", fine; "." after a literal "/" is not.
    try expectSegment(&t, null, prefix, "{\"v\": \".\"}");
    // Empty: inside the path refused, at the end allowed; also when the value ends in '/'.
    try expectSegment(&t, .empty, seg, "{\"v\": \"\"}");
    try expectSegment(&t, .empty, seg, "{}");
    try expectSegment(&t, .empty, seg, "{\"v\": \"a/\"}");
    try expectSegment(&t, .empty, seg, "{\"v\": \"/a\"}");
    try expectSegment(&t, null, tail, "{\"v\": \"\"}");
    // Numbers and objects are encoded too; none is a dot segment.
    try expectSegment(&t, null, seg, "{\"v\": 1.5}");
    // Literal dot segments and "//" belong to the operator.
    try expectSegment(&t, null,
        \\[{"lit": "/a/../b//c/"}, {"out": {"args": ["v"]}, "enc": "path"}]
    , "{\"v\": \"x\"}");
    // The query part is not a path.
    try expectSegment(&t, null,
        \\[{"lit": "/a?x=/"}, {"out": {"args": ["v"]}, "enc": "query"}, {"lit": "/b"}]
    , "{\"v\": \"..\"}");
}
