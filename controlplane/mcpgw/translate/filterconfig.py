"""Compile one registry server into the `mcp-server` filter's configuration.

The output follows `wasm-filters/mcp-server/CONFIG.md`. All template syntax is resolved here:
the filter receives an expression tree (literals, argument/response/item references, function
calls, if and range), resolved credentials, and a pre-rendered `tools/list` result it can splice
into answers without building JSON per request.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from mcpgw import observability
from mcpgw.broker.bridge import BRIDGE_PATH
from mcpgw.registry import bodyenc, templates
from mcpgw.registry.model import (
    Endpoint,
    McpServer,
    RegistrySnapshot,
    RequestTemplate,
    Secret,
    SecurityScheme,
    Tool,
    ToolArg,
)
from mcpgw.registry.tls import ClientTls
from mcpgw.registry.tools import referenced_args
from mcpgw.sessions.keys import BROKER_CLUSTER, SessionSettings, encode_secret
from mcpgw.translate.authconfig import auth_config

# The version of the configuration contract (wasm-filters/mcp-server/CONFIG.md) written here, as
# `schema` in every configuration. The filter refuses any other (config.zig `schema_version`), and
# the control plane refuses to start on a plugin that reads another (`FilterCheck.schema`).
SCHEMA = 1


def cluster_name(server: McpServer) -> str:
    return f"mcpgw/{server.key}"


def upstream_authority(server: McpServer, endpoint: Endpoint | None = None) -> str:
    """`:authority` toward the backend: its `host`, else the endpoint (the first by default)."""
    backend = server.backend
    if backend.host_header:
        return backend.host_header
    chosen = endpoint or backend.endpoints[0]
    host = f"[{chosen.host}]" if ":" in chosen.host else chosen.host
    default_port = 443 if backend.scheme == "https" else 80
    return host if chosen.port == default_port else f"{host}:{chosen.port}"


def host_cluster_name(server: McpServer, index: int) -> str:
    """A `type: mcp` server has one cluster per upstream host, so the filter can pin a session to one."""
    return f"{cluster_name(server)}|h{index}"


def upstream(server: McpServer) -> dict[str, Any]:
    return {
        "cluster": cluster_name(server),
        "authority": upstream_authority(server),
        "timeout_ms": server.backend.timeout_ms,
    }


def filter_config(
    server: McpServer, snapshot: RegistrySnapshot, secrets: Mapping[Secret, str], injected: bool = False
) -> dict[str, Any]:
    """The configuration of `server`'s filter; `secrets` holds the resolved value of every credential.

    `injected`: credentials that Envoy injects on the backend cluster (`injected_credential`) are
    left out (`auth: null`), so the filter configuration, which `/config_dump` prints whole, no
    longer holds them.
    """
    served = snapshot.served_tools(server)
    # Owners whose backend cluster injects their credential: their tools carry no `auth` here.
    moved = (
        {o.key for o in {o.key: o for o, _ in served}.values() if injected_credential(o, secrets)}
        if injected
        else set()
    )
    info: dict[str, Any] = {"name": server.key, "version": server.version}
    if server.title:
        info["title"] = server.title
    # A server made only of included tools has no backend of its own.
    home = server if server.backend.endpoints else (served[0][0] if served else server)
    config: dict[str, Any] = {
        "schema": SCHEMA,
        "server": info,
        "base_path": server.path,
        "limits": {
            "max_request_bytes": server.limits.max_request_bytes,
            "max_response_bytes": server.limits.max_response_bytes,
            "max_json_depth": server.limits.max_json_depth,
        },
        "tools_list": {"tools": [tool_descriptor(tool) for _, tool in served]},
        "tools": [
            _tool(owner, tool, secrets, own=owner is home, injected=owner.key in moved)
            for owner, tool in served
        ],
    }
    if home.backend.endpoints and server.mcp is None:
        config["upstream"] = upstream(home)
    if server.mcp is not None:
        config["mcp_upstream"] = mcp_upstream(server, secrets)
        if injected and injected_credential(server, secrets):
            config["mcp_upstream"]["auth"] = None
    if server.instructions:
        config["instructions"] = server.instructions
    if server.allowed_origins:
        config["allowed_origins"] = list(server.allowed_origins)
    if server.page_size:
        config["page_size"] = server.page_size
    auth = auth_config(server, snapshot)
    if auth is not None:
        config["auth"] = auth
    config["observability"] = observability.filter_block(
        server.namespace, server.name, log_arguments=server.observability.log_arguments
    )
    return config


def sessions_config(sessions: SessionSettings | None) -> dict[str, Any]:
    """The `sessions` and `broker` blocks (CONTRACT A), the same for every server; empty without sessions.

    `keys[0]` signs new sessions, every listed key verifies until its `accept_until_ms`.
    The HTTP+SSE transport needs sessions, so the broker is configured exactly when they are.
    """
    if sessions is None:
        return {}
    return {
        "sessions": {
            "keys": [
                {"id": key.id, "secret": encode_secret(key.secret), "accept_until_ms": key.accept_until_ms}
                for key in sessions.keys
            ],
            "ttl_ms": sessions.ttl_ms,
            "max_ended": sessions.max_ended,
        },
        "broker": {"cluster": sessions.broker_cluster, "timeout_ms": sessions.broker_timeout_ms},
    }


def tool_descriptor(tool: Tool) -> dict[str, Any]:
    """The tool as MCP clients see it in `tools/list`."""
    descriptor: dict[str, Any] = {
        "name": tool.name,
        "description": tool.description,
        "inputSchema": input_schema(tool.args),
    }
    if tool.output_schema is not None:
        descriptor["outputSchema"] = tool.output_schema
    return descriptor


def input_schema(args: tuple[ToolArg, ...]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for arg in args:
        schema: dict[str, Any] = {"type": arg.type}
        if arg.description:
            schema["description"] = arg.description
        if arg.enum is not None:
            schema["enum"] = list(arg.enum)
        if arg.items is not None:
            schema["items"] = arg.items
        if arg.properties is not None:
            schema["properties"] = arg.properties
        if arg.has_default:
            schema["default"] = arg.default
        properties[arg.name] = schema
    schema = {"type": "object", "properties": properties}
    required = [arg.name for arg in args if arg.required]
    if required:
        schema["required"] = required
    return schema


def _arg(arg: ToolArg) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": arg.name, "type": arg.type, "required": arg.required}
    if arg.has_default:
        entry["default"] = arg.default
    if arg.enum is not None:
        entry["enum"] = list(arg.enum)
    if arg.items is not None:
        items: dict[str, Any] = {"type": arg.items.get("type", "string")}
        if isinstance(arg.items.get("enum"), list):
            items["enum"] = arg.items["enum"]
        entry["items"] = items
    return entry


def _tool(
    owner: McpServer, tool: Tool, secrets: Mapping[Secret, str], own: bool, injected: bool = False
) -> dict[str, Any]:
    response = tool.response
    compiled: dict[str, Any] = {
        "name": tool.name,
        "args": [_arg(arg) for arg in tool.args],
        "request": _request(owner, tool, secrets),
        "response": {
            "body": _response_template(owner, response.body),
            "prepend": response.prepend,
            "append": response.append,
            "error_body": _response_template(owner, tool.error_response),
            "structured": tool.output_schema is not None,
        },
    }
    if injected:
        compiled["request"]["auth"] = None
    if not own:
        compiled["upstream"] = upstream(owner)
    return compiled


def _response_template(
    owner: McpServer, nodes: tuple[templates.Node, ...] | None
) -> list[dict[str, Any]] | None:
    if nodes is None:
        return None
    return compile_template(nodes, templates.RESPONSE, owner.config, "raw")


def _request(owner: McpServer, tool: Tool, secrets: Mapping[Secret, str]) -> dict[str, Any]:
    request = tool.request
    args = tool.args
    config = owner.config
    path_part = request.url[: request.url_path_nodes]
    query_part = request.url[request.url_path_nodes :]
    headers = [
        {"name": name, "value": compile_template(nodes, templates.REQUEST, config, "raw")}
        for name, nodes in request.headers
    ]
    headers += [
        {"name": arg.name.lower(), "value": [{"out": {"args": [arg.name]}, "enc": "raw"}]}
        for arg in args
        if arg.position == "header"
    ]
    templated = _templated_args(request)
    # Arguments not placed by a template go where their position, or the body mode, says.
    free = [a for a in args if a.name not in templated and a.position not in ("path", "header", "cookie")]
    query = [
        a.name
        for a in free
        if a.position == "query" or (request.body_mode == "url_args" and a.position is None)
    ]
    body_args = [a.name for a in free if a.position in ("body", None)]
    return {
        "method": request.method,
        "path": compile_template(path_part, templates.REQUEST, config, "path")
        + compile_template(query_part, templates.REQUEST, config, "query"),
        "query": [{"name": name, "arg": name} for name in query],
        "headers": [h for h in headers if h["name"] != "content-type"],
        "cookies": [{"name": a.name, "arg": a.name} for a in args if a.position == "cookie"],
        "body": _body(request, body_args, _content_type(request), config),
        "auth": _auth(owner, tool, secrets),
    }


def _templated_args(request: RequestTemplate) -> set[str]:
    names = referenced_args(request.url) | referenced_args(request.body or ())
    for _, nodes in request.headers:
        names |= referenced_args(nodes)
    return names


def _content_type(request: RequestTemplate) -> str | None:
    return bodyenc.content_type(request.headers)


def _body(
    request: RequestTemplate, body_args: list[str], content_type: str | None, config: Mapping[str, str]
) -> dict[str, Any] | None:
    if request.body_mode == "template" and request.body is not None:
        return {
            "kind": "template",
            "content_type": content_type or "application/json",
            "template": compile_template(
                request.body,
                templates.REQUEST,
                config,
                "raw",
                bodyenc.output_encodings(request.body, request.headers, request.raw_body),
            ),
        }
    if request.body_mode == "json_args":
        return {"kind": "json_args", "args": body_args}
    if request.body_mode == "form_args":
        return {"kind": "form_args", "args": body_args}
    return None


def _location(scheme: SecurityScheme) -> dict[str, str]:
    return {"in": scheme.location, "name": scheme.name, "prefix": scheme.prefix}


def _auth(owner: McpServer, tool: Tool, secrets: Mapping[Secret, str]) -> dict[str, Any] | None:
    upstream_security, client = tool.request.security, tool.client_security
    if upstream_security is None and client is None:
        return None
    schemes = {s.id: s for s in owner.security_schemes}
    target = schemes[upstream_security.scheme_id if upstream_security else client.scheme_id]  # type: ignore[union-attr]
    if client is not None and client.passthrough:
        return {
            "static": [],
            "passthrough": {"from": _location(schemes[client.scheme_id]), "to": _location(target)},
        }
    secret = (upstream_security.credential if upstream_security else None) or target.default_credential
    assert secret is not None, "validation guarantees a credential without passthrough"
    return {"static": [_static_credential(target, secrets[secret])], "passthrough": None}


def injected_credential(server: McpServer, secrets: Mapping[Secret, str]) -> dict[str, str] | None:
    """The header credential that every request to `server`'s backend cluster(s) carries, or None.

    Only such a credential can leave the filter configuration: Envoy adds it on the cluster
    itself (a `credential_injector` upstream filter reading an SDS secret, which `/config_dump`
    redacts). That is a `type: mcp` server's static header credential (not over HTTP+SSE: those
    calls go through the broker's cluster, shared by all servers), or the static header
    credential of a REST server when every one of its tools carries the same one. Credentials
    in the query, passthrough, and tools whose credentials differ (or some have none) stay in
    the filter configuration: the filter chooses them per call.
    """
    if server.mcp is not None:
        if server.mcp.transport == "sse":
            return None
        auths = [_mcp_auth(server, secrets)]
    elif server.backend.endpoints and server.tools:
        auths = [_auth(server, tool, secrets) for tool in server.tools]
    else:
        return None
    first = auths[0]
    if first is None or first["passthrough"] is not None or len(first["static"]) != 1:
        return None
    credential = first["static"][0]
    if credential["in"] != "header" or any(auth != first for auth in auths[1:]):
        return None
    return {"name": credential["name"], "value": credential["value"]}


def _static_credential(scheme: SecurityScheme, value: str) -> dict[str, str]:
    """A registry credential in its final form, e.g. `Basic dXNlcjpwYXNz` in `authorization`."""
    if scheme.scheme == "basic":
        value = base64.b64encode(value.encode()).decode()
    return {"in": scheme.location, "name": scheme.name, "value": scheme.prefix + value}


# --- type: mcp ---------------------------------------------------------------------------


def mcp_upstream(server: McpServer, secrets: Mapping[Secret, str]) -> dict[str, Any]:
    """The `mcp_upstream` section of a `type: mcp` server (CONFIG.md): hosts, allow-list, overrides, auth.

    An HTTP+SSE upstream (`transport: sse`) is reached through the session broker's bridge: every
    host calls the broker's cluster at the bridge's path and names its own SSE URL (`sse_url`).
    """
    mcp = server.mcp
    assert mcp is not None
    if mcp.transport == "sse":
        hosts = [
            {
                "cluster": BROKER_CLUSTER,
                "authority": upstream_authority(server, endpoint),
                "sse_url": sse_url(server, endpoint, secrets),
            }
            for endpoint in server.backend.endpoints
        ]
        path = BRIDGE_PATH
    else:
        hosts = [
            {"cluster": host_cluster_name(server, index), "authority": upstream_authority(server, endpoint)}
            for index, endpoint in enumerate(server.backend.endpoints)
        ]
        path = mcp.path
    section: dict[str, Any] = {
        "hosts": hosts,
        "path": path,
        "timeout_ms": server.backend.timeout_ms,
        "tools": [
            {
                "name": o.name,
                **({"description": o.description} if o.description is not None else {}),
                **({"title": o.title} if o.title is not None else {}),
            }
            for o in mcp.overrides
        ],
        "auth": _mcp_auth(server, secrets),
    }
    if mcp.allow_tools is not None:
        section["allow_tools"] = list(mcp.allow_tools)
    return section


def sse_url(server: McpServer, endpoint: Endpoint, secrets: Mapping[Secret, str] | None = None) -> str:
    """An HTTP+SSE upstream host's stream URL: `backend.scheme`, the endpoint, the server's `path`;
    `backend.tls` settings in its fragment, for the bridge (`ClientTls.fragment`)."""
    assert server.mcp is not None
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    url = f"{server.backend.scheme}://{host}:{endpoint.port}{server.mcp.path}"
    if server.backend.tls is None:
        return url
    fragment = ClientTls.of(server.backend, secrets or {}).fragment()
    return f"{url}#{fragment}" if fragment else url


def _mcp_auth(server: McpServer, secrets: Mapping[Secret, str]) -> dict[str, Any] | None:
    mcp = server.mcp
    assert mcp is not None
    schemes = {s.id: s for s in server.security_schemes}
    if mcp.client_security is not None:
        client = schemes[mcp.client_security.scheme_id]
        target = schemes[mcp.security.scheme_id] if mcp.security else client
        return {"static": [], "passthrough": {"from": _location(client), "to": _location(target)}}
    if mcp.security is None:
        return None
    scheme = schemes[mcp.security.scheme_id]
    secret = mcp.security.credential or scheme.default_credential
    assert secret is not None, "validation guarantees a credential without passthrough"
    return {"static": [_static_credential(scheme, secrets[secret])], "passthrough": None}


# --- templates -----------------------------------------------------------------------------


def compile_template(
    nodes: tuple[templates.Node, ...],
    kind: str,
    config: Mapping[str, str],
    encoding: str,
    encodings: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """The filter's form of a parsed template.

    `encoding` applies to every printed value, unless `encodings` (`id(output node) → enc`, from
    `bodyenc.encodings`) names that output's own context.
    """
    return [_node(node, kind, config, encoding, encodings or {}, depth=0) for node in nodes]


def _node(
    node: templates.Node,
    kind: str,
    config: Mapping[str, str],
    encoding: str,
    encodings: Mapping[int, str],
    depth: int,
) -> dict[str, Any]:
    if isinstance(node, templates.Text):
        return {"lit": node.value}
    if isinstance(node, templates.Output):
        # urlquery output is already escaped: encoding it again would turn '+' into '%2B'.
        already_escaped = isinstance(node.expr, templates.Call) and node.expr.name == "urlquery"
        enc = encodings.get(id(node), "raw" if already_escaped else encoding)
        return {"out": _expr(node.expr, kind, config, depth), "enc": enc}
    if isinstance(node, templates.If):
        return {
            "if": _expr(node.cond, kind, config, depth),
            "then": [_node(n, kind, config, encoding, encodings, depth) for n in node.then],
            "else": [_node(n, kind, config, encoding, encodings, depth) for n in node.otherwise],
        }
    return {
        "range": _expr(node.over, kind, config, depth),
        "do": [_node(n, kind, config, encoding, encodings, depth + 1) for n in node.body],
        "else": [_node(n, kind, config, encoding, encodings, depth) for n in node.otherwise],
    }


def _expr(expr: templates.Expr, kind: str, config: Mapping[str, str], depth: int) -> dict[str, Any]:
    if isinstance(expr, templates.Const):
        return {"const": expr.value}
    if isinstance(expr, templates.Call):
        return {"fn": expr.name, "args": [_expr(a, kind, config, depth) for a in expr.args]}
    reference = templates.classify(expr, kind, in_range=depth > 0)
    if reference.source == "config":
        return {"const": config[reference.path[0]]}
    if reference.source == "status":
        return {"status": True}
    if reference.source == "header":
        return {"header": reference.path[0]}
    return {reference.source: list(reference.path)}
