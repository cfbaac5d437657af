"""Propagation survives any registry change: deleting a server with a credential or an include,
then editing another in place, reaches a real Envoy, through the file registry and the admin API.

The translator used to keep state for the deleted server and raise on the next edit: through
the file registry the watch task ended with nothing logged and no later edit reached Envoy;
through the admin API the write was persisted and then answered 500. Tests here also inject a
failure into the pipeline to show it is logged, shown in `/status`, leaves Envoy on the last
good configuration, and the next change goes through.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mcpgw.controlplane import ControlPlane
from mcpgw.translate.envoy import Translator
from mcpgw.xds.cache import SnapshotCache
from tests import waiting
from tests.integration.conftest import Gateway, copy_registry, free_port, running_gateway
from tests.integration.mcphttp import post, rpc

TOKEN = "propagation-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
eventually = functools.partial(waiting.eventually, ignore=(Exception,), interval=0.1)


def server_doc(name: str, backend_port: int, description: str = "first", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "McpServer",
        "namespace": "shop",
        "name": name,
        "backend": {"endpoints": [f"127.0.0.1:{backend_port}"]},
        "tools": [
            {
                "name": f"count_{name}",
                "description": description,
                "requestTemplate": {"url": "/v1/pets", "method": "GET"},
            }
        ],
        **extra,
    }


def keyed_doc(backend_port: int) -> dict[str, Any]:
    """A server with an inline credential: the translator re-examines it on every change."""
    document = server_doc(
        "keyed",
        backend_port,
        securitySchemes=[{"id": "basic", "type": "http", "scheme": "basic", "defaultCredential": "u:pw"}],
    )
    document["tools"][0]["requestTemplate"]["security"] = {"id": "basic"}
    return document


def composed_doc(backend_port: int) -> dict[str, Any]:
    """A server composing another's tools: also re-examined on every change."""
    return server_doc("composed", backend_port, include=[{"server": "shop/other"}])


async def descriptions(url: str) -> dict[str, str]:
    response = await post(url, rpc("tools/list"))
    assert response.status_code == 200, response.text
    return {t["name"]: t.get("description", "") for t in response.json()["result"]["tools"]}


async def not_served(url: str) -> bool:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.post(url, json=rpc("tools/list"))
    return response.status_code == 404


def base_url(gateway: Gateway, name: str) -> str:
    return f"{gateway.stack.mcp_base_url}/mcp/shop/{name}"


def control_plane_of(gateway: Gateway) -> ControlPlane:
    assert gateway.stack.control_plane is not None
    return gateway.stack.control_plane


def admin_url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{control_plane_of(gateway).status_port}"


@pytest.fixture
async def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    """The example registry plus shop/keyed (credential), shop/composed (include), shop/other."""
    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    shop = registry / "shop"
    shop.mkdir()
    for document in (keyed_doc(backend_port), composed_doc(backend_port), server_doc("other", backend_port)):
        (shop / f"{document['name']}.yaml").write_text(yaml.safe_dump(document))
    async with running_gateway(tmp_path, registry, backend_port) as running:
        await eventually(lambda: descriptions(base_url(running, "composed")), 20, "shop/composed served")
        yield running


def healthy_pipeline(gateway: Gateway) -> None:
    status = control_plane_of(gateway).status()
    assert status["registry"]["problems"] == []
    assert status["registry"]["failed"] == 0
    assert all(task["failures"] == 0 for task in status["tasks"].values()), status["tasks"]
    assert status["tasks"]["registry-watch"]["running"]


async def test_file_registry_delete_with_credential_and_include_then_edit_in_place(gateway: Gateway) -> None:
    assert gateway.stack.demo is not None
    port = gateway.stack.demo.port
    shop = gateway.registry / "shop"
    (shop / "keyed.yaml").unlink()
    (shop / "composed.yaml").unlink()
    await eventually(lambda: not_served(base_url(gateway, "keyed")), 10, "shop/keyed removed from Envoy")
    await eventually(lambda: not_served(base_url(gateway, "composed")), 10, "shop/composed removed")

    (shop / "other.yaml").write_text(yaml.safe_dump(server_doc("other", port, "edited in place")))
    await eventually(
        lambda: _listed(base_url(gateway, "other"), "edited in place"), 10, "the in-place edit reaches Envoy"
    )
    # And the one after it too: the watch is still running.
    (shop / "other.yaml").write_text(yaml.safe_dump(server_doc("other", port, "edited again")))
    await eventually(lambda: _listed(base_url(gateway, "other"), "edited again"), 10, "a later edit too")
    healthy_pipeline(gateway)


