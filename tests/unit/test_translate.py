"""The translator: registry snapshot → Envoy resources, and server → filter configuration."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2
from envoy.extensions.wasm.v3 import wasm_pb2 as wasm_v3_pb2
from google.protobuf import json_format, wrappers_pb2

from mcpgw.limits import ListenerLimits
from mcpgw.registry.model import RegistrySnapshot, Secret
from mcpgw.registry.secrets import UNAVAILABLE
from mcpgw.registry.secrets import resolve as resolve_secrets
from mcpgw.registry.validate import Invalid, check_includes, parse_server
from mcpgw.translate.envoy import (
    LISTENER_NAME,
    PLUGIN_CLUSTER,
    ROUTE_CONFIG_NAME,
    GatewaySettings,
    PluginRef,
    Translator,
    translate,
)
from mcpgw.translate.filterconfig import filter_config
from mcpgw.xds import types
from mcpgw.xds.cache import SnapshotCache
from tests.unit.test_registry import minimal

SETTINGS = GatewaySettings(
    PluginRef("http://127.0.0.1:18002/plugins/mcp-server/0.1.0/plugin.wasm", "ab" * 32)
)


def snapshot_of(*documents: dict[str, Any]) -> RegistrySnapshot:
    servers = sorted((parse_server(d) for d in documents), key=lambda s: s.key)
    return RegistrySnapshot(servers=tuple(servers))


def serialized(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, bytes]]:
    return {
        t: {n: m.SerializeToString(deterministic=True) for n, m in named.items()}
        for t, named in resources.items()
    }


def test_resource_names_per_type() -> None:
    resources = translate(snapshot_of(minimal(), minimal(name="two", namespace="team")), SETTINGS)
    assert set(resources[types.CLUSTER]) == {PLUGIN_CLUSTER, "mcpgw/default/svc", "mcpgw/team/two"}
    assert set(resources[types.ENDPOINT]) == {"mcpgw/default/svc", "mcpgw/team/two"}
    assert set(resources[types.EXTENSION_CONFIG]) == {"mcpgw/default/svc", "mcpgw/team/two"}
    assert set(resources[types.LISTENER]) == {LISTENER_NAME}
    assert set(resources[types.ROUTE]) == {ROUTE_CONFIG_NAME}


def test_translation_is_pure_and_deterministic() -> None:
    snapshot = snapshot_of(minimal(), minimal(name="two"))
    assert serialized(translate(snapshot, SETTINGS)) == serialized(translate(snapshot, SETTINGS))


def test_tool_edit_changes_only_that_servers_extension_config() -> None:
    before = serialized(translate(snapshot_of(minimal(), minimal(name="two")), SETTINGS))
    edited = minimal()
    edited["tools"][0]["description"] = "a new description"
    after = serialized(translate(snapshot_of(edited, minimal(name="two")), SETTINGS))
    changed = {(t, n) for t in after for n in after[t] if before[t].get(n) != after[t][n]}
    assert changed == {(types.EXTENSION_CONFIG, "mcpgw/default/svc")}


def test_adding_a_server_adds_its_cluster_route_and_matcher_entry() -> None:
    resources = translate(snapshot_of(minimal(), minimal(name="two")), SETTINGS)
    listener = json_format.MessageToDict(resources[types.LISTENER][LISTENER_NAME])
    manager = listener["filterChains"][0]["filters"][0]["typedConfig"]
    matcher = manager["httpFilters"][0]["typedConfig"]["xdsMatcher"]["matcherTree"]
    assert set(matcher["prefixMatchMap"]["map"]) == {"/mcp/default/svc", "/mcp/default/two"}
    action = matcher["prefixMatchMap"]["map"]["/mcp/default/two"]["action"]["typedConfig"]
    assert action["dynamicConfig"]["name"] == "mcpgw/default/two"
    routes = json_format.MessageToDict(resources[types.ROUTE][ROUTE_CONFIG_NAME])["virtualHosts"][0]["routes"]
    assert [r["name"] for r in routes] == [
        "default/svc/sse",
        "default/svc",
        "default/two/sse",
        "default/two",
        "not-found",
    ]


def test_empty_registry_has_no_composite_filter() -> None:
    resources = translate(RegistrySnapshot(servers=()), SETTINGS)
    listener = json_format.MessageToDict(resources[types.LISTENER][LISTENER_NAME])
    filters = listener["filterChains"][0]["filters"][0]["typedConfig"]["httpFilters"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.router"]


def test_client_sent_broker_headers_are_stripped_before_any_filter() -> None:
    resources = translate(snapshot_of(minimal()), SETTINGS)
    listener = json_format.MessageToDict(resources[types.LISTENER][LISTENER_NAME])
    manager = listener["filterChains"][0]["filters"][0]["typedConfig"]
    (mutation,) = manager["earlyHeaderMutationExtensions"]
    assert [m["remove"] for m in mutation["typedConfig"]["mutations"]] == [
        "x-mcpgw-sse-channel",
        "x-mcpgw-sse-endpoint",
        "x-mcpgw-client",
    ]


def test_envoy_buffers_a_body_past_every_servers_request_limit() -> None:
    """Envoy's own buffer limit (1 MiB by default) sits above the largest maxRequestBytes, so the
    filter answers first; Envoy's own 413 becomes a JSON-RPC error too."""

    def listener_of(*documents: dict[str, Any]) -> Any:
        return translate(snapshot_of(*documents), SETTINGS)[types.LISTENER][LISTENER_NAME]

    assert listener_of().per_connection_buffer_limit_bytes.value == 2 << 20
    assert listener_of(minimal()).per_connection_buffer_limit_bytes.value == 2 << 20
    big = minimal(name="big", limits={"maxRequestBytes": 8 << 20})
    assert listener_of(minimal(), big).per_connection_buffer_limit_bytes.value == 9 << 20
    listener = json_format.MessageToDict(listener_of(minimal()))
    manager = listener["filterChains"][0]["filters"][0]["typedConfig"]
    (mapper,) = manager["localReplyConfig"]["mappers"]
    assert "request_payload_too_large" in mapper["filter"]["extensionFilter"]["typedConfig"]["expression"]
    assert json.loads(mapper["body"]["inlineString"])["error"]["code"] == -32600


