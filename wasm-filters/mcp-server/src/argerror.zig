//! The one place that decides how a `tools/call` whose arguments fail the
//! tool's checks is answered, by the revision the request speaks.
//!
//! Up to 2025-06-18 the tools page lists "Invalid arguments" among the
//! protocol errors: a JSON-RPC error -32602. From 2025-11-25 on (SEP-1303;
//! 2026-07-28 keeps it) "Input validation errors (e.g., date in wrong format,
//! value out of range)" are tool execution errors: a result with `isError:
//! true` whose text the client hands to the model, so it can correct its
//! call. Protocol errors there are only an unknown tool and a request that
//! fails the `CallToolRequest` schema (params, name, arguments not an
//! object); those stay -32602 in every revision and do not come here.
//!
//! Argument failures are: a missing required argument, a value of the wrong
//! type, outside `enum`, a number out of range, a value that would add a
//! `.`, `..` or empty segment to the request path, and a value a header
//! cannot carry. The message is the same in both forms and names only what
//! the client sent, never the backend or the configuration's internals.

const std = @import("std");
const Allocator = std.mem.Allocator;
const mcp = @import("mcp.zig");
const jsonw = @import("jsonw.zig");

/// The first revision whose tools page makes input validation errors tool
/// execution errors (SEP-1303).
pub const first_revision = "2025-11-25";

/// A revision spoken by a client that names none: Streamable HTTP assumes
/// 2025-03-26 when `MCP-Protocol-Version` is absent.
pub const assumed_revision = "2025-03-26";

pub const Form = enum {
    /// JSON-RPC error -32602: HTTP 200, or 400 in 2026-07-28.
    protocol_error,
    /// `result: {content: [{type: "text", text}], isError: true}`, HTTP 200.
    tool_result,
};

/// The form for `revision` (a `YYYY-MM-DD` the filter serves): revisions
/// are dates, so they order as text.
pub fn formFor(revision: []const u8) Form {
    return if (std.mem.order(u8, revision, first_revision) == .lt) .protocol_error else .tool_result;
}

/// The revision of a `tools/call`: 2026-07-28 for a stateless request, else
/// the `MCP-Protocol-Version` header, else the version the request's
/// session was opened with, else the assumed 2025-03-26. (An HTTP+SSE
/// session is minted before its `initialize`, with 2024-11-05.)
pub fn revisionOf(client: *const mcp.Client, is_modern: bool) []const u8 {
    if (is_modern) return mcp.modern_version;
    return client.protocol_version orelse client.session_version orelse assumed_revision;
}

/// How one `tools/call` answers an argument failure.
pub const Answer = struct {
    /// The request id as JSON text.
    id: []const u8,
    form: Form,
    /// 2026-07-28: results carry `resultType`, protocol errors are HTTP 400.
    modern: bool,

    pub fn init(id: []const u8, client: *const mcp.Client, is_modern: bool) Answer {
        return .{ .id = id, .form = formFor(revisionOf(client, is_modern)), .modern = is_modern };
    }

    /// The answer carrying the message `fmt` / `args`.
    pub fn fail(a: Answer, arena: Allocator, comptime fmt: []const u8, args: anytype) Allocator.Error!mcp.Outcome {
        return a.failWith(arena, try jsonw.allocPrint(arena, fmt, args));
    }

    pub fn failWith(a: Answer, arena: Allocator, message: []const u8) Allocator.Error!mcp.Outcome {
        return .{ .reply = switch (a.form) {
            .protocol_error => .{
                .status = if (a.modern) 400 else 200,
                .body = try mcp.errorBody(arena, a.id, mcp.invalid_params, message),
            },
            .tool_result => .{ .status = 200, .body = try mcp.resultBody(arena, a.id, message, true, null, a.modern) },
        } };
    }
};

// ---------------------------------------------------------------- tests

const testing = std.testing;

test "the form follows the revision: -32602 up to 2025-06-18, isError from 2025-11-25" {
    try testing.expectEqual(Form.protocol_error, formFor("2024-11-05"));
    try testing.expectEqual(Form.protocol_error, formFor("2025-03-26"));
    try testing.expectEqual(Form.protocol_error, formFor("2025-06-18"));
    try testing.expectEqual(Form.tool_result, formFor("2025-11-25"));
    try testing.expectEqual(Form.tool_result, formFor("2026-07-28"));
}

test "the revision: stateless, then the header, then the session, then 2025-03-26" {
    try testing.expectEqualStrings("2026-07-28", revisionOf(&.{ .protocol_version = "2025-06-18" }, true));
    try testing.expectEqualStrings("2025-06-18", revisionOf(&.{ .protocol_version = "2025-06-18", .session_version = "2025-11-25" }, false));
    try testing.expectEqualStrings("2025-11-25", revisionOf(&.{ .session_version = "2025-11-25" }, false));
    try testing.expectEqualStrings("2025-03-26", revisionOf(&.{}, false));
}

test "both forms carry the same message; only the protocol error of 2026-07-28 is HTTP 400" {
    var state = std.heap.ArenaAllocator.init(testing.allocator);
    defer state.deinit();
    const arena = state.allocator();
    const cases = [_]struct { form: Form, modern: bool, status: u32, body: []const u8 }{
        .{ .form = .protocol_error, .modern = false, .status = 200, .body = 
        \\{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"argument n: expected \"integer\""}}
        },
        .{ .form = .protocol_error, .modern = true, .status = 400, .body = 
        \\{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"argument n: expected \"integer\""}}
        },
        .{ .form = .tool_result, .modern = false, .status = 200, .body = 
        \\{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"argument n: expected \"integer\""}],"isError":true}}
        },
        .{ .form = .tool_result, .modern = true, .status = 200, .body = 
        \\{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"argument n: expected \"integer\""}],"isError":true,"resultType":"complete"}}
        },
    };
    for (cases) |c| {
        const a = Answer{ .id = "3", .form = c.form, .modern = c.modern };
        const o = try a.fail(arena, "argument {s}: expected \"{s}\"", .{ "n", "integer" });
        try testing.expectEqual(c.status, o.reply.status);
        try testing.expectEqualStrings(c.body, o.reply.body);
    }
}
