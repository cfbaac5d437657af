//! MCP over Streamable HTTP for one configured server, without any host
//! calls: classify a JSON-RPC message, answer it locally or describe the
//! upstream request to make, and turn the upstream answer into the tool
//! result. Everything allocates from a per-request arena.

const std = @import("std");
const jsonw = @import("jsonw.zig");
const Allocator = std.mem.Allocator;
const Value = std.json.Value;
const ObjectMap = std.json.ObjectMap;
const config = @import("config.zig");
const tpl = @import("template.zig");
const value = @import("value.zig");
const Out = @import("jsonw.zig").Out;
const argerror = @import("argerror.zig");

pub const Header = tpl.Header;

pub const parse_error = -32700;
pub const invalid_request = -32600;
pub const method_not_found = -32601;
pub const invalid_params = -32602;
pub const internal_error = -32603;
/// 2026-07-28: routing headers missing or not matching the body.
pub const header_mismatch = -32020;
/// 2026-07-28: the request's protocol version is not one we serve.
pub const unsupported_protocol_version = -32022;

pub const supported_versions = [_][]const u8{ "2025-03-26", "2025-06-18", "2025-11-25" };
pub const latest_version = "2025-11-25";
/// The HTTP+SSE revision: negotiated only on that transport's endpoint.
pub const sse_version = "2024-11-05";

/// The stateless revision: no initialize, `_meta` on every request,
/// `server/discover`, `Mcp-Method` / `Mcp-Name` headers.
pub const modern_version = "2026-07-28";
pub const protocol_version_key = "io.modelcontextprotocol/protocolVersion";
pub const client_capabilities_key = "io.modelcontextprotocol/clientCapabilities";
/// Every revision we answer, for `server/discover` and -32022 data.
const all_versions_json = "[\"2025-03-26\",\"2025-06-18\",\"2025-11-25\",\"2026-07-28\"]";

/// A complete HTTP answer produced locally.
pub const Reply = struct {
    status: u32,
    /// Empty for 202 and 204.
    body: []const u8,
    /// 405 answers name the method the path takes.
    allow: enum { none, post, get } = .none,
    /// An `initialize` answered with sessions configured: the filter mints a
    /// session with this protocol version and sends it as `mcp-session-id`.
    new_session: ?[]const u8 = null,
};

/// A tools/call that needs the upstream. Lives in the request arena until
/// the http_call callback.
pub const Call = struct {
    /// The request id as JSON text, echoed in the answer.
    id: []const u8,
    tool: *const config.Tool,
    /// Validated arguments with defaults filled in; response templates may
    /// read them too.
    args: *const ObjectMap,
    /// Pseudo-headers first, as proxy_http_call wants them.
    headers: []const Header,
    body: []const u8,
    /// A 2026-07-28 request: the result carries `resultType`.
    modern: bool = false,
    /// The server's `limits.max_json_depth`, for the upstream's answer.
    max_json_depth: u32 = config.default_max_json_depth,
};

/// What the filter captured from the MCP request besides its body:
/// the client's credential at each of `Config.credential_sources`, raw
/// (header value, or query parameter after percent-decoding).
pub const Client = struct {
    credentials: []const ?[]const u8 = &.{},
    /// The 2026-07-28 routing headers as received (`MCP-Protocol-Version`,
    /// `Mcp-Method`, `Mcp-Name`); null when absent.
    protocol_version: ?[]const u8 = null,
    method: ?[]const u8 = null,
    name: ?[]const u8 = null,
    /// With `sessions` configured: the request's `Mcp-Session-Id`, as the
    /// filter found it while reading the headers (verifying needs the clock
    /// and the host's record of ended sessions).
    session: SessionState = .absent,
    /// The protocol version the request's verified session was opened
    /// with; null without one. Picks the form of argument errors
    /// (`argerror.revisionOf`) when no `MCP-Protocol-Version` names it.
    session_version: ?[]const u8 = null,
    /// `.sse`: a message POSTed to an HTTP+SSE session's endpoint. Its
    /// session was checked with the headers; it is always legacy (2024-11-05
    /// may be negotiated) and its answers go to the session's stream.
    transport: enum { streamable, sse } = .streamable,
    /// Where `handle` notes what the message was, for metrics and the
    /// access log (metrics.zig); null when nobody asks.
    seen: ?*Seen = null,
};

/// What `handle` learnt about a message: its method, id and (tools/call)
/// the tool, as the registry names it, or null with `unknown_tool` set.
pub const Seen = struct {
    method: ?[]const u8 = null,
    id: ?[]const u8 = null,
    tool: ?[]const u8 = null,
    unknown_tool: bool = false,
    arguments: ?Value = null,
};

pub const SessionState = enum { absent, valid, invalid };

pub const Outcome = union(enum) {
    reply: Reply,
    call: Call,
};

pub const UpstreamResponse = struct {
    status: u32,
    headers: []const Header,
    body: []const u8,
};

// ------------------------------------------------------------ local answers

pub fn errorBody(arena: Allocator, id: []const u8, code: i32, message: []const u8) Allocator.Error![]const u8 {
    var out = try Out.initCapacity(arena, 64 + id.len + message.len);
    try out.add("{\"jsonrpc\":\"2.0\",\"id\":");
    try out.add(id);
    try out.add(",\"error\":{\"code\":");
    try out.int(code);
    try out.add(",\"message\":");
    try out.str(message);
    try out.add("}}");
    return out.bytes();
}

fn errorReply(arena: Allocator, status: u32, id: []const u8, code: i32, comptime fmt: []const u8, args: anytype) Allocator.Error!Outcome {
    const message = try jsonw.allocPrint(arena, fmt, args);
    return .{ .reply = .{ .status = status, .body = try errorBody(arena, id, code, message) } };
}

fn resultReply(arena: Allocator, id: []const u8, parts: []const []const u8) Allocator.Error!Outcome {
    var n: usize = 40 + id.len;
    for (parts) |p| n += p.len;
    var out = try Out.initCapacity(arena, n);
    try out.add("{\"jsonrpc\":\"2.0\",\"id\":");
    try out.add(id);
    try out.add(",\"result\":");
    for (parts) |p| try out.add(p);
    try out.byte('}');
    return .{ .reply = .{ .status = 200, .body = out.bytes() } };
}

pub fn notFound(arena: Allocator) Allocator.Error!Reply {
    return .{ .status = 404, .body = try errorBody(arena, "null", invalid_request, "Invalid Request: no MCP server at this path") };
}

pub fn methodNotAllowed(arena: Allocator) Allocator.Error!Reply {
    return .{ .status = 405, .allow = .post, .body = try errorBody(arena, "null", invalid_request, "Invalid Request: only POST is supported") };
}

/// Any method but GET on an HTTP+SSE stream path.
pub fn methodNotAllowedGet(arena: Allocator) Allocator.Error!Reply {
    return .{ .status = 405, .allow = .get, .body = try errorBody(arena, "null", invalid_request, "Invalid Request: only GET is supported") };
}

/// A request of a session-bound revision without a session id.
pub fn sessionRequired(arena: Allocator, id: []const u8, comptime what: []const u8) Allocator.Error!Reply {
    return .{ .status = 400, .body = try errorBody(arena, id, invalid_request, "Bad Request: " ++ what ++ " is required") };
}

/// A session id we did not mint (for this server), expired, signed by a
/// retired key, or ended: clients start a new session on 404.
pub fn sessionNotFound(arena: Allocator, id: []const u8) Allocator.Error!Reply {
    return .{ .status = 404, .body = try errorBody(arena, id, invalid_request, "Session not found") };
}

/// The broker has no stream open for an HTTP+SSE session.
pub fn sessionNotConnected(arena: Allocator) Allocator.Error!Reply {
    return .{ .status = 404, .body = try errorBody(arena, "null", invalid_request, "Session not connected") };
}

/// The broker could not take an HTTP+SSE answer.
/// The words of `brokerUnavailable`, which callers extend with a request id.
pub const broker_unavailable = "session broker unavailable";

/// 503 -32603 with `message` (`broker_unavailable`, and a request id).
pub fn brokerUnavailable(arena: Allocator, message: []const u8) Allocator.Error!Reply {
    return .{ .status = 503, .body = try errorBody(arena, "null", internal_error, message) };
}

/// The request the filter sends the broker to put `body_len` bytes of an
/// answer on the HTTP+SSE stream of `channel`.
pub fn publishHeaders(arena: Allocator, broker: *const config.Broker, channel: []const u8, body_len: usize) Allocator.Error![]const Header {
    const headers = try arena.alloc(Header, 5);
    headers[0] = .{ .name = ":method", .value = "POST" };
    headers[1] = .{ .name = ":path", .value = try std.mem.concat(arena, u8, &.{ "/v1/sse/", channel }) };
    headers[2] = .{ .name = ":authority", .value = broker.cluster };
    headers[3] = .{ .name = "content-type", .value = "application/json" };
    headers[4] = .{ .name = "content-length", .value = try jsonw.allocPrint(arena, "{d}", .{body_len}) };
    return headers;
}

pub fn tooLarge(arena: Allocator, limit: u32) Allocator.Error!Reply {
    const message = try jsonw.allocPrint(arena, "Invalid Request: body exceeds {d} bytes", .{limit});
    return .{ .status = 413, .body = try errorBody(arena, "null", invalid_request, message) };
}

/// An `Accept` value that lets a GET open an event stream: one of its media
/// ranges is `text/event-stream`, `text/*` or `*/*`.
pub fn acceptsEventStream(accept: []const u8) bool {
    var it = std.mem.splitScalar(u8, accept, ',');
    while (it.next()) |range| {
        const end = std.mem.indexOfScalar(u8, range, ';') orelse range.len;
        const t = std.mem.trim(u8, range[0..end], " \t");
        for ([_][]const u8{ "text/event-stream", "text/*", "*/*" }) |ok| {
            if (std.ascii.eqlIgnoreCase(t, ok)) return true;
        }
    }
    return false;
}

/// `Origin` names a site that is not allowed: the DNS rebinding defence.
pub fn forbiddenOrigin(arena: Allocator) Allocator.Error!Reply {
    return .{ .status = 403, .body = try errorBody(arena, "null", invalid_request, "Forbidden: Origin not allowed") };
}

pub fn notAcceptable(arena: Allocator) Allocator.Error!Reply {
    return .{ .status = 406, .body = try errorBody(arena, "null", invalid_request, "Not Acceptable: Client must accept application/json or text/event-stream") };
}

/// A GET for an HTTP+SSE stream whose `Accept` rules the stream out.
pub fn notAcceptableEventStream(arena: Allocator) Allocator.Error!Reply {
    return .{ .status = 406, .body = try errorBody(arena, "null", invalid_request, "Not Acceptable: Client must accept text/event-stream") };
}

/// Browsers send `Origin`; a page on another site reaching a local gateway
/// through DNS rebinding carries its own origin. Allowed: localhost,
/// 127.0.0.1 and [::1] on any port (http or https), and the configured
/// `allowed_origins`. Matching ignores case and a default port.
pub fn originAllowed(arena: Allocator, cfg: *const config.Config, origin: []const u8) Allocator.Error!bool {
    const lower = try std.ascii.allocLowerString(arena, std.mem.trim(u8, origin, " \t"));
    const parts = config.splitOrigin(lower) orelse return false;
    for ([_][]const u8{ "localhost", "127.0.0.1", "[::1]" }) |h| {
        if (std.mem.eql(u8, parts.host, h)) return true;
    }
    const n = config.normaliseOrigin(lower) orelse return false;
    for (cfg.allowed_origins) |o| {
        if (std.mem.eql(u8, o, n)) return true;
    }
    return false;
}

/// An `Accept` value that lets us answer: one of its media ranges is
/// `application/json`, `text/event-stream`, `application/*`, `text/*` or
/// `*/*` (parameters, case and spaces ignored).
pub fn acceptable(accept: []const u8) bool {
    var it = std.mem.splitScalar(u8, accept, ',');
    while (it.next()) |range| {
        const end = std.mem.indexOfScalar(u8, range, ';') orelse range.len;
        const t = std.mem.trim(u8, range[0..end], " \t");
        for ([_][]const u8{ "application/json", "text/event-stream", "application/*", "text/*", "*/*" }) |ok| {
            if (std.ascii.eqlIgnoreCase(t, ok)) return true;
        }
    }
    return false;
}

/// A legacy `MCP-Protocol-Version` the filter does not serve: HTTP 400.
fn badProtocolHeader(arena: Allocator, id: []const u8, v: []const u8) Allocator.Error!Outcome {
    return errorReply(arena, 400, id, invalid_request, "Bad Request: Unsupported protocol version: {s}. Supported versions: 2025-03-26, 2025-06-18, 2025-11-25, 2026-07-28", .{v});
}

// ------------------------------------------------------- request handling

/// A JSON-RPC message whose envelope passed the checks every server kind
/// applies (`parseMessage`).
pub const Message = struct {
    /// The parsed object (arena memory), for the fields beyond the envelope.
    obj: ObjectMap,
    /// The id as JSON text, echoed byte for byte; null for a notification.
    id: ?[]const u8,
    /// Null for a response (`result` / `error` without `method`).
    method: ?[]const u8,
    params: ?Value,
};

pub const Parsed = union(enum) {
    message: Message,
    /// The HTTP 400 a malformed message gets.
    reply: Reply,
};

/// Parses one POST body and checks its JSON-RPC 2.0 envelope: JSON nesting
/// at most `max_depth` deep, then JSON (-32700), one object, not a batch,
/// `jsonrpc: "2.0"`, a string or number id, a string method or else a
/// response (-32600).
pub fn parseMessage(arena: Allocator, body: []const u8, max_depth: u32) Allocator.Error!Parsed {
    // RFC 8259 (section 9) lets a parser limit nesting; text past the limit
    // is text this parser cannot parse, which JSON-RPC calls a parse error
    // (-32700; the id is unknown, so null). Checked before parsing: parsing
    // it would already cost the memory the limit protects.
    if (!jsonw.nestingWithin(body, max_depth))
        return malformed(arena, "null", parse_error, "Parse error: JSON nested deeper than the limit of {d} levels", .{max_depth});
    var scanner = std.json.Scanner.initCompleteInput(arena, body);
    var diag: std.json.Diagnostics = .{};
    scanner.enableDiagnostics(&diag);
    const msg = std.json.parseFromTokenSourceLeaky(Value, arena, &scanner, .{
        .duplicate_field_behavior = .use_last,
        // Keep number text as received: ids and arguments are echoed and
        // forwarded byte for byte, whatever their size.
        .parse_numbers = false,
    }) catch |err| {
        if (err == error.OutOfMemory) return error.OutOfMemory;
        const what = switch (err) {
            error.UnexpectedEndOfInput => "unexpected end of input",
            error.SyntaxError => "syntax error",
            else => @errorName(err),
        };
        return malformed(arena, "null", parse_error, "Parse error: {s} at line {d} column {d}", .{ what, diag.getLine(), diag.getColumn() });
    };

    const obj = switch (msg) {
        .object => |o| o,
        .array => return malformed(arena, "null", invalid_request, "Invalid Request: batch requests are not supported", .{}),
        else => return malformed(arena, "null", invalid_request, "Invalid Request: not a JSON-RPC object", .{}),
    };

    const version_ok = if (obj.get("jsonrpc")) |v| v == .string and std.mem.eql(u8, v.string, "2.0") else false;
    var id: ?[]const u8 = null;
    if (obj.get("id")) |v| switch (v) {
        .string => |s| {
            var out = try Out.initCapacity(arena, s.len + 2);
            try out.str(s);
            id = out.bytes();
        },
        .number_string => |s| id = s,
        else => return malformed(arena, "null", invalid_request, "Invalid Request: id must be a string or a number", .{}),
    };
    if (!version_ok) return malformed(arena, id orelse "null", invalid_request, "Invalid Request: jsonrpc must be \"2.0\"", .{});

    const method: ?[]const u8 = if (obj.get("method")) |m| switch (m) {
        .string => |name| name,
        else => return malformed(arena, id orelse "null", invalid_request, "Invalid Request: method must be a string", .{}),
    } else if (obj.contains("result") or obj.contains("error"))
        null
    else
        return malformed(arena, id orelse "null", invalid_request, "Invalid Request: no method", .{});
    return .{ .message = .{ .obj = obj, .id = id, .method = method, .params = obj.get("params") } };
}

