"""The translator: a pure function from a registry snapshot to Envoy xDS resources.

Unit of delivery = one MCP server. Each server's tools live in its own ECDS resource (a Wasm
filter configuration named after the server). The listener holds one composite filter whose
matcher maps the request path prefix `/mcp/{namespace}/{server}` to that server's ECDS name, so:

- a tool or description edit changes only that server's extension config: no listener, route
  or cluster changes, no drain, and no other server's config is resent;
- adding or removing a server changes the listener's matcher (and routes and clusters).

Why not per-route selection: Envoy rejects ECDS (`dynamic_config`) inside per-route composite
configuration ("Failed to get downstream factory context"), and route metadata would put tool
definitions into RDS, where one edit resends the whole route table.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import json
import operator
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Importing these modules registers their message types, so `ParseDict` can resolve "@type" URLs.
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.config.trace.v3 import opentelemetry_pb2  # noqa: F401
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2  # noqa: F401
from envoy.extensions.common.matching.v3 import extension_matcher_pb2  # noqa: F401
from envoy.extensions.filters.http.composite.v3 import composite_pb2  # noqa: F401
from envoy.extensions.filters.http.credential_injector.v3 import credential_injector_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.http.upstream_codec.v3 import upstream_codec_pb2  # noqa: F401
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2  # noqa: F401
from envoy.extensions.http.injected_credentials.generic.v3 import generic_pb2  # noqa: F401
from envoy.extensions.tracers.opentelemetry.samplers.v3 import (  # noqa: F401
    parent_based_sampler_pb2,
    trace_id_ratio_based_sampler_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import http_inputs_pb2  # noqa: F401
from google.protobuf import json_format, wrappers_pb2
from google.protobuf.message import Message

from mcpgw import listenertls, observability, tracing
from mcpgw.limits import ListenerLimits
from mcpgw.registry.model import BackendTls, Endpoint, McpServer, RegistrySnapshot, Secret
from mcpgw.registry.tls import SYSTEM_CA_FILE, pair_problem, verify_name
from mcpgw.registry.validate import is_ip
from mcpgw.sessions.keys import SessionSettings
from mcpgw.translate import jwtauthn, pgv
from mcpgw.translate.authconfig import auth_inputs
from mcpgw.translate.filtercheck import FilterCheck, FilterRefused
from mcpgw.translate.filterconfig import (
    cluster_name,
    filter_config,
    host_cluster_name,
    injected_credential,
    sessions_config,
)
from mcpgw.xds import types

LISTENER_NAME = "mcpgw-http"
ROUTE_CONFIG_NAME = "mcpgw-routes"
PLUGIN_CLUSTER = "mcpgw-plugins"
# Static in every Envoy's bootstrap: that replica's session broker (`mcpgw.broker`).
BROKER_CLUSTER = "mcpgw-broker"
VM_ID = "mcpgw-mcp-server"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
EXECUTE_FILTER_ACTION_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction"
)
HTTP_CONNECTION_MANAGER_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
EARLY_HEADER_MUTATION_TYPE = (
    "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation"
)
# Request headers only the filter (the first two) and Envoy's `/sse` route (the client's address,
# for the broker's per-client stream limit) may set: they tell the session broker which stream
# to open and for whom.
BROKER_HEADERS = ("x-mcpgw-sse-channel", "x-mcpgw-sse-endpoint", "x-mcpgw-client")
_ADS = {"ads": {}, "resource_api_version": "V3"}
CREDENTIAL_INJECTOR_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector"
)
GENERIC_CREDENTIAL_TYPE = "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic"

Resources = dict[str, dict[str, Message]]


@dataclass(frozen=True)
class PluginRef:
    """Where Envoy fetches the `mcp-server` filter and the digest it must have."""

    url: str
    sha256: str
    # The module's file, when every Envoy served can read it at this path (Envoy on the control
    # plane's machine): Envoy then reads it when the configuration arrives instead of fetching
    # `url`. Envoy's remote fetch warns "unstable … may cause a crash" at every configuration,
    # and servers whose configurations arrive while the first fetch of the module is in
    # progress log "Plugin … failed to load" (critical) before fetching it themselves
    # (docs/cli.md, "Plugin delivery").
    path: Path | None = None


@dataclass(frozen=True)
class GatewaySettings:
    plugin: PluginRef
    plugin_server_host: str = "127.0.0.1"
    plugin_server_port: int = 18002
    listen_host: str = "127.0.0.1"
    listen_port: int = 10000
    # Session keys and TTL for every server's filter (None: no sessions, no HTTP+SSE).
    sessions: SessionSettings | None = None
    # Timeouts and per-connection limits of the listener, breaker sizes of backend clusters.
    limits: ListenerLimits = field(default_factory=ListenerLimits)
    # TLS on the MCP listener: certificate files on the Envoy node (None: plain HTTP).
    listener_tls: listenertls.ListenerTls | None = None
    # The filter's own configuration parser (None: not built, configurations go unchecked).
    filter_check: FilterCheck | None = dataclasses.field(default=None, compare=False)
    # Backend credentials constant per cluster go into SDS secrets that a credential_injector
    # on the cluster adds, instead of into the filter configuration (`injected_credential`).
    inject_credentials: bool = True
    # The system CAs on the Envoy nodes: https backends without `tls.ca` are verified against them.
    backend_ca_file: str = SYSTEM_CA_FILE
    # Where the MCP listener's JSON access log goes (`--access-log`); None: no access log.
    access_log: str | None = observability.STDOUT
    # False: the filter neither counts calls nor sets access-log fields (bench/dataplane.py's
    # baseline row, which measures what they cost).
    observability: bool = True
    # OpenTelemetry traces of the MCP listener (`--otlp-endpoint`); None: no tracer.
    tracing: tracing.TraceSettings | None = None


def extension_config_name(server: McpServer) -> str:
    return f"mcpgw/{server.key}"


def translate(
    snapshot: RegistrySnapshot, settings: GatewaySettings, secrets: Mapping[Secret, str] | None = None
) -> Resources:
    """Every resource the gateway's Envoys need, keyed by type URL and resource name.

    `secrets` holds the resolved value of every credential the snapshot references
    (`mcpgw.registry.secrets.resolve`); reading them is I/O and stays out of this function.
    """
    return Translator(settings).translate(snapshot, secrets)


@dataclass(frozen=True)
class Delta:
    """Names per type that changed between `base` (an earlier result) and the newest result.

    Listeners and routes are not listed: they are one resource each and cheap to compare. The
    snapshot cache uses this to skip scanning 10,000 unchanged resources after a one-tool edit.
    """

    base: Resources
    changed: Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class _ServerResources:
    # One backend cluster for a REST server; one per upstream host for a `type: mcp` server.
    clusters: tuple[Message, ...]
    assignments: tuple[Message, ...]
    extension: Message
    # The SDS secret holding the credential its clusters inject (none, or one per server).
    secrets: tuple[Message, ...] = ()


class Translator:
    """`translate` with memory: a server whose inputs did not change keeps its resources.

    The result is always equal to a fresh `translate` of the same snapshot (a unit test checks
    this); what is saved is the work. A one-tool edit re-translates one server instead of the
    whole registry, and the unchanged message objects let the snapshot cache skip re-serialising
    them. The inputs of a server are its document, the documents of the servers whose tools it
    includes, and the values of the credentials they use. Stores hand over the very same
    `McpServer` object for an unchanged server, so the common case is an identity check.
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._reset()

    def set_settings(self, settings: GatewaySettings) -> None:
        """Translate with `settings` from the next `translate` on.

        A change of `sessions` alone (a key rotation, an expired key) touches every server's
        extension config and nothing else: the next `translate` rewrites their session block in
        place, without recompiling any tool, and reports them all changed. Any other change
        starts afresh.
        """
        if settings == self.settings:
            return
        if dataclasses.replace(settings, sessions=self.settings.sessions) != self.settings:
            self.settings = settings
            self._reset()
            return
        if self._stale_suffix is None:
            self._stale_suffix = self._suffix
        self.settings = settings
        self._suffix = _config_suffix(settings.sessions)

    def _reset(self) -> None:
        # How every filter configuration text ends: the session block, the same for all servers.
        self._suffix = _config_suffix(self.settings.sessions)
        # The suffix the current extension configs still carry after a sessions-only change.
        self._stale_suffix: str | None = None
        self._servers: dict[str, tuple[McpServer, tuple[Any, ...], _ServerResources]] = {}
        self._order: tuple[McpServer, ...] = ()
        # Servers whose inputs reach beyond their own document (includes, credentials):
        # re-examined on every translation even when their object did not change.
        self._dynamic: set[str] = set()
        # Servers that name gateway groups (`gateways`), kept per server like the rest, so that
        # "does any server name a group?" costs nothing per edit (mcpgw.translate.groups).
        self._grouped: dict[str, tuple[str, ...]] = {}
        self._shared: tuple[tuple[str, ...], int, Message, Message] | None = None
        # The resources of the last result, kept up to date entry by entry: copying a dict is
        # cheap, rebuilding one from 10,000 servers in Python is not.
        self._clusters: dict[str, Message] = {PLUGIN_CLUSTER: _plugin_cluster(self.settings)}
        if self.settings.tracing is not None:
            self._clusters[tracing.OTLP_CLUSTER] = _parse(
                cluster_pb2.Cluster(), tracing.otlp_cluster(self.settings.tracing)
            )
        self._endpoints: dict[str, Message] = {}
        self._extensions: dict[str, Message] = {}
        # Backend credentials (per server), and the listener's TLS files (fixed by the settings).
        tls = self.settings.listener_tls
        self._secrets: dict[str, Message] = listener_secrets(tls) if tls is not None else {}
        self._changed: dict[str, set[str]] = {}
        self.last: Resources | None = None
        # What the last `translate` changed relative to the result before it (see `Delta`).
        self.delta: Delta | None = None

    def translate(self, snapshot: RegistrySnapshot, secrets: Mapping[Secret, str] | None = None) -> Resources:
        """Raises `ResourceInvalid` when a generated resource breaks a rule Envoy enforces."""
        base = self.last
        self._changed = {
            types.CLUSTER: set(),
            types.ENDPOINT: set(),
            types.EXTENSION_CONFIG: set(),
            types.SECRET: set(),
        }
        try:
            result = self._translate(snapshot, secrets or {})
        except BaseException:
            # Some servers may already be updated in the running state: start clean next time.
            self._reset()
            raise
        self.delta = (
            Delta(base, {url: frozenset(names) for url, names in self._changed.items()}) if base else None
        )
        self.last = result
        return result

    def _translate(self, snapshot: RegistrySnapshot, secrets: Mapping[Secret, str]) -> Resources:
        if self._stale_suffix is not None:
            self._resuffix(self._stale_suffix)
        servers = snapshot.servers
        previous = self._order
        # Stores keep unchanged servers as the very same objects, in key order: when the set of
        # servers is unchanged, only the positions whose object changed need any work.
        same_set = len(servers) == len(previous)
        if same_set:
            # map/compress run in C: at 10,000 servers this diff costs well under a millisecond.
            moved = itertools.compress(range(len(servers)), map(operator.is_not, servers, previous))
            touched = [(servers[i], previous[i]) for i in moved]
            same_set = all(s.key == p.key for s, p in touched)
        if same_set:
            candidates = {s.key: s for s, _ in touched}
            for key in self._dynamic:
                candidates.setdefault(key, snapshot.server(key))  # type: ignore[arg-type]
            for key, server in candidates.items():
                self._update(server, snapshot, secrets, self._servers.get(key))
        else:
            old = self._servers
            self._servers = {}
            for server in servers:
                self._update(server, snapshot, secrets, old.get(server.key))
            for key in old.keys() - self._servers.keys():
                self._forget(old[key][2])
                # Every per-server table must forget a deleted server: a key left in
                # `_dynamic` would be looked up in the next snapshot, where it is missing.
                self._dynamic.discard(key)
                self._grouped.pop(key, None)
        self._order = servers
        # The listener and routes depend on the set of servers (their paths) and on the largest
        # `maxRequestBytes` (the listener's buffer limit): rebuilt when either may have moved.
        keys = tuple(self._servers) if not same_set and self._shared is not None else None
        limit_moved = same_set and any(
            s.limits.max_request_bytes != p.limits.max_request_bytes for s, p in touched
        )
        # `auth:` is in the listener (jwt_authn) and the routes (the OAuth metadata).
        auth_moved = same_set and any(s.auth != p.auth for s, p in touched)
        if (
            self._shared is None
            or auth_moved
            or (keys is not None and self._shared[0] != keys)
            or (limit_moved and request_buffer_limit(snapshot) != self._shared[1])
        ):
            listener, routes = _listener(snapshot, self.settings), _routes(snapshot, self.settings)
            _check(listener, "listener")
            _check(routes, "routes")
            self._shared = (tuple(self._servers), request_buffer_limit(snapshot), listener, routes)
        return {
            types.CLUSTER: dict(self._clusters),
            types.ENDPOINT: dict(self._endpoints),
            types.EXTENSION_CONFIG: dict(self._extensions),
            types.LISTENER: {LISTENER_NAME: self._shared[2]},
            types.ROUTE: {ROUTE_CONFIG_NAME: self._shared[3]},
            types.SECRET: dict(self._secrets),
        }

    def _update(
        self,
        server: McpServer,
        snapshot: RegistrySnapshot,
        secrets: Mapping[Secret, str],
        cached: tuple[McpServer, tuple[Any, ...], _ServerResources] | None,
    ) -> None:
        key = server.key
        if server.gateways is not None:
            self._grouped[key] = server.gateways
        else:
            self._grouped.pop(key, None)
        # `auth`: its filter configuration holds the registry's consumers (translate/authconfig.py).
        dynamic = bool(server.includes or server.secrets or server.auth)
        if dynamic:
            self._dynamic.add(key)
        else:
            self._dynamic.discard(key)
        if cached is not None and cached[0] is server and not dynamic:
            self._servers[key] = cached
            return
        inputs = _inputs(server, snapshot, secrets)
        if cached is not None and cached[1] == inputs:
            self._servers[key] = (server, inputs, cached[2])
            return
        built = self._build(server, snapshot, secrets)
        self._servers[key] = (server, inputs, built)
        if cached is not None:
            self._forget(cached[2])
        self._remember(built)

    def _resuffix(self, stale: str) -> None:
        """Give every server's extension config the current session block in place of `stale`."""
        if stale != self._suffix:
            for key, (server, inputs, built) in self._servers.items():
                extension = _with_suffix(built.extension, stale, self._suffix)
                self._servers[key] = (server, inputs, dataclasses.replace(built, extension=extension))
                self._extensions[extension.name] = extension  # type: ignore[attr-defined]
                self._changed[types.EXTENSION_CONFIG].add(extension.name)  # type: ignore[attr-defined]
        self._stale_suffix = None

    def gateway_groups(self) -> frozenset[str]:
        """The gateway groups the last translated registry names (empty: none, one view for all)."""
        if not self._grouped:
            return frozenset()
        return frozenset(g for groups in self._grouped.values() for g in groups)

    def check_server(
        self, server: McpServer, snapshot: RegistrySnapshot, secrets: Mapping[Secret, str]
    ) -> None:
        """Build one server's resources only to check them; raises `ResourceInvalid`."""
        self._build(server, snapshot, secrets)

    def _remember(self, built: _ServerResources) -> None:
        for type_url, table, name, resource in self._entries(built):
            table[name] = resource
            self._changed[type_url].add(name)

    def _forget(self, built: _ServerResources) -> None:
        for type_url, table, name, _ in self._entries(built):
            table.pop(name, None)
            self._changed[type_url].add(name)

    def _entries(self, built: _ServerResources) -> list[tuple[str, dict[str, Message], str, Message]]:
        entries = [(types.EXTENSION_CONFIG, self._extensions, built.extension.name, built.extension)]  # type: ignore[attr-defined]
        entries += [(types.CLUSTER, self._clusters, c.name, c) for c in built.clusters]  # type: ignore[attr-defined]
        entries += [(types.ENDPOINT, self._endpoints, a.cluster_name, a) for a in built.assignments]  # type: ignore[attr-defined]
        entries += [(types.SECRET, self._secrets, s.name, s) for s in built.secrets]  # type: ignore[attr-defined]
        return entries

    def _build(
        self, server: McpServer, snapshot: RegistrySnapshot, secrets: Mapping[Secret, str]
    ) -> _ServerResources:
        inject = self.settings.inject_credentials
        credential = injected_credential(server, secrets) if inject else None
        built = _backend_clusters(
            server, self.settings.limits.backend_max_requests, secrets, self.settings.backend_ca_file
        )
        compiled = filter_config(server, snapshot, secrets, injected=inject)
        auth = jwtauthn.filter_auth(server, self.settings)
        if auth is not None:
            # Beside the API-key part filter_config wrote (translate/authconfig.py).
            compiled["auth"] = {**compiled.get("auth", {}), **auth}
        if not self.settings.observability:
            compiled["observability"] |= {"metrics": False, "access_log": False}
        elif self.settings.access_log is None and self.settings.tracing is None:
            # Nothing prints the fields (the access log, the span's `mcpgw.mcp` tag): the filter
            # need not set them (a host call each).
            compiled["observability"]["access_log"] = False
        if self.settings.observability and self.settings.tracing is not None:
            compiled["observability"]["span_name"] = True
        configuration = _config_text(compiled, self._suffix)
        if self.settings.filter_check is not None:
            _check_filter(self.settings.filter_check, server, compiled, configuration)
        clusters = tuple(c for c, _ in built) + tuple(jwtauthn.jwks_clusters(server, self.settings))
        sds: tuple[Message, ...] = ()
        if credential is not None:
            name = credential_secret_name(server)
            clusters = tuple(_with_credential_injector(c, name, credential["name"]) for c in clusters)
            sds = (_generic_secret(name, credential["value"]),)
        return _ServerResources(
            clusters,
            tuple(a for _, a in built if a is not None),
            _extension_config(server, configuration, self.settings.plugin),
            sds,
        )


