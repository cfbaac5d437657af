//! The least any Proxy-Wasm filter does for `tools/list`: take the request body into the VM,
//! answer a fixed JSON-RPC result. bench/dataplane.py builds it (never committed) and runs it
//! in its own Envoy, so the row prices the Proxy-Wasm crossings alone, before any MCP work.
//! Proxy-Wasm ABI 0.2.1; every callback the host may skip is left out, like a lean filter.

extern "env" fn proxy_get_buffer_bytes(buffer: u32, start: usize, max: usize, data: *?[*]u8, size: *usize) u32;
extern "env" fn proxy_send_local_response(code: u32, details: [*]const u8, details_size: usize, body: [*]const u8, body_size: usize, headers: [*]const u8, headers_size: usize, grpc_status: i32) u32;

const request_body = 0; // BufferType.HttpRequestBody
const pause = 1; // Action.Pause: the local reply ends the stream

// The same tool the native bridge and mcpgw list (bench/dataplane_configs.py); the bench
// always sends id 1, so the id is fixed too.
const answer =
    \\{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"getPet","description":"Get one pet by id.","inputSchema":{"type":"object","properties":{"id":{"type":"integer","description":"The pet's id."}},"required":["id"]}}]}}
;
const headers = serialized(.{.{ "content-type", "application/json" }});

const serialized = @import("wasm_headers.zig").serialized;

// The host writes the body here; it is the only host buffer alive at a time and is not kept.
var scratch: [64 * 1024]u8 = undefined;

export fn proxy_abi_version_0_2_1() void {}
export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    return if (size <= scratch.len) &scratch else null;
}
export fn proxy_on_context_create(_: u32, _: u32) void {}
export fn proxy_on_vm_start(_: u32, _: usize) bool {
    return true;
}
export fn proxy_on_configure(_: u32, _: usize) bool {
    return true;
}
export fn proxy_on_request_headers(_: u32, _: usize, _: bool) u32 {
    return pause; // wait for the body (allow_on_headers_stop_iteration)
}
export fn proxy_on_request_body(_: u32, size: usize, end_of_stream: bool) u32 {
    if (!end_of_stream) return pause; // Envoy buffers until the last chunk
    var data: ?[*]u8 = null;
    var got: usize = 0;
    _ = proxy_get_buffer_bytes(request_body, 0, size, &data, &got);
    _ = proxy_send_local_response(200, "wasm_floor", 10, answer, answer.len, headers.ptr, headers.len, -1);
    return pause;
}
export fn proxy_on_delete(_: u32) void {}
