//! Test-only stand-in for the mcp-server filter: a Proxy-Wasm filter that answers every request
//! itself and traps when the path ends in `/crash`, so a test can fail a worker's VM on purpose
//! (the real filter must not crash on any input). The answer names the VM that gave it: the
//! time it started, in ns, plus a random number (two workers' VMs can start within one tick of
//! the host's clock), unique per VM, so a test sees which VMs answered and that a crashed one
//! was replaced. Built by test_vm_reload.py, never committed as a .wasm.
//! Proxy-Wasm ABI 0.2.1; callbacks the host may skip are left out.

extern "env" fn proxy_get_header_map_value(map: u32, key: [*]const u8, key_size: usize, data: *?[*]u8, size: *usize) u32;
extern "env" fn proxy_send_local_response(code: u32, details: [*]const u8, details_size: usize, body: [*]const u8, body_size: usize, headers: [*]const u8, headers_size: usize, grpc_status: i32) u32;
extern "env" fn proxy_get_current_time_nanoseconds(time: *u64) u32;
extern "wasi_snapshot_preview1" fn random_get(buf: [*]u8, len: usize) u16;

const request_headers = 0; // MapType.HttpRequestHeaders
const pause = 1; // Action.Pause: the local reply ends the stream

// Host-returned values land here, bump-allocated, reset per request.
var scratch: [16 * 1024]u8 = undefined;
var used: usize = 0;
var started_ns: u64 = 0;

export fn proxy_abi_version_0_2_1() void {}
export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    if (size > scratch.len - used) return null;
    const start = used;
    used += size;
    return scratch[start..].ptr;
}
export fn proxy_on_context_create(_: u32, _: u32) void {}
export fn proxy_on_vm_start(_: u32, _: usize) bool {
    _ = proxy_get_current_time_nanoseconds(&started_ns);
    var noise: [2]u8 = undefined;
    _ = random_get(&noise, noise.len);
    // The clock's low digits are zero at its resolution: the random number goes there.
    started_ns +%= @as(u64, noise[0]) << 8 | noise[1];
    return true;
}
export fn proxy_on_configure(_: u32, _: usize) bool {
    return true;
}

export fn proxy_on_request_headers(_: u32, _: usize, _: bool) u32 {
    used = 0;
    var data: ?[*]u8 = null;
    var size: usize = 0;
    const path = ":path";
    _ = proxy_get_header_map_value(request_headers, path, path.len, &data, &size);
    const crash = "/crash";
    if (data) |p| if (size >= crash.len and eql(p[size - crash.len .. size], crash)) @trap();

    var body: [32]u8 = undefined;
    var n: usize = 0;
    var v = started_ns;
    // Decimal digits of the start time, most significant last, then reversed.
    while (true) {
        body[n] = '0' + @as(u8, @intCast(v % 10));
        n += 1;
        v /= 10;
        if (v == 0) break;
    }
    var i: usize = 0;
    while (i < n / 2) : (i += 1) {
        const t = body[i];
        body[i] = body[n - 1 - i];
        body[n - 1 - i] = t;
    }
    const details = "crash_filter";
    _ = proxy_send_local_response(200, details, details.len, &body, n, "", 0, -1);
    return pause;
}

fn eql(a: []const u8, b: []const u8) bool {
    if (a.len != b.len) return false;
    for (a, b) |x, y| if (x != y) return false;
    return true;
}
