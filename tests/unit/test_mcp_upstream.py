"""`type: mcp` servers: validation of the document, the filter's `mcp_upstream` section, clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.secrets import resolve as resolve_secrets
from mcpgw.registry.validate import check_includes, parse_server
from mcpgw.translate.envoy import PLUGIN_CLUSTER, Translator, translate
from mcpgw.translate.filterconfig import filter_config
from mcpgw.xds import types
from tests.unit.test_registry import minimal, problems_of
from tests.unit.test_translate import SETTINGS, serialized, snapshot_of


def upstream_doc(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "kind": "McpServer",
        "type": "mcp",
        "namespace": "team",
        "name": "weather",
        "backend": {"endpoints": ["127.0.0.1:9001", "127.0.0.1:9002"], "timeoutMs": 3000},
    }
    document.update(overrides)
    return document


SCHEMES = [
    {"id": "upstreamKey", "type": "apiKey", "in": "header", "name": "X-Api-Key", "defaultCredential": "k-1"},
    {"id": "bearer", "type": "http", "scheme": "bearer"},
    {"id": "basic", "type": "http", "scheme": "basic", "defaultCredential": "user:pass"},
]


# --- validation -----------------------------------------------------------------------------


def test_minimal_mcp_server_takes_the_defaults() -> None:
    server = parse_server(upstream_doc(), "w.yaml")
    assert server.mcp is not None and server.tools == ()
    assert (server.mcp.path, server.mcp.transport) == ("/mcp", "streamable-http")
    assert server.mcp.allow_tools is None and server.mcp.overrides == ()
    assert server.mcp.security is None and server.mcp.client_security is None
    # The REST kind stays the default and may be named.
    assert parse_server(minimal()).mcp is None
    assert parse_server(minimal(type="rest")).mcp is None


def test_full_mcp_server_document() -> None:
    server = parse_server(
        upstream_doc(
            path="/v2/mcp",
            transport="streamable-http",
            allowTools=["forecast", "alerts"],
            tools=[
                {"name": "forecast", "description": "Forecast for a city."},
                {"name": "alerts", "title": "Weather alerts"},
            ],
            securitySchemes=SCHEMES,
            upstreamSecurity={"id": "upstreamKey"},
            limits={"maxResponseBytes": 1000},
            allowedOrigins=["https://app.example.com"],
            description="Someone else's weather server",
        ),
        "w.yaml",
    )
    mcp = server.mcp
    assert mcp is not None
    assert mcp.path == "/v2/mcp" and mcp.allow_tools == ("forecast", "alerts")
    assert [(o.name, o.description, o.title) for o in mcp.overrides] == [
        ("forecast", "Forecast for a city.", None),
        ("alerts", None, "Weather alerts"),
    ]
    assert mcp.security is not None and mcp.security.scheme_id == "upstreamKey"
    # The upstream credential is a secret of this server like any other.
    assert "w.yaml: securitySchemes[0].defaultCredential" in [s.where for s in server.secrets]


def test_sse_transport_takes_its_own_default_path() -> None:
    mcp = parse_server(upstream_doc(transport="sse")).mcp
    assert mcp is not None and (mcp.transport, mcp.path) == ("sse", "/sse")
    mcp = parse_server(upstream_doc(transport="sse", path="/v1/events?tenant=a")).mcp
    assert mcp is not None and mcp.path == "/v1/events?tenant=a"
    # Streamable HTTP keeps /mcp.
    mcp = parse_server(upstream_doc(transport="streamable-http")).mcp
    assert mcp is not None and (mcp.transport, mcp.path) == ("streamable-http", "/mcp")


def test_transport_is_checked_naming_the_field() -> None:
    ((path, reason),) = problems_of(upstream_doc(transport="grpc"))
    assert (path, reason) == ("transport", "must be one of streamable-http, sse, got 'grpc'")
    assert problems_of(upstream_doc(transport="sse", path="sse")) == [
        ("path", "'sse' is not valid: an absolute path like '/sse'")
    ]
    # The broker connects to an SSE upstream by the endpoints' own names.
    ((path, reason),) = problems_of(
        upstream_doc(transport="sse", backend={"endpoints": ["10.0.0.5:8080"], "host": "mcp.example"})
    )
    assert path == "backend.host" and reason.startswith("not for transport: sse: ")
    assert (
        parse_server(
            upstream_doc(backend={"endpoints": ["10.0.0.5:8080"], "host": "mcp.example"})
        ).backend.host_header
        == "mcp.example"
    )


def test_rest_tool_fields_are_refused_with_their_path() -> None:
    problems = problems_of(
        upstream_doc(
            tools=[
                {"name": "ok", "description": "fine"},
                {"name": "get", "requestTemplate": {"url": "/x"}, "args": [], "description": "d"},
                {"name": "odd", "color": "red", "description": "d"},
            ]
        )
    )
    assert problems == [
        (
            "tools[1].args",
            "not for a type: mcp server: the upstream MCP server defines its tools; "
            "only description and title can be overridden",
        ),
        (
            "tools[1].requestTemplate",
            "not for a type: mcp server: the upstream MCP server defines its tools; "
            "only description and title can be overridden",
        ),
        (
            "tools[2].color",
            "unknown field (allowed: args, description, errorResponseTemplate, name, outputSchema, "
            "requestTemplate, responseTemplate, security, title)",
        ),
    ]


def test_override_entries_are_checked() -> None:
    problems = problems_of(
        upstream_doc(
            allowTools=["a", "a", "b c"],
            tools=[{"name": "a"}, {"name": "z", "description": "d"}, {"name": "a", "title": "t"}],
        )
    )
    assert problems == [
        ("allowTools[1]", "duplicate tool name 'a'"),
        ("allowTools[2]", "'b c' is not a tool name (letters, digits, '_', '-', '.', at most 128)"),
        ("tools[0]", "nothing to override: set description and/or title"),
        ("tools[1].name", "'z' is not in allowTools, so it is never served"),
        ("tools[2].name", "duplicate tool name 'a' (also tools[0])"),
    ]


def test_rest_only_and_mcp_only_fields() -> None:
    problems = problems_of(
        upstream_doc(config={"a": "b"}, include=[], pageSize=5, instructions="i", version="2", title="t")
    )
    assert [path for path, _ in problems] == [
        "config",
        "include",
        "pageSize",
        "instructions",
        "version",
        "title",
    ]
    assert all(reason.startswith("not for a type: mcp server: ") for _, reason in problems)
    problems = problems_of(minimal(path="/mcp", transport="streamable-http", upstreamSecurity={"id": "x"}))
    assert problems == [
        ("path", "only for type: mcp servers (an MCP server behind the gateway)"),
        ("transport", "only for type: mcp servers (an MCP server behind the gateway)"),
        ("upstreamSecurity", "only for type: mcp servers (an MCP server behind the gateway)"),
    ]
    assert problems_of(minimal(type="grpc")) == [("type", "must be one of rest, mcp, got 'grpc'")]


def test_backend_and_path_are_required_and_checked() -> None:
    document = upstream_doc(path="mcp#x")
    del document["backend"]
    assert problems_of(document) == [
        ("backend", "is required: the hosts of the upstream MCP server (endpoints: ['host:port'])"),
        ("path", "'mcp#x' is not valid: an absolute path like '/mcp'"),
    ]


def test_credentials_toward_the_upstream() -> None:
    # A scheme without a credential, and no passthrough: nothing to send.
    assert problems_of(upstream_doc(securitySchemes=SCHEMES, upstreamSecurity={"id": "bearer"})) == [
        (
            "upstreamSecurity",
            "no credential: set defaultCredential on scheme 'bearer', a credential here, "
            "or security: {id, passthrough: true} to forward the client's own",
        )
    ]
    # An unknown scheme, a passthrough that is not one, basic to bearer.
    assert problems_of(upstream_doc(securitySchemes=SCHEMES, upstreamSecurity={"id": "nope"})) == [
        ("upstreamSecurity.id", "no security scheme 'nope' in securitySchemes (basic, bearer, upstreamKey)")
    ]
    ((path, reason),) = problems_of(upstream_doc(securitySchemes=SCHEMES, security={"id": "bearer"}))
    assert path == "security.passthrough" and "passthrough: true" in reason
    ((path, reason),) = problems_of(
        upstream_doc(
            securitySchemes=SCHEMES,
            security={"id": "basic", "passthrough": True},
            upstreamSecurity={"id": "bearer"},
        )
    )
    assert path == "security" and "basic" in reason
    # Passthrough into the same scheme, or into the upstream's; an inline override credential.
    for document in (
        upstream_doc(securitySchemes=SCHEMES, security={"id": "bearer", "passthrough": True}),
        upstream_doc(
            securitySchemes=SCHEMES,
            security={"id": "bearer", "passthrough": True},
            upstreamSecurity={"id": "upstreamKey"},
        ),
        upstream_doc(securitySchemes=SCHEMES, upstreamSecurity={"id": "bearer", "credential": {"env": "T"}}),
    ):
        parse_server(document)


def test_a_rest_server_cannot_include_an_mcp_servers_tools() -> None:
    rest = parse_server(minimal(include=[{"server": "team/weather"}]), "r.yaml")
    problems = check_includes([rest, parse_server(upstream_doc())])
    assert [(p.file, p.path, p.reason) for p in problems] == [
        (
            "r.yaml",
            "include[0].server",
            "'team/weather' is a type: mcp server: its tools come from its upstream and cannot be included",
        )
    ]


# --- translation ----------------------------------------------------------------------------


def test_filter_config_has_an_mcp_upstream_section(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("from-file\n")
    schemes = [*SCHEMES, {"id": "fileKey", "type": "apiKey", "in": "query", "name": "key"}]
    server = parse_server(
        upstream_doc(
            backend={
                "endpoints": ["10.0.0.5:8080", "10.0.0.6:80", "[::1]:9000"],
                "timeoutMs": 3000,
            },
            path="/v2/mcp?tenant=a",
            allowTools=["forecast"],
            tools=[{"name": "forecast", "description": "Forecast.", "title": "Forecast"}],
            securitySchemes=schemes,
            upstreamSecurity={"id": "fileKey", "credential": {"file": str(tmp_path / "key")}},
        )
    )
    snapshot = RegistrySnapshot((server,))
    config = filter_config(server, snapshot, resolve_secrets(snapshot))
    assert "upstream" not in config and config["tools"] == [] and config["tools_list"] == {"tools": []}
    assert config["base_path"] == "/mcp/team/weather"
    assert config["mcp_upstream"] == {
        "hosts": [
            {"cluster": "mcpgw/team/weather|h0", "authority": "10.0.0.5:8080"},
            {"cluster": "mcpgw/team/weather|h1", "authority": "10.0.0.6"},
            {"cluster": "mcpgw/team/weather|h2", "authority": "[::1]:9000"},
        ],
        "path": "/v2/mcp?tenant=a",
        "timeout_ms": 3000,
        "allow_tools": ["forecast"],
        "tools": [{"name": "forecast", "description": "Forecast.", "title": "Forecast"}],
        "auth": {"static": [{"in": "query", "name": "key", "value": "from-file"}], "passthrough": None},
    }


@pytest.mark.parametrize(
    ("fields", "auth"),
    [
        ({}, None),
        (
            {"upstreamSecurity": {"id": "basic"}},
            {
                "static": [{"in": "header", "name": "authorization", "value": "Basic dXNlcjpwYXNz"}],
                "passthrough": None,
            },
        ),
        (
            {"security": {"id": "bearer", "passthrough": True}},
            {
                "static": [],
                "passthrough": {
                    "from": {"in": "header", "name": "authorization", "prefix": "Bearer "},
                    "to": {"in": "header", "name": "authorization", "prefix": "Bearer "},
                },
            },
        ),
        (
            {"security": {"id": "bearer", "passthrough": True}, "upstreamSecurity": {"id": "upstreamKey"}},
            {
                "static": [],
                "passthrough": {
                    "from": {"in": "header", "name": "authorization", "prefix": "Bearer "},
                    "to": {"in": "header", "name": "x-api-key", "prefix": ""},
                },
            },
        ),
    ],
)
def test_upstream_auth(fields: dict[str, Any], auth: dict[str, Any] | None) -> None:
    server = parse_server(upstream_doc(securitySchemes=SCHEMES, **fields))
    snapshot = RegistrySnapshot((server,))
    section = filter_config(server, snapshot, resolve_secrets(snapshot))["mcp_upstream"]
    assert section["auth"] == auth
    assert "allow_tools" not in section and section["tools"] == []


def test_an_sse_upstream_is_reached_through_the_brokers_bridge() -> None:
    server = parse_server(
        upstream_doc(
            transport="sse",
            backend={"scheme": "https", "endpoints": ["10.0.0.5:8080", "[::1]:443"]},
            path="/v1/sse?tenant=a",
            securitySchemes=[
                {"id": "q", "type": "apiKey", "in": "query", "name": "key", "defaultCredential": "k"}
            ],
            upstreamSecurity={"id": "q"},
        )
    )
    snapshot = RegistrySnapshot((server,))
    section = filter_config(server, snapshot, resolve_secrets(snapshot))["mcp_upstream"]
    assert section["hosts"] == [
        {
            "cluster": "mcpgw-broker",
            "authority": "10.0.0.5:8080",
            "sse_url": "https://10.0.0.5:8080/v1/sse?tenant=a",
        },
        {"cluster": "mcpgw-broker", "authority": "[::1]", "sse_url": "https://[::1]:443/v1/sse?tenant=a"},
    ]
    assert section["path"] == "/v1/bridge" and section["timeout_ms"] == 10000
    assert section["auth"] == {"static": [{"in": "query", "name": "key", "value": "k"}], "passthrough": None}
    # No Envoy cluster for its hosts: the broker connects to them (mcpgw-broker is in the bootstrap).
    resources = translate(snapshot_of(upstream_doc(transport="sse"), minimal()), SETTINGS)
    assert set(resources[types.CLUSTER]) == {PLUGIN_CLUSTER, "mcpgw/default/svc"}
    assert set(resources[types.ENDPOINT]) == {"mcpgw/default/svc"}


def test_one_cluster_per_upstream_host() -> None:
    resources = translate(snapshot_of(upstream_doc(), minimal()), SETTINGS)
    assert set(resources[types.CLUSTER]) == {
        PLUGIN_CLUSTER,
        "mcpgw/default/svc",
        "mcpgw/team/weather|h0",
        "mcpgw/team/weather|h1",
    }
    assert set(resources[types.ENDPOINT]) == {
        "mcpgw/default/svc",
        "mcpgw/team/weather|h0",
        "mcpgw/team/weather|h1",
    }
    assignment = json_format.MessageToDict(resources[types.ENDPOINT]["mcpgw/team/weather|h1"])
    (endpoint,) = assignment["endpoints"][0]["lbEndpoints"]
    assert endpoint["endpoint"]["address"]["socketAddress"] == {"address": "127.0.0.1", "portValue": 9002}
    # DNS names: one LOGICAL_DNS cluster per host (one address of the name at a time), TLS with
    # that host as SNI.
    dns = upstream_doc(backend={"scheme": "https", "endpoints": ["a.example:443", "b.example:8443"]})
    clusters = translate(snapshot_of(dns), SETTINGS)[types.CLUSTER]
    second = json_format.MessageToDict(clusters["mcpgw/team/weather|h1"])
    assert second["type"] == "LOGICAL_DNS"
    assert second["transportSocket"]["typedConfig"]["sni"] == "b.example"


def test_translator_tracks_host_clusters_across_edits() -> None:
    translator = Translator(SETTINGS)
    translator.translate(snapshot_of(upstream_doc()))
    fewer = upstream_doc(backend={"endpoints": ["127.0.0.1:9001"]})
    result = translator.translate(snapshot_of(fewer))
    assert set(result[types.CLUSTER]) == {PLUGIN_CLUSTER, "mcpgw/team/weather|h0"}
    assert translator.delta is not None
    assert translator.delta.changed[types.CLUSTER] == {"mcpgw/team/weather|h0", "mcpgw/team/weather|h1"}
    assert serialized(result) == serialized(translate(snapshot_of(fewer), SETTINGS))
    result = translator.translate(snapshot_of())
    assert set(result[types.CLUSTER]) == {PLUGIN_CLUSTER} and result[types.ENDPOINT] == {}


def test_the_example_documents_validate() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "upstream-mcp"
    path = examples / "weather.yaml"
    server = parse_server(yaml.safe_load(path.read_text()), str(path))
    assert server.mcp is not None and server.mcp.allow_tools == ("forecast", "alerts")
    path = examples / "legacy-sse.yaml"
    server = parse_server(yaml.safe_load(path.read_text()), str(path))
    assert server.mcp is not None and (server.mcp.transport, server.mcp.path) == ("sse", "/sse")
