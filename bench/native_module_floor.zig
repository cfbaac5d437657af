//! The least an Envoy dynamic module (native code in Envoy's process, no VM) does for
//! `tools/list`: wait for the request body, answer a fixed JSON-RPC result. The native-code
//! counterpart of wasm_floor.zig: bench/dataplane_profile.py builds it (never committed) and
//! runs it as a rung of its ladder, to price what the Proxy-Wasm ABI costs over native code.
//! Dynamic modules ABI v0.2.0 (Envoy 1.40): only this Envoy build is meant to load it.

const Buffer = extern struct { ptr: [*]const u8, len: usize };
const Header = extern struct { key: [*]const u8, key_len: usize, value: [*]const u8, value_len: usize };
const Opaque = ?*anyopaque;

extern fn envoy_dynamic_module_callback_http_send_response(filter: Opaque, status: u32, headers: [*]const Header, headers_len: usize, body: Buffer, details: Buffer) void;

// The same answer as wasm_floor.zig's (the bench always sends id 1).
const answer =
    \\{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"getPet","description":"Get one pet by id.","inputSchema":{"type":"object","properties":{"id":{"type":"integer","description":"The pet's id."}},"required":["id"]}}]}}
;
const content_type = "content-type";
const json = "application/json";
const headers = [_]Header{.{ .key = content_type, .key_len = content_type.len, .value = json, .value_len = json.len }};
const details = "native_module_floor";

const stop_iteration = 1; // request headers: wait for the body; request body: keep buffering
const proceed = 0; // `Continue` for every other hook

// The module keeps no state: every config and filter pointer is this one byte.
var token: u8 = 0;

export fn envoy_dynamic_module_on_program_init() [*:0]const u8 {
    return "v0.2.0";
}
export fn envoy_dynamic_module_on_http_filter_config_new(_: Opaque, _: Buffer, _: Buffer) Opaque {
    return &token;
}
export fn envoy_dynamic_module_on_http_filter_new(_: Opaque, _: Opaque) Opaque {
    return &token;
}
export fn envoy_dynamic_module_on_http_filter_request_headers(_: Opaque, _: Opaque, _: bool) u32 {
    return stop_iteration;
}
export fn envoy_dynamic_module_on_http_filter_request_body(filter: Opaque, _: Opaque, end_of_stream: bool) u32 {
    if (end_of_stream) {
        const body: Buffer = .{ .ptr = answer, .len = answer.len };
        envoy_dynamic_module_callback_http_send_response(filter, 200, &headers, headers.len, body, .{ .ptr = details, .len = details.len });
    }
    return stop_iteration;
}

// Envoy resolves every HTTP filter hook when it loads a module; the rest do nothing here.
export fn envoy_dynamic_module_on_http_filter_config_destroy(_: Opaque) void {}
export fn envoy_dynamic_module_on_http_filter_per_route_config_new(_: Buffer, _: Buffer) Opaque {
    return &token;
}
export fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_: Opaque) void {}
export fn envoy_dynamic_module_on_http_filter_request_trailers(_: Opaque, _: Opaque) u32 {
    return proceed;
}
export fn envoy_dynamic_module_on_http_filter_response_headers(_: Opaque, _: Opaque, _: bool) u32 {
    return proceed;
}
export fn envoy_dynamic_module_on_http_filter_response_body(_: Opaque, _: Opaque, _: bool) u32 {
    return proceed;
}
export fn envoy_dynamic_module_on_http_filter_response_trailers(_: Opaque, _: Opaque) u32 {
    return proceed;
}
export fn envoy_dynamic_module_on_http_filter_local_reply(_: Opaque, _: Opaque, _: u32, _: Buffer, _: Buffer) u32 {
    return proceed;
}
export fn envoy_dynamic_module_on_http_filter_stream_complete(_: Opaque, _: Opaque) void {}
export fn envoy_dynamic_module_on_http_filter_destroy(_: Opaque) void {}
export fn envoy_dynamic_module_on_http_filter_scheduled(_: Opaque, _: Opaque, _: u64) void {}
export fn envoy_dynamic_module_on_http_filter_config_scheduled(_: Opaque, _: Opaque, _: u64) void {}
export fn envoy_dynamic_module_on_http_filter_http_callout_done(_: Opaque, _: Opaque, _: u64, _: u32, _: Opaque, _: usize, _: Opaque, _: usize) void {}
export fn envoy_dynamic_module_on_http_filter_config_http_callout_done(_: Opaque, _: Opaque, _: u64, _: u32, _: Opaque, _: usize, _: Opaque, _: usize) void {}
export fn envoy_dynamic_module_on_http_filter_http_stream_headers(_: Opaque, _: Opaque, _: u64, _: Opaque, _: usize, _: bool) void {}
export fn envoy_dynamic_module_on_http_filter_http_stream_data(_: Opaque, _: Opaque, _: u64, _: Opaque, _: usize, _: bool) void {}
export fn envoy_dynamic_module_on_http_filter_http_stream_trailers(_: Opaque, _: Opaque, _: u64, _: Opaque, _: usize) void {}
export fn envoy_dynamic_module_on_http_filter_http_stream_complete(_: Opaque, _: Opaque, _: u64) void {}
export fn envoy_dynamic_module_on_http_filter_http_stream_reset(_: Opaque, _: Opaque, _: u64, _: u32) void {}
export fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(_: Opaque, _: Opaque, _: u64, _: Opaque, _: usize, _: bool) void {}
export fn envoy_dynamic_module_on_http_filter_config_http_stream_data(_: Opaque, _: Opaque, _: u64, _: Opaque, _: usize, _: bool) void {}
export fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(_: Opaque, _: Opaque, _: u64, _: Opaque, _: usize) void {}
export fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(_: Opaque, _: Opaque, _: u64) void {}
export fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(_: Opaque, _: Opaque, _: u64, _: u32) void {}
export fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(_: Opaque, _: Opaque) void {}
export fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(_: Opaque, _: Opaque) void {}
