//! A minimal Proxy-Wasm ABI 0.2.1 binding: host imports (module `env`)
//! wrapped in typed functions, host-owned buffers, header-map
//! serialisation, and `exportAbi`, which exports the `proxy_on_*` entry
//! points and forwards them to a handler type. No filter logic lives here.
//!
//! Entry points the handler does not declare are not exported: the host then
//! skips the VM call entirely and applies its own default (continue), which
//! is what a no-op hook would return anyway, minus a VM crossing. A handler
//! can set `pub const export_default_hooks = true` to export them all.

const std = @import("std");

// ------------------------------------------------------------------ types

pub const Status = enum(u32) {
    ok = 0,
    not_found = 1,
    bad_argument = 2,
    serialization_failure = 3,
    parse_failure = 4,
    invalid_memory_access = 6,
    empty = 7,
    cas_mismatch = 8,
    internal_failure = 10,
    unimplemented = 12,
    _,
};

pub const LogLevel = enum(u32) { trace = 0, debug = 1, info = 2, warn = 3, err = 4, critical = 5 };

/// `discard` only from body callbacks: StopIterationNoBuffer, the rest of a
/// body the filter already answered is dropped instead of buffered.
pub const Action = enum(u32) { @"continue" = 0, pause = 1, discard = 3 };

pub const BufferType = enum(u32) {
    http_request_body = 0,
    http_response_body = 1,
    downstream_data = 2,
    upstream_data = 3,
    http_call_response_body = 4,
    grpc_receive_buffer = 5,
    vm_configuration = 6,
    plugin_configuration = 7,
    call_data = 8,
};

pub const MapType = enum(u32) {
    http_request_headers = 0,
    http_request_trailers = 1,
    http_response_headers = 2,
    http_response_trailers = 3,
    grpc_receive_initial_metadata = 4,
    grpc_receive_trailing_metadata = 5,
    http_call_response_headers = 6,
    http_call_response_trailers = 7,
};

pub const StreamType = enum(u32) { http_request = 0, http_response = 1, downstream = 2, upstream = 3 };

// ---------------------------------------------------------------- imports

const host = struct {
    extern "env" fn proxy_log(level: LogLevel, data: [*]const u8, size: usize) Status;
    extern "env" fn proxy_get_log_level(ret: *LogLevel) Status;
    extern "env" fn proxy_get_buffer_bytes(t: BufferType, start: usize, max: usize, ret_data: *?[*]u8, ret_size: *usize) Status;
    extern "env" fn proxy_get_header_map_value(t: MapType, key: [*]const u8, key_size: usize, ret_data: *?[*]u8, ret_size: *usize) Status;
    extern "env" fn proxy_get_header_map_pairs(t: MapType, ret_data: *?[*]u8, ret_size: *usize) Status;
    extern "env" fn proxy_send_local_response(
        status_code: u32,
        details: [*]const u8,
        details_size: usize,
        body: [*]const u8,
        body_size: usize,
        headers: [*]const u8,
        headers_size: usize,
        grpc_status: i32,
    ) Status;
    extern "env" fn proxy_http_call(
        upstream: [*]const u8,
        upstream_size: usize,
        headers: [*]const u8,
        headers_size: usize,
        body: [*]const u8,
        body_size: usize,
        trailers: [*]const u8,
        trailers_size: usize,
        timeout_ms: u32,
        ret_token: *u32,
    ) Status;
    extern "env" fn proxy_get_status(ret_code: *u32, ret_data: *?[*]u8, ret_size: *usize) Status;
    extern "env" fn proxy_set_effective_context(context_id: u32) Status;
    extern "env" fn proxy_continue_stream(t: StreamType) Status;
    extern "env" fn proxy_close_stream(t: StreamType) Status;
    extern "env" fn proxy_get_property(path: [*]const u8, path_size: usize, ret_data: *?[*]u8, ret_size: *usize) Status;
    extern "env" fn proxy_set_property(path: [*]const u8, path_size: usize, value: [*]const u8, value_size: usize) Status;
    extern "env" fn proxy_done() Status;
    extern "env" fn proxy_define_metric(t: MetricType, name: [*]const u8, name_size: usize, ret_id: *u32) Status;
    extern "env" fn proxy_record_metric(id: u32, value: u64) Status;
    extern "env" fn proxy_increment_metric(id: u32, offset: i64) Status;
    extern "env" fn proxy_get_current_time_nanoseconds(ret_time: *u64) Status;
    extern "env" fn proxy_get_shared_data(key: [*]const u8, key_size: usize, ret_data: *?[*]u8, ret_size: *usize, ret_cas: *u32) Status;
    extern "env" fn proxy_set_shared_data(key: [*]const u8, key_size: usize, value: [*]const u8, value_size: usize, cas: u32) Status;
    extern "env" fn proxy_replace_header_map_value(t: MapType, key: [*]const u8, key_size: usize, value: [*]const u8, value_size: usize) Status;
    extern "env" fn proxy_remove_header_map_value(t: MapType, key: [*]const u8, key_size: usize) Status;
};

