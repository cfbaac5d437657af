"""`type: mcp`, `transport: sse`: real upstream MCP servers that speak only the 2024-11-05 HTTP+SSE
transport (the `mcp` SDK's MCPServer `sse_app`), behind the gateway through the session broker's
bridge, driven by the `mcp` SDK client (legacy and default mode) through real Envoy."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPDeprecationWarning

from mcpgw.broker.bridge import Bridge
from tests.integration.conftest import Gateway
from tests.integration.mcphttp import initialize_request
from tests.integration.test_mcp_upstream import (
    ACCEPT,
    ALLOWED_TOOLS,
    FORECAST_OVERRIDE,
    UPSTREAM_KEY,
    USER_TOKEN,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    Upstream,
    assert_operator_view,
    assert_sessions_stick,
    assert_stateless_clients_served,
    client,
    gateway_over,
    only_text,
    weather,
)
from tests.waiting import eventually


@dataclass
class Request:
    """One HTTP request an SSE upstream received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    status: int = 0
    # For the GET stream: the message URL of its `endpoint` event.
    endpoint: str = ""
    # The upstream finished serving it (for the GET: the stream is closed).
    ended: bool = False

    @property
    def session(self) -> str | None:
        """The upstream's own session: the `session_id` of the message URL."""
        if self.method == "GET":
            return parse_qs(self.endpoint.partition("?")[2]).get("session_id", [None])[0]
        return self.query.get("session_id", [None])[0]

    @property
    def rpc_method(self) -> str | None:
        try:
            return json.loads(self.body).get("method")
        except ValueError:
            return None


@dataclass
class SseUpstream(Upstream):
    """A real MCP server on a free port serving only HTTP+SSE (`GET /sse`, `POST /messages/`)."""

    requests: list[Request] = field(default_factory=list)
    # Seconds `slow` sleeps (the bridge's timeout tests).
    delay: float = 0.0

    def app(self) -> ASGIApp:
        server = self.server(f"sse-upstream-{self.label}")

        @server.tool(description="Answers after `delay` seconds.")
        async def slow() -> str:
            self.calls.append("slow")
            await asyncio.sleep(self.delay)
            return "late"

        @server.tool(description="Logs to the client (a notification on the stream), then answers.")
        async def chatty(ctx: Context) -> str:
            self.calls.append("chatty")
            with warnings.catch_warnings():  # logging is deprecated in 2026-07-28, not in 2024-11-05
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await ctx.info("working on it")
            return "done"

        return self.record(server.sse_app())

    def record(self, app: ASGIApp) -> ASGIApp:
        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            seen = Request(
                scope["method"],
                scope["path"],
                parse_qs(scope["query_string"].decode()),
                {k.decode().lower(): v.decode() for k, v in scope["headers"]},
            )
            self.requests.append(seen)

            async def receiving() -> Message:
                message = await receive()
                seen.body += message.get("body", b"")
                return message

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    seen.status = message["status"]
                elif message["type"] == "http.response.body" and not seen.endpoint:
                    text = message.get("body", b"").decode(errors="replace")
                    if "event: endpoint" in text:
                        seen.endpoint = text.split("data: ", 1)[1].split("\r\n", 1)[0].strip()
                await send(message)

            try:
                await app(scope, receiving, sending)
            finally:
                seen.ended = True

        return recording

    @property
    def streams(self) -> list[Request]:
        return [r for r in self.requests if r.method == "GET"]

    @property
    def messages(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]


def sse_server(name: str, *upstreams: SseUpstream, **fields: Any) -> dict[str, Any]:
    return weather(name, *upstreams, transport="sse", **fields)


def bridge_of(gateway: Gateway) -> Bridge:
    assert gateway.stack.broker is not None and gateway.stack.broker.bridge is not None
    return gateway.stack.broker.bridge


@pytest.fixture
async def sse_upstream(tmp_path: Path) -> AsyncIterator[tuple[Gateway, SseUpstream]]:
    upstream = SseUpstream("A")
    async with gateway_over(
        tmp_path,
        sse_server(
            "legacy",
            upstream,
            allowTools=ALLOWED_TOOLS,
            tools=[FORECAST_OVERRIDE],
            securitySchemes=[
                UPSTREAM_KEY,
            ],
            upstreamSecurity={"id": "upstreamKey"},
        ),
        sse_server(
            "mine",
            upstream,
            securitySchemes=[USER_TOKEN],
            security={"id": "userToken", "passthrough": True},
        ),
        running=(upstream,),
    ) as gateway:
        yield gateway, upstream


async def test_sse_upstream_allow_list_overrides_refusal_and_static_credential(
    sse_upstream: tuple[Gateway, SseUpstream],
) -> None:
    gateway, upstream = sse_upstream
    url = f"{gateway.stack.mcp_base_url}/mcp/team/legacy"
    async with client(url, {"Authorization": "Bearer client-secret"}) as session:
        await assert_operator_view(session, "sse-upstream-A", "Paris")
        assert len(bridge_of(gateway).sessions) == 1

    assert upstream.calls == ["forecast"]
    (stream,) = upstream.streams  # one upstream stream for the client's session
    assert stream.path == "/sse" and stream.status == 200
    assert stream.headers["accept"] == "text/event-stream"
    methods = [r.rpc_method for r in upstream.messages]
    assert methods == ["initialize", "notifications/initialized", "tools/list", "tools/call"]
    assert not any(b"secret" in r.body for r in upstream.messages)
    for seen in upstream.requests:
        # Static credential injected on the stream and every message; the client's never forwarded;
        # nothing of the gateway's own headers leaks.
        assert seen.headers["x-api-key"] == "k-123"
        assert "authorization" not in seen.headers
        assert not any(name.startswith(("x-mcpgw-", "mcp-session-id")) for name in seen.headers)
        assert seen.session == stream.session, seen
    assert all(r.path == "/messages/" and r.status == 202 for r in upstream.messages)
    # The client's DELETE ended the bridge session and closed the upstream stream.
    await eventually(lambda: not bridge_of(gateway).sessions, 5, "the bridge session ended")


