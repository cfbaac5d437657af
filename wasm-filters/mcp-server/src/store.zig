//! Where a configuration's compiled form is built. A configuration is parsed
//! (JSON tree, error messages, lookup tables used while compiling) in a
//! scratch allocator freed right after `proxy_on_configure`; only what a
//! request needs is copied into the long-lived allocator. Every string or
//! JSON value taken from the parse tree (or the configuration text, which
//! the host frees too) goes through `Store`, so nothing compiled points into
//! memory that is about to be freed.

const std = @import("std");
const Allocator = std.mem.Allocator;
const Value = std.json.Value;

pub const Store = struct {
    /// The compiled form: lives as long as the configuration.
    out: Allocator,
    /// Everything else: freed when configuration ends.
    scratch: Allocator,
    /// Strings already copied into `out`, by content: tool, argument and
    /// header names, path keys, literals and enums repeat across tools.
    strings: std.StringHashMapUnmanaged([]const u8) = .empty,

    pub fn init(out: Allocator, scratch: Allocator) Store {
        return .{ .out = out, .scratch = scratch };
    }

    /// `s` in `out`, shared with every equal string copied before.
    pub fn str(self: *Store, s: []const u8) Allocator.Error![]const u8 {
        if (s.len == 0) return "";
        const gop = try self.strings.getOrPut(self.scratch, s);
        if (!gop.found_existing) {
            const copy = try self.out.dupe(u8, s);
            gop.key_ptr.* = copy;
            gop.value_ptr.* = copy;
        }
        return gop.value_ptr.*;
    }

    /// `s` in `out` without looking for an equal one: for one-off texts
    /// such as the pre-serialised answers.
    pub fn bytes(self: *Store, s: []const u8) Allocator.Error![]const u8 {
        return self.out.dupe(u8, s);
    }

    /// A list of strings, each copied.
    pub fn strs(self: *Store, list: []const []const u8) Allocator.Error![]const []const u8 {
        const copy = try self.out.alloc([]const u8, list.len);
        for (list, copy) |s, *d| d.* = try self.str(s);
        return copy;
    }

    /// A deep copy of `v` in `out`, sized exactly. Arrays and objects of
    /// the copy are read-only: their allocator refuses to allocate, so a
    /// stray mutation fails instead of growing into freed memory.
    pub fn value(self: *Store, v: Value) Allocator.Error!Value {
        return switch (v) {
            .null, .bool, .integer, .float => v,
            .number_string => |s| .{ .number_string = try self.str(s) },
            .string => |s| .{ .string = try self.str(s) },
            .array => |a| {
                const items = try self.out.alloc(Value, a.items.len);
                for (a.items, items) |x, *y| y.* = try self.value(x);
                return .{ .array = .{ .items = items, .capacity = items.len, .allocator = frozen } };
            },
            .object => |o| {
                var m: std.json.ObjectMap = .{ .unmanaged = .empty, .allocator = frozen, .ctx = .{} };
                try m.unmanaged.ensureTotalCapacity(self.out, o.count());
                var it = o.iterator();
                while (it.next()) |e| {
                    m.unmanaged.putAssumeCapacity(try self.str(e.key_ptr.*), try self.value(e.value_ptr.*));
                }
                return .{ .object = m };
            },
        };
    }

    /// A deep copy of `v` in `out`, behind a pointer.
    pub fn valuePtr(self: *Store, v: Value) Allocator.Error!*const Value {
        const p = try self.out.create(Value);
        p.* = try self.value(v);
        return p;
    }

    /// `values`, each deep-copied.
    pub fn values(self: *Store, list: []const Value) Allocator.Error![]const Value {
        const copy = try self.out.alloc(Value, list.len);
        for (list, copy) |x, *y| y.* = try self.value(x);
        return copy;
    }
};

var frozen_state: u8 = 0;

