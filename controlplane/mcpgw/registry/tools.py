"""Validate the tools of a server document (Higress REST-to-MCP format) into the model."""

from __future__ import annotations

import re
from typing import Any, cast

from mcpgw.registry import bodyenc, templates
from mcpgw.registry.headers import header_name_problem, value_problem
from mcpgw.registry.model import (
    ArgPosition,
    ArgType,
    BodyMode,
    ClientSecurity,
    RequestTemplate,
    ResponseTemplate,
    SecurityScheme,
    Tool,
    ToolArg,
    UpstreamSecurity,
)
from mcpgw.registry.reader import Reader, join, kind

TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
ARG_TYPES: tuple[ArgType, ...] = ("string", "number", "integer", "boolean", "array", "object")
ARG_POSITIONS: tuple[ArgPosition, ...] = ("query", "path", "header", "cookie", "body")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# Built from the `position: cookie` arguments: a template would compete with them.
_COOKIE = "cookie"
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}
TOOL_FIELDS = {
    "name",
    "description",
    "args",
    "requestTemplate",
    "responseTemplate",
    "errorResponseTemplate",
    "outputSchema",
    "security",
}
_ARG_FIELDS = {
    "name",
    "description",
    "type",
    "required",
    "default",
    "enum",
    "items",
    "properties",
    "position",
}
_REQUEST_FIELDS = {
    "url",
    "method",
    "headers",
    "body",
    "argsToJsonBody",
    "argsToUrlParam",
    "argsToFormBody",
    "rawBody",
    "security",
}
_BODY_MODES: dict[str, BodyMode] = {
    "argsToJsonBody": "json_args",
    "argsToUrlParam": "url_args",
    "argsToFormBody": "form_args",
}


class ToolContext:
    """What a tool may refer to: the server's config values and security schemes."""

    def __init__(self, config: dict[str, str], schemes: dict[str, SecurityScheme]) -> None:
        self.config = config
        self.schemes = schemes


def parse_tools(r: Reader, value: Any, context: ToolContext) -> list[Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        r.fail("tools", f"must be a list, got {kind(value)}")
        return []
    tools: list[Tool] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        path = join("tools", index)
        tool = _tool(r, item, path, context)
        if tool is None:
            continue
        if tool.name in seen:
            r.fail(join(path, "name"), f"duplicate tool name {tool.name!r} (also tools[{seen[tool.name]}])")
            continue
        seen[tool.name] = index
        tools.append(tool)
    return tools


def _tool(r: Reader, value: Any, path: str, context: ToolContext) -> Tool | None:
    data = r.mapping(value, path)
    if data is None:
        return None
    before = len(r.problems)
    r.only(data, path, TOOL_FIELDS)
    hint = "letters, digits, '_', '-', '.', at most 128"
    name = r.string(data, "name", path, required=True, pattern=TOOL_NAME, hint=hint)
    description = r.string(data, "description", path, default="") or ""
    args = _args(r, data.get("args", []), join(path, "args"))
    request = _request(r, data.get("requestTemplate"), join(path, "requestTemplate"), args, context)
    response = _response(r, data.get("responseTemplate"), join(path, "responseTemplate"), context)
    error_response = None
    if "errorResponseTemplate" in data:
        source = data["errorResponseTemplate"]
        if isinstance(source, str):
            error_path = join(path, "errorResponseTemplate")
            error_response = r.template(source, error_path, templates.RESPONSE, context.config)
        else:
            r.fail(join(path, "errorResponseTemplate"), f"must be a string template, got {kind(source)}")
    output_schema = _output_schema(r, data.get("outputSchema"), join(path, "outputSchema"))
    client_security = _client_security(r, data.get("security"), join(path, "security"), context, request)
    if len(r.problems) > before or name is None or request is None:
        return None
    return Tool(
        name=name,
        description=description,
        args=tuple(args),
        request=request,
        response=response,
        error_response=error_response,
        output_schema=output_schema,
        client_security=client_security,
    )


def _args(r: Reader, value: Any, path: str) -> list[ToolArg]:
    if not isinstance(value, list):
        r.fail(path, f"must be a list, got {kind(value)}")
        return []
    args: list[ToolArg] = []
    for index, item in enumerate(value):
        arg = _arg(r, item, join(path, index))
        if arg is None:
            continue
        if any(a.name == arg.name for a in args):
            r.fail(join(join(path, index), "name"), f"duplicate argument {arg.name!r}")
            continue
        args.append(arg)
    return args


def _arg(r: Reader, value: Any, path: str) -> ToolArg | None:
    data = r.mapping(value, path)
    if data is None:
        return None
    before = len(r.problems)
    r.only(data, path, _ARG_FIELDS)
    hint = "a letter or '_' then letters, digits, '_' or '-'"
    name = r.string(data, "name", path, required=True, pattern=_ARG_NAME, hint=hint)
    arg_type = r.string(data, "type", path, default="string", choices=ARG_TYPES) or "string"
    position = r.string(data, "position", path, choices=ARG_POSITIONS)
    if position == "header" and name is not None and name.lower() == _COOKIE:
        # As for header templates: the gateway builds `cookie` from the `position: cookie`
        # arguments (encoded); a raw header argument could add cookies of its own.
        r.fail(join(path, "name"), f"{name!r} is set by the gateway and cannot be a header argument")
    required = r.boolean(data, "required", path)
    enum = data.get("enum")
    if enum is not None:
        if not isinstance(enum, list) or not enum:
            r.fail(join(path, "enum"), "must be a non-empty list")
        elif not all(_json_type_ok(v, arg_type) for v in enum):
            r.fail(join(path, "enum"), f"every value must be of type {arg_type}")
    for key in ("items", "properties"):
        if key in data and not isinstance(data[key], dict):
            r.fail(join(path, key), f"must be a JSON-schema mapping, got {kind(data[key])}")
    items = data.get("items")
    if isinstance(items, dict) and items.get("type", "string") not in ARG_TYPES:
        r.fail(join(join(path, "items"), "type"), f"must be one of {', '.join(ARG_TYPES)}")
    if position == "header" and name is not None:
        # The argument's name is the header's name.
        problem = header_name_problem(name)
        if problem is not None:
            r.fail(join(path, "name"), f"{name!r} cannot be a header argument: {problem}")
    has_default = "default" in data
    if has_default and not _json_type_ok(data["default"], arg_type):
        r.fail(join(path, "default"), f"must be of type {arg_type}, got {kind(data['default'])}")
    if len(r.problems) > before or name is None:
        return None
    return ToolArg(
        name=name,
        type=cast(ArgType, arg_type),
        description=r.string(data, "description", path, default="") or "",
        required=required,
        position=cast(ArgPosition | None, position),
        default=data.get("default"),
        has_default=has_default,
        enum=tuple(enum) if isinstance(enum, list) else None,
        items=items if isinstance(items, dict) else None,
        properties=data.get("properties"),
    )


def _json_type_ok(value: Any, arg_type: str) -> bool:
    if isinstance(value, bool) and arg_type != "boolean":
        return False
    if arg_type == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES.get(arg_type, (object,)))