fn malformed(arena: Allocator, id: []const u8, code: i32, comptime fmt: []const u8, args: anytype) Allocator.Error!Parsed {
    const message = try jsonw.allocPrint(arena, fmt, args);
    return .{ .reply = .{ .status = 400, .body = try errorBody(arena, id, code, message) } };
}

/// Handles one complete POST body.
pub fn handle(arena: Allocator, cfg: *const config.Config, body: []const u8, client: *const Client) Allocator.Error!Outcome {
    const m = switch (try parseMessage(arena, body, cfg.max_json_depth)) {
        .message => |m| m,
        .reply => |r| return .{ .reply = r },
    };
    const id = m.id;
    const params = m.params;
    if (client.seen) |seen| {
        seen.method = m.method;
        seen.id = m.id;
    }
    const method = m.method orelse {
        if (try sessionGate(arena, cfg, client, id orelse "null", null)) |r| return .{ .reply = r };
        return .{ .reply = .{ .status = 202, .body = "" } };
    };
    // Only an initialize request may come without a session: it opens one.
    if (id == null or !std.mem.eql(u8, method, "initialize")) {
        if (try sessionGate(arena, cfg, client, id orelse "null", params)) |r| return .{ .reply = r };
    }
    const rid = id orelse {
        // Notifications too must carry a version we serve, when they name one.
        if (client.protocol_version) |v| if (!isServedVersion(v)) return badProtocolHeader(arena, "null", v);
        return .{ .reply = .{ .status = 202, .body = "" } };
    };

    if (client.transport == .streamable and isModern(params, client)) return modern(arena, cfg, rid, method, params, client);
    // After initialize the client names the negotiated version in a header;
    // without one, 2025-03-26 is assumed (accepted as is).
    if (client.protocol_version) |v| if (!std.mem.eql(u8, method, "initialize") and !isServedVersion(v))
        return badProtocolHeader(arena, rid, v);
    if (std.mem.eql(u8, method, "tools/call")) return toolsCall(arena, cfg, rid, params, client, false);
    if (std.mem.eql(u8, method, "tools/list")) {
        const page = toolsListPage(cfg, params) orelse return invalidCursor(arena, 200, rid);
        return resultReply(arena, rid, &.{page});
    }
    if (std.mem.eql(u8, method, "ping")) return resultReply(arena, rid, &.{"{}"});
    if (std.mem.eql(u8, method, "initialize")) {
        if (client.transport == .sse) {
            return resultReply(arena, rid, &.{ "{\"protocolVersion\":\"", negotiateSse(params), cfg.initialize_tail });
        }
        const version = negotiate(params);
        var outcome = try resultReply(arena, rid, &.{ "{\"protocolVersion\":\"", version, cfg.initialize_tail });
        if (cfg.sessions != null) outcome.reply.new_session = version;
        return outcome;
    }
    return errorReply(arena, 200, rid, method_not_found, "method not found: {s}", .{method});
}

/// With `sessions` configured, a Streamable HTTP message of a legacy
/// revision needs a valid session id: absent → 400, anything else that
/// does not verify → 404. Stateless (2026-07-28) messages never do, and
/// HTTP+SSE messages were checked with their headers.
fn sessionGate(arena: Allocator, cfg: *const config.Config, client: *const Client, id: []const u8, params: ?Value) Allocator.Error!?Reply {
    if (cfg.sessions == null or client.transport == .sse) return null;
    if (isModern(params, client)) return null;
    return switch (client.session) {
        .valid => null,
        .absent => try sessionRequired(arena, id, "Mcp-Session-Id header"),
        .invalid => try sessionNotFound(arena, id),
    };
}

// ------------------------------------------------- 2026-07-28 (stateless)

/// `params._meta` when params is an object and `_meta` one too.
fn metaOf(params: ?Value) ?ObjectMap {
    const p = params orelse return null;
    if (p != .object) return null;
    const m = p.object.get("_meta") orelse return null;
    return if (m == .object) m.object else null;
}

/// A request of the stateless revision: its `_meta` names a protocol
/// version (a key only 2026-07-28+ envelopes carry; legacy `_meta` holds
/// `progressToken`), or its `MCP-Protocol-Version` header is 2026-07-28.
pub fn isModern(params: ?Value, client: *const Client) bool {
    if (client.protocol_version) |v| if (std.mem.eql(u8, v, modern_version)) return true;
    const meta = metaOf(params) orelse return false;
    return meta.contains(protocol_version_key);
}

fn isServedVersion(v: []const u8) bool {
    if (std.mem.eql(u8, v, modern_version)) return true;
    for (supported_versions) |s| {
        if (std.mem.eql(u8, s, v)) return true;
    }
    return false;
}

fn mismatch(arena: Allocator, id: []const u8, message: []const u8) Allocator.Error!Outcome {
    return .{ .reply = .{ .status = 400, .body = try errorBody(arena, id, header_mismatch, message) } };
}

fn unsupportedVersion(arena: Allocator, id: []const u8, requested: []const u8) Allocator.Error!Outcome {
    var out = try Out.initCapacity(arena, 192 + id.len + requested.len);
    try out.add("{\"jsonrpc\":\"2.0\",\"id\":");
    try out.add(id);
    try out.add(",\"error\":{\"code\":");
    try out.int(unsupported_protocol_version);
    try out.add(",\"message\":\"Unsupported protocol version\",\"data\":{\"supported\":" ++ all_versions_json ++ ",\"requested\":");
    try out.str(requested);
    try out.add("}}}");
    return .{ .reply = .{ .status = 400, .body = out.bytes() } };
}

/// A 2026-07-28 request, validated by `checkModern`, then
/// `server/discover`, `tools/list` and `tools/call`; anything else,
/// `initialize` and `ping` included (the revision removed them), is -32601
/// with HTTP 404.
fn modern(arena: Allocator, cfg: *const config.Config, id: []const u8, method: []const u8, params: ?Value, client: *const Client) Allocator.Error!Outcome {
    if (try checkModern(arena, id, method, params, client)) |rejected| return rejected;
    if (std.mem.eql(u8, method, "tools/call")) return toolsCall(arena, cfg, id, params, client, true);
    if (std.mem.eql(u8, method, "tools/list")) return modernToolsList(arena, cfg, id, params);
    if (std.mem.eql(u8, method, "server/discover")) return discover(arena, cfg, id);
    return errorReply(arena, 404, id, method_not_found, "method not found: {s}", .{method});
}

/// The 2026-07-28 validation ladder (first failure wins; every failure is
/// HTTP 400): the `_meta` envelope (-32602), the routing headers against
/// the body (-32020; an unserved `MCP-Protocol-Version` is -32022 first),
/// the version itself (-32022). null when the request passes. Proxied
/// servers (proxy.zig) check their requests with it too.
pub fn checkModern(arena: Allocator, id: []const u8, method: []const u8, params: ?Value, client: *const Client) Allocator.Error!?Outcome {
    const meta = metaOf(params) orelse return try errorReply(arena, 400, id, invalid_params, "invalid params: params._meta must be an object carrying the required {s} and {s} envelope keys", .{ protocol_version_key, client_capabilities_key });
    const version = meta.get(protocol_version_key);
    if (version == null or !meta.contains(client_capabilities_key)) {
        const missing = if (version != null) client_capabilities_key else if (meta.contains(client_capabilities_key)) protocol_version_key else protocol_version_key ++ ", " ++ client_capabilities_key;
        return try errorReply(arena, 400, id, invalid_params, "invalid params: params._meta is missing the required envelope key(s): {s}", .{missing});
    }

    const header_version = client.protocol_version orelse return try mismatch(arena, id, "MCP-Protocol-Version header is missing");
    if (version.? != .string or !std.mem.eql(u8, header_version, version.?.string)) {
        if (!isServedVersion(header_version)) return try unsupportedVersion(arena, id, header_version);
        return try mismatch(arena, id, "MCP-Protocol-Version header does not match the request's protocol version");
    }
    const header_method = client.method orelse return try mismatch(arena, id, "Mcp-Method header is missing");
    if (!std.mem.eql(u8, header_method, method)) return try mismatch(arena, id, "Mcp-Method header does not match the request body's method");
    const is_call = std.mem.eql(u8, method, "tools/call");
    if (is_call) if (params.?.object.get("name")) |n| if (n == .string) {
        const header_name = client.name orelse return try mismatch(arena, id, "Mcp-Name header is missing");
        const decoded = try decodeHeaderValue(arena, header_name);
        if (decoded == null or !std.mem.eql(u8, decoded.?, n.string))
            return try mismatch(arena, id, "Mcp-Name header does not match the request body's name");
    };
    if (!std.mem.eql(u8, version.?.string, modern_version)) return try unsupportedVersion(arena, id, version.?.string);
    return null;
}

/// Result fields every 2026-07-28 list/discover answer carries. The answers
/// hold no per-caller data, so any cache may share them; `ttlMs` 0 because
/// the control plane may replace the configuration at any time.
const cache_fields = "\"cacheScope\":\"public\",\"ttlMs\":0,\"resultType\":\"complete\"";

/// The `tools/list` result for `params.cursor`: the whole list when no
/// page size splits it, else the page the cursor names (the first without
/// one). null for a cursor we did not issue under this configuration.
pub fn toolsListPage(cfg: *const config.Config, params: ?Value) ?[]const u8 {
    var cursor: ?[]const u8 = null;
    if (params) |p| if (p == .object) if (p.object.get("cursor")) |c| switch (c) {
        .null => {},
        .string => |str| cursor = str,
        else => return null,
    };
    const c = cursor orelse return if (cfg.pages.len == 0) cfg.tools_list_json else cfg.pages[0];
    if (cfg.cursors.len > 1) for (cfg.cursors[1..], cfg.pages[1..]) |known, page| {
        if (std.mem.eql(u8, known, c)) return page;
    };
    return null;
}

fn invalidCursor(arena: Allocator, status: u32, id: []const u8) Allocator.Error!Outcome {
    return errorReply(arena, status, id, invalid_params, "invalid params: invalid or expired cursor", .{});
}

fn modernToolsList(arena: Allocator, cfg: *const config.Config, id: []const u8, params: ?Value) Allocator.Error!Outcome {
    // A page is a compact object: reopen it before its brace.
    const list = toolsListPage(cfg, params) orelse return invalidCursor(arena, 400, id);
    const head = list[0 .. list.len - 1];
    const sep = if (head.len == 1) "" else ",";
    return resultReply(arena, id, &.{ head, sep, cache_fields ++ "}" });
}

fn discover(arena: Allocator, cfg: *const config.Config, id: []const u8) Allocator.Error!Outcome {
    const tail = cfg.initialize_tail;
    const server_info = tail[config.initialize_server_info_prefix.len..cfg.server_info_end];
    // Empty, or `,"instructions":"…"`.
    const instructions = tail[cfg.server_info_end .. tail.len - 1];
    return resultReply(arena, id, &.{
        "{\"supportedVersions\":" ++ all_versions_json ++ ",\"capabilities\":{\"tools\":{}}," ++ cache_fields ++
            ",\"_meta\":{\"io.modelcontextprotocol/serverInfo\":",
        server_info,
        "}",
        instructions,
        "}",
    });
}

/// An `Mcp-Name` value as the client encoded it: verbatim, or the
/// `=?base64?…?=` form for values that are not plain visible ASCII. null
/// when that form is malformed (so it never matches).
pub fn decodeHeaderValue(arena: Allocator, v: []const u8) Allocator.Error!?[]const u8 {
    const open = "=?base64?";
    if (!(v.len >= open.len + 2 and std.mem.startsWith(u8, v, open) and std.mem.endsWith(u8, v, "?="))) return v;
    const payload = v[open.len .. v.len - 2];
    const dec = std.base64.standard.Decoder;
    const n = dec.calcSizeForSlice(payload) catch return null;
    const out = try arena.alloc(u8, n);
    dec.decode(out, payload) catch return null;
    // Canonical form only, as the encoder writes it.
    const again = try arena.alloc(u8, std.base64.standard.Encoder.calcSize(n));
    if (!std.mem.eql(u8, std.base64.standard.Encoder.encode(again, out), payload)) return null;
    if (!std.unicode.utf8ValidateSlice(out)) return null;
    return out;
}

/// The client's protocol version when we speak it, else our latest.
pub fn negotiate(params: ?Value) []const u8 {
    const p = params orelse return latest_version;
    if (p != .object) return latest_version;
    const v = p.object.get("protocolVersion") orelse return latest_version;
    if (v != .string) return latest_version;
    for (supported_versions) |s| {
        if (std.mem.eql(u8, s, v.string)) return s;
    }
    return latest_version;
}

/// `negotiate` on the HTTP+SSE transport, where 2024-11-05 is served too.
pub fn negotiateSse(params: ?Value) []const u8 {
    const p = params orelse return latest_version;
    if (p == .object) if (p.object.get("protocolVersion")) |v| if (v == .string and std.mem.eql(u8, v.string, sse_version)) return sse_version;
    return negotiate(params);
}

/// `modern`: a 2026-07-28 request; its errors answer HTTP 400 and its
/// results carry `resultType`.
fn toolsCall(arena: Allocator, cfg: *const config.Config, id: []const u8, params_opt: ?Value, client: *const Client, is_modern: bool) Allocator.Error!Outcome {
    const st: u32 = if (is_modern) 400 else 200;
    const params = params_opt orelse return errorReply(arena, st, id, invalid_params, "invalid params: params must be an object", .{});
    if (params != .object) return errorReply(arena, st, id, invalid_params, "invalid params: params must be an object", .{});
    const name_value = params.object.get("name") orelse return errorReply(arena, st, id, invalid_params, "invalid params: name must be a string", .{});
    if (name_value != .string) return errorReply(arena, st, id, invalid_params, "invalid params: name must be a string", .{});
    const tool = cfg.findTool(name_value.string) orelse {
        if (client.seen) |seen| seen.unknown_tool = true;
        return errorReply(arena, st, id, invalid_params, "unknown tool: {s}", .{name_value.string});
    };
    if (client.seen) |seen| {
        seen.tool = tool.name;
        seen.arguments = params.object.get("arguments");
    }

    const args = try arena.create(ObjectMap);
    if (params.object.get("arguments")) |a| switch (a) {
        .object => |o| args.* = o,
        .null => args.* = ObjectMap.init(arena),
        else => return errorReply(arena, st, id, invalid_params, "invalid params: arguments must be an object", .{}),
    } else args.* = ObjectMap.init(arena);

    // From here on a failure is the arguments' (SEP-1303): its form
    // depends on the revision.
    const reject = argerror.Answer.init(id, client, is_modern);
    if (try validate(arena, tool, args)) |message| return reject.failWith(arena, message);
    var cred: ?[]const u8 = null;
    if (tool.passthrough) |*pt| {
        cred = credential(pt, client) orelse {
            const text = try jsonw.allocPrint(arena, "this tool needs the client's credential in {s}", .{pt.from_name});
            return .{ .reply = .{ .status = 200, .body = try resultBody(arena, id, text, true, null, is_modern) } };
        };
    }
    var outcome = try buildCall(arena, tool, reject, args, cred);
    if (outcome == .call) {
        outcome.call.max_json_depth = cfg.max_json_depth;
        outcome.call.modern = is_modern;
    }
    return outcome;
}

/// The client's credential for a passthrough tool: the captured value
/// without `from.prefix` (compared ASCII case-insensitively). A value
/// without the prefix, or nothing after it, counts as absent.
pub fn credential(pt: *const config.Passthrough, client: *const Client) ?[]const u8 {
    if (pt.source >= client.credentials.len) return null;
    const raw = client.credentials[pt.source] orelse return null;
    if (raw.len < pt.from_prefix.len or !std.ascii.eqlIgnoreCase(raw[0..pt.from_prefix.len], pt.from_prefix)) return null;
    const v = raw[pt.from_prefix.len..];
    return if (v.len == 0) null else v;
}

