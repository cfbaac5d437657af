//! The plugin configuration of CONFIG.md: parsed once per root context into
//! an arena and compiled into the shapes the request path uses (template
//! trees, argument checks, a name index for tools, pre-serialised answers,
//! the client credentials passthrough tools need).

const std = @import("std");
const jsonw = @import("jsonw.zig");
const Allocator = std.mem.Allocator;
const Value = std.json.Value;
const tpl = @import("template.zig");
const Out = @import("jsonw.zig").Out;

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
    default: ?Value,
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

pub const Config = struct {
    base_path: []const u8,
    max_request_bytes: u32,
    max_response_bytes: u32,
    /// `tools_list` re-serialised once; spliced into every tools/list answer.
    tools_list_json: []const u8,
    /// The initialize result after the protocol version string, so the answer
    /// is three appends: `{"protocolVersion":"` + version + this.
    initialize_tail: []const u8,
    tools: []const Tool,
    by_name: std.StringHashMapUnmanaged(u32),
    /// Distinct client credential locations of all passthrough tools; empty
    /// when there are none, so ordinary servers read no extra headers.
    credential_sources: []const CredentialSource,

    pub fn findTool(self: *const Config, name: []const u8) ?*const Tool {
        const idx = self.by_name.get(name) orelse return null;
        return &self.tools[idx];
    }
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

const RawConfig = struct {
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
    } = .{},
    tools_list: ?Value = null,
    tools: []const RawTool = &.{},
};

/// Parses and compiles `text`. Everything returned lives in `arena`. On
/// `error.InvalidConfig`, `why` holds a human-readable reason.
pub fn parse(arena: Allocator, text: []const u8, why: *[]const u8) Error!Config {
    why.* = "";
    var scanner = std.json.Scanner.initCompleteInput(arena, text);
    var diag: std.json.Diagnostics = .{};
    scanner.enableDiagnostics(&diag);
    const raw = std.json.parseFromTokenSourceLeaky(RawConfig, arena, &scanner, .{
        .ignore_unknown_fields = true,
        .duplicate_field_behavior = .use_last,
        // Numbers inside defaults, enums, constants and tools_list keep
        // their original text.
        .parse_numbers = false,
        .allocate = .alloc_always,
    }) catch |err| {
        if (err == error.OutOfMemory) return error.OutOfMemory;
        why.* = try jsonw.allocPrint(arena, "configuration JSON: {s} at line {d} column {d}", .{
            @errorName(err), diag.getLine(), diag.getColumn(),
        });
        return error.InvalidConfig;
    };
    var c = Compiler{ .arena = arena, .why = why };
    return c.config(raw);
}

/// CR, LF and NUL end or split a header line; such values are never sent.
pub fn hasControl(s: []const u8) bool {
    return std.mem.indexOfAny(u8, s, "\r\n\x00") != null;
}

