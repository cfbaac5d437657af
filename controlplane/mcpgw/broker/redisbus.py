"""The session bus on Redis pub/sub: a POST on any gateway replica reaches a stream held by any other.

Channel `mcpgw:sse:<channel>` per SSE session. Each broker holds ONE pub/sub connection, whatever
the number of streams: SUBSCRIBE when a channel's first stream opens, UNSUBSCRIBE when its last
one closes, and every message read from the connection is dispatched to that channel's streams.
Publishing uses a separate, ordinary connection (PUBLISH answers how many subscribers received
the message; a subscriber is a broker with a stream for the channel).

Failure policy: nothing is retried behind the client's back. When the pub/sub connection
breaks, every open stream is ended with an error event (its client reconnects and gets a new
session) and subscribing answers 503 until a new connection is up; the broker keeps trying to
reconnect every `reconnect_interval`. A Redis that stops answering without closing the socket
(a hung process, a network partition) is noticed by a PING every `ping_interval`: no reply for
`dead_after` seconds ends the connection the same way. Quietly resubscribing instead would hide
the messages published while the connection was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Coroutine
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from mcpgw import redisurl
from mcpgw.broker.bus import Bus, BusUnavailable, Stream
from mcpgw.log import get_logger

log = get_logger(__name__)

CHANNEL_PREFIX = "mcpgw:sse:"
_PONG = (b"PONG", "PONG", True)


class _Broken(Exception):
    """The pub/sub connection is no longer trustworthy."""


class RedisBus(Bus):
    def __init__(
        self,
        url: str,
        *,
        ping_interval: float = 0.5,
        dead_after: float = 2.5,
        timeout: float = 2.0,
        reconnect_interval: float = 1.0,
    ) -> None:
        super().__init__()
        self.url = url
        target = redisurl.parse(url)
        self.description = target.description
        self.ping_interval = ping_interval
        self.dead_after = dead_after
        # Bounds connecting, a subscription's confirmation and a publish: the filter waits
        # for the broker's answer (5 s by default) and must get a 503 before it gives up.
        self.timeout = timeout
        self.reconnect_interval = reconnect_interval
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "protocol": 2,
        }
        # One retry: a pooled connection that broke while idle (Redis restarted, or a Sentinel
        # failover moved the primary) is replaced instead of failing the first publish after
        # it. `publish` bounds the total.
        self._publisher = target.client(retry=Retry(NoBackoff(), 1), **options)
        self._pool = target.pool(retry=Retry(NoBackoff(), 0), **options)
        self._commands: asyncio.Queue[tuple[Any, ...]] | None = None
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}
        self._last_seen = 0.0
        self._up = False
        self._first_attempt = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def up(self) -> bool:
        return self._up

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="mcpgw-broker-redis")
        # Start ready when Redis is: wait for the first attempt (bounded by `timeout`).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_attempt.wait(), self.timeout * 2)

    async def close(self, reason: str = "session broker stopping") -> None:
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        await super().close(reason)
        with contextlib.suppress(RedisError, OSError):
            await self._publisher.aclose()
        with contextlib.suppress(RedisError, OSError):
            await redisurl.close_pool(self._pool)

    # -- streams --------------------------------------------------------------------------------

    async def subscribe(self, stream: Stream) -> None:
        if not self._up or self._commands is None:
            # Told to HTTP+SSE clients: no Redis address (the log has it, `sse_bus_*`).
            raise BusUnavailable("session bus (Redis) is unavailable")
        streams = self._channels.setdefault(stream.channel, set())
        streams.add(stream)
        if len(streams) == 1:
            confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._confirmations.setdefault(stream.channel, deque()).append(confirmed)
            self._commands.put_nowait(("SUBSCRIBE", CHANNEL_PREFIX + stream.channel))
        else:
            # Another stream of this channel is open, or its SUBSCRIBE is still on the way.
            pending = [future for future in self._confirmations.get(stream.channel, ()) if not future.done()]
            if not pending:
                return
            confirmed = pending[-1]
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), self.timeout)
        except BaseException as error:
            # Also when the client went away meanwhile (cancelled): leave nothing subscribed.
            self.unsubscribe(stream)
            if isinstance(error, TimeoutError):
                log.warning("sse_bus_slow", bus=self.description, timeout=self.timeout)
                raise BusUnavailable(
                    f"session bus (Redis) did not confirm a subscription within {self.timeout}s"
                ) from None
            raise

    def unsubscribe(self, stream: Stream) -> None:
        streams = self._channels.get(stream.channel)
        if streams is None or stream not in streams:
            return
        streams.discard(stream)
        if not streams:
            del self._channels[stream.channel]
            if self._commands is not None:
                self._commands.put_nowait(("UNSUBSCRIBE", CHANNEL_PREFIX + stream.channel))

    async def publish(self, channel: str, message: bytes) -> int:
        try:
            receivers = self._publisher.publish(CHANNEL_PREFIX + channel, message)
            return int(await asyncio.wait_for(receivers, self.timeout))
        except (RedisError, OSError, TimeoutError) as error:
            raise BusUnavailable(f"session bus (Redis {self.description}): {_describe(error)}") from error

    # -- the pub/sub connection -----------------------------------------------------------------

    async def _run(self) -> None:
        reported_down = False
        while not self._closing:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not reported_down:
                    log.error("sse_bus_unavailable", bus=self.description, error=_describe(error))
                    reported_down = True
            else:
                reported_down = False  # it was up, then lost (logged): report the next outage
            self._first_attempt.set()
            await asyncio.sleep(self.reconnect_interval)

    def _down(self, reason: str) -> None:
        """Refuse new streams, end the open ones, fail subscriptions still waiting for Redis."""
        self._up = False
        self._commands = None
        confirmations, self._confirmations = self._confirmations, {}
        for waiting in confirmations.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(BusUnavailable(reason))
                    future.exception()  # retrieved: an abandoned waiter must not log a warning
        self.fail_all(reason)

    async def _session(self) -> None:
        connection = self._pool.make_connection()
        try:
            # A TCP connect alone proves little (the kernel accepts for a hung Redis): a PING
            # round trip does.
            await asyncio.wait_for(self._handshake(connection), self.timeout)
            self._commands = asyncio.Queue()
            self._last_seen = asyncio.get_running_loop().time()
            self._up = True
            self._first_attempt.set()
            log.info("sse_bus_up", bus=self.description)
            await _first_failure(
                self._read(connection), self._write(connection, self._commands), self._watch()
            )
        except BaseException as error:
            cancelled = isinstance(error, asyncio.CancelledError)
            lost = self._up and not cancelled
            if lost:
                streams = self.stream_count
                log.error("sse_bus_lost", bus=self.description, error=_describe(error), streams=streams)
            # The reason ends every stream, told to its client: the bus's own words (`_Broken`)
            # pass, a connection error's (which may name Redis's address) is only logged.
            self._down(
                "session broker stopping"
                if cancelled
                else "session bus (Redis) connection lost"
                + (f": {_describe(error)}" if isinstance(error, _Broken) else "")
            )
            if not lost:
                raise  # cancelled, or could not connect: `_run` reports it and retries
        finally:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)

    @staticmethod
    async def _handshake(connection: AbstractConnection) -> None:
        await connection.connect()
        await connection.send_command("PING", check_health=False)
        reply = await connection.read_response(timeout=math.inf)
        if reply not in _PONG:
            raise _Broken(f"unexpected reply to PING: {reply!r}")

    async def _read(self, connection: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            reply = await connection.read_response(timeout=math.inf, disconnect_on_error=True)
            self._last_seen = loop.time()
            if reply in _PONG:
                continue  # PING outside subscribed mode (no channel subscribed right now)
            if not isinstance(reply, list) or not reply:
                raise _Broken(f"unexpected reply on the pub/sub connection: {reply!r}")
            kind = reply[0]
            if kind == b"message" and len(reply) == 3:
                channel = bytes(reply[1]).decode()[len(CHANNEL_PREFIX) :]
                for stream in tuple(self._channels.get(channel, ())):
                    stream.deliver(bytes(reply[2]))
            elif kind == b"subscribe":
                channel = bytes(reply[1]).decode()[len(CHANNEL_PREFIX) :]
                waiting = self._confirmations.get(channel)
                if waiting:
                    future = waiting.popleft()
                    if not future.done():
                        future.set_result(None)
                    if not waiting:
                        del self._confirmations[channel]
            elif kind not in (b"unsubscribe", b"pong"):
                raise _Broken(f"unexpected reply on the pub/sub connection: {reply!r}")

    async def _write(self, connection: AbstractConnection, commands: asyncio.Queue[tuple[Any, ...]]) -> None:
        # One writer keeps SUBSCRIBE/UNSUBSCRIBE in the order the streams came and went, so
        # Redis' final state for a channel is always the broker's.
        while True:
            command = await commands.get()
            await connection.send_command(*command, check_health=False)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_interval)
            silent = loop.time() - self._last_seen
            if silent > self.dead_after:
                raise _Broken(f"Redis did not answer a PING for {silent:.1f}s")
            if self._commands is not None:
                self._commands.put_nowait(("PING",))


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


async def _first_failure(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run forever-loops together until one fails; raise its error after stopping the others.

    Not `asyncio.TaskGroup`: on Python 3.11 a child's failure leaves the parent task marked as
    being cancelled, which would make a later `close()` wait forever.
    """
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        raise _Broken("the pub/sub connection loop ended")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
