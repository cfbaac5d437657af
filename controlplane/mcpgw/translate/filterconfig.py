"""Compile one registry server into the `mcp-server` filter's configuration.

The output follows `wasm-filters/mcp-server/CONFIG.md`. All template syntax is resolved
here: the filter receives literal pieces and argument or response-path references, and a
pre-rendered `tools/list` result it can splice into answers without building JSON per request.
"""

from __future__ import annotations

from typing import Any

from mcpgw.registry.model import McpServer, RequestTemplate, Tool, ToolArg
from mcpgw.registry.templates import Node, Ref, Text

DEFAULT_LIMITS = {"max_request_bytes": 1 << 20, "max_response_bytes": 4 << 20}
_PIPE_ENCODING = {"toJson": "json", "urlquery": "query"}


def cluster_name(server: McpServer) -> str:
    return f"mcpgw/{server.key}"


def upstream_authority(server: McpServer) -> str:
    backend = server.backend
    if backend.host_header:
        return backend.host_header
    first = backend.endpoints[0]
    default_port = 443 if backend.scheme == "https" else 80
    return first.host if first.port == default_port else str(first)


def filter_config(server: McpServer) -> dict[str, Any]:
    info: dict[str, Any] = {"name": server.key, "version": server.version}
    if server.title:
        info["title"] = server.title
    config: dict[str, Any] = {
        "server": info,
        "base_path": server.path,
        "upstream": {
            "cluster": cluster_name(server),
            "authority": upstream_authority(server),
            "timeout_ms": server.backend.timeout_ms,
        },
        "limits": DEFAULT_LIMITS,
        "tools_list": {"tools": [tool_descriptor(tool) for tool in server.tools]},
        "tools": [_tool(tool) for tool in server.tools],
    }
    if server.instructions:
        config["instructions"] = server.instructions
    return config


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


def _tool(tool: Tool) -> dict[str, Any]:
    args: list[dict[str, Any]] = []
    for arg in tool.args:
        entry: dict[str, Any] = {"name": arg.name, "type": arg.type, "required": arg.required}
        if arg.has_default:
            entry["default"] = arg.default
        args.append(entry)
    response = tool.response
    return {
        "name": tool.name,
        "args": args,
        "request": _request(tool.request, tool.args),
        "response": {
            "body": _template(response.body, default_encoding="raw") if response.body is not None else None,
            "prepend": response.prepend,
            "append": response.append,
            "error_body": _template(tool.error_response, default_encoding="raw")
            if tool.error_response is not None
            else None,
            "structured": tool.output_schema is not None,
        },
    }


def _request(request: RequestTemplate, args: tuple[ToolArg, ...]) -> dict[str, Any]:
    path_part = request.url[: request.url_path_nodes]
    query_part = request.url[request.url_path_nodes :]
    headers = [
        {"name": name, "value": _template(nodes, default_encoding="raw")} for name, nodes in request.headers
    ]
    headers += [
        {"name": arg.name.lower(), "value": [{"arg": arg.name}]} for arg in args if arg.position == "header"
    ]
    templated = _referenced_args(request)
    # Arguments not placed by a template go where their position, or the body mode, says.
    free = [a for a in args if a.name not in templated and a.position not in ("path", "header")]
    query = [
        a.name
        for a in free
        if a.position == "query" or (request.body_mode == "url_args" and a.position is None)
    ]
    body_args = [a.name for a in free if a.position in ("body", None)]
    return {
        "method": request.method,
        "path": _template(path_part, default_encoding="path")
        + _template(query_part, default_encoding="query"),
        "query": [{"name": name, "arg": name} for name in query],
        "headers": [h for h in headers if h["name"] != "content-type"],
        "body": _body(request, body_args, _content_type(request)),
    }


def _content_type(request: RequestTemplate) -> str | None:
    for name, nodes in request.headers:
        if name == "content-type" and all(isinstance(n, Text) for n in nodes):
            return "".join(n.value for n in nodes if isinstance(n, Text))
    return None


def _body(request: RequestTemplate, body_args: list[str], content_type: str | None) -> dict[str, Any] | None:
    if request.body_mode == "template" and request.body is not None:
        return {
            "kind": "template",
            "content_type": content_type or "application/json",
            "template": _template(request.body, default_encoding="raw"),
        }
    if request.body_mode == "json_args":
        return {"kind": "json_args", "args": body_args}
    if request.body_mode == "form_args":
        return {"kind": "form_args", "args": body_args}
    return None


def _referenced_args(request: RequestTemplate) -> set[str]:
    nodes: list[Node] = [*request.url, *(request.body or ())]
    for _, header_nodes in request.headers:
        nodes.extend(header_nodes)
    return {n.path[0] for n in nodes if isinstance(n, Ref) and n.root == "args"}


def _template(nodes: tuple[Node, ...], *, default_encoding: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for node in nodes:
        if isinstance(node, Text):
            parts.append({"lit": node.value})
            continue
        encoding = _PIPE_ENCODING[node.pipes[-1]] if node.pipes else default_encoding
        if node.root == "args":
            ref: dict[str, Any] = (
                {"arg": node.path[0]} if len(node.path) == 1 else {"arg_path": list(node.path)}
            )
        else:
            ref = {"resp": list(node.path)}
        parts.append({**ref, "enc": encoding})
    return parts
