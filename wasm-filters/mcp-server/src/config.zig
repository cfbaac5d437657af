//! The plugin configuration of CONFIG.md: parsed once per root context and
//! compiled into the shapes the request path uses (template trees, argument
//! checks, a name index for tools, pre-serialised answers, the client
//! credentials passthrough tools need). The JSON tree is parsed into a
//! scratch allocator and dropped after configure; the compiled form is
//! copied out of it (`Store`), as it is all a server keeps per VM.

const std = @import("std");
const jsonw = @import("jsonw.zig");
const Allocator = std.mem.Allocator;
const Value = std.json.Value;
const tpl = @import("template.zig");
const Out = @import("jsonw.zig").Out;
const Store = @import("store.zig").Store;
const proxy = @import("proxy.zig");
const session = @import("session.zig");
const auth_mod = @import("auth.zig");
const jwtidentity = @import("jwtidentity.zig");
const metrics = @import("metrics.zig");

pub const ArgType = enum { string, number, integer, boolean, array, object };

/// What a value must satisfy: a JSON type, membership in `enum`, and for
/// arrays the same for each element.
pub const Check = struct {
    /// null: no type check (the control plane could not name one).
    type: ?ArgType = null,
    one_of: ?[]const Value = null,
    /// `one_of` as compact JSON, for the error message.
    one_of_json: []const u8 = "",
    items: ?*const Check = null,
};

pub const Arg = struct {
    name: []const u8,
    required: bool,
    /// Behind a pointer, as few arguments have one.
    default: ?*const Value,
    check: Check,
};

/// A query parameter or cookie taken from an argument.
pub const ArgRef = struct { name: []const u8, arg: []const u8 };

pub const HeaderTemplate = struct { name: []const u8, value: tpl.Template };

pub const Body = union(enum) {
    template: struct { content_type: []const u8, template: tpl.Template },
    json_args: []const []const u8,
    form_args: []const []const u8,
};

pub const Response = struct {
    body: ?tpl.Template = null,
    prepend: []const u8 = "",
    append: []const u8 = "",
    error_body: ?tpl.Template = null,
    structured: bool = false,
};

pub const Upstream = struct {
    cluster: []const u8,
    authority: []const u8,
    timeout_ms: u32,
};

pub const In = enum { header, query };

/// A credential from the registry, sent as is.
pub const StaticCredential = struct { in: In, name: []const u8, value: []const u8 };

pub const Passthrough = struct {
    /// Index into `Config.credential_sources`: where the stream captured
    /// the client's value.
    source: u32,
    /// As configured, for the error text.
    from_name: []const u8,
    from_prefix: []const u8,
    to_in: In,
    to_name: []const u8,
    to_prefix: []const u8,
};

/// A place in the MCP request a passthrough tool reads its credential from.
/// Header names are lower-case.
pub const CredentialSource = struct { in: In, name: []const u8 };

pub const Tool = struct {
    name: []const u8,
    args: []const Arg,
    upstream: *const Upstream,
    method: []const u8,
    path: tpl.Template,
    query: []const ArgRef,
    headers: []const HeaderTemplate,
    cookies: []const ArgRef,
    body: ?Body,
    static_auth: []const StaticCredential,
    passthrough: ?Passthrough,
    response: Response,
};

/// The start of `Config.initialize_tail`, up to the `serverInfo` object.
pub const initialize_server_info_prefix = "\",\"capabilities\":{\"tools\":{\"listChanged\":false}},\"serverInfo\":";

pub const Config = struct {
    base_path: []const u8,
    max_request_bytes: u32,
    max_response_bytes: u32,
    /// How deep arrays and objects may nest in any JSON this server parses:
    /// client messages and upstream answers (`jsonw.nestingWithin`).
    max_json_depth: u32,
    /// `tools_list` re-serialised once; spliced into every tools/list answer.
    tools_list_json: []const u8,
    /// The initialize result after the protocol version string, so the answer
    /// is three appends: `{"protocolVersion":"` + version + this.
    initialize_tail: []const u8,
    /// Where the `serverInfo` object ends in `initialize_tail` (it starts
    /// right after `initialize_server_info_prefix`); what follows, up to the
    /// closing brace, is the optional `,"instructions":…`. The 2026-07-28
    /// `server/discover` answer is spliced from these parts.
    server_info_end: u32,
    tools: []const Tool,
    by_name: std.StringHashMapUnmanaged(u32),
    /// Distinct client credential locations of all passthrough tools; empty
    /// when there are none, so ordinary servers read no extra headers.
    credential_sources: []const CredentialSource,
    /// Browser origins allowed besides localhost ones, as `Origin` carries
    /// them: lower-case `scheme://host[:port]`, default port dropped.
    allowed_origins: []const []const u8 = &.{},
    /// `tools/list` pages when `page_size` splits the list; empty when it
    /// fits in one (then `tools_list_json` is the answer). Each is a
    /// compact object; all but the last carry `nextCursor`.
    pages: []const []const u8 = &.{},
    /// `cursors[i]` names `pages[i]` (`cursors[0]` is empty: the first page
    /// needs none). Opaque to clients: base64url of `<offset>:<checksum>`,
    /// the checksum over the configuration text, so a cursor from another
    /// configuration is refused.
    cursors: []const []const u8 = &.{},
    /// `type: mcp` servers: the upstream MCP server this one proxies to
    /// (proxy.zig); then `tools` is empty.
    mcp_upstream: ?*const proxy.Upstream = null,
    /// Session tokens (`sessions`): null = no sessions, as before.
    sessions: ?*const session.Sessions = null,
    /// The HTTP+SSE transport's broker (`broker`); null = no `/sse`.
    broker: ?Broker = null,
    /// Who may call (`auth`, auth.zig); null = anyone, as before.
    auth: ?*const auth_mod.Auth = null,
    /// JWT auth (`auth.jwt`, jwtidentity.zig); null = no JWT providers.
    jwt: ?*const jwtidentity.Jwt = null,
    /// Metrics and access-log fields (`observability`, metrics.zig); all
    /// off when the block is absent.
    observability: metrics.Settings = .{},

    pub fn findTool(self: *const Config, name: []const u8) ?*const Tool {
        const idx = self.by_name.get(name) orelse return null;
        return &self.tools[idx];
    }
};

/// Where the filter hands the answers of HTTP+SSE sessions to their stream.
pub const Broker = struct {
    cluster: []const u8,
    timeout_ms: u32,
};

pub const Error = error{ InvalidConfig, OutOfMemory };

// The JSON shapes as delivered. Unknown keys are ignored for forward
// compatibility; every optional key has the default CONFIG.md gives it.
// Templates and argument checks stay `Value`s here and are compiled below.

const RawArg = struct {
    name: []const u8,
    type: ?ArgType = null,
    required: bool = false,
    default: ?Value = null,
    @"enum": ?Value = null,
    items: ?Value = null,
};

const RawHeader = struct { name: []const u8, value: Value };

const RawBody = struct {
    kind: enum { template, json_args, form_args },
    content_type: ?[]const u8 = null,
    template: ?Value = null,
    args: []const []const u8 = &.{},
};

const RawCredentialEnd = struct { in: In, name: []const u8, prefix: []const u8 = "" };

const RawAuth = struct {
    static: []const StaticCredential = &.{},
    passthrough: ?struct { from: RawCredentialEnd, to: RawCredentialEnd } = null,
};

const RawRequest = struct {
    method: []const u8 = "GET",
    path: Value,
    query: []const ArgRef = &.{},
    headers: []const RawHeader = &.{},
    cookies: []const ArgRef = &.{},
    body: ?RawBody = null,
    auth: ?RawAuth = null,
};

const RawResponse = struct {
    body: ?Value = null,
    prepend: ?[]const u8 = null,
    append: ?[]const u8 = null,
    error_body: ?Value = null,
    structured: bool = false,
};

const RawUpstream = struct {
    cluster: []const u8,
    authority: ?[]const u8 = null,
    timeout_ms: u32 = 10000,
};

const RawTool = struct {
    name: []const u8,
    args: []const RawArg = &.{},
    upstream: ?RawUpstream = null,
    request: RawRequest,
    response: ?RawResponse = null,
};

/// The control plane always sends `limits.max_json_depth` (its default is
/// this one); kept here for configurations written by hand and tests.
pub const default_max_json_depth: u32 = 64;
/// The most a configuration may allow. Values are serialised recursively, a
/// few levels deeper than they were parsed; V8 ran out of stack around 6,000
/// levels, so this keeps a wide margin.
pub const max_json_depth_cap: u32 = 1000;