/// The value of query parameter `name` in a request target, decoded as
/// HTML forms and Go's `url.ParseQuery` do (`%XX`, `+` as space); the
/// first occurrence wins. Names are compared after decoding.
pub fn queryParam(arena: Allocator, target: []const u8, name: []const u8) Allocator.Error!?[]const u8 {
    const q = std.mem.indexOfScalar(u8, target, '?') orelse return null;
    var end = target.len;
    if (std.mem.indexOfScalarPos(u8, target, q, '#')) |h| end = h;
    var it = std.mem.splitScalar(u8, target[q + 1 .. end], '&');
    while (it.next()) |pair| {
        if (pair.len == 0) continue;
        const eq = std.mem.indexOfScalar(u8, pair, '=') orelse pair.len;
        const key = try formDecode(arena, pair[0..eq]);
        if (!std.mem.eql(u8, key, name)) continue;
        return try formDecode(arena, if (eq < pair.len) pair[eq + 1 ..] else "");
    }
    return null;
}

fn formDecode(arena: Allocator, s: []const u8) Allocator.Error![]const u8 {
    if (std.mem.indexOfAny(u8, s, "%+") == null) return s;
    const out = try arena.alloc(u8, s.len);
    var n: usize = 0;
    var i: usize = 0;
    while (i < s.len) : (i += 1) {
        const c = s[i];
        if (c == '+') {
            out[n] = ' ';
        } else if (c == '%' and i + 2 < s.len) {
            const hi = std.fmt.charToDigit(s[i + 1], 16) catch {
                out[n] = c;
                n += 1;
                continue;
            };
            const lo = std.fmt.charToDigit(s[i + 2], 16) catch {
                out[n] = c;
                n += 1;
                continue;
            };
            out[n] = hi * 16 + lo;
            i += 2;
        } else {
            out[n] = c;
        }
        n += 1;
    }
    return out[0..n];
}

/// Checks declared arguments and fills defaults. Returns the message of
/// the argument failure (`argerror`) on failure. An explicit `null` counts as absent: clients often send null
/// for optional parameters they do not use.
pub fn validate(arena: Allocator, tool: *const config.Tool, args: *ObjectMap) Allocator.Error!?[]const u8 {
    for (tool.args) |*a| {
        const present = args.get(a.name);
        if (present == null or present.? == .null) {
            if (present != null) _ = args.orderedRemove(a.name);
            if (a.default) |d| {
                // Configured, so not checked; a number still goes out in
                // canonical form. Only the top level is rewritten: nested
                // values are shared with the configuration.
                var v = d.*;
                if (v == .number_string) if (a.check.type) |t| if (t == .integer or t == .number) {
                    switch (try value.canonicalNumber(arena, v.number_string, t == .integer)) {
                        .ok => |text| v = .{ .number_string = text },
                        else => {},
                    }
                };
                try args.put(a.name, v);
            } else if (a.required) {
                return try jsonw.allocPrint(arena, "missing required argument: {s}", .{a.name});
            }
            continue;
        }
        const label = Label{ .name = a.name };
        if (try check(arena, &a.check, args.getPtr(a.name).?, &label)) |message| return message;
    }
    return null;
}

/// An argument or an element of one (`ids[2]`), rendered only for a message.
const Label = struct {
    parent: ?*const Label = null,
    name: []const u8 = "",
    index: usize = 0,

    fn write(l: *const Label, out: *Out) Allocator.Error!void {
        if (l.parent) |p| {
            try p.write(out);
            try out.print("[{d}]", .{l.index});
        } else try out.add(l.name);
    }
};

/// Checks `v` and rewrites a number declared `integer` or `number` to its
/// canonical spelling (`value.canonicalNumber`), so every place the value
/// is emitted (path, query, header, form, JSON body, templates) sends the
/// same text: `1E+2` reaches a backend as `100`, never verbatim.
fn check(arena: Allocator, c: *const config.Check, v: *Value, label: *const Label) Allocator.Error!?[]const u8 {
    if (c.type) |t| if (!hasType(v.*, t)) {
        return try checkMessage(arena, label, ": expected ", @tagName(t));
    };
    if (c.type) |t| if ((t == .integer or t == .number) and v.* == .number_string) {
        switch (try value.canonicalNumber(arena, v.number_string, t == .integer)) {
            .ok => |text| v.* = .{ .number_string = text },
            .not_integer => return try checkMessage(arena, label, ": expected ", "integer"),
            .out_of_range => return try checkMessage(arena, label, ": number out of range", if (t == .integer)
                std.fmt.comptimePrint(" (an integer has at most {d} digits)", .{value.max_number_digits})
            else
                ""),
        }
    };
    if (c.one_of) |set| {
        for (set) |e| {
            if (value.equal(v.*, e)) break;
        } else return try checkMessage(arena, label, ": must be one of ", c.one_of_json);
    }
    if (c.items) |inner| if (v.* == .array) {
        for (v.array.items, 0..) |*item, i| {
            const l = Label{ .parent = label, .index = i };
            if (try check(arena, inner, item, &l)) |message| return message;
        }
    };
    return null;
}

fn checkMessage(arena: Allocator, label: *const Label, what: []const u8, detail: []const u8) Allocator.Error![]const u8 {
    var out = Out.init(arena);
    try out.add("argument ");
    try label.write(&out);
    try out.add(what);
    try out.add(detail);
    return out.bytes();
}

pub fn hasType(v: Value, t: config.ArgType) bool {
    return switch (t) {
        .string => v == .string,
        .boolean => v == .bool,
        .array => v == .array,
        .object => v == .object,
        .number => v == .number_string or v == .integer or v == .float,
        .integer => switch (v) {
            .integer => true,
            .float => |f| isWhole(f),
            .number_string => |s| isIntegerText(s),
            else => false,
        },
    };
}

/// JSON Schema's notion: an integer is a number with a zero fractional
/// part, so 1.0 and 1e2 qualify; digits of any length qualify too. Decided
/// on the decimal text: `1.0000000000000000001` is not an integer even
/// though it rounds to one as a double.
fn isIntegerText(s: []const u8) bool {
    if (std.json.isNumberFormattedLikeAnInteger(s)) return true;
    var buf: [256]u8 = undefined;
    var fba = std.heap.FixedBufferAllocator.init(&buf);
    return switch (value.canonicalNumber(fba.allocator(), s, true) catch return true) {
        .ok, .out_of_range => true,
        .not_integer => false,
    };
}

fn isWhole(f: f64) bool {
    return std.math.isFinite(f) and @floor(f) == f;
}

/// Appends `name=value` pairs to a rendered path, starting the query string
/// when the path has none.
const QueryAppender = struct {
    path: *Out,
    has_query: bool,

    fn init(path: *Out) QueryAppender {
        return .{ .path = path, .has_query = std.mem.indexOfScalar(u8, path.bytes(), '?') != null };
    }

    fn start(q: *QueryAppender, name: []const u8) Allocator.Error!void {
        const items = q.path.bytes();
        if (!q.has_query) {
            try q.path.byte('?');
            q.has_query = true;
        } else if (items[items.len - 1] != '?' and items[items.len - 1] != '&') {
            try q.path.byte('&');
        }
        try q.path.percent(name);
        try q.path.byte('=');
    }
};

/// Renders the upstream request, or the argument failure (`argerror`: -32602
/// or a tool execution error, by revision) when a header value
/// came out with a character that would split or end the header, or an
/// argument would add a `.`, `..` or empty segment to the path
/// (`tpl.unsafeSegment`). `cred` is the client's credential from
/// `credential`, required for passthrough tools.
pub fn buildCall(arena: Allocator, tool: *const config.Tool, reject: argerror.Answer, args: *const ObjectMap, cred: ?[]const u8) Allocator.Error!Outcome {
    const id = reject.id;
    var scope = tpl.Scope{ .arena = arena, .args = .{ .object = args.* } };

    var path = Out.init(arena);
    var spans: std.ArrayList(tpl.Span) = .empty;
    scope.spans = &spans;
    try tpl.render(&path, tool.path, &scope);
    scope.spans = null;
    if (tpl.unsafeSegment(path.bytes(), spans.items)) |bad| {
        const what = switch (bad.kind) {
            .dot => "\".\" and \"..\" are not allowed as a path segment",
            .empty => "an empty value is not allowed as a path segment",
        };
        if (tpl.argumentName(bad.expr)) |name| {
            return reject.fail(arena, "invalid params: argument {s}: {s}", .{ name, what });
        }
        return reject.fail(arena, "invalid params: a value in the request path: {s}", .{what});
    }
    var query = QueryAppender.init(&path);
    for (tool.query) |q| {
        const v = args.get(q.arg) orelse continue;
        try query.start(q.name);
        try tpl.writeValue(&path, v, .query);
    }
    for (tool.static_auth) |sc| if (sc.in == .query) {
        try query.start(sc.name);
        try path.percent(sc.value);
    };
    const pt = tool.passthrough;
    if (pt != null and pt.?.to_in == .query) {
        try query.start(pt.?.to_name);
        try path.percent(pt.?.to_prefix);
        try path.percent(cred.?);
    }

    var body = Out.init(arena);
    var content_type: ?[]const u8 = null;
    if (tool.body) |b| switch (b) {
        .template => |t| {
            try tpl.render(&body, t.template, &scope);
            content_type = t.content_type;
        },
        .json_args => |names| {
            try body.byte('{');
            var first = true;
            for (names) |n| {
                const v = args.get(n) orelse continue;
                if (!first) try body.byte(',');
                first = false;
                try body.str(n);
                try body.byte(':');
                try body.value(v);
            }
            try body.byte('}');
            content_type = "application/json";
        },
        .form_args => |names| {
            var first = true;
            for (names) |n| {
                const v = args.get(n) orelse continue;
                if (!first) try body.byte('&');
                first = false;
                try body.percent(n);
                try body.byte('=');
                try tpl.writeValue(&body, v, .query);
            }
            content_type = "application/x-www-form-urlencoded";
        },
    };

    var headers: std.ArrayList(Header) = try .initCapacity(arena, 7 + tool.headers.len + tool.static_auth.len);
    headers.appendAssumeCapacity(.{ .name = ":method", .value = tool.method });
    headers.appendAssumeCapacity(.{ .name = ":path", .value = path.bytes() });
    headers.appendAssumeCapacity(.{ .name = ":authority", .value = tool.upstream.authority });
    if (content_type) |ct| headers.appendAssumeCapacity(.{ .name = "content-type", .value = ct });
    // Without an explicit length a body goes out chunked, which many small
    // backends do not accept.
    if (tool.body != null) {
        headers.appendAssumeCapacity(.{ .name = "content-length", .value = try jsonw.allocPrint(arena, "{d}", .{body.bytes().len}) });
    }
    for (tool.headers) |h| {
        const v = try tpl.renderAlloc(h.value, &scope);
        // An optional header argument that was not given must not go out as an empty header.
        if (v.len == 0) continue;
        headers.appendAssumeCapacity(.{ .name = h.name, .value = v });
    }
    if (tool.cookies.len != 0) {
        var cookie = Out.init(arena);
        for (tool.cookies) |c| {
            const v = args.get(c.arg) orelse continue;
            if (cookie.bytes().len != 0) try cookie.add("; ");
            try cookie.add(c.name);
            try cookie.byte('=');
            try tpl.writeValue(&cookie, v, .query);
        }
        if (cookie.bytes().len != 0) headers.appendAssumeCapacity(.{ .name = "cookie", .value = cookie.bytes() });
    }
    for (tool.static_auth) |sc| if (sc.in == .header) {
        headers.appendAssumeCapacity(.{ .name = sc.name, .value = sc.value });
    };
    if (pt != null and pt.?.to_in == .header) {
        const v = try std.mem.concat(arena, u8, &.{ pt.?.to_prefix, cred.? });
        headers.appendAssumeCapacity(.{ .name = pt.?.to_name, .value = v });
    }
    for (headers.items) |h| if (config.hasControl(h.value)) {
        if (headerArg(tool, h.name, args)) |arg|
            return reject.fail(arena, "argument {s}: contains a control character, which header {s} cannot carry (only tab is allowed)", .{ arg, h.name });
        return reject.fail(arena, "header {s}: value contains a control character (only tab is allowed)", .{h.name});
    };

    return .{ .call = .{ .id = id, .tool = tool, .args = args, .headers = headers.items, .body = body.bytes() } };
}

/// The argument whose string value put a control character into header
/// `name`'s template, for an error that names what the client sent; null
/// when none of its top-level string arguments did (a credential, a nested
/// value).
fn headerArg(tool: *const config.Tool, name: []const u8, args: *const ObjectMap) ?[]const u8 {
    for (tool.headers) |h| if (std.mem.eql(u8, h.name, name)) {
        for (h.value.nodes) |node| switch (node) {
            .out => |o| switch (o.expr) {
                .args => |segs| if (segs.len != 0) {
                    const v = args.get(segs[0].key) orelse continue;
                    if (v == .string and config.hasControl(v.string)) return segs[0].key;
                },
                else => {},
            },
            else => {},
        };
    };
    return null;
}

// ------------------------------------------------------- upstream answers

/// The JSON-RPC answer for an upstream HTTP response.
pub fn toolResult(arena: Allocator, call: *const Call, resp: UpstreamResponse) Allocator.Error![]const u8 {
    const r = call.tool.response;
    const ok = resp.status >= 200 and resp.status < 300;
    if (ok) {
        if (media(tpl.findHeader(resp.headers, "content-type") orelse "")) |m| {
            return mediaBody(arena, call.id, m, resp.body, call.modern);
        }
    }
    const template: ?tpl.Template = if (ok) r.body else r.error_body;
    const needs_doc = (template != null and template.?.reads_resp) or (ok and r.structured);

    var doc: ?Value = null;
    if (needs_doc) {
        // Not parsed at all: the caller learns why instead of the raw text.
        if (!jsonw.nestingWithin(resp.body, call.max_json_depth)) {
            const why = try jsonw.allocPrint(arena, "upstream answer nests JSON deeper than the limit of {d} levels", .{call.max_json_depth});
            return resultBody(arena, call.id, why, true, null, call.modern);
        }
        doc = std.json.parseFromSliceLeaky(Value, arena, resp.body, .{
            .duplicate_field_behavior = .use_last,
            .parse_numbers = false,
        }) catch |err| switch (err) {
            error.OutOfMemory => return error.OutOfMemory,
            else => null,
        };
    }

    var text = Out.init(arena);
    if (template) |t| {
        if (doc == null and t.reads_resp) {
            // Upstream did not send JSON: the raw body is the best answer.
            try text.add(resp.body);
        } else {
            var scope = tpl.Scope{
                .arena = arena,
                .args = .{ .object = call.args.* },
                .resp = doc,
                .status = resp.status,
                .headers = resp.headers,
            };
            try tpl.render(&text, t, &scope);
        }
    } else if (ok) {
        try text.add(r.prepend);
        try text.add(resp.body);
        try text.add(r.append);
    } else {
        try text.add(resp.body);
    }
    if (!ok and text.bytes().len == 0) {
        try text.add("upstream returned HTTP ");
        try text.int(resp.status);
    }

    const structured = ok and r.structured and doc != null and doc.? == .object;
    return resultBody(arena, call.id, text.bytes(), !ok, if (structured) resp.body else null, call.modern);
}

pub const Media = struct {
    kind: enum { image, audio },
    /// The content type without parameters.
    mime: []const u8,
};

/// Whether a content type is an image or audio answer.
pub fn media(content_type: []const u8) ?Media {
    const end = std.mem.indexOfScalar(u8, content_type, ';') orelse content_type.len;
    const mime = std.mem.trim(u8, content_type[0..end], " \t");
    if (std.ascii.startsWithIgnoreCase(mime, "image/")) return .{ .kind = .image, .mime = mime };
    if (std.ascii.startsWithIgnoreCase(mime, "audio/")) return .{ .kind = .audio, .mime = mime };
    return null;
}