def _request(
    r: Reader, value: Any, path: str, args: list[ToolArg], context: ToolContext
) -> RequestTemplate | None:
    if value is None:
        r.fail(path, "is required: the HTTP request a call makes (url, method)")
        return None
    data = r.mapping(value, path)
    if data is None:
        return None
    before = len(r.problems)
    r.only(data, path, _REQUEST_FIELDS)
    method = (r.string(data, "method", path, default="GET") or "GET").upper()
    if method not in METHODS:
        r.fail(join(path, "method"), f"must be one of {', '.join(METHODS)}, got {data.get('method')!r}")
    url_source = r.string(data, "url", path, required=True) or ""
    url, path_nodes = _url(r, url_source, join(path, "url"), context)
    headers = _headers(r, data.get("headers", []), join(path, "headers"), context)
    modes = [key for key in _BODY_MODES if r.boolean(data, key, path)]
    if len(modes) > 1:
        r.fail(path, f"{' and '.join(modes)} are exclusive: choose one")
    body_mode: BodyMode = _BODY_MODES[modes[0]] if modes else "none"
    body = None
    if "body" in data:
        if modes:
            r.fail(join(path, "body"), f"cannot be combined with {modes[0]}")
        source = data["body"]
        if isinstance(source, str):
            body = r.template(source, join(path, "body"), templates.REQUEST, context.config)
            body_mode = "template"
        else:
            r.fail(join(path, "body"), f"must be a string template, got {kind(source)}")
    raw_body = r.boolean(data, "rawBody", path)
    if raw_body and body is None:
        r.fail(join(path, "rawBody"), "applies to a 'body' template only")
    if body is not None:
        try:
            bodyenc.output_encodings(body, headers, raw_body)
        except templates.TemplateError as error:
            r.fail(join(path, "body"), str(error))
    security = upstream_security(r, data.get("security"), join(path, "security"), context)
    if url is not None:
        _check_arg_references(r, path, args, url, path_nodes, headers, body)
    if len(r.problems) > before or url is None:
        return None
    return RequestTemplate(
        method=method,
        url=url,
        url_path_nodes=path_nodes,
        headers=headers,
        body=body,
        body_mode=body_mode,
        raw_body=raw_body,
        security=security,
    )


