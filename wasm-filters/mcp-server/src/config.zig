//! The plugin configuration of CONFIG.md: parsed once per root context into
//! an arena and compiled into the shapes the request path uses (template
//! parts as tagged unions, a name index for tools, pre-serialised answers).

const std = @import("std");
const jsonw = @import("jsonw.zig");
const Allocator = std.mem.Allocator;
const Value = std.json.Value;
const tpl = @import("template.zig");
const Out = @import("jsonw.zig").Out;

pub const ArgType = enum { string, number, integer, boolean, array, object };

pub const Arg = struct {
    name: []const u8,
    /// null: no type check (the control plane could not name one).
    type: ?ArgType,
    required: bool,
    default: ?Value,
};

pub const Query = struct { name: []const u8, arg: []const u8 };

pub const HeaderTemplate = struct { name: []const u8, value: []const tpl.Part };

pub const Body = union(enum) {
    template: struct { content_type: []const u8, template: []const tpl.Part },
    json_args: []const []const u8,
    form_args: []const []const u8,
};

pub const Response = struct {
    body: ?[]const tpl.Part = null,
    prepend: []const u8 = "",
    append: []const u8 = "",
    error_body: ?[]const tpl.Part = null,
    structured: bool = false,
};

pub const Tool = struct {
    name: []const u8,
    args: []const Arg,
    method: []const u8,
    path: []const tpl.Part,
    query: []const Query,
    headers: []const HeaderTemplate,
    body: ?Body,
    response: Response,
};

pub const Config = struct {
    base_path: []const u8,
    cluster: []const u8,
    authority: []const u8,
    timeout_ms: u32,
    max_request_bytes: u32,
    max_response_bytes: u32,
    /// `tools_list` re-serialised once; spliced into every tools/list answer.
    tools_list_json: []const u8,
    /// The initialize result after the protocol version string, so the answer
    /// is three appends: `{"protocolVersion":"` + version + this.
    initialize_tail: []const u8,
    tools: []const Tool,
    by_name: std.StringHashMapUnmanaged(u32),

    pub fn findTool(self: *const Config, name: []const u8) ?*const Tool {
        const idx = self.by_name.get(name) orelse return null;
        return &self.tools[idx];
    }
};

pub const Error = error{ InvalidConfig, OutOfMemory };

// The JSON shapes as delivered. Unknown keys are ignored for forward
// compatibility; every optional key has the default CONFIG.md gives it.

const RawPart = struct {
    lit: ?[]const u8 = null,
    arg: ?[]const u8 = null,
    arg_path: ?[]const []const u8 = null,
    resp: ?[]const []const u8 = null,
    status: ?bool = null,
    resp_header: ?[]const u8 = null,
    enc: tpl.Enc = .raw,
};

const RawArg = struct {
    name: []const u8,
    type: ?ArgType = null,
    required: bool = false,
    default: ?Value = null,
};

const RawHeader = struct { name: []const u8, value: []const RawPart };

const RawBody = struct {
    kind: enum { template, json_args, form_args },
    content_type: ?[]const u8 = null,
    template: ?[]const RawPart = null,
    args: []const []const u8 = &.{},
};

const RawRequest = struct {
    method: []const u8 = "GET",
    path: []const RawPart,
    query: []const Query = &.{},
    headers: []const RawHeader = &.{},
    body: ?RawBody = null,
};

const RawResponse = struct {
    body: ?[]const RawPart = null,
    prepend: ?[]const u8 = null,
    append: ?[]const u8 = null,
    error_body: ?[]const RawPart = null,
    structured: bool = false,
};

