"""The tracer's CDS cluster and listener block, and the flags that set them.

The real-Envoy side (spans exported, traceparent at the backend) is tests/integration/test_traces.py.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from google.protobuf import json_format

from mcpgw import tracing
from mcpgw.cli import _parser as build_parser
from mcpgw.translate.envoy import LISTENER_NAME, PLUGIN_CLUSTER, translate
from mcpgw.xds import types
from tests.unit.test_registry import minimal
from tests.unit.test_translate import SETTINGS, snapshot_of

TRACED = dataclasses.replace(SETTINGS, tracing=tracing.TraceSettings("127.0.0.1", 4317, 2.5))


def as_dict(message: Any) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return data


def manager(resources: dict[str, Any]) -> dict[str, Any]:
    listener = json_format.MessageToDict(
        resources[types.LISTENER][LISTENER_NAME], preserving_proto_field_name=True
    )
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def filter_observability(resources: dict[str, Any]) -> dict[str, Any]:
    extension = json_format.MessageToDict(resources[types.EXTENSION_CONFIG]["mcpgw/default/svc"])
    text = extension["typedConfig"]["config"]["configuration"]["value"]
    block: dict[str, Any] = json.loads(text)["observability"]
    return block


def test_no_endpoint_no_tracer_and_no_cluster() -> None:
    resources = translate(snapshot_of(minimal()), SETTINGS)
    assert tracing.OTLP_CLUSTER not in resources[types.CLUSTER]
    assert "tracing" not in manager(resources)


def test_the_collector_is_a_cds_cluster_the_listener_names() -> None:
    resources = translate(snapshot_of(minimal()), TRACED)
    assert set(resources[types.CLUSTER]) >= {PLUGIN_CLUSTER, tracing.OTLP_CLUSTER}
    cluster = json_format.MessageToDict(
        resources[types.CLUSTER][tracing.OTLP_CLUSTER], preserving_proto_field_name=True
    )
    assert cluster["type"] == "STATIC"
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "127.0.0.1", "port_value": 4317}
    block = manager(resources)["tracing"]
    provider = block["provider"]["typed_config"]
    assert provider["grpc_service"]["envoy_grpc"]["cluster_name"] == tracing.OTLP_CLUSTER
    assert provider["service_name"] == tracing.SERVICE_NAME
    ratio = provider["sampler"]["typed_config"]["wrapped_sampler"]["typed_config"]["sampling_percentage"]
    assert ratio == {"numerator": 25000, "denominator": "MILLION"}
    assert block["operation"] == "%FILTER_STATE(wasm.mcpgw.span:PLAIN)%"
    assert block["custom_tags"] == [{"tag": "mcpgw.mcp", "value": "%FILTER_STATE(wasm.mcpgw.mcp:PLAIN)%"}]


def test_a_host_name_is_resolved_by_dns() -> None:
    settings = tracing.TraceSettings("otel-collector.observability", 4317)
    assert tracing.otlp_cluster(settings)["type"] == "STRICT_DNS"


def test_the_filter_sets_its_fields_for_the_span_even_without_an_access_log() -> None:
    assert (
        filter_observability(
            translate(snapshot_of(minimal()), dataclasses.replace(SETTINGS, access_log=None))
        )["access_log"]
        is False
    )
    traced = dataclasses.replace(TRACED, access_log=None)
    block = filter_observability(translate(snapshot_of(minimal()), traced))
    assert block["access_log"] is True
    assert block["span_name"] is True
    assert "span_name" not in filter_observability(translate(snapshot_of(minimal()), SETTINGS))


def test_flags() -> None:
    args = build_parser().parse_args(
        ["serve", "-f", "r", "--otlp-endpoint", "[::1]:4317", "--trace-sampling", "10"]
    )
    assert args.otlp_endpoint == ("::1", 4317)
    assert args.trace_sampling == 10.0
    assert build_parser().parse_args(["serve", "-f", "r"]).otlp_endpoint is None


@pytest.mark.parametrize("text", ["collector", "host:", ":4317", "host:0", "host:65536", "host:x"])
def test_a_bad_endpoint_says_why(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|outside"):
        tracing.parse_endpoint(text)


@pytest.mark.parametrize("text", ["-1", "100.5", "half"])
def test_sampling_is_a_percentage(text: str) -> None:
    with pytest.raises(ValueError, match="percentage"):
        tracing.parse_sampling(text)
