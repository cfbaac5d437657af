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
from typing import Any

from mcpgw.admin.app import create_app as create_admin_app
from mcpgw.admin.auth import Authorizer, check_bind, is_loopback, load_token
from mcpgw.admin.status import present_nodes
from mcpgw.httpserve import ServedApp, serve
from mcpgw.log import get_logger
from mcpgw.registry import open_store
from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.secrets import resolve as resolve_secrets
from mcpgw.registry.store import RegistryStore
from mcpgw.registry.validate import Invalid, Problem
from mcpgw.sessions.keys import DEFAULT_TTL_S, SessionSettings
from mcpgw.sessions.manager import SessionKeys
from mcpgw.sessions.store import open_key_store
from mcpgw.translate.envoy import GatewaySettings, PluginRef, Translator
from mcpgw.translate.filtercheck import LIBRARY, FilterCheck, beside
from mcpgw.translate.pgv import ResourceInvalid
from mcpgw.xds.cache import SnapshotCache
from mcpgw.xds.server import AdsServer
from pluginserver.catalog import latest

log = get_logger(__name__)
FILTER_NAME = "mcp-server"


@dataclass(frozen=True)
class ControlPlaneOptions:
    # A registry directory, or a `redis://…` URL for a registry shared by several replicas.
    registry_dir: Path | str
    plugins_dir: Path
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    # The admin API (registry CRUD, /status, /healthz) listens here.
    status_host: str = "127.0.0.1"
    status_port: int = 18001
    # Bearer token for admin writes: this value, else the file's content, else $MCPGW_ADMIN_TOKEN.
    admin_token: str | None = field(default=None, repr=False)
    admin_token_file: Path | None = None
    # Where Envoy fetches plugins from: the plugin server's address as Envoy sees it.
    plugin_server_host: str = "127.0.0.1"
    plugin_server_port: int = 18002
    listen_host: str = "127.0.0.1"
    listen_port: int = 10000
    # Session keys: $MCPGW_SESSION_KEY pins one; else this file; else beside the registry (in its
    # Redis, or `<registry parent>/.mcpgw/<registry name>-session-keys.json`).
    session_keys_file: Path | None = None
    # How long a session id stays valid after the filter issued it.
    session_ttl_s: int = DEFAULT_TTL_S
    # A registry rejected for something outside it (a credential file or variable it names,
    # unreadable) is tried again this often until it applies: fixing the credential is enough,
    # and a key rotation made meanwhile still reaches Envoy.
    rejected_retry_s: float = 5.0


@dataclass
class _Counters:
    applied: int = 0
    rejected: int = 0
    last_applied_at: float | None = None


