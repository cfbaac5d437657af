"""Turn a parsed `kind: McpServer` document into the model, or say precisely what is wrong.

Every problem is reported with the file, the field path (`tools[1].requestTemplate.url`) and a
reason. A field the gateway cannot honour is an error, never silently ignored: an operator who
wrote it expected it to do something.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any, cast

from mcpgw.limits import MAX_BACKEND_TIMEOUT_MS
from mcpgw.registry.consumers import parse_auth
from mcpgw.registry.headers import header_name_problem
from mcpgw.registry.model import (
    Backend,
    BackendTls,
    Endpoint,
    Include,
    Limits,
    McpServer,
    SecurityScheme,
    Tool,
    fingerprint,
)
from mcpgw.registry.observability import parse_observability
from mcpgw.registry.passthrough import check_included_passthrough, check_passthrough
from mcpgw.registry.reader import Invalid, Problem, Reader, join, kind
from mcpgw.registry.tls import SKIP_VERIFY_WARNING, TLS_FIELDS, pair_problem
from mcpgw.registry.tools import TOOL_NAME, ToolContext, parse_tools
from mcpgw.registry.upstream import MCP_ONLY_FIELDS, NOT_FOR_MCP, parse_mcp_upstream

__all__ = ["Invalid", "Problem", "check_includes", "is_ip", "parse_server"]

API_VERSION = "mcpgw/v1"
KIND = "McpServer"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
_SERVER_KEY = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SERVER_FIELDS = {
    "apiVersion",
    "kind",
    "type",
    "namespace",
    "name",
    "description",
    "version",
    "title",
    "instructions",
    "backend",
    "config",
    "securitySchemes",
    "tools",
    "allowTools",
    "include",
    "limits",
    "allowedOrigins",
    "pageSize",
    "gateways",
    "auth",
    "observability",
}
SERVER_TYPES = ("rest", "mcp")
_REST_BACKEND = "the REST service the tools call (endpoints: ['host:port'])"
_MCP_BACKEND = "the hosts of the upstream MCP server (endpoints: ['host:port'])"
_MAX_PAGE_SIZE = 1000
_MAX_BODY = 64 << 20
# Envoy buffers a backend's whole answer for the filter, which only then sees its size; the
# bootstrap caps that buffer at this (`http.async_response_buffer_limit`, which resets the
# backend stream there), so no answer costs more memory, whatever the server's own limit.
MAX_RESPONSE_BYTES = 8 << 20
# The filter refuses more (config.zig `max_json_depth_cap`): it serialises values recursively.
_MAX_JSON_DEPTH = 1000


def parse_server(document: Any, file: str = "") -> McpServer:
    """Validate one document; raises `Invalid` listing every problem found."""
    reader = Reader(file)
    server = _server(reader, document)
    if reader.problems or server is None:
        raise Invalid(reader.problems or [Problem(file, "", "invalid document")])
    return server


def _server(r: Reader, document: Any) -> McpServer | None:
    data = r.mapping(document, "")
    if data is None:
        return None
    # `rest` (the default): tools described here call a REST backend; `mcp`: an MCP server behind.
    server_type = r.string(data, "type", "", default="rest", choices=SERVER_TYPES) or "rest"
    if server_type == "mcp":
        for key, why in NOT_FOR_MCP.items():
            if key in data:
                r.fail(key, f"not for a type: mcp server: {why}")
    else:
        for key in sorted(MCP_ONLY_FIELDS & data.keys()):
            r.fail(key, "only for type: mcp servers (an MCP server behind the gateway)")
    r.only(data, "", _SERVER_FIELDS | MCP_ONLY_FIELDS)
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
    schemes = _security_schemes(r, data.get("securitySchemes", []))
    includes = _includes(r, data.get("include", []))
    limits = _limits(r, data.get("limits", {}))
    allowed_origins = _allowed_origins(r, data.get("allowedOrigins", []))
    page_size = _page_size(r, data.get("pageSize"))
    observability = parse_observability(r, data.get("observability"))
    gateways = _gateways(r, data["gateways"]) if "gateways" in data else None
    auth = parse_auth(r, data["auth"]) if "auth" in data else None
    mcp = None
    if server_type == "mcp":
        backend = _backend(r, data.get("backend"), required=True, what=_MCP_BACKEND)
        mcp = parse_mcp_upstream(r, data, schemes)
        tools, allowed = [], None
    else:
        backend = _backend(r, data.get("backend"), required=bool(data.get("tools")))
        _one_tls_name(r, backend)
        tools = parse_tools(r, data.get("tools"), ToolContext(config, {s.id: s for s in schemes}))
        allowed = _allow_tools(r, data, tools)
    check_passthrough(r, auth, schemes, data)
    if r.problems or name is None or namespace is None:
        return None
    return McpServer(
        namespace=namespace,
        name=name,
        description=description,
        backend=backend or Backend(scheme="http", endpoints=()),
        tools=tuple(t for t in tools if allowed is None or t.name in allowed),
        version=version,
        title=title,
        instructions=instructions,
        config=config,
        security_schemes=tuple(schemes),
        includes=tuple(includes),
        limits=limits,
        allowed_origins=allowed_origins,
        page_size=page_size,
        observability=observability,
        gateways=gateways,
        mcp=mcp,
        auth=auth,
        source=r.file,
        fingerprint=fingerprint(document),
        warnings=tuple(f"{w.path}: {w.reason}" for w in r.warnings),
    )


def _limits(r: Reader, value: Any) -> Limits:
    data = r.mapping(value, "limits")
    if data is None:
        return Limits()
    r.only(data, "limits", {"maxRequestBytes", "maxResponseBytes", "maxJsonDepth"})
    sizes = {}
    for key, most in (
        ("maxRequestBytes", _MAX_BODY),
        ("maxResponseBytes", MAX_RESPONSE_BYTES),
        ("maxJsonDepth", _MAX_JSON_DEPTH),
    ):
        size = data.get(key)
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= most:
            r.fail(join("limits", key), f"must be an integer from 1 to {most}, got {size!r}")
        else:
            sizes[key] = size
    defaults = Limits()
    return Limits(
        max_request_bytes=sizes.get("maxRequestBytes", defaults.max_request_bytes),
        max_response_bytes=sizes.get("maxResponseBytes", defaults.max_response_bytes),
        max_json_depth=sizes.get("maxJsonDepth", defaults.max_json_depth),
    )


_ORIGIN = re.compile(r"^(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


def _allowed_origins(r: Reader, value: Any) -> tuple[str, ...]:
    """Browser origins (`https://app.example.com[:port]`) allowed besides localhost ones."""
    if not isinstance(value, list):
        r.fail(
            "allowedOrigins", f"must be a list of origins like 'https://app.example.com', got {kind(value)}"
        )
        return ()
    origins: list[str] = []
    for index, item in enumerate(value):
        path = join("allowedOrigins", index)
        origin = _origin(item)
        if origin is None:
            r.fail(
                path,
                f"{item!r} is not an http(s) origin: 'scheme://host[:port]' without path, e.g. 'https://app.example.com'",
            )
        elif origin in origins:
            r.fail(path, f"duplicate origin {item!r}")
        else:
            origins.append(origin)
    return tuple(origins)


def _origin(item: Any) -> str | None:
    """`item` as the browser sends it in `Origin` (lower-case, default port dropped), or None."""
    if not isinstance(item, str):
        return None
    match = _ORIGIN.fullmatch(item)
    if match is None:
        return None
    scheme, host, port = match.group(1).lower(), match.group(2).lower(), match.group(3)
    if host.startswith("["):
        if not is_ip(host[1:-1]):
            return None
    elif not is_ip(host) and not _HOSTNAME.fullmatch(host):
        return None
    if port is not None:
        number = int(port[1:])
        if not 1 <= number <= 65535:
            return None
        if (scheme, number) in (("http", 80), ("https", 443)):
            port = None
    return f"{scheme}://{host}{port or ''}"


def _gateways(r: Reader, value: Any) -> tuple[str, ...] | None:
    """The gateway groups (Envoys' `node.cluster`) that serve this server; absent: every group."""
    hint = "a list of gateway groups (an Envoy's node.cluster, e.g. 'mcpgw'), at least one"
    if not isinstance(value, list) or not value:
        r.fail("gateways", f"must be {hint}, got {kind(value) if value != [] else 'an empty list'}")
        return None
    groups: list[str] = []
    for index, item in enumerate(value):
        path = join("gateways", index)
        if not isinstance(item, str) or not _DNS_LABEL.fullmatch(item):
            r.fail(path, f"{item!r} is not a group name: lowercase letters, digits and '-', at most 63")
        elif item in groups:
            r.fail(path, f"duplicate group {item!r}")
        else:
            groups.append(item)
    return tuple(sorted(groups))


def _page_size(r: Reader, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_PAGE_SIZE:
        r.fail("pageSize", f"must be an integer from 1 to {_MAX_PAGE_SIZE}, got {value!r}")
        return 0
    return value


_SCHEME_FIELDS = {"id", "type", "scheme", "in", "name", "defaultCredential", "description"}


def _security_schemes(r: Reader, value: Any) -> list[SecurityScheme]:
    schemes: list[SecurityScheme] = []
    for path, data in r.mappings(value, "securitySchemes", "security schemes"):
        before = len(r.problems)
        r.only(data, path, _SCHEME_FIELDS)
        scheme_id = r.string(data, "id", path, required=True)
        scheme_type = r.string(data, "type", path, required=True, choices=("http", "apiKey"))
        http_scheme = location = header_name = None
        if scheme_type == "http":
            http_scheme = r.string(data, "scheme", path, required=True, choices=("basic", "bearer"))
            location, header_name = "header", "authorization"
        elif scheme_type == "apiKey":
            location = r.string(data, "in", path, required=True, choices=("header", "query"))
            header_name = r.string(data, "name", path, required=True)
            if location == "header" and header_name is not None:
                problem = header_name_problem(header_name)
                if problem is not None:
                    r.fail(join(path, "name"), f"{header_name!r} cannot carry a credential: {problem}")
                header_name = header_name.lower()
        credential = r.secret(data, "defaultCredential", path)
        if scheme_id is not None and any(s.id == scheme_id for s in schemes):
            r.fail(join(path, "id"), f"duplicate security scheme {scheme_id!r}")
        if len(r.problems) > before or scheme_id is None or location is None or header_name is None:
            continue
        schemes.append(
            SecurityScheme(
                id=scheme_id,
                type=cast(Any, scheme_type),
                scheme=cast(Any, http_scheme),
                location=cast(Any, location),
                name=header_name,
                default_credential=credential,
            )
        )
    return schemes


def _includes(r: Reader, value: Any) -> list[Include]:
    includes: list[Include] = []
    for path, data in r.mappings(value, "include", "{server: NAMESPACE/NAME, tools: [...]}"):
        r.only(data, path, {"server", "tools"})
        server = r.string(data, "server", path, required=True, pattern=_SERVER_KEY, hint="'namespace/name'")
        tools = data.get("tools")
        names_ok = isinstance(tools, list) and all(
            isinstance(t, str) and TOOL_NAME.fullmatch(t) for t in tools
        )
        if tools is not None and not names_ok:
            r.fail(join(path, "tools"), "must be a list of tool names")
            tools = None
        if server is not None:
            includes.append(Include(server, tuple(tools) if tools is not None else None))
    return includes


def check_includes(servers: Sequence[McpServer]) -> list[Problem]:
    """Cross-document rules for composed tool sets: targets exist, tools exist, names stay unique."""
    if not any(server.includes for server in servers):
        return []
    by_key = {s.key: s for s in servers}
    problems: list[Problem] = []
    for server in servers:
        names = {t.name: server.key for t in server.tools}
        for index, include in enumerate(server.includes):
            path = join("include", index)
            target = by_key.get(include.server)
            if target is None or target is server:
                reason = "a server cannot include itself" if target is server else "no such server"
                problems.append(Problem(server.source, join(path, "server"), f"{include.server!r}: {reason}"))
                continue
            if target.mcp is not None:
                problems.append(
                    Problem(
                        server.source,
                        join(path, "server"),
                        f"{include.server!r} is a type: mcp server: its tools come from its upstream "
                        "and cannot be included",
                    )
                )
                continue
            if target.includes:
                problems.append(
                    Problem(
                        server.source,
                        join(path, "server"),
                        f"{include.server!r} itself includes tools; include the original servers instead",
                    )
                )
                continue
            if not serves_within(server.gateways, target.gateways):
                problems.append(
                    Problem(
                        server.source,
                        join(path, "server"),
                        f"{include.server!r} is served by gateways {_groups_text(target.gateways)} only; "
                        f"this server ({_groups_text(server.gateways)}) would hand its tools and "
                        "credentials to other gateways: list only groups of theirs in `gateways`",
                    )
                )
                continue
            problems += check_included_passthrough(server, target, include, path)
            offered = {t.name for t in target.tools}
            wanted = include.tools if include.tools is not None else tuple(sorted(offered))
            for tool in wanted:
                if tool not in offered:
                    problems.append(
                        Problem(
                            server.source, join(path, "tools"), f"{include.server!r} has no tool {tool!r}"
                        )
                    )
                elif tool in names:
                    problems.append(
                        Problem(
                            server.source,
                            path,
                            f"tool {tool!r} of {include.server!r} clashes with one of {names[tool]!r}",
                        )
                    )
                else:
                    names[tool] = include.server
    return problems


def serves_within(groups: tuple[str, ...] | None, others: tuple[str, ...] | None) -> bool:
    """True if every gateway group serving `groups` also serves `others` (None: every group)."""
    if others is None:
        return True
    return groups is not None and set(groups) <= set(others)


def _groups_text(groups: tuple[str, ...] | None) -> str:
    return "every group" if groups is None else ", ".join(groups)


def _config(r: Reader, value: Any) -> dict[str, str]:
    data = r.mapping(value, "config")
    if data is None:
        return {}
    config: dict[str, str] = {}
    for key, item in data.items():
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            r.fail(join("config", key), f"must be a string or number, got {kind(item)}")
        else:
            config[key] = str(item)
    return config


def _backend(r: Reader, value: Any, required: bool, what: str = _REST_BACKEND) -> Backend | None:
    if value is None:
        if not required:
            return None
        r.fail("backend", f"is required: {what}")
        return None
    data = r.mapping(value, "backend")
    if data is None:
        return None
    r.only(data, "backend", {"scheme", "endpoints", "host", "timeoutMs", "tls"})
    scheme = r.string(data, "scheme", "backend", default="http")
    if scheme not in ("http", "https"):
        r.fail("backend.scheme", f"must be 'http' or 'https', got {scheme!r}")
    host_header = r.string(data, "host", "backend", pattern=_HOSTNAME, hint="a DNS name")
    timeout = data.get("timeoutMs", 10_000)
    # Bounded so that a slow backend holds one of its request slots, and a client's request
    # (the listener's request timeout), for a bounded time.
    valid = isinstance(timeout, int) and not isinstance(timeout, bool)
    if not valid or not 1 <= timeout <= MAX_BACKEND_TIMEOUT_MS:
        r.fail("backend.timeoutMs", f"must be an integer from 1 to {MAX_BACKEND_TIMEOUT_MS}, got {timeout!r}")
        timeout = 10_000
    endpoints = _endpoints(r, data.get("endpoints"))
    tls = _backend_tls(r, data.get("tls"), scheme)
    if not endpoints or scheme not in ("http", "https"):
        return None
    return Backend(
        scheme=cast(Any, scheme), endpoints=endpoints, host_header=host_header, timeout_ms=timeout, tls=tls
    )


def _one_tls_name(r: Reader, backend: Backend | None) -> None:
    """A REST server's endpoints share one cluster, so one name is checked for all of them."""
    if backend is None or backend.scheme != "https" or backend.host_header or len(backend.endpoints) < 2:
        return
    tls = backend.tls
    if tls is not None and (tls.server_name or tls.insecure_skip_verify):
        return
    if len({e.host for e in backend.endpoints}) > 1:
        r.fail(
            "backend.endpoints",
            "https endpoints with different names: set backend.host or backend.tls.serverName to "
            "the name their certificates carry (one name is verified for all of them)",
        )


def _backend_tls(r: Reader, value: Any, scheme: str | None) -> BackendTls | None:
    """`backend.tls` (see `mcpgw.registry.tls` for what each field does)."""
    if value is None:
        return None
    data = r.mapping(value, "backend.tls")
    if data is None:
        return None
    if scheme != "https":
        r.fail("backend.tls", "only for scheme: https (a plain-http backend has no TLS to configure)")
        return None
    r.only(data, "backend.tls", TLS_FIELDS)
    server_name = r.string(data, "serverName", "backend.tls")
    if server_name is not None and not (_HOSTNAME.fullmatch(server_name) or is_ip(server_name)):
        r.fail("backend.tls.serverName", f"{server_name!r} is not a DNS name or IP address")
    skip = r.boolean(data, "insecureSkipVerify", "backend.tls")
    ca = r.secret(data, "ca", "backend.tls", "certificates")
    cert = r.secret(data, "clientCertificate", "backend.tls", "certificates")
    key = r.secret(data, "clientKey", "backend.tls", "private-key")
    if skip and "ca" in data:
        r.fail("backend.tls.ca", "is never used with insecureSkipVerify: true (remove one of them)")
    if ("clientCertificate" in data) != ("clientKey" in data):
        given, missing = ("clientCertificate", "clientKey")
        if "clientKey" in data:
            given, missing = missing, given
        r.fail(join("backend.tls", missing), f"is required with {given} (a client certificate and its key)")
    elif cert is not None and key is not None and cert.kind == key.kind == "inline":
        # Values from files and variables are paired when they are read (the translator).
        problem = pair_problem(cert.ref, key.ref)
        if problem is not None:
            r.fail("backend.tls.clientKey", problem)
    if skip:
        r.warn("backend.tls.insecureSkipVerify", SKIP_VERIFY_WARNING)
    return BackendTls(
        ca=ca, server_name=server_name, client_certificate=cert, client_key=key, insecure_skip_verify=skip
    )


def _endpoints(r: Reader, value: Any) -> tuple[Endpoint, ...]:
    if not isinstance(value, list) or not value:
        r.fail("backend.endpoints", "must be a non-empty list of 'host:port'")
        return ()
    endpoints: list[Endpoint] = []
    for index, item in enumerate(value):
        path = join("backend.endpoints", index)
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
    if not is_ip(host) and not _HOSTNAME.fullmatch(host):
        return None
    return Endpoint(host, int(port_text))


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _allow_tools(r: Reader, data: dict[str, Any], tools: list[Tool]) -> set[str] | None:
    if "allowTools" not in data:
        return None
    value = data["allowTools"]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        r.fail("allowTools", "must be a list of tool names")
        return None
    names = {t.name for t in tools}
    for index, item in enumerate(value):
        if item not in names:
            r.fail(join("allowTools", index), f"no tool named {item!r} in this server")
    return set(value)
