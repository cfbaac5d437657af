"""The session broker over HTTP, against a real redis-server: streams, publishing, failures, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from mcpgw.broker import Broker, BrokerSettings, MemoryBus, Stream
from mcpgw.broker.bus import StreamClosed
from tests.redisserver import RedisServer
from tests.sseevents import Events
from tests.waiting import eventually

CHANNEL = "0123456789abcdef0123456789abcdef"
ENDPOINT = f"/mcp/default/petstore/message?sessionId=token-{CHANNEL}"


def sse_headers(channel: str = CHANNEL, endpoint: str = ENDPOINT) -> dict[str, str]:
    return {"x-mcpgw-sse-channel": channel, "x-mcpgw-sse-endpoint": endpoint}


@contextlib.asynccontextmanager
async def running(redis_url: str | None = None, **settings: Any) -> AsyncIterator[Broker]:
    broker = Broker("127.0.0.1", 0, redis_url=redis_url, settings=BrokerSettings(**settings))
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@contextlib.asynccontextmanager
async def sse(http: httpx.AsyncClient, url: str, **headers: str) -> AsyncIterator[Events]:
    async with http.stream("GET", url, headers=headers or sse_headers()) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        events = Events(response)
        assert await events.next() == ("endpoint", headers.get("x-mcpgw-sse-endpoint", ENDPOINT))
        yield events


def message(n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": n, "result": {"content": [{"type": "text", "text": f"answer {n}"}]}}


async def numsub(redis_url: str, channel: str = CHANNEL) -> int:
    client = aioredis.from_url(redis_url)
    try:
        return int(dict(await client.pubsub_numsub(f"mcpgw:sse:{channel}"))[f"mcpgw:sse:{channel}".encode()])
    finally:
        await client.aclose()


async def test_a_message_published_on_one_broker_reaches_a_stream_on_another_in_order(
    redis_server: RedisServer,
) -> None:
    async with (
        running(redis_server.url) as a,
        running(redis_server.url) as b,
        httpx.AsyncClient(timeout=10) as http,
        sse(http, f"{a.url}/mcp/default/petstore/sse") as events,
    ):
        for n in range(20):
            response = await http.post(f"{b.url}/v1/sse/{CHANNEL}", json=message(n))
            assert response.status_code == 202, response.text
            assert response.json() == {"receivers": 1}
        for n in range(20):
            assert await events.message() == message(n)
        assert a.bus.stream_count == 1 and b.bus.stream_count == 0


async def test_publish_with_no_stream_is_404_and_bad_requests_are_400(redis_server: RedisServer) -> None:
    async with running(redis_server.url) as broker, httpx.AsyncClient(timeout=5) as http:
        response = await http.post(f"{broker.url}/v1/sse/{CHANNEL}", json=message(1))
        assert response.status_code == 404
        assert "no SSE stream" in response.json()["error"]
        # Nesting past Python's recursion limit is refused like any other unparseable body.
        for body in (b"", b"not json", b'"a string"', b"[" * 100_000 + b"]" * 100_000):
            response = await http.post(f"{broker.url}/v1/sse/{CHANNEL}", content=body)
            assert response.status_code == 400, body
        response = await http.post(f"{broker.url}/v1/sse/bad.channel", json=message(1))
        assert response.status_code == 400


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-mcpgw-sse-endpoint": ENDPOINT},
        {"x-mcpgw-sse-channel": CHANNEL},
        sse_headers(channel="has spaces"),
        sse_headers(channel="x" * 65),
    ],
)
async def test_a_stream_without_the_filters_headers_is_400(headers: dict[str, str]) -> None:
    async with running() as broker, httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{broker.url}/mcp/default/petstore/sse", headers=headers)
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/json")
        assert "the gateway filter sets it" in response.json()["error"]
        assert broker.bus.stream_count == 0


async def test_keepalive_comments_arrive_on_an_idle_stream() -> None:
    async with (
        running(keepalive=0.2) as broker,
        httpx.AsyncClient(timeout=5) as http,
        sse(http, f"{broker.url}/sse") as events,
    ):
        started = time.monotonic()
        assert await events.next(timeout=2) == ("comment", "keepalive")
        assert await events.next(timeout=2) == ("comment", "keepalive")
        assert time.monotonic() - started < 1.5


async def test_a_client_disconnect_releases_the_redis_subscription(redis_server: RedisServer) -> None:
    async with running(redis_server.url, keepalive=60) as broker:
        before = len(asyncio.all_tasks())
        async with httpx.AsyncClient(timeout=5) as http:
            async with sse(http, f"{broker.url}/sse"):
                assert await numsub(redis_server.url) == 1
                assert broker.bus.stream_count == 1
            # No keep-alive is due for a minute: the disconnect itself must end the handler.
            await eventually(lambda: _zero(numsub(redis_server.url)), 3, "PUBSUB NUMSUB back to 0")
            assert broker.bus.stream_count == 0
            response = await http.post(f"{broker.url}/v1/sse/{CHANNEL}", json=message(1))
            assert response.status_code == 404
        # Nothing left running on the broker's side once the client's connections are closed.
        await eventually(lambda: _true(len(asyncio.all_tasks()) <= before), 3, "the server's tasks ended")


async def _zero(count: Any) -> bool:
    return await count == 0


async def _true(value: bool) -> bool:
    return value


async def test_redis_stopped_ends_streams_within_5s_and_publish_answers_503(
    redis_server: RedisServer,
) -> None:
    async with running(redis_server.url) as broker, httpx.AsyncClient(timeout=10) as http:
        async with sse(http, f"{broker.url}/sse") as events:
            assert (await http.post(f"{broker.url}/v1/sse/{CHANNEL}", json=message(1))).status_code == 202
            assert await events.message() == message(1)
            redis_server.stop()
            stopped = time.monotonic()
            event, data = await events.skip_comments(timeout=5)
            assert event == "error" and "session bus (Redis) connection lost" in json.loads(data)["error"]
            assert time.monotonic() - stopped < 5
            assert await events.next() == ("end", "")
        response = await http.post(f"{broker.url}/v1/sse/{CHANNEL}", json=message(2))
        assert response.status_code == 503 and "session bus" in response.json()["error"]
        response = await http.get(f"{broker.url}/sse", headers=sse_headers())
        assert response.status_code == 503 and "unavailable" in response.json()["error"]

        # Redis back: the broker reconnects on its own and new streams work again.
        redis_server.start()

        async def stream_opens() -> bool:
            async with http.stream("GET", f"{broker.url}/sse", headers=sse_headers()) as response:
                return response.status_code == 200

        await eventually(stream_opens, 5, "a new stream after Redis came back")


async def test_a_hung_redis_ends_streams_within_5s(redis_server: RedisServer) -> None:
    assert redis_server.process is not None
    async with running(redis_server.url) as broker, httpx.AsyncClient(timeout=10) as http:
        async with sse(http, f"{broker.url}/sse") as events:
            # SIGSTOP: the socket stays open and silent, as with a network partition.
            os.kill(redis_server.process.pid, signal.SIGSTOP)
            try:
                stopped = time.monotonic()
                event, data = await events.skip_comments(timeout=5)
                assert event == "error" and "did not answer" in json.loads(data)["error"]
                assert time.monotonic() - stopped < 5
                started = time.monotonic()
                response = await http.post(f"{broker.url}/v1/sse/{CHANNEL}", json=message(1))
                assert response.status_code == 503
                # Answered well before the filter's 5 s broker timeout.
                assert time.monotonic() - started < 3
            finally:
                os.kill(redis_server.process.pid, signal.SIGCONT)


async def test_redis_down_at_start_the_broker_still_starts_and_answers_503(redis_server: RedisServer) -> None:
    redis_server.stop()
    async with running(redis_server.url) as broker, httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{broker.url}/sse", headers=sse_headers())
        assert response.status_code == 503
        response = await http.post(f"{broker.url}/v1/sse/{CHANNEL}", json=message(1))
        assert response.status_code == 503


async def test_in_process_bus_delivers_and_a_slow_stream_is_closed_with_an_error() -> None:
    async with (
        running(queue_limit=3) as broker,
        httpx.AsyncClient(timeout=5) as http,
        sse(http, f"{broker.url}/sse") as events,
    ):
        response = await http.post(f"{broker.url}/v1/sse/{CHANNEL}", json=message(1))
        assert response.status_code == 202
        assert await events.message() == message(1)
        # Published faster than the handler can write (no await in between): the 4th overflows.
        for n in range(5):
            assert await broker.bus.publish(CHANNEL, json.dumps(message(n)).encode()) == 1
        event, data = await events.skip_comments()
        assert event == "error" and "read too slowly" in json.loads(data)["error"]
        assert await events.next() == ("end", "")
    assert broker.bus.stream_count == 0


async def test_a_client_that_stops_reading_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="mcpgw.broker")
    async with running(write_timeout=0.5, queue_limit=10_000) as broker:
        _, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        try:
            head = "".join(f"{name}: {value}\r\n" for name, value in sse_headers().items())
            writer.write(f"GET /sse HTTP/1.1\r\nhost: broker\r\n{head}\r\n".encode())
            await writer.drain()
            await eventually(lambda: _true(broker.bus.stream_count == 1), 3, "the stream opened")
            # The client never reads: once the socket buffers are full, writes block.
            big = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"text": "x" * 1_000_000}}).encode()
            for _ in range(64):
                await broker.bus.publish(CHANNEL, big)
            await eventually(lambda: _true(broker.bus.stream_count == 0), 15, "the stuck stream ended")
        finally:
            writer.close()
    closed = [r for r in caplog.records if r.getMessage() == "sse_stream_closed"]
    assert [r.fields["reason"] for r in closed] == ["client did not read for 0.5s"]  # type: ignore[attr-defined]


async def test_stopping_the_broker_ends_open_streams_with_an_error() -> None:
    broker = Broker("127.0.0.1", 0)
    await broker.start()
    try:
        async with httpx.AsyncClient(timeout=5) as http, sse(http, f"{broker.url}/sse") as events:
            stop = asyncio.create_task(broker.stop())
            event, data = await events.skip_comments()
            assert event == "error" and json.loads(data) == {"error": "session broker stopping"}
            await asyncio.wait_for(stop, 5)
    finally:
        await broker.stop()


async def test_a_multi_line_message_is_framed_as_several_data_lines() -> None:
    async with (
        running() as broker,
        httpx.AsyncClient(timeout=5) as http,
        sse(http, f"{broker.url}/sse") as events,
    ):
        pretty = json.dumps(message(7), indent=2)
        response = await http.post(
            f"{broker.url}/v1/sse/{CHANNEL}", content=pretty, headers={"content-type": "application/json"}
        )
        assert response.status_code == 202
        event, data = await events.skip_comments()
        assert event == "message" and json.loads(data) == message(7)


async def test_stream_inbox_order_limit_and_failure() -> None:
    stream = Stream(CHANNEL, limit=2)
    bus = MemoryBus()
    await bus.subscribe(stream)
    assert await bus.publish(CHANNEL, b"1") == 1 and await bus.publish(CHANNEL, b"2") == 1
    assert await stream.get(0.1) == b"1"
    assert await stream.get(0.1) == b"2"
    assert await stream.get(0.05) is None
    stream.fail("gone")
    with pytest.raises(StreamClosed, match="gone"):
        await stream.get(0.1)
    bus.unsubscribe(stream)
    assert await bus.publish(CHANNEL, b"3") == 0


async def test_streams_over_the_per_client_or_total_limit_are_refused_with_429() -> None:
    async with (
        running(max_streams_per_client=2, max_streams=3) as broker,
        httpx.AsyncClient(timeout=5) as http,
        contextlib.AsyncExitStack() as open_streams,
    ):
        url = f"{broker.url}/mcp/default/petstore/sse"

        def client(name: str, n: int) -> dict[str, str]:
            return sse_headers(channel=f"{name}{n:031d}") | {"x-mcpgw-client": name}

        for n in range(2):
            await open_streams.enter_async_context(sse(http, url, **client("a", n)))
        refused = await http.get(url, headers=client("a", 2))
        assert refused.status_code == 429 and "from this client (limit 2)" in refused.json()["error"]
        await open_streams.enter_async_context(sse(http, url, **client("b", 0)))
        refused = await http.get(url, headers=client("c", 0))
        assert refused.status_code == 429 and "on this gateway (limit 3)" in refused.json()["error"]
    # A stream's slot is released when it ends: one at a time, a client opens any number.
    async with running(max_streams_per_client=1) as broker, httpx.AsyncClient(timeout=5) as http:

        async def opened(n: int) -> bool:
            async with http.stream("GET", f"{broker.url}/sse", headers=client("a", n)) as response:
                return response.status_code == 200

        for n in range(3):
            await eventually(lambda n=n: opened(n), 5, f"stream {n} after the one before it ended")


async def test_deep_json_to_the_broker_and_the_bridge_is_400_not_500() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    async with running() as broker, httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"{broker.url}/v1/sse/{CHANNEL}", content=deep)
        assert response.status_code == 400, response.text
        bridged = await http.post(
            f"{broker.url}/v1/bridge",
            content=deep,
            headers={"content-type": "application/json", "x-mcpgw-upstream-url": "http://127.0.0.1:1/sse"},
        )
        assert bridged.status_code == 400 and bridged.json()["error"]["code"] == -32700, bridged.text


async def test_the_stream_limit_never_exceeds_the_file_descriptors() -> None:
    async with running(max_streams=0) as broker:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert 0 < broker.settings.max_streams <= soft