async def test_sse_upstream_passthrough_credential_and_errors(
    sse_upstream: tuple[Gateway, SseUpstream],
) -> None:
    gateway, upstream = sse_upstream
    url = f"{gateway.stack.mcp_base_url}/mcp/team/mine"
    async with client(url, {"Authorization": "Bearer user-7"}) as session:
        assert "secret" in {tool.name for tool in (await session.list_tools()).tools}
        assert only_text(await session.call_tool("whoami", {})) == "A"
    assert {seen.headers.get("authorization") for seen in upstream.requests} == {"Bearer user-7"}

    before = len(upstream.requests)
    async with httpx.AsyncClient(timeout=10) as http:
        headers = {**ACCEPT, "authorization": "Bearer u"}
        answer = await http.post(url, json=initialize_request(), headers=headers)
        assert answer.status_code == 200, answer.text
        token = answer.headers["mcp-session-id"]
        assert len(upstream.streams) == 2
        # The bridge forgot the session (idle expiry, another replica's broker, stream lost):
        # 404, so the client starts over.
        await bridge_of(gateway).close_sessions("test")
        ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
        response = await http.post(url, json=ping, headers={**headers, "mcp-session-id": token})
        assert response.status_code == 404 and response.json() == {
            "jsonrpc": "2.0",
            "id": 9,
            "error": {"code": -32600, "message": "Session not found"},
        }
    assert [r.method for r in upstream.requests[before:]] == ["GET", "POST"]  # the ping never went


async def test_sse_upstream_sessions_stick_to_the_host_that_created_them(tmp_path: Path) -> None:
    a, b = SseUpstream("A"), SseUpstream("B")
    async with gateway_over(tmp_path, sse_server("pair", a, b), running=(a, b)) as gateway:
        url = f"{gateway.stack.mcp_base_url}/mcp/team/pair"
        await assert_sessions_stick(url, rounds=2)
    for upstream in (a, b):
        opened = {stream.session for stream in upstream.streams}
        assert opened and None not in opened
        for seen in upstream.messages:
            # Every message reached the upstream that holds its stream; none was refused.
            assert seen.status == 202 and seen.session in opened, (upstream.label, seen)
    assert {s.session for s in a.streams}.isdisjoint({s.session for s in b.streams})


async def test_sse_upstream_serves_stateless_clients(sse_upstream: tuple[Gateway, SseUpstream]) -> None:
    gateway, upstream = sse_upstream
    await assert_stateless_clients_served(f"{gateway.stack.mcp_base_url}/mcp/team/legacy", "sse-upstream-A")
    # One bridge session (one upstream stream) per Envoy worker, reused by every request.
    assert 1 <= len(upstream.streams) <= 2
    assert upstream.calls == ["forecast"] * 3
    for seen in upstream.messages:
        assert b"io.modelcontextprotocol/" not in seen.body
        assert seen.status == 202 and seen.headers["x-api-key"] == "k-123"


async def test_an_unreachable_sse_upstream_is_a_clear_json_rpc_error(tmp_path: Path) -> None:
    gone = SseUpstream("gone")  # never started: nothing listens on its port
    async with gateway_over(tmp_path, sse_server("down", gone)) as gateway:
        url = f"{gateway.stack.mcp_base_url}/mcp/team/down"
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(url, json=initialize_request(), headers=ACCEPT)
        assert not bridge_of(gateway).sessions
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == -32603
    # The bridge's reason (the URL, the connection error) is in its log, not in the answer.
    assert error["message"] == "upstream MCP server is unavailable", error


async def test_a_slow_sse_upstream_gets_the_bridges_504_before_envoy_gives_up(tmp_path: Path) -> None:
    slow = SseUpstream("S", delay=5)
    server = sse_server("slowpoke", slow)
    server["backend"]["timeoutMs"] = 1500
    async with gateway_over(tmp_path, server, running=(slow,)) as gateway:
        url = f"{gateway.stack.mcp_base_url}/mcp/team/slowpoke"
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(url, json=initialize_request(), headers=ACCEPT)
            assert answer.status_code == 200, answer.text
            session = {**ACCEPT, "mcp-session-id": answer.headers["mcp-session-id"]}
            started = time.monotonic()
            call = {
                "jsonrpc": "2.0",
                "id": 5,
                "method": "tools/call",
                "params": {"name": "slow", "arguments": {}},
            }
            response = await http.post(url, json=call, headers=session)
            elapsed = time.monotonic() - started
    # Envoy tells the bridge its deadline (timeoutMs): the bridge answers first, with its reason.
    assert response.status_code == 504 and elapsed < 1.5, (elapsed, response.text)
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": 5,
        "error": {
            "code": -32603,
            "message": "upstream MCP server did not answer within 1.25s",
        },
    }