def test_the_listener_bounds_slow_and_idle_clients_and_backends_have_their_own_breakers() -> None:
    limits = ListenerLimits(
        request_headers_timeout_s=3, idle_timeout_s=7, max_concurrent_streams=9, backend_max_requests=11
    )
    settings = dataclasses.replace(SETTINGS, limits=limits)
    resources = translate(snapshot_of(minimal()), settings)
    listener = json_format.MessageToDict(resources[types.LISTENER][LISTENER_NAME])
    manager = listener["filterChains"][0]["filters"][0]["typedConfig"]
    assert manager["requestHeadersTimeout"] == "3s"
    assert manager["requestTimeout"] == "300s" and manager["streamIdleTimeout"] == "300s"
    assert manager["commonHttpProtocolOptions"] == {"idleTimeout": "7s"}
    assert manager["http2ProtocolOptions"] == {"maxConcurrentStreams": 9}
    cluster = json_format.MessageToDict(resources[types.CLUSTER]["mcpgw/default/svc"])
    assert cluster["circuitBreakers"] == {
        "thresholds": [{"maxConnections": 11, "maxPendingRequests": 11, "maxRequests": 11}]
    }
    # The route to the broker names the client's connection, for the per-client stream limit.
    routes = json_format.MessageToDict(resources[types.ROUTE][ROUTE_CONFIG_NAME])
    sse = routes["virtualHosts"][0]["routes"][0]
    assert sse["requestHeadersToAdd"][0]["header"] == {
        "key": "x-mcpgw-client",
        "value": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%",
    }