fn mediaBody(arena: Allocator, id: []const u8, m: Media, data: []const u8, is_modern: bool) Allocator.Error![]const u8 {
    const enc = std.base64.standard.Encoder;
    const n = enc.calcSize(data.len);
    var out = try Out.initCapacity(arena, 128 + id.len + m.mime.len + n);
    try out.add("{\"jsonrpc\":\"2.0\",\"id\":");
    try out.add(id);
    try out.add(",\"result\":{\"content\":[{\"type\":\"");
    try out.add(@tagName(m.kind));
    try out.add("\",\"data\":\"");
    // Straight into the answer: media bodies are the largest we handle.
    _ = enc.encode(out.list.unusedCapacitySlice()[0..n], data);
    out.list.items.len += n;
    try out.add("\",\"mimeType\":");
    const lower = try std.ascii.allocLowerString(arena, m.mime);
    try out.str(lower);
    try out.add("}]");
    try out.add(resultEnd(false, is_modern));
    return out.bytes();
}

/// The JSON-RPC answer when the upstream could not be reached at all.
pub fn toolFailure(arena: Allocator, call: *const Call, reason: []const u8) Allocator.Error![]const u8 {
    return resultBody(arena, call.id, reason, true, null, call.modern);
}

/// The end of a tool result: `isError`, and for 2026-07-28 `resultType`.
fn resultEnd(is_error: bool, is_modern: bool) []const u8 {
    if (is_modern) return if (is_error) ",\"isError\":true,\"resultType\":\"complete\"}}" else ",\"isError\":false,\"resultType\":\"complete\"}}";
    return if (is_error) ",\"isError\":true}}" else ",\"isError\":false}}";
}

pub fn resultBody(arena: Allocator, id: []const u8, text: []const u8, is_error: bool, structured: ?[]const u8, is_modern: bool) Allocator.Error![]const u8 {
    var out = try Out.initCapacity(arena, 96 + id.len + text.len + if (structured) |s| s.len else 0);
    try out.add("{\"jsonrpc\":\"2.0\",\"id\":");
    try out.add(id);
    try out.add(",\"result\":{\"content\":[{\"type\":\"text\",\"text\":");
    try out.str(text);
    try out.add("}]");
    if (structured) |s| {
        // Already validated as a JSON object by the parser; splice as is.
        try out.add(",\"structuredContent\":");
        try out.add(std.mem.trim(u8, s, " \t\r\n"));
    }
    try out.add(resultEnd(is_error, is_modern));
    return out.bytes();
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

const Fixture = struct {
    arena_state: std.heap.ArenaAllocator,
    cfg: config.Config,
    client: Client = .{},

    fn init(text: []const u8) !*Fixture {
        const f = try testing.allocator.create(Fixture);
        f.* = .{ .arena_state = std.heap.ArenaAllocator.init(testing.allocator), .cfg = undefined };
        // Parsed as in the filter, with the parse tree freed (and poisoned)
        // before any request: every test below also checks that the
        // compiled form keeps nothing of it.
        f.cfg = try config.parseFreed(f.arena_state.allocator(), text);
        return f;
    }

    fn deinit(f: *Fixture) void {
        f.arena_state.deinit();
        testing.allocator.destroy(f);
    }

    fn arena(f: *Fixture) Allocator {
        return f.arena_state.allocator();
    }

    fn reply(f: *Fixture, body: []const u8) !Reply {
        const o = try handle(f.arena(), &f.cfg, body, &f.client);
        return switch (o) {
            .reply => |r| r,
            .call => error.TestUnexpectedResult,
        };
    }

    fn call(f: *Fixture, body: []const u8) !Call {
        const o = try handle(f.arena(), &f.cfg, body, &f.client);
        return switch (o) {
            .call => |c| c,
            .reply => |r| {
                std.debug.print("unexpected reply {d}: {s}\n", .{ r.status, r.body });
                return error.TestUnexpectedResult;
            },
        };
    }

    fn expectReply(f: *Fixture, body: []const u8, status: u32, expected: []const u8) !void {
        const r = try f.reply(body);
        try testing.expectEqualStrings(expected, r.body);
        try testing.expectEqual(status, r.status);
    }

    fn expectError(f: *Fixture, body: []const u8, status: u32, code: i32, message_prefix: []const u8) !void {
        const r = try f.reply(body);
        testing.expectEqual(status, r.status) catch |e| {
            std.debug.print("body: {s}\n", .{r.body});
            return e;
        };
        const parsed = try std.json.parseFromSliceLeaky(Value, f.arena(), r.body, .{});
        const err = parsed.object.get("error").?.object;
        try testing.expectEqual(@as(i64, code), err.get("code").?.integer);
        const message = err.get("message").?.string;
        if (!std.mem.startsWith(u8, message, message_prefix)) {
            std.debug.print("message was: {s}\n", .{message});
            return error.TestUnexpectedResult;
        }
    }

    fn header(c: Call, name: []const u8) ?[]const u8 {
        return tpl.findHeader(c.headers, name);
    }
};

const petstore =
    \\{
    \\  "server": {"name": "petstore", "version": "1.0.0"},
    \\  "base_path": "/mcp/default/petstore",
    \\  "upstream": {"cluster": "c", "authority": "pets.internal"},
    \\  "tools_list": {"tools": [{"name": "getPet"}], "nextCursor": null},
    \\  "tools": [
    \\    {"name": "getPet",
    \\     "args": [{"name": "id", "type": "string", "required": true},
    \\              {"name": "verbose", "type": "boolean", "default": false},
    \\              {"name": "limit", "type": "integer"},
    \\              {"name": "score", "type": "number"},
    \\              {"name": "tags", "type": "array"},
    \\              {"name": "meta", "type": "object"}],
    \\     "request": {"method": "GET", "path": [{"lit": "/v1/pets/"}, {"out": {"args": ["id"]}, "enc": "path"}],
    \\                 "query": [{"name": "verbose", "arg": "verbose"}, {"name": "limit", "arg": "limit"}, {"name": "q s", "arg": "q"}],
    \\                 "headers": [{"name": "x-tenant", "value": [{"lit": "t-"}, {"out": {"args": ["meta", "tenant"]}}]}]},
    \\     "response": {"body": [{"lit": "name="}, {"out": {"resp": ["name"]}}]}},
    \\    {"name": "addPet",
    \\     "args": [{"name": "name", "type": "string", "required": true}],
    \\     "request": {"method": "POST", "path": [{"lit": "/v1/pets?src=mcp"}],
    \\                 "query": [{"name": "dry", "arg": "dry"}],
    \\                 "body": {"kind": "json_args", "args": ["name", "tag", "age"]}},
    \\     "response": {"prepend": "<<", "append": ">>", "structured": true,
    \\                  "error_body": [{"lit": "failed "}, {"out": {"status": true}}, {"lit": " "}, {"out": {"header": "x-reason"}}]}},
    \\    {"name": "form",
    \\     "request": {"method": "put", "path": [{"lit": "/f"}],
    \\                 "body": {"kind": "form_args", "args": ["a", "b", "c"]}}},
    \\    {"name": "tmpl",
    \\     "request": {"method": "PATCH", "path": [{"lit": "/t/"}, {"out": {"args": ["n"]}, "enc": "path"}],
    \\                 "body": {"kind": "template", "content_type": "text/plain",
    \\                          "template": [{"lit": "{\"n\":"}, {"out": {"args": ["n"]}, "enc": "json"}, {"lit": ",\"s\":"}, {"out": {"args": ["s"]}, "enc": "json"}, {"lit": "}"}]}},
    \\     "response": {"body": [{"out": {"resp": ["a", "0"]}}], "error_body": [{"out": {"resp": ["error"]}}]}}
    \\  ]
    \\}
;

test "initialize negotiates the protocol version" {
    const f = try Fixture.init(config.example);
    defer f.deinit();
    try f.expectReply(
        \\{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}
    , 200,
        \\{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"petstore","version":"1.0.0","title":"Pet store"},"instructions":"Use \"getPet\"."}}
    );
    for ([_][]const u8{
        \\{"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"2024-11-05"}}
        ,
        \\{"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":7}}
        ,
        \\{"jsonrpc":"2.0","id":"a","method":"initialize"}
    }) |req| {
        const r = try f.reply(req);
        try testing.expect(std.mem.startsWith(u8, r.body,
            \\{"jsonrpc":"2.0","id":"a","result":{"protocolVersion":"2025-11-25","capabilities"
        ));
    }
    try testing.expectEqualStrings("2025-03-26", negotiate(try std.json.parseFromSliceLeaky(Value, f.arena(), "{\"protocolVersion\":\"2025-03-26\"}", .{})));
}

test "ping, tools/list and unknown methods" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}", 200, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}");
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/list\",\"params\":{}}", 200,
        \\{"jsonrpc":"2.0","id":8,"result":{"tools":[{"name":"getPet"}],"nextCursor":null}}
    );
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"resources/list\"}", 200,
        \\{"jsonrpc":"2.0","id":9,"error":{"code":-32601,"message":"method not found: resources/list"}}
    );
}

test "ids are echoed exactly" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const cases = [_][2][]const u8{
        .{ "123456789012345678901234567890", "123456789012345678901234567890" },
        .{ "-0", "-0" },
        .{ "1.5e3", "1.5e3" },
        .{ "0", "0" },
        .{ "\"abc\"", "\"abc\"" },
        .{ "\"\"", "\"\"" },
        .{ "\"a\\\"b\\\\c\\n\\u0001\"", "\"a\\\"b\\\\c\\n\\u0001\"" },
        .{ "\"h\u{e9}\u{1F600}\"", "\"h\u{e9}\u{1F600}\"" },
        // Escaped non-ASCII is decoded then written as UTF-8: the same string.
        .{ "\"\\u00e9\"", "\"\u{e9}\"" },
    };
    for (cases) |c| {
        const req = try jsonw.allocPrint(f.arena(), "{{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":{s}}}", .{c[0]});
        const want = try jsonw.allocPrint(f.arena(), "{{\"jsonrpc\":\"2.0\",\"id\":{s},\"result\":{{}}}}", .{c[1]});
        try f.expectReply(req, 200, want);
    }
}

test "malformed and invalid JSON-RPC messages" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    try f.expectError("{\"jsonrpc\":", 400, parse_error, "Parse error: unexpected end of input");
    try f.expectError("", 400, parse_error, "Parse error:");
    try f.expectError("{\"a\" 1}", 400, parse_error, "Parse error: syntax error at line 1");
    try f.expectError("{} x", 400, parse_error, "Parse error:");
    try f.expectError("\"\xff\"", 400, parse_error, "Parse error:");
    try f.expectError("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]", 400, invalid_request, "Invalid Request: batch");
    try f.expectError("42", 400, invalid_request, "Invalid Request");
    try f.expectError("{\"id\":1,\"method\":\"ping\"}", 400, invalid_request, "Invalid Request: jsonrpc");
    try f.expectError("{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}", 400, invalid_request, "Invalid Request: jsonrpc");
    try f.expectError("{\"jsonrpc\":2.0,\"id\":1,\"method\":\"ping\"}", 400, invalid_request, "Invalid Request: jsonrpc");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}", 400, invalid_request, "Invalid Request: method");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}", 400, invalid_request, "Invalid Request: id");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}", 400, invalid_request, "Invalid Request: id");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1}", 400, invalid_request, "Invalid Request: no method");
    // The id of an otherwise invalid request is still echoed.
    try f.expectReply("{\"id\":\"x\",\"method\":\"ping\"}", 400,
        \\{"jsonrpc":"2.0","id":"x","error":{"code":-32600,"message":"Invalid Request: jsonrpc must be \"2.0\""}}
    );
}

test "JSON nested past max_json_depth is a parse error, before parsing" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const limit = config.default_max_json_depth;
    try testing.expectEqual(limit, f.cfg.max_json_depth);
    const deep = "[" ** 100_000 ++ "]" ** 100_000;
    const arg = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"getPet\",\"arguments\":{\"id\":\"1\",\"tags\":";
    try f.expectReply(arg ++ deep ++ "}}}", 400,
        \\{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error: JSON nested deeper than the limit of 64 levels"}}
    );
    // Exactly at the limit (3 levels of envelope, params, arguments): parsed.
    const at = arg ++ "[" ** (limit - 3) ++ "]" ** (limit - 3) ++ "}}}";
    _ = try f.call(at);
    const over = arg ++ "[" ** (limit - 2) ++ "]" ** (limit - 2) ++ "}}}";
    try f.expectError(over, 400, parse_error, "Parse error: JSON nested deeper");
    // Brackets inside strings are not nesting.
    _ = try f.call(arg ++ "[\"" ++ "[" ** 1000 ++ "\"]}}}");
}

test "an upstream answer nested past max_json_depth is a tool error, not parsed" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const a = f.arena();
    const get = try testCall(f, "getPet", "{\"id\":\"1\"}");
    const deep = "{\"name\":" ++ "[" ** 100_000 ++ "]" ** 100_000 ++ "}";
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":11,"result":{"content":[{"type":"text","text":"upstream answer nests JSON deeper than the limit of 64 levels"}],"isError":true}}
    , try toolResult(a, &get, .{ .status = 200, .headers = &.{}, .body = deep }));
    // An answer the tool does not read is passed on as text, unparsed.
    const form = try testCall(f, "form", "{}");
    const r = try toolResult(a, &form, .{ .status = 200, .headers = &.{}, .body = deep });
    try testing.expect(std.mem.indexOf(u8, r, "\"isError\":false") != null);
}

test "notifications and responses are accepted with 202" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", 202, "");
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\",\"params\":{\"name\":\"getPet\"}}", 202, "");
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}", 202, "");
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":1,\"message\":\"x\"}}", 202, "");
}

test "tools/call parameter errors" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"nope\"}}", 200,
        \\{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"unknown tool: nope"}}
    );
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\"}", 200, invalid_params, "invalid params");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":[]}", 200, invalid_params, "invalid params");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":1}}", 200, invalid_params, "invalid params: name");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"getPet\",\"arguments\":[1]}}", 200, invalid_params, "invalid params: arguments must be an object");
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"getPet\"}}", 200,
        \\{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"missing required argument: id"}}
    );
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"getPet\",\"arguments\":{\"id\":null}}}", 200, invalid_params, "missing required argument: id");

    const bad = [_][2][]const u8{
        .{ "\"id\":5", "argument id: expected string" },
        .{ "\"id\":\"1\",\"verbose\":\"yes\"", "argument verbose: expected boolean" },
        .{ "\"id\":\"1\",\"limit\":1.5", "argument limit: expected integer" },
        .{ "\"id\":\"1\",\"limit\":\"3\"", "argument limit: expected integer" },
        .{ "\"id\":\"1\",\"limit\":1e400", "argument limit: number out of range (an integer has at most 64 digits)" },
        .{ "\"id\":\"1\",\"limit\":1.0000000000000000001", "argument limit: expected integer" },
        .{ "\"id\":\"1\",\"score\":\"3\"", "argument score: expected number" },
        .{ "\"id\":\"1\",\"tags\":{}", "argument tags: expected array" },
        .{ "\"id\":\"1\",\"meta\":[]", "argument meta: expected object" },
    };
    for (bad) |c| {
        const req = try jsonw.allocPrint(f.arena(), "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"getPet\",\"arguments\":{{{s}}}}}}}", .{c[0]});
        try f.expectError(req, 200, invalid_params, c[1]);
    }

    // 2025-11-25 (SEP-1303): argument failures become tool execution
    // errors; an unknown tool and a malformed request stay -32602.
    f.client.protocol_version = "2025-11-25";
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"getPet\"}}", 200,
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"missing required argument: id"}],"isError":true}}
    );
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"getPet\",\"arguments\":{\"id\":5}}}", 200,
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"argument id: expected string"}],"isError":true}}
    );
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"nope\"}}", 200, invalid_params, "unknown tool: nope");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":[]}", 200, invalid_params, "invalid params: params must be an object");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":1}}", 200, invalid_params, "invalid params: name must be a string");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"getPet\",\"arguments\":[1]}}", 200, invalid_params, "invalid params: arguments must be an object");
}

