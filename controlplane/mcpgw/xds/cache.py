"""Snapshot cache: the resources every Envoy should have, versioned by content.

The cache knows nothing about streams, nonces or ACKs; the ADS server (server.py) reads
snapshots from it and is told when they change. This mirrors go-control-plane's split so that
the delivery protocol (SotW today, Delta later) can change without touching how configuration
is produced.

Versions are content hashes, not counters: two control-plane replicas that translate the same
registry produce the same bytes and hence the same versions, so an Envoy that reconnects to
another replica sees no spurious change. Each resource is serialised once, when it enters a
snapshot; the bytes serve both the hash and the `Any` sent on the wire, so pushes to many
streams never re-serialise anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message

from mcpgw.log import get_logger
from mcpgw.xds.types import PUSH_ORDER

log = get_logger(__name__)

TYPE_PREFIX = "type.googleapis.com/"
VERSION_LENGTH = 16  # hex characters of sha256 kept; 64 bits is ample to tell versions apart


@dataclass(frozen=True, slots=True)
class Resource:
    """One named resource, serialised once.

    `message` is kept for inspection (status pages, tests); `packed` is what goes on the wire.
    """

    name: str
    message: Message
    hash: str
    packed: Any


@dataclass(frozen=True, slots=True)
class TypeResources:
    """All resources of one type plus the version derived from them.

    `digest` is the XOR of one 128-bit hash per (name, resource hash) pair: it does not depend
    on order, so two replicas with the same resources agree, and it can be updated per changed
    resource instead of re-hashing the whole type (10,000 servers, one edit: one update).
    """

    type_url: str
    version: str
    resources: Mapping[str, Resource]
    digest: int = 0

    def hashes(self) -> dict[str, str]:
        return {name: res.hash for name, res in self.resources.items()}


def _type_url_of(message: Message) -> str:
    return TYPE_PREFIX + message.DESCRIPTOR.full_name


def _seal(type_url: str, name: str, message: Message) -> Resource:
    if _type_url_of(message) != type_url:
        raise TypeError(f"resource {name!r} is a {message.DESCRIPTOR.full_name}, not {type_url}")
    # Deterministic serialisation orders map entries, so equal messages give equal bytes.
    data = message.SerializeToString(deterministic=True)
    packed = Any(type_url=type_url, value=data)
    return Resource(name=name, message=message, hash=hashlib.sha256(data).hexdigest(), packed=packed)


def content_hash(message: Message) -> str:
    """The hash a snapshot gives `message` (`Resource.hash`, the delta xDS resource version)."""
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


def _member(name: str, res_hash: str) -> int:
    # Length-prefix the name so ("ab", h) and ("a", "b"+h) cannot collide.
    return int.from_bytes(hashlib.sha256(f"{len(name)}:{name}:{res_hash};".encode()).digest()[:16], "big")


def _version(digest: int) -> str:
    return f"{digest:032x}"[:VERSION_LENGTH]


def type_version(hashes: Iterable[tuple[str, str]]) -> str:
    """The version of a set of (name, resource hash) pairs, independent of their order."""
    digest = 0
    for name, res_hash in hashes:
        digest ^= _member(name, res_hash)
    return _version(digest)


def _sealer(type_url: str, pool: TypeResources | None) -> Callable[[str, Message], Resource]:
    """Seal a message, reusing `pool`'s serialisation when it holds the very same object."""
    if pool is None:
        return lambda name, message: _seal(type_url, name, message)
    held = pool.resources

    def seal(name: str, message: Message) -> Resource:
        found = held.get(name)
        return found if found is not None and found.message is message else _seal(type_url, name, message)

    return seal


