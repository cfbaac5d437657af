"""xDS delivery against a real Envoy: per-server isolation, and NACK handling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from mcp import Client

from mcpgw.translate.envoy import translate
from mcpgw.xds import types
from tests.integration.conftest import Gateway
from tests.waiting import eventually

INVENTORY = {
    "kind": "McpServer",
    "namespace": "ops",
    "name": "inventory",
    "description": "Stock levels.",
    "tools": [
        {
            "name": "countPets",
            "description": "How many pets the store has.",
            "args": [{"name": "x-trace", "position": "header"}],
            "requestTemplate": {"url": "/v1/pets", "method": "GET"},
            "responseTemplate": {"body": "first: {{.0.name}}"},
        }
    ],
}


def ecds_reloads(gateway: Gateway, server: str) -> int:
    assert gateway.stack.envoy is not None
    stat = f"extension_config_discovery.http_filter.mcpgw/{server}.config_reload"
    return gateway.stack.envoy.stats(stat).get(stat, 0)


async def tool_names(url: str) -> list[str]:
    async with Client(url, mode="legacy") as client:
        return [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]


async def test_servers_are_isolated_and_an_edit_resends_only_its_server(gateway: Gateway) -> None:
    assert gateway.stack.demo is not None
    inventory = {**INVENTORY, "backend": {"endpoints": [f"127.0.0.1:{gateway.stack.demo.port}"]}}
    (gateway.registry / "inventory.yaml").write_text(yaml.safe_dump(inventory))
    inventory_url = f"{gateway.stack.mcp_base_url}/mcp/ops/inventory"

    async def reachable() -> bool:
        try:
            return await tool_names(inventory_url) == ["countPets"]
        except Exception:
            return False

    deadline = time.monotonic() + 10
    while not await reachable():
        assert time.monotonic() < deadline, "new server not served within 10s"
        await asyncio.sleep(0.1)
    # One VM, two root contexts: each path answers with its own tools and backend calls.
    assert await tool_names(gateway.url) == ["listPets", "getPet", "createPet", "describePet"]
    async with Client(inventory_url, mode="legacy") as client:
        assert (await client.call_tool("countPets", {})).content[0].text == "first: Rex"
        assert "x-trace" not in gateway.backend_requests[-1].headers, "absent header argument was sent"
        await client.call_tool("countPets", {"x-trace": "t-1"})
        assert gateway.backend_requests[-1].headers["x-trace"] == "t-1"

    petstore_reloads = ecds_reloads(gateway, "default/petstore")
    inventory_reloads = ecds_reloads(gateway, "ops/inventory")
    inventory["tools"][0]["description"] = "Edited."
    (gateway.registry / "inventory.yaml").write_text(yaml.safe_dump(inventory))
    await eventually(
        lambda: ecds_reloads(gateway, "ops/inventory") > inventory_reloads, 3, "inventory reloaded"
    )
    async with Client(inventory_url, mode="legacy") as client:
        assert (await client.list_tools(cache_mode="bypass")).tools[0].description == "Edited."
    assert ecds_reloads(gateway, "default/petstore") == petstore_reloads

    (gateway.registry / "inventory.yaml").unlink()
    await eventually(lambda: "ops/inventory" not in _server_keys(gateway), 3, "inventory removed")
    assert await tool_names(gateway.url) == ["listPets", "getPet", "createPet", "describePet"]


def _server_keys(gateway: Gateway) -> list[str]:
    assert gateway.stack.control_plane is not None
    return [s["key"] for s in gateway.stack.control_plane.status()["registry"]["servers"]]


async def _cds_status(gateway: Gateway) -> dict[str, Any]:
    """The CDS entry of the only node, as the status API serves it over HTTP."""
    assert gateway.stack.control_plane is not None
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"http://127.0.0.1:{gateway.stack.control_plane.status_port}/status")
    (node,) = response.json()["nodes"]
    return node["types"]["cds"]


async def _cds_until(gateway: Gateway, check: Callable[[dict[str, Any]], Any], what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = await _cds_status(gateway)
        if check(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} within 5s")


async def test_nacked_config_is_reported_not_resent_and_envoy_keeps_serving(gateway: Gateway) -> None:
    """Test hook: a cluster Envoy must reject (negative connect timeout) put straight into the cache."""
    control_plane = gateway.stack.control_plane
    assert control_plane is not None and control_plane.settings is not None
    assert control_plane.store.snapshot is not None
    good_version = (await _cds_status(gateway))["version_acked"]
    resources = translate(control_plane.store.snapshot, control_plane.settings)
    bad = cluster_pb2.Cluster()
    bad.CopyFrom(resources[types.CLUSTER]["mcpgw/default/petstore"])
    bad.name = "mcpgw-test-bad"
    bad.connect_timeout.seconds = -1
    resources[types.CLUSTER][bad.name] = bad
    control_plane.cache.set_resources(resources)

    status = await _cds_until(gateway, lambda s: s["last_nack"], "NACK recorded")
    assert "Expected positive duration" in status["last_nack"]["error"], status
    assert status["version_acked"] == good_version and status["version_sent"] != good_version
    nonce = status["nonce"]
    await asyncio.sleep(1.0)
    assert (await _cds_status(gateway))["nonce"] == nonce, "a NACKed version was re-sent"

    async with Client(gateway.url, mode="legacy") as client:
        assert not (await client.call_tool("getPet", {"id": 1})).is_error
    assert gateway.stack.envoy is not None
    assert "mcpgw-test-bad" not in gateway.stack.envoy.admin("/clusters")

    # The next registry change that fixes the type is delivered and ACKed.
    await control_plane.apply(control_plane.store.snapshot)
    await _cds_until(gateway, lambda s: s["version_acked"] == good_version, "good config re-ACKed")