def _url(
    r: Reader, source: str, path: str, context: ToolContext
) -> tuple[tuple[templates.Node, ...] | None, int]:
    # `{{.config.x}}` may hold the scheme and host (Higress writes '{{.config.domain}}/items');
    # substitute config first, then keep only what follows the authority: the scheme and host of
    # a call come from `backend`, never from the tool.
    expanded = re.sub(
        r"\{\{-?\s*\.config\.([A-Za-z0-9_\-]+)\s*-?\}\}",
        lambda m: context.config.get(m.group(1), m.group(0)),
        source,
    )
    match = re.match(r"^(https?)://([^/{}?#]+)(.*)$", expanded)
    rest = (match.group(3) or "/") if match else expanded
    if not match and not expanded.startswith("/"):
        r.fail(path, "must be a path starting with '/' or an absolute http(s) URL")
        return None, 0
    if rest.startswith("//"):
        r.fail(path, "the path must not start with '//' (it would read as a host name)")
        return None, 0
    if "#" in rest:
        r.fail(path, "must not contain a fragment ('#')")
        return None, 0
    nodes = r.template(rest, path, templates.REQUEST, context.config)
    if nodes is None:
        return None, 0
    # Split at the first literal '?' so path values get path encoding and query values query encoding.
    split: list[templates.Node] = []
    path_nodes = None
    for node in nodes:
        if path_nodes is None and isinstance(node, templates.Text) and "?" in node.value:
            before, _, after = node.value.partition("?")
            if before:
                split.append(templates.Text(before))
            path_nodes = len(split)
            split.append(templates.Text("?" + after))
        else:
            split.append(node)
    return tuple(split), len(split) if path_nodes is None else path_nodes


def _headers(
    r: Reader, value: Any, path: str, context: ToolContext
) -> tuple[tuple[str, tuple[templates.Node, ...]], ...]:
    headers: list[tuple[str, tuple[templates.Node, ...]]] = []
    for item_path, data in r.mappings(value, path, "{key, value}"):
        r.only(data, item_path, {"key", "value"})
        key = r.string(data, "key", item_path, required=True)
        raw = data.get("value")
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str):
            r.fail(join(item_path, "value"), f"must be a string, got {kind(raw)}")
            continue
        if key is not None:
            problem = header_name_problem(key)
            if problem is None and key.lower() == _COOKIE:
                problem = "set by the gateway from the position: cookie arguments"
            if problem is not None:
                r.fail(join(item_path, "key"), f"{key!r} cannot be templated: {problem}")
                continue
        problem = value_problem(raw)
        if problem is not None:
            r.fail(join(item_path, "value"), problem)
            continue
        nodes = r.template(raw, join(item_path, "value"), templates.REQUEST, context.config)
        if nodes is not None:
            # `{{.config.x}}` becomes a literal: it must be a header value too.
            for name in sorted(_config_refs(nodes)):
                problem = value_problem(context.config[name])
                if problem is not None:
                    r.fail(join(item_path, "value"), f"'.config.{name}' {problem}")
                    nodes = None
        if key is not None and nodes is not None:
            headers.append((key.lower(), nodes))
    return tuple(headers)


def _config_refs(nodes: tuple[templates.Node, ...]) -> set[str]:
    """Names of the server config values a request template reads."""
    names: set[str] = set()
    for expr, depth in templates.walk_exprs(nodes):
        if isinstance(expr, templates.Field):
            reference = templates.classify(expr, templates.REQUEST, in_range=depth > 0)
            if reference.source == "config":
                names.add(reference.path[0])
    return names


def referenced_args(nodes: tuple[templates.Node, ...]) -> set[str]:
    """Names of the arguments a request template reads."""
    names: set[str] = set()
    for expr, depth in templates.walk_exprs(nodes):
        if isinstance(expr, templates.Field):
            reference = templates.classify(expr, templates.REQUEST, in_range=depth > 0)
            if reference.source == "args" and reference.path:
                names.add(reference.path[0])
    return names


