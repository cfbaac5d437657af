"""Registry stores: where server documents live, and the rules every write must pass.

A store holds the raw documents and the validated snapshot built from them. Reads come from
memory; a write is validated against the whole registry (the document itself, then cross-server
rules such as composed tool sets) before it is persisted, so a rejected write never replaces a
working registry. `etag` is the document's fingerprint, for optimistic concurrency: a write with
a stale `If-Match` is refused with `Conflict` instead of silently overwriting someone's edit.

Backends: `FileStore` (a directory of YAML, the default) and `RedisStore` (shared by replicas).
"""

from __future__ import annotations

import asyncio
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcpgw.log import get_logger
from mcpgw.registry.authmodel import Consumer
from mcpgw.registry.consumers import check_consumers, is_consumer, parse_consumer, split
from mcpgw.registry.model import McpServer, RegistrySnapshot, fingerprint
from mcpgw.registry.reader import Invalid, Problem
from mcpgw.registry.validate import KIND as SERVER_KIND
from mcpgw.registry.validate import check_includes, parse_server

log = get_logger(__name__)
SnapshotHandler = Callable[[RegistrySnapshot], Awaitable[None]]


class Conflict(Exception):
    """The stored document changed since the caller read it (its etag no longer matches)."""

    def __init__(self, key: str, current: str | None) -> None:
        super().__init__(f"{key} was changed by someone else (current etag {current})")
        self.key = key
        self.current = current


class NotFound(LookupError):
    pass


class StoreUnavailable(RuntimeError):
    """The backing store cannot be reached; nothing was written."""


class ApplyFailed(RuntimeError):
    """The candidate registry could not be translated for Envoy (a control-plane bug, logged
    with its traceback); nothing was written and the gateway keeps serving what it has."""


class StoreEvents:
    """What a store reports to its observer (the control plane's metrics, `mcpgw.metrics`).

    Each method does nothing here; a store calls them where the event happens.
    """

    def invalid(self, source: str) -> None:
        """A registry change was refused: `write` (through the store) or `registry` (as stored)."""

    def redis_error(self, component: str) -> None:
        """A Redis operation of `component` (registry, session_keys) failed."""

    def redis_reconnected(self, component: str) -> None:
        """`component` follows Redis again after losing it."""


@dataclass(frozen=True)
class Entry:
    # A document of either kind; both have `key`, `source` and `fingerprint`, and their keys
    # never collide (`namespace/name` against `consumers/scope/name`).
    server: McpServer | Consumer
    document: dict[str, Any]

    @property
    def etag(self) -> str:
        return self.server.fingerprint


def etag_of(document: dict[str, Any]) -> str:
    return fingerprint(document)


def parse_document(document: Any, file: str) -> McpServer | Consumer:
    """An `McpServer` or a `Consumer`, by its `kind`; raises `Invalid`."""
    return parse_consumer(document, file) if is_consumer(document) else parse_server(document, file)


def registry_problems(entries: dict[str, Entry]) -> list[Problem]:
    """The rules that span documents: composed tool sets, and a key hash owned by one consumer."""
    servers, consumers = split(entries[key].server for key in sorted(entries))
    return check_includes(servers) + check_consumers(consumers)


def snapshot_of(entries: dict[str, Entry]) -> RegistrySnapshot:
    servers, consumers = split(entries[key].server for key in sorted(entries))
    return RegistrySnapshot(servers=tuple(servers), consumers=tuple(consumers))


