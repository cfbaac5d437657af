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

import itertools
import operator
from collections.abc import Collection
from dataclasses import dataclass

from google.protobuf.message import Message

from mcpgw.registry.model import McpServer, RegistrySnapshot
from mcpgw.translate.envoy import (
    LISTENER_NAME,
    ROUTE_CONFIG_NAME,
    Delta,
    GatewaySettings,
    Resources,
    listener_without,
    routes_without,
)
from mcpgw.xds import types

OTHER = None  # the view of groups no server names: servers without `gateways`
# Every type whose resources belong to one server, named `mcpgw/<namespace>/<name>…`.
_PER_SERVER = (types.CLUSTER, types.SECRET, types.ENDPOINT, types.EXTENSION_CONFIG)
_gateways = operator.attrgetter("gateways")
_key = operator.attrgetter("key")
_request_limit = operator.attrgetter("limits.max_request_bytes")


def named_groups(snapshot: RegistrySnapshot) -> frozenset[str]:
    # map/set run in C: with no group named (one set member, None) this costs a fraction of a
    # millisecond at 10,000 servers, so a gateway without groups pays nothing noticeable.
    declared = set(map(_gateways, snapshot.servers))
    declared.discard(None)
    return frozenset(g for groups in declared for g in groups)


def _server_of(name: str) -> str | None:
    """The registry key of a per-server resource, else None (`mcpgw-plugins`, listener, routes).

    Per-server names start with `mcpgw/<namespace>/<name>`: the filter configuration and the
    backend cluster (`mcpgw/ns/name`), a `type: mcp` server's host clusters (`…|h0`), its
    credential secret (`…/credential`). Whatever follows, the first two segments name the server.
    """
    if not name.startswith("mcpgw/"):
        return None
    namespace, _, rest = name[6:].partition("/")
    return f"{namespace}/{rest.partition('/')[0].partition('|')[0]}"


@dataclass(frozen=True)
class _Shared:
    key: tuple[object, ...]
    listener: Message
    routes: Message


@dataclass(frozen=True)
class _Last:
    """What the last `views` call worked from, so the next can update instead of rebuilding."""

    servers: tuple[McpServer, ...]
    resources: Resources
    held: frozenset[str]
    groups: frozenset[str]
    excluded: dict[str | None, frozenset[str]]
    views: dict[str | None, Resources]


