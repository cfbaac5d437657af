"""Validate what a `type: mcp` server document says about its upstream MCP server.

Such a server proxies to an MCP server the operator may not own: the upstream defines the tools,
the registry narrows them (`allowTools`), rewrites what clients read about them (`tools:` with
`description` / `title` only) and says how the gateway authenticates to the upstream.
"""

from __future__ import annotations

import re
from typing import Any, cast

from mcpgw.registry.model import McpUpstream, SecurityScheme, ToolOverride
from mcpgw.registry.reader import Reader, join, kind
from mcpgw.registry.tools import TOOL_FIELDS, TOOL_NAME, ToolContext, passthrough_security, upstream_security

TRANSPORTS = ("streamable-http", "sse")
# The upstream's MCP endpoint by default: the Streamable HTTP endpoint, or the SSE stream's URL.
DEFAULT_PATHS = {"streamable-http": "/mcp", "sse": "/sse"}
# Visible ASCII without '#': the path (and optional query) the upstream serves MCP on.
_PATH = re.compile(r"^/[!-\"$-~]*$")
_OVERRIDE_FIELDS = {"name", "description", "title"}
# Tool fields of REST servers: meaningless when the upstream defines the tool.
_REST_TOOL_FIELDS = TOOL_FIELDS - _OVERRIDE_FIELDS
# Server fields only `type: mcp` servers have.
MCP_ONLY_FIELDS = {"path", "transport", "security", "upstreamSecurity"}
# Server fields of REST servers that a `type: mcp` server cannot honour, and why.
NOT_FOR_MCP = {
    "config": "there are no templates to fill in: the upstream MCP server defines its tools",
    "include": "a type: mcp server serves its upstream's tools only",
    "pageSize": "the upstream MCP server pages tools/list itself",
    "instructions": "the upstream's initialize answer carries its own instructions",
    "version": "the upstream's initialize answer carries its own serverInfo",
    "title": "the upstream's initialize answer carries its own serverInfo",
}


def parse_mcp_upstream(r: Reader, data: dict[str, Any], schemes: list[SecurityScheme]) -> McpUpstream:
    context = ToolContext({}, {s.id: s for s in schemes})
    transport = data.get("transport", "streamable-http")
    if transport not in TRANSPORTS:
        r.fail("transport", f"must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        transport = "streamable-http"
    default_path = DEFAULT_PATHS[transport]
    path = r.string(
        data, "path", "", default=default_path, pattern=_PATH, hint=f"an absolute path like {default_path!r}"
    )
    backend = data.get("backend")
    if transport == "sse" and isinstance(backend, dict) and "host" in backend:
        # The broker connects to the endpoints itself (not through Envoy's clusters), by their
        # own names: another Host / TLS name would need a resolver override it does not have.
        r.fail(
            "backend.host",
            "not for transport: sse: the session broker connects to the endpoints by their own "
            "names; put the DNS name in backend.endpoints (or the certificate's in backend.tls.serverName)",
        )
    tls = backend.get("tls") if isinstance(backend, dict) else None
    if transport == "sse" and isinstance(tls, dict):
        # The broker's bridge learns the upstream's URL (and its public TLS settings) from the
        # filter; a private key would have to travel the same way, into every Envoy's config.
        for key in ("clientCertificate", "clientKey"):
            if key in tls:
                r.fail(
                    f"backend.tls.{key}",
                    "not for transport: sse: the session broker connects to the upstream itself "
                    "and holds no client certificate (use transport: streamable-http for mTLS)",
                )
    allow = _allow_tools(r, data.get("allowTools"))
    overrides = _overrides(r, data.get("tools"), allow)
    security = upstream_security(r, data.get("upstreamSecurity"), "upstreamSecurity", context)
    client = None
    if "security" in data:
        target = security.scheme_id if security else None
        client = passthrough_security(r, data["security"], "security", context, target)
    elif security is not None:
        scheme = context.schemes.get(security.scheme_id)
        if scheme is not None and security.credential is None and scheme.default_credential is None:
            r.fail(
                "upstreamSecurity",
                f"no credential: set defaultCredential on scheme {scheme.id!r}, a credential here, "
                "or security: {id, passthrough: true} to forward the client's own",
            )
    return McpUpstream(
        path=path or default_path,
        transport=cast(Any, transport),
        allow_tools=allow,
        overrides=overrides,
        security=security,
        client_security=client,
    )


def _allow_tools(r: Reader, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        r.fail("allowTools", f"must be a list of tool names, got {kind(value)}")
        return None
    names: list[str] = []
    for index, item in enumerate(value):
        path = join("allowTools", index)
        if not isinstance(item, str) or not TOOL_NAME.fullmatch(item):
            r.fail(path, f"{item!r} is not a tool name (letters, digits, '_', '-', '.', at most 128)")
        elif item in names:
            r.fail(path, f"duplicate tool name {item!r}")
        else:
            names.append(item)
    return tuple(names)


def _overrides(r: Reader, value: Any, allow: tuple[str, ...] | None) -> tuple[ToolOverride, ...]:
    if value is None:
        return ()
    overrides: list[ToolOverride] = []
    seen: dict[str, str] = {}
    for path, data in r.mappings(value, "tools", "{name, description, title}"):
        rest_fields = sorted(data.keys() & _REST_TOOL_FIELDS)
        for key in rest_fields:
            r.fail(
                join(path, key),
                "not for a type: mcp server: the upstream MCP server defines its tools; "
                "only description and title can be overridden",
            )
        r.only(data, path, _OVERRIDE_FIELDS | _REST_TOOL_FIELDS)
        name = r.string(data, "name", path, required=True, pattern=TOOL_NAME, hint="a tool name")
        description = r.string(data, "description", path)
        title = r.string(data, "title", path)
        if name is None:
            continue
        if name in seen:
            r.fail(join(path, "name"), f"duplicate tool name {name!r} (also {seen[name]})")
            continue
        seen[name] = path
        if allow is not None and name not in allow:
            r.fail(join(path, "name"), f"{name!r} is not in allowTools, so it is never served")
        if description is None and title is None:
            if not rest_fields:
                r.fail(path, "nothing to override: set description and/or title")
            continue
        overrides.append(ToolOverride(name, description, title))
    return tuple(overrides)
