//! Memory a configured MCP server keeps: configures N servers shaped like the
//! scale benchmark's (`bench/dataplane_scale.py`: 10 `getPet` tools, ~5 KB of
//! configuration JSON each) the way `proxy_on_configure` does, and reports
//! what stays allocated once configuration is over.
//!
//! Native, with `wasm_allocator`'s power-of-two slots emulated (x86 keeps
//! pointers 4 bytes wide, as in wasm32); `arena` after the count compiles
//! into one arena per server instead of `config.parseCompact`, to compare:
//!
//!     python -m ziglang run src/config_mem.zig -target x86-linux -O ReleaseFast -- 1000 [arena]
//!
//! In wasm itself (the VM's linear memory, what the
//! `wasmcustom.mcpgw_vm_memory_bytes` gauge shows), with Node's V8:
//!
//!     python -m ziglang build-exe src/config_mem.zig -target wasm32-freestanding \
//!         -O ReleaseFast -fno-entry -rdynamic -femit-bin=/tmp/config_mem.wasm
//!     node -e 'const m = new WebAssembly.Instance(new WebAssembly.Module(
//!         require("fs").readFileSync("/tmp/config_mem.wasm"))).exports;
//!         console.log(m.config_mem_run(1), m.config_mem_run(999))'
//!
//! (`config_mem_run(n)` configures n more servers and returns the linear
//! memory size in bytes.)

const std = @import("std");
const builtin = @import("builtin");
const config = @import("config.zig");
const jsonw = @import("jsonw.zig");
const Allocator = std.mem.Allocator;
const Out = jsonw.Out;

pub const tools_per_server = 10;

/// The filter configuration the control plane generates for server `i` of
/// the scale benchmark (same keys, same order, same sizes).
pub fn serverConfig(gpa: Allocator, i: usize) Allocator.Error![]u8 {
    var out = Out.init(gpa);
    try out.print("{{\"server\":{{\"name\":\"scale/s{d:0>4}\",\"version\":\"1.0.0\"}},\"base_path\":\"/mcp/scale/s{d:0>4}\",", .{ i, i });
    try out.add("\"limits\":{\"max_request_bytes\":1048576,\"max_response_bytes\":4194304},\"tools_list\":{\"tools\":[");
    for (0..tools_per_server) |t| {
        if (t != 0) try out.byte(',');
        try out.add("{\"name\":\"getPet");
        if (t != 0) try out.int(t + 1);
        try out.add("\",\"description\":\"Get one pet by id.\",\"inputSchema\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\",\"description\":\"The pet's id.\"}},\"required\":[\"id\"]}}");
    }
    try out.add("]},\"tools\":[");
    for (0..tools_per_server) |t| {
        if (t != 0) try out.byte(',');
        try out.add("{\"name\":\"getPet");
        if (t != 0) try out.int(t + 1);
        try out.add("\",\"args\":[{\"name\":\"id\",\"type\":\"integer\",\"required\":true}],\"request\":{\"method\":\"GET\",\"path\":[{\"lit\":\"/v1/pets/\"},{\"out\":{\"args\":[\"id\"]},\"enc\":\"path\"}],\"query\":[],\"headers\":[],\"cookies\":[],\"body\":null,\"auth\":null},\"response\":{\"body\":null,\"prepend\":null,\"append\":null,\"error_body\":null,\"structured\":false}}");
    }
    try out.print("],\"upstream\":{{\"cluster\":\"mcpgw/scale/s{d:0>4}\",\"authority\":\"127.0.0.1:8080\",\"timeout_ms\":5000}}}}", .{i});
    return out.toOwned();
}

/// Counts what passes through it, rounding each block the way
/// `std.heap.wasm_allocator` does (a power-of-two slot of at least the size
/// plus one word; 64 KiB "bigpages", a power-of-two number of them, above
/// that), and lets a block grow in place within its slot as that allocator
/// does. The child allocator backs the whole slot.
pub const SlotCounter = struct {
    child: Allocator,
    /// Bytes asked for and still live.
    requested: usize = 0,
    /// Slot bytes still live: what the blocks occupy in linear memory.
    slots: usize = 0,
    blocks: usize = 0,
    /// false: count bytes as asked, without slot rounding.
    round: bool = true,

    const bigpage = 64 * 1024;

    fn slotSize(self: *const SlotCounter, len: usize, alignment: std.mem.Alignment) usize {
        if (!self.round) return len;
        const actual = @max(len +| @sizeOf(usize), alignment.toByteUnits());
        const small = std.math.ceilPowerOfTwoAssert(usize, actual);
        if (small <= bigpage / 2) return small;
        const pages = (actual + bigpage - 1) / bigpage;
        return std.math.ceilPowerOfTwoAssert(usize, pages) * bigpage;
    }

    pub fn allocator(self: *SlotCounter) Allocator {
        return .{ .ptr = self, .vtable = &.{ .alloc = alloc, .resize = resize, .remap = remap, .free = free } };
    }

    fn alloc(ctx: *anyopaque, len: usize, alignment: std.mem.Alignment, ra: usize) ?[*]u8 {
        const self: *SlotCounter = @ptrCast(@alignCast(ctx));
        const slot = self.slotSize(len, alignment);
        const p = self.child.rawAlloc(slot, alignment, ra) orelse return null;
        self.requested += len;
        self.slots += slot;
        self.blocks += 1;
        return p;
    }

    fn resize(ctx: *anyopaque, buf: []u8, alignment: std.mem.Alignment, new_len: usize, ra: usize) bool {
        const self: *SlotCounter = @ptrCast(@alignCast(ctx));
        if (self.slotSize(buf.len, alignment) != self.slotSize(new_len, alignment)) {
            if (self.round or !self.child.rawResize(buf, alignment, new_len, ra)) return false;
        }
        self.requested = self.requested - buf.len + new_len;
        return true;
    }

    fn remap(ctx: *anyopaque, buf: []u8, alignment: std.mem.Alignment, new_len: usize, ra: usize) ?[*]u8 {
        return if (resize(ctx, buf, alignment, new_len, ra)) buf.ptr else null;
    }

    fn free(ctx: *anyopaque, buf: []u8, alignment: std.mem.Alignment, ra: usize) void {
        const self: *SlotCounter = @ptrCast(@alignCast(ctx));
        const slot = self.slotSize(buf.len, alignment);
        self.requested -= buf.len;
        self.slots -= slot;
        self.blocks -= 1;
        self.child.rawFree(buf.ptr[0..slot], alignment, ra);
    }
};

