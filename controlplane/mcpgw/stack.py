"""`mcpgw up`: the whole gateway on one machine, as child tasks and one Envoy child process.

demo REST backend → plugin server → control plane (xDS + admin API) → session broker → Envoy,
started in that order so each part finds what it needs, and stopped in reverse. Integration
tests use the same class with free ports, so what `make up` runs is what the tests exercise.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcpgw import bundled, observability
from mcpgw.bootstrap import DEFAULT_BROKER_PORT, DEFAULT_STATS_PORT, BootstrapOptions, XdsClientTls, render
from mcpgw.broker import DEFAULT_KEEPALIVE, Broker, BrokerSettings
from mcpgw.controlplane import ControlPlane, ControlPlaneOptions
from mcpgw.demo.petstore import create_app as create_demo_app
from mcpgw.envoyproc import EnvoyProcess
from mcpgw.httpserve import ServedApp, serve
from mcpgw.limits import (
    DEFAULT_MAX_HEAP_BYTES,
    ListenerLimits,
    connection_cap_warning,
    envoy_connection_cap,
)
from mcpgw.listenertls import ListenerTls
from mcpgw.log import get_logger
from mcpgw.registry.secrets import NO_ALLOW_LIST, CredentialPolicy
from mcpgw.registry.tls import default_system_ca_file
from mcpgw.sessions.keys import DEFAULT_MAX_ENDED, DEFAULT_TTL_S
from mcpgw.sessions.store import default_keys_file
from mcpgw.tlsreload import TlsFiles
from mcpgw.tracing import TraceSettings
from mcpgw.xds.tls import XdsTls
from pluginserver.server import DEFAULT_ROOT as DEFAULT_PLUGINS_DIR
from pluginserver.server import create_app as create_plugin_app

log = get_logger(__name__)
# The demo registry shipped with mcpgw (`mcpgw.bundled`): read-only; `mcpgw up` without -f
# serves a copy of it.
DEFAULT_REGISTRY = bundled.demo_registry()
# Where the demo registry's servers call the demo backend (`StackOptions.demo_backend_port`'s default).
DEMO_BACKEND_PORT = 18080


@dataclass(frozen=True)
class StackOptions:
    registry_dir: Path | str = DEFAULT_REGISTRY
    plugins_dir: Path = DEFAULT_PLUGINS_DIR
    host: str = "127.0.0.1"
    listen_port: int = 10000
    xds_port: int = 18000
    status_port: int = 18001
    # The admin API's address (None: `host`); a non-loopback one requires a token.
    admin_host: str | None = None
    admin_token: str | None = field(default=None, repr=False)
    admin_token_file: Path | None = None
    admin_namespace_tokens_file: Path | None = None
    plugin_port: int = 18002
    envoy_admin_port: int = 9901
    # Envoy's stats listener: the admin's /stats/prometheus and /ready, nothing else.
    envoy_stats_port: int = DEFAULT_STATS_PORT
    # None: do not run the demo backend (the registry points at real services).
    demo_backend_port: int | None = DEMO_BACKEND_PORT
    node_id: str = "mcpgw-local"
    envoy_concurrency: int = 2
    envoy_log_level: str = "warning"
    # Delta (incremental) xDS instead of State of the World, chosen in Envoy's bootstrap.
    xds_delta: bool = False
    # All Envoy stats of each MCP backend cluster instead of the core set (bootstrap.py).
    envoy_full_cluster_stats: bool = False
    envoy_workdir: Path | None = None
    # The session broker (HTTP+SSE streams), run in this process; Envoy's `mcpgw-broker`.
    broker_port: int = DEFAULT_BROKER_PORT
    # Its bus: a redis:// URL (replicas sharing sessions), or None for an in-process bus.
    broker_redis: str | None = None
    broker_keepalive: float = DEFAULT_KEEPALIVE
    # Where session keys are kept (None: beside the registry); $MCPGW_SESSION_KEY pins one.
    session_keys_file: Path | None = None
    session_ttl_s: int = DEFAULT_TTL_S
    # Which credential files and variables the registry may name (`mcpgw up`: an allow-list).
    credentials: CredentialPolicy = NO_ALLOW_LIST
    session_max_ended: int = DEFAULT_MAX_ENDED
    # The listener's timeouts and per-connection limits, backend clusters' breakers.
    limits: ListenerLimits = field(default_factory=ListenerLimits)
    # The broker's settings (stream limits…); None: its defaults with `broker_keepalive`.
    broker_settings: BrokerSettings | None = None
    # Envoy's gateway group (its bootstrap's node.cluster): which servers it is given.
    node_cluster: str = "mcpgw"
    # xDS mutual TLS, the control plane's and Envoy's side (tests; `mcpgw up` stays plain on
    # loopback). The SDS files `envoy_xds_tls` names must have been written (bootstrap.write_sds).
    xds_tls: XdsTls | None = None
    envoy_xds_tls: XdsClientTls | None = None
    # The system CA bundle Envoy verifies https backends against (without their own `tls.ca`).
    backend_ca_file: str = field(default_factory=default_system_ca_file)
    # TLS on the MCP listener (None: plain HTTP, the demo's default on loopback) and on the
    # admin API; both reload their certificates when the files change.
    listener_tls: ListenerTls | None = None
    admin_tls: TlsFiles | None = None
    # Envoy's heap limit for its overload manager (503 at 98 %, `mcpgw.bootstrap`).
    envoy_max_heap_bytes: int = DEFAULT_MAX_HEAP_BYTES
    # The MCP listener's JSON access log (None: none); Envoy's stdout by default.
    access_log: str | None = observability.STDOUT
    # False: no per-tool metrics nor access-log fields from the filter (the bench's baseline).
    observability: bool = True
    # OpenTelemetry traces of the MCP listener (None: no tracer).
    tracing: TraceSettings | None = None


def demo_registry(target: Path, backend_port: int) -> Path:
    """A copy of the demo registry at `target` whose servers call the demo backend on `backend_port`."""
    shutil.copytree(DEFAULT_REGISTRY, target)
    for path in target.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace(f"127.0.0.1:{DEMO_BACKEND_PORT}", f"127.0.0.1:{backend_port}"))
    return target


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (tests and benchmarks run side by side)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all held open while choosing, so none is handed out twice.

    Chosen below the kernel's ephemeral range: a port picked there can be taken by any outgoing
    connection (Envoy's, a client's) between the choice and the bind, which made busy test runs
    fail with "address already in use". The defaults of `mcpgw up` are never chosen.
    """
    low, high = _ports_below_ephemeral()
    with contextlib.ExitStack() as held:
        chosen: list[int] = []
        for _ in range(count * 50):
            if len(chosen) == count:
                break
            port = random.randint(low, high)
            if port in chosen or port in _UP_DEFAULTS:
                continue
            sock = held.enter_context(socket.socket())
            try:
                sock.bind((host, port))
            except OSError:
                continue
            chosen.append(port)
        while len(chosen) < count:  # a crowded range: let the kernel pick, as before
            sock = held.enter_context(socket.socket())
            sock.bind((host, 0))
            chosen.append(int(sock.getsockname()[1]))
        return chosen