/// The version of the configuration contract (CONFIG.md) this filter reads.
/// The control plane writes it as `schema` in every configuration and checks
/// it against the plugin it serves (`mcpgw_config_schema` in check.zig); a
/// configuration of another schema is refused, never half understood. Raise
/// it with any change an older filter or control plane would misread.
pub const schema_version: u32 = 1;

const RawConfig = struct {
    /// Absent in hand-written configurations and tests: the current schema.
    schema: u32 = schema_version,
    server: struct {
        name: []const u8,
        version: []const u8,
        title: ?[]const u8 = null,
    },
    instructions: ?[]const u8 = null,
    base_path: []const u8,
    upstream: ?RawUpstream = null,
    limits: struct {
        max_request_bytes: u32 = 1048576,
        max_response_bytes: u32 = 4194304,
        max_json_depth: u32 = default_max_json_depth,
    } = .{},
    tools_list: ?Value = null,
    tools: []const RawTool = &.{},
    allowed_origins: []const []const u8 = &.{},
    page_size: u32 = 0,
    mcp_upstream: ?proxy.RawUpstream = null,
    /// Checked field by field in `Compiler.sessions`, for messages that
    /// name the key at fault.
    sessions: ?Value = null,
    broker: ?struct { cluster: []const u8, timeout_ms: u32 = 5000 } = null,
    /// Checked field by field in `auth.compile` and `jwtidentity.compile`.
    auth: ?Value = null,
    observability: ?struct {
        namespace: []const u8,
        server: []const u8,
        metrics: bool = true,
        access_log: bool = true,
        log_arguments: bool = false,
        span_name: bool = false,
    } = null,
};

/// Parses and compiles `text`. The compiled form lives in `out` and points
/// neither into `text` nor into `scratch`, which hold the parse tree and
/// may be freed as soon as this returns. On `error.InvalidConfig`, `why`
/// holds a human-readable reason, in `scratch`.
pub fn parse(out: Allocator, scratch: Allocator, text: []const u8, why: *[]const u8) Error!Config {
    return compile(out, scratch, try parseRaw(scratch, text, why), checksum(text), why);
}

/// A compiled configuration and the one block of memory it lives in.
pub const Compact = struct {
    cfg: Config,
    block: []align(block_align.toByteUnits()) u8,

    pub fn deinit(self: *const Compact, gpa: Allocator) void {
        gpa.free(self.block);
    }
};

const block_align: std.mem.Alignment = .@"16";

/// `parse` with the compiled form in one block from `gpa` of exactly its
/// size. The compiler runs twice over the parse tree: first into scratch,
/// to learn the size, then into the block. An arena would keep the unused
/// tail of its last buffer and the steps it grew by: in wasm, where
/// `wasm_allocator` hands out power-of-two slots, about twice the form.
pub fn parseCompact(gpa: Allocator, scratch: Allocator, text: []const u8, why: *[]const u8) Error!Compact {
    const raw = try parseRaw(scratch, text, why);
    const sum = checksum(text);
    // Most forms are smaller than their text; retried bigger when not.
    var cap: usize = 2 * text.len + 1024;
    const size = while (true) : (cap *= 2) {
        var sizing = Sizing{ .fba = .init(try scratch.alignedAlloc(u8, block_align, cap)) };
        _ = compile(sizing.allocator(), scratch, raw, sum, why) catch |err| {
            if (err == error.OutOfMemory and sizing.full) continue;
            return err;
        };
        break sizing.peak;
    };
    const block = try gpa.alignedAlloc(u8, block_align, size);
    errdefer gpa.free(block);
    // The same allocations in the same order from a buffer with the same
    // alignment: they fit exactly.
    var fba = std.heap.FixedBufferAllocator.init(block);
    return .{ .cfg = try compile(fba.allocator(), scratch, raw, sum, why), .block = block };
}

/// A FixedBufferAllocator that records the most it held and whether it ran
/// out (a failed resize is normal; a failed allocation means too small).
const Sizing = struct {
    fba: std.heap.FixedBufferAllocator,
    peak: usize = 0,
    full: bool = false,

    fn allocator(self: *Sizing) Allocator {
        return .{ .ptr = self, .vtable = &.{ .alloc = alloc, .resize = resize, .remap = remap, .free = free } };
    }

    fn note(self: *Sizing) void {
        self.peak = @max(self.peak, self.fba.end_index);
    }

    fn alloc(ctx: *anyopaque, len: usize, alignment: std.mem.Alignment, ra: usize) ?[*]u8 {
        const self: *Sizing = @ptrCast(@alignCast(ctx));
        defer self.note();
        const p = self.fba.allocator().rawAlloc(len, alignment, ra);
        if (p == null) self.full = true;
        return p;
    }

    fn resize(ctx: *anyopaque, buf: []u8, alignment: std.mem.Alignment, new_len: usize, ra: usize) bool {
        const self: *Sizing = @ptrCast(@alignCast(ctx));
        defer self.note();
        return self.fba.allocator().rawResize(buf, alignment, new_len, ra);
    }

    fn remap(ctx: *anyopaque, buf: []u8, alignment: std.mem.Alignment, new_len: usize, ra: usize) ?[*]u8 {
        const self: *Sizing = @ptrCast(@alignCast(ctx));
        defer self.note();
        return self.fba.allocator().rawRemap(buf, alignment, new_len, ra);
    }

    fn free(ctx: *anyopaque, buf: []u8, alignment: std.mem.Alignment, ra: usize) void {
        const self: *Sizing = @ptrCast(@alignCast(ctx));
        self.fba.allocator().rawFree(buf, alignment, ra);
    }
};

/// The JSON tree, in `scratch`; strings may point into `text`.
fn parseRaw(scratch: Allocator, text: []const u8, why: *[]const u8) Error!RawConfig {
    why.* = "";
    var scanner = std.json.Scanner.initCompleteInput(scratch, text);
    var diag: std.json.Diagnostics = .{};
    scanner.enableDiagnostics(&diag);
    return std.json.parseFromTokenSourceLeaky(RawConfig, scratch, &scanner, .{
        .ignore_unknown_fields = true,
        .duplicate_field_behavior = .use_last,
        // Numbers inside defaults, enums, constants and tools_list keep
        // their original text.
        .parse_numbers = false,
        // Whatever is kept is copied, so strings may point into `text`.
        .allocate = .alloc_if_needed,
    }) catch |err| {
        if (err == error.OutOfMemory) return error.OutOfMemory;
        why.* = try jsonw.allocPrint(scratch, "configuration JSON: {s} at line {d} column {d}", .{
            @errorName(err), diag.getLine(), diag.getColumn(),
        });
        return error.InvalidConfig;
    };
}

/// What `tools/list` cursors are checked against: 32 bits of the
/// configuration text's hash.
fn checksum(text: []const u8) u32 {
    return @truncate(std.hash.Wyhash.hash(0x6d6370, text));
}

fn compile(out: Allocator, scratch: Allocator, raw: RawConfig, sum: u32, why: *[]const u8) Error!Config {
    var store = Store.init(out, scratch);
    var c = Compiler{ .store = &store, .why = why, .checksum = sum };
    return c.config(raw);
}

/// A `tools/list` cursor: base64url (no padding) of `<offset>:<checksum
/// as 8 hex digits>`.
pub fn makeCursor(a: Allocator, offset: usize, sum: u32) Allocator.Error![]const u8 {
    var raw: [40]u8 = undefined;
    const text = std.fmt.bufPrint(&raw, "{d}:{x:0>8}", .{ offset, sum }) catch unreachable;
    const enc = std.base64.url_safe_no_pad.Encoder;
    const buf = try a.alloc(u8, enc.calcSize(text.len));
    return enc.encode(buf, text);
}

/// An origin as browsers send it in `Origin`, lower-case input: `http` or
/// `https`, `://`, a host (a bracketed IPv6 address or letters, digits,
/// `.` and `-`), an optional port; the default port is dropped. null for
/// anything else (a path, userinfo, `null`, another scheme).
pub fn normaliseOrigin(o: []const u8) ?[]const u8 {
    const parts = splitOrigin(o) orelse return null;
    if (parts.port) |p| {
        const default = if (std.mem.eql(u8, parts.scheme, "https")) "443" else "80";
        if (std.mem.eql(u8, p, default)) return o[0 .. o.len - p.len - 1];
    }
    return o;
}

pub const OriginParts = struct { scheme: []const u8, host: []const u8, port: ?[]const u8 };

