"""The control plane's /metrics, scraped by a real Prometheus, after real edits and a real NACK.

Each test runs the whole stack (control plane, Envoy, demo backend) or a control plane on a
Redis registry, starts Debian's `prometheus` scraping the admin port every second
(`tests.prometheus`), and asserts with PromQL what an operator's dashboard would read.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from mcpgw.controlplane import ControlPlane, ControlPlaneOptions
from mcpgw.registry.redisstore import RedisStore
from mcpgw.stack import free_ports
from pluginserver.server import DEFAULT_ROOT
from tests import waiting
from tests.integration.conftest import Gateway, copy_registry, free_port, running_gateway
from tests.integration.test_propagation import server_doc
from tests.integration.test_refused_config import (  # noqa: F401 (refusing_filter: a fixture)
    MARKER,
    control_plane_of,
    refusing_filter,
)
from tests.prometheus import SHIPPED_RULES, Prometheus, running_prometheus
from tests.redisserver import RedisServer

TOKEN = "metrics-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE = "test-node"  # running_gateway's Envoy
eventually = functools.partial(waiting.eventually, ignore=(Exception,), interval=0.2)


def admin_target(plane: ControlPlane) -> str:
    return f"127.0.0.1:{plane.status_port}"


@pytest.fixture
async def gateway(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    """The whole stack; State of the World xDS unless a test asks for "delta" (indirect parameter)."""
    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    delta = getattr(request, "param", "sotw") == "delta"
    async with running_gateway(tmp_path, registry, backend_port, xds_delta=delta) as running:
        yield running


@pytest.fixture
async def prometheus(tmp_path: Path, gateway: Gateway) -> AsyncIterator[Prometheus]:
    target = admin_target(control_plane_of(gateway))
    jobs = {"mcpgw-controlplane": [target]}
    async with running_prometheus(tmp_path / "prometheus", jobs, rule_files=SHIPPED_RULES) as prom:
        await prom.wait_up()
        yield prom


async def counter(prom: Prometheus, promql: str) -> float:
    """A counter-like value, 0 while the series does not exist yet."""
    return await prom.value(promql) or 0.0


async def test_an_admin_edit_shows_its_revision_translation_pushes_and_acks(
    gateway: Gateway, prometheus: Prometheus
) -> None:
    plane = control_plane_of(gateway)
    assert gateway.stack.demo is not None
    # What Prometheus saw of the starting registry.
    before = plane.applied_revision
    await prometheus.eventually(
        f'mcpgw_controlplane_registry_revision_info{{revision="{before}"}} == 1', 20, "the first revision"
    )
    await prometheus.eventually(
        f'mcpgw_controlplane_xds_acks_total{{node="{NODE}",type="ecds"}} > 0', 20, "the first ECDS ACK"
    )
    # Nothing is waiting on this node; the series of a node that is connected exists.
    assert await prometheus.value("mcpgw_controlplane_xds_connected_envoys") == 1
    translations = await counter(prometheus, "mcpgw_controlplane_translation_seconds_count")
    pushes = await counter(prometheus, f'mcpgw_controlplane_xds_pushes_total{{node="{NODE}",type="ecds"}}')
    acks = await counter(prometheus, f'mcpgw_controlplane_xds_acks_total{{node="{NODE}",type="ecds"}}')
    write_to_ack = await counter(prometheus, "mcpgw_controlplane_write_to_ack_seconds_count")
    servers = await prometheus.value("mcpgw_controlplane_registry_servers")
    assert servers == len(plane.status()["registry"]["servers"])

    async with httpx.AsyncClient(base_url=f"http://{admin_target(plane)}", timeout=10) as admin:
        document = server_doc("metered", gateway.stack.demo.port, "counted")
        response = await admin.post("/v1/servers", json=document, headers=AUTH)
        assert response.status_code == 201, response.text
    after = await eventually(lambda: plane.applied_revision != before and plane.applied_revision, 10, "apply")

    await prometheus.eventually(
        f'mcpgw_controlplane_registry_revision_info{{revision="{after}"}} == 1', 20, "the new revision"
    )
    assert await prometheus.value("mcpgw_controlplane_registry_servers") == servers + 1
    assert await prometheus.value("mcpgw_controlplane_registry_tools") == sum(
        s["tools"] for s in plane.status()["registry"]["servers"]
    )
    await prometheus.eventually(
        f"mcpgw_controlplane_translation_seconds_count > {translations}", 20, "a translation observed"
    )
    await prometheus.eventually(
        f'mcpgw_controlplane_xds_pushes_total{{node="{NODE}",type="ecds"}} > {pushes}', 20, "an ECDS push"
    )
    await prometheus.eventually(
        f'mcpgw_controlplane_xds_acks_total{{node="{NODE}",type="ecds"}} > {acks}', 20, "its ACK"
    )
    await prometheus.eventually(
        f"mcpgw_controlplane_write_to_ack_seconds_count > {write_to_ack}", 20, "a write-to-ACK observation"
    )
    # Every observation fits the histogram's bounded range on a loaded machine, too.
    assert await prometheus.value('mcpgw_controlplane_write_to_ack_seconds_bucket{le="+Inf"}') == (
        await prometheus.value("mcpgw_controlplane_write_to_ack_seconds_count")
    )
    assert await prometheus.value(f'mcpgw_controlplane_xds_unacked_seconds{{node="{NODE}"}}') == 0
    assert await counter(prometheus, 'mcpgw_controlplane_xds_nacks_total{type="ecds"}') == 0

    # A refused write counts as a validation failure of its source.
    async with httpx.AsyncClient(base_url=f"http://{admin_target(plane)}", timeout=10) as admin:
        broken = {**document, "name": "broken", "tools": [{"name": "no template"}]}
        assert (await admin.post("/v1/servers", json=broken, headers=AUTH)).status_code == 422
    await prometheus.eventually(
        'mcpgw_controlplane_validation_failures_total{source="write"} == 1', 20, "a counted refusal"
    )


async def test_an_open_http_sse_stream_shows_in_broker_streams(
    gateway: Gateway, prometheus: Prometheus
) -> None:
    await prometheus.eventually("mcpgw_controlplane_broker_streams == 0", 20, "no stream yet")
    assert await prometheus.value("mcpgw_controlplane_bridge_sessions") == 0
    assert await prometheus.value("mcpgw_controlplane_session_key_age_seconds") is not None
    async with Client(sse_client(f"{gateway.url}/sse"), mode="legacy") as client:
        assert (await client.list_tools()).tools
        await prometheus.eventually("mcpgw_controlplane_broker_streams == 1", 20, "the open stream")
    await prometheus.eventually("mcpgw_controlplane_broker_streams == 0", 20, "the stream closed")


@pytest.mark.parametrize("gateway", ["sotw", "delta"], indirect=True)
async def test_a_nack_counts_for_its_type_and_node(
    gateway: Gateway,
    prometheus: Prometheus,
    refusing_filter: None,  # noqa: F811
) -> None:
    plane = control_plane_of(gateway)
    assert gateway.stack.demo is not None
    await prometheus.eventually(
        f'mcpgw_controlplane_xds_acks_total{{node="{NODE}",type="ecds"}} > 0', 20, "the first ECDS ACK"
    )
    assert await counter(prometheus, "sum(mcpgw_controlplane_xds_nacks_total)") == 0
    async with httpx.AsyncClient(base_url=f"http://{admin_target(plane)}", timeout=10) as admin:
        # The filter refuses this server's configuration: Envoy NACKs its ECDS resource.
        document = server_doc("refused", gateway.stack.demo.port, f"{MARKER} this one")
        response = await admin.post("/v1/servers", json=document, headers=AUTH)
        assert response.status_code == 201, response.text
    found = await prometheus.eventually(
        f'mcpgw_controlplane_xds_nacks_total{{node="{NODE}",type="ecds"}} > 0', 30, "an ECDS NACK counted"
    )
    assert len(found) == 1
    # Only ECDS was refused; the isolated configuration that follows is ACKed.
    assert await counter(prometheus, 'sum(mcpgw_controlplane_xds_nacks_total{type!="ecds"})') == 0
    assert plane.status()["refused"], "the control plane isolated the refused server"

    # The shipped alert fires for that node and type (rules evaluated every second here).
    async def nack_alert() -> list[dict[str, Any]]:
        return [a for a in await prometheus.alerts("McpgwXdsNack") if a["state"] == "firing"]

    (alert,) = await eventually(nack_alert, 30, "McpgwXdsNack firing")
    assert alert["labels"]["node"] == NODE and alert["labels"]["type"] == "ecds"
    assert alert["labels"]["severity"] == "warning"


async def test_redis_errors_and_the_reconnect_are_counted(tmp_path: Path, redis_server: RedisServer) -> None:
    seed = RedisStore(redis_server.url)
    await seed.load()
    await seed.put(server_doc("shared", free_port()))
    await seed.close()
    xds, admin = free_ports(2)
    plane = ControlPlane(
        ControlPlaneOptions(
            registry_dir=redis_server.url, plugins_dir=DEFAULT_ROOT, xds_port=xds, status_port=admin
        )
    )
    await plane.start()
    try:
        async with running_prometheus(
            tmp_path / "prometheus", {"controlplane": [admin_target(plane)]}
        ) as prom:
            await prom.wait_up()
            assert (
                await prom.value('mcpgw_controlplane_redis_errors_total{component="registry"}') == 0
            )  # exists from the start
            assert (
                await prom.value('mcpgw_controlplane_redis_errors_total{component="session_keys"}') == 0
            )  # exists from the start
            redis_server.stop()
            await prom.eventually(
                'mcpgw_controlplane_redis_errors_total{component="registry"} > 0', 30, "Redis errors counted"
            )
            # The session keys live in the same Redis; their watcher polls it too.
            await prom.eventually(
                'mcpgw_controlplane_redis_errors_total{component="session_keys"} > 0', 30, "key-store errors"
            )
            redis_server.start()
            await prom.eventually(
                'mcpgw_controlplane_redis_reconnects_total{component="registry"} > 0', 30, "the reconnect"
            )
    finally:
        await plane.stop()
