"""The control plane process: registry source → translator → snapshot cache → ADS server.

Data flows one way. The source produces registry snapshots; `translate` turns each into Envoy
resources; the cache versions them; the ADS server delivers them. A rejected registry never
reaches the cache, so Envoys keep the last good configuration. The admin API (`mcpgw.admin`)
edits the registry through the store and serves the status of the registry and of every
connected node (ACKed versions, last NACK, time since the last push).

Session keys (`mcpgw.sessions`) are a second input of the translation: every server's filter
configuration carries them, so a rotation here or on another replica, or a retired key
expiring, re-delivers every server's extension config while registry edits stay incremental.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mcpgw import observability
from mcpgw.admin.app import create_app as create_admin_app
from mcpgw.admin.auth import AdminConfigError, Authorizer, check_bind, is_loopback, load_token
from mcpgw.admin.scopes import NamespaceTokens, ScopesError
from mcpgw.admin.scopes import load as load_namespace_tokens
from mcpgw.admin.status import present_nodes
from mcpgw.httpserve import ServedApp, serve
from mcpgw.limits import ListenerLimits
from mcpgw.listenertls import ListenerTls
from mcpgw.log import get_logger
from mcpgw.metrics import CONTENT_TYPE_LATEST, ControlPlaneMetrics
from mcpgw.redisurl import is_redis_url
from mcpgw.refusals import Refusals
from mcpgw.registry import open_store
from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.secrets import NO_ALLOW_LIST, CredentialPolicy, resolve_off_loop
from mcpgw.registry.store import ApplyFailed, RegistryStore
from mcpgw.registry.tls import SYSTEM_CA_FILE
from mcpgw.registry.validate import Invalid, Problem
from mcpgw.sessions.keys import DEFAULT_MAX_ENDED, DEFAULT_TTL_S, SessionSettings
from mcpgw.sessions.manager import SessionKeys
from mcpgw.sessions.store import FileKeyStore, RedisKeyStore, open_key_store
from mcpgw.supervise import Supervisor
from mcpgw.tlsreload import ReloadingServerContext, TlsFiles, TlsFilesError
from mcpgw.tracing import TraceSettings
from mcpgw.translate.envoy import (
    Delta,
    GatewaySettings,
    PluginRef,
    Resources,
    Translator,
    extension_config_name,
)
from mcpgw.translate.filtercheck import LIBRARY, FilterCheck, beside
from mcpgw.translate.groups import GroupViews
from mcpgw.translate.pgv import ResourceInvalid
from mcpgw.versions import FILTER_NAME, check_schema
from mcpgw.versions import describe as describe_versions
from mcpgw.xds import types
from mcpgw.xds.cache import SnapshotCache
from mcpgw.xds.server import AdsServer
from mcpgw.xds.stream import Nack
from mcpgw.xds.tls import XdsTls
from mcpgw.xds.tls import check_bind as check_xds_bind
from pluginserver.catalog import Plugin, latest

if TYPE_CHECKING:
    from mcpgw.broker import Broker

log = get_logger(__name__)


@dataclass(frozen=True)
class ControlPlaneOptions:
    # A registry directory, or a `redis://…` URL for a registry shared by several replicas.
    registry_dir: Path | str
    plugins_dir: Path
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    # Mutual TLS for xDS (required beyond loopback): every Envoy then shows a certificate from
    # this CA naming its node (`mcpgw.xds.tls`).
    xds_tls: XdsTls | None = None
    # The admin API (registry CRUD, /status, /healthz) listens here.
    status_host: str = "127.0.0.1"
    status_port: int = 18001
    # Bearer token for admin writes: this value, else the file's content, else $MCPGW_ADMIN_TOKEN.
    admin_token: str | None = field(default=None, repr=False)
    admin_token_file: Path | None = None
    # Tokens limited to one namespace each (`mcpgw.admin.scopes`): SHA-256 digests per namespace.
    admin_namespace_tokens_file: Path | None = None
    # Bearer token that admits only `GET /metrics` (for Prometheus, so it holds no write token);
    # read from this file. The admin token admits /metrics as well.
    metrics_token_file: Path | None = None
    # Where Envoy fetches plugins from: the plugin server's address as Envoy sees it.
    plugin_server_host: str = "127.0.0.1"
    plugin_server_port: int = 18002
    # How Envoys get the plugin module: "file" (read from `plugins_dir` at this path: Envoy on
    # this machine), "http" (fetched from the plugin server: Envoys elsewhere), or "auto" (file
    # when the plugin server's address is loopback, so every Envoy that reaches it is here).
    # Envoy's remote fetch logs a warning at every update and critical lines at a start with
    # several servers (`PluginRef.path`); reading the file logs nothing.
    plugin_delivery: str = "auto"
    listen_host: str = "127.0.0.1"
    listen_port: int = 10000
    # Session keys: $MCPGW_SESSION_KEY pins one; else this file; else beside the registry (in its
    # Redis, or `<registry parent>/.mcpgw/<registry name>-session-keys.json`).
    session_keys_file: Path | None = None
    # How long a session id stays valid after the filter issued it.
    session_ttl_s: int = DEFAULT_TTL_S
    # Ended sessions each Envoy remembers (`sessions.max_ended`); the oldest go when it is full.
    session_max_ended: int = DEFAULT_MAX_ENDED
    # A registry rejected for something outside it (a credential file or variable it names,
    # unreadable) is tried again this often until it applies: fixing the credential is enough,
    # and a key rotation made meanwhile still reaches Envoy.
    rejected_retry_s: float = 5.0
    # Which `{file:}` / `{env:}` credentials the registry may name (`mcpgw.registry.secrets`):
    # none here (any regular file, any variable but mcpgw's own); the CLI's default is an allow-list.
    credentials: CredentialPolicy = NO_ALLOW_LIST
    # The listener's timeouts and per-connection limits, and backend clusters' breakers.
    limits: ListenerLimits = field(default_factory=ListenerLimits)
    # The MCP listener's JSON access log, a path on the Envoy nodes (None: none).
    access_log: str | None = observability.STDOUT
    # False: no per-tool metrics nor access-log fields from the filter (the bench's baseline).
    observability: bool = True
    # OpenTelemetry traces of the MCP listener (None: no tracer).
    tracing: TraceSettings | None = None
    # The system CA bundle on the Envoy nodes, for https backends without their own `tls.ca`.
    backend_ca_file: str = SYSTEM_CA_FILE
    # TLS on Envoy's MCP listener: PEM files on the Envoy nodes (None: plain HTTP).
    listener_tls: ListenerTls | None = None
    # TLS on the admin API, certificate reloaded when its files change (None: plain HTTP,
    # which only a loopback address allows).
    admin_tls: TlsFiles | None = None


@dataclass
class _Counters:
    applied: int = 0
    rejected: int = 0
    last_applied_at: float | None = None
    # Translations or cache updates that raised (a control-plane bug): each is logged with its
    # traceback and kept here, while Envoy keeps the last good configuration.
    failed: int = 0
    last_failure: dict[str, Any] | None = None


class ControlPlane:
    def __init__(self, options: ControlPlaneOptions) -> None:
        self.options = options
        self.store: RegistryStore = open_store(options.registry_dir)
        self.cache = SnapshotCache()
        # Per-server resources Envoy refused: isolated so they cannot block other servers.
        self.refusals = Refusals()
        self._groups = GroupViews()
        # Prometheus metrics (`/metrics` on the admin port), one registry per control plane.
        self.metrics = ControlPlaneMetrics(self._metrics_state)
        self.store.events = self.metrics.store_events
        if is_redis_url(str(options.registry_dir)):
            self.metrics.redis_component("registry")
        self.ads = AdsServer(
            self.cache, on_nack=self._nacked, on_ack=self._acked, tls=options.xds_tls, metrics=self.metrics
        )
        self.metrics.settled = self.ads.settled
        # A session broker run in this process (`mcpgw up`/`serve`): its open streams show in /metrics.
        self.broker: Broker | None = None
        # The newest translation published, before isolation: re-published when a NACK arrives.
        self._published: tuple[RegistrySnapshot, Resources] | None = None
        self.settings: GatewaySettings | None = None
        self.translator: Translator | None = None
        self._counters = _Counters()
        # Problems of the newest registry that kept it from being served (unreadable credentials).
        self.rejections: list[Problem] = []
        self.applied_revision: str | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.sessions: SessionKeys | None = None
        self._keys_task: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self._status: ServedApp | None = None
        # The admin API's TLS context (its certificate reloads when the files change).
        self.admin_tls: ReloadingServerContext | None = None
        # The plugin served and its configuration check, once `start` selected them.
        self.plugin: Plugin | None = None
        self.filter_check: FilterCheck | None = None
        # Every background loop runs supervised: a failure is logged, shown and restarted.
        self.supervisor = Supervisor()
        self.credentials = options.credentials
        # Credentials are read off the event loop: an apply waits for them, and a newer one
        # must not be overtaken by an older one that read more slowly.
        self._apply_lock = asyncio.Lock()
        self.xds_port = options.xds_port
        self.status_port = options.status_port

    async def start(self) -> None:
        """Load the registry and plugin, then serve; raises `Invalid` for a broken registry at startup.

        At startup there is no last good registry to fall back on, so refusing to start is the
        only way not to serve an empty gateway by accident.
        """
        # Checked first: a refused admin configuration must not leave anything half started.
        token = load_token(self.options.admin_token_file, explicit=self.options.admin_token)
        scopes = self._namespace_tokens()
        scrape_token = (
            load_token(self.options.metrics_token_file) if self.options.metrics_token_file else None
        )
        check_bind(
            self.options.status_host,
            token,
            tls=self.options.admin_tls is not None,
            namespace_tokens=scopes is not None,
        )
        check_xds_bind(self.options.xds_host, self.options.xds_tls)
        if self.options.xds_tls is not None:
            self.options.xds_tls.check()
        admin_tls = self._admin_tls()
        if self.options.listener_tls is None and not is_loopback(self.options.listen_host):
            # Not refused: a load balancer in front of Envoy often terminates TLS. But the MCP
            # clients' bearer tokens cross the network in clear up to it.
            log.warning(
                "listener_without_tls",
                listen=f"{self.options.listen_host}:{self.options.listen_port}",
                hint="clients' tokens cross the network in clear unless something in front of Envoy "
                "terminates TLS; set --listener-tls-cert and --listener-tls-key",
            )
        plugin = latest(FILTER_NAME, self.options.plugins_dir)
        # The plugin's own parser; it also says which configuration schema the plugin reads,
        # refused here when it is not the one this control plane writes.
        filter_check = _filter_check(plugin.path)
        check_schema(plugin, filter_check)
        self.plugin, self.filter_check = plugin, filter_check
        # Built first, so a malformed $MCPGW_SESSION_KEY is refused before anything starts.
        key_store = open_key_store(self.store, self.options.registry_dir, self.options.session_keys_file)
        if isinstance(key_store, RedisKeyStore):
            self.metrics.redis_component("session_keys")
        self.sessions = SessionKeys(
            key_store, self.options.session_ttl_s, max_ended=self.options.session_max_ended
        )
        # mcpgw's own secrets are never a backend's credential, whatever the allow-list.
        owned = [self.options.admin_token_file, self.options.metrics_token_file]
        if isinstance(key_store, FileKeyStore):
            owned.append(key_store.path)
        self.credentials = dataclasses.replace(
            self.credentials, owned=(*self.credentials.owned, *(p for p in owned if p is not None))
        )
        log.info("credential_policy", **self.credentials.describe())
        log.info(
            "plugin_selected",
            name=plugin.name,
            version=plugin.version,
            sha256=plugin.sha256,
            bytes=plugin.size,
            delivery="file" if self._plugin_from_file() else "http",
        )
        await self.store.load()
        if self.store.snapshot is None:
            raise Invalid(self.store.problems)
        sessions = await self.sessions.load()
        base = f"http://{self.options.plugin_server_host}:{self.options.plugin_server_port}"
        self.settings = GatewaySettings(
            plugin=PluginRef(
                url=base + plugin.url_path,
                sha256=plugin.sha256,
                path=plugin.path.resolve() if self._plugin_from_file() else None,
            ),
            plugin_server_host=self.options.plugin_server_host,
            plugin_server_port=self.options.plugin_server_port,
            listen_host=self.options.listen_host,
            listen_port=self.options.listen_port,
            sessions=sessions,
            limits=self.options.limits,
            listener_tls=self.options.listener_tls,
            filter_check=filter_check,
            backend_ca_file=self.options.backend_ca_file,
            access_log=self.options.access_log,
            observability=self.options.observability,
            tracing=self.options.tracing,
        )
        self.translator = Translator(self.settings)
        self.store.precheck = self._precheck
        await self.apply(self.store.snapshot)
        if self.rejections:
            raise Invalid(self.rejections)
        # The registry and its translation are long-lived: keep the garbage collector from
        # re-scanning them on every later edit (a 100,000-tool registry is millions of objects).
        gc.freeze()
        self.xds_port = await self.ads.start(self.options.xds_host, self.options.xds_port)
        # The watch registers the store's change handler; it must run before the admin API
        # accepts a write, or that write would be persisted but never applied.
        sessions_keys = self.sessions
        self._watch_task = self.supervisor.start("registry-watch", lambda: self.store.watch(self.apply))
        self._keys_task = self.supervisor.start("keys-watch", lambda: sessions_keys.watch(self._keys_changed))
        await asyncio.sleep(0)
        await self._start_admin(token, admin_tls, scopes, scrape_token)
        log.info(
            "control_plane_ready",
            xds=f"{self.options.xds_host}:{self.xds_port}",
            admin=self.admin_url,
            listener_tls="on" if self.options.listener_tls else "off",
            admin_writes="enabled" if token else "disabled (no token)",
        )

    def _plugin_from_file(self) -> bool:
        delivery = self.options.plugin_delivery
        if delivery == "auto":
            return is_loopback(self.options.plugin_server_host)
        return delivery == "file"

    async def _precheck(self, snapshot: RegistrySnapshot, changed: str) -> None:
        """Refuse a write whose registry could not be served: unreadable credentials, a
        generated resource Envoy would reject, or a translation that fails.

        The candidate goes through the very translator `apply` uses, so what passes here is
        what `apply` publishes once the write is persisted (it then finds every server already
        translated). The changed server is checked alone first, on a throwaway translator: a
        refused document must not cost the next edit a full re-translation.
        """
        assert self.settings is not None and self.translator is not None
        secrets = await resolve_off_loop(snapshot, self.credentials)
        server = snapshot.server(changed)
        try:
            if server is not None:
                Translator(self.settings).check_server(server, snapshot, secrets)
            self.translator.translate(snapshot, secrets)
        except ResourceInvalid as error:
            source = server.source if server is not None else self.store.description
            raise Invalid([Problem(source, getattr(error, "path", ""), str(error))]) from None
        except Exception as error:
            log.error("registry_precheck_failed", exc_info=True, server=changed, error=repr(error))
            raise ApplyFailed(
                f"the control plane could not translate the registry with this change "
                f"({type(error).__name__}); nothing was written, the gateway serves what it had"
            ) from None

    async def _keys_changed(self, sessions: SessionSettings) -> None:
        """New session keys (a rotation anywhere, an expiry): every server's config is resent."""
        assert self.settings is not None and self.translator is not None
        self.settings = dataclasses.replace(self.settings, sessions=sessions)
        self.translator.set_settings(self.settings)
        if self.store.snapshot is not None:
            await self.apply(self.store.snapshot)

    async def apply(self, snapshot: RegistrySnapshot) -> None:
        """Translate and publish `snapshot`; a snapshot whose credentials cannot be read is rejected.

        Never raises: it is the handler of every registry change, and an exception here used to
        end the registry watch for good. A failure is logged with its traceback, shown in
        `/status` (a registry problem and `registry.last_failure`), Envoy keeps the last good
        configuration, and the next change is translated afresh.
        """
        async with self._apply_lock:
            try:
                await self._apply(snapshot)
            except Exception as error:
                self._failed(snapshot, "apply", error)

    def _failed(self, snapshot: RegistrySnapshot, stage: str, error: Exception) -> None:
        reason = self._record_failure(snapshot, stage, error)
        self._counters.rejected += 1
        self.rejections = [
            Problem(
                self.store.description,
                "",
                f"revision {snapshot.revision} could not be applied ({stage}: {reason}); "
                "Envoy keeps the last good configuration",
            )
        ]

    def _record_failure(self, snapshot: RegistrySnapshot, stage: str, error: Exception) -> str:
        reason = f"{type(error).__name__}: {error}"
        log.error(
            "registry_apply_failed", exc_info=True, revision=snapshot.revision, stage=stage, error=reason
        )
        self._counters.failed += 1
        self._counters.last_failure = {
            "revision": snapshot.revision,
            "stage": stage,
            "error": reason,
            "at": time.time(),
        }
        return reason

    def _translate(self, snapshot: RegistrySnapshot, secrets: Any) -> Any:
        """The translator's result; after a failure of its incremental path, a fresh translation.

        The translator starts clean after any exception, so the second attempt shares none of
        the state the first one failed on: a memo bug costs one full translation, not the change.
        """
        assert self.translator is not None
        try:
            return self.translator.translate(snapshot, secrets)
        except ResourceInvalid:
            raise
        except Exception as error:
            self._record_failure(snapshot, "incremental translation", error)
            resources = self.translator.translate(snapshot, secrets)
            log.warning("registry_translated_afresh", revision=snapshot.revision)
            return resources

    async def _apply(self, snapshot: RegistrySnapshot) -> None:
        assert self.translator is not None
        started = time.perf_counter()
        try:
            secrets = await resolve_off_loop(snapshot, self.credentials)
        except Invalid as error:
            self.rejections = error.problems
            self._counters.rejected += 1
            self.metrics.validation_failures.labels("apply").inc()
            for problem in error.problems:
                log.error("registry_rejected", file=problem.file, field=problem.path, reason=problem.reason)
            self._schedule_retry()
            return
        # The credentials are readable: nothing outside the registry to wait for.
        self._cancel_retry()
        self.rejections = []
        try:
            resources = self._translate(snapshot, secrets)
        except ResourceInvalid as error:
            key = str(error).partition(":")[0]
            server = snapshot.server(key)
            self.rejections = [Problem(server.source if server else self.store.description, "", str(error))]
            self._counters.rejected += 1
            self.metrics.validation_failures.labels("apply").inc()
            log.error("registry_rejected", reason=str(error))
            return
        previous, self._published = self._published, (snapshot, resources)
        try:
            changed = self._publish(self.translator.delta)
        except BaseException:
            self._published = previous  # what a NACK re-publishes must be what the cache took
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.metrics.applied(elapsed_ms / 1000, changed=bool(changed))
        self.applied_revision = snapshot.revision
        self._counters.applied += 1
        self._counters.last_applied_at = time.time()
        log.info(
            "snapshot_applied",
            revision=snapshot.revision,
            servers=len(snapshot.servers),
            changed_types=changed,
            translate_ms=round(elapsed_ms, 2),
        )

    def _publish(self, delta: Delta | None) -> list[str]:
        """Hand the newest translation to the cache, with every server Envoy refused isolated."""
        assert self._published is not None and self.settings is not None
        snapshot, resources = self._published
        isolated = self.refusals.isolate(snapshot, resources, self.settings)
        # Isolation changes resources behind the translator's back: its hint no longer holds.
        hint = (delta.base, delta.changed) if delta is not None and isolated is resources else None
        # Each gateway group gets only its servers' resources (None: one view for every node).
        held: set[str] = set()
        if isolated is not resources:  # servers whose filter config is held out of the listener
            extensions = isolated.get(types.EXTENSION_CONFIG, {})
            held = {s.key for s in snapshot.servers if extension_config_name(s) not in extensions}
        assert self.translator is not None
        groups = self.translator.gateway_groups()
        same = delta if delta is not None and isolated is resources else None
        views = self._groups.views(snapshot, isolated, self.settings, held, groups, same)
        changed = self._groups.changed
        views_hint = (self._groups.base, changed) if changed is not None else None
        return self.cache.set_resources(isolated, hint, views, views_hint)

    def _nacked(self, node: str, nack: Nack) -> None:
        if self.refusals.nacked(node, nack, self.cache.snapshot) and self._published is not None:
            changed = self._publish(None)
            log.info("refused_config_isolated", node=node, changed_types=changed)

    def _acked(self, node: str, type_url: str, resources: Any) -> None:
        self.refusals.accepted(type_url, resources, self.cache.snapshot)

    def _schedule_retry(self) -> None:
        """Apply the newest registry again later: what kept it out lies outside the registry
        (a credential file or variable), so no registry change may come to trigger it. Only
        once serving: at startup a rejection stops the start instead."""
        if self._watch_task is None or (self._retry_task is not None and not self._retry_task.done()):
            return
        self._retry_task = self.supervisor.start("registry-retry", self._retry_rejected, until_done=True)

    async def _retry_rejected(self) -> None:
        # Runs until an apply finds the credentials readable (`_cancel_retry` unsets it).
        while self._retry_task is asyncio.current_task() and self.store.snapshot is not None:
            await asyncio.sleep(self.options.rejected_retry_s)
            # The registry may have changed meanwhile: the newest snapshot is the one to serve.
            log.info("registry_retry", revision=self.store.snapshot.revision)
            await self.apply(self.store.snapshot)

    def _cancel_retry(self) -> None:
        task, self._retry_task = self._retry_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def stop(self) -> None:
        for task in (self._watch_task, self._keys_task, self._retry_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._status is not None:
            await self._status.close()
        await self.ads.stop(grace=1.0)
        if self.sessions is not None:
            await self.sessions.store.close()
        await self.store.close()

    def status(self) -> dict[str, Any]:
        snapshot = self.store.snapshot
        return {
            # mcpgw, the plugin and the configuration schema (contract) both read.
            "version": describe_versions(self.plugin, self.filter_check),
            "registry": {
                "store": self.store.description,
                "revision": self.applied_revision,
                "servers": [
                    {"key": s.key, "path": s.path, "tools": len(s.tools), "source": s.source}
                    for s in (snapshot.servers if snapshot else ())
                ],
                # How many `kind: Consumer` documents are served (their keys: never here).
                "consumers": len(snapshot.consumers) if snapshot else 0,
                "problems": [
                    {"file": p.file, "field": p.path, "reason": p.reason}
                    for p in [*self.store.problems, *self.rejections]
                ],
                "applied": self._counters.applied,
                "rejected": self._counters.rejected,
                "last_applied_at": self._counters.last_applied_at,
                "failed": self._counters.failed,
                "last_failure": self._counters.last_failure,
            },
            "sessions": self.sessions.describe() if self.sessions is not None else None,
            "xds": {
                "versions": self.cache.snapshot.versions(),
                # Per gateway group (node.cluster) when servers name groups; "*": any other group.
                "groups": {group or "*": view.versions() for group, view in (self.cache.views or {}).items()},
                "tls": self.options.xds_tls is not None,
            },
            "nodes": present_nodes(self.ads.status()),
            "tasks": self.supervisor.status(),
            # Per server: a resource Envoy refused, its error, and what is served instead.
            "refused": self.refusals.status(),
        }

    async def _serve_metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _metrics_state(self) -> dict[str, Any]:
        """What `/metrics` reads at each scrape (`mcpgw.metrics`)."""
        snapshot = self.store.snapshot if self.applied_revision is not None else None
        streams = self.ads.status()
        state: dict[str, Any] = {
            "revision": self.applied_revision,
            "servers": len(snapshot.servers) if snapshot else None,
            "tools": sum(len(s.tools) for s in snapshot.servers) if snapshot else None,
            "problems": len(self.store.problems) + len(self.rejections),
            "applied_at": self._counters.last_applied_at,
            "envoys": len(self.ads.connected_nodes()),
            "streams": sum(1 for entry in streams if entry.get("connected")),
            "unacked": self.ads.unacked(),
        }
        # A pinned key ($MCPGW_SESSION_KEY) has no creation time: no age to show.
        if self.sessions is not None and self.sessions.keys and not self.sessions.store.pinned:
            state["session_key_age"] = max(0.0, time.time() - self.sessions.keys[0].created_ms / 1000)
        broker = self.broker
        if broker is not None:
            state["broker_streams"] = broker.counts.total if broker.counts is not None else None
            state["bridge_sessions"] = len(broker.bridge.sessions) if broker.bridge is not None else None
        return state

    def _admin_tls(self) -> ReloadingServerContext | None:
        files = self.options.admin_tls
        if files is None:
            return None
        try:
            return ReloadingServerContext(files)
        except TlsFilesError as error:
            raise AdminConfigError(f"admin API TLS: {error}") from None

    @property
    def admin_url(self) -> str:
        scheme = "https" if self.options.admin_tls is not None else "http"
        return f"{scheme}://{self.options.status_host}:{self.status_port}"

    def _namespace_tokens(self) -> NamespaceTokens | None:
        path = self.options.admin_namespace_tokens_file
        if path is None:
            return None
        try:
            return load_namespace_tokens(path)
        except ScopesError as error:
            raise AdminConfigError(str(error)) from None

    async def _start_admin(
        self,
        token: str | None,
        tls: ReloadingServerContext | None,
        scopes: NamespaceTokens | None = None,
        scrape_token: str | None = None,
    ) -> None:
        host = self.options.status_host
        # Reads are open only on loopback; elsewhere every /v1 request needs a token.
        authorizer = Authorizer(
            token, open_reads=is_loopback(host), namespace_tokens=scopes, scrape_token=scrape_token
        )
        app = create_admin_app(self.store, self.status, authorizer, self.sessions)
        # Guarded like /status by the admin API's middleware (open on loopback, else the token).
        app.router.add_get("/metrics", self._serve_metrics)
        self.admin_tls = tls
        self._status = await serve(app, host, self.options.status_port, tls.context if tls else None)
        self.status_port = self._status.port


def _filter_check(plugin: Path) -> FilterCheck | None:
    """The selected plugin's own configuration parser, so every configuration sent is one it accepts."""
    check = beside(plugin)
    if check is None:
        # Validation still applies the same rules; only the filter's backstop is missing.
        log.warning(
            "filter_check_unavailable",
            plugin=str(plugin),
            reason=f"no {LIBRARY} beside the plugin (run `make filters`)",
        )
    else:
        log.info("filter_check_loaded", library=str(check.library))
    return check
