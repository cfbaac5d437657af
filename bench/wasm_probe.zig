//! Host-call probe: what each Proxy-Wasm host call the mcpgw filter makes per `tools/list`
//! costs inside Envoy's V8, timed from inside the VM with proxy_get_current_time_nanoseconds.
//! bench/dataplane_profile.py builds it (never committed), runs it in one static Envoy under
//! wrk with the bench's session headers (so the header map matches mcpgw's requests) and reads
//! the running averages it logs every `log_every` requests (the plugin configuration, a decimal
//! count; 20,000 without one) at critical level (shown by `-l warning`). Each figure includes one clock read; the `timer` slot (two reads back to
//! back, nothing between) is that overhead, which the profile subtracts.
//! Proxy-Wasm ABI 0.2.1; callbacks the host may skip are left out, like a lean filter.

const std = @import("std");

extern "env" fn proxy_get_buffer_bytes(buffer: u32, start: usize, max: usize, data: *?[*]u8, size: *usize) u32;
extern "env" fn proxy_get_header_map_pairs(map: u32, data: *?[*]u8, size: *usize) u32;
extern "env" fn proxy_get_header_map_value(map: u32, key: [*]const u8, key_size: usize, data: *?[*]u8, size: *usize) u32;
extern "env" fn proxy_send_local_response(code: u32, details: [*]const u8, details_size: usize, body: [*]const u8, body_size: usize, headers: [*]const u8, headers_size: usize, grpc_status: i32) u32;
extern "env" fn proxy_get_current_time_nanoseconds(time: *u64) u32;
extern "env" fn proxy_get_shared_data(key: [*]const u8, key_size: usize, data: *?[*]u8, size: *usize, cas: *u32) u32;
extern "env" fn proxy_set_shared_data(key: [*]const u8, key_size: usize, value: [*]const u8, value_size: usize, cas: u32) u32;
extern "env" fn proxy_log(level: u32, message: [*]const u8, size: usize) u32;

const request_headers = 0; // MapType.HttpRequestHeaders
const request_body = 0; // BufferType.HttpRequestBody
const plugin_configuration = 7; // BufferType.PluginConfiguration
const pause = 1; // Action.Pause: wait for the body; after the local reply, the stream is over
const critical = 5; // LogLevel.Critical: passes Envoy's `-l warning`
// Set from the plugin configuration: the profile's full run averages over many requests, its
// smoke (seconds of load) over few, so a slow machine still logs a line before the load ends.
var log_every: u64 = 20_000;

// The header names the mcpgw filter looks up one by one for a request.
const names = [_][]const u8{ ":path", "origin", ":method", "accept", "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name" };
// An empty shared-data value, like the filter's empty session slots when nothing has ended.
const slot = "wasm_probe.slot";

/// What is timed, in the order of the log line; the profile parses it by these names.
const Op = enum { pairs, values8, present, absent, shared, timer, body, headers_total };
var total_ns = [_]u64{0} ** @typeInfo(Op).@"enum".fields.len;
var requests: u64 = 0;

const answer =
    \\{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}
;
const headers = serialized(.{.{ "content-type", "application/json" }});

const serialized = @import("wasm_headers.zig").serialized;

// Host-returned values land here, bump-allocated; nothing is kept past the callback that asked
// for it, so every callback starts again at the front (no allocator cost in the timings).
var scratch: [64 * 1024]u8 = undefined;
var used: usize = 0;

export fn proxy_abi_version_0_2_1() void {}
export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    if (size > scratch.len - used) return null;
    const start = used;
    used += size;
    return scratch[start..].ptr;
}
export fn proxy_on_context_create(_: u32, _: u32) void {}
export fn proxy_on_vm_start(_: u32, _: usize) bool {
    return true;
}
export fn proxy_on_configure(_: u32, size: usize) bool {
    _ = proxy_set_shared_data(slot, slot.len, "", 0, 0);
    if (size == 0) return true;
    used = 0;
    var data: ?[*]u8 = null;
    var got: usize = 0;
    if (proxy_get_buffer_bytes(plugin_configuration, 0, size, &data, &got) != 0) return false;
    const text = (data orelse return false)[0..got];
    // A bad count refuses the configuration, so Envoy fails to load the probe instead of
    // logging nothing.
    log_every = std.fmt.parseInt(u64, text, 10) catch return false;
    return log_every > 0;
}

fn now() u64 {
    var t: u64 = 0;
    _ = proxy_get_current_time_nanoseconds(&t);
    return t;
}

/// Adds the time since `last.*` to `op` and moves `last` on, so each step is timed from the
/// clock read that ended the step before (one clock read per step).
fn lap(op: Op, last: *u64) void {
    const t = now();
    total_ns[@intFromEnum(op)] += t - last.*;
    last.* = t;
}

export fn proxy_on_request_headers(_: u32, _: usize, _: bool) u32 {
    used = 0;
    var data: ?[*]u8 = null;
    var size: usize = 0;
    const start = now();
    var last = start;
    _ = proxy_get_header_map_pairs(request_headers, &data, &size);
    lap(.pairs, &last);
    for (names) |name| _ = proxy_get_header_map_value(request_headers, name.ptr, name.len, &data, &size);
    lap(.values8, &last);
    _ = proxy_get_header_map_value(request_headers, ":path", 5, &data, &size);
    lap(.present, &last);
    _ = proxy_get_header_map_value(request_headers, "mcp-name", 8, &data, &size);
    lap(.absent, &last);
    var cas: u32 = 0;
    _ = proxy_get_shared_data(slot, slot.len, &data, &size, &cas);
    lap(.shared, &last);
    lap(.timer, &last); // nothing between: the cost of one clock read
    total_ns[@intFromEnum(Op.headers_total)] += last - start;
    return pause; // wait for the body (allow_on_headers_stop_iteration)
}

export fn proxy_on_request_body(_: u32, size: usize, end_of_stream: bool) u32 {
    if (!end_of_stream) return pause; // Envoy buffers until the last chunk
    used = 0;
    var data: ?[*]u8 = null;
    var got: usize = 0;
    var last = now();
    _ = proxy_get_buffer_bytes(request_body, 0, size, &data, &got);
    lap(.body, &last);
    _ = proxy_send_local_response(200, "wasm_probe", 10, answer, answer.len, headers.ptr, headers.len, -1);
    requests += 1;
    if (requests % log_every == 0) report();
    return pause;
}

/// One line: `wasm_probe n=<requests> pairs=<ns> values8=<ns> …`, running averages.
fn report() void {
    var line: [512]u8 = undefined;
    var w: std.Io.Writer = .fixed(&line);
    w.print("wasm_probe n={d}", .{requests}) catch return;
    inline for (@typeInfo(Op).@"enum".fields) |f| {
        w.print(" {s}={d}", .{ f.name, total_ns[f.value] / requests }) catch return;
    }
    const text = w.buffered();
    _ = proxy_log(critical, text.ptr, text.len);
}

export fn proxy_on_delete(_: u32) void {}