def _build_type(
    type_url: str,
    messages: Mapping[str, Message],
    previous: TypeResources | None,
    hint: Collection[str] | None = None,
    pool: TypeResources | None = None,
) -> TypeResources:
    seal = _sealer(type_url, pool)
    if previous is None:
        sealed = {name: seal(name, message) for name, message in messages.items()}
        digest = 0
        for name, res in sealed.items():
            digest ^= _member(name, res.hash)
        return TypeResources(type_url, _version(digest), MappingProxyType(sealed), digest)
    old = previous.resources
    # Same object as last time: reuse its bytes and hash instead of serialising again.
    # Snapshots treat their messages as immutable, so identity implies equal content.
    if hint is not None:
        changed = [
            n for n in hint if n in messages and ((o := old.get(n)) is None or o.message is not messages[n])
        ]
        removed = [n for n in hint if n not in messages and n in old]
    else:
        changed = [n for n, m in messages.items() if (o := old.get(n)) is None or o.message is not m]
        removed = [n for n in old if n not in messages] if len(old) + len(changed) != len(messages) else []
    if not changed and not removed:
        return previous
    sealed = old.copy()  # a C-level copy of the underlying dict, not a walk over the mapping
    digest = previous.digest
    for name in removed:
        digest ^= _member(name, sealed.pop(name).hash)
    for name in changed:
        resource = seal(name, messages[name])
        if name in sealed:
            digest ^= _member(name, sealed[name].hash)
        digest ^= _member(name, resource.hash)
        sealed[name] = resource
    if digest == previous.digest:
        return previous  # same content in new objects: keep the old ones so types compare by identity
    return TypeResources(type_url, _version(digest), MappingProxyType(sealed), digest)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable set of resources per type URL, with content-derived versions.

    Build with `Snapshot.build(...)`. Messages handed in must not be mutated afterwards.
    """

    types: Mapping[str, TypeResources] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        resources: Mapping[str, Mapping[str, Message]],
        previous: Snapshot | None = None,
        changed: Mapping[str, Collection[str]] | None = None,
        pool: Snapshot | None = None,
    ) -> Snapshot:
        """Seal plain messages (Cluster, Listener, …; not Any) keyed by type URL then name.

        With `previous`, messages that are the very same objects as there are not re-serialised.
        With `changed` (names per type known to differ from `previous`; a type it does not list
        is scanned), unchanged resources are not even looked at. With `pool` (another snapshot,
        e.g. the whole gateway's for a group's view), its serialisations of the same objects
        are reused too.
        """
        built = {
            type_url: _build_type(
                type_url,
                messages,
                previous.types.get(type_url) if previous else None,
                changed.get(type_url) if changed is not None and previous is not None else None,
                pool.types.get(type_url) if pool else None,
            )
            for type_url, messages in resources.items()
        }
        return cls(types=MappingProxyType(built))

    @property
    def resources(self) -> Mapping[str, Mapping[str, Message]]:
        return {url: {name: r.message for name, r in tr.resources.items()} for url, tr in self.types.items()}

    def get(self, type_url: str) -> TypeResources:
        """Resources of one type; a type the snapshot does not mention is empty, not missing."""
        found = self.types.get(type_url)
        return found if found is not None else _empty(type_url)

    def version(self, type_url: str) -> str:
        return self.get(type_url).version

    def versions(self) -> dict[str, str]:
        return {type_url: tr.version for type_url, tr in self.types.items()}

    def changed_types(self, other: Snapshot | None) -> list[str]:
        """Type URLs whose version differs from `other`, in push order."""
        urls = set(self.types) | set(other.types if other else ())
        changed = {u for u in urls if other is None or self.version(u) != other.version(u)}
        return ordered_types(changed)


_EMPTY: dict[str, TypeResources] = {}


def _empty(type_url: str) -> TypeResources:
    cached = _EMPTY.get(type_url)
    if cached is None:
        cached = TypeResources(type_url=type_url, version=type_version(()), resources=MappingProxyType({}))
        _EMPTY[type_url] = cached
    return cached


def ordered_types(type_urls: Iterable[str]) -> list[str]:
    """Known types in PUSH_ORDER, then any others alphabetically (deterministic)."""
    urls = set(type_urls)
    known = [u for u in PUSH_ORDER if u in urls]
    return known + sorted(urls - set(PUSH_ORDER))


class Watch:
    """A subscriber's flag that the cache changed; changes coalesce until `wait` returns.

    Safe to trigger from any thread: the event is set on the loop that created the watch.
    """

    def __init__(self, cache: SnapshotCache, node_id: str, callback: Callable[[], None] | None) -> None:
        self.node_id = node_id
        self._cache = cache
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._callback = callback

    def _notify(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._fire()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        self._event.set()
        if self._callback is not None:
            self._callback()

    async def wait(self) -> None:
        await self._event.wait()
        self._event.clear()

    def close(self) -> None:
        self._cache._remove_watch(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Views = Mapping[str | None, Snapshot]


class SnapshotCache:
    """Holds the current snapshot and notifies watchers when it changes.

    `snapshot` is the whole gateway's configuration. With gateway groups
    (`mcpgw.translate.groups`) each group also has its view, a subset of it: `snapshot_for`
    gives a node the view of its group (its `node.cluster`), the view keyed None to a group
    without one of its own, and the whole snapshot when there are no views.
    """

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self._views: Views | None = None
        self._last_resources: Mapping[str, Mapping[str, Message]] | None = None
        self._last_views: object = None
        self._watches: set[Watch] = set()
        self._lock = threading.Lock()  # set_snapshot may come from a registry-watcher thread

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def views(self) -> Views | None:
        return self._views

    def snapshot_for(self, node_id: str, group: str | None = None) -> Snapshot:
        del node_id  # what a node receives depends on its group only
        return _view_of(self._snapshot, self._views, group)

    def set_snapshot(self, snapshot: Snapshot, views: Views | None = None) -> list[str]:
        """Install `snapshot` (and the groups' `views`); returns the type URLs that changed for
        the whole snapshot or any view (empty: nothing notified)."""
        with self._lock:
            urls = set(snapshot.changed_types(self._snapshot))
            if views is not None or self._views is not None:
                for group in {None, *(views or {}), *(self._views or {})}:
                    new = _view_of(snapshot, views, group)
                    urls.update(new.changed_types(_view_of(self._snapshot, self._views, group)))
            if not urls:
                return []
            self._snapshot, self._views = snapshot, views
            watches = list(self._watches)
        changed = ordered_types(urls)
        log.info("snapshot_set", changed=[u.rsplit(".", 1)[-1] for u in changed], versions=_short(snapshot))
        for watch in watches:
            watch._notify()
        return changed

    def set_resources(
        self,
        resources: Mapping[str, Mapping[str, Message]],
        changed_since: tuple[Mapping[str, Mapping[str, Message]], Mapping[str, Collection[str]]]
        | None = None,
        views: Mapping[str | None, Mapping[str, Mapping[str, Message]]] | None = None,
        views_changed_since: tuple[object, Mapping[str | None, Mapping[str, Collection[str]]]] | None = None,
    ) -> list[str]:
        """Build a snapshot from plain messages, reusing the current one's serialisations.

        `changed_since` is `(base, names per type)`: what changed since the resources `base`.
        It is used only when `base` is exactly what this cache was last given, so a hint can
        never be applied to the wrong starting point. `views` are the groups' subsets of
        `resources`; their messages are the same objects, so nothing is serialised twice.
        `views_changed_since` is `(base views, names per type per group)`, used likewise only
        when the base is exactly the views this cache was last given.
        """
        hint = None
        if changed_since is not None and changed_since[0] is self._last_resources:
            hint = changed_since[1]
        snapshot = Snapshot.build(resources, previous=self._snapshot, changed=hint)
        built: dict[str | None, Snapshot] | None = None
        if views is not None:
            old = self._views or {}
            hints: Mapping[str | None, Mapping[str, Collection[str]]] = {}
            if views_changed_since is not None and views_changed_since[0] is self._last_views:
                hints = views_changed_since[1]
            built = {
                group: Snapshot.build(view, previous=old.get(group), changed=hints.get(group), pool=snapshot)
                for group, view in views.items()
            }
        changed = self.set_snapshot(snapshot, built)
        self._last_views = views
        self._last_resources = resources
        return changed

    def watch(self, node_id: str, callback: Callable[[], None] | None = None) -> Watch:
        """Register for change notifications; must be called from a running event loop."""
        watch = Watch(self, node_id, callback)
        with self._lock:
            self._watches.add(watch)
        return watch

    def _remove_watch(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def watch_count(self) -> int:
        return len(self._watches)


def _view_of(snapshot: Snapshot, views: Views | None, group: str | None) -> Snapshot:
    if views is None:
        return snapshot
    found = views.get(group)
    if found is None:
        found = views.get(None)
    # Views without a default give a group of their own nothing, never the whole snapshot.
    return found if found is not None else _NOTHING


_NOTHING = Snapshot()


def _short(snapshot: Snapshot) -> dict[str, str]:
    return {url.rsplit(".", 1)[-1]: version for url, version in snapshot.versions().items()}


def iter_resources(tr: TypeResources, names: Iterable[str] | None = None) -> Iterator[Resource]:
    """Resources of `tr` in name order, restricted to `names` when given (absent ones skipped)."""
    wanted = sorted(tr.resources) if names is None else sorted(n for n in names if n in tr.resources)
    return (tr.resources[n] for n in wanted)