pub const MetricType = enum(u32) { counter = 0, gauge = 1, histogram = 2 };

// ------------------------------------------------------- host-owned memory

/// The host hands out buffers it allocated through
/// `proxy_on_memory_allocate`. Each allocation carries its size in a
/// header, so freeing does not depend on the size the host reports.
const header_size = 8;

pub fn hostAlloc(size: usize) ?[*]u8 {
    const total = std.math.add(usize, size, header_size) catch return null;
    const block = allocator().alignedAlloc(u8, .@"8", total) catch return null;
    std.mem.writeInt(usize, block[0..@sizeOf(usize)], size, .little);
    return block.ptr + header_size;
}

pub fn hostFree(ptr: [*]u8) void {
    const base: [*]align(8) u8 = @alignCast(ptr - header_size);
    const size = std.mem.readInt(usize, base[0..@sizeOf(usize)], .little);
    allocator().free(base[0 .. size + header_size]);
}

/// A buffer returned by the host; call `free` when done.
pub const HostBytes = struct {
    ptr: ?[*]u8,
    len: usize,

    pub fn slice(self: HostBytes) []const u8 {
        const p = self.ptr orelse return "";
        return p[0..self.len];
    }

    pub fn free(self: HostBytes) void {
        if (self.ptr) |p| hostFree(p);
    }
};

/// The VM's general allocator. `wasm_allocator` is a size-class allocator
/// over `memory.grow`, made for exactly this single-threaded setting.
pub fn allocator() std.mem.Allocator {
    return std.heap.wasm_allocator;
}

// --------------------------------------------------------------- hostcalls

/// Zig gives empty slices a dangling pointer; the host bounds-checks every
/// (pointer, size) pair even when size is 0, so hand it a real address.
var empty_byte: u8 = 0;

fn addr(s: []const u8) [*]const u8 {
    return if (s.len == 0) @ptrCast(&empty_byte) else s.ptr;
}

pub fn log(level: LogLevel, message: []const u8) void {
    _ = host.proxy_log(level, addr(message), message.len);
}

/// Formats into a stack buffer; long messages are truncated, never lost.
pub fn logf(level: LogLevel, comptime fmt: []const u8, args: anytype) void {
    var buf: [2048]u8 = undefined;
    const msg = std.fmt.bufPrint(&buf, fmt, args) catch blk: {
        const marker = "...";
        @memcpy(buf[buf.len - marker.len ..], marker);
        break :blk buf[0..];
    };
    log(level, msg);
}

pub fn getBufferBytes(t: BufferType, start: usize, max: usize) ?HostBytes {
    var data: ?[*]u8 = null;
    var size: usize = 0;
    if (host.proxy_get_buffer_bytes(t, start, max, &data, &size) != .ok) return null;
    return .{ .ptr = data, .len = size };
}

/// Sets a property of the stream. Envoy keeps it as filter state
/// `wasm.<path>` (its Wasm ABI cannot write dynamic metadata), which access
/// logs read as `%FILTER_STATE(wasm.<path>:PLAIN)%`.
pub fn setProperty(path: []const u8, value: []const u8) Status {
    return host.proxy_set_property(addr(path), path.len, addr(value), value.len);
}