def test_dns_backends_use_strict_dns_and_https_gets_tls_with_sni() -> None:
    document = minimal(backend={"endpoints": ["api.internal:443"], "scheme": "https"})
    cluster = translate(snapshot_of(document), SETTINGS)[types.CLUSTER]["mcpgw/default/svc"]
    assert isinstance(cluster, cluster_pb2.Cluster)
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"
    assert "mcpgw/default/svc" not in translate(snapshot_of(document), SETTINGS)[types.ENDPOINT]


def test_extension_config_carries_remote_code_and_filter_config() -> None:
    extension = translate(snapshot_of(minimal()), SETTINGS)[types.EXTENSION_CONFIG]["mcpgw/default/svc"]
    wasm = wasm_pb2.Wasm()
    extension.typed_config.Unpack(wasm)
    remote = wasm.config.vm_config.code.remote
    assert (remote.http_uri.uri, remote.http_uri.cluster, remote.sha256) == (
        SETTINGS.plugin.url,
        PLUGIN_CLUSTER,
        SETTINGS.plugin.sha256,
    )
    assert wasm.config.allow_on_headers_stop_iteration
    # A VM that traps is reloaded instead of failing its worker's servers until Envoy restarts.
    assert wasm.config.failure_policy == wasm_v3_pb2.FailurePolicy.FAIL_RELOAD
    assert wasm.config.reload_config.backoff.base_interval.ToMilliseconds() > 0
    value = wrappers_pb2.StringValue()
    wasm.config.configuration.Unpack(value)
    assert json.loads(value.value)["base_path"] == "/mcp/default/svc"


def test_a_plugin_file_is_named_instead_of_fetched() -> None:
    """An Envoy beside the control plane reads the module (no remote fetch: none of its log lines)."""
    module = Path("/opt/mcpgw/plugins/mcp-server/0.1.0/plugin.wasm")
    settings = dataclasses.replace(SETTINGS, plugin=dataclasses.replace(SETTINGS.plugin, path=module))
    extension = translate(snapshot_of(minimal()), settings)[types.EXTENSION_CONFIG]["mcpgw/default/svc"]
    wasm = wasm_pb2.Wasm()
    extension.typed_config.Unpack(wasm)
    code = wasm.config.vm_config.code
    assert (code.WhichOneof("specifier"), code.local.filename) == ("local", str(module))


def config_of(*documents: dict[str, Any], secrets: dict[Secret, str] | None = None) -> dict[str, Any]:
    """The filter configuration of the first document's server, in a snapshot of all of them."""
    snapshot = snapshot_of(*documents)
    first = parse_server(documents[0])
    return filter_config(snapshot.server(first.key), snapshot, secrets or {})  # type: ignore[arg-type]


def out(source: str, path: list[str], enc: str) -> dict[str, Any]:
    return {"out": {source: path}, "enc": enc}


