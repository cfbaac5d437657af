"""The ADS server's SotW state machine, over a real gRPC server and client on 127.0.0.1.

Tests marked with `protocol` run for Delta xDS too: what both protocols must do alike.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

from mcpgw.xds.cache import Snapshot, SnapshotCache
from mcpgw.xds.server import AdsServer
from mcpgw.xds.types import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, PUSH_ORDER, ROUTE
from tests.unit.adsclient import AdsClient, decode, names_of
from tests.unit.adsharness import (
    ENVOY_SUBSCRIPTIONS,
    PROTOCOLS,
    QUIET,
    Harness,
    bootstrap,
    eds_world,
    ext,
    until,
    world,
)


def ecds_status(ads: Harness, node_id: str) -> dict:
    return ads.node_status(node_id)["types"]["ecds"]


# -- tests ---------------------------------------------------------------------------------


async def test_first_requests_get_all_subscribed_resources(ads: Harness) -> None:
    ads.set(world())
    async with ads.client() as client:
        got = {t: names_of(r) for t, r in (await bootstrap(client)).items()}
        await client.expect_silence(QUIET)
    assert got == {
        CLUSTER: ["b1", "b2"],
        ENDPOINT: ["b1", "b2"],
        EXTENSION_CONFIG: ["pets", "weather"],
        LISTENER: ["mcp"],
        ROUTE: ["mcp-routes"],
    }


async def test_first_request_is_answered_even_when_empty(ads: Harness) -> None:
    async with ads.client() as client:
        await client.subscribe(CLUSTER)
        resp = await client.recv()
        assert list(resp.resources) == [] and resp.version_info
        await client.subscribe(ENDPOINT, ["missing"])
        resp = await client.recv()
        assert list(resp.resources) == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_ack_is_recorded_in_status(ads: Harness, protocol: str) -> None:
    ads.set(world())
    async with ads.any_client(protocol) as client:
        await bootstrap(client)
        version = ads.cache.snapshot.version(EXTENSION_CONFIG)
        await until(lambda: ads.node_status("envoy-1")["types"]["rds"]["version_acked"] is not None)
        status = ads.node_status("envoy-1")
        assert status["connected"] and status["node_cluster"] == "mcpgw-test"
        assert status["protocol"] == protocol
        assert status["peer"].startswith("ipv") and status["connected_at"]
        ecds = status["types"]["ecds"]
        assert ecds["version_sent"] == ecds["version_acked"] == version
        assert ecds["acked_at"] and ecds["last_push_at"] and ecds["last_nack"] is None
        assert ecds["subscribed"] == 2 and status["types"]["cds"]["wildcard"] is True
        assert list(status["types"]) == ["cds", "eds", "ecds", "lds", "rds"]
        json.dumps(ads.server.status())


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_identical_snapshot_pushes_nothing(ads: Harness, protocol: str) -> None:
    ads.set(world())
    async with ads.any_client(protocol) as client:
        await bootstrap(client)
        assert ads.set(world()) == []  # fresh, equal messages
        ads.cache.set_snapshot(Snapshot.build(world()))
        await client.expect_silence(QUIET)


async def test_one_tool_edit_pushes_only_that_extension_config(ads: Harness) -> None:
    ads.set(world())
    async with ads.client() as client:
        await bootstrap(client)
        assert ads.set(world(servers={"weather": "2", "pets": "1"})) == [EXTENSION_CONFIG]
        resp = await client.recv()
        assert resp.type_url == EXTENSION_CONFIG
        assert names_of(resp) == ["weather"]
        assert resp.version_info == ads.cache.snapshot.version(EXTENSION_CONFIG)
        await client.ack(resp)
        await client.expect_silence(QUIET)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_all_types_change_pushed_in_push_order(ads: Harness, protocol: str) -> None:
    ads.set(world(1))
    async with ads.any_client(protocol) as client:
        await bootstrap(client)
        ads.set(world(2, servers={"weather": "2", "pets": "2"}))
        pushed = await client.recv_many(5)
        assert [r.type_url for r in pushed] == [t for t in PUSH_ORDER if t in world()]
        assert [r.type_url for r in pushed] == [CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE]
        assert len({r.nonce for r in pushed}) == 5
        await client.expect_silence(QUIET)


async def test_removed_listener_and_cluster_disappear_from_full_set(ads: Harness) -> None:
    ads.set(world())
    async with ads.client() as client:
        await bootstrap(client)
        smaller = world()
        del smaller[CLUSTER]["b2"]
        del smaller[LISTENER]["mcp"]
        ads.set(smaller)
        cds, lds = await client.recv_many(2)
        assert (cds.type_url, names_of(cds)) == (CLUSTER, ["b1"])
        assert (lds.type_url, names_of(lds)) == (LISTENER, [])
        await client.expect_silence(QUIET)  # EDS for b2 is not "deleted" in SotW


async def test_nack_is_recorded_and_not_resent_until_type_changes(ads: Harness) -> None:
    ads.set(world())
    async with ads.client() as client:
        await bootstrap(client)
        good = ads.cache.snapshot.version(EXTENSION_CONFIG)
        ads.set(world(servers={"weather": "bad", "pets": "1"}))
        rejected = await client.recv()
        await client.nack(rejected, "invalid wasm config for weather")
        await client.expect_silence(QUIET)  # the rejected version is not sent again
        await until(lambda: ecds_status(ads, "envoy-1")["last_nack"] is not None)

        nack = ads.node_status("envoy-1")["types"]["ecds"]["last_nack"]
        assert nack["version"] == rejected.version_info and nack["client_version"] == good
        assert nack["error"] == "invalid wasm config for weather" and nack["at"]
        assert ads.node_status("envoy-1")["types"]["ecds"]["version_acked"] == good

        ads.set(world(2, servers={"weather": "bad", "pets": "1"}))  # other types change only
        for resp in await client.recv_many(4):
            assert resp.type_url != EXTENSION_CONFIG
            await client.ack(resp)
        await client.expect_silence(QUIET)

        ads.set(world(2, servers={"weather": "3", "pets": "1"}))
        fixed = await client.recv()
        assert fixed.type_url == EXTENSION_CONFIG and names_of(fixed) == ["weather"]
        assert decode(fixed)["weather"] == ext("weather", "3")
        await client.ack(fixed)
        await until(lambda: ecds_status(ads, "envoy-1")["version_acked"] == fixed.version_info)


async def test_nack_of_partially_applied_response_resends_its_names_on_next_change(ads: Harness) -> None:
    ads.set(world())
    async with ads.client() as client:
        await bootstrap(client)
        ads.set(world(servers={"weather": "bad", "pets": "2"}))
        rejected = await client.recv()
        assert names_of(rejected) == ["pets", "weather"]
        await client.nack(rejected, "weather is invalid")
        await until(lambda: ecds_status(ads, "envoy-1")["last_nack"] is not None)
        ads.set(world(servers={"weather": "3", "pets": "2"}))
        retry = await client.recv()
        # Envoy may have dropped pets together with weather: both come again.
        assert names_of(retry) == ["pets", "weather"]


async def test_stale_nonce_is_ignored(ads: Harness) -> None:
    ads.set(world())
    async with ads.client() as client:
        await bootstrap(client)
        first_nonce = client.tracking[ENDPOINT].nonce
        ads.set(world(2))
        pushed = await client.recv_many(4)  # every type but ECDS changed
        eds = next(r for r in pushed if r.type_url == ENDPOINT)
        # A request that crossed our push: old nonce, new names. Ignored, not answered.
        await client.send(ENDPOINT, ["b1", "b2", "b3"], version=eds.version_info, nonce=first_nonce)
        await client.send(ENDPOINT, ["b1", "b2"], version="", nonce=first_nonce, error="stale complaint")
        await client.expect_silence(QUIET)
        status = ads.node_status("envoy-1")["types"]["eds"]
        assert status["subscribed"] == 2 and status["last_nack"] is None and status["nonce"] == eds.nonce


async def test_subscription_change_sends_newly_requested_names(ads: Harness) -> None:
    resources = world()
    resources[ENDPOINT]["b3"] = ClusterLoadAssignment(cluster_name="b3")
    ads.set(resources)
    async with ads.client() as client:
        await bootstrap(client)
        eds = client.tracking[ENDPOINT]
        await client.send(ENDPOINT, ["b1", "b2", "b3", "later"], version=eds.version, nonce=eds.nonce)
        resp = await client.recv()
        assert names_of(resp) == ["b3"]  # only the new name, and only what exists
        await client.ack(resp, names=["b1", "b2", "b3", "later"])
        await client.expect_silence(QUIET)

        resources[ENDPOINT]["later"] = ClusterLoadAssignment(cluster_name="later")
        ads.set(resources)
        assert names_of(await client.recv()) == ["later"]  # springs into existence: sent


async def test_resubscribing_a_dropped_name_resends_it(ads: Harness) -> None:
    ads.set(world())
    async with ads.client() as client:
        await bootstrap(client)
        eds = client.tracking[ENDPOINT]
        await client.send(ENDPOINT, ["b1"], version=eds.version, nonce=eds.nonce)
        await client.expect_silence(QUIET)
        await client.send(ENDPOINT, ["b1", "b2"], version=eds.version, nonce=eds.nonce)
        assert names_of(await client.recv()) == ["b2"]


async def test_two_nodes_are_tracked_independently(ads: Harness) -> None:
    ads.set(world())
    async with ads.client("envoy-a") as a, ads.client("envoy-b") as b:
        await bootstrap(a)
        await bootstrap(b)
        ads.set(world(servers={"weather": "2", "pets": "1"}))
        resp_a, resp_b = await a.recv(), await b.recv()
        await a.ack(resp_a)
        await b.nack(resp_b, "b rejects")
        await until(lambda: ads.node_status("envoy-b")["types"]["ecds"]["last_nack"] is not None)
        await until(lambda: ecds_status(ads, "envoy-a")["version_acked"] == resp_a.version_info)
        assert ads.node_status("envoy-a")["types"]["ecds"]["last_nack"] is None
        assert ads.node_status("envoy-b")["types"]["ecds"]["version_acked"] != resp_b.version_info
        assert {e["node_id"] for e in ads.server.status()} == {"envoy-a", "envoy-b"}


async def test_reconnect_gets_a_full_answer_even_at_current_version(ads: Harness) -> None:
    ads.set(world())
    async with ads.client() as client:
        await bootstrap(client)
        versions = {t: client.tracking[t].version for t, _ in ENVOY_SUBSCRIPTIONS}
    await until(lambda: ads.server.status() == [])
    async with ads.client() as again:
        # Envoy keeps its versions across streams but drops nonces.
        for type_url, names in ENVOY_SUBSCRIPTIONS:
            await again.send(type_url, names, version=versions[type_url])
            resp = await again.recv()
            assert resp.version_info == versions[type_url]
            assert len(resp.resources) == len(names) if names else len(resp.resources) >= 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_nack_survives_disconnect_in_status(ads: Harness, protocol: str) -> None:
    ads.set(world())
    async with ads.any_client(protocol, "envoy-gone") as client:
        await client.subscribe(LISTENER)
        await client.nack(await client.recv(), "listener rejected")
        await until(lambda: ads.node_status("envoy-gone")["types"]["lds"]["last_nack"] is not None)
    await until(lambda: not ads.node_status("envoy-gone")["connected"])
    entry = ads.node_status("envoy-gone")
    assert entry["types"]["lds"]["last_nack"]["error"] == "listener rejected"
    json.dumps(entry)


async def test_stop_ends_streams_and_leaves_no_tasks() -> None:
    cache = SnapshotCache()
    cache.set_resources(world())
    server = AdsServer(cache)
    port = await server.start(port=0)
    before = asyncio.all_tasks()
    client = AdsClient(f"127.0.0.1:{port}", "envoy-1")
    await client.connect()
    try:
        await client.subscribe(CLUSTER)
        await client.ack(await client.recv())
        await until(lambda: len(server.status()) == 1)
        await asyncio.wait_for(server.stop(2.0), 3.0)
        with pytest.raises(EOFError):
            await client.recv(1.0)
        assert server.status() == [] and cache.watch_count() == 0
    finally:
        await client.close()
    await asyncio.sleep(0.05)
    leaked = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    assert leaked == []


async def test_changed_eds_cluster_gets_its_endpoints_again(ads: Harness) -> None:
    """Envoy re-warms a modified cluster and waits for a ClusterLoadAssignment, even an unchanged one."""

    ads.set(eds_world(1))
    async with ads.client() as client:
        await bootstrap(client)
        ads.set(eds_world(2))
        cds, eds = await client.recv_many(2)
        assert (cds.type_url, names_of(cds)) == (CLUSTER, ["b1", "b2"])
        assert (eds.type_url, names_of(eds)) == (ENDPOINT, ["b1"])  # unchanged content, resent
        await client.ack(cds)
        await client.ack(eds)
        await client.expect_silence(QUIET)
