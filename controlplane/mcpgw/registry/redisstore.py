"""A registry shared by several control-plane replicas, kept in Redis.

Layout (prefix `mcpgw` by default):
- `{prefix}:servers`  hash: `namespace/name` → the server document as JSON, and
  `consumers/<namespace or *>/name` → a `kind: Consumer` document (one hash: one write path)
- `{prefix}:events`   pub/sub channel: `{"key": …, "etag": …}` after every write
- `{prefix}:registry` a marker set once the registry exists: an empty hash *with* it is a
  registry whose servers were all deleted; *without* it while this replica serves servers, Redis
  lost its data (restarted without persistence, flushed, failed over to an empty replica)

Every replica keeps the whole registry in memory and applies other replicas' writes from the
channel, so a write on any replica reaches the Envoys of all of them. Writes are compare-and-set
(WATCH/MULTI): a write based on a stale view fails with `Conflict` instead of overwriting. A
periodic full resync repairs anything a dropped pub/sub connection missed. When Redis comes back
without its data, the replicas write back the registry they serve (only what is missing,
atomically with the marker) instead of serving an empty one: nothing acknowledged is lost while
one replica still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from mcpgw import nesting, redisurl
from mcpgw.log import get_logger
from mcpgw.redisurl import NotReplicated, redacted
from mcpgw.registry.reader import Invalid, Problem
from mcpgw.registry.store import (
    Conflict,
    Entry,
    RegistryStore,
    StoreUnavailable,
    etag_of,
    parse_document,
    registry_problems,
    snapshot_of,
)

log = get_logger(__name__)


__all__ = ["RedisStore", "redacted"]

# Compare-and-set of one hash field in one command: replace (or delete, when ARGV[3] is "0") the
# field only if it still holds exactly what the writer read (ARGV[2]; absent when it is "0"),
# then announce the change. One command, so that `WAIT` on the same connection can follow it.
# KEYS[1] hash, KEYS[2] channel; ARGV: field, expected-present, expected, new-present, new, event.
_COMPARE_AND_SET = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '0' then
  if current then return 0 end
elseif current ~= ARGV[3] then
  return 0
end
if ARGV[4] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
end
redis.call('PUBLISH', KEYS[2], ARGV[6])
return 1
"""


