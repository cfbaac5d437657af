"""`type: mcp` servers: real upstream MCP servers (the `mcp` SDK's MCPServer over Streamable HTTP)
behind the gateway, driven by the `mcp` SDK client in legacy mode through real Envoy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import Tool

from mcpgw.stack import free_port
from tests.integration.conftest import Gateway, envoy_log_line, running_gateway
from tests.integration.mcphttp import initialize_request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@dataclass
class Seen:
    """One HTTP request an upstream received, and what it answered."""

    method: str
    headers: dict[str, str]
    body: bytes = b""
    status: int = 0
    issued: str | None = None  # the Mcp-Session-Id the answer carried

    @property
    def session(self) -> str | None:
        return self.headers.get("mcp-session-id")

    @property
    def rpc_method(self) -> str | None:
        try:
            return json.loads(self.body).get("method")
        except ValueError:
            return None


@dataclass
class Upstream:
    """A real MCP server on a free port that records every request it serves."""

    label: str
    # The SDK answers requests with SSE-framed messages by default, or with plain JSON.
    json_response: bool = False
    port: int = field(default_factory=free_port)
    seen: list[Seen] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def app(self) -> ASGIApp:
        server = self.server(f"upstream-{self.label}")
        return self.recorder(server.streamable_http_app(json_response=self.json_response))

    def server(self, name: str) -> MCPServer[Any]:
        """The upstream's tools; `calls` records which ran."""
        server: MCPServer[Any] = MCPServer(name=name)

        @server.tool(description="Original forecast text.")
        def forecast(city: str) -> str:
            self.calls.append("forecast")
            return f"{self.label}: sunny in {city}"

        @server.tool(description="Weather alerts.")
        def alerts() -> str:
            self.calls.append("alerts")
            return "no alerts"

        @server.tool(description="Must never be reached through the gateway.")
        def secret() -> str:
            self.calls.append("secret")
            return "leaked"

        @server.tool(description="Which upstream host answered.")
        def whoami() -> str:
            self.calls.append("whoami")
            return self.label

        return server

    def recorder(self, app: ASGIApp) -> ASGIApp:
        async def record(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            seen = Seen(scope["method"], headers)
            self.seen.append(seen)

            async def receiving() -> Message:
                message = await receive()
                seen.body += message.get("body", b"")
                return message

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    seen.status = message["status"]
                    for key, value in message.get("headers", []):
                        if key.decode().lower() == "mcp-session-id":
                            seen.issued = value.decode()
                await send(message)

            await app(scope, receiving, sending)

        return record

    @property
    def issued(self) -> set[str]:
        return {s.issued for s in self.seen if s.issued}


@contextlib.asynccontextmanager
async def serving(*upstreams: Upstream) -> AsyncIterator[None]:
    """Each upstream under uvicorn on this loop; all stopped on exit."""
    servers = []
    tasks = []
    try:
        for upstream in upstreams:
            config = uvicorn.Config(
                upstream.app(),
                host="127.0.0.1",
                port=upstream.port,
                log_level="warning",
                lifespan="on",
                timeout_graceful_shutdown=2,
            )
            server = uvicorn.Server(config)
            servers.append(server)
            tasks.append(asyncio.create_task(server.serve()))
            deadline = time.monotonic() + 10
            while not server.started:
                assert not tasks[-1].done(), f"upstream {upstream.label} did not start"
                assert time.monotonic() < deadline, f"upstream {upstream.label} did not start within 10 s"
                await asyncio.sleep(0.05)
        yield
    finally:
        for server in servers:
            server.should_exit = True
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)


def write_registry(path: Path, *documents: dict[str, Any]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "servers.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def weather(name: str, *upstreams: Upstream, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "McpServer",
        "type": "mcp",
        "namespace": "team",
        "name": name,
        "backend": {"endpoints": [u.endpoint for u in upstreams], "timeoutMs": 5000},
        **fields,
    }