/// A property of the stream (`path`: its segments joined by NUL, e.g.
/// `metadata\x00filter_metadata\x00<namespace>\x00<key>`); null when absent.
pub fn getProperty(path: []const u8) ?HostBytes {
    var data: ?[*]u8 = null;
    var size: usize = 0;
    if (host.proxy_get_property(addr(path), path.len, &data, &size) != .ok) return null;
    return .{ .ptr = data, .len = size };
}

pub fn getHeaderValue(t: MapType, key: []const u8) ?HostBytes {
    var data: ?[*]u8 = null;
    var size: usize = 0;
    if (host.proxy_get_header_map_value(t, addr(key), key.len, &data, &size) != .ok) return null;
    return .{ .ptr = data, .len = size };
}

/// Defines a metric (Envoy names it `wasmcustom.<name>`); null when the host refuses.
pub fn defineMetric(t: MetricType, name: []const u8) ?u32 {
    var id: u32 = 0;
    if (host.proxy_define_metric(t, addr(name), name.len, &id) != .ok) return null;
    return id;
}

pub fn recordMetric(id: u32, value: u64) void {
    _ = host.proxy_record_metric(id, value);
}

/// Adds `offset` to a counter.
pub fn incrementMetric(id: u32, offset: i64) void {
    _ = host.proxy_increment_metric(id, offset);
}

/// Wall-clock time in unix nanoseconds (the host's system time).
pub fn nowNs() u64 {
    var ns: u64 = 0;
    _ = host.proxy_get_current_time_nanoseconds(&ns);
    return ns;
}

/// Wall-clock time in unix milliseconds (the host's system time).
pub fn nowMs() u64 {
    var ns: u64 = 0;
    _ = host.proxy_get_current_time_nanoseconds(&ns);
    return ns / std.time.ns_per_ms;
}

/// Fills `buf` from the host's CSPRNG (WASI `random_get`, which Envoy
/// implements with BoringSSL's `RAND_bytes`). False when the host refuses.
pub fn randomBytes(buf: []u8) bool {
    return std.os.wasi.random_get(buf.ptr, buf.len) == .SUCCESS;
}

pub const SharedValue = struct { value: HostBytes, cas: u32 };

/// A value of the host's shared data (one store per VM id, shared by every
/// worker); null when the key was never set.
pub fn getSharedData(key: []const u8) ?SharedValue {
    var data: ?[*]u8 = null;
    var size: usize = 0;
    var cas: u32 = 0;
    if (host.proxy_get_shared_data(addr(key), key.len, &data, &size, &cas) != .ok) return null;
    return .{ .value = .{ .ptr = data, .len = size }, .cas = cas };
}

/// Sets a shared-data value; with `cas` other than 0 only if nobody wrote
/// it since that `getSharedData` (`.cas_mismatch` otherwise).
pub fn setSharedData(key: []const u8, value: []const u8, cas: u32) Status {
    return host.proxy_set_shared_data(addr(key), key.len, addr(value), value.len, cas);
}

/// Sets a header to one value, dropping every value it had.
pub fn replaceHeader(t: MapType, name: []const u8, value: []const u8) Status {
    return host.proxy_replace_header_map_value(t, addr(name), name.len, addr(value), value.len);
}

/// Removes a header (every value it had).
pub fn removeHeader(t: MapType, name: []const u8) Status {
    return host.proxy_remove_header_map_value(t, addr(name), name.len);
}

/// Serialized pairs; decode with `deserializeHeaders`, or look single names
/// up with `findHeader` without decoding.
pub fn getHeaderPairs(t: MapType) ?HostBytes {
    var data: ?[*]u8 = null;
    var size: usize = 0;
    if (host.proxy_get_header_map_pairs(t, &data, &size) != .ok) return null;
    return .{ .ptr = data, .len = size };
}

/// `headers` is a serialized map (see `serializeHeaders`).
pub fn sendLocalResponse(status_code: u32, details: []const u8, body: []const u8, headers: []const u8) Status {
    return host.proxy_send_local_response(status_code, addr(details), details.len, addr(body), body.len, addr(headers), headers.len, -1);
}

