"""The translator: registry snapshot → Envoy resources, and server → filter configuration."""

from __future__ import annotations

import copy
import json
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2
from google.protobuf import json_format, wrappers_pb2

from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.validate import parse_server
from mcpgw.translate.envoy import (
    LISTENER_NAME,
    PLUGIN_CLUSTER,
    ROUTE_CONFIG_NAME,
    GatewaySettings,
    PluginRef,
    translate,
)
from mcpgw.translate.filterconfig import filter_config
from mcpgw.xds import types
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
    assert [r["name"] for r in routes] == ["default/svc", "default/two", "not-found"]


def test_empty_registry_has_no_composite_filter() -> None:
    resources = translate(RegistrySnapshot(servers=()), SETTINGS)
    listener = json_format.MessageToDict(resources[types.LISTENER][LISTENER_NAME])
    filters = listener["filterChains"][0]["filters"][0]["typedConfig"]["httpFilters"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.router"]


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
    value = wrappers_pb2.StringValue()
    wasm.config.configuration.Unpack(value)
    assert json.loads(value.value)["base_path"] == "/mcp/default/svc"


def test_filter_config_compiles_templates_into_parts() -> None:
    document = minimal(config={"tenant": "acme"})
    document["tools"][0]["args"].append({"name": "q", "type": "string"})
    document["tools"][0]["requestTemplate"] = {
        "url": "/items/{{.args.id}}?tenant={{.config.tenant}}&q={{.args.q}}",
        "headers": [
            {"key": "X-Id", "value": "id-{{.args.id | toJson}}"},
            {"key": "Content-Type", "value": "text/plain"},
        ],
        "body": "{{.args.q}}!",
        "method": "POST",
    }
    document["tools"][0]["responseTemplate"] = {"body": "name={{.data.name}} all={{. | toJson}}"}
    document["tools"][0]["outputSchema"] = {"type": "object"}
    tool = filter_config(parse_server(document))["tools"][0]
    assert tool["request"]["path"] == [
        {"lit": "/items/"},
        {"arg": "id", "enc": "path"},
        {"lit": "?tenant=acme&q="},
        {"arg": "q", "enc": "query"},
    ]
    assert tool["request"]["headers"] == [
        {"name": "x-id", "value": [{"lit": "id-"}, {"arg": "id", "enc": "json"}]}
    ]
    assert tool["request"]["body"] == {
        "kind": "template",
        "content_type": "text/plain",
        "template": [{"arg": "q", "enc": "raw"}, {"lit": "!"}],
    }
    assert tool["response"]["body"] == [
        {"lit": "name="},
        {"resp": ["data", "name"], "enc": "raw"},
        {"lit": " all="},
        {"resp": [], "enc": "json"},
    ]
    assert tool["response"]["structured"] is True


def test_filter_config_places_free_arguments_by_position_and_body_mode() -> None:
    document = minimal()
    document["tools"][0]["args"] += [
        {"name": "tag", "position": "query"},
        {"name": "trace", "position": "header"},
        {"name": "name"},
        {"name": "size", "type": "number", "default": 1.5},
    ]
    document["tools"][0]["requestTemplate"].update(method="POST", argsToJsonBody=True)
    config = filter_config(parse_server(document))
    request = config["tools"][0]["request"]
    assert request["query"] == [{"name": "tag", "arg": "tag"}]
    assert request["headers"] == [{"name": "trace", "value": [{"arg": "trace"}]}]
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
    request = filter_config(parse_server(url_params))["tools"][0]["request"]
    assert [q["name"] for q in request["query"]] == ["tag", "name", "size"] and request["body"] is None


def test_tools_list_is_prerendered_with_input_schema() -> None:
    document = minimal()
    document["tools"][0]["args"].append({"name": "mode", "enum": ["a", "b"], "description": "how"})
    tools = filter_config(parse_server(document))["tools_list"]["tools"]
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
