"""Every Redis URL mcpgw takes (registry `-f`, session keys, the SSE bus), parsed in one place.

Forms:
- `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`, `rediss://…` (TLS), `unix:///path/redis.sock`:
  one Redis server, handed to redis-py's `from_url` unchanged.
- `redis+sentinel://[[USER]:PASSWORD@]HOST1:PORT1[,HOST2:PORT2…]/SERVICE[/DB]`: Redis Sentinel.
  The clients ask the sentinels where the primary of SERVICE is (redis-py's `Sentinel.master_for`)
  and ask again after a failover. The password is the primary's and its replicas' (as for
  `redis://`: from the URL, else $MCPGW_REDIS_PASSWORD); sentinels that require a password of
  their own get $MCPGW_REDIS_SENTINEL_PASSWORD.

With Sentinel, an acknowledged write must survive the loss of the primary: Redis replicates
asynchronously, so after each write the writer runs `WAIT 1 <timeout>` on the connection that
wrote, and a write no replica confirmed is reported as failed (`confirm_replicated`). Sentinel
promotes the most up-to-date replica, so a confirmed write is on the new primary.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:  # redis is imported when a client is made: the CLI parses URLs without it
    import redis.asyncio as aioredis
    from redis.asyncio.connection import ConnectionPool
    from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"
SCHEMES = ("redis://", "rediss://", "unix://", f"{SENTINEL_SCHEME}://")
PASSWORD_ENV = "MCPGW_REDIS_PASSWORD"
SENTINEL_PASSWORD_ENV = "MCPGW_REDIS_SENTINEL_PASSWORD"
USAGE = "redis://HOST:PORT[/DB] (or rediss://, unix://, redis+sentinel://HOST:PORT[,HOST:PORT…]/SERVICE[/DB])"
# How many replicas must hold a write before it is acknowledged (Sentinel only), and how long
# the writer waits for them. Below the admin clients' own timeouts, so they get a clear 503.
REPLICA_ACKS = 1
REPLICA_WAIT_S = 2.0


class RedisUrlError(ValueError):
    """The text is not a Redis URL mcpgw can use; the message says why."""


class NotReplicated(RuntimeError):
    """The primary took a write that no replica confirmed in time: it may be lost on failover."""


@dataclass(frozen=True)
class RedisTarget:
    url: str
    # Sentinel only: the sentinels' addresses, the service (master) name, the database.
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def description(self) -> str:
        """The URL without its password, for logs and the status API."""
        return redacted(self.url)

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        merged = dict(options)
        password = self.password or os.environ.get(PASSWORD_ENV) or None
        if password is not None:
            merged["password"] = password
        if self.username:
            merged["username"] = self.username
        return merged

    def _sentinel(self, options: dict[str, Any]) -> Sentinel:
        sentinel_options = {key: value for key, value in options.items() if key.startswith("socket_")}
        sentinel_options["protocol"] = 2
        sentinel_password = os.environ.get(SENTINEL_PASSWORD_ENV) or None
        if sentinel_password is not None:
            sentinel_options["password"] = sentinel_password
        connection = self._options(options)
        connection["db"] = self.db
        connection["connection_class"] = _sentinel_classes()[1]
        return _sentinel_classes()[0](list(self.sentinels), sentinel_kwargs=sentinel_options, **connection)

    def client(self, *, single_connection_client: bool = False, **options: Any) -> aioredis.Redis:
        """A client of the primary (through the sentinels when the URL names them).

        `options` are connection options (`decode_responses`, `socket_timeout`, `retry`, …).
        """
        import redis.asyncio as aioredis

        if not self.sentinel:
            return aioredis.from_url(
                self.url, single_connection_client=single_connection_client, **self._options(options)
            )
        client = _sentinel_redis()(
            connection_pool=self.pool(**options), single_connection_client=single_connection_client
        )
        client.auto_close_connection_pool = True  # the client owns its pool, as from_url's does
        return client

    def pool(self, **options: Any) -> ConnectionPool:
        """A connection pool of the primary, for callers that manage connections themselves."""
        from redis.asyncio.connection import ConnectionPool
        from redis.asyncio.sentinel import SentinelConnectionPool

        if not self.sentinel:
            return ConnectionPool.from_url(self.url, **self._options(options))
        sentinel = self._sentinel(options)
        return SentinelConnectionPool(self.service, sentinel, **sentinel.connection_kwargs)


@functools.cache
def _sentinel_classes() -> tuple[type[Sentinel], type[Any]]:
    """redis-py's Sentinel client and connection, with two corrections (redis-py 8.1, asyncio):

    - The primary is the one named by the sentinel with the newest configuration (the highest
      `config-epoch`), not by whichever sentinel answers first: right after a failover a sentinel
      that has not heard of it yet still names the old primary, and a restarted old primary
      answers as an (empty) primary until the sentinels turn it into a replica, so a client
      asking that sentinel would read and write an outdated, even empty, registry.
    - A connection that broke is re-pointed through the sentinels before it reconnects:
      `send_packed_command` reconnects through `connect_check_health`, which skips
      `SentinelManagedConnection.connect` and so reconnects to the old primary for good (a
      single-connection client then fails every write with "The previous master is now a slave";
      redis/redis-py#3874).
    """
    import asyncio

    from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    class NewestSentinel(Sentinel):
        async def discover_master(self, service_name: str) -> tuple[str, int]:
            answers = await asyncio.gather(
                *(sentinel.sentinel_masters() for sentinel in self.sentinels), return_exceptions=True
            )
            best: tuple[int, str, int] | None = None
            errors = []
            for sentinel, answer in zip(self.sentinels, answers, strict=True):
                if isinstance(answer, RedisConnectionError | RedisTimeoutError | OSError):
                    errors.append(f"{sentinel}: {answer!r}")
                    continue
                if isinstance(answer, BaseException):
                    raise answer
                state = answer.get(service_name)
                if state and self.check_master_state(state, service_name):
                    epoch = int(state.get("config-epoch", 0))
                    if best is None or epoch > best[0]:
                        best = (epoch, state["ip"], state["port"])
            if best is None:
                raise MasterNotFoundError(f"No master found for {service_name!r}: {', '.join(errors)}")
            return best[1], best[2]

    class Connection(SentinelManagedConnection):  # type: ignore[misc]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            if not self.is_connected:
                await self.connect()
            await super().send_packed_command(command, check_health)

    return NewestSentinel, Connection


@functools.cache
def _sentinel_redis() -> type[aioredis.Redis]:
    import redis.asyncio as aioredis

    class SentinelRedis(aioredis.Redis):
        """A primary's client that also closes the connections to the sentinels it asked."""

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            await super().aclose(close_connection_pool)
            manager = getattr(self.connection_pool, "sentinel_manager", None)
            if manager is not None:
                with contextlib.suppress(Exception):
                    await manager.aclose()

    return SentinelRedis


async def close_pool(pool: ConnectionPool) -> None:
    """Disconnect a pool from `RedisTarget.pool`, and its sentinel connections if any."""
    await pool.disconnect()
    manager = getattr(pool, "sentinel_manager", None)
    if manager is not None:
        with contextlib.suppress(Exception):
            await manager.aclose()


async def confirm_replicated(writer: aioredis.Redis, target: RedisTarget) -> None:
    """After a write on `writer`'s single connection: with Sentinel, wait for a replica to hold it.

    WAIT counts the replicas that acknowledged everything *this connection* wrote, so `writer`
    must be a single-connection client (`client(single_connection_client=True)`) that made the
    write. Raises `NotReplicated` when no replica confirmed within `REPLICA_WAIT_S`.
    """
    if not target.sentinel:
        return
    acked = int(await writer.execute_command("WAIT", REPLICA_ACKS, int(REPLICA_WAIT_S * 1000)))
    if acked < REPLICA_ACKS:
        raise NotReplicated(
            f"the Redis primary took the write but {acked} of the {REPLICA_ACKS} replica(s) required "
            f"confirmed it within {REPLICA_WAIT_S:g}s; it may be lost on failover (re-read before retrying)"
        )


def is_redis_url(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(SCHEMES)


def parse(url: str) -> RedisTarget:
    """The target of a Redis URL; raises `RedisUrlError` naming what is wrong."""
    if not is_redis_url(url):
        raise RedisUrlError(f"expected {USAGE}, got {redacted(url)!r}")
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return RedisTarget(url)
    rest = url[len(SENTINEL_SCHEME) + 3 :]
    rest, _, query = rest.partition("?")
    if query:
        raise RedisUrlError(f"{redacted(url)}: a redis+sentinel:// URL takes no query parameters")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisUrlError(
                f"{redacted(url)}: sentinel {item.strip()!r} is not HOST:PORT; expected "
                f"{SENTINEL_SCHEME}://HOST:PORT[,HOST:PORT…]/SERVICE[/DB]"
            )
        sentinels.append((host, int(port)))
    parts = [part for part in path.split("/")] if path else []
    if parts and parts[-1] == "":
        parts.pop()
    if not parts or not parts[0] or len(parts) > 2:
        raise RedisUrlError(
            f"{redacted(url)}: expected the primary's service name after the sentinels: "
            f"{SENTINEL_SCHEME}://HOST:PORT[,HOST:PORT…]/SERVICE[/DB]"
        )
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise RedisUrlError(f"{redacted(url)}: database {parts[1]!r} is not a number")
        db = int(parts[1])
    return RedisTarget(url, tuple(sentinels), unquote(parts[0]), db, username, password)


def redacted(url: str) -> str:
    """The URL without its password, for logs and the status API."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    if scheme == SENTINEL_SCHEME:
        return f"{scheme}://{userinfo.partition(':')[0]}:***@{hosts}{slash}{tail}"
    parts = urlsplit(url)
    try:
        hosts = f"{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        pass
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{hosts}"))