def test_filter_config_compiles_templates_into_expression_trees() -> None:
    document = minimal(config={"tenant": "acme"})
    document["tools"][0]["args"] += [{"name": "q", "type": "string"}, {"name": "tags", "type": "array"}]
    document["tools"][0]["requestTemplate"] = {
        "url": "/items/{{.args.id}}?tenant={{.config.tenant}}&q={{.args.q | urlquery}}",
        "headers": [
            {"key": "X-Id", "value": "id-{{.args.id | toJson}}"},
            {"key": "Content-Type", "value": "text/plain"},
        ],
        "body": "{{if .args.q}}{{.args.q | upper}}{{else}}none{{end}}:{{range .args.tags}}[{{.}}]{{end}}",
        "method": "POST",
    }
    document["tools"][0]["responseTemplate"] = {
        "body": 'name={{.data.name | default "?"}} st={{._status}} id={{._headers.X-Id}} all={{. | toJson}}'
    }
    document["tools"][0]["outputSchema"] = {"type": "object"}
    tool = config_of(document)["tools"][0]
    assert tool["request"]["path"] == [
        {"lit": "/items/"},
        out("args", ["id"], "path"),
        # Config in a URL is substituted as text first: it may carry the scheme and host.
        {"lit": "?tenant=acme&q="},
        # urlquery output is already escaped, so it is not encoded twice.
        {"out": {"fn": "urlquery", "args": [{"args": ["q"]}]}, "enc": "raw"},
    ]
    assert tool["request"]["headers"] == [
        {
            "name": "x-id",
            "value": [{"lit": "id-"}, {"out": {"fn": "toJson", "args": [{"args": ["id"]}]}, "enc": "raw"}],
        }
    ]
    assert tool["request"]["body"] == {
        "kind": "template",
        "content_type": "text/plain",
        "template": [
            {
                "if": {"args": ["q"]},
                "then": [{"out": {"fn": "upper", "args": [{"args": ["q"]}]}, "enc": "raw"}],
                "else": [{"lit": "none"}],
            },
            {"lit": ":"},
            {
                "range": {"args": ["tags"]},
                "do": [{"lit": "["}, out("item", [], "raw"), {"lit": "]"}],
                "else": [],
            },
        ],
    }
    assert tool["response"]["body"] == [
        {"lit": "name="},
        {"out": {"fn": "default", "args": [{"const": "?"}, {"resp": ["data", "name"]}]}, "enc": "raw"},
        {"lit": " st="},
        {"out": {"status": True}, "enc": "raw"},
        {"lit": " id="},
        {"out": {"header": "x-id"}, "enc": "raw"},
        {"lit": " all="},
        {"out": {"fn": "toJson", "args": [{"resp": []}]}, "enc": "raw"},
    ]
    assert tool["response"]["structured"] is True


def test_credentials_static_passthrough_and_secrets_from_env() -> None:
    document = minimal(
        securitySchemes=[
            {"id": "basic", "type": "http", "scheme": "basic", "defaultCredential": "user:pa ss"},
            {"id": "bearer", "type": "http", "scheme": "bearer"},
            {
                "id": "key",
                "type": "apiKey",
                "in": "query",
                "name": "api_key",
                "defaultCredential": {"env": "K"},
            },
            {"id": "hdr", "type": "apiKey", "in": "header", "name": "X-Key"},
        ]
    )
    base = document["tools"][0]
    tools = []
    for name, security, request_security in [
        ("basic", None, {"id": "basic"}),
        ("key", None, {"id": "key"}),
        ("override", None, {"id": "basic", "credential": "other:pw"}),
        ("pass", {"id": "bearer", "passthrough": True}, {"id": "hdr"}),
        ("same", {"id": "bearer", "passthrough": True}, None),
    ]:
        tool = copy.deepcopy(base)
        tool["name"] = name
        tool["requestTemplate"]["security"] = request_security
        if request_security is None:
            del tool["requestTemplate"]["security"]
        if security:
            tool["security"] = security
        tools.append(tool)
    document["tools"] = tools
    server = parse_server(document)
    env_secret = next(s.default_credential for s in server.security_schemes if s.id == "key")
    assert (
        env_secret is not None and "env" in repr(env_secret) and "K" not in repr(env_secret).split("where")[0]
    )
    auth = {
        t["name"]: t["request"]["auth"]
        for t in config_of(document, secrets=resolve_with({"K": "k3y"}, server))["tools"]
    }
    assert auth["basic"] == {
        "static": [{"in": "header", "name": "authorization", "value": "Basic dXNlcjpwYSBzcw=="}],
        "passthrough": None,
    }
    assert auth["key"]["static"] == [{"in": "query", "name": "api_key", "value": "k3y"}]
    assert auth["override"]["static"][0]["value"] == "Basic b3RoZXI6cHc="
    bearer = {"in": "header", "name": "authorization", "prefix": "Bearer "}
    assert auth["pass"] == {
        "static": [],
        "passthrough": {"from": bearer, "to": {"in": "header", "name": "x-key", "prefix": ""}},
    }
    assert auth["same"] == {"static": [], "passthrough": {"from": bearer, "to": bearer}}