/// `scheme://host[:port]` of a lower-case origin, or null when malformed.
pub fn splitOrigin(o: []const u8) ?OriginParts {
    const sep = std.mem.indexOf(u8, o, "://") orelse return null;
    const scheme = o[0..sep];
    if (!std.mem.eql(u8, scheme, "http") and !std.mem.eql(u8, scheme, "https")) return null;
    const rest = o[sep + 3 ..];
    var host_end: usize = 0;
    if (rest.len != 0 and rest[0] == '[') {
        const close = std.mem.indexOfScalar(u8, rest, ']') orelse return null;
        for (rest[1..close]) |ch| switch (ch) {
            '0'...'9', 'a'...'f', ':', '.' => {},
            else => return null,
        };
        host_end = close + 1;
    } else {
        while (host_end < rest.len) : (host_end += 1) switch (rest[host_end]) {
            'a'...'z', '0'...'9', '.', '-' => {},
            else => break,
        };
    }
    if (host_end == 0 or (host_end == 2 and rest[0] == '[')) return null;
    const host = rest[0..host_end];
    const tail = rest[host_end..];
    if (tail.len == 0) return .{ .scheme = scheme, .host = host, .port = null };
    if (tail[0] != ':' or tail.len == 1 or tail.len > 6) return null;
    for (tail[1..]) |ch| if (ch < '0' or ch > '9') return null;
    return .{ .scheme = scheme, .host = host, .port = tail[1..] };
}

/// Whether `s` holds a control character other than tab (RFC 9110
/// field-value: CTLs but HTAB are never valid). CR, LF and NUL would end or
/// split a header line; the others (`\x0b`, `\x7f`, ...) make Envoy's codec
/// refuse the request, which the client would see as a failed upstream.
/// The control plane checks credentials and templates with the same rule.
pub fn hasControl(s: []const u8) bool {
    for (s) |ch| if ((ch < 0x20 and ch != '\t') or ch == 0x7f) return true;
    return false;
}

/// Why the gateway never sends a header named `name` (lower-case or not)
/// that the registry controls (templates, header arguments, credential
/// headers), or null when it may. The gateway owns the framing and routing
/// of every upstream request: a registry-chosen `transfer-encoding` or
/// `content-length` lets an argument smuggle a second request to the
/// backend over a pooled connection, `host` a second authority. The
/// control plane refuses the same names (`registry/headers.py`).
pub fn headerNameProblem(name: []const u8) ?[]const u8 {
    if (name.len == 0) return "must not be empty";
    if (name[0] == ':') return "pseudo-headers are set by the gateway";
    if (!isToken(name)) return "not an HTTP header name (RFC 9110 token characters only)";
    const owned = [_][]const u8{
        "host", "content-length", "transfer-encoding", "connection", "keep-alive",
        "te",   "trailer",        "upgrade",           "expect",     "http2-settings",
    };
    for (owned) |o| if (std.ascii.eqlIgnoreCase(name, o))
        return "set by the gateway or hop-by-hop (it frames or routes the upstream request)";
    if (std.ascii.startsWithIgnoreCase(name, "proxy-")) return "proxy-* headers are hop-by-hop";
    if (std.ascii.startsWithIgnoreCase(name, "x-envoy-")) return "x-envoy-* headers control Envoy";
    // The session broker trusts these because only the filter sets them.
    if (std.ascii.startsWithIgnoreCase(name, "x-mcpgw-")) return "x-mcpgw-* headers are the gateway's own";
    return null;
}