const Compiler = struct {
    arena: Allocator,
    why: *[]const u8,
    sources: std.ArrayList(CredentialSource) = .empty,

    fn fail(self: *Compiler, comptime fmt: []const u8, args: anytype) Error {
        self.why.* = try jsonw.allocPrint(self.arena, fmt, args);
        return error.InvalidConfig;
    }

    fn config(self: *Compiler, raw: RawConfig) Error!Config {
        if (raw.server.name.len == 0) return self.fail("server.name: must not be empty", .{});
        if (raw.base_path.len == 0 or raw.base_path[0] != '/')
            return self.fail("base_path: must start with '/'", .{});
        if (std.mem.indexOfAny(u8, raw.base_path, "?#") != null)
            return self.fail("base_path: must not contain '?' or '#'", .{});

        // Tools point at this, so it lives in the arena, not in the Config copy.
        const server_upstream: ?*const Upstream = if (raw.upstream) |u|
            try self.upstream(u, "upstream", .{})
        else
            null;

        const tools_list_json = if (raw.tools_list) |tl| blk: {
            if (tl != .object) return self.fail("tools_list: must be an object", .{});
            var out = Out.init(self.arena);
            try out.value(tl);
            break :blk out.bytes();
        } else "{\"tools\":[]}";

        var init = Out.init(self.arena);
        try init.add("\",\"capabilities\":{\"tools\":{\"listChanged\":false}},\"serverInfo\":{\"name\":");
        try init.str(raw.server.name);
        try init.add(",\"version\":");
        try init.str(raw.server.version);
        if (raw.server.title) |t| {
            try init.add(",\"title\":");
            try init.str(t);
        }
        try init.byte('}');
        if (raw.instructions) |ins| {
            try init.add(",\"instructions\":");
            try init.str(ins);
        }
        try init.byte('}');

        const tools = try self.arena.alloc(Tool, raw.tools.len);
        var by_name: std.StringHashMapUnmanaged(u32) = .empty;
        try by_name.ensureTotalCapacity(self.arena, @intCast(raw.tools.len));
        for (raw.tools, tools, 0..) |rt, *t, i| {
            t.* = try self.tool(rt, i, server_upstream);
            const gop = by_name.getOrPutAssumeCapacity(t.name);
            if (gop.found_existing) return self.fail("tools[{d}].name: duplicate tool name \"{s}\"", .{ i, t.name });
            gop.value_ptr.* = @intCast(i);
        }

        return .{
            .base_path = raw.base_path,
            .max_request_bytes = raw.limits.max_request_bytes,
            .max_response_bytes = raw.limits.max_response_bytes,
            .tools_list_json = tools_list_json,
            .initialize_tail = init.bytes(),
            .tools = tools,
            .by_name = by_name,
            .credential_sources = self.sources.items,
        };
    }

    fn upstream(self: *Compiler, u: RawUpstream, comptime where: []const u8, where_args: anytype) Error!*const Upstream {
        if (u.cluster.len == 0) return self.fail(where ++ ".cluster: must not be empty", where_args);
        const up = try self.arena.create(Upstream);
        up.* = .{ .cluster = u.cluster, .authority = u.authority orelse u.cluster, .timeout_ms = u.timeout_ms };
        return up;
    }

    fn headerName(self: *Compiler, name: []const u8, comptime where: []const u8, where_args: anytype) Error![]const u8 {
        if (name.len == 0 or name[0] == ':' or !isToken(name))
            return self.fail(where ++ ": must be a regular header name", where_args);
        // HTTP/2 and Envoy's header maps want lowercase names.
        return std.ascii.allocLowerString(self.arena, name);
    }

    fn tool(self: *Compiler, rt: RawTool, i: usize, server_upstream: ?*const Upstream) Error!Tool {
        if (rt.name.len == 0) return self.fail("tools[{d}].name: must not be empty", .{i});
        const args = try self.arena.alloc(Arg, rt.args.len);
        for (rt.args, args, 0..) |ra, *a, j| {
            if (ra.name.len == 0) return self.fail("tools[{d}].args[{d}].name: must not be empty", .{ i, j });
            const where = try jsonw.allocPrint(self.arena, "tools[{d}].args[{d}]", .{ i, j });
            a.* = .{
                .name = ra.name,
                .required = ra.required,
                .default = ra.default,
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
        const method = try std.ascii.allocUpperString(self.arena, req.method);

        for (req.query, 0..) |q, j| {
            if (q.name.len == 0 or q.arg.len == 0)
                return self.fail("tools[{d}].request.query[{d}]: name and arg must not be empty", .{ i, j });
        }
        for (req.cookies, 0..) |q, j| {
            if (q.name.len == 0 or q.arg.len == 0 or !isToken(q.name))
                return self.fail("tools[{d}].request.cookies[{d}]: name must be a cookie name and arg not empty", .{ i, j });
        }

        const headers = try self.arena.alloc(HeaderTemplate, req.headers.len);
        for (req.headers, headers, 0..) |rh, *h, j| {
            h.* = .{
                .name = try self.headerName(rh.name, "tools[{d}].request.headers[{d}].name", .{ i, j }),
                .value = try self.template(rh.value, .request, "tools[{d}].request.headers[{d}].value", .{ i, j }),
            };
        }

        const body: ?Body = if (req.body) |rb| switch (rb.kind) {
            .template => .{ .template = .{
                .content_type = rb.content_type orelse "application/json",
                .template = try self.template(rb.template orelse
                    return self.fail("tools[{d}].request.body.template: required for kind template", .{i}), .request, "tools[{d}].request.body.template", .{i}),
            } },
            .json_args => .{ .json_args = rb.args },
            .form_args => .{ .form_args = rb.args },
        } else null;

        var static_auth: []const StaticCredential = &.{};
        var passthrough: ?Passthrough = null;
        if (req.auth) |auth| {
            const list = try self.arena.alloc(StaticCredential, auth.static.len);
            for (auth.static, list, 0..) |sc, *dst, j| {
                if (sc.name.len == 0) return self.fail("tools[{d}].request.auth.static[{d}].name: must not be empty", .{ i, j });
                if (hasControl(sc.value)) return self.fail("tools[{d}].request.auth.static[{d}].value: contains a control character", .{ i, j });
                dst.* = .{
                    .in = sc.in,
                    .name = if (sc.in == .header) try self.headerName(sc.name, "tools[{d}].request.auth.static[{d}].name", .{ i, j }) else sc.name,
                    .value = sc.value,
                };
            }
            static_auth = list;
            if (auth.passthrough) |pt| {
                if (pt.from.name.len == 0) return self.fail("tools[{d}].request.auth.passthrough.from.name: must not be empty", .{i});
                if (pt.to.name.len == 0) return self.fail("tools[{d}].request.auth.passthrough.to.name: must not be empty", .{i});
                if (hasControl(pt.to.prefix)) return self.fail("tools[{d}].request.auth.passthrough.to.prefix: contains a control character", .{i});
                const from_name = if (pt.from.in == .header) try self.headerName(pt.from.name, "tools[{d}].request.auth.passthrough.from.name", .{i}) else pt.from.name;
                passthrough = .{
                    .source = try self.source(.{ .in = pt.from.in, .name = from_name }),
                    .from_name = pt.from.name,
                    .from_prefix = pt.from.prefix,
                    .to_in = pt.to.in,
                    .to_name = if (pt.to.in == .header) try self.headerName(pt.to.name, "tools[{d}].request.auth.passthrough.to.name", .{i}) else pt.to.name,
                    .to_prefix = pt.to.prefix,
                };
            }
        }

        var response: Response = .{};
        if (rt.response) |rr| {
            response = .{
                .body = if (rr.body) |b| try self.template(b, .response, "tools[{d}].response.body", .{i}) else null,
                .prepend = rr.prepend orelse "",
                .append = rr.append orelse "",
                .error_body = if (rr.error_body) |b| try self.template(b, .response, "tools[{d}].response.error_body", .{i}) else null,
                .structured = rr.structured,
            };
        }

        return .{
            .name = rt.name,
            .args = args,
            .upstream = up,
            .method = method,
            .path = try self.template(req.path, .request, "tools[{d}].request.path", .{i}),
            .query = req.query,
            .headers = headers,
            .cookies = req.cookies,
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
        try self.sources.append(self.arena, src);
        return @intCast(self.sources.items.len - 1);
    }

    fn check(self: *Compiler, t: ?ArgType, one_of: ?Value, items: ?Value, where: []const u8) Error!Check {
        var c = Check{ .type = t };
        if (one_of) |e| switch (e) {
            .null => {},
            .array => |arr| {
                c.one_of = arr.items;
                var out = Out.init(self.arena);
                try out.value(e);
                c.one_of_json = out.bytes();
            },
            else => return self.fail("{s}.enum: must be a list", .{where}),
        };
        if (items) |it| switch (it) {
            .null => {},
            .object => |o| {
                const inner_where = try jsonw.allocPrint(self.arena, "{s}.items", .{where});
                var inner_type: ?ArgType = null;
                if (o.get("type")) |tv| switch (tv) {
                    .null => {},
                    .string => |name| inner_type = std.meta.stringToEnum(ArgType, name) orelse
                        return self.fail("{s}.type: unknown type \"{s}\"", .{ inner_where, name }),
                    else => return self.fail("{s}.type: must be a string", .{inner_where}),
                };
                const inner = try self.arena.create(Check);
                inner.* = try self.check(inner_type, o.get("enum"), o.get("items"), inner_where);
                c.items = inner;
            },
            else => return self.fail("{s}.items: must be an object", .{where}),
        };
        return c;
    }

    fn template(self: *Compiler, raw: Value, side: tpl.Side, comptime where: []const u8, where_args: anytype) Error!tpl.Template {
        const name = try jsonw.allocPrint(self.arena, where, where_args);
        return tpl.compile(self.arena, raw, side, name, self.why);
    }
};

/// RFC 9110 token characters: valid header and cookie names.
fn isToken(s: []const u8) bool {
    for (s) |ch| switch (ch) {
        'A'...'Z', 'a'...'z', '0'...'9', '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~' => {},
        else => return false,
    };
    return true;
}

// ---------------------------------------------------------------- tests

const testing = std.testing;

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
    var why: []const u8 = undefined;
    const c = try parse(arena_state.allocator(), example, &why);

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
    try testing.expect(t.args[1].default.? == .bool);
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
    var why: []const u8 = undefined;
    const c = try parse(arena_state.allocator(),
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/mcp"}
    , &why);
    try testing.expectEqualStrings("{\"tools\":[]}", c.tools_list_json);
    try testing.expectEqual(@as(u32, 1048576), c.max_request_bytes);
    try testing.expectEqual(@as(usize, 0), c.tools.len);
    try testing.expectEqual(@as(usize, 0), c.credential_sources.len);
    try testing.expectEqualStrings(
        \\","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"s","version":"1"}}
    , c.initialize_tail);
    // Every tool with its own upstream: the server needs none.
    const c2 = try parse(arena_state.allocator(),
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/mcp", "tools": [
        \\ {"name": "a", "upstream": {"cluster": "x", "authority": "x.example", "timeout_ms": 7}, "request": {"path": [{"lit": "/"}]}}]}
    , &why);
    try testing.expectEqualStrings("x.example", c2.tools[0].upstream.authority);
    try testing.expectEqual(@as(u32, 7), c2.tools[0].upstream.timeout_ms);
}

fn expectInvalid(text: []const u8, reason_contains: []const u8) !void {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    var why: []const u8 = undefined;
    try testing.expectError(error.InvalidConfig, parse(arena_state.allocator(), text, &why));
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