async def wait_served(url: str) -> None:
    """Until the server's filter configuration is in Envoy: its filter answers GET with 405
    without calling the upstream (the route alone answers 503)."""
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            response = await http.get(url)
            if response.status_code == 405:
                return
            assert time.monotonic() < deadline, f"{url} not served: {response.status_code} {response.text}"
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def gateway_over(
    tmp_path: Path, *documents: dict[str, Any], running: tuple[Upstream, ...] = ()
) -> AsyncIterator[Gateway]:
    """The gateway with `documents` as its registry and the `running` upstreams up (an upstream
    left out is one nothing listens for); entered once Envoy serves every document's path."""
    registry = write_registry(tmp_path / "registry", *documents)
    async with serving(*running), running_gateway(tmp_path, registry) as gateway:
        for document in documents:
            await wait_served(f"{gateway.stack.mcp_base_url}/mcp/{document['namespace']}/{document['name']}")
        yield gateway


def client(url: str, headers: dict[str, str] | None = None) -> Client:
    """The SDK client in legacy mode (initialize handshake, sessions)."""
    http = httpx2.AsyncClient(headers=headers or {}, timeout=httpx2.Timeout(15, read=15))
    return Client(streamable_http_client(url, http_client=http), mode="legacy")


def only_text(result: Any) -> str:
    (content,) = result.content
    return str(content.text)


# What the operator registers about the upstream in the fixtures: three tools allowed, one
# description overridden, an API key injected, and a bearer scheme for passthrough.
ALLOWED_TOOLS = ["forecast", "alerts", "whoami"]
FORECAST_OVERRIDE = {
    "name": "forecast",
    "description": "Forecast, as the operator words it.",
    "title": "Forecast",
}
UPSTREAM_KEY = {
    "id": "upstreamKey",
    "type": "apiKey",
    "in": "header",
    "name": "X-Api-Key",
    "defaultCredential": "k-123",
}
USER_TOKEN = {"id": "userToken", "type": "http", "scheme": "bearer"}


@pytest.fixture
async def one_upstream(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Upstream]]:
    upstream = Upstream("A")
    async with gateway_over(
        tmp_path,
        weather(
            "weather",
            upstream,
            allowTools=ALLOWED_TOOLS,
            tools=[FORECAST_OVERRIDE],
            securitySchemes=[
                UPSTREAM_KEY,
                USER_TOKEN,
            ],
            upstreamSecurity={"id": "upstreamKey"},
        ),
        weather(
            "mine",
            upstream,
            securitySchemes=[USER_TOKEN],
            security={"id": "userToken", "passthrough": True},
        ),
        running=(upstream,),
    ) as gateway:
        yield gateway, upstream


async def test_allow_list_overrides_and_refusal(one_upstream: tuple[Gateway, Upstream]) -> None:
    gateway, upstream = one_upstream
    url = f"{gateway.stack.mcp_base_url}/mcp/team/weather"
    # The client's own Authorization must never reach the upstream of a server without passthrough.
    async with client(url, {"Authorization": "Bearer client-secret"}) as session:
        tools = await assert_operator_view(session, "upstream-A", "Paris")
        assert tools["forecast"].input_schema["properties"]["city"]["type"] == "string"

    assert upstream.calls == ["forecast"]
    assert not any(b"secret" in seen.body for seen in upstream.seen if seen.rpc_method == "tools/call")
    methods = [seen.rpc_method or seen.method for seen in upstream.seen]
    assert methods[:2] == ["initialize", "notifications/initialized"]
    assert "DELETE" in methods  # the client ended its session; the upstream's was ended too
    (issued,) = upstream.issued
    for seen in upstream.seen:
        # Static credential injected, the client's never forwarded, the upstream's own session id.
        assert seen.headers["x-api-key"] == "k-123"
        assert "authorization" not in seen.headers
        assert seen.headers["accept"] == "application/json, text/event-stream"
        if seen.rpc_method != "initialize":
            assert seen.session == issued
            assert seen.headers["mcp-protocol-version"]
        assert seen.status in (200, 202), seen