/// Reads the parse tree (scratch) and writes the compiled form through
/// `store`: every string and value kept is copied there.
const Compiler = struct {
    store: *Store,
    why: *[]const u8,
    /// Of the configuration text, for `tools/list` cursors.
    checksum: u32 = 0,
    /// In scratch; copied into the compiled form at the end.
    sources: std.ArrayList(CredentialSource) = .empty,

    fn fail(self: *Compiler, comptime fmt: []const u8, args: anytype) Error {
        self.why.* = try jsonw.allocPrint(self.store.scratch, fmt, args);
        return error.InvalidConfig;
    }

    fn scratch(self: *Compiler) Allocator {
        return self.store.scratch;
    }

    fn out(self: *Compiler) Allocator {
        return self.store.out;
    }

    fn str(self: *Compiler, s: []const u8) Allocator.Error![]const u8 {
        return self.store.str(s);
    }

    fn argRefs(self: *Compiler, list: []const ArgRef) Allocator.Error![]const ArgRef {
        const copy = try self.out().alloc(ArgRef, list.len);
        for (list, copy) |r, *d| d.* = .{ .name = try self.str(r.name), .arg = try self.str(r.arg) };
        return copy;
    }

    fn config(self: *Compiler, raw: RawConfig) Error!Config {
        if (raw.schema != schema_version)
            return self.fail("schema: this filter reads configuration schema {d}, not {d}", .{ schema_version, raw.schema });
        if (raw.server.name.len == 0) return self.fail("server.name: must not be empty", .{});
        if (raw.base_path.len == 0 or raw.base_path[0] != '/')
            return self.fail("base_path: must start with '/'", .{});
        if (std.mem.indexOfAny(u8, raw.base_path, "?#") != null)
            return self.fail("base_path: must not contain '?' or '#'", .{});

        // Tools point at this, so it lives in the compiled form, not in the Config copy.
        const server_upstream: ?*const Upstream = if (raw.upstream) |u|
            try self.upstream(u, "upstream", .{})
        else
            null;

        // Serialised in scratch, then copied at its exact size.
        const tools_list_json = if (raw.tools_list) |tl| blk: {
            if (tl != .object) return self.fail("tools_list: must be an object", .{});
            var list = Out.init(self.scratch());
            try list.value(tl);
            break :blk try self.store.bytes(list.bytes());
        } else "{\"tools\":[]}";

        var init = Out.init(self.scratch());
        try init.add(initialize_server_info_prefix);
        try init.add("{\"name\":");
        try init.str(raw.server.name);
        try init.add(",\"version\":");
        try init.str(raw.server.version);
        if (raw.server.title) |t| {
            try init.add(",\"title\":");
            try init.str(t);
        }
        try init.byte('}');
        const server_info_end: u32 = @intCast(init.bytes().len);
        if (raw.instructions) |ins| {
            try init.add(",\"instructions\":");
            try init.str(ins);
        }
        try init.byte('}');

        const paged = try self.paginate(raw.tools_list, raw.page_size);
        const base_path = try self.str(raw.base_path);
        const sessions_cfg = if (raw.sessions) |v| try self.sessions(v, base_path) else null;
        const broker: ?Broker = if (raw.broker) |b| blk: {
            if (b.cluster.len == 0) return self.fail("broker.cluster: must not be empty", .{});
            if (sessions_cfg == null) return self.fail("broker: needs sessions (HTTP+SSE session ids are session tokens)", .{});
            break :blk .{ .cluster = try self.str(b.cluster), .timeout_ms = b.timeout_ms };
        } else null;

        const tools = try self.out().alloc(Tool, raw.tools.len);
        var by_name: std.StringHashMapUnmanaged(u32) = .empty;
        try by_name.ensureTotalCapacity(self.out(), @intCast(raw.tools.len));
        for (raw.tools, tools, 0..) |rt, *t, i| {
            t.* = try self.tool(rt, i, server_upstream);
            const gop = by_name.getOrPutAssumeCapacity(t.name);
            if (gop.found_existing) return self.fail("tools[{d}].name: duplicate tool name \"{s}\"", .{ i, t.name });
            gop.value_ptr.* = @intCast(i);
        }
        // Before `credential_sources` is copied: it may add a passthrough source.
        const depth = raw.limits.max_json_depth;
        if (depth == 0 or depth > max_json_depth_cap)
            return self.fail("limits.max_json_depth: must be 1 to {d}, not {d}", .{ max_json_depth_cap, depth });
        const mcp_upstream: ?*const proxy.Upstream = if (raw.mcp_upstream) |m| try proxy.compile(self.store, m, base_path, depth, self.why, &self.sources) else null;
        if (raw.observability) |o| {
            // They become metric-name segments: nothing that could end one.
            if (!metrics.validName(o.namespace)) return self.fail("observability.namespace: must be a DNS label, not \"{s}\"", .{o.namespace});
            if (!metrics.validName(o.server)) return self.fail("observability.server: must be a DNS label, not \"{s}\"", .{o.server});
        }

        return .{
            .base_path = base_path,
            .max_request_bytes = raw.limits.max_request_bytes,
            .max_response_bytes = raw.limits.max_response_bytes,
            .max_json_depth = raw.limits.max_json_depth,
            .tools_list_json = tools_list_json,
            .initialize_tail = try self.store.bytes(init.bytes()),
            .server_info_end = server_info_end,
            .tools = tools,
            .by_name = by_name,
            .credential_sources = try self.out().dupe(CredentialSource, self.sources.items),
            .allowed_origins = try self.origins(raw.allowed_origins),
            .pages = paged.pages,
            .cursors = paged.cursors,
            .mcp_upstream = mcp_upstream,
            .sessions = sessions_cfg,
            .broker = broker,
            .auth = if (raw.auth) |v| try auth_mod.compile(self.store, v, self.why) else null,
            .jwt = if (raw.auth) |v| try jwtidentity.compile(self.store, v, self.why) else null,
            .observability = if (raw.observability) |o| .{
                .namespace = try self.str(o.namespace),
                .server = try self.str(o.server),
                .metrics = o.metrics,
                .access_log = o.access_log,
                .log_arguments = o.log_arguments,
                .span_name = o.span_name,
            } else .{},
        };
    }

    /// `sessions`: keys decoded and prepared for `base_path` here, so a
    /// request only hashes its token's payload. Secrets are never echoed in
    /// messages.
    fn sessions(self: *Compiler, raw: Value, base_path: []const u8) Error!?*const session.Sessions {
        const obj = switch (raw) {
            .null => return null,
            .object => |o| o,
            else => return self.fail("sessions: must be an object", .{}),
        };
        const keys_value = obj.get("keys") orelse return self.fail("sessions.keys: required", .{});
        if (keys_value != .array or keys_value.array.items.len == 0)
            return self.fail("sessions.keys: must be a non-empty list", .{});
        const raw_keys = keys_value.array.items;
        const keys = try self.out().alloc(session.Key, raw_keys.len);
        for (raw_keys, keys, 0..) |rk, *k, i| {
            if (rk != .object) return self.fail("sessions.keys[{d}]: must be an object", .{i});
            const id = rk.object.get("id") orelse return self.fail("sessions.keys[{d}].id: required", .{i});
            if (id != .string or !session.validKeyId(id.string))
                return self.fail("sessions.keys[{d}].id: must be 1-32 characters of A-Z a-z 0-9 _ -", .{i});
            for (keys[0..i]) |prev| if (std.mem.eql(u8, prev.id, id.string))
                return self.fail("sessions.keys[{d}].id: duplicate key id \"{s}\"", .{ i, id.string });
            const secret_text = rk.object.get("secret") orelse return self.fail("sessions.keys[{d}].secret: required", .{i});
            if (secret_text != .string) return self.fail("sessions.keys[{d}].secret: must be a string", .{i});
            const dec = std.base64.url_safe_no_pad.Decoder;
            const n = dec.calcSizeForSlice(secret_text.string) catch
                return self.fail("sessions.keys[{d}].secret: not base64url without padding", .{i});
            if (n < 16 or n > 64)
                return self.fail("sessions.keys[{d}].secret: must decode to 16-64 bytes (32 recommended), got {d}", .{ i, n });
            const secret = try self.out().alloc(u8, n);
            dec.decode(secret, secret_text.string) catch
                return self.fail("sessions.keys[{d}].secret: not base64url without padding", .{i});
            const until = try self.unsigned(rk.object.get("accept_until_ms"), 0, "sessions.keys[{d}].accept_until_ms", .{i});
            k.* = session.Key.init(try self.str(id.string), secret, until, base_path);
        }
        const ttl = try self.unsigned(obj.get("ttl_ms"), session.default_ttl_ms, "sessions.ttl_ms", .{});
        if (ttl == 0) return self.fail("sessions.ttl_ms: must be positive", .{});
        const max_ended = try self.unsigned(obj.get("max_ended"), session.default_max_ended, "sessions.max_ended", .{});
        if (max_ended == 0) return self.fail("sessions.max_ended: must be positive", .{});
        const s = try self.out().create(session.Sessions);
        s.* = .{ .keys = keys, .ttl_ms = ttl, .base_path = base_path, .ended_per_slot = session.endedPerSlot(max_ended) };
        return s;
    }

    /// An optional non-negative integer (missing or null: `default`).
    fn unsigned(self: *Compiler, v: ?Value, default: u64, comptime where: []const u8, where_args: anytype) Error!u64 {
        const value = v orelse return default;
        return switch (value) {
            .null => default,
            .integer => |n| if (n >= 0) @intCast(n) else self.fail(where ++ ": must be a non-negative integer", where_args),
            .number_string => |t| std.fmt.parseUnsigned(u64, t, 10) catch self.fail(where ++ ": must be a non-negative integer", where_args),
            else => self.fail(where ++ ": must be a non-negative integer", where_args),
        };
    }

    fn origins(self: *Compiler, list: []const []const u8) Error![]const []const u8 {
        const copy = try self.out().alloc([]const u8, list.len);
        for (list, copy, 0..) |o, *d, i| {
            const lower = try std.ascii.allocLowerString(self.scratch(), o);
            const n = normaliseOrigin(lower) orelse return self.fail("allowed_origins[{d}]: \"{s}\" is not an http(s) origin (scheme://host[:port])", .{ i, o });
            d.* = try self.str(n);
        }
        return copy;
    }

    const Paged = struct { pages: []const []const u8 = &.{}, cursors: []const []const u8 = &.{} };

    /// `tools_list` split into pages of `page_size` tools, when that makes
    /// more than one page. Every key of `tools_list` but `tools` and
    /// `nextCursor` is kept on each page.
    fn paginate(self: *Compiler, tools_list: ?Value, page_size: u32) Error!Paged {
        if (page_size == 0) return .{};
        const tl = tools_list orelse return .{};
        const all = tl.object.get("tools") orelse return .{};
        if (all != .array) return self.fail("tools_list.tools: must be a list to paginate", .{});
        const items = all.array.items;
        if (items.len <= page_size) return .{};
        const n = (items.len + page_size - 1) / page_size;
        const pages = try self.out().alloc([]const u8, n);
        const cursors = try self.out().alloc([]const u8, n);
        cursors[0] = "";
        for (1..n) |i| cursors[i] = try self.str(try makeCursor(self.scratch(), i * page_size, self.checksum));
        for (pages, 0..) |*p, i| {
            const start = i * page_size;
            const end = @min(items.len, start + page_size);
            var o = Out.init(self.scratch());
            try o.add("{\"tools\":[");
            for (items[start..end], 0..) |t, k| {
                if (k != 0) try o.byte(',');
                try o.value(t);
            }
            try o.byte(']');
            var it = tl.object.iterator();
            while (it.next()) |kv| {
                const key = kv.key_ptr.*;
                if (std.mem.eql(u8, key, "tools") or std.mem.eql(u8, key, "nextCursor")) continue;
                try o.byte(',');
                try o.str(key);
                try o.byte(':');
                try o.value(kv.value_ptr.*);
            }
            if (i + 1 < n) {
                try o.add(",\"nextCursor\":");
                try o.str(cursors[i + 1]);
            }
            try o.byte('}');
            p.* = try self.store.bytes(o.bytes());
        }
        return .{ .pages = pages, .cursors = cursors };
    }

    fn upstream(self: *Compiler, u: RawUpstream, comptime where: []const u8, where_args: anytype) Error!*const Upstream {
        if (u.cluster.len == 0) return self.fail(where ++ ".cluster: must not be empty", where_args);
        // Sent as `:authority` on every call: a header value like any other.
        if (hasControl(u.authority orelse u.cluster)) return self.fail(where ++ ".authority: contains a control character", where_args);
        const up = try self.out().create(Upstream);
        up.* = .{
            .cluster = try self.str(u.cluster),
            .authority = try self.str(u.authority orelse u.cluster),
            .timeout_ms = u.timeout_ms,
        };
        return up;
    }

    /// A header name the filter sends upstream: `headerNameProblem` decides.
    fn headerName(self: *Compiler, name: []const u8, comptime where: []const u8, where_args: anytype) Error![]const u8 {
        if (headerNameProblem(name)) |problem|
            return self.fail(where ++ ": must be a regular header name: \"{s}\": {s}", where_args ++ .{ name, problem });
        return self.lowerName(name);
    }

    /// A header name the filter only reads from the client's request.
    fn readHeaderName(self: *Compiler, name: []const u8, comptime where: []const u8, where_args: anytype) Error![]const u8 {
        if (name.len == 0 or name[0] == ':' or !isToken(name))
            return self.fail(where ++ ": must be a regular header name", where_args);
        return self.lowerName(name);
    }

    fn lowerName(self: *Compiler, name: []const u8) Error![]const u8 {
        // HTTP/2 and Envoy's header maps want lowercase names.
        return self.str(try std.ascii.allocLowerString(self.scratch(), name));
    }

    fn tool(self: *Compiler, rt: RawTool, i: usize, server_upstream: ?*const Upstream) Error!Tool {
        if (rt.name.len == 0) return self.fail("tools[{d}].name: must not be empty", .{i});
        const args = try self.out().alloc(Arg, rt.args.len);
        for (rt.args, args, 0..) |ra, *a, j| {
            if (ra.name.len == 0) return self.fail("tools[{d}].args[{d}].name: must not be empty", .{ i, j });
            const where = try jsonw.allocPrint(self.scratch(), "tools[{d}].args[{d}]", .{ i, j });
            a.* = .{
                .name = try self.str(ra.name),
                .required = ra.required,
                .default = if (ra.default) |d| try self.store.valuePtr(d) else null,
                .check = try self.check(ra.type, ra.@"enum", ra.items, where),
            };
        }

        const up: *const Upstream = if (rt.upstream) |u|
            try self.upstream(u, "tools[{d}].upstream", .{i})
        else
            server_upstream orelse return self.fail("tools[{d}]: no upstream (neither the tool's nor the server's)", .{i});

        const req = rt.request;
        if (req.method.len == 0) return self.fail("tools[{d}].request.method: must not be empty", .{i});
        for (req.method) |ch| if (!std.ascii.isAlphabetic(ch))
            return self.fail("tools[{d}].request.method: not an HTTP method", .{i});
        const method = try self.str(try std.ascii.allocUpperString(self.scratch(), req.method));

        for (req.query, 0..) |q, j| {
            if (q.name.len == 0 or q.arg.len == 0)
                return self.fail("tools[{d}].request.query[{d}]: name and arg must not be empty", .{ i, j });
        }
        for (req.cookies, 0..) |q, j| {
            if (q.name.len == 0 or q.arg.len == 0 or !isToken(q.name))
                return self.fail("tools[{d}].request.cookies[{d}]: name must be a cookie name and arg not empty", .{ i, j });
        }

        const headers = try self.out().alloc(HeaderTemplate, req.headers.len);
        for (req.headers, headers, 0..) |rh, *h, j| {
            h.* = .{
                .name = try self.headerName(rh.name, "tools[{d}].request.headers[{d}].name", .{ i, j }),
                .value = try self.template(rh.value, .request, "tools[{d}].request.headers[{d}].value", .{ i, j }),
            };
        }

        const body: ?Body = if (req.body) |rb| switch (rb.kind) {
            .template => .{ .template = .{
                .content_type = try self.str(rb.content_type orelse "application/json"),
                .template = try self.template(rb.template orelse
                    return self.fail("tools[{d}].request.body.template: required for kind template", .{i}), .request, "tools[{d}].request.body.template", .{i}),
            } },
            .json_args => .{ .json_args = try self.store.strs(rb.args) },
            .form_args => .{ .form_args = try self.store.strs(rb.args) },
        } else null;

        var static_auth: []const StaticCredential = &.{};
        var passthrough: ?Passthrough = null;
        if (req.auth) |auth| {
            const list = try self.out().alloc(StaticCredential, auth.static.len);
            for (auth.static, list, 0..) |sc, *dst, j| {
                if (sc.name.len == 0) return self.fail("tools[{d}].request.auth.static[{d}].name: must not be empty", .{ i, j });
                if (hasControl(sc.value)) return self.fail("tools[{d}].request.auth.static[{d}].value: contains a control character", .{ i, j });
                dst.* = .{
                    .in = sc.in,
                    .name = if (sc.in == .header) try self.headerName(sc.name, "tools[{d}].request.auth.static[{d}].name", .{ i, j }) else try self.str(sc.name),
                    .value = try self.str(sc.value),
                };
            }
            static_auth = list;
            if (auth.passthrough) |pt| {
                if (pt.from.name.len == 0) return self.fail("tools[{d}].request.auth.passthrough.from.name: must not be empty", .{i});
                if (pt.to.name.len == 0) return self.fail("tools[{d}].request.auth.passthrough.to.name: must not be empty", .{i});
                if (hasControl(pt.to.prefix)) return self.fail("tools[{d}].request.auth.passthrough.to.prefix: contains a control character", .{i});
                const from_name = if (pt.from.in == .header) try self.readHeaderName(pt.from.name, "tools[{d}].request.auth.passthrough.from.name", .{i}) else try self.str(pt.from.name);
                passthrough = .{
                    .source = try self.source(.{ .in = pt.from.in, .name = from_name }),
                    .from_name = try self.str(pt.from.name),
                    .from_prefix = try self.str(pt.from.prefix),
                    .to_in = pt.to.in,
                    .to_name = if (pt.to.in == .header) try self.headerName(pt.to.name, "tools[{d}].request.auth.passthrough.to.name", .{i}) else try self.str(pt.to.name),
                    .to_prefix = try self.str(pt.to.prefix),
                };
            }
        }

        var response: Response = .{};
        if (rt.response) |rr| {
            response = .{
                .body = if (rr.body) |b| try self.template(b, .response, "tools[{d}].response.body", .{i}) else null,
                .prepend = try self.str(rr.prepend orelse ""),
                .append = try self.str(rr.append orelse ""),
                .error_body = if (rr.error_body) |b| try self.template(b, .response, "tools[{d}].response.error_body", .{i}) else null,
                .structured = rr.structured,
            };
        }

        return .{
            .name = try self.str(rt.name),
            .args = args,
            .upstream = up,
            .method = method,
            .path = try self.template(req.path, .request, "tools[{d}].request.path", .{i}),
            .query = try self.argRefs(req.query),
            .headers = headers,
            .cookies = try self.argRefs(req.cookies),
            .body = body,
            .static_auth = static_auth,
            .passthrough = passthrough,
            .response = response,
        };
    }

    /// Index of `src` in the distinct credential sources, adding it.
    fn source(self: *Compiler, src: CredentialSource) Error!u32 {
        for (self.sources.items, 0..) |s, k| {
            if (s.in == src.in and std.mem.eql(u8, s.name, src.name)) return @intCast(k);
        }
        try self.sources.append(self.scratch(), src);
        return @intCast(self.sources.items.len - 1);
    }

    fn check(self: *Compiler, t: ?ArgType, one_of: ?Value, items: ?Value, where: []const u8) Error!Check {
        var c = Check{ .type = t };
        if (one_of) |e| switch (e) {
            .null => {},
            .array => |arr| {
                c.one_of = try self.store.values(arr.items);
                var text = Out.init(self.scratch());
                try text.value(e);
                c.one_of_json = try self.str(text.bytes());
            },
            else => return self.fail("{s}.enum: must be a list", .{where}),
        };
        if (items) |it| switch (it) {
            .null => {},
            .object => |o| {
                const inner_where = try jsonw.allocPrint(self.scratch(), "{s}.items", .{where});
                var inner_type: ?ArgType = null;
                if (o.get("type")) |tv| switch (tv) {
                    .null => {},
                    .string => |name| inner_type = std.meta.stringToEnum(ArgType, name) orelse
                        return self.fail("{s}.type: unknown type \"{s}\"", .{ inner_where, name }),
                    else => return self.fail("{s}.type: must be a string", .{inner_where}),
                };
                const inner = try self.out().create(Check);
                inner.* = try self.check(inner_type, o.get("enum"), o.get("items"), inner_where);
                c.items = inner;
            },
            else => return self.fail("{s}.items: must be an object", .{where}),
        };
        return c;
    }

    fn template(self: *Compiler, raw: Value, side: tpl.Side, comptime where: []const u8, where_args: anytype) Error!tpl.Template {
        const name = try jsonw.allocPrint(self.scratch(), where, where_args);
        return tpl.compile(self.store, raw, side, name, self.why);
    }
};