class RegistryStore(ABC):
    """The shared half of every store: in-memory state, write validation, change notification."""

    def __init__(self) -> None:
        self.snapshot: RegistrySnapshot | None = None
        # Problems that keep the newest on-disk or in-Redis state from being served.
        self.problems: list[Problem] = []
        self._entries: dict[str, Entry] = {}
        self._handler: SnapshotHandler | None = None
        self._write_lock = asyncio.Lock()
        # A write's `_refresh` changed the snapshot: emit it once the write lock is released.
        self._refreshed = False
        # Set by the control plane: checks that a candidate registry can really be served
        # (credentials readable, generated Envoy config valid, the translation itself succeeds)
        # before a write is persisted; raises `Invalid` or `ApplyFailed`.
        self.precheck: Callable[[RegistrySnapshot, str], Awaitable[None]] | None = None
        # Set by the control plane: counts refused changes and Redis trouble.
        self.events = StoreEvents()

    # -- reading -------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """The server documents (consumers: `consumer_entries`)."""
        return [e for key in sorted(self._entries) if isinstance((e := self._entries[key]).server, McpServer)]

    def consumer_entries(self) -> list[Entry]:
        return [e for key in sorted(self._entries) if isinstance((e := self._entries[key]).server, Consumer)]

    def entry(self, key: str) -> Entry:
        found = self._entries.get(key)
        if found is None:
            what = "consumer" if key.startswith("consumers/") else "MCP server"
            raise NotFound(f"no {what} {key!r}")
        return found

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the registry lives, for logs and the status API (never credentials)."""

    # -- writing -------------------------------------------------------------------------

    async def put(
        self,
        document: dict[str, Any],
        *,
        if_match: str | None = None,
        create: bool = False,
        kind: str = SERVER_KIND,
    ) -> Entry:
        """Create or replace one document of `kind` (a server unless told); raises Invalid,
        Conflict or NotFound."""
        label = f"{self.description}: {_key_of(document)}"
        parsed: McpServer | Consumer = (
            parse_consumer(document, label) if kind == "Consumer" else parse_server(document, label)
        )
        try:
            async with self._write_lock:
                for attempt in range(2):
                    current = self._entries.get(parsed.key)
                    if create and current is not None:
                        raise Conflict(parsed.key, current.etag)
                    if if_match is not None and (current is None or current.etag != if_match):
                        raise Conflict(parsed.key, current.etag if current else None)
                    server = dataclasses.replace(parsed, source=self._source_for(parsed.key, current))
                    entries = {**self._entries, server.key: Entry(server, document)}
                    snapshot = await self._validated(entries, server.key)
                    try:
                        await self._persist_put(entries[server.key], current)
                    except Conflict:
                        # Stored is not what this replica knows (a write it has not heard of
                        # yet). Learn it; a write without a precondition then goes ahead.
                        await self._refresh(server.key)
                        if attempt or if_match is not None or create:
                            raise
                        continue
                    self._publish(*self._after_persist(entries, snapshot))
                    break
        finally:
            await self._emit_refreshed()
        what: dict[str, Any] = (
            {"server": server.key, "tools": len(server.tools)}
            if isinstance(server, McpServer)
            else {"consumer": server.key, "keys": len(server.api_keys)}
        )
        log.info("registry_write", op="put", etag=server.fingerprint, **what)
        await self._emit()
        return entries[server.key]

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        try:
            async with self._write_lock:
                for attempt in range(2):
                    current = self.entry(key)
                    if if_match is not None and current.etag != if_match:
                        raise Conflict(key, current.etag)
                    entries = {k: v for k, v in self._entries.items() if k != key}
                    snapshot = await self._validated(entries, key)
                    try:
                        await self._persist_delete(key, current)
                    except Conflict:
                        await self._refresh(key)  # as in `put`
                        if attempt or if_match is not None:
                            raise
                        continue
                    self._publish(*self._after_persist(entries, snapshot))
                    break
        finally:
            await self._emit_refreshed()
        log.info("registry_write", op="delete", server=key)
        await self._emit()

    async def _refresh(self, key: str) -> None:
        """Re-read `key` from the backing store after a write found it changed (under the write
        lock); set `_refreshed` when that changed the snapshot. Stores shared with other
        writers override it."""
        return None

    async def _emit_refreshed(self) -> None:
        if self._refreshed:
            self._refreshed = False
            await self._emit()

    async def _validated(self, entries: dict[str, Entry], changed: str) -> RegistrySnapshot:
        problems = registry_problems(entries)
        if problems:
            raise Invalid(problems)
        snapshot = snapshot_of(entries)
        if self.precheck is not None:
            await self.precheck(snapshot, changed)
        return snapshot

    def _after_persist(
        self, entries: dict[str, Entry], snapshot: RegistrySnapshot
    ) -> tuple[dict[str, Entry], RegistrySnapshot]:
        """Hook for stores whose persistence renames where servers come from."""
        return entries, snapshot

    def _publish(self, entries: dict[str, Entry], snapshot: RegistrySnapshot) -> None:
        self._entries = entries
        self.snapshot = snapshot
        self.problems = []

    async def _emit(self) -> None:
        if self._handler is not None and self.snapshot is not None:
            await self._handler(self.snapshot)

    def _source_for(self, key: str, current: Entry | None) -> str:
        """Where a written server is said to come from, as `load` would name it."""
        return current.server.source if current else f"{self.description}: {key}"

    @abstractmethod
    async def _persist_put(self, entry: Entry, previous: Entry | None) -> None: ...

    @abstractmethod
    async def _persist_delete(self, key: str, previous: Entry) -> None: ...

    # -- lifecycle -----------------------------------------------------------------------

    @abstractmethod
    async def load(self) -> bool:
        """Read the whole registry; True when a new valid snapshot replaced the old one."""

    async def watch(self, on_snapshot: SnapshotHandler) -> None:
        """Call `on_snapshot` for each new valid snapshot (writes and outside changes) until cancelled."""
        self._handler = on_snapshot
        await self._watch_changes()

    @abstractmethod
    async def _watch_changes(self) -> None: ...

    async def close(self) -> None:
        return None


def _key_of(document: Any) -> str:
    if is_consumer(document):
        namespace = document.get("namespace")
        return f"consumers/{namespace if isinstance(namespace, str) else '*'}/{document.get('name', '?')}"
    if isinstance(document, dict):
        return f"{document.get('namespace', 'default')}/{document.get('name', '?')}"
    return "?"
