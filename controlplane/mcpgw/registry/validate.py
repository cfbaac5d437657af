"""Turn a parsed `kind: McpServer` document into the model, or say precisely what is wrong.

Every problem is reported with the file, the field path (`tools[1].requestTemplate.url`) and a
reason. A field the gateway cannot honour is an error, never silently ignored: an operator who
wrote it expected it to do something.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, cast

from mcpgw.registry import templates
from mcpgw.registry.model import (
    ArgPosition,
    ArgType,
    Backend,
    BodyMode,
    Endpoint,
    McpServer,
    RequestTemplate,
    ResponseTemplate,
    Tool,
    ToolArg,
    fingerprint,
)

API_VERSION = "mcpgw/v1"
KIND = "McpServer"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
ARG_TYPES: tuple[ArgType, ...] = ("string", "number", "integer", "boolean", "array", "object")
ARG_POSITIONS: tuple[ArgPosition, ...] = ("query", "path", "header", "body")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}
# Fields of the Higress tool format that later work will honour; until then they are refused.
_NOT_YET = {
    "securitySchemes": "credentials are not supported yet",
    "security": "credentials are not supported yet",
}


@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}{self.path or '<document>'}: {self.reason}"


class Invalid(Exception):
    """Raised with every problem found, not just the first, so one edit can fix them all."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class _Reader:
    """Reads fields of nested mappings while remembering the path, collecting problems."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def fail(self, path: str, reason: str) -> None:
        self.problems.append(Problem(self.file, path, reason))

    def mapping(self, value: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, got {_kind(value)}")
            return None
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {key!r}")
                return None
        return value

    def only(self, data: dict[str, Any], path: str, allowed: set[str]) -> None:
        for key in data:
            if key in _NOT_YET:
                self.fail(_join(path, key), _NOT_YET[key])
            elif key not in allowed:
                self.fail(_join(path, key), f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def string(
        self,
        data: dict[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        default: str | None = None,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
    ) -> str | None:
        field_path = _join(path, key)
        if key not in data or data[key] is None:
            if required:
                self.fail(field_path, "is required")
            return default
        value = data[key]
        if not isinstance(value, str):
            self.fail(field_path, f"must be a string, got {_kind(value)}")
            return default
        if pattern is not None and not pattern.match(value):
            self.fail(field_path, f"{value!r} is not valid{': ' + hint if hint else ''}")
            return default
        return value

    def boolean(self, data: dict[str, Any], key: str, path: str) -> bool:
        value = data.get(key, False)
        if not isinstance(value, bool):
            self.fail(_join(path, key), f"must be true or false, got {_kind(value)}")
            return False
        return value

    def template(self, source: str, path: str, roots: frozenset[str]) -> tuple[templates.Node, ...] | None:
        try:
            return templates.parse(source, roots=roots)
        except templates.TemplateError as error:
            self.fail(path, f"template: {error}")
            return None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


def parse_server(document: Any, file: str = "") -> McpServer:
    """Validate one document; raises `Invalid` listing every problem found."""
    reader = _Reader(file)
    server = _server(reader, document)
    if reader.problems or server is None:
        raise Invalid(reader.problems or [Problem(file, "", "invalid document")])
    return server


_SERVER_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "name",
    "description",
    "version",
    "title",
    "instructions",
    "backend",
    "config",
    "tools",
    "allowTools",
}


def _server(r: _Reader, document: Any) -> McpServer | None:
    data = r.mapping(document, "")
    if data is None:
        return None
    r.only(data, "", _SERVER_FIELDS)
    api_version = data.get("apiVersion", API_VERSION)
    if api_version != API_VERSION:
        r.fail("apiVersion", f"must be {API_VERSION!r}, got {api_version!r}")
    if data.get("kind") != KIND:
        r.fail("kind", f"must be {KIND!r}, got {data.get('kind')!r}")
    dns_hint = "lowercase letters, digits and '-', at most 63, e.g. 'petstore'"
    namespace = r.string(data, "namespace", "", default="default", pattern=_DNS_LABEL, hint=dns_hint)
    name = r.string(data, "name", "", required=True, pattern=_DNS_LABEL, hint=dns_hint)
    description = r.string(data, "description", "", default="") or ""
    version = r.string(data, "version", "", default="1.0.0") or "1.0.0"
    title = r.string(data, "title", "")
    instructions = r.string(data, "instructions", "")
    config = _config(r, data.get("config", {}))
    backend = _backend(r, data.get("backend"))
    tools = _tools(r, data.get("tools"), config)
    allowed = _allow_tools(r, data, tools)
    if r.problems or name is None or namespace is None or backend is None:
        return None
    return McpServer(
        namespace=namespace,
        name=name,
        description=description,
        backend=backend,
        tools=tuple(t for t in tools if allowed is None or t.name in allowed),
        version=version,
        title=title,
        instructions=instructions,
        config=config,
        source=r.file,
        fingerprint=fingerprint(document),
    )


def _config(r: _Reader, value: Any) -> dict[str, str]:
    data = r.mapping(value, "config")
    if data is None:
        return {}
    config: dict[str, str] = {}
    for key, item in data.items():
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            r.fail(_join("config", key), f"must be a string or number, got {_kind(item)}")
        else:
            config[key] = str(item)
    return config


def _backend(r: _Reader, value: Any) -> Backend | None:
    if value is None:
        r.fail("backend", "is required: the REST service the tools call (endpoints: ['host:port'])")
        return None
    data = r.mapping(value, "backend")
    if data is None:
        return None
    r.only(data, "backend", {"scheme", "endpoints", "host", "timeoutMs"})
    scheme = r.string(data, "scheme", "backend", default="http")
    if scheme not in ("http", "https"):
        r.fail("backend.scheme", f"must be 'http' or 'https', got {scheme!r}")
    host_header = r.string(data, "host", "backend", pattern=_HOSTNAME, hint="a DNS name")
    timeout = data.get("timeoutMs", 10_000)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 300_000:
        r.fail("backend.timeoutMs", f"must be an integer from 1 to 300000, got {timeout!r}")
        timeout = 10_000
    endpoints = _endpoints(r, data.get("endpoints"))
    if not endpoints or scheme not in ("http", "https"):
        return None
    return Backend(scheme=cast(Any, scheme), endpoints=endpoints, host_header=host_header, timeout_ms=timeout)


def _endpoints(r: _Reader, value: Any) -> tuple[Endpoint, ...]:
    if not isinstance(value, list) or not value:
        r.fail("backend.endpoints", "must be a non-empty list of 'host:port'")
        return ()
    endpoints: list[Endpoint] = []
    for index, item in enumerate(value):
        path = _join("backend.endpoints", index)
        endpoint = _endpoint(item)
        if endpoint is None:
            r.fail(path, f"{item!r} is not 'host:port' (an IP address or DNS name, port 1-65535)")
        elif endpoint in endpoints:
            r.fail(path, f"duplicate endpoint {item!r}")
        else:
            endpoints.append(endpoint)
    kinds = {is_ip(e.host) for e in endpoints}
    if len(kinds) > 1:
        r.fail(
            "backend.endpoints",
            "mix IP addresses and DNS names in separate servers: Envoy resolves them differently",
        )
    return tuple(endpoints)


def _endpoint(item: Any) -> Endpoint | None:
    if not isinstance(item, str) or ":" not in item:
        return None
    host, _, port_text = item.rpartition(":")
    host = host.strip("[]")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return None
    if not is_ip(host) and not _HOSTNAME.match(host):
        return None
    return Endpoint(host, int(port_text))


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _tools(r: _Reader, value: Any, config: dict[str, str]) -> list[Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        r.fail("tools", f"must be a list, got {_kind(value)}")
        return []
    tools: list[Tool] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        path = _join("tools", index)
        tool = _tool(r, item, path, config)
        if tool is None:
            continue
        if tool.name in seen:
            r.fail(_join(path, "name"), f"duplicate tool name {tool.name!r} (also tools[{seen[tool.name]}])")
            continue
        seen[tool.name] = index
        tools.append(tool)
    return tools


_TOOL_FIELDS = {
    "name",
    "description",
    "args",
    "requestTemplate",
    "responseTemplate",
    "errorResponseTemplate",
    "outputSchema",
}


def _tool(r: _Reader, value: Any, path: str, config: dict[str, str]) -> Tool | None:
    data = r.mapping(value, path)
    if data is None:
        return None
    before = len(r.problems)
    r.only(data, path, _TOOL_FIELDS)
    name = r.string(
        data,
        "name",
        path,
        required=True,
        pattern=_TOOL_NAME,
        hint="letters, digits, '_', '-', '.', at most 128",
    )
    description = r.string(data, "description", path, default="") or ""
    args = _args(r, data.get("args", []), _join(path, "args"))
    request = _request(r, data.get("requestTemplate"), _join(path, "requestTemplate"), args, config)
    response = _response(r, data.get("responseTemplate"), _join(path, "responseTemplate"))
    error_response = None
    if "errorResponseTemplate" in data:
        source = data["errorResponseTemplate"]
        if isinstance(source, str):
            error_response = r.template(source, _join(path, "errorResponseTemplate"), frozenset({"."}))
        else:
            r.fail(_join(path, "errorResponseTemplate"), f"must be a string template, got {_kind(source)}")
    output_schema = _output_schema(r, data.get("outputSchema"), _join(path, "outputSchema"))
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
    )


def _args(r: _Reader, value: Any, path: str) -> list[ToolArg]:
    if not isinstance(value, list):
        r.fail(path, f"must be a list, got {_kind(value)}")
        return []
    args: list[ToolArg] = []
    for index, item in enumerate(value):
        arg = _arg(r, item, _join(path, index))
        if arg is None:
            continue
        if any(a.name == arg.name for a in args):
            r.fail(_join(_join(path, index), "name"), f"duplicate argument {arg.name!r}")
            continue
        args.append(arg)
    return args


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


def _arg(r: _Reader, value: Any, path: str) -> ToolArg | None:
    data = r.mapping(value, path)
    if data is None:
        return None
    before = len(r.problems)
    r.only(data, path, _ARG_FIELDS)
    name = r.string(
        data,
        "name",
        path,
        required=True,
        pattern=_ARG_NAME,
        hint="a letter or '_' then letters, digits, '_' or '-'",
    )
    arg_type = r.string(data, "type", path, default="string")
    if arg_type not in ARG_TYPES:
        r.fail(_join(path, "type"), f"must be one of {', '.join(ARG_TYPES)}, got {arg_type!r}")
    position = r.string(data, "position", path)
    if position == "cookie":
        r.fail(_join(path, "position"), "'cookie' is not supported yet")
    elif position is not None and position not in ARG_POSITIONS:
        r.fail(_join(path, "position"), f"must be one of {', '.join(ARG_POSITIONS)}, got {position!r}")
    required = r.boolean(data, "required", path)
    enum = data.get("enum")
    if enum is not None and (not isinstance(enum, list) or not enum):
        r.fail(_join(path, "enum"), "must be a non-empty list")
    for key in ("items", "properties"):
        if key in data and not isinstance(data[key], dict):
            r.fail(_join(path, key), f"must be a JSON-schema mapping, got {_kind(data[key])}")
    has_default = "default" in data
    if has_default and arg_type in _JSON_TYPES and not _json_type_ok(data["default"], arg_type):
        r.fail(_join(path, "default"), f"must be of type {arg_type}, got {_kind(data['default'])}")
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
        items=data.get("items"),
        properties=data.get("properties"),
    )


def _json_type_ok(value: Any, arg_type: str) -> bool:
    if isinstance(value, bool) and arg_type != "boolean":
        return False
    if arg_type == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES[arg_type])


_REQUEST_FIELDS = {"url", "method", "headers", "body", "argsToJsonBody", "argsToUrlParam", "argsToFormBody"}
_BODY_MODES: dict[str, BodyMode] = {
    "argsToJsonBody": "json_args",
    "argsToUrlParam": "url_args",
    "argsToFormBody": "form_args",
}


def _request(
    r: _Reader, value: Any, path: str, args: list[ToolArg], config: dict[str, str]
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
        r.fail(_join(path, "method"), f"must be one of {', '.join(METHODS)}, got {data.get('method')!r}")
    url_source = r.string(data, "url", path, required=True) or ""
    url, path_nodes = _url(r, url_source, _join(path, "url"), config)
    headers = _headers(r, data.get("headers", []), _join(path, "headers"), config)
    modes = [key for key in _BODY_MODES if r.boolean(data, key, path)]
    if len(modes) > 1:
        r.fail(path, f"{' and '.join(modes)} are exclusive: choose one")
    body_mode: BodyMode = _BODY_MODES[modes[0]] if modes else "none"
    body = None
    if "body" in data:
        if modes:
            r.fail(_join(path, "body"), f"cannot be combined with {modes[0]}")
        source = data["body"]
        if isinstance(source, str):
            body = r.template(source, _join(path, "body"), frozenset({"args", "config"}))
            body = _resolve_config(r, body, config, _join(path, "body"))
            body_mode = "template"
        else:
            r.fail(_join(path, "body"), f"must be a string template, got {_kind(source)}")
    if url is not None:
        _check_arg_references(r, path, args, url, path_nodes, headers, body)
    if len(r.problems) > before or url is None:
        return None
    return RequestTemplate(
        method=method, url=url, url_path_nodes=path_nodes, headers=headers, body=body, body_mode=body_mode
    )


def _url(
    r: _Reader, source: str, path: str, config: dict[str, str]
) -> tuple[tuple[templates.Node, ...] | None, int]:
    match = re.match(r"^(https?)://([^/{}?#]+)(.*)$", source)
    rest = match.group(3) if match else source
    if match:
        # Higress definitions carry absolute URLs; the scheme and host come from `backend`,
        # so only the path and query are kept.
        rest = rest or "/"
    elif not source.startswith("/"):
        r.fail(path, "must be a path starting with '/' or an absolute http(s) URL")
        return None, 0
    if "#" in rest:
        r.fail(path, "must not contain a fragment ('#')")
        return None, 0
    nodes = r.template(rest, path, frozenset({"args", "config"}))
    nodes = _resolve_config(r, nodes, config, path)
    if nodes is None:
        return None, 0
    # Split at the first literal '?' so path references get path encoding and query ones query encoding.
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


def _resolve_config(
    r: _Reader, nodes: tuple[templates.Node, ...] | None, config: dict[str, str], path: str
) -> tuple[templates.Node, ...] | None:
    """`{{.config.x}}` is static: substitute it now so the filter only ever sees arguments."""
    if nodes is None:
        return None
    resolved: list[templates.Node] = []
    for node in nodes:
        if isinstance(node, templates.Ref) and node.root == "config":
            key = ".".join(node.path)
            if key not in config:
                r.fail(path, f"template references '.config.{key}' but the server's config has no {key!r}")
                return None
            if node.pipes:
                r.fail(path, f"'.config.{key}': functions on config values are not supported")
                return None
            node = templates.Text(config[key])
        resolved.append(node)
    return templates.merge_text(resolved)


def _headers(
    r: _Reader, value: Any, path: str, config: dict[str, str]
) -> tuple[tuple[str, tuple[templates.Node, ...]], ...]:
    if not isinstance(value, list):
        r.fail(path, f"must be a list of {{key, value}}, got {_kind(value)}")
        return ()
    headers: list[tuple[str, tuple[templates.Node, ...]]] = []
    for index, item in enumerate(value):
        item_path = _join(path, index)
        data = r.mapping(item, item_path)
        if data is None:
            continue
        r.only(data, item_path, {"key", "value"})
        key = r.string(
            data, "key", item_path, required=True, pattern=_HEADER_NAME, hint="an HTTP header name"
        )
        raw = data.get("value")
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str):
            r.fail(_join(item_path, "value"), f"must be a string, got {_kind(raw)}")
            continue
        if "\r" in raw or "\n" in raw:
            r.fail(_join(item_path, "value"), "must not contain CR or LF")
            continue
        if key is not None and key.lower() in ("host", ":authority", "content-length", "transfer-encoding"):
            r.fail(_join(item_path, "key"), f"{key!r} is set by the gateway and cannot be templated")
            continue
        nodes = _resolve_config(
            r,
            r.template(raw, _join(item_path, "value"), frozenset({"args", "config"})),
            config,
            _join(item_path, "value"),
        )
        if key is not None and nodes is not None:
            headers.append((key.lower(), nodes))
    return tuple(headers)


def _check_arg_references(
    r: _Reader,
    path: str,
    args: list[ToolArg],
    url: tuple[templates.Node, ...],
    path_nodes: int,
    headers: tuple[tuple[str, tuple[templates.Node, ...]], ...],
    body: tuple[templates.Node, ...] | None,
) -> None:
    declared = {a.name for a in args}
    used: list[tuple[str, tuple[templates.Node, ...]]] = [("url", url), ("body", body or ())]
    used += [(f"headers ({key})", nodes) for key, nodes in headers]
    for where, nodes in used:
        for ref in templates.references(nodes, "args"):
            if ref.path[0] not in declared:
                r.fail(
                    _join(path, "url" if where == "url" else "body" if where == "body" else "headers"),
                    f"{where} references undeclared argument '.args.{ref.path[0]}'",
                )
    in_path = {ref.path[0] for ref in templates.references(url[:path_nodes], "args")}
    for index, arg in enumerate(args):
        if arg.position == "path" and arg.name not in in_path:
            r.fail(
                f"{path.rsplit('.', 1)[0]}.args[{index}].position",
                f"argument {arg.name!r} has position 'path'"
                f" but the url path never uses '{{{{.args.{arg.name}}}}}'",
            )


def _response(r: _Reader, value: Any, path: str) -> ResponseTemplate:
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
    body = r.template(body_source, _join(path, "body"), frozenset({"."})) if body_source is not None else None
    return ResponseTemplate(body=body, prepend=prepend, append=append)


def _output_schema(r: _Reader, value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "object":
        r.fail(path, "must be a JSON schema of type 'object' (MCP structuredContent is an object)")
        return None
    return value


def _allow_tools(r: _Reader, data: dict[str, Any], tools: list[Tool]) -> set[str] | None:
    if "allowTools" not in data:
        return None
    value = data["allowTools"]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        r.fail("allowTools", "must be a list of tool names")
        return None
    names = {t.name for t in tools}
    for index, item in enumerate(value):
        if item not in names:
            r.fail(_join("allowTools", index), f"no tool named {item!r} in this server")
    return set(value)