/// RFC 9110 token characters: valid header and cookie names.
pub fn isToken(s: []const u8) bool {
    if (s.len == 0) return false;
    for (s) |ch| switch (ch) {
        'A'...'Z', 'a'...'z', '0'...'9', '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~' => {},
        else => return false,
    };
    return true;
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

/// For tests: `parseCompact` as `proxy_on_configure` runs it (the block
/// from `out`), with the text and the parse tree in a scratch arena that is
/// poisoned and freed before the configuration is returned. Any answer
/// computed from it then also checks that the compiled form keeps no
/// reference into that memory.
pub fn parseFreed(out: Allocator, text: []const u8) !Config {
    var poison = @import("store.zig").Poisoned{ .child = testing.allocator };
    var scratch = std.heap.ArenaAllocator.init(poison.allocator());
    defer scratch.deinit();
    const copy = try scratch.allocator().dupe(u8, text);
    var why: []const u8 = "";
    const compact = parseCompact(out, scratch.allocator(), copy, &why) catch |err| {
        std.debug.print("config: {s}\n", .{why});
        return err;
    };
    return compact.cfg;
}

pub const example =
    \\{
    \\  "server": {"name": "petstore", "version": "1.0.0", "title": "Pet store"},
    \\  "instructions": "Use \"getPet\".",
    \\  "base_path": "/mcp/default/petstore",
    \\  "upstream": {"cluster": "mcpgw|default|petstore", "authority": "petstore.internal", "timeout_ms": 5000},
    \\  "limits": {"max_request_bytes": 1000},
    \\  "future_key": {"ignored": [1, 2]},
    \\  "tools_list": {"tools": [{"name": "getPet", "inputSchema": {"type": "object", "properties": {"id": {"type": "integer", "maximum": 1e3}}}}]},
    \\  "tools": [
    \\    {"name": "getPet",
    \\     "args": [{"name": "id", "type": "integer", "required": true},
    \\              {"name": "verbose", "type": "boolean", "default": false},
    \\              {"name": "mode", "type": "string", "enum": ["a", "b"]},
    \\              {"name": "ids", "type": "array", "items": {"type": "integer", "enum": [1, 2.0, 3]}}],
    \\     "request": {"method": "get", "path": [{"lit": "/v1/pets/"}, {"out": {"args": ["id"]}, "enc": "path"}, {"lit": "?x=1"}],
    \\                 "query": [{"name": "verbose", "arg": "verbose"}],
    \\                 "headers": [{"name": "X-Tenant", "value": [{"lit": "t-"}, {"out": {"args": ["owner", "name"]}, "enc": "raw"}]}],
    \\                 "cookies": [{"name": "session", "arg": "session"}],
    \\                 "body": null,
    \\                 "auth": {"static": [{"in": "header", "name": "X-Api-Key", "value": "k"}, {"in": "query", "name": "sig", "value": "s"}],
    \\                          "passthrough": {"from": {"in": "header", "name": "Authorization", "prefix": "Bearer "},
    \\                                          "to": {"in": "query", "name": "token"}}}},
    \\     "response": {"body": [{"out": {"resp": ["name"]}}], "prepend": null, "append": null, "error_body": null, "structured": false, "later": 1}},
    \\    {"name": "addPet",
    \\     "upstream": {"cluster": "other"},
    \\     "request": {"method": "POST", "path": [{"lit": "/v1/pets"}],
    \\                 "body": {"kind": "json_args", "args": ["name", "tag"]},
    \\                 "auth": {"passthrough": {"from": {"in": "query", "name": "key"}, "to": {"in": "header", "name": "X-Key", "prefix": "K "}}}}},
    \\    {"name": "third", "upstream": null,
    \\     "request": {"path": [], "auth": {"static": [], "passthrough": {"from": {"in": "header", "name": "authorization"}, "to": {"in": "header", "name": "x"}}}}}
    \\  ]
    \\}
;

test "parse the CONFIG.md example and compile it" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const c = try parseFreed(arena_state.allocator(), example);

    try testing.expectEqualStrings("/mcp/default/petstore", c.base_path);
    try testing.expectEqual(@as(u32, 1000), c.max_request_bytes);
    try testing.expectEqual(@as(u32, 4194304), c.max_response_bytes);
    try testing.expectEqualStrings(
        \\{"tools":[{"name":"getPet","inputSchema":{"type":"object","properties":{"id":{"type":"integer","maximum":1e3}}}}]}
    , c.tools_list_json);
    try testing.expectEqualStrings(
        \\","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"petstore","version":"1.0.0","title":"Pet store"},"instructions":"Use \"getPet\"."}
    , c.initialize_tail);

    const t = c.findTool("getPet").?;
    try testing.expectEqualStrings("mcpgw|default|petstore", t.upstream.cluster);
    try testing.expectEqualStrings("petstore.internal", t.upstream.authority);
    try testing.expectEqual(@as(u32, 5000), t.upstream.timeout_ms);
    try testing.expectEqualStrings("GET", t.method);
    try testing.expectEqual(@as(usize, 3), t.path.nodes.len);
    try testing.expectEqual(tpl.Enc.path, t.path.nodes[1].out.enc);
    try testing.expectEqualStrings("x-tenant", t.headers[0].name);
    try testing.expectEqual(@as(usize, 2), t.headers[0].value.nodes[1].out.expr.args.len);
    try testing.expectEqual(ArgType.integer, t.args[0].check.type.?);
    try testing.expect(t.args[1].default.?.* == .bool);
    try testing.expectEqualStrings("[\"a\",\"b\"]", t.args[2].check.one_of_json);
    try testing.expectEqualStrings("[1,2.0,3]", t.args[3].check.items.?.one_of_json);
    try testing.expectEqual(ArgType.integer, t.args[3].check.items.?.type.?);
    try testing.expect(t.body == null);
    try testing.expect(t.response.body != null);
    try testing.expect(t.response.body.?.reads_resp);
    try testing.expectEqualStrings("", t.response.prepend);
    try testing.expectEqualStrings("session", t.cookies[0].name);
    try testing.expectEqual(@as(usize, 2), t.static_auth.len);
    try testing.expectEqualStrings("x-api-key", t.static_auth[0].name);
    try testing.expectEqual(In.query, t.static_auth[1].in);
    const pt = t.passthrough.?;
    try testing.expectEqualStrings("Authorization", pt.from_name);
    try testing.expectEqualStrings("Bearer ", pt.from_prefix);
    try testing.expectEqual(In.query, pt.to_in);
    try testing.expectEqualStrings("", pt.to_prefix);

    const add = c.findTool("addPet").?;
    try testing.expectEqual(@as(usize, 2), add.body.?.json_args.len);
    try testing.expectEqualStrings("other", add.upstream.cluster);
    try testing.expectEqualStrings("other", add.upstream.authority);
    try testing.expectEqual(@as(u32, 10000), add.upstream.timeout_ms);
    try testing.expectEqualStrings("x-key", add.passthrough.?.to_name);
    try testing.expect(c.findTool("nope") == null);

    // Distinct credential sources, shared between tools reading the same place.
    try testing.expectEqual(@as(usize, 2), c.credential_sources.len);
    try testing.expectEqualStrings("authorization", c.credential_sources[0].name);
    try testing.expectEqual(In.query, c.credential_sources[1].in);
    try testing.expectEqual(@as(u32, 0), pt.source);
    try testing.expectEqual(@as(u32, 1), add.passthrough.?.source);
    try testing.expectEqual(@as(u32, 0), c.findTool("third").?.passthrough.?.source);
    try testing.expectEqualStrings("mcpgw|default|petstore", c.findTool("third").?.upstream.cluster);
}

