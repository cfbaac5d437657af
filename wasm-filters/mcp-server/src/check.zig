//! The filter's configuration parser as a native library, so the control
//! plane checks each configuration it generates with the very rules the
//! filter applies (`config.parse`), before Envoy receives it. One rule set:
//! a configuration this accepts is one `proxy_on_configure` accepts.
//!
//! Built by `wasm-filters/build.py` next to `plugin.wasm` (libconfigcheck.so),
//! loaded with ctypes by `controlplane/mcpgw/translate/filtercheck.py`.

const std = @import("std");
const config = @import("config.zig");

pub const ok: c_int = 0;
pub const refused: c_int = 1;
pub const out_of_memory: c_int = 2;

/// The configuration schema this build of the filter reads (`config.schema_version`):
/// the control plane refuses to serve a plugin whose schema is not the one it writes.
export fn mcpgw_config_schema() u32 {
    return config.schema_version;
}

/// Parses and compiles the configuration `text[0..len]` as the filter does.
/// Returns `ok`, `refused` (the filter's reason is written to `why`, at most
/// `why_cap` bytes, its length to `why_len`) or `out_of_memory`. Thread-safe:
/// every call has its own arena.
export fn mcpgw_check_config(text: [*]const u8, len: usize, why: [*]u8, why_cap: usize, why_len: *usize) c_int {
    why_len.* = 0;
    var arena = std.heap.ArenaAllocator.init(std.heap.page_allocator);
    defer arena.deinit();
    var reason: []const u8 = "";
    _ = config.parse(arena.allocator(), arena.allocator(), text[0..len], &reason) catch |err| switch (err) {
        error.OutOfMemory => return out_of_memory,
        error.InvalidConfig => {
            const n = @min(reason.len, why_cap);
            @memcpy(why[0..n], reason[0..n]);
            why_len.* = n;
            return refused;
        },
    };
    return ok;
}

test "the schema the library reports is the one the parser reads" {
    try std.testing.expectEqual(config.schema_version, mcpgw_config_schema());
    var why: [256]u8 = undefined;
    var n: usize = 0;
    const other =
        \\{"schema": 999, "server": {"name": "s", "version": "1"}, "base_path": "/m"}
    ;
    try std.testing.expectEqual(refused, mcpgw_check_config(other.ptr, other.len, &why, why.len, &n));
    try std.testing.expect(std.mem.startsWith(u8, why[0..n], "schema: "));
}

test "a configuration the filter refuses is refused with its reason" {
    var why: [256]u8 = undefined;
    var n: usize = 0;
    const good =
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "upstream": {"cluster": "c"}, "tools": []}
    ;
    try std.testing.expectEqual(ok, mcpgw_check_config(good.ptr, good.len, &why, why.len, &n));
    const bad =
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "upstream": {"cluster": "c"},
        \\ "tools": [{"name": "a", "request": {"path": [], "headers": [{"name": "Host", "value": []}]}}]}
    ;
    try std.testing.expectEqual(refused, mcpgw_check_config(bad.ptr, bad.len, &why, why.len, &n));
    try std.testing.expect(std.mem.startsWith(u8, why[0..n], "tools[0].request.headers[0].name"));
    // Truncated to the buffer, never past it.
    try std.testing.expectEqual(refused, mcpgw_check_config(bad.ptr, bad.len, &why, 5, &n));
    try std.testing.expectEqual(@as(usize, 5), n);
}
