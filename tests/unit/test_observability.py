"""Per-tool metric names, the bootstrap's tag extraction, the access log and `observability:`.

The tag regexes are applied here as Envoy applies them (each regex to the whole name; group 1
leaves the name, group 2 is the value) to names built as metrics.zig builds them, with
namespaces, servers and tools holding dots, underscores, dashes and label-like words. The
real-Envoy side is tests/integration/test_dataplane_metrics.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcpgw import observability
from mcpgw.bootstrap import BootstrapOptions, render
from mcpgw.registry.model import McpServer, RegistrySnapshot
from mcpgw.registry.tools import TOOL_NAME
from mcpgw.registry.validate import parse_server
from mcpgw.translate.filterconfig import filter_config
from tests.filtercheck import built_filter_check
from tests.unit.test_registry import minimal, problems_of

REPO = Path(__file__).resolve().parents[2]
METRICS_ZIG = REPO / "wasm-filters" / "mcp-server" / "src" / "metrics.zig"


def name(metric: str, labels: list[tuple[str, str]]) -> str:
    """`wasmcustom.` + the name metrics.zig's `metricName` builds."""
    return "wasmcustom." + metric + "".join(f".{k}={v};" for k, v in labels)


def extract(stat: str) -> tuple[str, dict[str, str]]:
    """Envoy's tag extraction with the bootstrap's `stats_tags`: (the name left, the tags)."""
    tags: dict[str, str] = {}
    removed: list[tuple[int, int]] = []
    for label in observability.LABELS:
        match = re.search(observability.tag_regex(label), stat)
        if match:
            tags[label] = match.group(2)
            removed.append(match.span(1))
    left = "".join(c for i, c in enumerate(stat) if not any(a <= i < b for a, b in removed))
    return left, tags


def test_the_label_list_is_the_filters() -> None:
    zig = METRICS_ZIG.read_text()
    declared = re.search(r"pub const label_names = \[_\]\[\]const u8\{([^}]*)\}", zig)
    assert declared is not None
    assert tuple(re.findall(r'"([a-z_]+)"', declared.group(1))) == observability.LABELS


TRICKY_TOOLS = [
    "get",
    "pets.get_v2",
    "a.mcp_tool",
    "mcp_server",
    "outcome.ok",
    "x_mcp_namespace=",  # not a valid tool name: checked below
    "..",
    "_",
    "-",
    "a" * 128,
    "code.mcp_method.mcp_protocol_version",
]


@pytest.mark.parametrize("tool", [t for t in TRICKY_TOOLS if TOOL_NAME.fullmatch(t)])
@pytest.mark.parametrize(
    ("namespace", "server"), [("default", "petstore"), ("a-b", "c-d-e"), ("0", "x" * 63)]
)
def test_every_valid_name_comes_back_as_its_labels(namespace: str, server: str, tool: str) -> None:
    labels = [("mcp_namespace", namespace), ("mcp_server", server), ("mcp_tool", tool), ("outcome", "ok")]
    assert extract(name("mcpgw_tool_calls", labels)) == ("wasmcustom.mcpgw_tool_calls", dict(labels))
    labels = [("mcp_namespace", namespace), ("mcp_server", server), ("mcp_tool", tool), ("code", "-32602")]
    assert extract(name("mcpgw_tool_jsonrpc_errors", labels)) == (
        "wasmcustom.mcpgw_tool_jsonrpc_errors",
        dict(labels),
    )
    labels = [("mcp_namespace", namespace), ("mcp_server", server), ("mcp_method", "tools/list")]
    labels.append(("mcp_protocol_version", "2025-11-25"))
    assert extract(name("mcpgw_server_requests", labels)) == (
        "wasmcustom.mcpgw_server_requests",
        dict(labels),
    )


def test_no_name_may_hold_what_ends_a_segment() -> None:
    """`=` and `;` delimit the segments: neither is in any name the registry accepts."""
    for bad in ["a=b", "a;b", "x_mcp_namespace="]:
        assert not TOOL_NAME.fullmatch(bad)
    for field, value in [("name", "a.b"), ("name", "a_b"), ("namespace", "a=b"), ("namespace", "a;b")]:
        assert problems_of(minimal(**{field: value})), (field, value)


def test_envoy_stats_are_left_alone() -> None:
    for stat in ["cluster.mcpgw/default/petstore.upstream_rq_200", "http.mcpgw.downstream_rq_total"]:
        assert extract(stat) == (stat, {})


def bootstrap(full_cluster_stats: bool) -> dict[str, Any]:
    text = render(
        BootstrapOptions(node_id="n", xds=(("127.0.0.1", 18000),), full_cluster_stats=full_cluster_stats)
    )
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


@pytest.mark.parametrize("full", [False, True])
def test_bootstrap_extracts_the_labels_and_sets_the_buckets(full: bool) -> None:
    stats = bootstrap(full)["stats_config"]
    assert [(t["tag_name"], t["regex"]) for t in stats["stats_tags"]] == [
        (label, observability.tag_regex(label)) for label in observability.LABELS
    ]
    assert stats["histogram_bucket_settings"] == [
        {"match": {"prefix": "wasmcustom.mcpgw_tool_"}, "buckets": list(observability.DURATION_BUCKETS_MS)}
    ]
    assert ("stats_matcher" in stats) is not full


def test_access_log_prints_every_field_and_no_header_values() -> None:
    [log] = observability.access_log("/var/log/mcpgw/access.log")
    config = log["typed_config"]
    assert config["path"] == "/var/log/mcpgw/access.log"
    fields = config["log_format"]["json_format"]
    assert fields["mcp"] == "%FILTER_STATE(wasm.mcpgw.mcp:PLAIN)%"
    # The property's name is the filter's.
    observe = (METRICS_ZIG.parent / "observe.zig").read_text()
    assert f'pub const log_property = "{observability.FILTER_PROPERTY}";' in observe
    # Every field the docs list is one the filter writes.
    metrics_zig = METRICS_ZIG.read_text()
    for field in observability.FILTER_FIELDS:
        assert f'\\"{field}\\"' in metrics_zig, field
    # Only these request headers: no Authorization, cookie or session id header, ever.
    headers = set(re.findall(r"%REQ\(([^)]*)\)%", json.dumps(fields)))
    assert headers == {"X-REQUEST-ID", ":METHOD", ":PATH"}


def test_the_filter_configuration_names_the_server_and_the_switch() -> None:
    plain = parse_server(minimal(namespace="team-a"))
    assert filter_config(plain, _snapshot(plain), {})["observability"] == {
        "namespace": "team-a",
        "server": "svc",
        "metrics": True,
        "access_log": True,
        "log_arguments": False,
    }
    debug = parse_server(minimal(observability={"logArguments": True}))
    config = filter_config(debug, _snapshot(debug), {})
    assert config["observability"]["log_arguments"] is True
    # The filter's own parser accepts it (the control plane checks every configuration so).
    built_filter_check().check(json.dumps(config))


def _snapshot(server: McpServer) -> RegistrySnapshot:
    return RegistrySnapshot(servers=(server,))


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ({"logArguments": "yes"}, ("observability.logArguments", "must be true or false, got a string")),
        ({"logArgs": True}, ("observability.logArgs", None)),
        ("on", ("observability", "must be a mapping, got a string")),
    ],
)
def test_observability_block_is_validated(block: Any, problem: tuple[str, str | None]) -> None:
    found = problems_of(minimal(observability=block))
    assert len(found) == 1 and found[0][0] == problem[0], found
    if problem[1] is not None:
        assert found[0][1] == problem[1]