const RawTool = struct {
    name: []const u8,
    args: []const RawArg = &.{},
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
    upstream: ?struct {
        cluster: []const u8,
        authority: ?[]const u8 = null,
        timeout_ms: u32 = 10000,
    } = null,
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
        // Numbers inside defaults and tools_list keep their original text.
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

const Compiler = struct {
    arena: Allocator,
    why: *[]const u8,

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

        var cluster: []const u8 = "";
        var authority: []const u8 = "";
        var timeout_ms: u32 = 10000;
        if (raw.upstream) |u| {
            if (u.cluster.len == 0) return self.fail("upstream.cluster: must not be empty", .{});
            cluster = u.cluster;
            authority = u.authority orelse u.cluster;
            timeout_ms = u.timeout_ms;
        } else if (raw.tools.len != 0) {
            return self.fail("upstream: required when tools are defined", .{});
        }

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
            t.* = try self.tool(rt, i);
            const gop = by_name.getOrPutAssumeCapacity(t.name);
            if (gop.found_existing) return self.fail("tools[{d}].name: duplicate tool name \"{s}\"", .{ i, t.name });
            gop.value_ptr.* = @intCast(i);
        }

        return .{
            .base_path = raw.base_path,
            .cluster = cluster,
            .authority = authority,
            .timeout_ms = timeout_ms,
            .max_request_bytes = raw.limits.max_request_bytes,
            .max_response_bytes = raw.limits.max_response_bytes,
            .tools_list_json = tools_list_json,
            .initialize_tail = init.bytes(),
            .tools = tools,
            .by_name = by_name,
        };
    }

    fn tool(self: *Compiler, rt: RawTool, i: usize) Error!Tool {
        if (rt.name.len == 0) return self.fail("tools[{d}].name: must not be empty", .{i});
        const args = try self.arena.alloc(Arg, rt.args.len);
        for (rt.args, args, 0..) |ra, *a, j| {
            if (ra.name.len == 0) return self.fail("tools[{d}].args[{d}].name: must not be empty", .{ i, j });
            a.* = .{ .name = ra.name, .type = ra.type, .required = ra.required, .default = ra.default };
        }

        const req = rt.request;
        if (req.method.len == 0) return self.fail("tools[{d}].request.method: must not be empty", .{i});
        for (req.method) |ch| if (!std.ascii.isAlphabetic(ch))
            return self.fail("tools[{d}].request.method: not an HTTP method", .{i});
        const method = try std.ascii.allocUpperString(self.arena, req.method);

        for (req.query, 0..) |q, j| {
            if (q.name.len == 0 or q.arg.len == 0)
                return self.fail("tools[{d}].request.query[{d}]: name and arg must not be empty", .{ i, j });
        }

        const headers = try self.arena.alloc(HeaderTemplate, req.headers.len);
        for (req.headers, headers, 0..) |rh, *h, j| {
            if (rh.name.len == 0 or rh.name[0] == ':')
                return self.fail("tools[{d}].request.headers[{d}].name: must be a regular header name", .{ i, j });
            // HTTP/2 and Envoy's header maps want lowercase names.
            h.* = .{
                .name = try std.ascii.allocLowerString(self.arena, rh.name),
                .value = try self.template(rh.value, "tools[{d}].request.headers[{d}].value", .{ i, j }),
            };
        }

        const body: ?Body = if (req.body) |rb| switch (rb.kind) {
            .template => .{ .template = .{
                .content_type = rb.content_type orelse "application/json",
                .template = try self.template(rb.template orelse
                    return self.fail("tools[{d}].request.body.template: required for kind template", .{i}), "tools[{d}].request.body.template", .{i}),
            } },
            .json_args => .{ .json_args = rb.args },
            .form_args => .{ .form_args = rb.args },
        } else null;

        var response: Response = .{};
        if (rt.response) |rr| {
            response = .{
                .body = if (rr.body) |b| try self.template(b, "tools[{d}].response.body", .{i}) else null,
                .prepend = rr.prepend orelse "",
                .append = rr.append orelse "",
                .error_body = if (rr.error_body) |b| try self.template(b, "tools[{d}].response.error_body", .{i}) else null,
                .structured = rr.structured,
            };
        }

        return .{
            .name = rt.name,
            .args = args,
            .method = method,
            .path = try self.template(req.path, "tools[{d}].request.path", .{i}),
            .query = req.query,
            .headers = headers,
            .body = body,
            .response = response,
        };
    }

    fn template(self: *Compiler, raw: []const RawPart, comptime where: []const u8, where_args: anytype) Error![]const tpl.Part {
        const parts = try self.arena.alloc(tpl.Part, raw.len);
        for (raw, parts, 0..) |rp, *p, k| {
            var kinds: u8 = 0;
            if (rp.lit) |s| {
                kinds += 1;
                p.* = .{ .lit = s };
            }
            if (rp.arg) |name| {
                kinds += 1;
                if (name.len == 0) return self.fail(where ++ "[{d}].arg: must not be empty", where_args ++ .{k});
                const path = try self.arena.alloc([]const u8, 1);
                path[0] = name;
                p.* = .{ .arg = .{ .path = path, .enc = rp.enc } };
            }
            if (rp.arg_path) |path| {
                kinds += 1;
                if (path.len == 0) return self.fail(where ++ "[{d}].arg_path: must not be empty", where_args ++ .{k});
                p.* = .{ .arg = .{ .path = path, .enc = rp.enc } };
            }
            if (rp.resp) |path| {
                kinds += 1;
                p.* = .{ .resp = .{ .path = path, .enc = rp.enc } };
            }
            if (rp.status) |on| {
                if (on) {
                    kinds += 1;
                    p.* = .{ .status = rp.enc };
                }
            }
            if (rp.resp_header) |name| {
                kinds += 1;
                p.* = .{ .resp_header = .{ .name = name, .enc = rp.enc } };
            }
            if (kinds != 1) return self.fail(where ++ "[{d}]: needs exactly one of lit, arg, arg_path, resp, status, resp_header", where_args ++ .{k});
        }
        return parts;
    }
};

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
    \\              {"name": "verbose", "type": "boolean", "default": false}],
    \\     "request": {"method": "get", "path": [{"lit": "/v1/pets/"}, {"arg": "id", "enc": "path"}, {"lit": "?x=1"}],
    \\                 "query": [{"name": "verbose", "arg": "verbose"}],
    \\                 "headers": [{"name": "X-Tenant", "value": [{"lit": "t-"}, {"arg_path": ["owner", "name"], "enc": "raw"}]}],
    \\                 "body": null},
    \\     "response": {"body": [{"resp": ["name"]}], "prepend": null, "append": null, "error_body": null, "structured": false, "later": 1}},
    \\    {"name": "addPet",
    \\     "request": {"method": "POST", "path": [{"lit": "/v1/pets"}],
    \\                 "body": {"kind": "json_args", "args": ["name", "tag"]}}}
    \\  ]
    \\}
