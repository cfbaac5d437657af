"""Render the Envoy bootstrap that joins a node to the control plane (`envoy/bootstrap.yaml`)."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from string import Template

import yaml

from mcpgw import observability
from mcpgw.bundled import bootstrap_template
from mcpgw.limits import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEAP_BYTES, MIN_MAX_HEAP_BYTES
from mcpgw.registry.validate import MAX_RESPONSE_BYTES, is_ip

# envoy/bootstrap.yaml of the checkout, or the copy inside an installed wheel.
TEMPLATE = bootstrap_template()
DEFAULT_BROKER_PORT = 18003
# The stats listener (`--stats`): loopback by default like everything else `mcpgw bootstrap`
# opens; a Prometheus on another machine needs it on a reachable address, which is safe because
# it answers only GET/HEAD /stats/prometheus and /ready (docs/security.md).
DEFAULT_STATS_PORT = 9902
ADMIN_CLUSTER = "mcpgw-envoy-admin"
STATS_LISTENER = "mcpgw-stats"
# The only admin paths the stats listener passes on, matched against the whole `:path`
# (query string included, case-sensitive, no normalisation): anything else is a 404 there.
STATS_PATHS = ("/stats/prometheus", "/ready")


XDS_CLIENT_SECRET = "mcpgw-xds-client"
XDS_CA_SECRET = "mcpgw-xds-ca"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


@dataclass(frozen=True)
class XdsClientTls:
    """An Envoy's side of xDS mutual TLS: its client certificate, and the CA of the control plane's.

    Envoy reloads certificates only when they come through SDS, so the bootstrap names them
    through two file-based SDS resources written into `sds_dir` (`write_sds`); each secret
    watches its files' directory, so a rotation there (a rename, as Kubernetes and cert-manager
    do) reaches new connections without restart.
    """

    cert: Path
    key: Path
    ca: Path
    sds_dir: Path
    # Names the control plane's certificate must carry (DNS or IP SANs); default: the --xds hosts.
    server_names: tuple[str, ...] = ()

    def sds_paths(self) -> tuple[Path, Path]:
        return self.sds_dir / "xds-client.yaml", self.sds_dir / "xds-ca.yaml"


@dataclass(frozen=True)
class BootstrapOptions:
    node_id: str
    xds: tuple[tuple[str, int], ...]
    node_cluster: str = "mcpgw"
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    # Delta (incremental) xDS instead of State of the World: Envoy then receives only the
    # resources that changed, and deletions explicitly (api_type DELTA_GRPC).
    delta: bool = False
    # This replica's session broker (HTTP+SSE streams), cluster `mcpgw-broker`.
    broker: tuple[str, int] = ("127.0.0.1", DEFAULT_BROKER_PORT)
    # Every stat Envoy has for each MCP server's backend cluster (~110 per cluster), instead of
    # the core set below; at 1,000 servers the full set costs ~30 MiB of Envoy memory.
    full_cluster_stats: bool = False
    # Envoy's cap on client connections (and on streams to the session broker); it must stay
    # below what Envoy's file-descriptor limit allows (`mcpgw.limits.envoy_connection_cap`).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # Mutual TLS to the control plane; None: plain gRPC (loopback only: `mcpgw serve` refuses
    # plain xDS elsewhere).
    xds_tls: XdsClientTls | None = None
    # The stats listener: Envoy's Prometheus metrics and readiness, and nothing else of the
    # admin endpoint. None: no stats listener (`mcpgw bootstrap` always has one).
    stats: tuple[str, int] | None = None
    # The heap Envoy's overload manager measures against (fixed_heap): it shrinks idle timeouts
    # from 80 %, resets the streams holding most memory from 90 % and answers new requests with
    # 503 at 98 % (envoy/bootstrap.yaml), instead of growing until the kernel kills it.
    max_heap_bytes: int = DEFAULT_MAX_HEAP_BYTES


class BootstrapInvalid(ValueError):
    """Options that would expose Envoy's admin endpoint or cannot be bound; one line for the CLI."""


