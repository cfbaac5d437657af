"""Snapshot versions and change detection."""

from __future__ import annotations

import asyncio

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.extension_pb2 import TypedExtensionConfig
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.duration_pb2 import Duration

from mcpgw.xds import types
from mcpgw.xds.cache import Snapshot, SnapshotCache, type_version


def cluster(name: str, timeout_s: int = 1) -> Cluster:
    return Cluster(name=name, connect_timeout=Duration(seconds=timeout_s))


def ext(name: str, **fields: str) -> TypedExtensionConfig:
    config = struct_pb2.Struct()
    config.update(fields)
    packed = any_pb2.Any()
    packed.Pack(config, deterministic=True)
    return TypedExtensionConfig(name=name, typed_config=packed)


def resources(**timeouts: int) -> dict[str, dict[str, Cluster]]:
    return {types.CLUSTER: {name: cluster(name, t) for name, t in timeouts.items()}}


def test_equal_content_gives_equal_versions_across_caches() -> None:
    one = Snapshot.build({types.CLUSTER: {"a": cluster("a"), "b": cluster("b")}})
    # Different objects, different insertion order, same content: a second replica.
    two = Snapshot.build({types.CLUSTER: {"b": cluster("b"), "a": cluster("a")}})
    assert one.version(types.CLUSTER) == two.version(types.CLUSTER)
    assert one.get(types.CLUSTER).hashes() == two.get(types.CLUSTER).hashes()


def test_map_order_inside_resources_does_not_change_version() -> None:
    first = Snapshot.build({types.EXTENSION_CONFIG: {"x": ext("x", a="1", b="2", c="3")}})
    second = Snapshot.build({types.EXTENSION_CONFIG: {"x": ext("x", c="3", b="2", a="1")}})
    assert first.version(types.EXTENSION_CONFIG) == second.version(types.EXTENSION_CONFIG)


def test_version_changes_with_content_name_and_membership() -> None:
    base = Snapshot.build(resources(a=1, b=1)).version(types.CLUSTER)
    assert Snapshot.build(resources(a=2, b=1)).version(types.CLUSTER) != base
    assert Snapshot.build(resources(a=1)).version(types.CLUSTER) != base
    assert Snapshot.build(resources(a=1, b=1, c=1)).version(types.CLUSTER) != base
    assert type_version([("ab", "c")]) != type_version([("a", "bc")])


def test_absent_type_is_empty_with_stable_version() -> None:
    snap = Snapshot.build({})
    assert dict(snap.get(types.LISTENER).resources) == {}
    assert snap.version(types.LISTENER) == Snapshot.build({types.LISTENER: {}}).version(types.LISTENER)


def test_wrong_message_type_is_rejected() -> None:
    with pytest.raises(TypeError):
        Snapshot.build({types.LISTENER: {"a": cluster("a")}})


def test_changed_types_in_push_order() -> None:
    old = Snapshot.build({types.CLUSTER: {"a": cluster("a")}, types.EXTENSION_CONFIG: {"x": ext("x", v="1")}})
    new = Snapshot.build(
        {
            types.CLUSTER: {"a": cluster("a", 2)},
            types.EXTENSION_CONFIG: {"x": ext("x", v="2")},
            types.ROUTE: {},
        }
    )
    # ROUTE appears empty in both (absent == empty), so it is not a change.
    assert new.changed_types(old) == [types.CLUSTER, types.EXTENSION_CONFIG]
    assert new.changed_types(new) == []


def test_unchanged_messages_are_not_reserialised() -> None:
    a, b = cluster("a"), cluster("b")
    first = Snapshot.build({types.CLUSTER: {"a": a, "b": b}})
    second = Snapshot.build({types.CLUSTER: {"a": a, "b": cluster("b", 5)}}, previous=first)
    assert second.get(types.CLUSTER).resources["a"] is first.get(types.CLUSTER).resources["a"]
    assert second.get(types.CLUSTER).resources["b"] is not first.get(types.CLUSTER).resources["b"]
    third = Snapshot.build({types.CLUSTER: {"a": a, "b": b}}, previous=first)
    assert third.get(types.CLUSTER) is first.get(types.CLUSTER)  # whole type reused


def test_packed_any_carries_deterministic_bytes() -> None:
    snap = Snapshot.build({types.CLUSTER: {"a": cluster("a")}})
    res = snap.get(types.CLUSTER).resources["a"]
    assert res.packed.type_url == types.CLUSTER
    assert res.packed.value == cluster("a").SerializeToString(deterministic=True)
    assert snap.resources[types.CLUSTER]["a"] == cluster("a")


async def test_cache_notifies_watchers_only_on_change() -> None:
    cache = SnapshotCache()
    calls: list[str] = []
    with cache.watch("node-1", callback=lambda: calls.append("x")) as watch:
        assert cache.set_resources(resources(a=1)) == [types.CLUSTER]
        await asyncio.wait_for(watch.wait(), 1)
        assert calls == ["x"]
        assert cache.set_resources(resources(a=1)) == []  # same content, fresh objects
        assert calls == ["x"]
        assert cache.snapshot_for("node-1") is cache.snapshot
    assert cache.watch_count() == 0


async def test_cache_notification_from_another_thread() -> None:
    cache = SnapshotCache()
    with cache.watch("node-1") as watch:
        await asyncio.to_thread(cache.set_resources, resources(a=1))
        await asyncio.wait_for(watch.wait(), 1)