def resolve_with(environment: dict[str, str], server: Any) -> dict[Secret, str]:
    import os

    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    try:
        return resolve_secrets(RegistrySnapshot(servers=(server,)))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_unreadable_secret_names_file_and_field_but_not_the_value(tmp_path: Any) -> None:
    document = minimal(
        securitySchemes=[
            {
                "id": "k",
                "type": "apiKey",
                "in": "header",
                "name": "x-k",
                "defaultCredential": {"env": "MCPGW_TEST_UNSET"},
            }
        ]
    )
    document["tools"][0]["requestTemplate"]["security"] = {"id": "k"}
    server = parse_server(document, "reg.yaml")
    with pytest.raises(Invalid) as error:
        resolve_secrets(RegistrySnapshot(servers=(server,)))
    (problem,) = error.value.problems
    assert (problem.file, problem.path) == ("reg.yaml", "securitySchemes[0].defaultCredential")
    assert problem.reason == UNAVAILABLE
    secret_file = tmp_path / "token"
    secret_file.write_text("s3cret\n")
    document["securitySchemes"][0]["defaultCredential"] = {"file": str(secret_file)}
    server = parse_server(document, "reg.yaml")
    assert list(resolve_secrets(RegistrySnapshot(servers=(server,))).values()) == ["s3cret"]


def test_composed_tool_set_calls_the_owning_servers_backend() -> None:
    owner = minimal(name="owner", backend={"endpoints": ["127.0.0.1:9001"], "host": "owner.internal"})
    composed = minimal(name="composed")
    composed["include"] = [{"server": "default/owner", "tools": ["get"]}]
    composed["tools"][0]["name"] = "own"
    config = config_of(composed, owner)
    assert [t["name"] for t in config["tools"]] == ["own", "get"]
    assert "upstream" not in config["tools"][0]
    assert config["tools"][1]["upstream"] == {
        "cluster": "mcpgw/default/owner",
        "authority": "owner.internal",
        "timeout_ms": 10000,
    }
    assert [t["name"] for t in config["tools_list"]["tools"]] == ["own", "get"]


def test_include_problems_are_found_across_documents() -> None:
    owner = parse_server(minimal(name="owner"), "owner.yaml")
    clash = minimal(name="clash", include=[{"server": "default/owner"}, {"server": "default/missing"}])
    problems = check_includes([owner, parse_server(clash, "clash.yaml")])
    assert [(p.file, p.path) for p in problems] == [
        ("clash.yaml", "include[0]"),
        ("clash.yaml", "include[1].server"),
    ]
    assert "clashes" in problems[0].reason and "no such server" in problems[1].reason


def test_filter_config_places_free_arguments_by_position_and_body_mode() -> None:
    document = minimal()
    document["tools"][0]["args"] += [
        {"name": "tag", "position": "query"},
        {"name": "trace", "position": "header"},
        {"name": "name"},
        {"name": "size", "type": "number", "default": 1.5},
    ]
    document["tools"][0]["requestTemplate"].update(method="POST", argsToJsonBody=True)
    config = config_of(document)
    request = config["tools"][0]["request"]
    assert request["query"] == [{"name": "tag", "arg": "tag"}]
    assert request["headers"] == [{"name": "trace", "value": [out("args", ["trace"], "raw")]}]
    assert request["body"] == {"kind": "json_args", "args": ["name", "size"]}
    assert config["tools"][0]["args"][-1] == {
        "name": "size",
        "type": "number",
        "required": False,
        "default": 1.5,
    }
    url_params = copy.deepcopy(document)
    del url_params["tools"][0]["requestTemplate"]["argsToJsonBody"]
    url_params["tools"][0]["requestTemplate"]["argsToUrlParam"] = True
    request = config_of(url_params)["tools"][0]["request"]
    assert [q["name"] for q in request["query"]] == ["tag", "name", "size"] and request["body"] is None