async def test_admin_api_delete_with_credential_and_include_then_edit_in_place(gateway: Gateway) -> None:
    assert gateway.stack.demo is not None
    port = gateway.stack.demo.port
    async with httpx.AsyncClient(base_url=admin_url(gateway), timeout=10) as admin:
        for name in ("keyed", "composed"):
            response = await admin.delete(f"/v1/servers/shop/{name}", headers=AUTH)
            assert response.status_code == 204, response.text
        response = await admin.put(
            "/v1/servers/shop/other", json=server_doc("other", port, "edited through the API"), headers=AUTH
        )
        assert response.status_code == 200, response.text
    await eventually(
        lambda: _listed(base_url(gateway, "other"), "edited through the API"),
        10,
        "the API edit reaches Envoy",
    )
    assert await not_served(base_url(gateway, "keyed"))
    healthy_pipeline(gateway)


async def test_a_failing_translation_keeps_envoy_on_the_last_good_config_and_the_next_change_applies(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any exception in translation or the cache update: logged, in /status, the watch goes on."""
    assert gateway.stack.demo is not None
    port = gateway.stack.demo.port
    control_plane = control_plane_of(gateway)
    other = gateway.registry / "shop" / "other.yaml"
    original = Translator.translate

    def broken(self: Translator, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected translation failure")

    monkeypatch.setattr(Translator, "translate", broken)
    other.write_text(yaml.safe_dump(server_doc("other", port, "never served")))
    status = await eventually(
        lambda: (s := control_plane.status())["registry"]["last_failure"] and s, 10, "the failure in /status"
    )
    assert "injected translation failure" in status["registry"]["last_failure"]["error"]
    assert any("injected translation failure" in p["reason"] for p in status["registry"]["problems"])
    assert status["tasks"]["registry-watch"]["running"]
    assert (await descriptions(base_url(gateway, "other"))) == {"count_other": "first"}

    # Through the admin API the same failure refuses the write: 500, nothing persisted.
    async with httpx.AsyncClient(base_url=admin_url(gateway), timeout=10) as admin:
        response = await admin.put(
            "/v1/servers/shop/other", json=server_doc("other", port, "refused"), headers=AUTH
        )
        assert response.status_code == 500
        assert "nothing was written" in response.json()["error"]
        assert "refused" not in other.read_text()

        monkeypatch.setattr(Translator, "translate", original)
        other.write_text(yaml.safe_dump(server_doc("other", port, "served after the failure")))
        await eventually(
            lambda: _listed(base_url(gateway, "other"), "served after the failure"), 10, "the next change"
        )
        assert control_plane.status()["registry"]["problems"] == []
        response = await admin.put(
            "/v1/servers/shop/other", json=server_doc("other", port, "and through the API"), headers=AUTH
        )
        assert response.status_code == 200, response.text
    await eventually(lambda: _listed(base_url(gateway, "other"), "and through the API"), 10, "the API edit")

    # A failing cache update: the same, and the next change goes through.
    real_set_resources = SnapshotCache.set_resources

    def broken_cache(self: SnapshotCache, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected cache failure")

    monkeypatch.setattr(SnapshotCache, "set_resources", broken_cache)
    other.write_text(yaml.safe_dump(server_doc("other", port, "not cached")))
    await eventually(
        lambda: (
            "injected cache failure"
            in (control_plane.status()["registry"]["last_failure"] or {}).get("error", "")
        ),
        10,
        "the cache failure in /status",
    )
    assert await _listed(base_url(gateway, "other"), "and through the API")
    monkeypatch.setattr(SnapshotCache, "set_resources", real_set_resources)
    other.write_text(yaml.safe_dump(server_doc("other", port, "cached again")))
    await eventually(lambda: _listed(base_url(gateway, "other"), "cached again"), 10, "the change after it")
    assert control_plane.status()["tasks"]["registry-watch"]["running"]


async def _listed(url: str, description: str) -> bool:
    return description in (await descriptions(url)).values()
