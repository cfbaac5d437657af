"""The ADS server's Delta (incremental) xDS, over a real gRPC server and client on 127.0.0.1.

Behaviour both protocols share (ACK status, push order, silence on an identical snapshot,
NACKs outliving a stream) is tested for both in test_ads_server.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.validate import parse_server
from mcpgw.translate.envoy import GatewaySettings, PluginRef, translate
from mcpgw.xds.types import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE
from tests.unit.adsclient import decode, describe, names_of
from tests.unit.adsharness import (
    ENVOY_SUBSCRIPTIONS,
    QUIET,
    Harness,
    bootstrap,
    eds_world,
    ext,
    until,
    world,
)
from tests.unit.test_registry import minimal


def ecds_status(ads: Harness, node_id: str = "envoy-1") -> dict:
    return ads.node_status(node_id)["types"]["ecds"]


def versions(ads: Harness, type_url: str) -> dict[str, str]:
    return ads.cache.snapshot.get(type_url).hashes()


# -- subscriptions -------------------------------------------------------------------------


async def test_initial_wildcard_and_named_subscriptions(ads: Harness) -> None:
    ads.set(world())
    async with ads.delta_client() as client:
        got = await bootstrap(client)
        await client.expect_silence(QUIET)
    assert {t: names_of(r) for t, r in got.items()} == {
        CLUSTER: ["b1", "b2"],
        ENDPOINT: ["b1", "b2"],
        EXTENSION_CONFIG: ["pets", "weather"],
        LISTENER: ["mcp"],
        ROUTE: ["mcp-routes"],
    }
    for type_url, resp in got.items():
        # Per-resource versions are the cache's content hashes; the system version is the type's.
        assert {r.name: r.version for r in resp.resources} == versions(ads, type_url)
        assert resp.system_version_info == ads.cache.snapshot.version(type_url)
        assert list(resp.removed_resources) == [] and resp.nonce
    assert decode(got[EXTENSION_CONFIG])["weather"] == ext("weather", "1")
    assert len({r.nonce for r in got.values()}) == 5


async def test_first_wildcard_request_is_answered_even_when_empty(ads: Harness) -> None:
    async with ads.delta_client() as client:
        await client.subscribe(CLUSTER)
        resp = await client.recv()
        assert list(resp.resources) == [] and list(resp.removed_resources) == []
        assert resp.system_version_info
        await client.ack(resp)
        await client.expect_silence(QUIET)


async def test_missing_named_resource_is_reported_removed_then_sent_when_it_appears(ads: Harness) -> None:
    ads.set(world())
    async with ads.delta_client() as client:
        await client.subscribe(ENDPOINT, ["b1", "later"])
        resp = await client.recv()
        assert names_of(resp) == ["b1"] and list(resp.removed_resources) == ["later"]
        await client.ack(resp)
        await client.expect_silence(QUIET)  # said once, not on every request

        resources = world()
        resources[ENDPOINT]["later"] = ClusterLoadAssignment(cluster_name="later")
        ads.set(resources)
        resp = await client.recv()
        assert names_of(resp) == ["later"] and list(resp.removed_resources) == []


async def test_subscribing_more_names_sends_only_those(ads: Harness) -> None:
    resources = world()
    resources[ENDPOINT]["b3"] = ClusterLoadAssignment(cluster_name="b3")
    ads.set(resources)
    async with ads.delta_client() as client:
        await bootstrap(client)
        await client.subscribe(ENDPOINT, ["b3"])  # a delta: b1 and b2 stay subscribed
        resp = await client.recv()
        assert names_of(resp) == ["b3"]
        await client.ack(resp)
        await client.expect_silence(QUIET)


async def test_unsubscribe_stops_updates_and_resubscribe_resends(ads: Harness) -> None:
    ads.set(world())
    async with ads.delta_client() as client:
        await bootstrap(client)
        await client.unsubscribe(EXTENSION_CONFIG, ["pets"])
        await client.expect_silence(QUIET)  # no removal needed: the client asked
        await until(lambda: ecds_status(ads)["subscribed"] == 1)

        ads.set(world(servers={"weather": "1", "pets": "2"}))
        await client.expect_silence(QUIET)  # pets changed, but nobody here wants it

        await client.subscribe(EXTENSION_CONFIG, ["pets"])
        resp = await client.recv()
        assert names_of(resp) == ["pets"] and decode(resp)["pets"] == ext("pets", "2")
        await client.ack(resp)

        # Subscribing to a name the client already holds must still answer it (the doc's rule).
        await client.subscribe(EXTENSION_CONFIG, ["pets"])
        assert names_of(await client.recv()) == ["pets"]


async def test_unsubscribing_a_name_also_covered_by_wildcard_answers_it(ads: Harness) -> None:
    ads.set(world())
    async with ads.delta_client() as client:
        await client.subscribe(CLUSTER, ["*", "b1", "gone"])
        await client.ack(await client.recv())
        await client.unsubscribe(CLUSTER, ["b1", "gone"])
        resp = await client.recv()
        # b1 is still in "*": resent; "gone" is in neither: removed.
        assert names_of(resp) == ["b1"] and list(resp.removed_resources) == ["gone"]


async def test_stale_nonce_still_changes_the_subscription(ads: Harness) -> None:
    ads.set(world())
    resources = world()
    resources[ENDPOINT]["b3"] = ClusterLoadAssignment(cluster_name="b3")
    async with ads.delta_client() as client:
        got = await bootstrap(client)
        ads.set(resources)  # nothing subscribed changed: no push
        await client.send(ENDPOINT, ["b3"], nonce=got[ENDPOINT].nonce + "0")  # unknown nonce
        assert names_of(await client.recv()) == ["b3"]


# -- changes -------------------------------------------------------------------------------


async def test_one_tool_edit_sends_only_that_extension_config(ads: Harness) -> None:
    ads.set(world())
    async with ads.delta_client() as client:
        await bootstrap(client)
        assert ads.set(world(servers={"weather": "2", "pets": "1"})) == [EXTENSION_CONFIG]
        resp = await client.recv()
        assert (resp.type_url, names_of(resp), list(resp.removed_resources)) == (
            EXTENSION_CONFIG,
            ["weather"],
            [],
        )
        assert resp.resources[0].version == versions(ads, EXTENSION_CONFIG)["weather"]
        await client.ack(resp)
        await client.expect_silence(QUIET)


async def test_removed_resources_are_named(ads: Harness) -> None:
    ads.set(world())
    async with ads.delta_client() as client:
        await bootstrap(client)
        smaller = world(servers={"weather": "1"})
        del smaller[CLUSTER]["b2"]
        del smaller[ENDPOINT]["b2"]
        del smaller[LISTENER]["mcp"]
        ads.set(smaller)
        cds, eds, ecds, lds = await client.recv_many(4)
        for resp, type_url, removed in (
            (cds, CLUSTER, ["b2"]),
            (eds, ENDPOINT, ["b2"]),
            (ecds, EXTENSION_CONFIG, ["pets"]),
            (lds, LISTENER, ["mcp"]),
        ):
            assert (resp.type_url, names_of(resp), list(resp.removed_resources)) == (type_url, [], removed)
            await client.ack(resp)
        await client.expect_silence(QUIET)


async def test_changed_eds_cluster_gets_its_endpoints_again(ads: Harness) -> None:
    """Envoy re-warms a modified cluster and waits for a ClusterLoadAssignment, even an unchanged one."""
    ads.set(eds_world(1))
    async with ads.delta_client() as client:
        await bootstrap(client)
        ads.set(eds_world(2))
        cds, eds = await client.recv_many(2)
        assert (cds.type_url, names_of(cds)) == (CLUSTER, ["b1"])  # only the changed cluster
        assert (eds.type_url, names_of(eds)) == (ENDPOINT, ["b1"])  # unchanged content, resent
        await client.ack(cds)
        await client.ack(eds)
        await client.expect_silence(QUIET)


# -- ACK / NACK ----------------------------------------------------------------------------


async def test_nack_is_recorded_and_not_resent_until_the_resource_changes(ads: Harness) -> None:
    ads.set(world())
    async with ads.delta_client() as client:
        await bootstrap(client)
        good = ads.cache.snapshot.version(EXTENSION_CONFIG)
        ads.set(world(servers={"weather": "bad", "pets": "1"}))
        rejected = await client.recv()
        await client.nack(rejected, "invalid wasm config for weather")
        await until(lambda: ecds_status(ads)["last_nack"] is not None)
        nack = ecds_status(ads)["last_nack"]
        assert nack["version"] == rejected.system_version_info and nack["client_version"] == good
        assert nack["error"] == "invalid wasm config for weather" and nack["at"]
        assert ecds_status(ads)["version_acked"] == good

        ads.set(world(2, servers={"weather": "bad", "pets": "2"}))  # weather stays as rejected
        for resp in await client.recv_many(5):
            assert "weather" not in names_of(resp), describe(resp)
            await client.ack(resp)
        await client.expect_silence(QUIET)

        ads.set(world(2, servers={"weather": "3", "pets": "2"}))
        fixed = await client.recv()
        assert fixed.type_url == EXTENSION_CONFIG and names_of(fixed) == ["weather"]
        assert decode(fixed)["weather"] == ext("weather", "3")
        await client.ack(fixed)
        await until(lambda: ecds_status(ads)["version_acked"] == fixed.system_version_info)


async def test_two_nodes_and_both_protocols_are_tracked_independently(ads: Harness) -> None:
    ads.set(world())
    async with ads.delta_client("envoy-a") as a, ads.delta_client("envoy-b") as b, ads.client("sotw") as c:
        await bootstrap(a)
        await bootstrap(b)
        for type_url, names in ENVOY_SUBSCRIPTIONS:
            await c.subscribe(type_url, names)
            await c.ack(await c.recv())
        ads.set(world(servers={"weather": "2", "pets": "1"}))
        resp_a, resp_b, resp_c = await a.recv(), await b.recv(), await c.recv()
        await a.ack(resp_a)
        await b.nack(resp_b, "b rejects")
        assert names_of(resp_a) == names_of(resp_b) == names_of(resp_c) == ["weather"]
        await until(lambda: ecds_status(ads, "envoy-b")["last_nack"] is not None)
        await until(lambda: ecds_status(ads, "envoy-a")["version_acked"] == resp_a.system_version_info)
        assert ecds_status(ads, "envoy-a")["last_nack"] is None
        protocols = {e["node_id"]: e["protocol"] for e in ads.server.status()}
        assert protocols == {"envoy-a": "delta", "envoy-b": "delta", "sotw": "sotw"}


# -- reconnect -----------------------------------------------------------------------------


async def test_reconnect_with_initial_versions_sends_only_what_differs(ads: Harness) -> None:
    ads.set(world())
    async with ads.delta_client() as client:
        await bootstrap(client)
        held = client.tracking
    await until(lambda: ads.server.status() == [])

    changed = world(servers={"weather": "2", "pets": "1"})
    del changed[CLUSTER]["b2"]
    del changed[ENDPOINT]["b2"]
    ads.set(changed)
    async with ads.delta_client(tracking=held) as again:
        await again.resume()
        got = {r.type_url: r for r in await again.ack_until_quiet(QUIET)}
    assert {t: (names_of(r), list(r.removed_resources)) for t, r in got.items()} == {
        CLUSTER: ([], ["b2"]),
        ENDPOINT: ([], ["b2"]),
        EXTENSION_CONFIG: (["weather"], []),
    }


async def test_reconnect_with_everything_current_sends_nothing(ads: Harness) -> None:
    ads.set(world())
    async with ads.delta_client() as client:
        await bootstrap(client)
        held = client.tracking
    async with ads.delta_client(tracking=held) as again:
        await again.resume()
        await again.expect_silence(QUIET)


# -- scale: the required delta property ----------------------------------------------------

SETTINGS = GatewaySettings(
    PluginRef(url="http://127.0.0.1:18002/plugins/mcp-server/1/plugin.wasm", sha256="0" * 64)
)


def registry(servers: int, edited: int | None = None) -> RegistrySnapshot:
    """`servers` MCP servers built from real documents; server `edited` has a new tool description."""

    def document(i: int) -> dict[str, Any]:
        doc = minimal(name=f"svc{i:04d}", backend={"endpoints": [f"127.0.0.1:{20000 + i}"]})
        doc["tools"][0]["description"] = "edited" if i == edited else "original"
        return doc

    return RegistrySnapshot(
        servers=tuple(parse_server(document(i), f"svc{i:04d}.yaml") for i in range(servers))
    )


def envoy_subscriptions(ads: Harness) -> list[tuple[str, list[str]]]:
    """What Envoy subscribes to for the current snapshot: wildcard CDS/LDS, every named resource."""
    snapshot = ads.cache.snapshot
    return [
        (CLUSTER, []),
        (ENDPOINT, sorted(snapshot.get(ENDPOINT).resources)),
        (EXTENSION_CONFIG, sorted(snapshot.get(EXTENSION_CONFIG).resources)),
        (LISTENER, []),
        (ROUTE, sorted(snapshot.get(ROUTE).resources)),
    ]


async def test_one_tool_edit_on_1000_servers_sends_exactly_one_resource_to_each_node(ads: Harness) -> None:
    ads.set(translate(registry(1000), SETTINGS))
    subscriptions = envoy_subscriptions(ads)
    assert len(subscriptions[2][1]) == 1000
    nodes = [ads.delta_client(f"envoy-{i}") for i in range(3)]
    for node in nodes:
        await node.connect()
    try:
        for node in nodes:
            initial = await bootstrap(node, subscriptions)
            assert len(initial[EXTENSION_CONFIG].resources) == 1000
            await node.expect_silence(0.05)

        assert ads.set(translate(registry(1000, edited=500), SETTINGS)) == [EXTENSION_CONFIG]
        edited = await asyncio.gather(*(node.recv() for node in nodes))
        for node, resp in zip(nodes, edited, strict=True):
            assert resp.type_url == EXTENSION_CONFIG, describe(resp)
            assert [r.name for r in resp.resources] == ["mcpgw/default/svc0500"], describe(resp)
            assert list(resp.removed_resources) == []
            await node.ack(resp)
        # Nothing else, to any node, within a bounded wait.
        await asyncio.gather(*(node.expect_silence(QUIET) for node in nodes))
        await until(
            lambda: all(
                ecds_status(ads, f"envoy-{i}")["version_acked"] == edited[0].system_version_info
                for i in range(3)
            )
        )
    finally:
        for node in nodes:
            await node.close()