pub fn httpCall(upstream: []const u8, headers: []const u8, body: []const u8, timeout_ms: u32) error{HttpCallFailed}!u32 {
    var token: u32 = 0;
    const trailers = comptime serializeHeadersComptime(&.{});
    const st = host.proxy_http_call(addr(upstream), upstream.len, addr(headers), headers.len, addr(body), body.len, addr(trailers), trailers.len, timeout_ms, &token);
    if (st != .ok) {
        last_http_call_status = st;
        return error.HttpCallFailed;
    }
    return token;
}

/// Status of the last failed `httpCall`, for error messages.
pub var last_http_call_status: Status = .ok;

pub const CallStatus = struct { code: u32, message: HostBytes };

/// In `proxy_on_http_call_response`: why the call failed, when it did.
pub fn getStatus() ?CallStatus {
    var code: u32 = 0;
    var data: ?[*]u8 = null;
    var size: usize = 0;
    if (host.proxy_get_status(&code, &data, &size) != .ok) return null;
    return .{ .code = code, .message = .{ .ptr = data, .len = size } };
}

pub fn setEffectiveContext(context_id: u32) Status {
    return host.proxy_set_effective_context(context_id);
}

pub fn continueStream(t: StreamType) Status {
    return host.proxy_continue_stream(t);
}

pub fn closeStream(t: StreamType) Status {
    return host.proxy_close_stream(t);
}

pub fn done() Status {
    return host.proxy_done();
}

/// Panic handler for the root file (`pub const panic =
/// std.debug.FullPanic(proxywasm.panic);`): the default one writes to
/// stderr through WASI calls Envoy does not provide. Logging through the
/// host and trapping fails only the current callback; the host then marks
/// the VM as failed.
pub fn panic(message: []const u8, first_trace_addr: ?usize) noreturn {
    _ = first_trace_addr;
    logf(.critical, "wasm panic: {s}", .{message});
    @trap();
}

// ------------------------------------------------------ header map format
//
// u32 count, then count pairs of (u32 key length, u32 value length), then
// each key and value followed by a NUL byte. All integers little-endian.

pub fn serializedSize(pairs: anytype) usize {
    var n: usize = 4 + 8 * pairs.len;
    for (pairs) |p| n += p.name.len + p.value.len + 2;
    return n;
}

/// `pairs` is a slice of anything with `name` and `value` byte slices.
pub fn serializeHeaders(gpa: std.mem.Allocator, pairs: anytype) std.mem.Allocator.Error![]u8 {
    const buf = try gpa.alloc(u8, serializedSize(pairs));
    serializeInto(buf, pairs);
    return buf;
}

pub fn serializeHeadersComptime(comptime pairs: []const struct { name: []const u8, value: []const u8 }) []const u8 {
    comptime {
        var buf: [serializedSize(pairs)]u8 = undefined;
        serializeInto(&buf, pairs);
        const final = buf;
        return &final;
    }
}

fn serializeInto(buf: []u8, pairs: anytype) void {
    std.mem.writeInt(u32, buf[0..4], @intCast(pairs.len), .little);
    var sizes: usize = 4;
    var data: usize = 4 + 8 * pairs.len;
    for (pairs) |p| {
        std.mem.writeInt(u32, buf[sizes..][0..4], @intCast(p.name.len), .little);
        std.mem.writeInt(u32, buf[sizes + 4 ..][0..4], @intCast(p.value.len), .little);
        sizes += 8;
        @memcpy(buf[data..][0..p.name.len], p.name);
        data += p.name.len;
        buf[data] = 0;
        data += 1;
        @memcpy(buf[data..][0..p.value.len], p.value);
        data += p.value.len;
        buf[data] = 0;
        data += 1;
    }
}

/// The value of the first pair named `name` (exact bytes; Envoy hands header
/// names over lower-cased) in a serialized map, pointing into `data`; null
/// when absent or when the map is malformed. Reading every request header
/// the filter needs from one `getHeaderPairs` costs one host call and one
/// allocation instead of one of each per header.
pub fn findHeader(data: []const u8, name: []const u8) ?[]const u8 {
    if (data.len < 4) return null;
    const n = std.mem.readInt(u32, data[0..4], .little);
    if (n > (data.len - 4) / 8) return null;
    var sizes: usize = 4;
    var pos: usize = 4 + 8 * @as(usize, n);
    var i: u32 = 0;
    while (i < n) : (i += 1) {
        const klen = std.mem.readInt(u32, data[sizes..][0..4], .little);
        const vlen = std.mem.readInt(u32, data[sizes + 4 ..][0..4], .little);
        sizes += 8;
        if (pos + klen + vlen + 2 > data.len) return null;
        if (klen == name.len and std.mem.eql(u8, data[pos..][0..klen], name)) return data[pos + klen + 1 ..][0..vlen];
        pos += klen + vlen + 2;
    }
    return null;
}