test "integer versus number" {
    const t = config.ArgType.integer;
    for ([_][]const u8{ "0", "-3", "42", "1.0", "1e2", "-2.000", "123456789012345678901234567890" }) |s| {
        try testing.expect(hasType(.{ .number_string = s }, t));
        try testing.expect(hasType(.{ .number_string = s }, .number));
    }
    // 1e400 is an integer (too large to forward: refused by check).
    try testing.expect(hasType(.{ .number_string = "1e400" }, t));
    for ([_][]const u8{ "1.5", "1e-1", "-0.001", "1.0000000000000000001" }) |s| {
        try testing.expect(!hasType(.{ .number_string = s }, t));
        try testing.expect(hasType(.{ .number_string = s }, .number));
    }
    try testing.expect(hasType(.{ .integer = 3 }, t));
    try testing.expect(!hasType(.{ .float = 3.5 }, t));
    try testing.expect(!hasType(.{ .string = "3" }, .number));
    try testing.expect(!hasType(.null, .string));
}

test "GET call with path encoding, defaults, query and headers" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const c = try f.call(
        \\{"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{"name":"getPet","arguments":{"id":"a b/c.d/\u00e9","limit":10,"extra":{"x":1},"q":"x&y","meta":{"tenant":"acme"}}}}
    );
    try testing.expectEqualStrings("\"r1\"", c.id);
    try testing.expectEqualStrings("GET", Fixture.header(c, ":method").?);
    try testing.expectEqualStrings("/v1/pets/a%20b%2Fc.d%2F%C3%A9?verbose=false&limit=10&q%20s=x%26y", Fixture.header(c, ":path").?);
    try testing.expectEqualStrings("pets.internal", Fixture.header(c, ":authority").?);
    try testing.expectEqualStrings("t-acme", Fixture.header(c, "x-tenant").?);
    try testing.expect(Fixture.header(c, "content-type") == null);
    try testing.expect(Fixture.header(c, "content-length") == null);
    try testing.expectEqualStrings("", c.body);
    // Pseudo-headers come first.
    try testing.expectEqualStrings(":method", c.headers[0].name);

    // ".." alone would climb after the backend normalises the path, even
    // as %2E%2E: refused, naming the argument.
    try f.expectError(
        \\{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"getPet","arguments":{"id":"..","verbose":null}}}
    , 200, invalid_params, "invalid params: argument id: \".\" and \"..\" are not allowed as a path segment");
    const c2 = try f.call(
        \\{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"getPet","arguments":{"id":"...","verbose":null}}}
    );
    try testing.expectEqualStrings("/v1/pets/...?verbose=false", Fixture.header(c2, ":path").?);
    try testing.expectEqualStrings("t-", Fixture.header(c2, "x-tenant").?);
    try f.expectError(
        \\{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"getPet","arguments":{"id":".","q":"..."}}}
    , 200, invalid_params, "invalid params: argument id: \".\" and \"..\" are not allowed as a path segment");
    // In the query a dot value is only text.
    const c3 = try f.call(
        \\{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"getPet","arguments":{"id":"x","q":".."}}}
    );
    try testing.expectEqualStrings("/v1/pets/x?verbose=false&q%20s=..", Fixture.header(c3, ":path").?);
    // Numbers go out in canonical form wherever they are placed.
    const c4 = try f.call(
        \\{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"getPet","arguments":{"id":"x","limit":1E+2}}}
    );
    try testing.expectEqualStrings("/v1/pets/x?verbose=false&limit=100", Fixture.header(c4, ":path").?);
    try f.expectError(
        \\{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"getPet","arguments":{"id":"x","limit":1E+999999999}}}
    , 200, invalid_params, "argument limit: number out of range");
}

test "POST with json_args body appends query to a literal query" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const c = try f.call(
        \\{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"addPet","arguments":{"age":12345678901234567890,"name":"R\u00e9x \"the\"\n","dry":true,"ignored":1}}}
    );
    try testing.expectEqualStrings("POST", Fixture.header(c, ":method").?);
    try testing.expectEqualStrings("/v1/pets?src=mcp&dry=true", Fixture.header(c, ":path").?);
    try testing.expectEqualStrings("application/json", Fixture.header(c, "content-type").?);
    try testing.expectEqualStrings("{\"name\":\"R\u{e9}x \\\"the\\\"\\n\",\"age\":12345678901234567890}", c.body);
    const len = try jsonw.allocPrint(f.arena(), "{d}", .{c.body.len});
    try testing.expectEqualStrings(len, Fixture.header(c, "content-length").?);
}

test "form and template bodies" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const c = try f.call(
        \\{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"form","arguments":{"a":"x y&z","c":[1,2],"b":null}}}
    );
    try testing.expectEqualStrings("PUT", Fixture.header(c, ":method").?);
    try testing.expectEqualStrings("application/x-www-form-urlencoded", Fixture.header(c, "content-type").?);
    // Undeclared arguments are not validated; null is passed as the literal.
    try testing.expectEqualStrings("a=x%20y%26z&b=null&c=%5B1%2C2%5D", c.body);

    const e = try f.call(
        \\{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"form"}}
    );
    try testing.expectEqualStrings("", e.body);
    try testing.expectEqualStrings("0", Fixture.header(e, "content-length").?);

    const t = try f.call(
        \\{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"tmpl","arguments":{"n":"a/b","s":"\u0007"}}}
    );
    try testing.expectEqualStrings("/t/a%2Fb", Fixture.header(t, ":path").?);
    try testing.expectEqualStrings("text/plain", Fixture.header(t, "content-type").?);
    try testing.expectEqualStrings("{\"n\":\"a/b\",\"s\":\"\\u0007\"}", t.body);
    const t2 = try f.call(
        \\{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"tmpl","arguments":{}}}
    );
    try testing.expectEqualStrings("{\"n\":null,\"s\":null}", t2.body);
}

fn testCall(f: *Fixture, tool: []const u8, args: []const u8) !Call {
    const req = try jsonw.allocPrint(f.arena(), "{{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"tools/call\",\"params\":{{\"name\":\"{s}\",\"arguments\":{s}}}}}", .{ tool, args });
    return f.call(req);
}

test "upstream 2xx: response template, prepend/append, structuredContent" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const a = f.arena();
    const get = try testCall(f, "getPet", "{\"id\":\"1\"}");
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":11,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"name=R\u{e9}x\\n\"}],\"isError\":false}}", try toolResult(a, &get, .{ .status = 200, .headers = &.{}, .body = "{\"name\":\"R\\u00e9x\\n\"}" }));
    // Not JSON: the raw body, still a success.
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":11,"result":{"content":[{"type":"text","text":"plain \"text\""}],"isError":false}}
    , try toolResult(a, &get, .{ .status = 201, .headers = &.{}, .body = "plain \"text\"" }));

    const add = try testCall(f, "addPet", "{\"name\":\"x\"}");
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":11,"result":{"content":[{"type":"text","text":"<<{\"id\": 1, \"big\": 1e999}\n>>"}],"structuredContent":{"id": 1, "big": 1e999},"isError":false}}
    , try toolResult(a, &add, .{ .status = 200, .headers = &.{}, .body = "{\"id\": 1, \"big\": 1e999}\n" }));
    // A JSON array is not an object: no structuredContent.
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":11,"result":{"content":[{"type":"text","text":"<<[1]>>"}],"isError":false}}
    , try toolResult(a, &add, .{ .status = 200, .headers = &.{}, .body = "[1]" }));
    // Invalid UTF-8 and control bytes in the upstream body still yield valid JSON.
    const odd = try toolResult(a, &add, .{ .status = 200, .headers = &.{}, .body = "a\x00\xffb" });
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":11,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"<<a\\u0000\u{FFFD}b>>\"}],\"isError\":false}}", odd);
    _ = try std.json.parseFromSliceLeaky(Value, a, odd, .{});
}

test "upstream non-2xx and failures become isError results" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const a = f.arena();
    const add = try testCall(f, "addPet", "{\"name\":\"x\"}");
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":11,"result":{"content":[{"type":"text","text":"failed 409 dup"}],"isError":true}}
    , try toolResult(a, &add, .{ .status = 409, .headers = &.{.{ .name = "x-reason", .value = "dup" }}, .body = "{\"ignored\":1}" }));

    const get = try testCall(f, "getPet", "{\"id\":\"1\"}");
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":11,"result":{"content":[{"type":"text","text":"not here"}],"isError":true}}
    , try toolResult(a, &get, .{ .status = 404, .headers = &.{}, .body = "not here" }));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":11,"result":{"content":[{"type":"text","text":"upstream returned HTTP 503"}],"isError":true}}
    , try toolResult(a, &get, .{ .status = 503, .headers = &.{}, .body = "" }));

    const t = try testCall(f, "tmpl", "{}");
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":11,"result":{"content":[{"type":"text","text":"boom"}],"isError":true}}
    , try toolResult(a, &t, .{ .status = 500, .headers = &.{}, .body = "{\"error\":\"boom\"}" }));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":11,"result":{"content":[{"type":"text","text":"<html>"}],"isError":true}}
    , try toolResult(a, &t, .{ .status = 502, .headers = &.{}, .body = "<html>" }));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":11,"result":{"content":[{"type":"text","text":"upstream returned HTTP 500"}],"isError":true}}
    , try toolResult(a, &t, .{ .status = 500, .headers = &.{}, .body = "{}" }));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":11,"result":{"content":[{"type":"text","text":"upstream unreachable: reset"}],"isError":true}}
    , try toolFailure(a, &t, "upstream unreachable: reset"));
}

test "local HTTP-level replies" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const nf = try notFound(a);
    try testing.expectEqual(@as(u32, 404), nf.status);
    try testing.expect(std.mem.indexOf(u8, nf.body, "-32600") != null);
    const na = try methodNotAllowed(a);
    try testing.expectEqual(@as(u32, 405), na.status);
    try testing.expect(na.allow == .post);
    const tl = try tooLarge(a, 10);
    try testing.expectEqual(@as(u32, 413), tl.status);
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: body exceeds 10 bytes"}}
    , tl.body);
}

const v2tools =
    \\{
    \\  "server": {"name": "v2", "version": "1"},
    \\  "base_path": "/mcp/v2",
    \\  "upstream": {"cluster": "main", "authority": "main.internal", "timeout_ms": 3000},
    \\  "tools": [
    \\    {"name": "pick",
    \\     "args": [{"name": "mode", "type": "string", "enum": ["a", "b"]},
    \\              {"name": "level", "enum": [1, "x", null, {"k": [true]}]},
    \\              {"name": "ids", "type": "array", "items": {"type": "integer", "enum": [1, 2, 3]}},
    \\              {"name": "grid", "type": "array", "items": {"type": "array", "items": {"enum": ["x", "o"]}}},
    \\              {"name": "any", "type": "array", "items": {"type": "string"}},
    \\              {"name": "dflt", "enum": ["p", "q"], "default": "q"}],
    \\     "request": {"path": [{"lit": "/pick/"}, {"out": {"args": ["dflt"]}}]}},
    \\    {"name": "cookies",
    \\     "upstream": {"cluster": "other", "authority": "other.example", "timeout_ms": 99},
    \\     "request": {"path": [{"lit": "/c"}],
    \\                 "cookies": [{"name": "session", "arg": "s"}, {"name": "theme", "arg": "t"}, {"name": "n", "arg": "n"}],
    \\                 "headers": [{"name": "x-note", "value": [{"out": {"args": ["note"]}}]},
    \\                             {"name": "x-opt", "value": [{"if": {"args": ["flag"]}, "then": [{"lit": "on"}]}]}]}},
    \\    {"name": "static",
    \\     "request": {"path": [{"lit": "/s?fixed=1"}],
    \\                 "query": [{"name": "q", "arg": "q"}],
    \\                 "auth": {"static": [{"in": "header", "name": "Authorization", "value": "Basic dXNlcjpwYXNz"},
    \\                                     {"in": "query", "name": "api key", "value": "a&b c"}]}}},
    \\    {"name": "bearer",
    \\     "request": {"path": [{"lit": "/b"}],
    \\                 "auth": {"passthrough": {"from": {"in": "header", "name": "Authorization", "prefix": "Bearer "},
    \\                                          "to": {"in": "header", "name": "x-api-key", "prefix": "Key "}}}}},
    \\    {"name": "fromquery",
    \\     "request": {"path": [{"lit": "/q"}],
    \\                 "auth": {"passthrough": {"from": {"in": "query", "name": "api_key"},
    \\                                          "to": {"in": "query", "name": "key", "prefix": "k:"}}}}},
    \\    {"name": "media",
    \\     "request": {"path": [{"lit": "/m"}]},
    \\     "response": {"body": [{"lit": "templated"}], "structured": true}},
    \\    {"name": "fancy",
    \\     "args": [{"name": "tags", "type": "array"}, {"name": "user", "type": "string", "default": "anon"}],
    \\     "request": {"method": "POST",
    \\                 "path": [{"lit": "/u/"}, {"out": {"fn": "lower", "args": [{"args": ["user"]}]}, "enc": "path"},
    \\                          {"if": {"fn": "and", "args": [{"args": ["tags"]}, {"fn": "ne", "args": [{"args": ["tags", "#"]}, {"const": 0}]}]},
    \\                           "then": [{"lit": "?tags="}, {"out": {"fn": "join", "args": [{"const": ","}, {"args": ["tags"]}]}, "enc": "query"}]}],
    \\                 "headers": [{"name": "x-user", "value": [{"out": {"fn": "b64enc", "args": [{"args": ["user"]}]}}]}],
    \\                 "body": {"kind": "template", "template": [
    \\                   {"lit": "{\"tags\":["},
    \\                   {"range": {"args": ["tags"]}, "do": [{"out": {"fn": "quote", "args": [{"item": []}]}}, {"lit": ","}]},
    \\                   {"lit": "\"end\"],\"q\":"}, {"out": {"fn": "toJson", "args": [{"fn": "urlquery", "args": [{"args": ["user"]}]}]}}, {"lit": "}"}]}},
    \\     "response": {"body": [{"out": {"args": ["user"]}}, {"lit": ":"}, {"out": {"status": true}}, {"lit": ":"}, {"out": {"header": "X-Id"}},
    \\                            {"lit": ":"}, {"range": {"resp": ["items"]}, "do": [{"out": {"item": ["n"]}}], "else": [{"lit": "none"}]}],
    \\                  "error_body": [{"out": {"fn": "default", "args": [{"const": "no detail"}, {"resp": ["detail"]}]}}, {"lit": " for "}, {"out": {"args": ["user"]}}]}}
    \\  ]
    \\}
;

fn toolReq(f: *Fixture, tool: []const u8, args: []const u8) ![]const u8 {
    return jsonw.allocPrint(f.arena(), "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"{s}\",\"arguments\":{s}}}}}", .{ tool, args });
}

/// An argument failure in both forms (`argerror`): -32602 for a client that
/// names no revision (2025-03-26) or 2025-06-18, a tool execution error with
/// the same message for 2025-11-25, by header or by session.
fn expectInvalidArgs(f: *Fixture, tool: []const u8, args: []const u8, message: []const u8) !void {
    const saved = f.client;
    defer f.client = saved;
    const req = try toolReq(f, tool, args);
    const protocol = try errorBody(f.arena(), "1", invalid_params, message);
    const result = try resultBody(f.arena(), "1", message, true, null, false);
    const cases = [_]struct { header: ?[]const u8, session: ?[]const u8, want: []const u8 }{
        .{ .header = saved.protocol_version, .session = saved.session_version, .want = if (saved.protocol_version == null and saved.session_version == null) protocol else "" },
        .{ .header = "2025-06-18", .session = null, .want = protocol },
        .{ .header = "2025-11-25", .session = null, .want = result },
        .{ .header = null, .session = "2025-11-25", .want = result },
        .{ .header = "2025-06-18", .session = "2025-11-25", .want = protocol },
    };
    for (cases) |c| {
        if (c.want.len == 0) continue;
        f.client.protocol_version = c.header;
        f.client.session_version = c.session;
        const r = try f.reply(req);
        try testing.expectEqualStrings(c.want, r.body);
        try testing.expectEqual(@as(u32, 200), r.status);
    }
}