class RedisStore(RegistryStore):
    def __init__(self, url: str, prefix: str = "mcpgw", resync_interval: float = 30.0) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.resync_interval = resync_interval
        self.target = redisurl.parse(url)
        options: dict[str, Any] = {"decode_responses": True, "socket_timeout": 5, "socket_connect_timeout": 2}
        self._redis = self.target.client(**options)
        # Writes go through one connection of their own: `WAIT` (Sentinel) counts the replicas
        # that hold what *its* connection wrote. Session keys write through it too.
        self._writer = self.target.client(single_connection_client=True, **options)
        self._hash = f"{prefix}:servers"
        self._channel = f"{prefix}:events"
        self._marker = f"{prefix}:registry"
        # The watcher lost Redis and has not subscribed again yet (for the reconnect count).
        self._lost = False

    @property
    def description(self) -> str:
        return f"{redacted(self.url)} ({self._hash})"

    async def close(self) -> None:
        await self._writer.aclose()
        await self._redis.aclose()

    # -- reading ------------------------------------------------------------------------------

    def _parse(self, key: str, text: str) -> tuple[Entry | None, list[Problem]]:
        label = f"{self.description}: {key}"
        try:
            document = nesting.loads(text)
            return Entry(parse_document(document, label), document), []
        except ValueError as error:
            return None, [Problem(label, "", f"stored document is not JSON: {error}")]
        except Invalid as error:
            return None, error.problems

    async def load(self) -> bool:
        try:
            try:
                stored = await self._read_all()
            except RedisConnectionError:
                # A pooled connection from before a Redis restart fails once; a new one may not.
                stored = await self._read_all()
        except RedisError as error:
            self.events.redis_error("registry")
            self.problems = [Problem(self.description, "", f"cannot read the registry: {error}")]
            log.error("registry_unavailable", store=self.description, error=str(error))
            return False
        entries: dict[str, Entry] = {}
        problems: list[Problem] = []
        for key, text in sorted(stored.items()):
            entry, entry_problems = self._parse(key, text)
            problems += entry_problems
            if entry is not None:
                entries[entry.server.key] = entry
        problems += registry_problems(entries)
        return self._adopt(entries, problems)

    async def _read_all(self) -> dict[str, str]:
        stored: dict[str, str] = await self._redis.hgetall(self._hash)
        if not await self._redis.exists(self._marker):
            stored = await self._mark(stored)
        return stored

    async def _mark(self, stored: dict[str, str]) -> dict[str, str]:
        """Set the marker; if this replica serves servers Redis no longer has, write them back first.

        A fresh registry (this replica serves nothing yet) only gets the marker. Otherwise Redis
        lost its data under us: serving what it holds now would empty every Envoy. HSETNX adds
        only what is missing (a write since the loss wins), in one transaction with the marker,
        so another replica never reads half a restore.
        """
        missing = {key: entry for key, entry in self._entries.items() if key not in stored}
        for attempt in (1, 2):
            try:
                async with self._writer.pipeline(transaction=True) as transaction:
                    for key, entry in missing.items():
                        transaction.hsetnx(self._hash, key, json.dumps(entry.document, sort_keys=True))
                    transaction.set(self._marker, "1")
                    if missing:
                        transaction.publish(self._channel, json.dumps({"key": next(iter(missing))}))
                    await transaction.execute()
                break
            except RedisConnectionError:
                # The writer's one connection died with the old Redis; the next attempt reconnects.
                if attempt == 2:
                    raise
        if not missing:
            return stored
        self.events.redis_error("registry")
        log.error(
            "registry_restored",
            store=self.description,
            servers=len(missing),
            reason="Redis lost the registry (restarted without persistence, flushed, or failed over "
            "to an empty replica); this replica wrote back the servers it serves",
        )
        restored: dict[str, str] = await self._redis.hgetall(self._hash)
        return restored

    def _adopt(self, entries: dict[str, Entry], problems: list[Problem]) -> bool:
        if problems:
            if problems != self.problems:  # counted once per broken state, not per re-read
                self.events.invalid("registry")
            self.problems = problems
            for problem in problems:
                log.error(
                    "registry_invalid",
                    file=problem.file,
                    field=problem.path or "<document>",
                    reason=problem.reason,
                )
            return False
        snapshot = snapshot_of(entries)
        changed = self.snapshot is None or snapshot.revision != self.snapshot.revision
        self._publish(entries, snapshot)
        if changed:
            log.info(
                "registry_loaded", store=self.description, servers=len(entries), revision=snapshot.revision
            )
        return changed

    async def _apply_remote(self, key: str) -> bool:
        """Another replica wrote `key`: re-read just that document."""
        text = await self._redis.hget(self._hash, key)
        entries = dict(self._entries)
        problems: list[Problem] = []
        if text is None:
            entries.pop(key, None)
        else:
            entry, problems = self._parse(key, text)
            if entry is not None:
                if key in entries and entries[key].etag == entry.etag:
                    return False  # our own write, already applied
                entries[key] = entry
        problems += registry_problems(entries)
        return self._adopt(entries, problems)

    # -- writing ------------------------------------------------------------------------------

    async def _refresh(self, key: str) -> None:
        # A write found `key` changed in Redis: another replica wrote it while this one's
        # watcher was reconnecting (a Redis restart or failover), or an earlier write of ours
        # landed although its answer was lost. Without this the replica would refuse every
        # write of that server (Conflict → 412) until the watcher resynced.
        try:
            self._refreshed |= await self._apply_remote(key)
        except RedisError as error:
            self.events.redis_error("registry")
            raise StoreUnavailable(f"registry store {self.description} is unavailable: {error}") from error

    async def _persist_put(self, entry: Entry, previous: Entry | None) -> None:
        await self._compare_and_set(entry.server.key, json.dumps(entry.document, sort_keys=True), previous)

    async def _persist_delete(self, key: str, previous: Entry) -> None:
        await self._compare_and_set(key, None, previous)

    async def _compare_and_set(self, key: str, text: str | None, previous: Entry | None) -> None:
        expected = previous.etag if previous else None
        try:
            try:
                stored = await self._writer.hget(self._hash, key)
            except RedisConnectionError:
                # The writer's connection from before a Redis restart fails once; a read is safe
                # to repeat (the compare-and-set below is not, and is never repeated).
                stored = await self._writer.hget(self._hash, key)
            current = etag_of(json.loads(stored)) if stored is not None else None
            if current != expected:
                raise Conflict(key, current)
            swapped = await self._writer.eval(
                _COMPARE_AND_SET,
                2,
                self._hash,
                self._channel,
                key,
                "0" if stored is None else "1",
                stored or "",
                "0" if text is None else "1",
                text or "",
                json.dumps({"key": key}),
            )
            if not swapped:
                # Someone else wrote between our read and our write: the caller must re-read.
                raise Conflict(key, None)
            await redisurl.confirm_replicated(self._writer, self.target)
        except NotReplicated as error:
            raise StoreUnavailable(f"registry store {self.description}: {error}") from error
        except RedisError as error:
            self.events.redis_error("registry")
            raise StoreUnavailable(f"registry store {self.description} is unavailable: {error}") from error

    # -- watching -----------------------------------------------------------------------------

    async def _watch_changes(self) -> None:
        """Follow other replicas' writes; resubscribe and resync after any Redis failure."""
        backoff = 0.2
        while True:
            try:
                await self._follow()
            except (RedisError, OSError) as error:
                self.events.redis_error("registry")
                self._lost = True
                log.warning("registry_watch_lost", store=self.description, error=str(error), retry_in=backoff)
                await asyncio.sleep(backoff)
                # At most a second apart: until it follows the channel again, this replica's
                # Envoys miss the other replicas' writes (a failed attempt is one TCP connect).
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.2

    async def _follow(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            if self._lost:
                self._lost = False
                self.events.redis_reconnected("registry")
            # Writes made while we were not subscribed are picked up by a full resync.
            if await self._locked(self.load):
                await self._emit()
            resync_at = asyncio.get_running_loop().time() + self.resync_interval
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    key = _event_key(message.get("data"))
                    if key is None:
                        # Anyone with access to Redis can publish here: skip what is not ours.
                        log.warning("registry_event_ignored", store=self.description, channel=self._channel)
                    elif await self._locked(functools.partial(self._apply_remote, key)):
                        await self._emit()
                if asyncio.get_running_loop().time() >= resync_at:
                    resync_at = asyncio.get_running_loop().time() + self.resync_interval
                    if await self._locked(self.load):
                        await self._emit()
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _locked(self, action: Any) -> bool:
        async with self._write_lock:
            return bool(await action())


def _event_key(data: Any) -> str | None:
    """The server key of a registry event (`{"key": "namespace/name"}`), None if malformed."""
    try:
        event = json.loads(data)
    except (TypeError, ValueError):
        return None
    key = event.get("key") if isinstance(event, dict) else None
    return key if isinstance(key, str) and key else None