def _check(resource: Message, owner: str) -> None:
    try:
        pgv.check(resource)
    except pgv.ResourceInvalid as error:
        raise pgv.ResourceInvalid(
            f"{owner}: Envoy would reject the generated configuration: {error}"
        ) from None


class FilterInvalid(pgv.ResourceInvalid):
    """The filter would refuse a server's configuration; `path` is the configuration's field."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def _check_filter(check: FilterCheck, server: McpServer, compiled: dict[str, Any], text: str) -> None:
    try:
        check.check(text)
    except FilterRefused as error:
        # Name the tool: indexes of the generated configuration mean nothing to the operator.
        where = ""
        if error.path.startswith("tools["):
            index = int(error.path[6 : error.path.index("]")])
            tools = compiled.get("tools", [])
            if index < len(tools):
                where = f" (tool {tools[index]['name']!r})"
        raise FilterInvalid(
            f"{server.key}: the mcp-server filter would refuse the generated configuration{where}: {error}",
            f"filter:{error.path}" if error.path else "filter",
        ) from None


def _inputs(server: McpServer, snapshot: RegistrySnapshot, secrets: Mapping[Secret, str]) -> tuple[Any, ...]:
    owners = {owner.key: owner for owner, _ in snapshot.served_tools(server) if owner is not server}
    used = sorted(
        (secret.where, secrets.get(secret, ""))
        for member in (server, *owners.values())
        for secret in member.secrets
    )
    return (
        server.fingerprint,
        tuple((o.key, o.fingerprint) for o in owners.values()),
        tuple(used),
        auth_inputs(server, snapshot),
    )


def _parse(message: Message, data: dict[str, Any]) -> Message:
    return json_format.ParseDict(data, message)


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _lb_endpoints(addresses: list[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"lb_endpoints": [{"endpoint": {"address": _socket(h, p)}} for h, p in addresses]}]


def _plugin_cluster(settings: GatewaySettings) -> Message:
    host, port = settings.plugin_server_host, settings.plugin_server_port
    return _parse(
        cluster_pb2.Cluster(),
        {
            "name": PLUGIN_CLUSTER,
            "type": "STATIC" if is_ip(host) else "STRICT_DNS",
            "connect_timeout": "2s",
            "load_assignment": {"cluster_name": PLUGIN_CLUSTER, "endpoints": _lb_endpoints([(host, port)])},
        },
    )


def _backend_clusters(
    server: McpServer, max_requests: int, secrets: Mapping[Secret, str], ca_file: str = SYSTEM_CA_FILE
) -> list[tuple[Message, Message | None]]:
    """A REST server's backend cluster; a `type: mcp` server's one cluster per upstream host.

    MCP sessions live on the upstream host that created them, so the filter picks the host
    itself (`<cluster>|h<index>`) instead of letting Envoy balance. An HTTP+SSE upstream
    (`transport: sse`) needs none: the session broker's bridge connects to it.
    """
    endpoints = server.backend.endpoints
    if server.mcp is not None and server.mcp.transport == "sse":
        return []
    if server.mcp is not None:
        return [
            _backend_cluster(
                server,
                host_cluster_name(server, index),
                (endpoint,),
                max_requests,
                single_host=True,
                tls=(secrets, ca_file),
            )
            for index, endpoint in enumerate(endpoints)
        ]
    if not endpoints:
        return []
    return [_backend_cluster(server, cluster_name(server), endpoints, max_requests, tls=(secrets, ca_file))]


def _backend_cluster(
    server: McpServer,
    name: str,
    endpoints: tuple[Endpoint, ...],
    max_requests: int,
    single_host: bool = False,
    tls: tuple[Mapping[Secret, str], str] = ({}, SYSTEM_CA_FILE),
) -> tuple[Message, Message | None]:
    """IP endpoints are delivered by EDS; DNS names need Envoy to resolve them (STRICT_DNS, or
    LOGICAL_DNS for one pinned host: it keeps using one address of the name)."""
    backend = server.backend
    addresses = [(e.host, e.port) for e in endpoints]
    data: dict[str, Any] = {"name": name, "connect_timeout": "2s", "lb_policy": "ROUND_ROBIN"}
    # Each backend has its own slots: a slow one (calls of up to MAX_BACKEND_TIMEOUT_MS) fills
    # only its own, and calls over the limit fail at once instead of queueing.
    data["circuit_breakers"] = {
        "thresholds": [
            {
                "max_connections": max_requests,
                "max_pending_requests": max_requests,
                "max_requests": max_requests,
            }
        ]
    }
    assignment = None
    if all(is_ip(host) for host, _ in addresses):
        data |= {"type": "EDS", "eds_cluster_config": {"eds_config": _ADS}}
        assignment = _parse(
            endpoint_pb2.ClusterLoadAssignment(),
            {"cluster_name": name, "endpoints": _lb_endpoints(addresses)},
        )
    else:
        data |= {
            "type": "LOGICAL_DNS" if single_host else "STRICT_DNS",
            "dns_lookup_family": "V4_PREFERRED",
            "load_assignment": {"cluster_name": name, "endpoints": _lb_endpoints(addresses)},
        }
    if backend.scheme == "https":
        data["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": _upstream_tls(server, endpoints[0], *tls),
        }
    return _parse(cluster_pb2.Cluster(), data), assignment


def credential_secret_name(server: McpServer) -> str:
    """The SDS secret with the credential `server`'s backend clusters inject."""
    return f"mcpgw/{server.key}/credential"