test "enum and items validation messages" {
    const f = try Fixture.init(v2tools);
    defer f.deinit();
    try expectInvalidArgs(f, "pick", "{\"mode\":\"c\"}", "argument mode: must be one of [\"a\",\"b\"]");
    try expectInvalidArgs(f, "pick", "{\"mode\":1}", "argument mode: expected string");
    try expectInvalidArgs(f, "pick", "{\"level\":2}", "argument level: must be one of [1,\"x\",null,{\"k\":[true]}]");
    try expectInvalidArgs(f, "pick", "{\"level\":\"1\"}", "argument level: must be one of [1,\"x\",null,{\"k\":[true]}]");
    try expectInvalidArgs(f, "pick", "{\"level\":{\"k\":[1]}}", "argument level: must be one of [1,\"x\",null,{\"k\":[true]}]");
    try expectInvalidArgs(f, "pick", "{\"ids\":[1,2,4]}", "argument ids[2]: must be one of [1,2,3]");
    try expectInvalidArgs(f, "pick", "{\"ids\":[1,\"2\"]}", "argument ids[1]: expected integer");
    try expectInvalidArgs(f, "pick", "{\"ids\":[1.5]}", "argument ids[0]: expected integer");
    try expectInvalidArgs(f, "pick", "{\"ids\":[null]}", "argument ids[0]: expected integer");
    try expectInvalidArgs(f, "pick", "{\"grid\":[[\"x\",\"o\"],[\"o\",\"z\"]]}", "argument grid[1][1]: must be one of [\"x\",\"o\"]");
    try expectInvalidArgs(f, "pick", "{\"grid\":[[\"x\"],\"o\"]}", "argument grid[1]: expected array");
    try expectInvalidArgs(f, "pick", "{\"any\":[\"a\",3]}", "argument any[1]: expected string");
    try expectInvalidArgs(f, "pick", "{\"dflt\":\"r\"}", "argument dflt: must be one of [\"p\",\"q\"]");
    // Accepted: numbers by value, JSON equality of objects, null in the enum
    // is never compared (null means absent), empty arrays, the default.
    for ([_][]const u8{
        "{\"mode\":\"a\",\"level\":1.0,\"ids\":[3,1e0,2.00],\"grid\":[[],[\"x\"]],\"any\":[]}",
        "{\"level\":\"x\"}",
        "{\"level\":{\"k\":[true]}}",
        "{\"level\":null,\"ids\":[]}",
    }) |args| {
        const c = try f.call(try toolReq(f, "pick", args));
        try testing.expectEqualStrings("/pick/q", Fixture.header(c, ":path").?);
    }
}

test "cookies, empty headers and a per-tool upstream" {
    const f = try Fixture.init(v2tools);
    defer f.deinit();
    const c = try f.call(try toolReq(f, "cookies", "{\"s\":\"a b;c\",\"n\":5,\"note\":\"\",\"flag\":false}"));
    try testing.expectEqualStrings("session=a%20b%3Bc; n=5", Fixture.header(c, "cookie").?);
    try testing.expectEqualStrings("other.example", Fixture.header(c, ":authority").?);
    try testing.expectEqualStrings("other", c.tool.upstream.cluster);
    try testing.expectEqual(@as(u32, 99), c.tool.upstream.timeout_ms);
    try testing.expect(Fixture.header(c, "x-note") == null);
    try testing.expect(Fixture.header(c, "x-opt") == null);
    const c2 = try f.call(try toolReq(f, "cookies", "{\"flag\":true,\"note\":\"hi\"}"));
    try testing.expect(Fixture.header(c2, "cookie") == null);
    try testing.expectEqualStrings("on", Fixture.header(c2, "x-opt").?);
    try testing.expectEqualStrings("hi", Fixture.header(c2, "x-note").?);
    // Tools without an override use the server's upstream.
    const p = try f.call(try toolReq(f, "pick", "{}"));
    try testing.expectEqualStrings("main.internal", Fixture.header(p, ":authority").?);
    try testing.expectEqualStrings("main", p.tool.upstream.cluster);
    try testing.expectEqual(@as(u32, 3000), p.tool.upstream.timeout_ms);
}

test "header values with a control character other than tab are never sent" {
    const f = try Fixture.init(v2tools);
    defer f.deinit();
    // CR, LF and NUL split or end the header line; VT and DEL make Envoy's
    // codec refuse the request, which the client would read as an upstream
    // failure. Each is the client's mistake: -32602 naming the argument.
    for ([_][]const u8{ "a\\r\\nx-injected: 1", "a\\nb", "a\\rb", "a\\u0000b", "a\\u000bb", "a\\u007fb", "\\u001b[0m" }) |note| {
        const args = try jsonw.allocPrint(f.arena(), "{{\"note\":\"{s}\"}}", .{note});
        try expectInvalidArgs(f, "cookies", args, "argument note: contains a control character, which header x-note cannot carry (only tab is allowed)");
    }
    // Other control characters (tab) pass; cookies are encoded, so never fail.
    const c = try f.call(try toolReq(f, "cookies", "{\"note\":\"a\\tb\",\"s\":\"x\\r\\ny\"}"));
    try testing.expectEqualStrings("a\tb", Fixture.header(c, "x-note").?);
    try testing.expectEqualStrings("session=x%0D%0Ay", Fixture.header(c, "cookie").?);
}

test "static credentials in a header and the query" {
    const f = try Fixture.init(v2tools);
    defer f.deinit();
    const c = try f.call(try toolReq(f, "static", "{\"q\":\"v\"}"));
    try testing.expectEqualStrings("/s?fixed=1&q=v&api%20key=a%26b%20c", Fixture.header(c, ":path").?);
    try testing.expectEqualStrings("Basic dXNlcjpwYXNz", Fixture.header(c, "authorization").?);
    const c2 = try f.call(try toolReq(f, "static", "{}"));
    try testing.expectEqualStrings("/s?fixed=1&api%20key=a%26b%20c", Fixture.header(c2, ":path").?);
}

test "passthrough credentials: present, absent, wrong prefix" {
    const f = try Fixture.init(v2tools);
    defer f.deinit();
    try testing.expectEqual(@as(usize, 2), f.cfg.credential_sources.len);
    try testing.expectEqualStrings("authorization", f.cfg.credential_sources[0].name);

    const absent_header =
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"this tool needs the client's credential in Authorization"}],"isError":true}}
    ;
    const absent_query =
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"this tool needs the client's credential in api_key"}],"isError":true}}
    ;
    // Nothing captured.
    try f.expectReply(try toolReq(f, "bearer", "{}"), 200, absent_header);
    try f.expectReply(try toolReq(f, "fromquery", "{}"), 200, absent_query);

    f.client = .{ .credentials = &.{ "bearer tok-1", "a b/c" } };
    const c = try f.call(try toolReq(f, "bearer", "{}"));
    try testing.expectEqualStrings("Key tok-1", Fixture.header(c, "x-api-key").?);
    try testing.expect(Fixture.header(c, "authorization") == null);
    const q = try f.call(try toolReq(f, "fromquery", "{}"));
    try testing.expectEqualStrings("/q?key=k%3Aa%20b%2Fc", Fixture.header(q, ":path").?);

    // Another scheme, a bare prefix, an empty value: absent.
    for ([_][]const u8{ "Basic dXNlcjpwYXNz", "Bearer ", "Bearer", "" }) |v| {
        f.client = .{ .credentials = &.{ v, null } };
        try f.expectReply(try toolReq(f, "bearer", "{}"), 200, absent_header);
    }
    // Decoded from the query, a CR/LF would split the backend header.
    f.client = .{ .credentials = &.{ "Bearer a\r\nb", null } };
    try expectInvalidArgs(f, "bearer", "{}", "header x-api-key: value contains a control character (only tab is allowed)");
}

test "query parameters of the MCP request are decoded" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const target = "/mcp/x?a=1&api_key=k%2By+z%3D&api_key=second&empty=&bare&n%61me=v&bad=%zz%4";
    try testing.expectEqualStrings("k+y z=", (try queryParam(a, target, "api_key")).?);
    try testing.expectEqualStrings("1", (try queryParam(a, target, "a")).?);
    try testing.expectEqualStrings("", (try queryParam(a, target, "empty")).?);
    try testing.expectEqualStrings("", (try queryParam(a, target, "bare")).?);
    try testing.expectEqualStrings("v", (try queryParam(a, target, "name")).?);
    try testing.expectEqualStrings("%zz%4", (try queryParam(a, target, "bad")).?);
    try testing.expect((try queryParam(a, target, "missing")) == null);
    try testing.expect((try queryParam(a, "/mcp/x", "a")) == null);
    try testing.expect((try queryParam(a, "/mcp/x?a=1#frag", "b")) == null);
    try testing.expectEqualStrings("1", (try queryParam(a, "/mcp/x?a=1#b=2", "a")).?);
}

test "image and audio answers" {
    const f = try Fixture.init(v2tools);
    defer f.deinit();
    const a = f.arena();
    const c = try f.call(try toolReq(f, "media", "{}"));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"image","data":"iVBORw0KGgo=","mimeType":"image/png"}],"isError":false}}
    , try toolResult(a, &c, .{ .status = 200, .headers = &.{.{ .name = "Content-Type", .value = "image/png" }}, .body = "\x89PNG\r\n\x1a\n" }));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"audio","data":"YWI=","mimeType":"audio/mpeg"}],"isError":false}}
    , try toolResult(a, &c, .{ .status = 203, .headers = &.{.{ .name = "content-type", .value = " Audio/MPEG ; rate=44100" }}, .body = "ab" }));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"image","data":"","mimeType":"image/svg+xml"}],"isError":false}}
    , try toolResult(a, &c, .{ .status = 200, .headers = &.{.{ .name = "content-type", .value = "image/svg+xml;charset=utf-8" }}, .body = "" }));
    // Not 2xx, or not image/audio: the ordinary text result.
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"nope"}],"isError":true}}
    , try toolResult(a, &c, .{ .status = 404, .headers = &.{.{ .name = "content-type", .value = "image/png" }}, .body = "nope" }));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"templated"}],"isError":false}}
    , try toolResult(a, &c, .{ .status = 200, .headers = &.{.{ .name = "content-type", .value = "video/mp4" }}, .body = "x" }));
    try testing.expect(media("imagex/png") == null);
    try testing.expect(media("text/plain; image/png") == null);
}

test "if, range and functions in path, headers, body and response" {
    const f = try Fixture.init(v2tools);
    defer f.deinit();
    const a = f.arena();
    const c = try f.call(try toolReq(f, "fancy", "{\"user\":\"Ann Lee\",\"tags\":[\"a b\",\"c\\\"d\",3]}"));
    try testing.expectEqualStrings("POST", Fixture.header(c, ":method").?);
    try testing.expectEqualStrings("/u/ann%20lee?tags=a%20b%2Cc%22d%2C3", Fixture.header(c, ":path").?);
    try testing.expectEqualStrings("QW5uIExlZQ==", Fixture.header(c, "x-user").?);
    try testing.expectEqualStrings("{\"tags\":[\"a b\",\"c\\\"d\",\"3\",\"end\"],\"q\":\"Ann+Lee\"}", c.body);
    _ = try std.json.parseFromSliceLeaky(Value, a, c.body, .{});
    const len = try jsonw.allocPrint(a, "{d}", .{c.body.len});
    try testing.expectEqualStrings(len, Fixture.header(c, "content-length").?);

    // Defaults apply before rendering; an empty list takes the else-less branch.
    const d = try f.call(try toolReq(f, "fancy", "{\"tags\":[]}"));
    try testing.expectEqualStrings("/u/anon", Fixture.header(d, ":path").?);
    try testing.expectEqualStrings("{\"tags\":[\"end\"],\"q\":\"anon\"}", d.body);

    // Response templates see args, resp, status and header.
    const hdrs = [_]Header{.{ .name = "x-id", .value = "r-7" }};
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"anon:200:r-7:12"}],"isError":false}}
    , try toolResult(a, &d, .{ .status = 200, .headers = &hdrs, .body = "{\"items\":[{\"n\":1},{\"n\":2}]}" }));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"anon:201::none"}],"isError":false}}
    , try toolResult(a, &d, .{ .status = 201, .headers = &.{}, .body = "{\"items\":{}}" }));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"bad id for anon"}],"isError":true}}
    , try toolResult(a, &d, .{ .status = 400, .headers = &.{}, .body = "{\"detail\":\"bad id\"}" }));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"no detail for anon"}],"isError":true}}
    , try toolResult(a, &d, .{ .status = 400, .headers = &.{}, .body = "{\"detail\":\"\"}" }));
}

/// Everything a request can get out of a configuration, as text: the reply,
/// or the upstream request and the tool result for a few upstream answers.
fn transcript(arena: Allocator, cfg: *const config.Config, client: *const Client, body: []const u8) ![]const u8 {
    var out = Out.init(arena);
    switch (try handle(arena, cfg, body, client)) {
        .reply => |r| try out.print("{d} {s}", .{ r.status, r.body }),
        .call => |c| {
            try out.print("{s} {s} {d}\n", .{ c.tool.upstream.cluster, c.tool.upstream.authority, c.tool.upstream.timeout_ms });
            for (c.headers) |h| try out.print("{s}: {s}\n", .{ h.name, h.value });
            try out.add(c.body);
            const answers = [_]UpstreamResponse{
                .{ .status = 200, .headers = &.{.{ .name = "x-id", .value = "7" }}, .body = "{\"name\":\"Rex\",\"items\":[{\"n\":1}],\"a\":[\"z\"]}" },
                .{ .status = 200, .headers = &.{}, .body = "not json" },
                .{ .status = 404, .headers = &.{.{ .name = "x-reason", .value = "gone" }}, .body = "{\"detail\":\"no\",\"error\":\"e\"}" },
                .{ .status = 200, .headers = &.{.{ .name = "content-type", .value = "image/png" }}, .body = "\x89PNG" },
            };
            for (answers) |ans| try out.print("\n{s}", .{try toolResult(arena, &c, ans)});
            try out.print("\n{s}", .{try toolFailure(arena, &c, "down")});
        },
    }
    return out.bytes();
}