def check(options: BootstrapOptions) -> None:
    """Refuse an admin endpoint off loopback, a stats listener Envoy could not bind, a tiny heap."""
    if not _is_loopback_ip(options.admin_host):
        raise BootstrapInvalid(
            f"Envoy admin address {options.admin_host!r} is not a loopback IP address (127.0.0.1, ::1): "
            "the admin endpoint serves /config_dump and /quitquitquit; scrape metrics from the stats "
            "listener (--stats HOST:PORT) instead"
        )
    if options.max_heap_bytes < MIN_MAX_HEAP_BYTES:
        raise BootstrapInvalid(
            f"Envoy heap limit {options.max_heap_bytes} bytes is below {MIN_MAX_HEAP_BYTES >> 20} MiB: "
            "Envoy would refuse requests while idle"
        )
    if options.stats is not None:
        host, port = options.stats
        if not _is_ip(host):
            raise BootstrapInvalid(f"stats listener address {host!r} is not an IP address")
        same_host = host == options.admin_host or ipaddress.ip_address(host).is_unspecified
        if port == options.admin_port and same_host:
            raise BootstrapInvalid(f"stats listener {host}:{port} would take the Envoy admin port {port}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback_ip(host: str) -> bool:
    # An IP, not `localhost`: Envoy binds its admin to an address, never to a name.
    return _is_ip(host) and ipaddress.ip_address(host).is_loopback


# The per-cluster stats of MCP backend clusters (`cluster.mcpgw/…`) left out unless
# `full_cluster_stats`: load-balancer, circuit-breaker and detailed connection and xDS-update
# counters. Kept: requests (total, completed, active, timeouts, response codes, pending and
# active overflow: the circuit breakers refusing calls), connections (total, active, connect
# failures and timeouts), membership, and EDS updates (attempt, success, rejected).
DROPPED_CLUSTER_STATS = (
    r"^cluster\.mcpgw/[^.]*\.(?:version_text|version|warming_state|assignment_.*|bind_errors"
    r"|circuit_breakers\..*|default\..*|init_fetch_timeout|lb_.*|max_host_weight"
    r"|membership_(?:change|degraded|excluded)|original_dst_host_invalid|retry_or_shadow_abandoned"
    r"|update_(?:empty|failure|no_rebuild|time|duration)|upstream_flow_control_.*|upstream_http3_broken"
    r"|upstream_internal_redirect_.*"
    r"|upstream_queue_overloaded"
    r"|upstream_cx_(?:close_notify|connect_attempts_exceeded|connect_with_0_rtt|destroy.*"
    r"|http[123]_total|idle_timeout|max_duration_reached|max_requests|none_healthy|overflow"
    r"|pool_overflow|preconnect_skipped|protocol_error|rx_bytes_.*|tx_bytes_.*|connect_ms|length_ms)"
    r"|upstream_rq_(?:0rtt|cancelled|maintenance_mode|max_duration_reached"
    r"|pending_active|pending_failure_eject|pending_total|per_try_.*|retry.*|rx_reset.*|tx_reset"
    r"|per_cx))$"
)


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` → (host, port); raises ValueError with the offending text."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def _scalar(text: str) -> str:
    """`text` as a quoted YAML scalar: a node id `n` or `no` stays a string (not a boolean), and
    `::1` or `a: b` stay one value. JSON strings are valid YAML."""
    return json.dumps(text)


def render(options: BootstrapOptions) -> str:
    """The bootstrap YAML; raises `BootstrapInvalid` for an admin endpoint off loopback."""
    check(options)
    endpoints = "\n".join(
        f"          - priority: {priority}\n"
        f"            lb_endpoints:\n"
        f"              - endpoint: {{address: {{socket_address: "
        f"{{address: {_scalar(host)}, port_value: {port}}}}}}}"
        for priority, (host, port) in enumerate(options.xds)
    )
    broker_host, broker_port = options.broker
    return Template(TEMPLATE.read_text()).substitute(
        node_id=_scalar(options.node_id),
        node_cluster=_scalar(options.node_cluster),
        max_heap_bytes=options.max_heap_bytes,
        admin_host=_scalar(options.admin_host),
        admin_port=options.admin_port,
        xds_endpoints=endpoints,
        api_type="DELTA_GRPC" if options.delta else "GRPC",
        broker_type="STATIC" if is_ip(broker_host) else "STRICT_DNS",
        broker_host=_scalar(broker_host),
        broker_port=broker_port,
        stats_config=_stats_config(options.full_cluster_stats),
        async_response_buffer_limit=MAX_RESPONSE_BYTES,
        max_connections=options.max_connections,
        xds_transport_socket=_xds_transport_socket(options) if options.xds_tls else "",
        stats_listener="" if options.stats is None else _stats_listener(*options.stats),
    )


_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_STATS_ROUTE = """\
                        - match:
                            path: {path}
                            headers:
                              - {{name: ':path', string_match: {{exact: {path}}}}}
                              - {{name: ':method', string_match: {{safe_regex: {{regex: 'GET|HEAD'}}}}}}
                          route: {{cluster: {cluster}, timeout: 10s}}
"""
_STATS_LISTENER = """\
  listeners:
    - name: {name}
      address: {{socket_address: {{address: '{host}', port_value: {port}}}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": {hcm}
                stat_prefix: mcpgw_stats
                normalize_path: false
                merge_slashes: false
                path_with_escaped_slashes_action: KEEP_UNCHANGED
                route_config:
                  name: {name}
                  virtual_hosts:
                    - name: stats
                      domains: ['*']
                      routes:
{routes}\
                        - match: {{prefix: '/'}}
                          direct_response: {{status: 404, body: {{inline_string: "not found\\n"}}}}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: {{'@type': {router}}}
"""


def _stats_listener(host: str, port: int) -> str:
    """A static listener that proxies exactly GET/HEAD `STATS_PATHS` to the admin endpoint.

    Each route matches the whole `:path` header exactly (so no query string, trailing slash,
    `..`, `%2F` or other case reaches the admin) and the method; path normalisation is off so
    the path matched is the path forwarded. Everything else gets a 404 from Envoy itself.
    """
    routes = "".join(_STATS_ROUTE.format(path=path, cluster=ADMIN_CLUSTER) for path in STATS_PATHS)
    return _STATS_LISTENER.format(
        name=STATS_LISTENER, host=host, port=port, hcm=_HCM, router=_ROUTER, routes=routes
    )


def _sds_source(path: Path) -> dict[str, object]:
    # watched_directory: the SDS file is re-read on any rename in its directory, which also
    # covers tools that replace it rather than rename onto it.
    return {
        "path_config_source": {"path": str(path), "watched_directory": {"path": str(path.parent)}},
        "resource_api_version": "V3",
    }


def _xds_transport_socket(options: BootstrapOptions) -> str:
    tls = options.xds_tls
    assert tls is not None
    client_sds, ca_sds = tls.sds_paths()
    names = tls.server_names or tuple(dict.fromkeys(host for host, _ in options.xds))
    sans = [{"san_type": "IP_ADDRESS" if is_ip(n) else "DNS", "matcher": {"exact": n}} for n in names]
    dns = [n for n in names if not is_ip(n)]
    context: dict[str, object] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        **({"sni": dns[0]} if dns else {}),
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificate_sds_secret_configs": [
                {"name": XDS_CLIENT_SECRET, "sds_config": _sds_source(client_sds)}
            ],
            "combined_validation_context": {
                # The control plane's certificate must name the address Envoy dials.
                "default_validation_context": {"match_typed_subject_alt_names": sans},
                "validation_context_sds_secret_config": {
                    "name": XDS_CA_SECRET,
                    "sds_config": _sds_source(ca_sds),
                },
            },
        },
    }
    socket = {"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": context}}
    text = yaml.safe_dump(socket, sort_keys=False, default_flow_style=False, width=1000)
    return "".join(f"      {line}\n" for line in text.splitlines())


def sds_resources(tls: XdsClientTls) -> dict[Path, str]:
    """The file-based SDS resources the bootstrap refers to, by path (JSON, which YAML reads)."""
    client, ca = tls.sds_paths()
    client_secret = {
        "@type": SECRET_TYPE,
        "name": XDS_CLIENT_SECRET,
        "tls_certificate": {
            "certificate_chain": {"filename": str(tls.cert)},
            "private_key": {"filename": str(tls.key)},
            # Certificate and key are re-read together when something is renamed here.
            "watched_directory": {"path": str(tls.cert.parent)},
        },
    }
    ca_secret = {
        "@type": SECRET_TYPE,
        "name": XDS_CA_SECRET,
        "validation_context": {
            "trusted_ca": {"filename": str(tls.ca)},
            "watched_directory": {"path": str(tls.ca.parent)},
        },
    }
    return {
        client: json.dumps({"resources": [client_secret]}, indent=2) + "\n",
        ca: json.dumps({"resources": [ca_secret]}, indent=2) + "\n",
    }


def write_sds(tls: XdsClientTls) -> list[Path]:
    """Write the SDS resources (each by rename, so Envoy never reads half a file)."""
    tls.sds_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in sds_resources(tls).items():
        staged = path.with_name(f".{path.name}.tmp")
        staged.write_text(text)
        os.replace(staged, path)
        written.append(path)
    return written


def _stats_config(full_cluster_stats: bool) -> str:
    # The filter's per-tool metrics get their labels and buckets here (mcpgw.observability).
    # A single-quoted YAML scalar keeps the regex's backslashes as they are.
    matcher = (
        ""
        if full_cluster_stats
        else (
            "  stats_matcher:\n"
            "    exclusion_list:\n"
            "      patterns:\n"
            f"        - safe_regex: {{regex: '{DROPPED_CLUSTER_STATS}'}}\n"
        )
    )
    return "stats_config:\n" + matcher + observability.stats_config_yaml()
