"""The session broker's bridge to HTTP+SSE upstream MCP servers, over HTTP, against real `mcp` SDK
servers serving the 2024-11-05 transport: sessions, timeouts, DELETE, idle expiry, stream loss."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiohttp import StreamReader, web
from aiohttp.base_protocol import BaseProtocol

from mcpgw.broker import Broker, BrokerSettings
from mcpgw.broker.bridge import UPSTREAM_UNAVAILABLE, Bridge, BridgeSettings, EventTooLarge, sse_events
from mcpgw.stack import free_port
from tests.integration.mcphttp import initialize_request
from tests.integration.test_mcp_upstream import serving
from tests.integration.test_mcp_upstream_sse import SseUpstream
from tests.waiting import eventually

JSON = {"content-type": "application/json"}


@contextlib.asynccontextmanager
async def running(**bridge: Any) -> AsyncIterator[Broker]:
    broker = Broker("127.0.0.1", 0, settings=BrokerSettings(bridge=BridgeSettings(**bridge)))
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


def bridge_of(broker: Broker) -> Bridge:
    assert broker.bridge is not None
    return broker.bridge


def rpc(method: str, id: int | str | None = 1, **params: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        message["id"] = id
    if params:
        message["params"] = params
    return message


class BridgeClient:
    """Speaks to the bridge as the filter does: POST/DELETE /v1/bridge with the upstream's URL."""

    def __init__(self, http: httpx.AsyncClient, broker: Broker, sse_url: str) -> None:
        self.http = http
        self.url = f"{broker.url}/v1/bridge"
        self.headers = {**JSON, "x-mcpgw-upstream-url": sse_url}
        self.session: str | None = None

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(self.headers)
        if self.session:
            headers["mcp-session-id"] = self.session
        return headers | (extra or {})

    async def post(self, message: Any, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return await self.http.post(self.url, json=message, headers=self._headers(headers), **kw)

    async def delete(self) -> httpx.Response:
        return await self.http.delete(self.url, headers=self._headers(None))

    async def open(self) -> dict[str, Any]:
        response = await self.post(initialize_request("2024-11-05", id=0))
        assert response.status_code == 200, response.text
        self.session = response.headers["mcp-session-id"]
        assert (await self.post(rpc("notifications/initialized", id=None))).status_code == 202
        return response.json()


def upstream_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the bridge logged about failed upstreams: the details clients are not told."""
    return [r.fields["error"] for r in caplog.records if r.getMessage() == "bridge_upstream_failed"]  # type: ignore[attr-defined]


def closed_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.fields["reason"] for r in caplog.records if r.getMessage() == "bridge_session_closed"]  # type: ignore[attr-defined]


@pytest.fixture
async def upstream() -> AsyncIterator[SseUpstream]:
    up = SseUpstream("U", delay=3)
    async with serving(up):
        yield up


def sse_url(up: SseUpstream) -> str:
    return f"http://{up.endpoint}/sse"


async def test_a_session_opens_answers_requests_and_takes_notifications(
    upstream: SseUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="mcpgw.broker")
    async with running() as broker, httpx.AsyncClient(timeout=10) as http:
        bridge = BridgeClient(http, broker, sse_url(upstream))
        hello = await bridge.open()
        assert hello["id"] == 0 and hello["result"]["serverInfo"]["name"] == "sse-upstream-U"
        assert bridge.session and bridge.session.isprintable() and " " not in bridge.session
        (stream,) = upstream.streams
        assert stream.headers["accept"] == "text/event-stream" and not stream.ended

        response = await bridge.post(rpc("tools/call", "c-1", name="forecast", arguments={"city": "Rome"}))
        assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
        answer = response.json()
        assert answer["id"] == "c-1" and answer["result"]["content"][0]["text"] == "U: sunny in Rome"
        # A log notification on the stream before the answer is dropped, the answer still arrives.
        response = await bridge.post(rpc("tools/call", 7, name="chatty", arguments={}))
        assert response.json()["result"]["content"][0]["text"] == "done"
        dropped = [r for r in caplog.records if r.getMessage() == "bridge_message_dropped"]
        assert [r.fields["method"] for r in dropped] == ["notifications/message"]  # type: ignore[attr-defined]
        # Requests in flight at once, each answered with its own response.
        answers = await asyncio.gather(
            *(bridge.post(rpc("tools/call", i, name="whoami")) for i in range(10, 15))
        )
        assert [a.json()["id"] for a in answers] == list(range(10, 15))

        # Every message went to the endpoint the stream named, in the stream's upstream session.
        assert all(m.path == "/messages/" and m.session == stream.session for m in upstream.messages)
        assert all(m.status == 202 for m in upstream.messages)
        opened = [r for r in caplog.records if r.getMessage() == "bridge_session_opened"]
        assert [r.fields["upstream"] for r in opened] == [sse_url(upstream)]  # type: ignore[attr-defined]


async def test_requests_the_bridge_refuses(upstream: SseUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="mcpgw.broker")
    async with running() as broker, httpx.AsyncClient(timeout=10) as http:
        bridge = BridgeClient(http, broker, sse_url(upstream))
        # No session and not initialize: 400, nothing sent upstream.
        response = await bridge.post(rpc("tools/list", 3))
        assert response.status_code == 400 and response.json()["id"] == 3
        assert "Mcp-Session-Id" in response.json()["error"]["message"]
        assert (await bridge.post(rpc("notifications/initialized", id=None))).status_code == 400
        # An upstream URL that is not http(s), or none.
        for url in ("ftp://127.0.0.1/sse", "/sse", "http:///sse"):
            response = await bridge.post(initialize_request(), {"x-mcpgw-upstream-url": url})
            assert response.status_code == 400, url
            assert "x-mcpgw-upstream-url" in response.json()["error"]["message"]
        no_url = {**JSON}
        response = await http.post(bridge.url, json=initialize_request(), headers=no_url)
        assert response.status_code == 400
        response = await http.post(bridge.url, content=b"{nope", headers={**bridge.headers})
        assert response.status_code == 400 and response.json()["error"]["code"] == -32700
        deep = b"[" * 100_000 + b"]" * 100_000
        response = await http.post(bridge.url, content=deep, headers={**bridge.headers})
        assert response.status_code == 400 and response.json()["error"]["code"] == -32700
        assert not upstream.requests

        # An unknown session, and a real session named with another upstream URL: 404.
        bridge.session = "never-issued"
        response = await bridge.post(rpc("ping", 4))
        assert response.status_code == 404 and response.json() == {
            "jsonrpc": "2.0",
            "id": 4,
            "error": {"code": -32600, "message": "Session not found"},
        }
        assert (await bridge.delete()).status_code == 404
        bridge.session = None
        await bridge.open()
        other = await bridge.post(
            rpc("ping", 5), {"x-mcpgw-upstream-url": f"http://{upstream.endpoint}/other"}
        )
        assert other.status_code == 404
        assert (await bridge.post(rpc("ping", 6))).status_code == 200

        # An SSE URL where the upstream serves no stream: 502, no session left behind. The
        # client reads a stable reason; the log names the URL and what it answered.
        bridge.session = None
        response = await bridge.post(
            initialize_request(), {"x-mcpgw-upstream-url": f"http://{upstream.endpoint}/nope"}
        )
        assert response.status_code == 502 and response.json()["error"]["code"] == -32603
        assert response.json()["error"]["message"] == UPSTREAM_UNAVAILABLE
        assert "answered the SSE GET with HTTP 404" in upstream_failures(caplog)[-1]
        assert len(bridge_of(broker).sessions) == 1


async def test_a_request_without_an_answer_in_time_is_504(upstream: SseUpstream) -> None:
    async with running(timeout=0.5) as broker, httpx.AsyncClient(timeout=10) as http:
        bridge = BridgeClient(http, broker, sse_url(upstream))
        await bridge.open()
        started = time.monotonic()
        response = await bridge.post(rpc("tools/call", 8, name="slow"))
        assert response.status_code == 504 and time.monotonic() - started < 2
        assert response.json()["id"] == 8 and response.json()["error"]["code"] == -32603
        assert "did not answer within 0.5s" in response.json()["error"]["message"]
        # Envoy's own deadline (x-envoy-expected-rq-timeout-ms) wins, less a margin.
        response = await bridge.post(
            rpc("tools/call", 9, name="slow"), {"x-envoy-expected-rq-timeout-ms": "1000"}
        )
        assert response.status_code == 504 and "within 0.75s" in response.json()["error"]["message"]
        # The session lives on; the late answers are dropped when they come.
        assert (await bridge.post(rpc("tools/call", 10, name="whoami"))).json()["id"] == 10
        assert not bridge_of(broker).sessions[bridge.session or ""].pending


async def test_delete_closes_the_upstream_stream(
    upstream: SseUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mcpgw.broker")
    async with running() as broker, httpx.AsyncClient(timeout=10) as http:
        bridge = BridgeClient(http, broker, sse_url(upstream))
        await bridge.open()
        (stream,) = upstream.streams
        assert (await bridge.delete()).status_code == 204
        await eventually(lambda: stream.ended, 5, "the upstream saw its stream close")
        assert not bridge_of(broker).sessions
        assert (await bridge.post(rpc("ping", 2))).status_code == 404
        assert (await bridge.delete()).status_code == 404
        bridge.session = None
        response = await http.delete(bridge.url, headers=bridge.headers)
        assert response.status_code == 400
    assert closed_reasons(caplog) == ["ended by the client (DELETE)"]


async def test_idle_sessions_expire_and_stopping_the_broker_closes_the_rest(
    upstream: SseUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mcpgw.broker")
    async with running(idle_timeout=0.6) as broker, httpx.AsyncClient(timeout=10) as http:
        idle = BridgeClient(http, broker, sse_url(upstream))
        busy = BridgeClient(http, broker, sse_url(upstream))
        await idle.open()
        await busy.open()
        first, second = upstream.streams
        # One session keeps being used, the other is left alone.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            assert (await busy.post(rpc("ping", 1))).status_code == 200
            await asyncio.sleep(0.1)
        assert first.ended and not second.ended
        assert (await idle.post(rpc("ping", 1))).status_code == 404
        assert list(bridge_of(broker).sessions) == [busy.session]
    await eventually(lambda: second.ended, 5, "the broker's stop closed the last stream")
    assert closed_reasons(caplog) == ["idle for 0.6s", "session broker stopping"]


async def test_sessions_are_bounded(upstream: SseUpstream) -> None:
    async with running(max_sessions=1) as broker, httpx.AsyncClient(timeout=10) as http:
        await BridgeClient(http, broker, sse_url(upstream)).open()
        response = await BridgeClient(http, broker, sse_url(upstream)).post(initialize_request())
        assert response.status_code == 503 and "1 bridge sessions" in response.json()["error"]["message"]
        assert len(upstream.streams) == 1


async def test_query_credentials_reach_the_stream_and_every_message(upstream: SseUpstream) -> None:
    async with running() as broker, httpx.AsyncClient(timeout=10) as http:
        bridge = BridgeClient(http, broker, sse_url(upstream))
        bridge.url += "?key=a%20b&sig=1"
        await bridge.open()
        assert (await bridge.post(rpc("ping", 2), {"x-api-key": "k"})).status_code == 200
    for seen in upstream.requests:
        assert seen.query["key"] == ["a b"] and seen.query["sig"] == ["1"], seen
    assert upstream.messages[-1].headers["x-api-key"] == "k"


# An SDK server in its own process, so the test can kill it: its stream is lost, not closed.
DOOMED = """
import asyncio, sys, uvicorn
from mcp.server.mcpserver import MCPServer
server = MCPServer(name="doomed")

@server.tool(description="Never answers in time.")
async def hang() -> str:
    await asyncio.sleep(60)
    return "late"

uvicorn.run(server.sse_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


async def wait_listening(port: int, process: asyncio.subprocess.Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.returncode is None, "the upstream process exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        assert time.monotonic() < deadline, f"the upstream did not listen within {timeout}s"
        await asyncio.sleep(0.1)


async def test_a_lost_upstream_stream_ends_the_session(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="mcpgw.broker")
    port = free_port()
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", DOOMED, str(port))
    try:
        await wait_listening(port, process)
        async with running(timeout=30) as broker, httpx.AsyncClient(timeout=10) as http:
            bridge = BridgeClient(http, broker, f"http://127.0.0.1:{port}/sse")
            await bridge.open()
            waiting = asyncio.create_task(bridge.post(rpc("tools/call", 5, name="hang")))
            await eventually(
                lambda: any(s.pending for s in bridge_of(broker).sessions.values()), 5, "pending"
            )
            await asyncio.sleep(0.2)
            process.kill()
            started = time.monotonic()
            # The request waiting on the stream gets a 502 at once, the session is gone (404).
            response = await asyncio.wait_for(waiting, 5)
            assert response.status_code == 502 and time.monotonic() - started < 5
            # Killed mid-stream: the chunked stream is cut ("lost"); a server that closes it
            # cleanly ends it ("ended"). Either ends the session.
            assert response.json()["id"] == 5
            assert response.json()["error"]["message"] == UPSTREAM_UNAVAILABLE
            assert "upstream stream " in upstream_failures(caplog)[-1]
            assert not bridge_of(broker).sessions
            assert (await bridge.post(rpc("ping", 6))).status_code == 404
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), 10)
    (reason,) = closed_reasons(caplog)
    assert reason.startswith(("upstream stream lost: ", "upstream stream ended")), reason


class _Protocol(BaseProtocol):
    pass


async def events_of(*chunks: bytes, max_bytes: int = 1000) -> list[tuple[str, str]]:
    reader = StreamReader(_Protocol(asyncio.get_running_loop()), 2**16, loop=asyncio.get_running_loop())
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return [event async for event in sse_events(reader, max_bytes)]


async def test_sse_event_parsing() -> None:
    assert await events_of(
        b": comment\n\nevent: endpoint\r\ndata: /messages/?session_id=1\r\n\r\n",
        b'data: {"a":\r',  # a CR at the end of a chunk, then LF: one line end
        b"\ndata: 1}\r\rdata:no-space\n\n",
        b"event: x\nid: 3\nretry: 5\ndata\n\n",
        b"data: unterminated at the end",
    ) == [
        ("endpoint", "/messages/?session_id=1"),
        ("message", '{"a":\n1}'),
        ("message", "no-space"),
        ("x", ""),
    ]
    with pytest.raises(EventTooLarge):
        await events_of(b"data: " + b"x" * 2000 + b"\n\n")
    with pytest.raises(EventTooLarge):
        await events_of(*(b"data: " + b"x" * 100 + b"\n" for _ in range(20)))
    assert json.loads((await events_of(b"data: {}\n\n"))[0][1]) == {}


async def test_an_endpoint_on_another_origin_gets_no_message(caplog: pytest.LogCaptureFixture) -> None:
    """Credentials are forwarded to the endpoint: one on another origin is refused (502)."""
    posted: list[str] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: endpoint\ndata: http://127.0.0.2:1/messages?s=1\n\n")
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await asyncio.sleep(30)
        return response

    async def message(request: web.Request) -> web.Response:
        posted.append(request.path)
        return web.Response(status=202)

    app = web.Application()
    app.router.add_get("/sse", stream)
    app.router.add_post("/messages", message)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with running() as broker, httpx.AsyncClient(timeout=10) as http:
            response = await BridgeClient(http, broker, f"http://127.0.0.1:{port}/sse").post(
                initialize_request()
            )
            assert response.status_code == 502
            assert response.json()["error"]["message"] == UPSTREAM_UNAVAILABLE
            assert "named an endpoint on another origin" in upstream_failures(caplog)[-1]
            assert not bridge_of(broker).sessions
    finally:
        await runner.cleanup()
    assert posted == []


async def test_a_reader_failing_unexpectedly_still_closes_its_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Anything unexpected while delivering an event (a RecursionError from a deeply nested one
    used to be this) ends the session instead of killing the reader and leaving it open."""
    bridge = Bridge(BridgeSettings())
    closed: list[str] = []

    async def close(session: Any, reason: str) -> None:
        closed.append(reason)

    def deliver(session: Any, data: str) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(bridge, "_close", close)
    monkeypatch.setattr(bridge, "_deliver", deliver)
    reader = StreamReader(_Protocol(asyncio.get_running_loop()), 2**16, loop=asyncio.get_running_loop())
    reader.feed_data(b'event: message\ndata: {"jsonrpc": "2.0", "id": 1, "result": {}}\n\n')
    reader.feed_eof()
    session = SimpleNamespace(id="s1", response=SimpleNamespace(content=reader), pending={})
    await asyncio.wait_for(bridge._read(session), 10)  # type: ignore[arg-type]
    assert closed == ["upstream stream unreadable: RecursionError"]
