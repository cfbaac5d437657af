"""Gateway groups: which Envoys receive which servers (and so which credentials).

An Envoy's group is its bootstrap's `node.cluster` (`mcpgw bootstrap --node-cluster`, default
`mcpgw`); with xDS mutual TLS its certificate proves it (`mcpgw.xds.tls`). A registry server
with `gateways: [a, b]` is served only by groups a and b; one without `gateways` by every group.
A group receives the resources of its servers only: their clusters, endpoints and filter
configurations (where their credentials and the session keys are), and a listener and route
table that name no other server. A group no server names gets the servers without `gateways`.

The translator stays one pure function of the whole registry: a group's view is the
translation with the other servers' resources left out. Per-server resources are the very
same objects in every view, so the snapshot cache serialises each once. When no server names
a group (the common case) there is one view, the translation itself, at no cost.
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from google.protobuf.message import Message

from mcpgw.registry.model import RegistrySnapshot
from mcpgw.translate.envoy import (
    LISTENER_NAME,
    ROUTE_CONFIG_NAME,
    GatewaySettings,
    Resources,
    listener_without,
    routes_without,
)
from mcpgw.xds import types

OTHER = None  # the view of groups no server names: servers without `gateways`
_PER_SERVER = (types.CLUSTER, types.ENDPOINT, types.EXTENSION_CONFIG)
_gateways = operator.attrgetter("gateways")
_key = operator.attrgetter("key")
_request_limit = operator.attrgetter("limits.max_request_bytes")


def named_groups(snapshot: RegistrySnapshot) -> frozenset[str]:
    # map/set run in C: with no group named (one set member, None) this costs a fraction of a
    # millisecond at 10,000 servers, so a gateway without groups pays nothing noticeable.
    declared = set(map(_gateways, snapshot.servers))
    declared.discard(None)
    return frozenset(g for groups in declared for g in groups)


def _server_names(table: dict[str, Message], key: str) -> Iterator[str]:
    """The names of server `key`'s resources in `table`: `mcpgw/<key>`, then `mcpgw/<key>|h0`, …
    (one backend cluster per server; a `type: mcp` server has one per upstream host)."""
    name = extension_config_name_of(key)
    if name in table:
        yield name
    index = 0
    while (host := f"{name}|h{index}") in table:
        yield host
        index += 1


def extension_config_name_of(key: str) -> str:
    return f"mcpgw/{key}"


@dataclass(frozen=True)
class _Shared:
    key: tuple[object, ...]
    listener: Message
    routes: Message


class GroupViews:
    """Builds each group's resources from the published ones; remembers listeners and routes,
    which are rebuilt only when the servers a group holds (or their buffer limits) change."""

    def __init__(self) -> None:
        self._shared: dict[str | None, _Shared] = {}

    def views(
        self,
        snapshot: RegistrySnapshot,
        resources: Resources,
        settings: GatewaySettings,
        held: Collection[str] = (),
        groups: frozenset[str] | None = None,
    ) -> dict[str | None, Resources] | None:
        """Group -> its resources (key `OTHER`: groups no server names); None: one view for all.

        `held` are servers the published listener leaves out (Envoy refused their filter
        configuration, mcpgw.refusals): every group's listener leaves them out too. `groups`
        are the groups the registry names, if known (`Translator.gateway_groups`, free).
        """
        if groups is None:
            groups = named_groups(snapshot)
        if not groups:
            self._shared.clear()
            return None
        servers = snapshot.servers
        memberships = list(map(_gateways, servers))
        keys = list(map(_key, servers))
        views: dict[str | None, Resources] = {}
        for group in (*sorted(groups), OTHER):
            excluded = [k for k, m in zip(keys, memberships, strict=True) if m is not None and group not in m]
            views[group] = self._view(group, snapshot, resources, settings, excluded, held)
        for gone in self._shared.keys() - views.keys():
            del self._shared[gone]
        return views

    def _view(
        self,
        group: str | None,
        snapshot: RegistrySnapshot,
        resources: Resources,
        settings: GatewaySettings,
        excluded: list[str],
        held: Collection[str],
    ) -> Resources:
        view: Resources = dict(resources)
        if excluded:
            gone = set(excluded)
            kept = [s for s in snapshot.servers if s.key not in gone]
            for type_url in _PER_SERVER:
                table = resources.get(type_url, {})
                if len(kept) < len(excluded):  # build from the few kept servers' names
                    shared = {n: m for n, m in table.items() if "/" not in n}  # mcpgw-plugins…
                    shared.update((n, table[n]) for s in kept for n in _server_names(table, s.key))
                    view[type_url] = shared
                else:  # copy (in C) and drop the few excluded servers' names
                    copied = dict(table)
                    for key in excluded:
                        for name in list(_server_names(copied, key)):
                            del copied[name]
                    view[type_url] = copied
        else:
            kept = list(snapshot.servers)
        left_out = set(excluded) | set(held)
        if held:
            kept = [s for s in kept if s.key not in left_out]
        limit = max(map(_request_limit, kept), default=0)
        key = (settings, tuple(excluded), tuple(map(_key, kept)), limit)
        shared = self._shared.get(group)
        if shared is None or shared.key != key:
            listener = listener_without(snapshot, settings, left_out)
            shared = _Shared(key, listener, routes_without(snapshot, excluded))
            self._shared[group] = shared
        view[types.LISTENER] = {LISTENER_NAME: shared.listener}
        view[types.ROUTE] = {ROUTE_CONFIG_NAME: shared.routes}
        return view
