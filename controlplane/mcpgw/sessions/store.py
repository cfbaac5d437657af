"""Where session keys live, so that every replica of one gateway signs and verifies alike.

A backend stores one document (`keys.to_document`) and offers three operations: read it,
create it only if absent, and replace it only if it still equals what the caller read
(compare-and-set). That is all `SessionKeys` needs for two replicas starting together to agree
on the first key and for two concurrent rotations not to lose one another.

- `RedisKeyStore`: the value `{prefix}:session-keys` beside a Redis registry, on the registry
  store's own clients (SET NX to create, a compare-and-set script to swap; with Redis Sentinel
  each write is confirmed by a replica).
- `FileKeyStore`: a JSON file, 0600, written atomically (temporary file, then link or rename),
  swaps serialised by an advisory lock on a `.lock` file beside it.
- `PinnedKeyStore`: one fixed key from $MCPGW_SESSION_KEY; nothing is stored, rotation refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mcpgw.log import get_logger
from mcpgw.registry.store import StoreEvents
from mcpgw.sessions.keys import SessionKey, decode_secret, to_document

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from mcpgw.redisurl import RedisTarget
    from mcpgw.registry.store import RegistryStore

log = get_logger(__name__)
KEY_ENV = "MCPGW_SESSION_KEY"
KEYS_FILE_SUFFIX = "-session-keys.json"


class KeyStoreUnavailable(RuntimeError):
    """The keys cannot be read or written right now; nothing was changed."""


class KeyStore(ABC):
    pinned = False

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the keys live, for logs and the API (never a secret or a password)."""

    @abstractmethod
    async def read(self) -> str | None:
        """The stored document, or None when there is none yet."""

    @abstractmethod
    async def create(self, text: str) -> bool:
        """Store `text` only if nothing is stored yet; False when something already was."""

    @abstractmethod
    async def swap(self, expected: str, text: str) -> bool:
        """Replace the stored document with `text` only if it still equals `expected`."""

    async def close(self) -> None:
        return None


