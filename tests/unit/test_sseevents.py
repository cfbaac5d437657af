"""The tests' SSE reader (`tests.sseevents.Events`) against a real broker: dropping a reader
must not end the stream it read (it did, and posts right after `endpoint` found no stream)."""

from __future__ import annotations

import asyncio
import gc

import httpx

from tests.sseevents import Events
from tests.unit.test_broker import CHANNEL, ENDPOINT, message, running, sse_headers


async def test_a_dropped_reader_leaves_the_stream_open() -> None:
    async with running() as broker, httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", f"{broker.url}/sse", headers=sse_headers()) as stream:
            assert await Events(stream).next() == ("endpoint", ENDPOINT)
            # The dropped reader's iterator would be closed on one of the next loop turns.
            gc.collect()
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert broker.bus.stream_count == 1
            published = await http.post(f"{broker.url}/v1/sse/{CHANNEL}", json=message(1))
            assert published.status_code == 202, published.text
            assert await Events(stream).message() == message(1)
