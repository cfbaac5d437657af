"""Reading server-sent events from a streaming httpx response, in tests.

One line iterator per response, kept as long as the response: an `Events` may be a throwaway
(`await Events(stream).next()`) without ending the stream. With an iterator per `Events`, the
one a dropped `Events` held was finalized by the event loop's async-generator hook, and
httpcore closes the connection when its body iterator is closed early: the client itself
ended the stream a few milliseconds after reading `endpoint`, so a message posted then found
no stream (404 "Session not connected", about 1 in 5 through Envoy).
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx

_LINES: weakref.WeakKeyDictionary[httpx.Response, AsyncIterator[str]] = weakref.WeakKeyDictionary()


def lines_of(response: httpx.Response) -> AsyncIterator[str]:
    """The response's one line iterator (made on first use, gone with the response)."""
    lines = _LINES.get(response)
    if lines is None:
        lines = _LINES[response] = response.aiter_lines()
    return lines


class Events:
    """Server-sent events read from a streaming httpx response: (event, data), ("comment", text)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = lines_of(response)

    async def next(self, timeout: float = 5.0) -> tuple[str, str]:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> tuple[str, str]:
        event, data = "message", []
        async for line in self._lines:
            if line == "":
                if data:
                    return event, "\n".join(data)
                continue
            if line.startswith(":"):
                return "comment", line[1:].strip()
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
        return "end", ""

    async def message(self, timeout: float = 5.0) -> Any:
        """The next `message` event's JSON, skipping keep-alive comments."""
        event, data = await self.skip_comments(timeout)
        assert event == "message", (event, data)
        return json.loads(data)

    async def skip_comments(self, timeout: float = 5.0) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next(max(0.01, deadline - time.monotonic()))
            if event[0] != "comment":
                return event