def _check_arg_references(
    r: Reader,
    path: str,
    args: list[ToolArg],
    url: tuple[templates.Node, ...],
    path_nodes: int,
    headers: tuple[tuple[str, tuple[templates.Node, ...]], ...],
    body: tuple[templates.Node, ...] | None,
) -> None:
    declared = {a.name for a in args}
    used: list[tuple[str, str, tuple[templates.Node, ...]]] = [
        ("url", "url", url),
        ("body", "body", body or ()),
    ]
    used += [(f"headers ({key})", "headers", nodes) for key, nodes in headers]
    for where, field, nodes in used:
        for name in sorted(referenced_args(nodes) - declared):
            r.fail(join(path, field), f"{where} references undeclared argument '.args.{name}'")
    in_path = referenced_args(url[:path_nodes])
    for index, arg in enumerate(args):
        if arg.position == "path" and arg.name not in in_path:
            r.fail(
                f"{path.rsplit('.', 1)[0]}.args[{index}].position",
                f"argument {arg.name!r} has position 'path'"
                f" but the url path never uses '{{{{.args.{arg.name}}}}}'",
            )


def _response(r: Reader, value: Any, path: str, context: ToolContext) -> ResponseTemplate:
    if value is None:
        return ResponseTemplate()
    data = r.mapping(value, path)
    if data is None:
        return ResponseTemplate()
    r.only(data, path, {"body", "prependBody", "appendBody"})
    body_source = r.string(data, "body", path)
    prepend = r.string(data, "prependBody", path)
    append = r.string(data, "appendBody", path)
    if body_source is not None and (prepend is not None or append is not None):
        r.fail(path, "body is exclusive with prependBody/appendBody")
    body = None
    if body_source is not None:
        body = r.template(body_source, join(path, "body"), templates.RESPONSE, context.config)
    return ResponseTemplate(body=body, prepend=prepend, append=append)


def _output_schema(r: Reader, value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "object":
        r.fail(path, "must be a JSON schema of type 'object' (MCP structuredContent is an object)")
        return None
    return value


def _scheme(r: Reader, data: dict[str, Any], path: str, context: ToolContext) -> SecurityScheme | None:
    scheme_id = r.string(data, "id", path, required=True)
    if scheme_id is None:
        return None
    scheme = context.schemes.get(scheme_id)
    if scheme is None:
        known = ", ".join(sorted(context.schemes)) or "none defined"
        r.fail(join(path, "id"), f"no security scheme {scheme_id!r} in securitySchemes ({known})")
    return scheme


def upstream_security(r: Reader, value: Any, path: str, context: ToolContext) -> UpstreamSecurity | None:
    """`{id, credential}`: the scheme the backend expects, and an optional credential override."""
    if value is None:
        return None
    data = r.mapping(value, path)
    if data is None:
        return None
    r.only(data, path, {"id", "credential"})
    scheme = _scheme(r, data, path, context)
    credential = r.secret(data, "credential", path)
    if scheme is None:
        return None
    return UpstreamSecurity(scheme.id, credential)


def _client_security(
    r: Reader, value: Any, path: str, context: ToolContext, request: RequestTemplate | None
) -> ClientSecurity | None:
    """Tool-level `security`: how the client presents its credential; only passthrough is honoured."""
    if value is None:
        _require_credential(r, path, context, request, passthrough=False)
        return None
    target_id = request.security.scheme_id if request and request.security else None
    return passthrough_security(r, value, path, context, target_id)


def passthrough_security(
    r: Reader, value: Any, path: str, context: ToolContext, target_id: str | None
) -> ClientSecurity | None:
    """`{id, passthrough: true}`: the client's credential in scheme `id`, forwarded in scheme
    `target_id` (the same scheme when None)."""
    data = r.mapping(value, path)
    if data is None:
        return None
    r.only(data, path, {"id", "passthrough"})
    scheme = _scheme(r, data, path, context)
    passthrough = r.boolean(data, "passthrough", path)
    if not passthrough:
        # Accepting it would promise client authentication the gateway does not perform.
        r.fail(
            join(path, "passthrough"),
            "mcpgw does not authenticate clients itself: set passthrough: true to forward the client's "
            "credential to the backend, or remove security",
        )
        return None
    if scheme is None:
        return None
    target = context.schemes.get(target_id) if target_id else scheme
    if target is not None and (scheme.scheme == "basic") != (target.scheme == "basic"):
        r.fail(
            path, "a basic credential can only be passed through to a basic scheme, and only basic to basic"
        )
    return ClientSecurity(scheme.id, passthrough=True)


def _require_credential(
    r: Reader, path: str, context: ToolContext, request: RequestTemplate | None, passthrough: bool
) -> None:
    """Without passthrough, `requestTemplate.security` needs a credential from the registry."""
    if passthrough or request is None or request.security is None:
        return
    scheme = context.schemes.get(request.security.scheme_id)
    if scheme is not None and request.security.credential is None and scheme.default_credential is None:
        r.fail(
            path.rsplit(".", 1)[0] + ".requestTemplate.security",
            f"no credential: set defaultCredential on scheme {scheme.id!r}, a credential here, "
            "or security: {id, passthrough: true} on the tool",
        )
