"""This replica's session keys, kept in step with the store every replica shares.

`load` reads the keys at start (creating the first one when there is none: of replicas
starting together, exactly one creation wins and all use its key). `rotate` is a
compare-and-set on the stored document, retried when another replica got there first.
`watch` re-reads the store every `poll_interval` seconds, so a rotation made on another
replica reaches this one's Envoys within about that time, and drops keys whose `accept_until`
has passed (from what Envoy gets at once, and from the store on a best-effort basis).

Why polling rather than pub/sub: one GET of a small value (or one small file read) every half
second costs nothing, needs no extra connection, and cannot miss a change the way a dropped
subscription can.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mcpgw.log import get_logger
from mcpgw.sessions.keys import (
    DEFAULT_MAX_ENDED,
    DEFAULT_TTL_S,
    KeysInvalid,
    SessionKey,
    SessionSettings,
    from_document,
    iso,
    new_key,
    prune,
    rotate,
    to_document,
)
from mcpgw.sessions.store import KEY_ENV, KeyStore, KeyStoreUnavailable

log = get_logger(__name__)
KeysHandler = Callable[[SessionSettings], Awaitable[None]]
_ROTATE_ATTEMPTS = 5


class RotationRefused(RuntimeError):
    """The keys are pinned by configuration and cannot be rotated through the API."""


class RotationConflict(RuntimeError):
    """Other writers kept changing the keys while this rotation tried to land."""


class SessionKeys:
    def __init__(
        self,
        store: KeyStore,
        ttl_s: int = DEFAULT_TTL_S,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        max_ended: int = DEFAULT_MAX_ENDED,
    ) -> None:
        if ttl_s <= 0:
            raise KeysInvalid("session TTL must be a positive number of seconds")
        self.store = store
        self.ttl_s = ttl_s
        self.max_ended = max_ended
        self.poll_interval = poll_interval
        self._clock = clock
        # The keys in use: the stored ones minus any past their accept_until.
        self.keys: tuple[SessionKey, ...] = ()
        self._stored: str | None = None  # the stored document as last read
        self._handler: KeysHandler | None = None
        self._lock = asyncio.Lock()
        self._unavailable = False

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def settings(self) -> SessionSettings:
        return SessionSettings(self.keys, self.ttl_s * 1000, max_ended=self.max_ended)

    def describe(self) -> dict[str, Any]:
        """For the admin API and /status: ids and times, never a secret."""
        return {
            "store": self.store.description,
            "pinned": self.store.pinned,
            "ttl_seconds": self.ttl_s,
            "keys": [key.public(signing=index == 0) for index, key in enumerate(self.keys)],
        }

    async def load(self) -> SessionSettings:
        """The keys to start with; raises `KeysInvalid` or `KeyStoreUnavailable` when there are none."""
        async with self._lock:
            text = await self.store.read()
            if text is None:
                first = to_document((new_key(self._now_ms()),))
                text = first if await self.store.create(first) else await self.store.read()
                if text is None:
                    raise KeyStoreUnavailable(f"session keys in {self.store.description} vanished")
            try:
                self._adopt(text)
            except KeysInvalid as error:
                raise KeysInvalid(f"session keys in {self.store.description}: {error}") from None
        log.info("session_keys_loaded", store=self.store.description, ids=[k.id for k in self.keys])
        return self.settings

    def _adopt(self, text: str) -> bool:
        """Use the stored document `text`; True when the keys in use changed."""
        keys = prune(from_document(text), self._now_ms())
        self._stored = text
        changed = keys != self.keys
        self.keys = keys
        return changed

    async def rotate(self, grace_s: int) -> SessionSettings:
        """A new signing key for every replica; older keys stay accepted for `grace_s` seconds."""
        if self.store.pinned:
            raise RotationRefused(
                f"session keys are pinned by ${KEY_ENV}; rotate by changing it on every replica"
            )
        async with self._lock:
            for _ in range(_ROTATE_ATTEMPTS):
                text = await self.store.read()
                try:
                    # A vanished document (Redis flushed, file deleted): the keys in use keep
                    # their grace instead of ending every session now.
                    current = from_document(text) if text is not None else self.keys
                except KeysInvalid as error:
                    # A damaged document: rotating from the keys in use repairs it.
                    log.warning("session_keys_invalid", store=self.store.description, reason=str(error))
                    current = self.keys
                rotated = to_document(rotate(current, self._now_ms(), grace_s * 1000))
                if text is None:
                    stored = await self.store.create(rotated)
                else:
                    stored = await self.store.swap(text, rotated)
                if stored:
                    self._adopt(rotated)
                    break
            else:
                raise RotationConflict("the session keys kept changing during the rotation; try again")
        retired = self.keys[1:]
        log.info(
            "session_keys_rotated",
            store=self.store.description,
            signing=self.keys[0].id,
            accepted=[k.id for k in retired],
            grace_s=grace_s,
            accept_until=iso(min((k.accept_until_ms for k in retired), default=0)),
        )
        await self._notify()
        return self.settings

    async def watch(self, on_change: KeysHandler) -> None:
        """Call `on_change` whenever the keys in use change (any replica's rotation, expiry)."""
        self._handler = on_change
        if self.store.pinned:
            await asyncio.Event().wait()  # nothing can change; wait to be cancelled
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                if await self.refresh():
                    await self._notify()
            except Exception as error:
                # One bad round must not stop this replica from ever following rotations again.
                log.error("session_keys_watch_failed", store=self.store.description, error=repr(error))

    async def refresh(self) -> bool:
        """Re-read the store and drop expired keys; True when the keys in use changed."""
        async with self._lock:
            text = await self._read_quietly()
            if text is None and not self._unavailable and self._stored is not None:
                text = await self._restore(self._stored)
            changed = False
            if text is not None and text != self._stored:
                try:
                    changed = self._adopt(text)
                except KeysInvalid as error:
                    # Keep signing with the last good keys; say so once per bad document.
                    self._stored = text
                    log.error("session_keys_invalid", store=self.store.description, reason=str(error))
                    return False
                if changed:
                    ids = [k.id for k in self.keys]
                    log.info("session_keys_changed", store=self.store.description, ids=ids)
            now = self._now_ms()
            kept = prune(self.keys, now)
            if kept != self.keys:
                log.info(
                    "session_keys_expired",
                    store=self.store.description,
                    ids=[k.id for k in self.keys if k not in kept],
                )
                self.keys = kept
                changed = True
            if text is not None and text == self._stored:
                await self._prune_stored(text, now)
            return changed

    async def _restore(self, stored: str) -> str | None:
        """The store answers but lost the keys (Redis restarted without persistence, the file was
        deleted): write back the ones in use, so replicas keep verifying each other's sessions
        instead of the next one to start making new keys. Another replica's restore or new keys
        win (create is create-if-absent); those are adopted as usual."""
        try:
            created = await self.store.create(stored)
            text = stored if created else await self.store.read()
        except KeyStoreUnavailable:
            return None
        if created:
            log.error(
                "session_keys_restored",
                store=self.store.description,
                reason="the store answered without the session keys; wrote back the ones in use",
            )
        return text

    async def _read_quietly(self) -> str | None:
        """The stored document, or None while the store is unreachable (logged once per outage)."""
        try:
            text = await self.store.read()
        except KeyStoreUnavailable as error:
            if not self._unavailable:
                log.warning("session_keys_unavailable", store=self.store.description, error=str(error))
            self._unavailable = True
            return None
        if self._unavailable:
            log.info("session_keys_available", store=self.store.description)
            self._unavailable = False
        return text

    async def _prune_stored(self, text: str, now_ms: int) -> None:
        """Remove expired keys from the store too, so retired secrets do not linger there."""
        try:
            stored = from_document(text)
        except KeysInvalid:
            return
        kept = prune(stored, now_ms)
        if kept == stored:
            return
        pruned = to_document(kept)
        try:
            if await self.store.swap(text, pruned):
                self._stored = pruned
        except KeyStoreUnavailable as error:
            # Harmless: the keys are expired everywhere already; the next rotation drops them.
            log.debug("session_keys_prune_deferred", store=self.store.description, error=str(error))

    async def _notify(self) -> None:
        if self._handler is not None:
            await self._handler(self.settings)
