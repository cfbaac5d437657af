"""Gateway groups: each view holds exactly its servers' resources, and the incremental update
after an edit equals a fresh build (the snapshot cache's versions included)."""

from __future__ import annotations

import random
from typing import Any

from mcpgw.registry.model import McpServer, RegistrySnapshot
from mcpgw.registry.validate import parse_server
from mcpgw.translate.envoy import Translator
from mcpgw.translate.groups import OTHER, GroupViews
from mcpgw.xds import types
from mcpgw.xds.cache import Snapshot, SnapshotCache
from tests.unit.test_registry import minimal
from tests.unit.test_translate import SETTINGS

GROUPS = (None, ["a"], ["b"], ["a", "b"])


def server(index: int, gateways: list[str] | None, description: str = "d", limit: int = 1 << 20) -> McpServer:
    document: dict[str, Any] = minimal(name=f"s{index}")
    document["tools"][0]["description"] = description  # in the filter configuration
    document["limits"] = {"maxRequestBytes": limit}
    if gateways is not None:
        document["gateways"] = gateways
    return parse_server(document, f"s{index}.yaml")


def registry(servers: dict[str, McpServer]) -> RegistrySnapshot:
    return RegistrySnapshot(servers=tuple(servers[k] for k in sorted(servers)))


def names(view: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    return {url: set(table) for url, table in view.items()}


def test_views_hold_their_groups_servers_only() -> None:
    servers = {s.key: s for s in (server(0, ["a"]), server(1, ["b"]), server(2, None))}
    snapshot = registry(servers)
    resources = Translator(SETTINGS).translate(snapshot)
    views = GroupViews().views(snapshot, resources, SETTINGS)
    assert views is not None and set(views) == {"a", "b", OTHER}
    for group, kept in (("a", {"s0", "s2"}), ("b", {"s1", "s2"}), (OTHER, {"s2"})):
        for url in (types.EXTENSION_CONFIG, types.ENDPOINT):
            assert views[group][url].keys() == {f"mcpgw/default/{n}" for n in kept}, (group, url)
        assert views[group][types.CLUSTER].keys() == {"mcpgw-plugins"} | {f"mcpgw/default/{n}" for n in kept}
        text = str(views[group][types.LISTENER]) + str(views[group][types.ROUTE])
        for name in ("s0", "s1", "s2"):
            assert (f"default/{name}" in text) == (name in kept), (group, name)
    # Without groups there is one view for all: the translation itself.
    plain = {s.key: s for s in (server(0, None), server(1, None))}
    assert GroupViews().views(registry(plain), resources, SETTINGS) is None


def test_incremental_views_equal_fresh_ones() -> None:
    rng = random.Random(13)
    servers = {s.key: s for s in (server(i, rng.choice(GROUPS)) for i in range(12))}
    translator, groups, cache = Translator(SETTINGS), GroupViews(), SnapshotCache()
    updated = 0
    for step in range(60):
        action = rng.random()
        key = rng.choice(sorted(servers))
        index = int(key.rsplit("s", 1)[1])
        current = servers[key]
        if action < 0.6:  # an edit that moves nothing: the incremental path
            servers[key] = server(index, list(current.gateways) if current.gateways else None, f"e{step}")
        elif action < 0.75:
            servers[key] = server(index, rng.choice(GROUPS), current.description)
        elif action < 0.85:
            servers[key] = server(index, list(current.gateways or []) or None, current.description, 2 << 20)
        elif action < 0.93:
            new = server(100 + step, rng.choice(GROUPS))
            servers[new.key] = new
        elif len(servers) > 2:
            del servers[key]
        snapshot = registry(servers)
        resources = translator.translate(snapshot)
        delta = translator.delta
        views = groups.views(snapshot, resources, SETTINGS, (), translator.gateway_groups(), delta)
        updated += groups.changed is not None
        hint = (groups.base, groups.changed) if groups.changed is not None else None
        cache.set_resources(resources, (delta.base, delta.changed) if delta else None, views, hint)
        fresh = GroupViews().views(snapshot, resources, SETTINGS)
        assert (views is None) == (fresh is None)
        if views is None or fresh is None:
            continue
        assert views.keys() == fresh.keys()
        for group in fresh:
            assert names(views[group]) == names(fresh[group]), (step, group)
            for url, table in fresh[group].items():
                assert all(views[group][url][n] == m for n, m in table.items()), (step, group, url)
            assert cache.snapshot_for("n", group).versions() == Snapshot.build(fresh[group]).versions()
    assert updated > 10  # the incremental path did run