test "a configuration answers the same once its parse tree is freed" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const requests = [_][]const u8{
        \\{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}
        ,
        \\{"jsonrpc":"2.0","id":"x","method":"tools/list"}
        ,
        \\{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nope"}}
        ,
    };
    // Tool calls over every tool of each configuration, with arguments that
    // hit defaults, enums, items, constants, ranges and bodies.
    const calls = [_][2][]const u8{
        .{ "getPet", "{\"id\":7,\"verbose\":true,\"mode\":\"b\",\"ids\":[1,3],\"owner\":{\"name\":\"ann\"},\"session\":\"s 1\"}" },
        .{ "getPet", "{\"id\":\"7\"}" },
        .{ "getPet", "{\"id\":7,\"mode\":\"c\"}" },
        .{ "getPet", "{\"id\":7,\"ids\":[2,4]}" },
        .{ "getPet", "{\"id\":\"a/b\",\"limit\":3,\"q\":\"x y\",\"meta\":{\"tenant\":\"t\"}}" },
        .{ "addPet", "{\"name\":\"Rex\",\"tag\":[1,{\"k\":null}],\"age\":3}" },
        .{ "addPet", "{}" },
        .{ "form", "{\"a\":\"1 2\",\"c\":true}" },
        .{ "tmpl", "{\"n\":1.50,\"s\":\"q\\\"\"}" },
        .{ "third", "{}" },
        .{ "pick", "{\"mode\":\"a\",\"level\":{\"k\":[true]},\"ids\":[3,1e0],\"grid\":[[\"x\"]]}" },
        .{ "pick", "{\"level\":2}" },
        .{ "pick", "{\"grid\":[[\"x\",\"z\"]]}" },
        .{ "cookies", "{\"s\":\"a;b\",\"t\":\"dark\",\"n\":5,\"note\":\"hi\",\"flag\":true}" },
        .{ "static", "{\"q\":\"v\"}" },
        .{ "bearer", "{}" },
        .{ "fromquery", "{}" },
        .{ "media", "{}" },
        .{ "fancy", "{\"user\":\"Ann Lee\",\"tags\":[\"a b\",3]}" },
        .{ "fancy", "{\"tags\":[]}" },
        .{ "consts", "{}" },
        .{ "consts", "{\"pick\":{\"deep\":[1,2]}}" },
    };
    const consts =
        \\{"server": {"name": "c", "version": "1"}, "base_path": "/c", "upstream": {"cluster": "u"},
        \\ "tools": [{"name": "consts",
        \\   "args": [{"name": "pick", "type": "object", "enum": [{"deep": [1, 2]}, {"deep": "x"}], "default": {"deep": "x", "more": [null, 1.0e1, "\u00e9"]}},
        \\            {"name": "list", "default": ["b", "a"]}],
        \\   "request": {"method": "post", "path": [{"lit": "/k/"}, {"out": {"fn": "join", "args": [{"const": "-"}, {"args": ["list"]}]}, "enc": "path"}],
        \\               "headers": [{"name": "X-Const", "value": [{"out": {"const": {"b": 2, "a": [1, "two"]}}, "enc": "json"}]}],
        \\               "body": {"kind": "template", "template": [
        \\                 {"range": {"const": {"z": 1, "a": [2], "m": {"k": "v"}}}, "do": [{"out": {"item": []}, "enc": "json"}, {"lit": ";"}]},
        \\                 {"if": {"fn": "eq", "args": [{"args": ["pick"]}, {"const": {"more": [null, 10, "\u00e9"], "deep": "x"}}]}, "then": [{"lit": "default"}], "else": [{"out": {"args": ["pick"]}}]},
        \\                 {"out": {"fn": "toJson", "args": [{"args": []}]}}]}},
        \\   "response": {"error_body": [{"out": {"fn": "default", "args": [{"const": ["fallback"]}, {"resp": ["missing"]}]}}, {"out": {"resp": ["detail"]}}],
        \\                "prepend": "<", "append": ">"}}]}
    ;
    for ([_][]const u8{ config.example, petstore, v2tools, consts }) |text| {
        var why: []const u8 = "";
        // Reference: the parse tree stays alive next to the compiled form.
        const live = try config.parse(a, a, text, &why);
        const freed = try config.parseFreed(a, text);
        const clients = [_]Client{ .{}, .{ .credentials = &.{ "Bearer tok", "k v" } } };
        for (clients) |client| {
            for (requests) |body| {
                try testing.expectEqualStrings(try transcript(a, &live, &client, body), try transcript(a, &freed, &client, body));
            }
            for (calls) |c| {
                if (live.findTool(c[0]) == null) continue;
                const body = try toolReq2(a, c[0], c[1]);
                try testing.expectEqualStrings(try transcript(a, &live, &client, body), try transcript(a, &freed, &client, body));
            }
        }
    }
    // The constants really went through: compare one answer with its text.
    const cfg = try config.parseFreed(a, consts);
    const t = try transcript(a, &cfg, &.{}, try toolReq2(a, "consts", "{}"));
    try testing.expect(std.mem.indexOf(u8, t, ":path: /k/b-a\n") != null);
    try testing.expect(std.mem.indexOf(u8, t, "x-const: {\"b\":2,\"a\":[1,\"two\"]}\n") != null);
    try testing.expect(std.mem.indexOf(u8, t, "[2];{\"k\":\"v\"};1;default{\"pick\":{\"deep\":\"x\",\"more\":[null,1.0e1,\"\u{e9}\"]},\"list\":[\"b\",\"a\"]}") != null);
    try testing.expect(std.mem.indexOf(u8, t, "\"text\":\"<not json>\"") != null);
    try testing.expect(std.mem.indexOf(u8, t, "\"text\":\"[\\\"fallback\\\"]no\"") != null);
}

/// `toolReq` without a fixture.
fn toolReq2(a: Allocator, tool: []const u8, args: []const u8) ![]const u8 {
    return jsonw.allocPrint(a, "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"{s}\",\"arguments\":{s}}}}}", .{ tool, args });
}

// ------------------------------------------------- 2026-07-28 (stateless)

const meta_ok = "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}}";

/// A 2026-07-28 request body; `params` is the params object's members
/// besides `_meta` (may be empty).
fn modernReq(a: Allocator, method: []const u8, params: []const u8) ![]const u8 {
    return jsonw.allocPrint(a, "{{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"{s}\",\"params\":{{{s}{s}{s}}}}}", .{ method, params, if (params.len == 0) "" else ",", meta_ok });
}

/// The headers the SDK sends with each request.
fn modernClient(method: []const u8, name: ?[]const u8) Client {
    return .{ .protocol_version = modern_version, .method = method, .name = name };
}

test "2026-07-28: server/discover" {
    const f = try Fixture.init(config.example);
    defer f.deinit();
    f.client = modernClient("server/discover", null);
    try f.expectReply(try modernReq(f.arena(), "server/discover", ""), 200,
        \\{"jsonrpc":"2.0","id":7,"result":{"supportedVersions":["2025-03-26","2025-06-18","2025-11-25","2026-07-28"],"capabilities":{"tools":{}},"cacheScope":"public","ttlMs":0,"resultType":"complete","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"petstore","version":"1.0.0","title":"Pet store"}},"instructions":"Use \"getPet\"."}}
    );
    // Without instructions; the result parses.
    const g = try Fixture.init(petstore);
    defer g.deinit();
    g.client = f.client;
    const r = try g.reply(try modernReq(g.arena(), "server/discover", ""));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":7,"result":{"supportedVersions":["2025-03-26","2025-06-18","2025-11-25","2026-07-28"],"capabilities":{"tools":{}},"cacheScope":"public","ttlMs":0,"resultType":"complete","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"petstore","version":"1.0.0"}}}}
    , r.body);
    _ = try std.json.parseFromSliceLeaky(Value, g.arena(), r.body, .{});
}

test "2026-07-28: tools/list adds the result fields" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    f.client = modernClient("tools/list", null);
    try f.expectReply(try modernReq(f.arena(), "tools/list", ""), 200,
        \\{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"getPet"}],"nextCursor":null,"cacheScope":"public","ttlMs":0,"resultType":"complete"}}
    );
    const empty =
        \\{"server": {"name": "e", "version": "1"}, "base_path": "/e", "upstream": {"cluster": "u"}, "tools_list": {}, "tools": []}
    ;
    const g = try Fixture.init(empty);
    defer g.deinit();
    g.client = f.client;
    try g.expectReply(try modernReq(g.arena(), "tools/list", ""), 200,
        \\{"jsonrpc":"2.0","id":7,"result":{"cacheScope":"public","ttlMs":0,"resultType":"complete"}}
    );
    // The legacy answer is unchanged.
    f.client = .{};
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\"}", 200,
        \\{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"getPet"}],"nextCursor":null}}
    );
}

test "2026-07-28: tools/call results carry resultType" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const a = f.arena();
    f.client = modernClient("tools/call", "addPet");
    const c = try f.call(try modernReq(a, "tools/call", "\"name\":\"addPet\",\"arguments\":{\"name\":\"Rex\"}"));
    try testing.expect(c.modern);
    try testing.expectEqualStrings("{\"name\":\"Rex\"}", c.body);
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"<<{\"id\":1}>>"}],"structuredContent":{"id":1},"isError":false,"resultType":"complete"}}
    , try toolResult(a, &c, .{ .status = 200, .headers = &.{}, .body = "{\"id\":1}" }));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"down"}],"isError":true,"resultType":"complete"}}
    , try toolFailure(a, &c, "down"));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"image","data":"YQ==","mimeType":"image/png"}],"isError":false,"resultType":"complete"}}
    , try toolResult(a, &c, .{ .status = 200, .headers = &.{.{ .name = "content-type", .value = "image/png" }}, .body = "a" }));

    // Errors of the call itself answer HTTP 400 in this revision.
    f.client = modernClient("tools/call", "nope");
    try f.expectError(try modernReq(a, "tools/call", "\"name\":\"nope\""), 400, invalid_params, "unknown tool: nope");
    // Argument failures are tool execution errors (SEP-1303), modern shape.
    f.client = modernClient("tools/call", "getPet");
    try f.expectReply(try modernReq(a, "tools/call", "\"name\":\"getPet\",\"arguments\":{}"), 200,
        \\{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"missing required argument: id"}],"isError":true,"resultType":"complete"}}
    );
    try f.expectError(try modernReq(a, "tools/call", "\"name\":\"getPet\",\"arguments\":[]"), 400, invalid_params, "invalid params: arguments must be an object");
    // No name in the body: nothing for Mcp-Name to match, the call reports it.
    f.client = modernClient("tools/call", null);
    try f.expectError(try modernReq(a, "tools/call", ""), 400, invalid_params, "invalid params: name must be a string");

    // A passthrough tool without the credential: a result, modern shape.
    const g = try Fixture.init(v2tools);
    defer g.deinit();
    g.client = modernClient("tools/call", "bearer");
    try g.expectReply(try modernReq(g.arena(), "tools/call", "\"name\":\"bearer\",\"arguments\":{}"), 200,
        \\{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"this tool needs the client's credential in Authorization"}],"isError":true,"resultType":"complete"}}
    );
    // A header value with a control character: an argument failure too.
    g.client = modernClient("tools/call", "cookies");
    try g.expectReply(try modernReq(g.arena(), "tools/call", "\"name\":\"cookies\",\"arguments\":{\"note\":\"a\\nb\"}"), 200,
        \\{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"argument note: contains a control character, which header x-note cannot carry (only tab is allowed)"}],"isError":true,"resultType":"complete"}}
    );

    // Mcp-Name in its base64 form (non-ASCII names).
    f.client = modernClient("tools/call", "=?base64?YWRkUGV0?=");
    _ = try f.call(try modernReq(a, "tools/call", "\"name\":\"addPet\",\"arguments\":{\"name\":\"Rex\"}"));
}

test "2026-07-28: the _meta envelope is required" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    f.client = modernClient("tools/list", null);
    // The header alone routes the request here.
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\"}", 400, invalid_params, "invalid params: params._meta must be an object");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\",\"params\":{\"_meta\":[]}}", 400, invalid_params, "invalid params: params._meta must be an object");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\",\"params\":{\"_meta\":{}}}", 400, invalid_params, "invalid params: params._meta is missing the required envelope key(s): io.modelcontextprotocol/protocolVersion, io.modelcontextprotocol/clientCapabilities");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\",\"params\":{\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}}}", 400, invalid_params, "invalid params: params._meta is missing the required envelope key(s): io.modelcontextprotocol/clientCapabilities");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\",\"params\":{\"_meta\":{\"io.modelcontextprotocol/clientCapabilities\":{}}}}", 400, invalid_params, "invalid params: params._meta is missing the required envelope key(s): io.modelcontextprotocol/protocolVersion");
    // The _meta key alone routes it here too (no headers at all).
    f.client = .{};
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\",\"params\":{\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}}}", 400, invalid_params, "invalid params: params._meta is missing the required envelope key(s): io.modelcontextprotocol/clientCapabilities");
}

test "2026-07-28: routing headers must match the body" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const a = f.arena();
    const list = try modernReq(a, "tools/list", "");
    const call = try modernReq(a, "tools/call", "\"name\":\"getPet\",\"arguments\":{\"id\":\"1\"}");

    f.client = .{ .method = "tools/list" };
    try f.expectError(list, 400, header_mismatch, "MCP-Protocol-Version header is missing");
    f.client = .{ .protocol_version = "2025-11-25", .method = "tools/list" };
    try f.expectError(list, 400, header_mismatch, "MCP-Protocol-Version header does not match");
    f.client = .{ .protocol_version = modern_version };
    try f.expectError(list, 400, header_mismatch, "Mcp-Method header is missing");
    f.client = modernClient("tools/call", null);
    try f.expectError(list, 400, header_mismatch, "Mcp-Method header does not match the request body's method");
    f.client = modernClient("tools/call", null);
    try f.expectError(call, 400, header_mismatch, "Mcp-Name header is missing");
    f.client = modernClient("tools/call", "addPet");
    try f.expectError(call, 400, header_mismatch, "Mcp-Name header does not match the request body's name");
    for ([_][]const u8{ "=?base64?Z2V0UGV0?=x", "=?base64?Z2V0UGV?=", "=?base64?!!!!?=", "=?base64?YWRkUGV0?=" }) |v| {
        f.client = modernClient("tools/call", v);
        try f.expectError(call, 400, header_mismatch, "Mcp-Name header does not match");
    }
    f.client = modernClient("tools/call", "=?base64?Z2V0UGV0?=");
    _ = try f.call(call);
    f.client = modernClient("tools/call", "getPet");
    _ = try f.call(call);

    // The id is echoed on every rejection.
    f.client = .{ .method = "tools/list" };
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":7,"error":{"code":-32020,"message":"MCP-Protocol-Version header is missing"}}
    , (try f.reply(list)).body);
}

test "2026-07-28: unsupported protocol versions" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const body =
        \\{"jsonrpc":"2.0","id":"v","method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01","io.modelcontextprotocol/clientCapabilities":{}}}}
    ;
    const expected =
        \\{"jsonrpc":"2.0","id":"v","error":{"code":-32022,"message":"Unsupported protocol version","data":{"supported":["2025-03-26","2025-06-18","2025-11-25","2026-07-28"],"requested":"2099-01-01"}}}
    ;
    // Header and _meta agree on a version we do not serve.
    f.client = .{ .protocol_version = "2099-01-01", .method = "tools/list" };
    try f.expectReply(body, 400, expected);
    // An unserved header wins over a mismatch.
    f.client = .{ .protocol_version = "2099-01-01", .method = "tools/list" };
    try f.expectError(try modernReq(f.arena(), "tools/list", ""), 400, unsupported_protocol_version, "Unsupported protocol version");
}

test "2026-07-28: initialize, ping and other methods are not found" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    for ([_][]const u8{ "initialize", "ping", "resources/list", "server/other" }) |m| {
        f.client = modernClient(m, null);
        const expected = try jsonw.allocPrint(f.arena(), "method not found: {s}", .{m});
        try f.expectError(try modernReq(f.arena(), m, ""), 404, method_not_found, expected);
    }
    // Notifications are still accepted and dropped.
    f.client = modernClient("notifications/cancelled", null);
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{" ++ meta_ok ++ "}}", 202, "");
}

test "2026-07-28: legacy requests are unaffected" {
    const f = try Fixture.init(config.example);
    defer f.deinit();
    // Legacy headers and a legacy _meta (progressToken) stay legacy, and
    // discover is not a legacy method.
    f.client = .{ .protocol_version = "2025-11-25", .method = "tools/call", .name = "x" };
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"_meta\":{\"progressToken\":1}}}", 200,
        \\{"jsonrpc":"2.0","id":1,"result":{}}
    );
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server/discover\"}", 200, method_not_found, "method not found: server/discover");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"nope\"}}", 200, invalid_params, "unknown tool: nope");
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-11-25\"}}", 200,
        \\{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"petstore","version":"1.0.0","title":"Pet store"},"instructions":"Use \"getPet\"."}}
    );
}