_UP_DEFAULTS = frozenset({9901, DEFAULT_STATS_PORT, 10000, 18000, 18001, 18002, 18003, 18080})


def _ports_below_ephemeral() -> tuple[int, int]:
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return 10000, max(10001, min(first, 65536) - 1)


def on_free_ports(registry_dir: Path | str, **options: Any) -> StackOptions:
    """`StackOptions` with every listening port free, no demo backend unless asked, and `options`."""
    names = (
        "listen_port",
        "xds_port",
        "status_port",
        "plugin_port",
        "envoy_admin_port",
        "envoy_stats_port",
        "broker_port",
    )
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    defaults: dict[str, Any] = {"demo_backend_port": None, **ports}
    return StackOptions(registry_dir=registry_dir, **(defaults | options))


@dataclass
class Stack:
    options: StackOptions
    demo: ServedApp | None = None
    plugins: ServedApp | None = None
    control_plane: ControlPlane | None = None
    broker: Broker | None = None
    envoy: EnvoyProcess | None = None
    # A copy of the demo registry pointed at a demo backend on another port; removed at stop.
    rewired: Path | None = None

    @property
    def mcp_base_url(self) -> str:
        scheme = "https" if self.options.listener_tls is not None else "http"
        return f"{scheme}://{self.options.host}:{self.options.listen_port}"

    async def start(self, ready_timeout: float = 60.0) -> None:
        """Start every part; on any failure, stop what was started and re-raise."""
        opts = self.options
        registry_dir, keys_file = opts.registry_dir, opts.session_keys_file
        try:
            if self._demo_elsewhere():
                assert opts.demo_backend_port is not None
                # The demo registry's servers call 127.0.0.1:18080: serve a copy that calls the
                # demo backend where it runs. Admin writes go to the copy (a demo's are kept
                # until `up` stops); session keys stay where the demo registry's are.
                self.rewired = Path(tempfile.mkdtemp(prefix="mcpgw-demo-")) / DEFAULT_REGISTRY.name
                registry_dir = demo_registry(self.rewired, opts.demo_backend_port)
                keys_file = keys_file or default_keys_file(DEFAULT_REGISTRY)
                log.info(
                    "demo_registry_rewired", registry=str(registry_dir), backend_port=opts.demo_backend_port
                )
            if opts.demo_backend_port is not None:
                self.demo = await serve(create_demo_app(), opts.host, opts.demo_backend_port)
                log.info("demo_backend_ready", url=self.demo.url)
            self.plugins = await serve(create_plugin_app(opts.plugins_dir), opts.host, opts.plugin_port)
            log.info("plugin_server_ready", url=self.plugins.url, root=str(opts.plugins_dir))
            self.control_plane = ControlPlane(
                ControlPlaneOptions(
                    registry_dir=registry_dir,
                    plugins_dir=opts.plugins_dir,
                    xds_host=opts.host,
                    xds_port=opts.xds_port,
                    xds_tls=opts.xds_tls,
                    status_host=opts.admin_host or opts.host,
                    status_port=opts.status_port,
                    admin_token=opts.admin_token,
                    admin_token_file=opts.admin_token_file,
                    admin_namespace_tokens_file=opts.admin_namespace_tokens_file,
                    plugin_server_host=opts.host,
                    plugin_server_port=self.plugins.port,
                    # Envoy is this process's child: it reads the module from disk (no remote
                    # fetch, so none of the warnings and critical lines that come with one).
                    plugin_delivery="file",
                    listen_host=opts.host,
                    listen_port=opts.listen_port,
                    session_keys_file=keys_file,
                    session_ttl_s=opts.session_ttl_s,
                    credentials=opts.credentials,
                    session_max_ended=opts.session_max_ended,
                    limits=opts.limits,
                    backend_ca_file=opts.backend_ca_file,
                    listener_tls=opts.listener_tls,
                    admin_tls=opts.admin_tls,
                    access_log=opts.access_log,
                    observability=opts.observability,
                    tracing=opts.tracing,
                )
            )
            await self.control_plane.start()
            self.broker = Broker(
                opts.host,
                opts.broker_port,
                redis_url=opts.broker_redis,
                settings=opts.broker_settings or BrokerSettings(keepalive=opts.broker_keepalive),
            )
            await self.broker.start()
            self.control_plane.broker = self.broker  # its streams show in the control plane's /metrics
            self.envoy = EnvoyProcess(
                render(
                    BootstrapOptions(
                        node_id=opts.node_id,
                        node_cluster=opts.node_cluster,
                        xds=((opts.host, self.control_plane.xds_port),),
                        xds_tls=opts.envoy_xds_tls,
                        admin_port=opts.envoy_admin_port,
                        stats=(opts.host, opts.envoy_stats_port),
                        delta=opts.xds_delta,
                        broker=(opts.host, self.broker.port),
                        full_cluster_stats=opts.envoy_full_cluster_stats,
                        # Envoy inherits this process's file-descriptor limit (raised to the
                        # hard limit by EnvoyProcess): a cap above it would fail accepts.
                        max_connections=self._connection_cap(),
                        max_heap_bytes=opts.envoy_max_heap_bytes,
                    )
                ),
                admin_port=opts.envoy_admin_port,
                concurrency=opts.envoy_concurrency,
                log_level=opts.envoy_log_level,
                workdir=opts.envoy_workdir,
            )
            await self.envoy.start()
            # The bootstrap's stats listener, and the MCP listener from the control plane.
            await self.envoy.wait_ready(ready_timeout, listeners=2)
            # Envoy may serve before it has sent its last ACKs (it ACKs RDS and ECDS after
            # applying them, sometimes ~0.5 s after the listener went active): ready means the
            # control plane has seen this node accept everything it sent.
            await self._wait_acked(ready_timeout)
        except BaseException:
            await self.stop()
            raise

    @staticmethod
    def _connection_cap() -> int:
        cap = envoy_connection_cap()
        if connection_cap_warning(cap):
            log.warning("small_connection_cap", cap=cap, hint="raise the open-file limit (ulimit -n)")
        return cap

    async def _wait_acked(self, timeout: float) -> None:
        assert self.control_plane is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = self.control_plane.status()["nodes"]
            # A NACK is an answer too (the refusals table isolates the server and republishes).
            if nodes and all(
                t["version_acked"] == t["version_sent"] or t["last_nack"] is not None
                for node in nodes
                for t in node["types"].values()
            ):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"envoy did not ACK its configuration within {timeout:.0f}s")

    async def stop(self) -> None:
        if self.envoy is not None:
            await self.envoy.stop()
        if self.broker is not None:
            await self.broker.stop()
        if self.control_plane is not None:
            await self.control_plane.stop()
        for served in (self.plugins, self.demo):
            if served is not None:
                await served.close()
        if self.rewired is not None:
            shutil.rmtree(self.rewired.parent, ignore_errors=True)

    def _demo_elsewhere(self) -> bool:
        """True when serving the demo registry with the demo backend on another port."""
        opts = self.options
        return (
            opts.demo_backend_port not in (None, DEMO_BACKEND_PORT)
            and isinstance(opts.registry_dir, Path)
            and opts.registry_dir.resolve() == DEFAULT_REGISTRY.resolve()
        )