class GroupViews:
    """Builds each group's resources from the published ones.

    After a change that moved no server between groups (an edit of tools, descriptions,
    credentials), each view is the previous one with the translator's changed names applied:
    a copy of each touched table and a handful of updates, whatever the registry's size.
    Otherwise views are rebuilt; listeners and routes are rebuilt only when the servers a group
    holds (or their buffer limits) change. `changed` tells the snapshot cache which names of
    each view changed since the previous views, so it need not scan them either.
    """

    def __init__(self) -> None:
        self._shared: dict[str | None, _Shared] = {}
        self._last: _Last | None = None
        # Per view: names per type that changed since the views `base` (None: unknown), for
        # the snapshot cache.
        self.changed: dict[str | None, dict[str, frozenset[str]]] | None = None
        self.base: dict[str | None, Resources] | None = None

    def views(
        self,
        snapshot: RegistrySnapshot,
        resources: Resources,
        settings: GatewaySettings,
        held: Collection[str] = (),
        groups: frozenset[str] | None = None,
        delta: Delta | None = None,
    ) -> dict[str | None, Resources] | None:
        """Group -> its resources (key `OTHER`: groups no server names); None: one view for all.

        `held` are servers the published listener leaves out (Envoy refused their filter
        configuration, mcpgw.refusals): every group's listener leaves them out too. `groups`
        are the groups the registry names, if known (`Translator.gateway_groups`, free).
        `delta` is the translator's, when `resources` is exactly its result.
        """
        if groups is None:
            groups = named_groups(snapshot)
        self.changed = self.base = None
        if not groups:
            self._shared.clear()
            self._last = None
            return None
        held = frozenset(held)
        updated = self._update(snapshot, resources, held, groups, delta)
        if updated is not None:
            return updated
        servers = snapshot.servers
        memberships = list(map(_gateways, servers))
        keys = list(map(_key, servers))
        views: dict[str | None, Resources] = {}
        excluded_by: dict[str | None, frozenset[str]] = {}
        for group in (*sorted(groups), OTHER):
            excluded = [k for k, m in zip(keys, memberships, strict=True) if m is not None and group not in m]
            excluded_by[group] = frozenset(excluded)
            views[group] = self._view(group, snapshot, resources, settings, excluded, held)
        for gone in self._shared.keys() - views.keys():
            del self._shared[gone]
        self._last = _Last(servers, resources, held, groups, excluded_by, views)
        return views

    def _update(
        self,
        snapshot: RegistrySnapshot,
        resources: Resources,
        held: frozenset[str],
        groups: frozenset[str],
        delta: Delta | None,
    ) -> dict[str | None, Resources] | None:
        """The views updated by `delta`'s names, or None when they must be rebuilt."""
        last = self._last
        if (
            last is None
            or delta is None
            or delta.base is not last.resources
            or held != last.held
            or groups != last.groups
            or len(snapshot.servers) != len(last.servers)
        ):
            return None
        servers, previous = snapshot.servers, last.servers
        # The translator's positional identity diff, in C: only edited servers are looked at.
        for index in itertools.compress(range(len(servers)), map(operator.is_not, servers, previous)):
            new, old = servers[index], previous[index]
            if (
                new.key != old.key
                or new.gateways != old.gateways
                or new.limits.max_request_bytes != old.limits.max_request_bytes
            ):
                return None  # servers moved between groups, or a listener changes
        for type_url in (types.LISTENER, types.ROUTE):  # the translator keeps them as objects
            now, then = resources.get(type_url, {}), last.resources.get(type_url, {})
            if now.keys() != then.keys() or any(now[n] is not then[n] for n in now):
                return None
        views: dict[str | None, Resources] = {}
        changed: dict[str | None, dict[str, frozenset[str]]] = {}
        for group, before in last.views.items():
            excluded = last.excluded[group]
            view: Resources = dict(before)
            names_changed: dict[str, frozenset[str]] = {types.LISTENER: frozenset(), types.ROUTE: frozenset()}
            for type_url in _PER_SERVER:
                names = [n for n in delta.changed.get(type_url, ()) if _server_of(n) not in excluded]
                names_changed[type_url] = frozenset(names)
                if not names:
                    continue
                source = resources.get(type_url, {})
                table = dict(before.get(type_url, {}))
                for name in names:
                    message = source.get(name)
                    if message is None:
                        table.pop(name, None)
                    else:
                        table[name] = message
                view[type_url] = table
            views[group] = view
            changed[group] = names_changed
        self._last = _Last(servers, resources, held, groups, last.excluded, views)
        self.changed, self.base = changed, last.views
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
            # Filtered by what each name says, not by names guessed per server: a per-server
            # resource of a new kind cannot slip into another group's view.
            for type_url in _PER_SERVER:
                table = resources.get(type_url, {})
                view[type_url] = {n: m for n, m in table.items() if _server_of(n) not in gone}
        else:
            kept = list(snapshot.servers)
        left_out = set(excluded) | set(held)
        if held:
            kept = [s for s in kept if s.key not in left_out]
        limit = max(map(_request_limit, kept), default=0)
        # `auth:` shapes the listener (jwt_authn) and the routes (OAuth metadata).
        auth = tuple(s.auth for s in kept if s.auth is not None)
        key = (settings, tuple(excluded), tuple(map(_key, kept)), limit, auth)
        shared = self._shared.get(group)
        if shared is None or shared.key != key:
            listener = listener_without(snapshot, settings, left_out)
            shared = _Shared(key, listener, routes_without(snapshot, excluded, settings))
            self._shared[group] = shared
        view[types.LISTENER] = {LISTENER_NAME: shared.listener}
        view[types.ROUTE] = {ROUTE_CONFIG_NAME: shared.routes}
        return view