test "minimal configuration takes the defaults" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const c = try parseFreed(arena_state.allocator(),
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/mcp"}
    );
    try testing.expectEqualStrings("{\"tools\":[]}", c.tools_list_json);
    try testing.expectEqual(@as(u32, 1048576), c.max_request_bytes);
    try testing.expectEqual(default_max_json_depth, c.max_json_depth);
    try testing.expectEqual(@as(usize, 0), c.tools.len);
    try testing.expectEqual(@as(usize, 0), c.credential_sources.len);
    try testing.expectEqualStrings(
        \\","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"s","version":"1"}}
    , c.initialize_tail);
    // Every tool with its own upstream: the server needs none.
    const c2 = try parseFreed(arena_state.allocator(),
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/mcp", "tools": [
        \\ {"name": "a", "upstream": {"cluster": "x", "authority": "x.example", "timeout_ms": 7}, "request": {"path": [{"lit": "/"}]}}]}
    );
    try testing.expectEqualStrings("x.example", c2.tools[0].upstream.authority);
    try testing.expectEqual(@as(u32, 7), c2.tools[0].upstream.timeout_ms);
}

fn expectInvalid(text: []const u8, reason_contains: []const u8) !void {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    var why: []const u8 = undefined;
    try testing.expectError(error.InvalidConfig, parse(arena_state.allocator(), arena_state.allocator(), text, &why));
    if (std.mem.indexOf(u8, why, reason_contains) == null) {
        std.debug.print("reason was: {s}\n", .{why});
        return error.TestUnexpectedResult;
    }
}