/// Decodes a serialized map into `T{ .name, .value }` items that point into
/// `data`. Returns error.Malformed when the sizes do not add up.
pub fn deserializeHeaders(comptime T: type, gpa: std.mem.Allocator, data: []const u8) error{ OutOfMemory, Malformed }![]T {
    if (data.len == 0) return &.{};
    if (data.len < 4) return error.Malformed;
    const n = std.mem.readInt(u32, data[0..4], .little);
    if (n > (data.len - 4) / 8) return error.Malformed;
    const out = try gpa.alloc(T, n);
    errdefer gpa.free(out);
    var sizes: usize = 4;
    var pos: usize = 4 + 8 * @as(usize, n);
    for (out) |*item| {
        const klen = std.mem.readInt(u32, data[sizes..][0..4], .little);
        const vlen = std.mem.readInt(u32, data[sizes + 4 ..][0..4], .little);
        sizes += 8;
        if (pos + klen + vlen + 2 > data.len) return error.Malformed;
        item.* = .{ .name = data[pos..][0..klen], .value = data[pos + klen + 1 ..][0..vlen] };
        pos += klen + vlen + 2;
    }
    return out;
}

// ---------------------------------------------------------------- exports

/// Exports the ABI entry points, forwarding to `H`'s declarations:
/// onVmStart, onConfigure, onContextCreate, onDone, onDelete, onLog, onTick,
/// onRequestHeaders, onRequestBody, onRequestTrailers, onResponseHeaders,
/// onResponseBody, onResponseTrailers, onHttpCallResponse, onQueueReady.
/// Call from a `comptime` block of the root file.
pub fn exportAbi(comptime H: type) void {
    const all = @hasDecl(H, "export_default_hooks") and H.export_default_hooks;
    const E = struct {
        fn abiVersion() callconv(.c) void {}
        fn memoryAllocate(size: usize) callconv(.c) ?[*]u8 {
            return hostAlloc(size);
        }
        fn contextCreate(id: u32, parent: u32) callconv(.c) void {
            if (@hasDecl(H, "onContextCreate")) H.onContextCreate(id, parent);
        }
        fn vmStart(id: u32, size: usize) callconv(.c) u32 {
            return @intFromBool(if (@hasDecl(H, "onVmStart")) H.onVmStart(id, size) else true);
        }
        fn configure(id: u32, size: usize) callconv(.c) u32 {
            return @intFromBool(if (@hasDecl(H, "onConfigure")) H.onConfigure(id, size) else true);
        }
        fn onDone(id: u32) callconv(.c) u32 {
            return @intFromBool(if (@hasDecl(H, "onDone")) H.onDone(id) else true);
        }
        fn onDelete(id: u32) callconv(.c) void {
            if (@hasDecl(H, "onDelete")) H.onDelete(id);
        }
        fn onLog(id: u32) callconv(.c) void {
            if (@hasDecl(H, "onLog")) H.onLog(id);
        }
        fn onTick(id: u32) callconv(.c) void {
            if (@hasDecl(H, "onTick")) H.onTick(id);
        }
        fn onQueueReady(id: u32, queue: u32) callconv(.c) void {
            if (@hasDecl(H, "onQueueReady")) H.onQueueReady(id, queue);
        }
        fn requestHeaders(id: u32, n: usize, eos: u32) callconv(.c) Action {
            return if (@hasDecl(H, "onRequestHeaders")) H.onRequestHeaders(id, n, eos != 0) else .@"continue";
        }
        fn requestBody(id: u32, size: usize, eos: u32) callconv(.c) Action {
            return if (@hasDecl(H, "onRequestBody")) H.onRequestBody(id, size, eos != 0) else .@"continue";
        }
        fn requestTrailers(id: u32, n: usize) callconv(.c) Action {
            return if (@hasDecl(H, "onRequestTrailers")) H.onRequestTrailers(id, n) else .@"continue";
        }
        fn responseHeaders(id: u32, n: usize, eos: u32) callconv(.c) Action {
            return if (@hasDecl(H, "onResponseHeaders")) H.onResponseHeaders(id, n, eos != 0) else .@"continue";
        }
        fn responseBody(id: u32, size: usize, eos: u32) callconv(.c) Action {
            return if (@hasDecl(H, "onResponseBody")) H.onResponseBody(id, size, eos != 0) else .@"continue";
        }
        fn responseTrailers(id: u32, n: usize) callconv(.c) Action {
            return if (@hasDecl(H, "onResponseTrailers")) H.onResponseTrailers(id, n) else .@"continue";
        }
        fn metadata(id: u32, n: usize) callconv(.c) Action {
            _ = id;
            _ = n;
            return .@"continue";
        }
        fn httpCallResponse(id: u32, token: u32, headers: usize, body: usize, trailers: usize) callconv(.c) void {
            if (@hasDecl(H, "onHttpCallResponse")) H.onHttpCallResponse(id, token, headers, body, trailers);
        }
        fn newConnection(id: u32) callconv(.c) Action {
            _ = id;
            return .@"continue";
        }
        fn connectionData(id: u32, size: usize, eos: u32) callconv(.c) Action {
            _ = .{ id, size, eos };
            return .@"continue";
        }
        fn connectionClose(id: u32, peer: u32) callconv(.c) void {
            _ = .{ id, peer };
        }
        fn grpcMetadata(id: u32, token: u32, n: usize) callconv(.c) void {
            _ = .{ id, token, n };
        }
        fn grpcClose(id: u32, token: u32, code: u32) callconv(.c) void {
            _ = .{ id, token, code };
        }
    };

    @export(&E.abiVersion, .{ .name = "proxy_abi_version_0_2_1" });
    @export(&E.memoryAllocate, .{ .name = "proxy_on_memory_allocate" });
    @export(&E.contextCreate, .{ .name = "proxy_on_context_create" });
    @export(&E.vmStart, .{ .name = "proxy_on_vm_start" });
    @export(&E.configure, .{ .name = "proxy_on_configure" });
    // Optional in the ABI: when absent the host skips the call (one VM
    // crossing less per stream) and treats the context as done.
    if (all or @hasDecl(H, "onDone")) @export(&E.onDone, .{ .name = "proxy_on_done" });
    @export(&E.onDelete, .{ .name = "proxy_on_delete" });
    if (all or @hasDecl(H, "onLog")) @export(&E.onLog, .{ .name = "proxy_on_log" });
    if (all or @hasDecl(H, "onTick")) @export(&E.onTick, .{ .name = "proxy_on_tick" });
    if (all or @hasDecl(H, "onQueueReady")) @export(&E.onQueueReady, .{ .name = "proxy_on_queue_ready" });
    if (all or @hasDecl(H, "onRequestHeaders")) @export(&E.requestHeaders, .{ .name = "proxy_on_request_headers" });
    if (all or @hasDecl(H, "onRequestBody")) @export(&E.requestBody, .{ .name = "proxy_on_request_body" });
    if (all or @hasDecl(H, "onRequestTrailers")) @export(&E.requestTrailers, .{ .name = "proxy_on_request_trailers" });
    if (all or @hasDecl(H, "onResponseHeaders")) @export(&E.responseHeaders, .{ .name = "proxy_on_response_headers" });
    if (all or @hasDecl(H, "onResponseBody")) @export(&E.responseBody, .{ .name = "proxy_on_response_body" });
    if (all or @hasDecl(H, "onResponseTrailers")) @export(&E.responseTrailers, .{ .name = "proxy_on_response_trailers" });
    if (all or @hasDecl(H, "onHttpCallResponse")) @export(&E.httpCallResponse, .{ .name = "proxy_on_http_call_response" });
    if (all) {
        @export(&E.metadata, .{ .name = "proxy_on_request_metadata" });
        @export(&E.metadata, .{ .name = "proxy_on_response_metadata" });
        @export(&E.newConnection, .{ .name = "proxy_on_new_connection" });
        @export(&E.connectionData, .{ .name = "proxy_on_downstream_data" });
        @export(&E.connectionData, .{ .name = "proxy_on_upstream_data" });
        @export(&E.connectionClose, .{ .name = "proxy_on_downstream_connection_close" });
        @export(&E.connectionClose, .{ .name = "proxy_on_upstream_connection_close" });
        @export(&E.grpcMetadata, .{ .name = "proxy_on_grpc_receive_initial_metadata" });
        @export(&E.grpcMetadata, .{ .name = "proxy_on_grpc_receive_trailing_metadata" });
        @export(&E.grpcMetadata, .{ .name = "proxy_on_grpc_receive" });
        @export(&E.grpcClose, .{ .name = "proxy_on_grpc_close" });
    }
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

const Pair = struct { name: []const u8, value: []const u8 };

test "header map round trip" {
    const pairs = [_]Pair{
        .{ .name = ":status", .value = "200" },
        .{ .name = "x-empty", .value = "" },
        .{ .name = "content-type", .value = "application/json" },
    };
    const buf = try serializeHeaders(testing.allocator, &pairs);
    defer testing.allocator.free(buf);
    try testing.expectEqual(serializedSize(&pairs), buf.len);
    try testing.expectEqualSlices(u8, &.{ 3, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0 }, buf[0..12]);
    try testing.expectEqualStrings(":status\x00200\x00", buf[28..40]);

    const back = try deserializeHeaders(Pair, testing.allocator, buf);
    defer testing.allocator.free(back);
    try testing.expectEqual(@as(usize, 3), back.len);
    for (pairs, back) |a, b| {
        try testing.expectEqualStrings(a.name, b.name);
        try testing.expectEqualStrings(a.value, b.value);
    }
}

test "comptime header map equals runtime one" {
    const ct = comptime serializeHeadersComptime(&.{.{ .name = "content-type", .value = "application/json" }});
    const rt = try serializeHeaders(testing.allocator, &[_]Pair{.{ .name = "content-type", .value = "application/json" }});
    defer testing.allocator.free(rt);
    try testing.expectEqualSlices(u8, rt, ct);
    try testing.expectEqualSlices(u8, &.{ 0, 0, 0, 0 }, comptime serializeHeadersComptime(&.{}));
}

test "findHeader looks names up without decoding" {
    const pairs = [_]Pair{
        .{ .name = ":path", .value = "/mcp/a/b?x=1" },
        .{ .name = ":method", .value = "POST" },
        .{ .name = "x-empty", .value = "" },
        .{ .name = ":method", .value = "GET" },
    };
    const buf = try serializeHeaders(testing.allocator, &pairs);
    defer testing.allocator.free(buf);
    try testing.expectEqualStrings("/mcp/a/b?x=1", findHeader(buf, ":path").?);
    try testing.expectEqualStrings("POST", findHeader(buf, ":method").?);
    try testing.expectEqualStrings("", findHeader(buf, "x-empty").?);
    try testing.expect(findHeader(buf, ":pat") == null);
    try testing.expect(findHeader(buf, "authorization") == null);
    try testing.expect(findHeader("", ":path") == null);
    try testing.expect(findHeader("\x09\x00\x00\x00", ":path") == null);
    try testing.expect(findHeader(buf[0 .. buf.len - 3], ":method") != null);
    try testing.expect(findHeader(buf[0 .. buf.len - 3], "nothere") == null);
}

test "malformed header maps are rejected" {
    try testing.expectEqual(@as(usize, 0), (try deserializeHeaders(Pair, testing.allocator, "")).len);
    try testing.expectError(error.Malformed, deserializeHeaders(Pair, testing.allocator, "\x01\x00"));
    try testing.expectError(error.Malformed, deserializeHeaders(Pair, testing.allocator, "\x09\x00\x00\x00"));
    try testing.expectError(error.Malformed, deserializeHeaders(Pair, testing.allocator, "\x01\x00\x00\x00\x05\x00\x00\x00\x01\x00\x00\x00ab\x00c\x00"));
}
