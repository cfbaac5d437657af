"""An HTTP/1.1 backend that records each request exactly as it arrived on the wire.

aiohttp would merge repeated headers and reject malformed framing before a test could see it;
this one parses the bytes itself, keeps every header line in order (so a duplicated `Host` or
a `Transfer-Encoding` shows), and keeps reading the connection after each answer, so a second
request smuggled behind the first one on a pooled connection is recorded as a request of its own.
Every request is answered `200 {"ok":true}` with keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

_ANSWER = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
_MAX_HEAD = 64 << 10


@dataclass
class WireRequest:
    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def all(self, name: str) -> list[str]:
        """Every value of header `name` (any case), in arrival order."""
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class WireBackend:
    server: asyncio.Server | None = None
    port: int = 0
    requests: list[WireRequest] = field(default_factory=list)
    # Bytes that could not be parsed as a request (framing the backend could not follow).
    garbage: list[bytes] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> WireBackend:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0, limit=_MAX_HEAD)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.server is not None:
            await self.server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request = self._parse(head)
                if request is None:
                    return
                length = request.all("content-length")
                if request.all("transfer-encoding"):
                    body = await _read_chunked(reader)
                elif length:
                    body = await reader.readexactly(int(length[0]))
                else:
                    body = b""
                request.body = body
                self.requests.append(request)
                writer.write(_ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as error:
            self.garbage.append(repr(error).encode())
        finally:
            self._tasks.discard(task)
            writer.close()

    def _parse(self, head: bytes) -> WireRequest | None:
        lines = head[:-4].split(b"\r\n")
        try:
            text = [line.decode("utf-8") for line in lines]
        except UnicodeDecodeError:
            self.garbage.append(head)
            return None
        headers = []
        for line in text[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self.garbage.append(line.encode())
                return None
            headers.append((name, value.strip(" ")))
        return WireRequest(text[0], headers, b"")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)