def _generic_secret(name: str, value: str) -> Message:
    # `generic_secret.secret` is marked sensitive: /config_dump prints it as "[redacted]".
    return _parse(secret_pb2.Secret(), {"name": name, "generic_secret": {"secret": {"inline_string": value}}})


def _with_credential_injector(cluster: Message, secret: str, header: str) -> Message:
    """`cluster` with a credential_injector upstream filter that sets `header` from SDS `secret`.

    Upstream filters run for every request routed to the cluster, the filter's `http_call`s
    included (Envoy's async client → router → the cluster's upstream filter chain). `overwrite`
    keeps the registry's credential the only one sent under that name.
    """
    injector = {
        "name": "envoy.filters.http.credential_injector",
        "typed_config": {
            "@type": CREDENTIAL_INJECTOR_TYPE,
            "overwrite": True,
            "credential": {
                "name": "envoy.http.injected_credentials.generic",
                "typed_config": {
                    "@type": GENERIC_CREDENTIAL_TYPE,
                    "credential": {"name": secret, "sds_config": _ADS},
                    "header": header,
                },
            },
        },
    }
    codec = {
        "name": "envoy.filters.http.upstream_codec",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
        },
    }
    with_filters = cluster_pb2.Cluster()
    with_filters.CopyFrom(cluster)
    # Added to the cluster's protocol options if it has some (the protocol stays as chosen).
    options = http_protocol_options_pb2.HttpProtocolOptions()
    packed = with_filters.typed_extension_protocol_options  # type: ignore[attr-defined]
    if _HTTP_OPTIONS in packed:
        packed[_HTTP_OPTIONS].Unpack(options)
    if options.WhichOneof("upstream_protocol_options") is None:
        # What a cluster without protocol options speaks: HTTP/1.1.
        options.explicit_http_config.http_protocol_options.SetInParent()
    # After any upstream filters it has; the codec filter is always the last.
    added = _parse(http_protocol_options_pb2.HttpProtocolOptions(), {"http_filters": [injector, codec]})
    kept = [f for f in options.http_filters if f.name != codec["name"]]  # type: ignore[attr-defined]
    del options.http_filters[:]  # type: ignore[attr-defined]
    options.http_filters.extend([*kept, *added.http_filters])  # type: ignore[attr-defined]
    packed[_HTTP_OPTIONS].Pack(options, deterministic=True)
    return with_filters


