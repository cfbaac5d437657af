//! Root for the native unit tests: every module without host calls in its
//! tests, each counted once. `python -m ziglang test src/tests.zig`.

test {
    _ = @import("jsonw.zig");
    _ = @import("value.zig");
    _ = @import("store.zig");
    _ = @import("template.zig");
    _ = @import("config.zig");
    _ = @import("mcp.zig");
    _ = @import("argerror.zig");
    _ = @import("cors.zig");
    _ = @import("proxy.zig");
    _ = @import("proxywasm.zig");
    _ = @import("config_mem.zig");
    _ = @import("session.zig");
    _ = @import("jwtidentity.zig");
    _ = @import("check.zig");
    _ = @import("auth.zig");
    _ = @import("metrics.zig");
    _ = @import("tracecontext.zig");
    _ = @import("fuzz.zig");
}
