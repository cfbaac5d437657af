"""Which backend credentials leave the filter configuration for Envoy's credential_injector."""

from __future__ import annotations

import copy
import json
from typing import Any

from google.protobuf import json_format

from mcpgw.registry.secrets import resolve
from mcpgw.translate.envoy import translate
from mcpgw.translate.filterconfig import filter_config, injected_credential
from mcpgw.xds import types
from tests.unit.test_registry import minimal
from tests.unit.test_translate import SETTINGS, snapshot_of

BEARER = {"id": "t", "type": "http", "scheme": "bearer", "defaultCredential": "tok-1"}
QUERY_KEY = {"id": "q", "type": "apiKey", "in": "query", "name": "key", "defaultCredential": "qk-1"}
CODEC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
BASIC = {"id": "b", "type": "http", "scheme": "basic", "defaultCredential": "user:pass"}


def rest(name: str = "svc", schemes: list[dict[str, Any]] | None = None, *uses: str | None) -> dict[str, Any]:
    """A REST server with one tool per entry of `uses` (a scheme id, or None: no credential)."""
    document = minimal(name=name, securitySchemes=schemes or [BEARER])
    template = document["tools"][0]
    document["tools"] = []
    for index, scheme in enumerate(uses or ("t",)):
        tool = copy.deepcopy(template)
        tool["name"] = f"get{index}"
        if scheme is not None:
            tool["requestTemplate"]["security"] = {"id": scheme}
        document["tools"].append(tool)
    return document


def moved(document: dict[str, Any]) -> dict[str, str] | None:
    snapshot = snapshot_of(document)
    return injected_credential(snapshot.servers[0], resolve(snapshot))


def test_a_header_credential_every_tool_shares_is_injected() -> None:
    assert moved(rest("svc", [BEARER], "t", "t")) == {"name": "authorization", "value": "Bearer tok-1"}
    assert moved(rest("svc", [BASIC], "b")) == {"name": "authorization", "value": "Basic dXNlcjpwYXNz"}


def test_credentials_the_filter_must_choose_per_call_stay() -> None:
    assert moved(rest("svc", [QUERY_KEY], "q")) is None  # in the query, placed by the filter
    assert moved(rest("svc", [BEARER], "t", None)) is None  # one tool sends none
    assert moved(rest("svc", [BEARER, BASIC], "t", "b")) is None  # tools differ
    assert moved(minimal()) is None  # no credential at all
    per_tool = rest("svc", [BEARER], "t", "t")
    per_tool["tools"][1]["requestTemplate"]["security"]["credential"] = "tok-2"
    assert moved(per_tool) is None
    passthrough = rest("svc", [BEARER], "t")
    passthrough["tools"][0]["requestTemplate"].pop("security")
    passthrough["tools"][0]["security"] = {"id": "t", "passthrough": True}
    assert moved(passthrough) is None


def test_translation_moves_the_credential_into_an_sds_secret_and_the_cluster() -> None:
    owner = rest("owner", [BEARER], "t", "t")
    # Its own tool sends no credential; the included ones call the owner's cluster.
    includer = minimal(name="includer", include=[{"server": "default/owner"}])
    stays = rest("stays", [QUERY_KEY], "q")
    snapshot = snapshot_of(owner, includer, stays)
    secrets = resolve(snapshot)
    resources = translate(snapshot, SETTINGS, secrets)
    assert set(resources[types.SECRET]) == {"mcpgw/default/owner/credential"}
    secret = json_format.MessageToDict(resources[types.SECRET]["mcpgw/default/owner/credential"])
    assert secret["genericSecret"]["secret"] == {"inlineString": "Bearer tok-1"}
    cluster = json_format.MessageToDict(resources[types.CLUSTER]["mcpgw/default/owner"])
    options = cluster["typedExtensionProtocolOptions"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    injector, codec = options["httpFilters"]
    assert codec["name"] == "envoy.filters.http.upstream_codec"
    generic = injector["typedConfig"]["credential"]["typedConfig"]
    assert generic["header"] == "authorization"
    assert generic["credential"] == {
        "name": "mcpgw/default/owner/credential",
        "sdsConfig": {"ads": {}, "resourceApiVersion": "V3"},
    }
    assert injector["typedConfig"]["overwrite"] is True
    assert "typedExtensionProtocolOptions" not in json_format.MessageToDict(
        resources[types.CLUSTER]["mcpgw/default/stays"]
    )
    # No filter configuration holds the moved value (the includer calls the owner's cluster too).
    text = {n: json_format.MessageToJson(m) for n, m in resources[types.EXTENSION_CONFIG].items()}
    assert not any("tok-1" in t for t in text.values())
    assert "qk-1" in text["mcpgw/default/stays"]
    for name in ("owner", "includer"):
        config = filter_config(snapshot.server(f"default/{name}"), snapshot, secrets, injected=True)  # type: ignore[arg-type]
        assert [t["request"]["auth"] for t in config["tools"]] == [None] * len(config["tools"])
    # Without injection (and for callers of filter_config alone) nothing changes.
    config = filter_config(snapshot.server("default/owner"), snapshot, secrets)  # type: ignore[arg-type]
    assert "tok-1" in json.dumps(config)


def test_a_new_value_changes_only_the_secret() -> None:
    before = translate(snapshot_of(rest("svc", [BEARER], "t")), SETTINGS, resolve(snapshot_of(rest()))).copy()
    rotated = rest("svc", [{**BEARER, "defaultCredential": "tok-2"}], "t")
    after = translate(snapshot_of(rotated), SETTINGS, resolve(snapshot_of(rotated)))
    changed = {
        (t, n)
        for t in after
        for n in after[t]
        if before[t].get(n) is None
        or before[t][n].SerializeToString(deterministic=True)
        != after[t][n].SerializeToString(deterministic=True)
    }
    assert changed == {(types.SECRET, "mcpgw/default/svc/credential")}


def test_the_injector_joins_protocol_options_a_cluster_already_has() -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    from mcpgw.translate.envoy import _with_credential_injector

    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    cluster = json_format.ParseDict(
        {
            "name": "c",
            "typed_extension_protocol_options": {
                key: {
                    "@type": f"type.googleapis.com/{key}",
                    "explicit_http_config": {"http2_protocol_options": {}},
                    "http_filters": [
                        {
                            "name": "envoy.filters.http.upstream_codec",
                            "typed_config": {"@type": CODEC_TYPE},
                        }
                    ],
                }
            },
        },
        cluster_pb2.Cluster(),
    )
    options = json_format.MessageToDict(_with_credential_injector(cluster, "s", "x-api-key"))[
        "typedExtensionProtocolOptions"
    ][key]
    assert options["explicitHttpConfig"] == {"http2ProtocolOptions": {}}
    assert [f["name"] for f in options["httpFilters"]] == [
        "envoy.filters.http.credential_injector",
        "envoy.filters.http.upstream_codec",
    ]