_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _upstream_tls(
    server: McpServer, endpoint: Endpoint, secrets: Mapping[Secret, str], ca_file: str
) -> dict[str, Any]:
    """The `UpstreamTlsContext` of an https backend (the rules: `mcpgw.registry.tls`).

    Verified unless `insecureSkipVerify`: the chain against `tls.ca` or the system CAs, the
    name (`verify_name`) against the certificate's subject alternative names. The client key
    is inline: Envoy marks `private_key` sensitive, so `/config_dump` shows `[redacted]`.
    """
    tls = server.backend.tls or BackendTls()
    name = verify_name(server.backend, endpoint)
    common: dict[str, Any] = {}
    if not tls.insecure_skip_verify:
        trusted = {"inline_string": secrets[tls.ca]} if tls.ca is not None else {"filename": ca_file}
        common["validation_context"] = {
            "trusted_ca": trusted,
            # Envoy compares an IP SAN in its canonical text (`::1`, not `0:0:0:0:0:0:0:1`).
            "match_typed_subject_alt_names": [
                {"san_type": "IP_ADDRESS", "matcher": {"exact": str(ipaddress.ip_address(name))}}
                if is_ip(name)
                else {"san_type": "DNS", "matcher": {"exact": name}}
            ],
        }
    if tls.client_certificate is not None and tls.client_key is not None:
        chain, key = secrets[tls.client_certificate], secrets[tls.client_key]
        problem = pair_problem(chain, key)
        if problem is not None:
            raise pgv.ResourceInvalid(f"{server.key}: {tls.client_key.where}: {problem}")
        common["tls_certificates"] = [
            {"certificate_chain": {"inline_string": chain}, "private_key": {"inline_string": key}}
        ]
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common,
    }
    # SNI carries host names only (RFC 6066 3): an address is verified, not sent.
    if not is_ip(name):
        context["sni"] = name
    return context


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _config_suffix(sessions: SessionSettings | None) -> str:
    """The end of every filter configuration text: the session blocks, then the closing brace.

    Kept last and identical for all servers, so a key rotation can swap it in each server's
    configuration text without recompiling any tool.
    """
    blocks = sessions_config(sessions)
    return "," + _json(blocks)[1:] if blocks else "}"