fn expectInvalidTool(tool_json: []const u8, reason_contains: []const u8) !void {
    var buf: [2048]u8 = undefined;
    const text = try std.fmt.bufPrint(&buf,
        \\{{"server": {{"name": "s", "version": "1"}}, "base_path": "/m", "upstream": {{"cluster": "c"}}, "tools": [{s}]}}
    , .{tool_json});
    try expectInvalid(text, reason_contains);
}

test "invalid configurations are rejected with a reason" {
    try expectInvalid("not json", "SyntaxError at line 1");
    try expectInvalid("{\"server\": {\"name\": \"s\", \"version\": \"1\"}}", "MissingField");
    try expectInvalid("{\"server\": {\"name\": \"s\", \"version\": \"1\"}, \"base_path\": \"mcp\"}", "base_path");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "tools": [
        \\ {"name": "a", "upstream": {"cluster": "x"}, "request": {"path": [{"lit": "/"}]}},
        \\ {"name": "b", "request": {"path": [{"lit": "/"}]}}]}
    , "tools[1]: no upstream");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "tools_list": []}
    , "tools_list: must be an object");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [{"lit": "/"}]}}, {"name": "a", "request": {"path": []}}
    , "duplicate tool name");
    try expectInvalidTool(
        \\{"name": "a", "upstream": {"cluster": ""}, "request": {"path": []}}
    , "tools[0].upstream.cluster: must not be empty");
    // v1 part forms are gone.
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [{"arg": "x", "enc": "path"}]}}
    , "tools[0].request.path[0]: needs exactly one of lit, out, if, range");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [{"lit": "/", "out": {"args": ["x"]}}]}}
    , "tools[0].request.path[0]: needs exactly one");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [{"out": {"args": ["x"]}, "enc": "base64"}]}}
    , "tools[0].request.path[0]: enc: must be one of");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [], "headers": [{"name": "h", "value": [{"out": {"status": true}}]}]}}
    , "tools[0].request.headers[0].value[0].out.status: only in response templates");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": []}, "response": {"error_body": [{"out": {"item": []}}]}}
    , "tools[0].response.error_body[0].out.item: outside of a range");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [], "body": {"kind": "template"}}}
    , "body.template: required");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [], "headers": [{"name": ":path", "value": []}]}}
    , "regular header name");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [], "headers": [{"name": "a b", "value": []}]}}
    , "regular header name");
    try expectInvalidTool(
        \\{"name": "a", "args": [{"name": "x", "enum": "a"}], "request": {"path": []}}
    , "tools[0].args[0].enum: must be a list");
    try expectInvalidTool(
        \\{"name": "a", "args": [{"name": "x", "type": "array", "items": {"type": "date"}}], "request": {"path": []}}
    , "tools[0].args[0].items.type: unknown type \"date\"");
    try expectInvalidTool(
        \\{"name": "a", "args": [{"name": "x", "type": "array", "items": {"items": {"enum": 1}}}], "request": {"path": []}}
    , "tools[0].args[0].items.items.enum: must be a list");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [], "cookies": [{"name": "a;b", "arg": "x"}]}}
    , "tools[0].request.cookies[0]");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [], "auth": {"static": [{"in": "header", "name": "x", "value": "a\r\nb: c"}]}}}
    , "tools[0].request.auth.static[0].value: contains a control character");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [], "auth": {"static": [{"in": "cookie", "name": "x", "value": "v"}]}}}
    , "InvalidEnumTag");
    try expectInvalidTool(
        \\{"name": "a", "request": {"path": [], "auth": {"passthrough": {"from": {"in": "header", "name": ""}, "to": {"in": "header", "name": "x"}}}}}
    , "passthrough.from.name: must not be empty");
}

test "headers the gateway owns are never templated, credentials or passthrough targets" {
    // Framing and routing headers: a registry-chosen one lets an argument
    // smuggle a request to the backend (transfer-encoding) or add an authority.
    for ([_][]const u8{ "Transfer-Encoding", "content-length", "Host", ":authority", "Connection", "keep-alive", "TE", "trailer", "upgrade", "expect", "Proxy-Authorization", "proxy-connection", "x-envoy-original-path", "X-Envoy-Upstream-Rq-Timeout-Ms", "x-mcpgw-sse-channel" }) |name| {
        var buf: [512]u8 = undefined;
        const header = try std.fmt.bufPrint(&buf,
            \\{{"name": "a", "request": {{"path": [], "headers": [{{"name": "{s}", "value": []}}]}}}}
        , .{name});
        try expectInvalidTool(header, "tools[0].request.headers[0].name: must be a regular header name");
        var buf2: [512]u8 = undefined;
        const static = try std.fmt.bufPrint(&buf2,
            \\{{"name": "a", "request": {{"path": [], "auth": {{"static": [{{"in": "header", "name": "{s}", "value": "v"}}]}}}}}}
        , .{name});
        try expectInvalidTool(static, "tools[0].request.auth.static[0].name: must be a regular header name");
        var buf3: [512]u8 = undefined;
        const to = try std.fmt.bufPrint(&buf3,
            \\{{"name": "a", "request": {{"path": [], "auth": {{"passthrough": {{"from": {{"in": "header", "name": "authorization"}}, "to": {{"in": "header", "name": "{s}"}}}}}}}}}}
        , .{name});
        try expectInvalidTool(to, "tools[0].request.auth.passthrough.to.name: must be a regular header name");
    }
    try testing.expect(headerNameProblem("x-api-key") == null);
    try testing.expect(headerNameProblem("authorization") == null);
    try testing.expect(headerNameProblem("x-envoy") == null);
    try testing.expect(headerNameProblem("proxy") == null);
    // Control characters but tab: refused in credentials; tab and obs-text pass.
    for ([_][]const u8{ "a\\u000bb", "a\\u007fb", "a\\u001bb", "a\\nb" }) |value| {
        var buf: [512]u8 = undefined;
        const static = try std.fmt.bufPrint(&buf,
            \\{{"name": "a", "request": {{"path": [], "auth": {{"static": [{{"in": "header", "name": "x", "value": "{s}"}}]}}}}}}
        , .{value});
        try expectInvalidTool(static, "tools[0].request.auth.static[0].value: contains a control character");
    }
    try testing.expect(!hasControl("a\tb \xc3\xa9"));
    try expectInvalidTool(
        \\{"name": "a", "upstream": {"cluster": "c", "authority": "a.example\n"}, "request": {"path": []}}
    , "tools[0].upstream.authority: contains a control character");
}

test "the compact form fills its block exactly, whatever the first guess" {
    var scratch_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer scratch_state.deinit();
    const scratch = scratch_state.allocator();
    var why: []const u8 = "";
    // Many one-letter literals compile to more than twice their text, so the
    // sizing pass has to retry with a bigger buffer.
    var many = Out.init(scratch);
    try many.add("{\"server\": {\"name\": \"s\", \"version\": \"1\"}, \"base_path\": \"/m\", \"upstream\": {\"cluster\": \"c\"},");
    try many.add("\"tools\": [{\"name\": \"a\", \"request\": {\"path\": [{\"out\": {\"const\": [1, {\"k\": \"v\"}]}}");
    for (0..300) |_| try many.add(",{\"lit\":\"a\"}");
    try many.add("]}}]}");
    for ([_][]const u8{ example, many.bytes() }) |text| {
        const compact = try parseCompact(testing.allocator, scratch, text, &why);
        defer compact.deinit(testing.allocator);
        // Compiling again into exactly that many bytes fits; one less does not.
        const again = try testing.allocator.alignedAlloc(u8, block_align, compact.block.len);
        defer testing.allocator.free(again);
        var fba = std.heap.FixedBufferAllocator.init(again);
        const c = try parse(fba.allocator(), scratch, text, &why);
        try testing.expectEqual(compact.block.len, fba.end_index);
        try testing.expectEqual(c.tools[0].path.nodes.len, compact.cfg.tools[0].path.nodes.len);
        var small = std.heap.FixedBufferAllocator.init(again[0 .. again.len - 1]);
        try testing.expectError(error.OutOfMemory, parse(small.allocator(), scratch, text, &why));
    }
    try testing.expect(2 * many.bytes().len + 1024 < (try parseCompact(scratch, scratch, many.bytes(), &why)).block.len);
}

