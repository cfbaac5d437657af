"""Delta xDS against a real Envoy: a DELTA_GRPC node joins, serves MCP, and a tool edit reaches
it as one ECDS update and nothing else.

The delta Envoy is the ordinary test stack (`running_gateway`) with `xds_delta=True`, which
renders its bootstrap with `api_type: DELTA_GRPC`; everything else (ports, plugin server,
control plane, readiness) is exactly what the SotW tests run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client

from tests.integration.conftest import Gateway, copy_registry, free_port, running_gateway
from tests.integration.test_delivery import eventually, tool_names

ECDS = "extension_config_discovery.http_filter.mcpgw/default/petstore"
# Every xDS subscription the demo registry gives Envoy, by the stat prefix Envoy counts it under.
SUBSCRIPTIONS = {
    "cds": "cluster_manager.cds",
    "eds": "cluster.mcpgw/default/petstore",
    "ecds": ECDS,
    "lds": "listener_manager.lds",
    "rds": "http.mcpgw.rds.mcpgw-routes",
}


@pytest.fixture
async def delta_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """The example registry served to an Envoy whose bootstrap says `api_type: DELTA_GRPC`."""
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    async with running_gateway(tmp_path, registry, backend_port, xds_delta=True) as running:
        yield running


def _node(gateway: Gateway) -> dict[str, Any]:
    assert gateway.stack.control_plane is not None
    (node,) = gateway.stack.control_plane.ads.status()
    return node


def _update_attempts(gateway: Gateway) -> dict[str, int]:
    """Envoy's own count of xDS updates received, per subscription."""
    assert gateway.stack.envoy is not None
    stats = gateway.stack.envoy.stats("")
    return {short: stats[f"{prefix}.update_attempt"] for short, prefix in SUBSCRIPTIONS.items()}


async def _descriptions(url: str) -> dict[str, str]:
    async with Client(url, mode="legacy") as client:
        return {t.name: t.description or "" for t in (await client.list_tools(cache_mode="bypass")).tools}


async def test_delta_envoy_serves_mcp_and_a_tool_edit_sends_only_ecds(delta_gateway: Gateway) -> None:
    node = _node(delta_gateway)
    assert node["protocol"] == "delta" and node["node_id"] == "test-node"
    assert all(
        t["version_acked"] == t["version_sent"] and t["last_nack"] is None for t in node["types"].values()
    )
    assert list(node["types"]) == ["cds", "eds", "ecds", "lds", "rds"]

    assert await tool_names(delta_gateway.url) == ["listPets", "getPet", "createPet", "describePet"]
    async with Client(delta_gateway.url, mode="legacy") as client:
        result = await client.call_tool("getPet", {"id": 2, "fields": "name,tag"})
        assert result.structured_content == {"name": "Tom", "tag": "cat"}

    before = _update_attempts(delta_gateway)
    nonces = {t: s["nonce"] for t, s in node["types"].items()}
    path = delta_gateway.registry / "petstore.yaml"
    document = yaml.safe_load(path.read_text())
    document["tools"][0]["description"] = "Edited over delta xDS."
    path.write_text(yaml.safe_dump(document, sort_keys=False))

    await eventually(lambda: _update_attempts(delta_gateway)["ecds"] > before["ecds"], 10, "ECDS update")
    assert (await _descriptions(delta_gateway.url))["listPets"] == "Edited over delta xDS."
    await asyncio.sleep(0.5)  # room for any stray push to land before counting
    after = _update_attempts(delta_gateway)
    assert {k: after[k] - before[k] for k in after} == {"cds": 0, "eds": 0, "ecds": 1, "lds": 0, "rds": 0}

    # The control plane agrees: one new ECDS response, ACKed; no other type was pushed.
    node = _node(delta_gateway)
    assert {t: s["nonce"] for t, s in node["types"].items() if t != "ecds"} == {
        t: n for t, n in nonces.items() if t != "ecds"
    }
    ecds = node["types"]["ecds"]
    assert ecds["nonce"] != nonces["ecds"] and ecds["version_acked"] == ecds["version_sent"]


async def test_delta_envoy_adds_and_removes_a_server(delta_gateway: Gateway) -> None:
    """A new server brings a cluster, endpoints and an ECDS config; deleting it removes them by name."""
    assert delta_gateway.stack.demo is not None and delta_gateway.stack.envoy is not None
    envoy = delta_gateway.stack.envoy
    inventory = {
        "kind": "McpServer",
        "namespace": "ops",
        "name": "inventory",
        "backend": {"endpoints": [f"127.0.0.1:{delta_gateway.stack.demo.port}"]},
        "tools": [{"name": "countPets", "requestTemplate": {"url": "/v1/pets", "method": "GET"}}],
    }
    url = f"{delta_gateway.stack.mcp_base_url}/mcp/ops/inventory"
    (delta_gateway.registry / "inventory.yaml").write_text(yaml.safe_dump(inventory))

    async def served() -> bool:
        try:
            return await tool_names(url) == ["countPets"]
        except Exception:
            return False

    deadline = time.monotonic() + 10
    while not await served():
        assert time.monotonic() < deadline, "new server not served within 10s"
        await asyncio.sleep(0.1)
    async with Client(url, mode="legacy") as client:
        assert not (await client.call_tool("countPets", {})).is_error
    assert "mcpgw/ops/inventory" in envoy.admin("/clusters")

    (delta_gateway.registry / "inventory.yaml").unlink()
    await eventually(lambda: "mcpgw/ops/inventory" not in envoy.admin("/clusters"), 10, "cluster removed")
    await eventually(lambda: "mcpgw/ops/inventory" not in envoy.admin("/config_dump"), 10, "config removed")
    assert await tool_names(delta_gateway.url) == ["listPets", "getPet", "createPet", "describePet"]
    assert all(t["last_nack"] is None for t in _node(delta_gateway)["types"].values())
