//! The header-map encoding the Proxy-Wasm host reads, for the bench's small filters
//! (wasm_floor.zig, wasm_probe.zig), built at compile time.

/// Pair count, then each name and value size, then the NUL-terminated names and values (all
/// sizes u32 little-endian; wasm32 is little-endian).
pub fn serialized(comptime pairs: anytype) []const u8 {
    comptime var sizes: []const u8 = &@as([4]u8, @bitCast(@as(u32, pairs.len)));
    comptime var text: []const u8 = "";
    inline for (pairs) |p| {
        sizes = sizes ++ @as([4]u8, @bitCast(@as(u32, p[0].len))) ++ @as([4]u8, @bitCast(@as(u32, p[1].len)));
        text = text ++ p[0] ++ "\x00" ++ p[1] ++ "\x00";
    }
    return sizes ++ text;
}
