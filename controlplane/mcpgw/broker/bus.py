"""The message bus between the gateway's filters and its open SSE streams.

A `Stream` is one open `GET …/sse` response's inbox. The bus delivers every message published
to a channel to each stream subscribed to it, in publication order. Two buses:

- `MemoryBus`: in this process only. Right for one gateway replica (`mcpgw up` by default);
  with several replicas a POST landing on another replica would find no stream (404).
- `RedisBus` (`mcpgw.broker.redisbus`): Redis pub/sub, so a POST on any replica reaches the
  stream held by any other.
"""

from __future__ import annotations

import abc
import asyncio
from collections import deque

from mcpgw.log import get_logger

log = get_logger(__name__)


class BusUnavailable(Exception):
    """The bus cannot subscribe or publish right now (Redis down or unreachable)."""


class StreamClosed(Exception):
    """The stream was ended by the broker; `reason` is what the client is told."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Stream:
    """One SSE stream's inbox: the bus appends messages, the HTTP handler drains them.

    Bounded by `limit` undelivered messages. A client that reads slower than messages arrive
    would otherwise grow the broker's memory without end; instead its stream is ended with an
    error at once (queued messages are dropped: the session has lost a message anyway, and the
    client should reconnect rather than read a stream with a hole in it).
    """

    def __init__(self, channel: str, limit: int = 256) -> None:
        self.channel = channel
        self.limit = limit
        self._items: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self.error: str | None = None
        self.delivered = 0

    def deliver(self, message: bytes) -> None:
        if self.error is not None:
            return
        if len(self._items) >= self.limit:
            reason = f"stream closed: the client read too slowly ({self.limit} messages waiting)"
            self.fail(reason, discard=True)
            return
        self._items.append(message)
        self._wake.set()

    def fail(self, reason: str, *, discard: bool = False) -> None:
        """End the stream: after the messages already queued (unless `discard`), `StreamClosed`."""
        if self.error is not None:
            return
        self.error = reason
        if discard:
            self._items.clear()
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._items)

    async def get(self, timeout: float) -> bytes | None:
        """The next message; None when none arrived within `timeout` (time for a keep-alive)."""
        if not self._items and self.error is None:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return None
        if self._items:
            self.delivered += 1
            return self._items.popleft()
        assert self.error is not None
        raise StreamClosed(self.error)


class Bus(abc.ABC):
    """Where streams subscribe and filters' answers are published."""

    description: str = "bus"

    def __init__(self) -> None:
        self._channels: dict[str, set[Stream]] = {}

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect; a bus that cannot connect yet still starts and keeps trying."""

    async def close(self, reason: str = "session broker stopping") -> None:
        """End every open stream with `reason` and release connections."""
        self.fail_all(reason)

    def fail_all(self, reason: str) -> None:
        channels, self._channels = self._channels, {}
        for streams in channels.values():
            for stream in streams:
                stream.fail(reason)

    @property
    def stream_count(self) -> int:
        return sum(len(streams) for streams in self._channels.values())

    @abc.abstractmethod
    async def subscribe(self, stream: Stream) -> None:
        """Deliver the channel's messages to `stream` from now on; raises `BusUnavailable`.

        Returns only once the subscription is in effect, so a message published after the
        stream's `endpoint` event has been sent cannot be missed.
        """

    @abc.abstractmethod
    def unsubscribe(self, stream: Stream) -> None:
        """Stop delivering to `stream`. Synchronous, so it also runs in a cancelled handler."""

    @abc.abstractmethod
    async def publish(self, channel: str, message: bytes) -> int:
        """The number of receivers (0: no stream is connected); raises `BusUnavailable`."""


class MemoryBus(Bus):
    """A bus inside this process: for a single gateway replica."""

    description = "in-process"

    async def subscribe(self, stream: Stream) -> None:
        self._channels.setdefault(stream.channel, set()).add(stream)

    def unsubscribe(self, stream: Stream) -> None:
        streams = self._channels.get(stream.channel)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._channels[stream.channel]

    async def publish(self, channel: str, message: bytes) -> int:
        streams = self._channels.get(channel, ())
        for stream in streams:
            stream.deliver(message)
        return len(streams)