test "2026-07-28: Mcp-Name values decode like the SDK encodes them" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    try testing.expectEqualStrings("plain", (try decodeHeaderValue(a, "plain")).?);
    try testing.expectEqualStrings("=?base64?", (try decodeHeaderValue(a, "=?base64?")).?);
    try testing.expectEqualStrings("h\u{e9}", (try decodeHeaderValue(a, "=?base64?aMOp?=")).?);
    try testing.expectEqualStrings("", (try decodeHeaderValue(a, "=?base64??=")).?);
    try testing.expect((try decodeHeaderValue(a, "=?base64?aMOq?x?=")) == null);
    try testing.expect((try decodeHeaderValue(a, "=?base64?aMO?=")) == null);
    try testing.expect((try decodeHeaderValue(a, "=?base64?aMP=?=")) == null); // non-canonical
    try testing.expect((try decodeHeaderValue(a, "=?base64?/w==?=")) == null); // not UTF-8
}

// ------------------------------------------------- Streamable HTTP checks

test "MCP-Protocol-Version header on legacy requests" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    const list = "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/list\"}";
    // Absent: 2025-03-26 assumed, accepted. Each served version: accepted.
    f.client = .{};
    _ = try f.reply(list);
    for (supported_versions) |v| {
        f.client = .{ .protocol_version = v };
        try testing.expectEqual(@as(u32, 200), (try f.reply(list)).status);
    }
    // Anything else: HTTP 400 naming the supported versions, id echoed.
    f.client = .{ .protocol_version = "2024-01-01" };
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":3,"error":{"code":-32600,"message":"Bad Request: Unsupported protocol version: 2024-01-01. Supported versions: 2025-03-26, 2025-06-18, 2025-11-25, 2026-07-28"}}
    , (try f.reply(list)).body);
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"ping\"}", 400, invalid_request, "Bad Request: Unsupported protocol version");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", 400, invalid_request, "Bad Request: Unsupported protocol version");
    // initialize negotiates in its body: the header does not matter.
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\"}}", 200,
        \\{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"petstore","version":"1.0.0"}}}
    );
    // A served version on a notification: accepted.
    f.client = .{ .protocol_version = "2025-06-18" };
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", 202, "");
}

test "Origin: localhost and configured origins only" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    const cfg = try config.parseFreed(a,
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m",
        \\ "allowed_origins": ["https://App.example.com:443", "http://10.0.0.5:8080"]}
    );
    for ([_][]const u8{
        "http://localhost",            "http://localhost:6274",   "https://LOCALHOST:1",
        "http://127.0.0.1:3000",       "http://[::1]:8080",       "https://app.example.com",
        "https://app.example.com:443", "HTTPS://APP.EXAMPLE.COM", "http://10.0.0.5:8080",
    }) |o| {
        if (!try originAllowed(a, &cfg, o)) {
            std.debug.print("refused {s}\n", .{o});
            return error.TestUnexpectedResult;
        }
    }
    for ([_][]const u8{
        "https://evil.example",  "http://app.example.com",        "https://app.example.com:8443",
        "null",                  "http://localhost.evil.example", "http://127.0.0.1.evil.example",
        "file://localhost",      "http://10.0.0.5",               "https://app.example.com/x",
        "http://user@localhost", "",                              "http://[::2]",
    }) |o| {
        if (try originAllowed(a, &cfg, o)) {
            std.debug.print("allowed {s}\n", .{o});
            return error.TestUnexpectedResult;
        }
    }
    const r = try forbiddenOrigin(a);
    try testing.expectEqual(@as(u32, 403), r.status);
    try testing.expectEqualStrings("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"Forbidden: Origin not allowed\"}}", r.body);
    // The default configuration allows localhost only.
    const plain = try config.parseFreed(a, "{\"server\": {\"name\": \"s\", \"version\": \"1\"}, \"base_path\": \"/m\"}");
    try testing.expect(try originAllowed(a, &plain, "http://localhost:1234"));
    try testing.expect(!(try originAllowed(a, &plain, "https://app.example.com")));
}

test "Accept: JSON or SSE (or a wildcard covering one)" {
    for ([_][]const u8{
        "application/json",                          "text/event-stream",
        "application/json, text/event-stream",       "*/*",
        "application/*",                             "text/*;q=0.5",
        "text/html, Application/JSON;charset=utf-8", " text/event-stream ",
    }) |v| try testing.expect(acceptable(v));
    for ([_][]const u8{ "text/html", "application/xml", "", "image/*", "application/jsonx" }) |v| try testing.expect(!acceptable(v));
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    try testing.expectEqual(@as(u32, 406), (try notAcceptable(arena_state.allocator())).status);
}

const paged =
    \\{"server": {"name": "p", "version": "1"}, "base_path": "/p", "page_size": 2,
    \\ "tools_list": {"tools": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}, {"name": "e"}], "nextCursor": null, "x": 1},
    \\ "tools": []}
;

fn listWith(a: Allocator, cursor: []const u8) ![]const u8 {
    return jsonw.allocPrint(a, "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{{\"cursor\":{s}}}}}", .{cursor});
}

test "tools/list pages with opaque cursors" {
    const f = try Fixture.init(paged);
    defer f.deinit();
    const a = f.arena();
    var names = std.ArrayList(u8).empty;
    var cursor: ?[]const u8 = null;
    var pages: usize = 0;
    while (true) : (pages += 1) {
        const body = if (cursor) |c| try listWith(a, try jsonw.allocPrint(a, "\"{s}\"", .{c})) else "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}";
        const r = try f.reply(body);
        try testing.expectEqual(@as(u32, 200), r.status);
        const result = (try std.json.parseFromSliceLeaky(Value, a, r.body, .{})).object.get("result").?.object;
        try testing.expect(result.get("tools").?.array.items.len <= 2);
        try testing.expectEqual(@as(i64, 1), result.get("x").?.integer);
        for (result.get("tools").?.array.items) |t| try names.appendSlice(a, t.object.get("name").?.string);
        const next = result.get("nextCursor") orelse break;
        cursor = next.string;
    }
    try testing.expectEqualStrings("abcde", names.items);
    try testing.expectEqual(@as(usize, 2), pages);
    // The first page exactly; null cursor = no cursor.
    try f.expectReply(try listWith(a, "null"), 200, try jsonw.allocPrint(a,
        \\{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"a"}},{{"name":"b"}}],"x":1,"nextCursor":"{s}"}}}}
    , .{f.cfg.cursors[1]}));
    // Invalid cursors: garbage, wrong type, another configuration's.
    try f.expectError(try listWith(a, "\"nope\""), 200, invalid_params, "invalid params: invalid or expired cursor");
    try f.expectError(try listWith(a, "7"), 200, invalid_params, "invalid params: invalid or expired cursor");
    const other = try config.makeCursor(a, 2, 0x12345678);
    try f.expectError(try listWith(a, try jsonw.allocPrint(a, "\"{s}\"", .{other})), 200, invalid_params, "invalid params");
    // The 2026-07-28 answer pages too, its errors are HTTP 400.
    f.client = modernClient("tools/list", null);
    const modern_body = try modernReq(a, "tools/list", try jsonw.allocPrint(a, "\"cursor\":\"{s}\"", .{f.cfg.cursors[2]}));
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"e"}],"x":1,"cacheScope":"public","ttlMs":0,"resultType":"complete"}}
    , (try f.reply(modern_body)).body);
    try f.expectError(try modernReq(a, "tools/list", "\"cursor\":\"nope\""), 400, invalid_params, "invalid params: invalid or expired cursor");
}

test "tools/list: one page keeps the pre-rendered answer" {
    const fits =
        \\{"server": {"name": "p", "version": "1"}, "base_path": "/p", "page_size": 5,
        \\ "tools_list": {"tools": [{"name": "a"}, {"name": "b"}]}}
    ;
    for ([_][]const u8{ fits, petstore }) |text| {
        const f = try Fixture.init(text);
        defer f.deinit();
        try testing.expectEqual(@as(usize, 0), f.cfg.pages.len);
        const r = try f.reply("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}");
        try testing.expect(std.mem.indexOf(u8, r.body, f.cfg.tools_list_json) != null);
        // No cursor was issued, so none is valid.
        try f.expectError(try listWith(f.arena(), "\"abc\""), 200, invalid_params, "invalid params");
    }
}

// ------------------------------------------------------------- sessions

const with_sessions =
    \\{"server": {"name": "s", "version": "1"}, "base_path": "/m",
    \\ "upstream": {"cluster": "c"},
    \\ "sessions": {"keys": [{"id": "k1", "secret": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"}]},
    \\ "broker": {"cluster": "mcpgw-broker", "timeout_ms": 2000},
    \\ "tools_list": {"tools": [{"name": "t"}]},
    \\ "tools": [{"name": "t", "request": {"path": [{"lit": "/t"}]}}]}
;

test "sessions: initialize opens one, every other legacy message needs one" {
    const f = try Fixture.init(with_sessions);
    defer f.deinit();
    const init_req = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\"}}";
    // initialize needs none, and asks the filter to mint one with the
    // negotiated version; a stale or bogus session id does not matter.
    for ([_]SessionState{ .absent, .invalid, .valid }) |st| {
        f.client = .{ .session = st };
        const r = try f.reply(init_req);
        try testing.expectEqual(@as(u32, 200), r.status);
        try testing.expectEqualStrings("2025-06-18", r.new_session.?);
    }
    f.client = .{ .session = .absent };
    try testing.expectEqualStrings("2025-11-25", (try f.reply("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2024-11-05\"}}")).new_session.?);

    // Requests, notifications and responses without one: 400, id echoed.
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"tools/list\"}", 400,
        \\{"jsonrpc":"2.0","id":"a","error":{"code":-32600,"message":"Bad Request: Mcp-Session-Id header is required"}}
    );
    try f.expectError("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", 400, invalid_request, "Bad Request: Mcp-Session-Id header is required");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"method\":\"initialize\"}", 400, invalid_request, "Bad Request: Mcp-Session-Id");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{}}", 400, invalid_request, "Bad Request: Mcp-Session-Id");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":\"t\"}}", 400, invalid_request, "Bad Request: Mcp-Session-Id");
    // Parse errors and invalid messages keep their answers.
    try f.expectError("{", 400, parse_error, "Parse error");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":1}", 400, invalid_request, "Invalid Request: no method");

    // One that does not verify: 404, id echoed.
    f.client = .{ .session = .invalid };
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}", 404,
        \\{"jsonrpc":"2.0","id":7,"error":{"code":-32600,"message":"Session not found"}}
    );
    try f.expectError("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", 404, invalid_request, "Session not found");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":5,\"error\":{\"code\":1,\"message\":\"x\"}}", 404, invalid_request, "Session not found");

    // A valid one: business as usual.
    f.client = .{ .session = .valid };
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}", 200, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}");
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", 202, "");
    _ = try f.call("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":\"t\"}}");
    // The protocol version header is still checked, after the session.
    f.client = .{ .session = .valid, .protocol_version = "1999-01-01" };
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}", 400, invalid_request, "Bad Request: Unsupported protocol version");
    f.client = .{ .session = .absent, .protocol_version = "1999-01-01" };
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}", 400, invalid_request, "Bad Request: Mcp-Session-Id");
}

test "sessions: stateless 2026-07-28 requests never need one" {
    const f = try Fixture.init(with_sessions);
    defer f.deinit();
    for ([_]SessionState{ .absent, .invalid }) |st| {
        f.client = modernClient("tools/list", null);
        f.client.session = st;
        const r = try f.reply(try modernReq(f.arena(), "tools/list", ""));
        try testing.expectEqual(@as(u32, 200), r.status);
        try testing.expect(r.new_session == null);
        f.client = modernClient("notifications/cancelled", null);
        f.client.session = st;
        try f.expectReply("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{" ++ meta_ok ++ "}}", 202, "");
        // Told apart by the _meta key alone too.
        f.client = .{ .session = st };
        try f.expectError(try modernReq(f.arena(), "tools/list", ""), 400, header_mismatch, "MCP-Protocol-Version header is missing");
    }
    // A response under the stateless header.
    f.client = .{ .protocol_version = modern_version };
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{}}", 202, "");
}

test "sessions: absent from the configuration, nothing changes" {
    const f = try Fixture.init(petstore);
    defer f.deinit();
    for ([_]SessionState{ .absent, .invalid }) |st| {
        f.client = .{ .session = st };
        const r = try f.reply("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\"}}");
        try testing.expect(r.new_session == null);
        try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}", 200, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}");
        try f.expectReply("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", 202, "");
    }
}

test "HTTP+SSE: messages are legacy, 2024-11-05 negotiable, no new session" {
    const f = try Fixture.init(with_sessions);
    defer f.deinit();
    f.client = .{ .transport = .sse };
    const base = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":";
    for ([_][2][]const u8{
        .{ "\"2024-11-05\"", "2024-11-05" },
        .{ "\"2025-06-18\"", "2025-06-18" },
        .{ "\"2099-01-01\"", "2025-11-25" },
        .{ "7", "2025-11-25" },
    }) |c| {
        const r = try f.reply(try std.mem.concat(f.arena(), u8, &.{ base, c[0], "}}" }));
        try testing.expectEqual(@as(u32, 200), r.status);
        try testing.expect(r.new_session == null);
        try testing.expect(std.mem.startsWith(u8, r.body, try std.mem.concat(f.arena(), u8, &.{ "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"", c[1], "\"" })));
    }
    try testing.expectEqualStrings(sse_version, negotiateSse(try std.json.parseFromSliceLeaky(Value, f.arena(), "{\"protocolVersion\":\"2024-11-05\"}", .{})));
    try testing.expectEqualStrings(latest_version, negotiateSse(null));
    // Streamable HTTP still answers 2024-11-05 with the latest.
    f.client = .{};
    try testing.expect(std.mem.indexOf(u8, (try f.reply(try std.mem.concat(f.arena(), u8, &.{ base, "\"2024-11-05\"}}" }))).body, "2025-11-25") != null);

    f.client = .{ .transport = .sse };
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}", 200,
        \\{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"t"}]}}
    );
    // A stateless envelope does not make it a 2026-07-28 request.
    try f.expectReply(try modernReq(f.arena(), "tools/list", ""), 200,
        \\{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"t"}]}}
    );
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", 202, "");
    try f.expectReply("{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}", 202, "");
    _ = try f.call("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":\"t\"}}");
    try f.expectError("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"nope\"}", 200, method_not_found, "method not found");
}

test "HTTP+SSE: local answers and the broker request" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const a = arena_state.allocator();
    for ([_][]const u8{ "text/event-stream", "*/*", "text/*", "application/json, text/event-stream;q=0.9", " TEXT/EVENT-STREAM " }) |v|
        try testing.expect(acceptsEventStream(v));
    for ([_][]const u8{ "application/json", "text/html", "", "application/*" }) |v| try testing.expect(!acceptsEventStream(v));

    const broker = config.Broker{ .cluster = "mcpgw-broker", .timeout_ms = 5000 };
    const h = try publishHeaders(a, &broker, "000102030405060708090a0b0c0d0e0f", 42);
    try testing.expectEqualStrings("POST", tpl.findHeader(h, ":method").?);
    try testing.expectEqualStrings("/v1/sse/000102030405060708090a0b0c0d0e0f", tpl.findHeader(h, ":path").?);
    try testing.expectEqualStrings("mcpgw-broker", tpl.findHeader(h, ":authority").?);
    try testing.expectEqualStrings("application/json", tpl.findHeader(h, "content-type").?);
    try testing.expectEqualStrings("42", tpl.findHeader(h, "content-length").?);

    const g = try methodNotAllowedGet(a);
    try testing.expectEqual(@as(u32, 405), g.status);
    try testing.expect(g.allow == .get);
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not connected"}}
    , (try sessionNotConnected(a)).body);
    const b = try brokerUnavailable(a, broker_unavailable ++ " (request id r1)");
    try testing.expectEqual(@as(u32, 503), b.status);
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"session broker unavailable (request id r1)"}}
    , b.body);
    try testing.expectEqualStrings(
        \\{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Bad Request: sessionId query parameter is required"}}
    , (try sessionRequired(a, "null", "sessionId query parameter")).body);
}
