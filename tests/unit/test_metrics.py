"""The control plane's /metrics: one registry per control plane, bounded node series, and the
admin API's read rule (open on loopback, the token elsewhere)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import mcpgw.controlplane
from mcpgw.controlplane import ControlPlane, ControlPlaneOptions
from mcpgw.metrics import ControlPlaneMetrics
from mcpgw.stack import DEFAULT_REGISTRY, free_ports
from mcpgw.xds.cache import SnapshotCache
from mcpgw.xds.server import AdsServer
from mcpgw.xds.types import EXTENSION_CONFIG, LISTENER
from pluginserver.server import DEFAULT_ROOT
from tests.unit.adsclient import AdsClient
from tests.unit.adsharness import bootstrap, until, world
from tests.waiting import eventually

TOKEN = "metrics-unit-token"
SCRAPE_TOKEN = "metrics-scrape-only-token"


def samples(metrics: ControlPlaneMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_control_planes_in_one_process_count_apart() -> None:
    one = ControlPlaneMetrics(lambda: {"revision": "r1", "envoys": 1})
    two = ControlPlaneMetrics(lambda: {"revision": "r2", "envoys": 0})
    one.node_seen("a")
    one.pushed("a", LISTENER)
    one.nacked("a", EXTENSION_CONFIG)
    assert samples(one)[("mcpgw_controlplane_xds_pushes_total", (("node", "a"), ("type", "lds")))] == 1
    assert samples(one)[("mcpgw_controlplane_xds_nacks_total", (("node", "a"), ("type", "ecds")))] == 1
    assert samples(one)[("mcpgw_controlplane_registry_revision_info", (("revision", "r1"),))] == 1
    assert not [key for key in samples(two) if key[0] == "mcpgw_controlplane_xds_pushes_total"]
    assert samples(two)[("mcpgw_controlplane_registry_revision_info", (("revision", "r2"),))] == 1


def test_a_node_series_start_at_zero_and_leave_with_the_node() -> None:
    metrics = ControlPlaneMetrics(dict)
    metrics.node_seen("envoy-1")
    nacks = {k: v for k, v in samples(metrics).items() if k[0] == "mcpgw_controlplane_xds_nacks_total"}
    # One series per xDS type, at 0: the first NACK is an increase an alert can see.
    assert sorted(dict(k[1])["type"] for k in nacks) == ["cds", "ecds", "eds", "lds", "rds", "sds"]
    assert set(nacks.values()) == {0}
    metrics.node_gone("envoy-1")
    assert not [k for k in samples(metrics) if dict(k[1]).get("node") == "envoy-1"]


def test_write_to_ack_is_observed_once_every_envoy_acked() -> None:
    metrics = ControlPlaneMetrics(dict)
    settled: list[bool | None] = [False]
    metrics.settled = lambda: settled[0]
    metrics.applied(0.002, changed=True)
    metrics.applied(0.001, changed=True)
    metrics.acked("envoy-1", LISTENER)
    metrics.check_settled()  # another type still waits
    assert samples(metrics)[("mcpgw_controlplane_write_to_ack_seconds_count", ())] == 0
    settled[0] = True
    metrics.acked("envoy-1", EXTENSION_CONFIG)
    metrics.check_settled()
    assert samples(metrics)[("mcpgw_controlplane_write_to_ack_seconds_count", ())] == 2
    # A change with no Envoy connected has no ACK to wait for: nothing is observed for it.
    settled[0] = None
    metrics.applied(0.001, changed=True)
    metrics.check_settled()
    assert samples(metrics)[("mcpgw_controlplane_write_to_ack_seconds_count", ())] == 2
    assert samples(metrics)[("mcpgw_controlplane_translation_seconds_count", ())] == 3


@pytest.mark.parametrize("loopback", [True, False])
async def test_metrics_follow_the_admin_read_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loopback: bool
) -> None:
    # Beyond loopback, reads need the token: the test binds 127.0.0.1 and makes the control
    # plane treat it as a remote address (TLS is not needed for this check).
    monkeypatch.setattr(mcpgw.controlplane, "is_loopback", lambda host: loopback)
    registry = Path(shutil.copytree(DEFAULT_REGISTRY, tmp_path / "registry"))
    scrape_file = tmp_path / "metrics-token"
    scrape_file.write_text(SCRAPE_TOKEN + "\n")
    xds, admin = free_ports(2)
    plane = ControlPlane(
        ControlPlaneOptions(
            registry_dir=registry,
            plugins_dir=DEFAULT_ROOT,
            xds_port=xds,
            status_port=admin,
            admin_token=TOKEN,
            metrics_token_file=scrape_file,
        )
    )
    await plane.start()
    try:
        async with httpx.AsyncClient(base_url=plane.admin_url, timeout=10) as client:
            anonymous = await client.get("/metrics")
            assert anonymous.status_code == (200 if loopback else 401)
            assert (await client.get("/healthz")).status_code == 200
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
            assert wrong.status_code == (200 if loopback else 401)
            # The scrape token admits /metrics and nothing else: Prometheus cannot edit the registry.
            scraper = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
            assert (await client.get("/metrics", headers=scraper)).status_code == 200
            if not loopback:
                assert (await client.get("/status", headers=scraper)).status_code == 401
                assert (await client.get("/v1/servers", headers=scraper)).status_code == 401
            delete = await client.delete("/v1/servers/default/petstore", headers=scraper)
            assert delete.status_code == 401
            assert len(plane.store.snapshot.servers) > 0  # type: ignore[union-attr]
            response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            families = {f.name: f for f in text_string_to_metric_families(response.text)}
            servers = families["mcpgw_controlplane_registry_servers"].samples[0].value
            assert servers == len(plane.store.snapshot.servers) > 0  # type: ignore[union-attr]
            revision = families["mcpgw_controlplane_registry_revision_info"].samples[0]
            assert revision.labels == {"revision": plane.applied_revision}
            assert families["mcpgw_controlplane_xds_connected_envoys"].samples[0].value == 0
            assert families["mcpgw_controlplane_session_key_age_seconds"].samples[0].value >= 0
    finally:
        await plane.stop()


async def test_a_pinned_session_key_has_no_age(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # $MCPGW_SESSION_KEY has no creation time: an age from 1970 would trip any "key too old" rule.
    monkeypatch.setenv("MCPGW_SESSION_KEY", base64.urlsafe_b64encode(bytes(range(32))).decode())
    registry = Path(shutil.copytree(DEFAULT_REGISTRY, tmp_path / "registry"))
    xds, admin = free_ports(2)
    plane = ControlPlane(
        ControlPlaneOptions(registry_dir=registry, plugins_dir=DEFAULT_ROOT, xds_port=xds, status_port=admin)
    )
    await plane.start()
    try:
        names = {name for name, _ in samples(plane.metrics)}
        assert "mcpgw_controlplane_session_key_age_seconds" not in names
        assert "mcpgw_controlplane_registry_servers" in names
    finally:
        await plane.stop()


async def test_write_to_ack_waits_for_the_last_envoy_over_real_ads_streams() -> None:
    cache = SnapshotCache()
    metrics = ControlPlaneMetrics(dict)
    server = AdsServer(cache, metrics=metrics)
    metrics.settled = server.settled
    cache.set_resources(world(1))
    port = await server.start(port=0)
    target = f"127.0.0.1:{port}"

    def observed() -> float:
        return samples(metrics)[("mcpgw_controlplane_write_to_ack_seconds_count", ())]

    try:
        async with AdsClient(target, "envoy-a") as a, AdsClient(target, "envoy-b") as b:
            await bootstrap(a)
            await bootstrap(b)
            await until(lambda: server.settled())
            metrics.applied(0.001, changed=True)
            cache.set_resources(world(2))
            await a.ack_until_quiet()
            assert server.settled() is False and observed() == 0  # envoy-b has not ACKed
            assert server.unacked(nack_answers=False)["envoy-b"] > 0

            async def b_acked_all() -> bool:
                # "Quiet" is a 0.3 s pause; on a loaded machine a push can come after one.
                await b.ack_until_quiet()
                return observed() == 1

            await eventually(b_acked_all, 15, "envoy-b's ACKs to complete the write")
            pushes = samples(metrics)[
                ("mcpgw_controlplane_xds_pushes_total", (("node", "envoy-b"), ("type", "lds")))
            ]
            assert pushes == 2
        # Both streams closed: their series leave with them.
        await until(lambda: not [k for k in samples(metrics) if dict(k[1]).get("node")])
    finally:
        await server.stop(0.5)
