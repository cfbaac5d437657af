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

from collections.abc import Collection
from dataclasses import dataclass

from google.protobuf.message import Message

from mcpgw.registry.model import RegistrySnapshot
from mcpgw.translate.envoy import (
    LISTENER_NAME,
    ROUTE_CONFIG_NAME,
    GatewaySettings,
    Resources,
    extension_config_name,
    listener_without,
    routes_without,
)
from mcpgw.xds import types

OTHER = None  # the view of groups no server names: servers without `gateways`
_PER_SERVER = (types.CLUSTER, types.ENDPOINT, types.EXTENSION_CONFIG)
_PREFIX = "mcpgw/"


def named_groups(snapshot: RegistrySnapshot) -> frozenset[str]:
    return frozenset(g for server in snapshot.servers for g in server.gateways or ())


def _server_of(name: str) -> str | None:
    """The registry key of a per-server resource (`mcpgw/ns/name`, `mcpgw/ns/name|h0`), else None."""
    if not name.startswith(_PREFIX):
        return None
    return name[len(_PREFIX) :].partition("|")[0]


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
        self, snapshot: RegistrySnapshot, resources: Resources, settings: GatewaySettings
    ) -> dict[str | None, Resources] | None:
        """Group -> its resources (key `OTHER`: groups no server names); None: one view for all."""
        groups = named_groups(snapshot)
        if not groups:
            self._shared.clear()
            return None
        extensions = resources.get(types.EXTENSION_CONFIG, {})
        # Servers whose filter configuration is held out (Envoy refused it, mcpgw.refusals):
        # the published listener leaves them out, so must every group's.
        held = {s.key for s in snapshot.servers if extension_config_name(s) not in extensions}
        views: dict[str | None, Resources] = {}
        for group in (*sorted(groups), OTHER):
            excluded = {s.key for s in snapshot.servers if not s.served_by(group)}
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
        excluded: Collection[str],
        held: Collection[str],
    ) -> Resources:
        view: Resources = dict(resources)
        if excluded:
            for type_url in _PER_SERVER:
                view[type_url] = {
                    name: message
                    for name, message in resources.get(type_url, {}).items()
                    if _server_of(name) not in excluded
                }
        left_out = set(excluded) | set(held)
        kept = [s for s in snapshot.servers if s.key not in left_out]
        key = (settings, tuple(sorted(excluded)), tuple((s.key, s.limits.max_request_bytes) for s in kept))
        shared = self._shared.get(group)
        if shared is None or shared.key != key:
            listener = listener_without(snapshot, settings, left_out)
            shared = _Shared(key, listener, routes_without(snapshot, excluded))
            self._shared[group] = shared
        view[types.LISTENER] = {LISTENER_NAME: shared.listener}
        view[types.ROUTE] = {ROUTE_CONFIG_NAME: shared.routes}
        return view
