"""A registry mounted from a Kubernetes ConfigMap: the kubelet's `..data` symlink swap reaches
clients through a real control plane and Envoy within a second, and the hidden version
directories are never read as registry files of their own.

The volume is laid out and updated by `tests.kubevolume`, as the kubelet's atomic writer does it
(`KEY -> ..data/KEY`, `..data -> ..2026_…`, one `os.replace` of a symlink per update).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from mcp import Client

from mcpgw.registry.filesource import registry_files
from mcpgw.stack import DEFAULT_REGISTRY
from tests import kubevolume
from tests.integration.conftest import Gateway, free_port, running_gateway
from tests.integration.mcphttp import post, rpc
from tests.waiting import eventually


def petstore_text(backend_port: int, description: str | None = None) -> str:
    text = (
        (DEFAULT_REGISTRY / "petstore.yaml")
        .read_text()
        .replace("127.0.0.1:18080", f"127.0.0.1:{backend_port}")
    )
    if description is None:
        return text
    document = yaml.safe_load(text)
    document["tools"][0]["description"] = description
    return yaml.safe_dump(document, sort_keys=False)


def extra_server(backend_port: int) -> str:
    return yaml.safe_dump(
        {
            "kind": "McpServer",
            "namespace": "shop",
            "name": "inventory",
            "backend": {"endpoints": [f"127.0.0.1:{backend_port}"]},
            "tools": [{"name": "countPets", "requestTemplate": {"url": "/v1/pets", "method": "GET"}}],
        },
        sort_keys=False,
    )


class Mounted:
    def __init__(self, gateway: Gateway, volume: Path, backend_port: int) -> None:
        self.gateway = gateway
        self.volume = volume
        self.backend_port = backend_port


TOKEN = "configmap-admin-token"


@pytest.fixture
async def mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Mounted]:
    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    backend_port = free_port()
    volume = tmp_path / "registry"
    kubevolume.publish(volume, {"petstore.yaml": petstore_text(backend_port)})
    async with running_gateway(tmp_path, volume, backend_port) as gateway:
        yield Mounted(gateway, volume, backend_port)


async def list_pets_description(client: Client) -> str | None:
    tools = (await client.list_tools(cache_mode="bypass")).tools
    return next(t.description for t in tools if t.name == "listPets")


def registry_status(mounted: Mounted) -> dict:
    control_plane = mounted.gateway.stack.control_plane
    assert control_plane is not None
    return control_plane.status()["registry"]


async def test_symlink_swap_reaches_tools_list_within_a_second(mounted: Mounted) -> None:
    async with Client(mounted.gateway.url, mode="legacy") as client:
        assert await list_pets_description(client) == "List pets, optionally filtered by tag."
        for round_ in range(3):
            expected = f"Swapped in by the kubelet, round {round_}."
            kubevolume.publish(
                mounted.volume, {"petstore.yaml": petstore_text(mounted.backend_port, expected)}
            )
            started = time.monotonic()
            while await list_pets_description(client) != expected:
                assert time.monotonic() - started < 1.0, f"{expected!r} not in tools/list within 1 s"
            # Calls still go through after each swap.
            assert not (await client.call_tool("getPet", {"id": 1})).is_error


async def test_hidden_version_directories_are_not_registry_files(mounted: Mounted) -> None:
    # The volume holds the document three times over (link, ..data/, ..2026_…/): read once.
    assert [p.name for p in registry_files(mounted.volume)] == ["petstore.yaml"]
    assert any(p.name.startswith("..20") for p in mounted.volume.iterdir())
    status = registry_status(mounted)
    assert status["problems"] == [], status
    assert [s["source"] for s in status["servers"]] == [str(mounted.volume / "petstore.yaml")]
    # A second key, then the first one removed: both through one swap each, no duplicate-server
    # problem on the way (a hidden copy read as a file would define default/petstore twice).
    kubevolume.publish(
        mounted.volume,
        {
            "petstore.yaml": petstore_text(mounted.backend_port),
            "inventory.yaml": extra_server(mounted.backend_port),
        },
    )
    url = f"{mounted.gateway.stack.mcp_base_url}/mcp/shop/inventory"

    async def inventory_served() -> bool:
        response = await post(url, rpc("tools/list"))
        return response.status_code == 200 and "countPets" in response.text

    await eventually(inventory_served, 2.0, "the added ConfigMap key served", ignore=(AssertionError,))
    assert len(registry_status(mounted)["servers"]) == 2
    kubevolume.publish(mounted.volume, {"inventory.yaml": extra_server(mounted.backend_port)})
    await eventually(
        lambda: len(registry_status(mounted)["servers"]) == 1, 2.0, "the removed key's server gone"
    )
    status = registry_status(mounted)
    assert status["problems"] == [], status
    assert sorted(p.name for p in registry_files(mounted.volume)) == ["inventory.yaml"]


async def test_admin_write_to_a_configmap_registry_says_edit_the_configmap(mounted: Mounted) -> None:
    control_plane = mounted.gateway.stack.control_plane
    assert control_plane is not None
    before = kubevolume.read(mounted.volume)
    admin = f"http://127.0.0.1:{control_plane.status_port}"
    async with httpx.AsyncClient(timeout=5, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        response = await http.put(
            f"{admin}/v1/servers/shop/inventory",
            content=extra_server(mounted.backend_port).encode(),
            headers={"content-type": "application/yaml"},
        )
    assert response.status_code == 503, response.text
    assert "ConfigMap" in response.json()["error"], response.text
    # Nothing was written beside the kubelet's files, and the layout is intact.
    assert kubevolume.read(mounted.volume) == before
    assert (mounted.volume / "petstore.yaml").is_symlink()