// ------------------------------------------------------------------ wasm

const is_wasm = builtin.cpu.arch.isWasm();

var wasm_count: usize = 0;

fn wasmRun(n: u32) callconv(.c) u32 {
    const gpa = std.heap.wasm_allocator;
    for (0..n) |_| {
        const text = serverConfig(gpa, wasm_count) catch return 0;
        defer gpa.free(text);
        var scratch = std.heap.ArenaAllocator.init(gpa);
        defer scratch.deinit();
        var why: []const u8 = "";
        // Kept on purpose: a configured server lives as long as the VM.
        _ = config.parseCompact(gpa, scratch.allocator(), text, &why) catch return 0;
        wasm_count += 1;
    }
    return @intCast(@wasmMemorySize(0) * std.wasm.page_size);
}

comptime {
    if (is_wasm) @export(&wasmRun, .{ .name = "config_mem_run" });
}

// ---------------------------------------------------------------- native

pub fn main() !void {
    if (is_wasm) return;
    var args = std.process.args();
    _ = args.next();
    const n = if (args.next()) |a| try std.fmt.parseUnsigned(usize, a, 10) else 1000;
    // `arena`: `config.parse` into one arena per server (for comparison);
    // default: `config.parseCompact`, as the filter does.
    const use_arena = if (args.next()) |a| std.mem.eql(u8, a, "arena") else false;
    const gpa = std.heap.page_allocator;

    // Blocks as wasm_allocator would place them ...
    var slots = SlotCounter{ .child = gpa };
    // ... and the bytes the compiled forms take.
    var asked = SlotCounter{ .child = gpa, .round = false };
    const arenas = try gpa.alloc(std.heap.ArenaAllocator, n);
    defer gpa.free(arenas);
    const compacts = try gpa.alloc(config.Compact, n);
    defer gpa.free(compacts);
    var text_bytes: usize = 0;
    var max_scratch: usize = 0;
    for (0..n) |i| {
        const text = try serverConfig(gpa, i);
        defer gpa.free(text);
        text_bytes += text.len;
        var scratch_slots = SlotCounter{ .child = gpa };
        var scratch = std.heap.ArenaAllocator.init(scratch_slots.allocator());
        defer scratch.deinit();
        var why: []const u8 = "";
        errdefer std.debug.print("server {d}: {s}\n", .{ i, why });
        if (use_arena) {
            arenas[i] = std.heap.ArenaAllocator.init(slots.allocator());
            asked.child = arenas[i].allocator();
            _ = try config.parse(asked.allocator(), scratch.allocator(), text, &why);
        } else {
            compacts[i] = try config.parseCompact(slots.allocator(), scratch.allocator(), text, &why);
            asked.requested += compacts[i].block.len;
        }
        max_scratch = @max(max_scratch, scratch_slots.slots);
    }
    std.debug.print(
        \\{d} servers x {d} tools, {d} bytes of configuration JSON ({d} per server); usize is {d} bytes; {s}
        \\kept: {d} bytes in {d} wasm_allocator slots ({d} per server); compiled form {d} bytes ({d} per server)
        \\scratch per configure: {d} bytes at most, freed after it
        \\
    , .{
        n,           tools_per_server, text_bytes,      text_bytes / n,  @sizeOf(usize),      if (use_arena) "config.parse into an arena" else "config.parseCompact",
        slots.slots, slots.blocks,     slots.slots / n, asked.requested, asked.requested / n, max_scratch,
    });
    if (use_arena) {
        for (arenas) |*arena| arena.deinit();
    } else {
        for (compacts) |*c| c.deinit(slots.allocator());
    }
}

test "a scale-benchmark server keeps only its compiled form" {
    const text = try serverConfig(std.testing.allocator, 7);
    defer std.testing.allocator.free(text);
    var kept = SlotCounter{ .child = std.testing.allocator, .round = false };
    var scratch = std.heap.ArenaAllocator.init(std.testing.allocator);
    var why: []const u8 = "";
    const compact = try config.parseCompact(kept.allocator(), scratch.allocator(), text, &why);
    scratch.deinit();
    defer compact.deinit(kept.allocator());
    // One block, nothing else, and smaller than the text it came from
    // (an arena holding the parse tree as well took 12x the text in wasm).
    try std.testing.expectEqual(@as(usize, 1), kept.blocks);
    try std.testing.expectEqual(compact.block.len, kept.requested);
    try std.testing.expect(compact.block.len < 2 * text.len);
    try std.testing.expectEqual(@as(usize, tools_per_server), compact.cfg.tools.len);
    try std.testing.expect(compact.cfg.findTool("getPet10") != null);
}
