"""Shared by the ADS tests (SotW and Delta): a small resource world and a served cache."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.extension_pb2 import TypedExtensionConfig
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from mcpgw.xds.cache import SnapshotCache
from mcpgw.xds.server import AdsServer
from mcpgw.xds.types import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE
from tests.unit.adsclient import AdsClient, DeltaAdsClient, describe
from tests.waiting import eventually

QUIET = 0.3  # how long "nothing arrives" is watched for
PROTOCOLS = ("sotw", "delta")
Resources = dict[str, dict[str, Message]]


# -- resources -----------------------------------------------------------------------------


def ext(name: str, version: str = "1") -> TypedExtensionConfig:
    config = struct_pb2.Struct()
    config.update({"tool_version": version})
    packed = any_pb2.Any()
    packed.Pack(config, deterministic=True)
    return TypedExtensionConfig(name=name, typed_config=packed)


def endpoints(cluster: str, gen: int) -> ClusterLoadAssignment:
    policy = {"overprovisioning_factor": {"value": 100 + gen}}
    return ClusterLoadAssignment(cluster_name=cluster, policy=policy)


def world(gen: int = 1, servers: Mapping[str, str] | None = None) -> Resources:
    """Two backends with endpoints, one ECDS config per MCP server, one listener and route."""
    servers = servers if servers is not None else {"weather": "1", "pets": "1"}
    return {
        CLUSTER: {n: Cluster(name=n, connect_timeout=Duration(seconds=gen)) for n in ("b1", "b2")},
        ENDPOINT: {n: endpoints(n, gen) for n in ("b1", "b2")},
        EXTENSION_CONFIG: {n: ext(n, v) for n, v in servers.items()},
        LISTENER: {"mcp": Listener(name="mcp", stat_prefix=f"mcp{gen}")},
        ROUTE: {
            "mcp-routes": RouteConfiguration(
                name="mcp-routes", max_direct_response_body_size_bytes={"value": 1000 + gen}
            )
        },
    }


def eds_world(timeout_b1: int) -> Resources:
    """world() with EDS clusters; b1's connect timeout varies, so only b1 changes."""
    resources = world()
    for name, cluster in resources[CLUSTER].items():
        cluster.type = Cluster.EDS
        cluster.eds_cluster_config.eds_config.ads.SetInParent()
        cluster.connect_timeout.seconds = timeout_b1 if name == "b1" else 1
    return resources


# What Envoy subscribes to for world(): wildcard CDS/LDS, named EDS/ECDS/RDS, in push order.
ENVOY_SUBSCRIPTIONS: list[tuple[str, list[str]]] = [
    (CLUSTER, []),
    (ENDPOINT, ["b1", "b2"]),
    (EXTENSION_CONFIG, ["weather", "pets"]),
    (LISTENER, []),
    (ROUTE, ["mcp-routes"]),
]


# -- harness -------------------------------------------------------------------------------


@dataclass
class Harness:
    cache: SnapshotCache
    server: AdsServer
    target: str

    def set(self, resources: Resources) -> list[str]:
        return self.cache.set_resources(resources)

    def client(self, node_id: str = "envoy-1") -> AdsClient:
        return AdsClient(self.target, node_id)

    def delta_client(self, node_id: str = "envoy-1", **kwargs: Any) -> DeltaAdsClient:
        return DeltaAdsClient(self.target, node_id, **kwargs)

    def any_client(self, protocol: str, node_id: str = "envoy-1") -> AdsClient | DeltaAdsClient:
        """A client of either protocol, for tests of behaviour both must share."""
        return self.delta_client(node_id) if protocol == "delta" else self.client(node_id)

    def node_status(self, node_id: str) -> dict:
        entries = [e for e in self.server.status() if e["node_id"] == node_id]
        assert len(entries) == 1, entries
        return entries[0]


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Harness]:
    """An ADS server on a free 127.0.0.1 port over an empty cache, stopped afterwards."""
    cache = SnapshotCache()
    server = AdsServer(cache)
    port = await server.start(port=0)
    try:
        yield Harness(cache, server, f"127.0.0.1:{port}")
    finally:
        await server.stop(0.5)


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll server-side state that is updated after a request is read (bounded)."""
    await eventually(predicate, timeout, "the server-side state", interval=0.01)


async def bootstrap(
    client: AdsClient | DeltaAdsClient, subscriptions: list[tuple[str, list[str]]] = ENVOY_SUBSCRIPTIONS
) -> dict[str, Any]:
    """Subscribe like Envoy (wildcard CDS/LDS, named EDS/ECDS/RDS), one type at a time; ACK all.

    Returns the response received for each type URL.
    """
    got: dict[str, Any] = {}
    for type_url, names in subscriptions:
        await client.subscribe(type_url, names)
        resp: Any = await client.recv()
        assert resp.type_url == type_url, describe(resp)
        got[type_url] = resp
        await client.ack(resp)
    return got
