"""An HTTP/1.1 backend that records each request exactly as it arrived on the wire.

aiohttp would merge repeated headers and reject malformed framing before a test could see it;
this one parses the bytes itself, keeps every header line in order (so a duplicated `Host` or
a `Transfer-Encoding` shows), and keeps reading the connection after each answer, so a second
request smuggled behind the first one on a pooled connection is recorded as a request of its own.
Every request is answered `200 {"ok":true}` with keep-alive.

With `tls`, each accepted connection first completes a TLS handshake (`StreamWriter.start_tls`):
the names clients send in SNI, the client certificates they present and the handshakes that
failed are recorded too, so a test can tell "refused during TLS" from "never connected".
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from typing import Any

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
    # A server-side context: every connection is TLS (None: plain HTTP).
    tls: ssl.SSLContext | None = None
    accepted: int = 0
    server_names: list[str | None] = field(default_factory=list)
    # The client certificate of each completed handshake (None: the client sent none).
    client_certificates: list[dict[str, Any] | None] = field(default_factory=list)
    handshake_failures: list[str] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> WireBackend:
        if self.tls is not None:
            self.tls.sni_callback = self._sni
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0, limit=_MAX_HEAD)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    def _sni(self, _socket: Any, name: str | None, _context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def _handshake(self, writer: asyncio.StreamWriter) -> bool:
        assert self.tls is not None
        try:
            await writer.start_tls(self.tls, ssl_handshake_timeout=5)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as error:
            self.handshake_failures.append(repr(error))
            return False
        self.client_certificates.append(writer.get_extra_info("peercert") or None)
        return True

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
        self.accepted += 1
        try:
            if self.tls is not None and not await self._handshake(writer):
                return
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