def _config_text(configuration: dict[str, Any], suffix: str) -> str:
    return _json(configuration)[:-1] + suffix


def _with_suffix(extension: Any, stale: str, suffix: str) -> Message:
    """`extension` (a TypedExtensionConfig) whose configuration text ends in `suffix`, not `stale`.

    Unpacking and repacking protobuf messages is C work; re-translating 10,000 servers to
    change their session keys would hold the event loop for seconds.
    """
    wasm = wasm_pb2.Wasm()
    extension.typed_config.Unpack(wasm)
    text = wrappers_pb2.StringValue()
    wasm.config.configuration.Unpack(text)
    if not text.value.endswith(stale):
        raise AssertionError(f"{extension.name}: configuration does not end with the session block")
    text.value = text.value[: len(text.value) - len(stale)] + suffix
    wasm.config.configuration.Pack(text, deterministic=True)
    updated = extension_pb2.TypedExtensionConfig(name=extension.name)
    updated.typed_config.Pack(wasm, deterministic=True)
    return updated


def _extension_config(server: McpServer, configuration: str, plugin: PluginRef) -> Message:
    code: dict[str, Any] = {
        "remote": {
            "http_uri": {"uri": plugin.url, "cluster": PLUGIN_CLUSTER, "timeout": "10s"},
            "sha256": plugin.sha256,
            "retry_policy": {"num_retries": 5},
        }
    }
    if plugin.path is not None:
        code = {"local": {"filename": str(plugin.path)}}
    return _parse(
        extension_pb2.TypedExtensionConfig(),
        {
            "name": extension_config_name(server),
            "typed_config": {
                "@type": WASM_TYPE,
                "config": wasm_plugin_config(
                    extension_config_name(server), "mcp-server", VM_ID, code, configuration
                ),
            },
        },
    )


