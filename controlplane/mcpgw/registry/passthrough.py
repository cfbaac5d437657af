"""No token passthrough: with gateway auth on, passthrough never forwards the gateway's own credential.

The MCP authorization spec forbids handing the token the gateway validated to a backend (the
backend would accept a token that was not issued for it, and any backend could replay it at
another). So where a server has an `auth:` block, a passthrough (`security: {id, passthrough:
true}` on a REST tool, or on a `type: mcp` server) may read the client's credential only from a
place that is not the gateway's: another header (`X-Backend-Token`), a cookie, a query
parameter. The gateway's places are `auth.apiKeys.header` (`authorization` by default) and, with
`auth.jwt`, `Authorization` (where jwt_authn reads bearer tokens). The filter enforces the same
rule again at run time (`auth.zig` `isGatewayHeader`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcpgw.registry.authmodel import ServerAuth
from mcpgw.registry.model import Include, McpServer, SecurityScheme
from mcpgw.registry.reader import Problem, Reader, join

_JWT_HEADER = "authorization"


def gateway_headers(auth: ServerAuth | None) -> dict[str, str]:
    """The request headers (lower-case) that carry the gateway's own credential, each with the
    `auth` field that makes it so."""
    if auth is None:
        return {}
    places: dict[str, str] = {}
    if auth.jwt:
        places[_JWT_HEADER] = "auth.jwt (bearer tokens in Authorization)"
    if auth.api_keys is not None:
        places.setdefault(auth.api_keys.header, f"auth.apiKeys.header ({auth.api_keys.header!r})")
    return places


def forwards_gateway_credential(auth: ServerAuth | None, scheme: SecurityScheme | None) -> str | None:
    """Why passing through the client's credential in `scheme` would forward the gateway's
    own, or None when it would not."""
    if scheme is None or scheme.location != "header":
        return None
    field = gateway_headers(auth).get(scheme.name)
    if field is None:
        return None
    return (
        f"passes the client's {scheme.name!r} header through to the backend, but with {field} that "
        "header carries the credential the gateway validates, which is never forwarded (MCP: no "
        "token passthrough); let the client send the backend's credential in another header "
        "(e.g. X-Backend-Token) or a cookie, and name that scheme here"
    )


def check_passthrough(
    r: Reader, auth: ServerAuth | None, schemes: list[SecurityScheme], data: Mapping[str, Any]
) -> None:
    """Per document: every passthrough of the server (`tools[i].security`, or `security` of a
    `type: mcp` server) against its own `auth`. Reads the raw document for the field paths; the
    shapes were checked by the tool and upstream parsers already."""
    if auth is None:
        return
    by_id = {s.id: s for s in schemes}
    places: list[tuple[str, Any]] = [("security", data.get("security"))]
    tools = data.get("tools")
    if isinstance(tools, list):
        places += [
            (join(join("tools", i), "security"), t.get("security"))
            for i, t in enumerate(tools)
            if isinstance(t, dict)
        ]
    for path, security in places:
        if not isinstance(security, dict) or security.get("passthrough") is not True:
            continue
        scheme_id = security.get("id")
        reason = forwards_gateway_credential(
            auth, by_id.get(scheme_id) if isinstance(scheme_id, str) else None
        )
        if reason is not None:
            r.fail(join(path, "id"), f"{scheme_id!r} {reason}")


def check_included_passthrough(
    server: McpServer, target: McpServer, include: Include, path: str
) -> list[Problem]:
    """Across documents: a server with `auth` that includes another's passthrough tools hands
    its callers' requests to them, so they are held to the including server's `auth`."""
    if server.auth is None:
        return []
    schemes = {s.id: s for s in target.security_schemes}
    problems: list[Problem] = []
    for tool in target.tools:
        if tool.client_security is None or not tool.client_security.passthrough:
            continue
        if include.tools is not None and tool.name not in include.tools:
            continue
        reason = forwards_gateway_credential(server.auth, schemes.get(tool.client_security.scheme_id))
        if reason is not None:
            problems.append(Problem(server.source, path, f"tool {tool.name!r} of {target.key!r} {reason}"))
    return problems