async def test_passthrough_credential_and_protocol_errors(one_upstream: tuple[Gateway, Upstream]) -> None:
    gateway, upstream = one_upstream
    url = f"{gateway.stack.mcp_base_url}/mcp/team/mine"
    async with client(url, {"Authorization": "Bearer user-7"}) as session:
        # No allowTools: every upstream tool is served.
        assert "secret" in {tool.name for tool in (await session.list_tools()).tools}
        assert only_text(await session.call_tool("whoami", {})) == "A"
    assert {seen.headers.get("authorization") for seen in upstream.seen} == {"Bearer user-7"}
    assert "x-api-key" not in upstream.seen[0].headers

    before = len(upstream.seen)
    async with httpx.AsyncClient(timeout=10) as http:
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        # Without the client's credential nothing goes upstream, not even the handshake.
        response = await http.post(url, json=initialize_request(), headers=ACCEPT)
        assert response.status_code == 401
        assert "credential in authorization" in response.json()["error"]["message"]
        # No session, or one the gateway never issued (the plain "<host>.<id>" form is not
        # accepted: session ids are signed): 400 / 404, so a client starts over.
        response = await http.post(url, json=ping, headers={**ACCEPT, "authorization": "Bearer u"})
        assert response.status_code == 400 and "Mcp-Session-Id" in response.json()["error"]["message"]
        for forged in ("9.nope", "0.forgotten"):
            response = await http.post(
                url, json=ping, headers={**ACCEPT, "authorization": "Bearer u", "mcp-session-id": forged}
            )
            assert response.status_code == 404 and response.json()["error"]["message"] == "Session not found"
        assert len(upstream.seen) == before

        # A session the upstream forgot (expired, restarted): its 404 reaches the client as 404.
        answer = await http.post(
            url, json=initialize_request(), headers={**ACCEPT, "authorization": "Bearer u"}
        )
        assert answer.status_code == 200, answer.text
        token = answer.headers["mcp-session-id"]
        forgotten = upstream.seen[-1].issued
        assert forgotten and forgotten not in token  # the upstream's id travels signed and encoded
        ended = await http.delete(
            f"http://{upstream.endpoint}/mcp", headers={**ACCEPT, "mcp-session-id": forgotten}
        )
        assert ended.status_code in (200, 204), ended.text
        response = await http.post(
            url, json=ping, headers={**ACCEPT, "authorization": "Bearer u", "mcp-session-id": token}
        )
        assert response.status_code == 404 and response.json() == {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": -32600, "message": "Session not found"},
        }
        assert upstream.seen[-1].session == forgotten and upstream.seen[-1].status == 404


async def test_unreachable_upstream_is_a_clear_json_rpc_error(tmp_path: Path) -> None:
    gone = Upstream("gone")  # never started: nothing listens on its port
    async with gateway_over(tmp_path, weather("down", gone)) as gateway:
        url = f"{gateway.stack.mcp_base_url}/mcp/team/down"
        async with httpx.AsyncClient(timeout=10) as http:
            body = {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "initialize",
                "params": {"protocolVersion": "2025-11-25"},
            }
            response = await http.post(url, json=body, headers=ACCEPT)
        assert response.status_code == 502
        error = response.json()["error"]
        assert response.json()["id"] == 3 and error["code"] == -32603
        # A stable reason and the request id; the host and Envoy's reason are in Envoy's log only.
        pattern = r"upstream MCP server is unavailable \(request id ([0-9a-f-]{36})\)"
        match = re.fullmatch(pattern, error["message"])
        assert match, error["message"]
        line = await envoy_log_line(gateway, match.group(1))
        assert f"upstream MCP server {gone.endpoint} is unreachable: upstream connect error" in line, line


