"""No token passthrough: with `auth:` on, a passthrough of the gateway's own credential is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mcpgw.registry.filesource import load_directory
from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.reader import Invalid
from mcpgw.registry.secrets import resolve as resolve_secrets
from mcpgw.registry.validate import parse_server
from mcpgw.translate.filterconfig import filter_config
from tests.unit.test_admin import server_doc
from tests.unit.test_mcp_upstream import upstream_doc

JWT = [{"issuer": "https://idp.example", "jwks": {"uri": "https://idp.example/jwks"}}]
SCHEMES = [
    {"id": "userToken", "type": "http", "scheme": "bearer"},
    {"id": "apiKeyHeader", "type": "apiKey", "in": "header", "name": "X-Api-Key"},
    {"id": "backendToken", "type": "apiKey", "in": "header", "name": "X-Backend-Token"},
    {"id": "session", "type": "apiKey", "in": "header", "name": "Cookie"},
    {"id": "queryKey", "type": "apiKey", "in": "query", "name": "key"},
    {"id": "backendBearer", "type": "http", "scheme": "bearer", "defaultCredential": "b"},
]


def passing(scheme: str, auth: Any, *, to: str | None = "backendBearer") -> dict[str, Any]:
    """A REST server whose second tool passes the client's credential in `scheme` through."""
    document = server_doc(securitySchemes=SCHEMES, auth=auth)
    tool = dict(document["tools"][0], name="mine", security={"id": scheme, "passthrough": True})
    tool["requestTemplate"] = dict(tool["requestTemplate"])
    if to is not None:
        tool["requestTemplate"]["security"] = {"id": to}
    document["tools"].append(tool)
    return document


def problems(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(Invalid) as error:
        parse_server(document, "svc.yaml")
    return [(p.path, p.reason) for p in error.value.problems]


@pytest.mark.parametrize(
    ("scheme", "auth", "field"),
    [
        # `Authorization: Bearer` with JWT: the very token jwt_authn verified.
        ("userToken", {"jwt": JWT}, "auth.jwt"),
        # The default API-key header is Authorization too.
        ("userToken", {"apiKeys": {}}, "auth.apiKeys.header"),
        # A custom API-key header, in any case.
        ("apiKeyHeader", {"apiKeys": {"header": "x-API-key"}}, "auth.apiKeys.header"),
        ("userToken", {"required": False, "apiKeys": {"header": "X-Api-Key"}, "jwt": JWT}, "auth.jwt"),
    ],
)
def test_passing_the_gateway_credential_through_is_refused(scheme: str, auth: Any, field: str) -> None:
    found = problems(passing(scheme, auth))
    assert len(found) == 1, found
    ((path, reason),) = found
    assert path == "tools[1].security.id"
    assert field in reason and "never forwarded" in reason and "X-Backend-Token" in reason, reason


@pytest.mark.parametrize(
    ("scheme", "auth"),
    [
        ("backendToken", {"jwt": JWT}),
        ("backendToken", {"apiKeys": {}}),
        ("session", {"apiKeys": {"header": "X-Api-Key"}, "jwt": JWT}),
        ("queryKey", {"apiKeys": {}}),
        # API keys in X-Api-Key, no JWT: Authorization is the client's own to pass.
        ("userToken", {"apiKeys": {"header": "X-Api-Key"}}),
        # Without auth the gateway validates nothing: passthrough as before.
        ("userToken", None),
    ],
)
def test_another_header_a_cookie_or_no_gateway_auth_passes(scheme: str, auth: Any) -> None:
    document = passing(scheme, auth)
    if auth is None:
        del document["auth"]
    server = parse_server(document, "svc.yaml")
    (tool,) = [t for t in server.tools if t.name == "mine"]
    assert tool.client_security is not None and tool.client_security.scheme_id == scheme


def test_the_named_backend_credential_reaches_the_filter_config() -> None:
    server = parse_server(passing("backendToken", {"apiKeys": {}}, to="backendBearer"))
    snapshot = RegistrySnapshot(servers=(server,))
    config = filter_config(server, snapshot, resolve_secrets(snapshot))
    (mine,) = [t for t in config["tools"] if t["name"] == "mine"]
    assert mine["request"]["auth"]["passthrough"] == {
        "from": {"in": "header", "name": "x-backend-token", "prefix": ""},
        "to": {"in": "header", "name": "authorization", "prefix": "Bearer "},
    }


def test_a_type_mcp_server_is_held_to_the_same_rule() -> None:
    bad = upstream_doc(
        securitySchemes=SCHEMES, security={"id": "userToken", "passthrough": True}, auth={"jwt": JWT}
    )
    assert [p for p, _ in problems(bad)] == ["security.id"]
    good = upstream_doc(
        securitySchemes=SCHEMES,
        security={"id": "backendToken", "passthrough": True},
        upstreamSecurity={"id": "backendBearer"},
        auth={"jwt": JWT},
    )
    server = parse_server(good, "svc.yaml")
    assert server.mcp is not None and server.mcp.client_security is not None


def test_an_included_passthrough_tool_is_held_to_the_including_servers_auth(tmp_path: Path) -> None:
    """Server `team` (no auth) passes Authorization through; `front` (API keys in Authorization)
    includes that tool: its callers' keys would reach team's backend."""
    team = passing("userToken", None)
    del team["auth"]
    team["name"] = "team"
    front = server_doc(
        name="front", auth={"apiKeys": {}}, include=[{"server": "default/team", "tools": ["mine"]}]
    )
    (tmp_path / "team.yaml").write_text(yaml.safe_dump(team))
    (tmp_path / "front.yaml").write_text(yaml.safe_dump(front))
    with pytest.raises(Invalid) as error:
        load_directory(tmp_path)
    found = [(Path(p.file).name, p.path, p.reason) for p in error.value.problems]
    assert len(found) == 1, found
    ((file, path, reason),) = found
    assert (file, path) == ("front.yaml", "include[0]")
    assert "tool 'mine' of 'default/team'" in reason and "auth.apiKeys.header" in reason
    # Including only the other tool is fine.
    front["include"] = [{"server": "default/team", "tools": ["get"]}]
    front["tools"] = []
    (tmp_path / "front.yaml").write_text(yaml.safe_dump(front))
    assert {s.name for s in load_directory(tmp_path).servers} == {"team", "front"}