;

test "parse the CONFIG.md example and compile it" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    var why: []const u8 = undefined;
    const c = try parse(arena_state.allocator(), example, &why);

    try testing.expectEqualStrings("/mcp/default/petstore", c.base_path);
    try testing.expectEqualStrings("mcpgw|default|petstore", c.cluster);
    try testing.expectEqualStrings("petstore.internal", c.authority);
    try testing.expectEqual(@as(u32, 5000), c.timeout_ms);
    try testing.expectEqual(@as(u32, 1000), c.max_request_bytes);
    try testing.expectEqual(@as(u32, 4194304), c.max_response_bytes);
    try testing.expectEqualStrings(
        \\{"tools":[{"name":"getPet","inputSchema":{"type":"object","properties":{"id":{"type":"integer","maximum":1e3}}}}]}
    , c.tools_list_json);
    try testing.expectEqualStrings(
        \\","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"petstore","version":"1.0.0","title":"Pet store"},"instructions":"Use \"getPet\"."}
    , c.initialize_tail);

    const t = c.findTool("getPet").?;
    try testing.expectEqualStrings("GET", t.method);
    try testing.expectEqual(@as(usize, 3), t.path.len);
    try testing.expectEqual(tpl.Enc.path, t.path[1].arg.enc);
    try testing.expectEqualStrings("x-tenant", t.headers[0].name);
    try testing.expectEqual(@as(usize, 2), t.headers[0].value[1].arg.path.len);
    try testing.expectEqual(ArgType.integer, t.args[0].type.?);
    try testing.expect(t.args[1].default.? == .bool);
    try testing.expect(t.body == null);
    try testing.expect(t.response.body != null);
    try testing.expectEqualStrings("", t.response.prepend);

    const add = c.findTool("addPet").?;
    try testing.expectEqual(@as(usize, 2), add.body.?.json_args.len);
    try testing.expect(c.findTool("nope") == null);
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
    try testing.expectEqual(@as(u32, 10000), c.timeout_ms);
    try testing.expectEqual(@as(usize, 0), c.tools.len);
    try testing.expectEqualStrings(
        \\","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"s","version":"1"}}
    , c.initialize_tail);
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

test "invalid configurations are rejected with a reason" {
    try expectInvalid("not json", "SyntaxError at line 1");
    try expectInvalid("{\"server\": {\"name\": \"s\", \"version\": \"1\"}}", "MissingField");
    try expectInvalid("{\"server\": {\"name\": \"s\", \"version\": \"1\"}, \"base_path\": \"mcp\"}", "base_path");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "tools": [
        \\ {"name": "a", "request": {"path": [{"lit": "/"}]}}]}
    , "upstream: required");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "upstream": {"cluster": "c"}, "tools": [
        \\ {"name": "a", "request": {"path": [{"lit": "/"}]}}, {"name": "a", "request": {"path": []}}]}
    , "duplicate tool name");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "upstream": {"cluster": "c"}, "tools": [
        \\ {"name": "a", "request": {"path": [{"lit": "/", "arg": "x"}]}}]}
    , "tools[0].request.path[0]: needs exactly one");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "upstream": {"cluster": "c"}, "tools": [
        \\ {"name": "a", "request": {"path": [{}]}}]}
    , "needs exactly one");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "upstream": {"cluster": "c"}, "tools": [
        \\ {"name": "a", "request": {"path": [{"arg": "x", "enc": "base64"}]}}]}
    , "InvalidEnumTag");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "upstream": {"cluster": "c"}, "tools": [
        \\ {"name": "a", "request": {"path": [], "body": {"kind": "template"}}}]}
    , "body.template: required");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "upstream": {"cluster": "c"}, "tools": [
        \\ {"name": "a", "request": {"path": [], "headers": [{"name": ":path", "value": []}]}}]}
    , "regular header name");
    try expectInvalid(
        \\{"server": {"name": "s", "version": "1"}, "base_path": "/m", "tools_list": []}
    , "tools_list: must be an object");
}