class ControlPlane:
    def __init__(self, options: ControlPlaneOptions) -> None:
        self.options = options
        self.store: RegistryStore = open_store(options.registry_dir)
        self.cache = SnapshotCache()
        self.ads = AdsServer(self.cache)
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
        self.xds_port = options.xds_port
        self.status_port = options.status_port

    async def start(self) -> None:
        """Load the registry and plugin, then serve; raises `Invalid` for a broken registry at startup.

        At startup there is no last good registry to fall back on, so refusing to start is the
        only way not to serve an empty gateway by accident.
        """
        # Checked first: a refused admin configuration must not leave anything half started.
        token = load_token(self.options.admin_token_file, explicit=self.options.admin_token)
        check_bind(self.options.status_host, token)
        plugin = latest(FILTER_NAME, self.options.plugins_dir)
        # Built first, so a malformed $MCPGW_SESSION_KEY is refused before anything starts.
        key_store = open_key_store(self.store, self.options.registry_dir, self.options.session_keys_file)
        self.sessions = SessionKeys(key_store, self.options.session_ttl_s)
        log.info(
            "plugin_selected",
            name=plugin.name,
            version=plugin.version,
            sha256=plugin.sha256,
            bytes=plugin.size,
        )
        await self.store.load()
        if self.store.snapshot is None:
            raise Invalid(self.store.problems)
        sessions = await self.sessions.load()
        base = f"http://{self.options.plugin_server_host}:{self.options.plugin_server_port}"
        self.settings = GatewaySettings(
            plugin=PluginRef(url=base + plugin.url_path, sha256=plugin.sha256),
            plugin_server_host=self.options.plugin_server_host,
            plugin_server_port=self.options.plugin_server_port,
            listen_host=self.options.listen_host,
            listen_port=self.options.listen_port,
            sessions=sessions,
            filter_check=_filter_check(plugin.path),
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
        self._watch_task = asyncio.create_task(self.store.watch(self.apply), name="registry-watch")
        self._keys_task = asyncio.create_task(self.sessions.watch(self._keys_changed), name="keys-watch")
        await asyncio.sleep(0)
        await self._start_admin(token)
        log.info(
            "control_plane_ready",
            xds=f"{self.options.xds_host}:{self.xds_port}",
            admin=f"http://{self.options.status_host}:{self.status_port}",
            admin_writes="enabled" if token else "disabled (no token)",
        )

    def _precheck(self, snapshot: RegistrySnapshot, changed: str) -> None:
        """Refuse a write whose registry could not be served: unreadable credentials, or a
        generated resource Envoy would reject. Only the changed server is translated."""
        assert self.settings is not None
        secrets = resolve_secrets(snapshot)
        server = snapshot.server(changed)
        if server is None:
            return
        try:
            Translator(self.settings).check_server(server, snapshot, secrets)
        except ResourceInvalid as error:
            raise Invalid([Problem(server.source, getattr(error, "path", ""), str(error))]) from None

    async def _keys_changed(self, sessions: SessionSettings) -> None:
        """New session keys (a rotation anywhere, an expiry): every server's config is resent."""
        assert self.settings is not None and self.translator is not None
        self.settings = dataclasses.replace(self.settings, sessions=sessions)
        self.translator.set_settings(self.settings)
        if self.store.snapshot is not None:
            await self.apply(self.store.snapshot)

    async def apply(self, snapshot: RegistrySnapshot) -> None:
        """Translate and publish `snapshot`; a snapshot whose credentials cannot be read is rejected."""
        assert self.translator is not None
        started = time.perf_counter()
        try:
            secrets = resolve_secrets(snapshot)
        except Invalid as error:
            self.rejections = error.problems
            self._counters.rejected += 1
            for problem in error.problems:
                log.error("registry_rejected", file=problem.file, field=problem.path, reason=problem.reason)
            self._schedule_retry()
            return
        # The credentials are readable: nothing outside the registry to wait for.
        self._cancel_retry()
        self.rejections = []
        try:
            resources = self.translator.translate(snapshot, secrets)
        except ResourceInvalid as error:
            key = str(error).partition(":")[0]
            server = snapshot.server(key)
            self.rejections = [Problem(server.source if server else self.store.description, "", str(error))]
            self._counters.rejected += 1
            log.error("registry_rejected", reason=str(error))
            return
        delta = self.translator.delta
        changed = self.cache.set_resources(resources, (delta.base, delta.changed) if delta else None)
        elapsed_ms = (time.perf_counter() - started) * 1000
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

    def _schedule_retry(self) -> None:
        """Apply the newest registry again later: what kept it out lies outside the registry
        (a credential file or variable), so no registry change may come to trigger it. Only
        once serving: at startup a rejection stops the start instead."""
        if self._watch_task is None or (self._retry_task is not None and not self._retry_task.done()):
            return
        self._retry_task = asyncio.create_task(self._retry_rejected(), name="registry-retry")

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
            "registry": {
                "store": self.store.description,
                "revision": self.applied_revision,
                "servers": [
                    {"key": s.key, "path": s.path, "tools": len(s.tools), "source": s.source}
                    for s in (snapshot.servers if snapshot else ())
                ],
                "problems": [
                    {"file": p.file, "field": p.path, "reason": p.reason}
                    for p in [*self.store.problems, *self.rejections]
                ],
                "applied": self._counters.applied,
                "rejected": self._counters.rejected,
                "last_applied_at": self._counters.last_applied_at,
            },
            "sessions": self.sessions.describe() if self.sessions is not None else None,
            "xds": {"versions": self.cache.snapshot.versions()},
            "nodes": present_nodes(self.ads.status()),
        }

    async def _start_admin(self, token: str | None) -> None:
        host = self.options.status_host
        # Reads are open only on loopback; elsewhere every /v1 request needs the token.
        authorizer = Authorizer(token, open_reads=is_loopback(host))
        app = create_admin_app(self.store, self.status, authorizer, self.sessions)
        self._status = await serve(app, host, self.options.status_port)
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