def test_tools_list_is_prerendered_with_input_schema() -> None:
    document = minimal()
    document["tools"][0]["args"].append({"name": "mode", "enum": ["a", "b"], "description": "how"})
    tools = config_of(document)["tools_list"]["tools"]
    assert tools == [
        {
            "name": "get",
            "description": "",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "mode": {"type": "string", "description": "how", "enum": ["a", "b"]},
                },
                "required": ["id"],
            },
        }
    ]


def test_incremental_translator_equals_a_fresh_translation_and_reuses_unchanged_servers() -> None:
    translator = Translator(SETTINGS)
    documents = [minimal(name=f"s{i}") for i in range(5)]
    first = translator.translate(snapshot_of(*documents))
    documents[2]["tools"][0]["description"] = "edited"
    edited = snapshot_of(*documents)
    second = translator.translate(edited)
    assert serialized(second) == serialized(translate(edited, SETTINGS))
    extensions = types.EXTENSION_CONFIG
    reused = {name for name, message in second[extensions].items() if message is first[extensions][name]}
    assert reused == {f"mcpgw/default/s{i}" for i in (0, 1, 3, 4)}
    assert second[types.LISTENER][LISTENER_NAME] is first[types.LISTENER][LISTENER_NAME]
    # A new server changes the shared listener and routes too.
    third = translator.translate(snapshot_of(*documents, minimal(name="s9")))
    assert third[types.LISTENER][LISTENER_NAME] is not first[types.LISTENER][LISTENER_NAME]
    assert serialized(third) == serialized(translate(snapshot_of(*documents, minimal(name="s9")), SETTINGS))


def test_translator_reports_what_changed_and_the_cache_hint_matches_a_full_scan() -> None:
    translator = Translator(SETTINGS)
    hinted, scanned = SnapshotCache(), SnapshotCache()
    documents = [minimal(name=f"s{i}") for i in range(4)]
    first = translator.translate(snapshot_of(*documents))
    assert translator.delta is None
    hinted.set_resources(first)
    scanned.set_resources(first)
    documents[1]["tools"][0]["description"] = "edited"
    second = translator.translate(snapshot_of(*documents))
    assert translator.delta is not None and translator.delta.base is first
    assert translator.delta.changed == {
        types.CLUSTER: frozenset({"mcpgw/default/s1"}),
        types.ENDPOINT: frozenset({"mcpgw/default/s1"}),
        types.EXTENSION_CONFIG: frozenset({"mcpgw/default/s1"}),
        types.SECRET: frozenset(),
    }
    assert (
        hinted.set_resources(second, (translator.delta.base, translator.delta.changed))
        == scanned.set_resources(second)
        == [types.EXTENSION_CONFIG]
    )
    assert hinted.snapshot.versions() == scanned.snapshot.versions()
    # A hint relative to something else than what the cache last got is ignored, not misapplied.
    third = translator.translate(snapshot_of(*documents[:3]))
    assert translator.delta is not None
    stale = SnapshotCache()
    stale.set_resources(first)
    stale.set_resources(third, (translator.delta.base, translator.delta.changed))
    fresh = SnapshotCache()
    fresh.set_resources(third)
    assert stale.snapshot.versions() == fresh.snapshot.versions()


def test_streamable_http_fields_reach_the_filter_config() -> None:
    document = minimal(allowedOrigins=["https://app.example.com"], pageSize=3)
    server = parse_server(document)
    config = filter_config(server, snapshot_of(document), {})
    assert config["allowed_origins"] == ["https://app.example.com"]
    assert config["page_size"] == 3
    plain = minimal()
    config = filter_config(parse_server(plain), snapshot_of(plain), {})
    assert "allowed_origins" not in config and "page_size" not in config