async def assert_sessions_stick(url: str, rounds: int) -> None:
    """Sessions through the gateway to a two-host server (`whoami` answers the host's label):
    each keeps answering from the host that created it, and both hosts get sessions."""
    answered_by: list[str] = []
    # Sequential sessions: Envoy runs 2 workers, each VM alternates hosts for new sessions,
    # so 6 sessions put at least 3 on one worker and so on both hosts.
    for _ in range(6):
        async with client(url) as session:
            first = only_text(await session.call_tool("whoami", {}))
            for _ in range(rounds):
                await session.list_tools()
                assert only_text(await session.call_tool("whoami", {})) == first
            answered_by.append(first)
    # Two sessions open at the same time, interleaved.
    async with client(url) as one, client(url) as two:
        firsts = [only_text(await s.call_tool("whoami", {})) for s in (one, two)]
        for _ in range(3):
            for session, first in zip((one, two), firsts, strict=True):
                assert only_text(await session.call_tool("whoami", {})) == first
    assert set(answered_by) == {"A", "B"}


async def test_sessions_stick_to_the_host_that_created_them(tmp_path: Path) -> None:
    a, b = Upstream("A"), Upstream("B", json_response=True)
    async with gateway_over(tmp_path, weather("pair", a, b), running=(a, b)) as gateway:
        url = f"{gateway.stack.mcp_base_url}/mcp/team/pair"
        await assert_sessions_stick(url, rounds=3)
    for upstream in (a, b):
        assert len(upstream.issued) >= 1
        for seen in upstream.seen:
            # Every request an upstream saw belongs to a session it created; none was refused.
            assert seen.status != 404, (upstream.label, seen)
            if seen.rpc_method != "initialize":
                assert seen.session in upstream.issued, (upstream.label, seen)
    assert a.issued.isdisjoint(b.issued)


async def assert_operator_view(session: Client, server_name: str, city: str) -> dict[str, Tool]:
    """What a client sees of the `weather` upstream through the gateway: the allow-list, the
    operator's override, a call answered by host A, and `secret` refused without reaching it.
    Returns the listed tools by name."""
    assert session.server_info is not None and session.server_info.name == server_name
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert sorted(tools) == ["alerts", "forecast", "whoami"]
    assert tools["forecast"].description == "Forecast, as the operator words it."
    assert tools["forecast"].title == "Forecast"
    assert tools["alerts"].description == "Weather alerts."
    result = await session.call_tool("forecast", {"city": city})
    assert not result.is_error and only_text(result) == f"A: sunny in {city}"
    with pytest.raises(MCPError) as refused:
        await session.call_tool("secret", {})
    assert refused.value.error.code == -32602
    assert refused.value.error.message == "unknown tool: secret"
    return tools


async def assert_stateless_clients_served(url: str, server_name: str) -> None:
    """Three clients in the SDK's default mode (it probes server/discover and speaks 2026-07-28:
    no initialize, no session) list, call and are refused a tool outside the allow-list."""
    for _ in range(3):
        http = httpx2.AsyncClient(timeout=httpx2.Timeout(15, read=15))
        async with Client(streamable_http_client(url, http_client=http)) as session:
            assert session.session.discover_result is not None
            await assert_operator_view(session, server_name, "Oslo")


async def test_stateless_clients_share_the_filters_upstream_session(
    one_upstream: tuple[Gateway, Upstream],
) -> None:
    gateway, upstream = one_upstream
    await assert_stateless_clients_served(f"{gateway.stack.mcp_base_url}/mcp/team/weather", "upstream-A")
    # The upstream only ever spoke its own (legacy) revision, in sessions the filter opened:
    # at most one per Envoy worker (2), reused by every stateless request.
    opened = [seen for seen in upstream.seen if seen.rpc_method == "initialize"]
    assert 1 <= len(opened) <= 2
    assert upstream.calls == ["forecast"] * 3
    for seen in upstream.seen:
        assert b"io.modelcontextprotocol/" not in seen.body
        assert seen.status in (200, 202), seen
        if seen.rpc_method != "initialize":
            assert seen.session in upstream.issued
            assert seen.headers["mcp-protocol-version"] == "2025-11-25"