test "allowed_origins and page_size are compiled" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const text =
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "page_size": 1,
        \\ "allowed_origins": ["HTTPS://A.example:443", "http://b.example:8080", "http://[::1]:80"],
        \\ "tools_list": {"tools": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}}
    ;
    const c = try parseFreed(arena_state.allocator(), text);
    try testing.expectEqual(@as(usize, 3), c.allowed_origins.len);
    try testing.expectEqualStrings("https://a.example", c.allowed_origins[0]);
    try testing.expectEqualStrings("http://b.example:8080", c.allowed_origins[1]);
    try testing.expectEqualStrings("http://[::1]", c.allowed_origins[2]);
    try testing.expectEqual(@as(usize, 3), c.pages.len);
    try testing.expectEqualStrings("", c.cursors[0]);
    try testing.expect(std.mem.endsWith(u8, c.pages[2], "[{\"name\":\"c\"}]}"));
    // The cursor carries the offset and a checksum of this configuration.
    var buf: [64]u8 = undefined;
    const dec = std.base64.url_safe_no_pad.Decoder;
    const n = try dec.calcSizeForSlice(c.cursors[1]);
    try dec.decode(buf[0..n], c.cursors[1]);
    try testing.expect(std.mem.startsWith(u8, buf[0..n], "1:"));
    try testing.expectEqual(@as(usize, 10), n);
    // Another configuration text: other cursors.
    const c2 = try parseFreed(arena_state.allocator(), text[0 .. text.len - 1] ++ ", \"x\": 1}");
    try testing.expect(!std.mem.eql(u8, c.cursors[1], c2.cursors[1]));

    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "allowed_origins": ["https://a.example/path"]}
    , "allowed_origins[0]: \"https://a.example/path\" is not an http(s) origin");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "allowed_origins": ["ftp://a.example"]}
    , "allowed_origins[0]");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "page_size": 1, "tools_list": {"tools": {}}}
    , "tools_list.tools: must be a list");
}

test "sessions and broker are compiled, keys prepared for base_path" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    // 32 bytes of 0x01 and of 0x02, base64url without padding.
    const text =
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m",
        \\ "sessions": {"keys": [{"id": "k1a2b3c4", "secret": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"},
        \\                       {"id": "old_1", "secret": "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI", "accept_until_ms": 1750000000000}],
        \\              "ttl_ms": 60000, "max_ended": 3000},
        \\ "broker": {"cluster": "mcpgw-broker"}}
    ;
    const c = try parseFreed(a, text);
    try testing.expectEqual(@as(u32, 3), c.sessions.?.ended_per_slot);
    const s = c.sessions.?;
    try testing.expectEqual(@as(usize, 2), s.keys.len);
    try testing.expectEqualStrings("k1a2b3c4", s.keys[0].id);
    try testing.expectEqualSlices(u8, &([_]u8{1} ** 32), s.keys[0].secret);
    try testing.expectEqual(@as(u64, 0), s.keys[0].accept_until_ms);
    try testing.expectEqual(@as(u64, 1750000000000), s.keys[1].accept_until_ms);
    try testing.expectEqual(@as(u64, 60000), s.ttl_ms);
    try testing.expectEqualStrings("/m", s.base_path);
    try testing.expectEqualStrings("mcpgw-broker", c.broker.?.cluster);
    try testing.expectEqual(@as(u32, 5000), c.broker.?.timeout_ms);
    // The prepared state signs like the secret does.
    const token = try session.issue(a, s, "/m", 1000, "2025-06-18", "", [_]u8{9} ** 16);
    var fresh = [_]session.Key{session.Key.init("k1a2b3c4", &([_]u8{1} ** 32), 0, "/other")};
    const unprepared = session.Sessions{ .keys = &fresh, .base_path = "/other" };
    _ = try session.verify(a, &unprepared, "/m", 1000, token);

    // Defaults; absent and null mean no sessions.
    const d = try parseFreed(a,
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m",
        \\ "sessions": {"keys": [{"id": "k", "secret": "AQEBAQEBAQEBAQEBAQEBAQ", "accept_until_ms": null}]}}
    );
    try testing.expectEqual(session.default_ttl_ms, d.sessions.?.ttl_ms);
    try testing.expectEqual(@as(u32, session.revocation_slot_max), d.sessions.?.ended_per_slot);
    try testing.expectEqual(@as(usize, 16), d.sessions.?.keys[0].secret.len);
    try testing.expect(d.broker == null);
    const none = try parseFreed(a, "{\"server\": {\"name\": \"s\", \"version\": \"1\"}, \"base_path\": \"/m\", \"sessions\": null}");
    try testing.expect(none.sessions == null and none.broker == null);
}

fn sessionsConfig(comptime sessions_json: []const u8) []const u8 {
    return "{\"server\": {\"name\": \"s\", \"version\": \"1\"}, \"base_path\": \"/m\", \"sessions\": " ++ sessions_json ++ "}";
}

test "invalid sessions and broker are rejected naming the field" {
    const good = "\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE\"";
    try expectInvalid(sessionsConfig("[]"), "sessions: must be an object");
    try expectInvalid(sessionsConfig("{}"), "sessions.keys: required");
    try expectInvalid(sessionsConfig("{\"keys\": []}"), "sessions.keys: must be a non-empty list");
    try expectInvalid(sessionsConfig("{\"keys\": [1]}"), "sessions.keys[0]: must be an object");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"secret\": " ++ good ++ "}]}"), "sessions.keys[0].id: required");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a.b\", \"secret\": " ++ good ++ "}]}"), "sessions.keys[0].id: must be 1-32 characters");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": " ++ good ++ "}, {\"id\": \"a\", \"secret\": " ++ good ++ "}]}"), "sessions.keys[1].id: duplicate key id \"a\"");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": " ++ good ++ "}, {\"id\": \"b\"}]}"), "sessions.keys[1].secret: required");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": 7}]}"), "sessions.keys[0].secret: must be a string");
    // Standard alphabet, padding, stray bits, too short, too long.
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBA+/\"}]}"), "sessions.keys[0].secret: not base64url without padding");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"}]}"), "sessions.keys[0].secret: not base64url");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQF\"}]}"), "sessions.keys[0].secret: not base64url");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": \"AQEB\"}]}"), "sessions.keys[0].secret: must decode to 16-64 bytes (32 recommended), got 3");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": \"" ++ "A" ** 96 ++ "\"}]}"), "got 72");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": " ++ good ++ ", \"accept_until_ms\": -1}]}"), "sessions.keys[0].accept_until_ms: must be a non-negative integer");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": " ++ good ++ ", \"accept_until_ms\": \"1\"}]}"), "sessions.keys[0].accept_until_ms");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": " ++ good ++ "}], \"ttl_ms\": 1.5}"), "sessions.ttl_ms: must be a non-negative integer");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": " ++ good ++ "}], \"ttl_ms\": 0}"), "sessions.ttl_ms: must be positive");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": " ++ good ++ "}], \"max_ended\": 0}"), "sessions.max_ended: must be positive");
    try expectInvalid(sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": " ++ good ++ "}], \"max_ended\": -5}"), "sessions.max_ended: must be a non-negative integer");
    // The secret is never part of a message.
    {
        var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
        defer arena_state.deinit();
        var why: []const u8 = "";
        const text = sessionsConfig("{\"keys\": [{\"id\": \"a\", \"secret\": \"c2VjcmV0\"}]}");
        try testing.expectError(error.InvalidConfig, parse(arena_state.allocator(), arena_state.allocator(), text, &why));
        try testing.expect(std.mem.indexOf(u8, why, "c2VjcmV0") == null and std.mem.indexOf(u8, why, "secret:") != null);
    }

    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "broker": {"cluster": "b"}}
    , "broker: needs sessions");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "broker": {"cluster": ""},
        \\ "sessions": {"keys": [{"id": "a", "secret": "AQEBAQEBAQEBAQEBAQEBAQ"}]}}
    , "broker.cluster: must not be empty");
    try expectInvalid(
        \\{"schema": 2, "server": {"name": "s", "version": "1"}, "base_path": "/m"}
    , "schema: this filter reads configuration schema 1, not 2");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "limits": {"max_json_depth": 0}}
    , "limits.max_json_depth: must be 1 to 1000, not 0");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "limits": {"max_json_depth": 1001}}
    , "limits.max_json_depth: must be 1 to 1000, not 1001");
}
