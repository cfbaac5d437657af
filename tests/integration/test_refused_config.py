"""One server whose configuration Envoy refuses never blocks another server's updates.

Envoy keeps a refused ECDS configuration as the last one of its name, and every later listener
version instantiates it again: before isolation, one refused server made Envoy NACK every later
listener update, so servers added afterwards answered 503, and `/status` named nothing.

The refusal is forced with a test hook, not a validation gap: the filter configuration text of a
server whose tool description carries `REFUSE` is made invalid JSON, which the filter's
`on_configure` refuses (the control plane generates that text; no document can cause it).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import mcpgw.translate.envoy
from mcpgw.controlplane import ControlPlane
from tests import waiting
from tests.integration.conftest import Gateway, copy_registry, free_port, running_gateway
from tests.integration.test_propagation import descriptions, server_doc

MARKER = "REFUSE"
eventually = functools.partial(waiting.eventually, ignore=(Exception,), interval=0.1)


@pytest.fixture
def refusing_filter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = mcpgw.translate.envoy._config_text

    def config_text(configuration: dict[str, Any], suffix: str) -> str:
        text = real(configuration, suffix)
        refused = any(MARKER in (t.get("description") or "") for t in configuration["tools_list"]["tools"])
        return "{refused by the filter: not JSON" + text if refused else text

    monkeypatch.setattr(mcpgw.translate.envoy, "_config_text", config_text)
    # The control plane's own run of the filter's parser would refuse this text before Envoy
    # sees it; turned off here so the text reaches Envoy, as a config only Envoy refuses does
    # (a filter build other than the one the check was built from, a host-side limit).
    monkeypatch.setattr(mcpgw.translate.envoy, "_check_filter", lambda *args: None)
    yield


@pytest.fixture(params=["sotw", "delta"])
async def gateway(
    request: pytest.FixtureRequest, tmp_path: Path, refusing_filter: None
) -> AsyncIterator[Gateway]:
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    (registry / "shop").mkdir()
    async with running_gateway(
        tmp_path, registry, backend_port, xds_delta=request.param == "delta"
    ) as running:
        yield running


def control_plane_of(gateway: Gateway) -> ControlPlane:
    assert gateway.stack.control_plane is not None
    return gateway.stack.control_plane


def url(gateway: Gateway, name: str) -> str:
    return f"{gateway.stack.mcp_base_url}/mcp/shop/{name}"


def write(gateway: Gateway, name: str, description: str) -> None:
    assert gateway.stack.demo is not None
    document = server_doc(name, gateway.stack.demo.port, description)
    (gateway.registry / "shop" / f"{name}.yaml").write_text(yaml.safe_dump(document))


def refusal_of(gateway: Gateway, server: str) -> dict[str, Any] | None:
    refused = control_plane_of(gateway).status()["refused"]
    return next((r for r in refused if r["server"] == server), None)


def listener_nacked(gateway: Gateway) -> bool:
    nodes = control_plane_of(gateway).status()["nodes"]
    return any((node["types"].get("lds") or {}).get("last_nack") for node in nodes)


async def _listed(url: str, description: str) -> bool:
    return description in (await descriptions(url)).values()


async def test_a_refused_new_server_does_not_block_servers_added_after_it(gateway: Gateway) -> None:
    write(gateway, "bad", f"{MARKER} me")
    refusal = await eventually(lambda: refusal_of(gateway, "shop/bad"), 15, "/status names the refusal")
    assert refusal["resource"] == "mcpgw/shop/bad"
    assert refusal["type"] == "ecds"
    assert refusal["node"] == "test-node"
    assert "Unable to create Wasm plugin mcpgw/shop/bad" in refusal["error"]
    assert refusal["serving"].startswith("nothing")

    write(gateway, "good", "added after the refused one")
    await eventually(
        lambda: _listed(url(gateway, "good"), "added after the refused one"), 15, "shop/good served"
    )
    assert not listener_nacked(gateway)
    assert await descriptions(gateway.url)  # the petstore is untouched

    # Fixing the document is enough: the new content gets its chance, and is served.
    write(gateway, "bad", "fixed")
    await eventually(lambda: _listed(url(gateway, "bad"), "fixed"), 15, "the fixed server is served")
    assert refusal_of(gateway, "shop/bad") is None
    write(gateway, "later", "and the listener still changes")
    await eventually(
        lambda: _listed(url(gateway, "later"), "and the listener still changes"), 15, "shop/later"
    )
    assert not listener_nacked(gateway)


async def test_a_server_edited_into_a_refused_config_keeps_its_last_accepted_one(gateway: Gateway) -> None:
    write(gateway, "edited", "accepted")
    await eventually(lambda: _listed(url(gateway, "edited"), "accepted"), 15, "shop/edited served")

    write(gateway, "edited", f"{MARKER} this edit")
    refusal = await eventually(lambda: refusal_of(gateway, "shop/edited"), 15, "/status names the refusal")
    assert refusal["serving"] == "the last configuration Envoy accepted"
    assert await _listed(url(gateway, "edited"), "accepted")

    write(gateway, "good", "added after the refused edit")
    await eventually(lambda: _listed(url(gateway, "good"), "added after the refused edit"), 15, "shop/good")
    assert await _listed(url(gateway, "edited"), "accepted")
    assert not listener_nacked(gateway)


@pytest.fixture
def refusing_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A server whose tool description carries `UNBALANCED-CLUSTER` gets a cluster Envoy refuses
    (CLUSTER_PROVIDED balancing is only valid for ORIGINAL_DST clusters)."""
    real = mcpgw.translate.envoy._backend_cluster

    def backend_cluster(server: Any, *args: Any, **kwargs: Any) -> Any:
        cluster, assignment = real(server, *args, **kwargs)
        if any("UNBALANCED-CLUSTER" in (t.description or "") for t in server.tools):
            cluster.lb_policy = cluster.CLUSTER_PROVIDED
        return cluster, assignment

    monkeypatch.setattr(mcpgw.translate.envoy, "_backend_cluster", backend_cluster)
    yield


async def test_a_refused_cluster_is_left_out_and_named(gateway: Gateway, refusing_cluster: None) -> None:
    write(gateway, "nocluster", "UNBALANCED-CLUSTER")
    refusal = await eventually(lambda: refusal_of(gateway, "shop/nocluster"), 15, "/status names the refusal")
    assert (refusal["resource"], refusal["type"]) == ("mcpgw/shop/nocluster", "cds")
    assert "cluster provided LB specified" in refusal["error"]
    assert refusal["serving"].startswith("nothing")

    write(gateway, "good", "added after the refused cluster")
    await eventually(
        lambda: _listed(url(gateway, "good"), "added after the refused cluster"), 15, "shop/good"
    )

    def clusters_in_sync() -> bool:
        [node] = control_plane_of(gateway).status()["nodes"]
        cds = node["types"]["cds"]
        return bool(cds["version_acked"] == cds["version_sent"])

    # Without the refused cluster, Envoy ACKs the cluster set again.
    await eventually(clusters_in_sync, 15, "the cluster set ACKed")