class FileKeyStore(KeyStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned_mode = False

    @property
    def description(self) -> str:
        return f"file {self.path}"

    async def read(self) -> str | None:
        try:
            with self.path.open(encoding="utf-8") as stream:
                self._check_mode(os.fstat(stream.fileno()).st_mode)
                return stream.read()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise KeyStoreUnavailable(f"cannot read session keys {self.path}: {error}") from error

    def _check_mode(self, mode: int) -> None:
        if mode & (stat.S_IRWXG | stat.S_IRWXO) and not self._warned_mode:
            self._warned_mode = True
            log.warning("session_keys_file_readable_by_others", path=str(self.path), mode=oct(mode & 0o777))

    def _temporary(self, text: str) -> str:
        """A new 0600 file beside the keys file holding `text`, flushed to disk; returns its path."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory = self.path.parent
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return temporary

    async def create(self, text: str) -> bool:
        try:
            temporary = self._temporary(text)
            try:
                # link() fails when the name exists: of two processes creating at once, one wins
                # and the other reads the winner's keys. A rename would let the later one win.
                os.link(temporary, self.path)
            except FileExistsError:
                return False
            finally:
                Path(temporary).unlink(missing_ok=True)
        except OSError as error:
            raise KeyStoreUnavailable(
                f"cannot write session keys {self.path}: {error} "
                f"(keep them elsewhere with --session-keys FILE, or pin one with ${KEY_ENV})"
            ) from error
        log.info("session_keys_file_created", path=str(self.path))
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.path.with_name(self.path.name + ".lock")
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)  # closing releases the lock

    async def swap(self, expected: str, text: str) -> bool:
        try:
            with self._locked():
                if await self.read() != expected:
                    return False
                temporary = self._temporary(text)
                try:
                    os.replace(temporary, self.path)
                except BaseException:
                    Path(temporary).unlink(missing_ok=True)
                    raise
        except OSError as error:
            raise KeyStoreUnavailable(f"cannot write session keys {self.path}: {error}") from error
        return True


# Replace the value only if it still equals what the caller read: one command, so that `WAIT`
# (Sentinel) can follow it on the same connection.
_SWAP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class RedisKeyStore(KeyStore):
    """One Redis value, on clients someone else owns (the registry store's).

    Writes go through `writer`, a single-connection client, so that with Redis Sentinel each
    is confirmed by a replica (`redisurl.confirm_replicated`) before it counts as done.
    """

    def __init__(
        self, client: aioredis.Redis, key: str, where: str, *, writer: aioredis.Redis | None = None,
        target: RedisTarget | None = None, events: StoreEvents | None = None,
    ) -> None:  # fmt: skip
        # Counts this store's Redis failures (the registry store's observer: `mcpgw.metrics`).
        self._events = events or StoreEvents()
        self._redis = client
        self._writer = writer or client
        self._target = target
        self.key = key
        self._where = where

    @property
    def description(self) -> str:
        return f"{self._where} ({self.key})"

    def _unavailable(self, error: Exception) -> KeyStoreUnavailable:
        self._events.redis_error("session_keys")
        return KeyStoreUnavailable(f"session keys in {self.description} are unavailable: {error}")

    async def _replicated(self) -> None:
        from mcpgw.redisurl import NotReplicated, confirm_replicated

        if self._target is not None:
            try:
                await confirm_replicated(self._writer, self._target)
            except NotReplicated as error:
                raise self._unavailable(error) from error

    async def read(self) -> str | None:
        from redis.exceptions import RedisError

        try:
            value = await self._redis.get(self.key)
        except RedisError as error:
            raise self._unavailable(error) from error
        return value.decode() if isinstance(value, bytes) else value

    async def create(self, text: str) -> bool:
        from redis.exceptions import RedisError

        try:
            created = bool(await self._writer.set(self.key, text, nx=True))
            if created:
                await self._replicated()
            return created
        except RedisError as error:
            raise self._unavailable(error) from error

    async def swap(self, expected: str, text: str) -> bool:
        from redis.exceptions import RedisError

        try:
            if not await self._writer.eval(_SWAP, 1, self.key, expected, text):
                return False
            await self._replicated()
        except RedisError as error:
            raise self._unavailable(error) from error
        return True


def pinned_key(secret: bytes) -> SessionKey:
    """The key of $MCPGW_SESSION_KEY; its id is derived from the secret, so replicas agree on it."""
    digest = hashlib.sha256(b"mcpgw session key id\0" + secret).hexdigest()
    return SessionKey(f"pinned-{digest[:8]}", secret, 0, 0)


class PinnedKeyStore(KeyStore):
    pinned = True

    def __init__(self, secret: bytes) -> None:
        self._document = to_document((pinned_key(secret),))

    @property
    def description(self) -> str:
        return f"${KEY_ENV} (pinned)"

    async def read(self) -> str | None:
        return self._document

    async def create(self, text: str) -> bool:
        return False

    async def swap(self, expected: str, text: str) -> bool:
        raise AssertionError("pinned keys are never swapped")  # SessionKeys refuses first


def default_keys_file(registry_dir: Path) -> Path:
    """`<parent>/.mcpgw/<registry name>-session-keys.json`: beside the registry, never inside it.

    Outside, because everything inside a registry directory is read as registry documents (and
    a registry is often a ConfigMap or a Git checkout, the wrong home for secrets). Named after
    the registry, so two gateways with registries in one directory do not share keys.
    """
    absolute = registry_dir.resolve()
    return absolute.parent / ".mcpgw" / f"{absolute.name}{KEYS_FILE_SUFFIX}"


def open_key_store(
    registry: RegistryStore,
    registry_spec: Path | str,
    keys_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> KeyStore:
    """$MCPGW_SESSION_KEY, else `keys_file`, else beside the registry: in its Redis, or a file.

    Raises `KeysInvalid` for a malformed $MCPGW_SESSION_KEY (the message omits the value).
    """
    environ = os.environ if environ is None else environ
    pinned = environ.get(KEY_ENV, "").strip()
    if pinned:
        return PinnedKeyStore(decode_secret(pinned, f"${KEY_ENV}"))
    if keys_file is not None:
        return FileKeyStore(keys_file)
    from mcpgw.registry.redisstore import RedisStore, redacted

    if isinstance(registry, RedisStore):
        # The registry store's client: one connection pool per replica, and the keys share the
        # registry's prefix, so two gateways on one Redis (different prefixes) keep apart.
        return RedisKeyStore(
            registry._redis,
            f"{registry.prefix}:session-keys",
            redacted(registry.url),
            writer=registry._writer,
            target=registry.target,
            events=registry.events,
        )
    return FileKeyStore(default_keys_file(Path(registry_spec)))
