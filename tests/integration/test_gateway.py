"""End to end: MCP client → Envoy → mcp-server.wasm → demo REST backend, configured over xDS."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import yaml
from mcp import Client

from tests.integration.conftest import Gateway, envoy_client_headers
from tests.integration.mcphttp import post

# The demo backend's timeout is 5000 ms.
ENVOY_HEADERS = envoy_client_headers(5000)


def last_request(gateway: Gateway) -> Any:
    assert gateway.backend_requests, "the backend saw no request"
    return gateway.backend_requests[-1]


async def test_sdk_client_lists_and_calls_every_demo_tool(gateway: Gateway) -> None:
    async with Client(gateway.url, mode="legacy") as client:
        assert client.server_info is not None and client.server_info.name == "default/petstore"
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert list(tools) == ["listPets", "getPet", "createPet", "describePet"]
        assert tools["getPet"].input_schema == {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "description": "The pet's id."},
                "fields": {"type": "string", "description": "Comma-separated fields to return."},
            },
            "required": ["id"],
        }
        assert tools["getPet"].output_schema is not None
        assert tools["listPets"].input_schema["properties"]["limit"]["default"] == 10

        result = await client.call_tool("listPets", {"tag": "dog"})
        seen = last_request(gateway)
        assert (seen.method, seen.path, seen.query) == ("GET", "/v1/pets", "tag=dog&limit=10")
        # Exactly these headers: nothing of the client's request leaks through to the backend.
        assert seen.headers == {"host": "petstore.internal", "x-client": "mcpgw-demo", **ENVOY_HEADERS}
        assert seen.body == b""
        assert not result.is_error
        assert json.loads(result.content[0].text) == [{"id": 1, "name": "Rex", "tag": "dog"}]

        result = await client.call_tool("getPet", {"id": 2, "fields": "name,tag"})
        seen = last_request(gateway)
        assert (seen.method, seen.path, seen.query) == ("GET", "/v1/pets/2", "fields=name%2Ctag")
        assert result.structured_content == {"name": "Tom", "tag": "cat"}
        assert json.loads(result.content[0].text) == {"name": "Tom", "tag": "cat"}

        result = await client.call_tool("createPet", {"name": "Kit", "tag": "cat"})
        seen = last_request(gateway)
        assert (seen.method, seen.path, seen.query) == ("POST", "/v1/pets", "")
        assert seen.headers == {
            "host": "petstore.internal",
            "content-type": "application/json",
            "content-length": str(len(seen.body)),
            **ENVOY_HEADERS,
        }
        assert json.loads(seen.body) == {"name": "Kit", "tag": "cat"}
        assert json.loads(result.content[0].text) == {"id": 4, "name": "Kit", "tag": "cat"}

        result = await client.call_tool("describePet", {"id": 1})
        assert (last_request(gateway).path, result.content[0].text) == ("/v1/pets/1", "Rex is a dog (id 1).")

        result = await client.call_tool("describePet", {"id": 99})
        assert result.is_error
        assert result.content[0].text == "No such pet: pet 99 not found"


async def test_json_rpc_errors_and_http_rules(gateway: Gateway) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(gateway.url)
        assert response.status_code == 405 and "POST" in response.headers["allow"]
    response = await post(gateway.url, None, raw=b'{"jsonrpc": "2.0", "id": 1, ')
    assert response.status_code == 400 and response.json()["error"]["code"] == -32700
    response = await post(gateway.url, {"id": 1, "method": "ping"})
    assert response.status_code == 400 and response.json()["error"]["code"] == -32600
    response = await post(gateway.url, {"jsonrpc": "2.0", "id": "a", "method": "resources/unknown"})
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": "a",
        "error": {"code": -32601, "message": "method not found: resources/unknown"},
    }
    response = await post(
        gateway.url,
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "nope", "arguments": {}}},
    )
    assert response.json()["error"]["code"] == -32602 and "nope" in response.json()["error"]["message"]
    response = await post(
        gateway.url,
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "getPet", "arguments": {"id": "two"}},
        },
    )
    # Argument failures are tool execution errors from 2025-11-25 on (test_tool_errors has both forms).
    assert response.json()["result"] == {
        "content": [{"type": "text", "text": "argument id: expected integer"}],
        "isError": True,
    }
    response = await post(
        gateway.url,
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "getPet", "arguments": {}}},
        version="2025-06-18",
    )
    assert response.json()["error"] == {"code": -32602, "message": "missing required argument: id"}
    response = await post(gateway.url, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert response.status_code == 202 and response.content == b""
    response = await post(gateway.url, {"jsonrpc": "2.0", "id": 5, "method": "ping"})
    assert response.json() == {"jsonrpc": "2.0", "id": 5, "result": {}}
    response = await post(
        gateway.url,
        {
            "jsonrpc": "2.0",
            "id": 6,
            "method": "initialize",
            "params": {
                "protocolVersion": "2024-01-01",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
    )
    assert response.json()["result"]["protocolVersion"] == "2025-11-25"
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"{gateway.stack.mcp_base_url}/mcp/default/absent", json={})
        assert response.status_code == 404


async def test_every_node_acked_every_resource_type(gateway: Gateway) -> None:
    assert gateway.stack.control_plane is not None
    (node,) = gateway.stack.control_plane.status()["nodes"]
    assert node["node_id"] == "test-node"
    for type_status in node["types"].values():
        assert type_status["version_acked"] == type_status["version_sent"], node
        assert type_status["last_nack"] is None


def edit_registry(gateway: Gateway, change: Any) -> None:
    path = gateway.registry / "petstore.yaml"
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


async def describe_list_pets(client: Client) -> str | None:
    tools = (await client.list_tools(cache_mode="bypass")).tools
    return next(t.description for t in tools if t.name == "listPets")


async def wait_for_description(client: Client, expected: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await describe_list_pets(client) == expected:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"description {expected!r} not visible within {timeout}s")


async def test_description_edit_reaches_connected_client_without_listener_change(gateway: Gateway) -> None:
    envoy = gateway.stack.envoy
    assert envoy is not None
    pid = envoy.pid
    listener_stats = envoy.stats("listener_manager.")
    async with Client(gateway.url, mode="legacy") as client:
        assert await describe_list_pets(client) == "List pets, optionally filtered by tag."
        edit_registry(gateway, lambda d: d["tools"][0].update(description="Edited while running."))
        await wait_for_description(client, "Edited while running.", timeout=1.0)
        # Existing sessions and calls keep working after the change.
        assert not (await client.call_tool("getPet", {"id": 1})).is_error
    assert envoy.pid == pid and envoy.process is not None and envoy.process.returncode is None
    after = envoy.stats("listener_manager.")
    for stat in (
        "listener_manager.listener_modified",
        "listener_manager.listener_added",
        "listener_manager.listener_removed",
        "listener_manager.total_listeners_draining",
    ):
        assert after[stat] == listener_stats[stat], stat
    ecds = envoy.stats("extension_config_discovery.")
    assert any(name.endswith("config_reload") and value >= 2 for name, value in ecds.items()), ecds


async def test_invalid_document_keeps_previous_tools_and_fix_recovers(gateway: Gateway) -> None:
    control_plane = gateway.stack.control_plane
    assert control_plane is not None
    revision = control_plane.status()["registry"]["revision"]

    def break_it(document: dict[str, Any]) -> None:
        document["tools"][1]["requestTemplate"]["method"] = "FETCH"
        document["tools"][0]["description"] = "this edit must not be served"

    edit_registry(gateway, break_it)
    deadline = time.monotonic() + 3
    while not control_plane.status()["registry"]["problems"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    (problem,) = control_plane.status()["registry"]["problems"]
    assert problem["file"].endswith("petstore.yaml")
    assert problem["field"] == "tools[1].requestTemplate.method" and "FETCH" in problem["reason"]
    assert control_plane.status()["registry"]["revision"] == revision
    async with Client(gateway.url, mode="legacy") as client:
        await asyncio.sleep(0.5)
        assert await describe_list_pets(client) == "List pets, optionally filtered by tag."
        assert not (await client.call_tool("getPet", {"id": 1})).is_error

        def fix_it(document: dict[str, Any]) -> None:
            document["tools"][1]["requestTemplate"]["method"] = "GET"
            document["tools"][0]["description"] = "fixed"

        edit_registry(gateway, fix_it)
        await wait_for_description(client, "fixed", timeout=3.0)
    assert control_plane.status()["registry"]["problems"] == []


async def test_request_path_has_no_python_hop(gateway: Gateway) -> None:
    """With the control plane and plugin server gone, Envoy still serves every MCP call."""
    assert gateway.stack.control_plane is not None and gateway.stack.plugins is not None
    await gateway.stack.control_plane.stop()
    await gateway.stack.plugins.close()
    gateway.stack.control_plane = gateway.stack.plugins = None
    async with Client(gateway.url, mode="legacy") as client:
        assert len((await client.list_tools()).tools) == 4
        result = await client.call_tool("getPet", {"id": 3})
        assert result.structured_content == {"id": 3, "name": "Nemo", "tag": "fish"}


async def test_backend_clusters_keep_core_stats_only(gateway: Gateway) -> None:
    """~110 stats per backend cluster cost ~30 MiB at 1,000 servers: the bootstrap keeps a core set."""
    envoy = gateway.stack.envoy
    assert envoy is not None
    async with Client(gateway.url, mode="legacy") as client:
        assert not (await client.call_tool("getPet", {"id": 1})).is_error
    backend = envoy.stats("cluster.mcpgw/default/petstore.")
    assert backend["cluster.mcpgw/default/petstore.upstream_rq_total"] >= 1
    assert backend["cluster.mcpgw/default/petstore.upstream_rq_200"] >= 1
    assert "cluster.mcpgw/default/petstore.upstream_cx_active" in backend
    assert "cluster.mcpgw/default/petstore.membership_healthy" in backend
    assert "cluster.mcpgw/default/petstore.update_success" in backend
    dropped = [
        name
        for name in backend
        if any(f".{kind}" in name for kind in ("lb_", "circuit_breakers.", "update_time"))
    ]
    assert dropped == [] and len(backend) < 30, sorted(backend)
    # Envoy's own clusters keep every stat.
    assert "cluster.mcpgw-xds.lb_healthy_panic" in envoy.stats("cluster.mcpgw-xds.")