/// The allocator of copied arrays and objects: allocates nothing, frees
/// nothing (the memory belongs to the configuration).
pub const frozen: Allocator = .{
    .ptr = &frozen_state,
    .vtable = &.{
        .alloc = refuse,
        .resize = Allocator.noResize,
        .remap = Allocator.noRemap,
        .free = Allocator.noFree,
    },
};

fn refuse(ctx: *anyopaque, len: usize, alignment: std.mem.Alignment, ra: usize) ?[*]u8 {
    _ = .{ ctx, len, alignment, ra };
    return null;
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

test "copies are deep, exact and independent of the source" {
    var out_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer out_state.deinit();
    var scratch_state = std.heap.ArenaAllocator.init(testing.allocator);
    const scratch = scratch_state.allocator();
    var store = Store.init(out_state.allocator(), scratch);

    const text = try scratch.dupe(u8,
        \\{"s": "x", "n": 1.50, "a": [1, "y", {"k": null}], "o": {"b": true, "a": [], "c": {}}}
    );
    const src = try std.json.parseFromSliceLeaky(Value, scratch, text, .{ .parse_numbers = false, .allocate = .alloc_if_needed });
    const copy = try store.value(src);
    const a = try store.str("shared");
    const b = try store.str("shared");
    try testing.expectEqual(a.ptr, b.ptr);
    @memset(text, 'Z');
    scratch_state.deinit();

    var out = @import("jsonw.zig").Out.init(testing.allocator);
    defer out.list.deinit(testing.allocator);
    try out.value(copy);
    try testing.expectEqualStrings("{\"s\":\"x\",\"n\":1.50,\"a\":[1,\"y\",{\"k\":null}],\"o\":{\"b\":true,\"a\":[],\"c\":{}}}", out.bytes());
    try testing.expectEqual(copy.object.get("a").?.array.items.len, copy.object.get("a").?.array.capacity);
    // Read-only: growing a copied array fails rather than reallocating.
    var arr = copy.object.get("a").?.array;
    try testing.expectError(error.OutOfMemory, arr.append(.null));
}

test "copied objects past the linear-scan size keep their hash index" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    var store = Store.init(a, a);
    const src = try std.json.parseFromSliceLeaky(Value, a,
        \\{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11}
    , .{ .parse_numbers = false });
    const copy = try store.value(src);
    try testing.expectEqual(@as(usize, 12), copy.object.count());
    try testing.expectEqualStrings("11", copy.object.get("k11").?.number_string);
    try testing.expectEqualStrings("0", copy.object.get("k0").?.number_string);
    try testing.expect(copy.object.get("k12") == null);
}

/// For tests: an allocator that overwrites memory (0xAA) as it frees it.
/// A scratch arena over it makes a compiled form that still points into the
/// parse tree read garbage once the scratch is gone, so tests comparing
/// answers fail instead of passing by luck.
pub const Poisoned = struct {
    child: Allocator,

    pub fn allocator(self: *Poisoned) Allocator {
        return .{
            .ptr = self,
            .vtable = &.{
                .alloc = alloc,
                .resize = resize,
                // Moving would free the old block without poisoning it.
                .remap = Allocator.noRemap,
                .free = free,
            },
        };
    }

    fn alloc(ctx: *anyopaque, len: usize, alignment: std.mem.Alignment, ra: usize) ?[*]u8 {
        const self: *Poisoned = @ptrCast(@alignCast(ctx));
        return self.child.rawAlloc(len, alignment, ra);
    }

    fn resize(ctx: *anyopaque, buf: []u8, alignment: std.mem.Alignment, new_len: usize, ra: usize) bool {
        const self: *Poisoned = @ptrCast(@alignCast(ctx));
        return self.child.rawResize(buf, alignment, new_len, ra);
    }

    fn free(ctx: *anyopaque, buf: []u8, alignment: std.mem.Alignment, ra: usize) void {
        const self: *Poisoned = @ptrCast(@alignCast(ctx));
        @memset(buf, 0xAA);
        self.child.rawFree(buf, alignment, ra);
    }
};