# A VM that traps (a bug, a host call gone wrong) is failed for good on its worker unless Envoy
# reloads it: FAIL_CLOSED would answer 503 for every server on that worker until Envoy restarts.
# The reload happens on the next request after the backoff (no background respawn), so a filter
# that keeps crashing costs one reload per interval, not one per request.
WASM_FAILURE_POLICY: dict[str, Any] = {
    "failure_policy": "FAIL_RELOAD",
    "reload_config": {"backoff": {"base_interval": "0.5s", "max_interval": "5s"}},
}


def wasm_plugin_config(
    name: str, root_id: str, vm_id: str, code: dict[str, Any], configuration: str
) -> dict[str, Any]:
    """A Wasm `PluginConfig` (JSON form) as every plugin of the gateway gets it: V8, `code`
    (`remote` or `local`), the configuration text, and the failure policy."""
    return {
        "name": name,
        "root_id": root_id,
        "vm_config": {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8", "code": code},
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
        # Without this Envoy turns the filter's header pause into StopAllIterationAndWatermark
        # and never delivers the request body.
        "allow_on_headers_stop_iteration": True,
        **WASM_FAILURE_POLICY,
    }


def _composite_filter(snapshot: RegistrySnapshot) -> dict[str, Any]:
    """One composite filter selecting each server's ECDS config by path prefix."""
    return composite_filter(
        {
            server.path: {
                "name": server.key,
                "typed_config": {
                    "@type": EXECUTE_FILTER_ACTION_TYPE,
                    "dynamic_config": {
                        "name": extension_config_name(server),
                        "config_discovery": {"config_source": _ADS, "type_urls": [WASM_TYPE]},
                    },
                },
            }
            for server in snapshot.servers
        }
    )


def composite_filter(actions: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The composite filter that runs, per request, the action of the longest `:path` prefix.

    Envoy picks the longest matching prefix, so `/mcp/a/b2` never reaches `/mcp/a/b`'s filter
    when both exist; the filter itself rejects any path that is not its own.
    """
    return {
        "name": "mcpgw.mcp",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": {
                "name": "composite",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite"
                },
            },
            "xds_matcher": {
                "matcher_tree": {
                    "input": {
                        "name": "path",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                            "header_name": ":path",
                        },
                    },
                    "prefix_match_map": {"map": {path: {"action": a} for path, a in actions.items()}},
                }
            },
        },
    }


def listener_without(snapshot: RegistrySnapshot, settings: GatewaySettings, keys: Collection[str]) -> Message:
    """The listener with the servers `keys` left out of its matcher.

    Every new listener version makes Envoy instantiate the last configuration it received for
    each ECDS name the listener refers to, even one it refused: a refused server's name in the
    listener makes Envoy refuse the whole listener, and with it every other server's change.
    """
    kept = RegistrySnapshot(servers=tuple(s for s in snapshot.servers if s.key not in keys))
    listener = _listener(kept, settings)
    _check(listener, "listener")
    return listener


def routes_without(
    snapshot: RegistrySnapshot, keys: Collection[str], settings: GatewaySettings | None = None
) -> Message:
    """The route table without the servers `keys` (a gateway group that does not serve them)."""
    kept = RegistrySnapshot(servers=tuple(s for s in snapshot.servers if s.key not in keys))
    routes = _routes(kept, settings)
    _check(routes, "routes")
    return routes


def _listener(snapshot: RegistrySnapshot, settings: GatewaySettings) -> Message:
    http_filters = [_composite_filter(snapshot)] if snapshot.servers else []
    # Before the mcp-server filter, which reads what it found (translate/jwtauthn.py).
    jwt_authn = jwtauthn.jwt_authn_filter(snapshot.servers, settings)
    if jwt_authn is not None:
        http_filters.insert(0, jwt_authn)
    http_filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    )
    limits = settings.limits
    manager = {
        "@type": HTTP_CONNECTION_MANAGER_TYPE,
        "stat_prefix": "mcpgw",
        "codec_type": "AUTO",
        # Without these a client holds a connection forever by sending nothing, or a header a
        # byte at a time (mcpgw.limits.ListenerLimits says what each bounds).
        "request_headers_timeout": _duration(limits.request_headers_timeout_s),
        "request_timeout": _duration(limits.request_timeout_s),
        "stream_idle_timeout": _duration(limits.stream_idle_timeout_s),
        "common_http_protocol_options": {"idle_timeout": _duration(limits.idle_timeout_s)},
        "http2_protocol_options": {"max_concurrent_streams": limits.max_concurrent_streams},
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "rds": {"route_config_name": ROUTE_CONFIG_NAME, "config_source": _ADS},
        # The broker trusts these two headers because only the filter sets them: strip whatever a
        # client sent before any filter runs, so a request that reaches the `/sse` route without
        # the filter (e.g. before its configuration arrived) carries none.
        "early_header_mutation_extensions": [
            {
                "name": "envoy.http.early_header_mutation.header_mutation",
                "typed_config": {
                    "@type": EARLY_HEADER_MUTATION_TYPE,
                    "mutations": [{"remove": name} for name in BROKER_HEADERS],
                },
            }
        ],
        "http_filters": http_filters,
        "local_reply_config": {"mappers": [_TOO_LARGE_MAPPER]},
    }
    if settings.access_log is not None:
        manager["access_log"] = observability.access_log(settings.access_log)
    if settings.tracing is not None:
        manager["tracing"] = tracing.hcm_tracing(settings.tracing)
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]
    }
    if settings.listener_tls is not None:
        chain["transport_socket"] = listenertls.transport_socket(settings.listener_tls)
    return _parse(
        listener_pb2.Listener(),
        {
            "name": LISTENER_NAME,
            "address": _socket(settings.listen_host, settings.listen_port),
            "per_connection_buffer_limit_bytes": request_buffer_limit(snapshot),
            "filter_chains": [chain],
        },
    )


def listener_secrets(tls: listenertls.ListenerTls) -> dict[str, Message]:
    """The SDS secrets of the listener's TLS context: file paths only, checked like every resource."""
    found = {}
    for name, data in listenertls.secrets(tls).items():
        secret = _parse(secret_pb2.Secret(), data)
        _check(secret, f"listener TLS secret {name}")
        found[name] = secret
    return found


# Envoy's own per-connection default; the room for the chunk that crosses a server's limit.
_ENVOY_BUFFER_LIMIT = 1 << 20
_CHUNK_ROOM = 1 << 20


CEL_FILTER_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
# Envoy's own 413 (a body that arrived past the buffer limit in one read, before the filter saw
# it cross its server's limit) as the JSON-RPC error the filter gives; matched by its details,
# so the filter's own 413, which names the server's limit, keeps its text.
_TOO_LARGE_MAPPER: dict[str, Any] = {
    "filter": {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": CEL_FILTER_TYPE,
                "expression": "response.code_details == 'request_payload_too_large'",
            },
        }
    },
    "body": {
        "inline_string": '{"jsonrpc":"2.0","id":null,"error":'
        '{"code":-32600,"message":"Invalid Request: body too large"}}'
    },
    # Envoy's own 413 is text/plain; the body above is JSON-RPC.
    "headers_to_add": [
        {
            "header": {"key": "content-type", "value": "application/json"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ],
}


def request_buffer_limit(snapshot: RegistrySnapshot) -> int:
    """The listener's per-connection buffer limit: above every server's `maxRequestBytes`.

    The filter has Envoy buffer a request body until it is complete and answers one over its
    server's limit with a JSON-RPC 413. Envoy's own limit bounds that buffer too (and answers a
    plain-text 413 itself): at its 1 MiB default, a `maxRequestBytes` above 1 MiB had no effect.
    The room above the largest limit is for the chunk that carries a body past it, so the
    filter sees it first (a body with `Content-Length` is refused before any of it is read).
    """
    largest = max((server.limits.max_request_bytes for server in snapshot.servers), default=0)
    return max(largest, _ENVOY_BUFFER_LIMIT) + _CHUNK_ROOM


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _json_reply(status: int, message: str) -> dict[str, Any]:
    return {"status": status, "body": {"inline_string": json.dumps({"error": message})}}


def _routes(snapshot: RegistrySnapshot, settings: GatewaySettings | None = None) -> Message:
    # MCP traffic is answered by the filter; these routes only name each server's path and
    # give a clear answer if its filter config has not arrived. The one thing proxied is the
    # HTTP+SSE (2024-11-05) stream: the filter mints the session on `GET {path}/sse` and lets
    # the request through to this replica's session broker, which holds the stream open.
    routes: list[dict[str, Any]] = []
    for server in snapshot.servers:
        routes += jwtauthn.metadata_routes(server, settings)
        routes.append(
            {
                "name": f"{server.key}/sse",
                "match": {"path": f"{server.path}/sse"},
                # timeout 0s: no route timeout, or Envoy would cut every stream after 15 s.
                "route": {"cluster": BROKER_CLUSTER, "timeout": "0s"},
                # The connection's own peer, not X-Forwarded-For (which the client writes).
                "request_headers_to_add": [
                    {
                        "header": {
                            "key": "x-mcpgw-client",
                            "value": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%",
                        },
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
            }
        )
        routes.append(
            {
                "name": server.key,
                "match": {"path_separated_prefix": server.path},
                "direct_response": _json_reply(503, f"MCP server {server.key} is not ready on this gateway"),
            }
        )
    routes.append(
        {
            "name": "not-found",
            "match": {"prefix": "/"},
            "direct_response": _json_reply(
                404, "no MCP server at this path; servers live at /mcp/{namespace}/{name}"
            ),
        }
    )
    return _parse(
        route_pb2.RouteConfiguration(),
        {
            "name": ROUTE_CONFIG_NAME,
            "virtual_hosts": [{"name": "mcpgw", "domains": ["*"], "routes": routes}],
        },
    )
