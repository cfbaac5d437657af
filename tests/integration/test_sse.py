"""HTTP+SSE (2024-11-05) through real Envoy: the route to the session broker, and the transport end to end.

Two groups:
- Envoy's side of the broker (route `{path}/sse` → cluster `mcpgw-broker`, no route timeout),
  checked with the translator's own routes and the rendered bootstrap in an Envoy without the
  MCP filter, so the broker is reached directly.
- The transport end to end through the MCP filter (it mints the session on GET /sse and hands
  answers to the broker): the `mcp` SDK's SSE client, and the cross-replica case of two Envoys
  on one control plane with their brokers on one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from google.protobuf import json_format
from mcp import Client
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from mcpgw.bootstrap import BootstrapOptions, render
from mcpgw.broker import Broker, BrokerSettings
from mcpgw.envoyproc import EnvoyProcess, envoy_binary
from mcpgw.registry.filesource import load_directory
from mcpgw.stack import DEFAULT_REGISTRY, free_port, free_ports
from mcpgw.translate.envoy import HTTP_CONNECTION_MANAGER_TYPE, ROUTE_CONFIG_NAME, GatewaySettings, PluginRef
from mcpgw.translate.envoy import translate as translate_registry
from mcpgw.xds import types
from tests.integration.conftest import Gateway, copy_registry, running_gateway
from tests.integration.mcphttp import ACCEPT as MCP_ACCEPT
from tests.integration.mcphttp import open_session
from tests.redisserver import RedisServer
from tests.unit.test_broker import CHANNEL, ENDPOINT, Events, message, sse_headers

PATH = "/mcp/default/petstore"
ACCEPT_SSE = {"accept": "text/event-stream"}


# -- Envoy's side: route and cluster -------------------------------------------------------------


def test_bootstrap_with_a_broker_is_a_config_envoy_accepts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcpgw.cli", "bootstrap", "--node-id", "edge-1", "--xds", "127.0.0.1:18000",
         "--broker", "127.0.0.1:28003"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    clusters = {c["name"]: c for c in yaml.safe_load(result.stdout)["static_resources"]["clusters"]}
    broker = clusters["mcpgw-broker"]
    address = broker["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "127.0.0.1", "port_value": 28003}
    assert broker["type"] == "STATIC" and "http2_protocol_options" not in json.dumps(broker)
    path = tmp_path / "bootstrap.yaml"
    path.write_text(result.stdout)
    check = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--base-id", str(free_port())],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def _routes_only_envoy(tmp_path: Path, broker_port: int) -> tuple[EnvoyProcess, int]:
    """The rendered bootstrap (with its `mcpgw-broker` cluster) plus a static listener serving
    exactly the translator's route configuration, with no MCP filter in front of the router."""
    listen_port, admin_port = free_ports(2)
    settings = GatewaySettings(PluginRef("http://127.0.0.1:1/plugin.wasm", "00" * 32))
    routes = translate_registry(load_directory(DEFAULT_REGISTRY), settings)[types.ROUTE][ROUTE_CONFIG_NAME]
    bootstrap = yaml.safe_load(
        render(
            BootstrapOptions(
                node_id="sse-route",
                xds=(("127.0.0.1", 1),),
                admin_port=admin_port,
                broker=("127.0.0.1", broker_port),
            )
        )
    )
    # No control plane here: keep the broker cluster, drop ADS.
    del bootstrap["dynamic_resources"]
    resources = bootstrap["static_resources"]
    resources["clusters"] = [c for c in resources["clusters"] if c["name"] == "mcpgw-broker"]
    manager = {
        "@type": HTTP_CONNECTION_MANAGER_TYPE,
        "stat_prefix": "mcpgw",
        "route_config": json_format.MessageToDict(routes, preserving_proto_field_name=True),
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    resources["listeners"] = [
        {
            "name": "mcpgw-http",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
            "filter_chains": [
                {
                    "filters": [
                        {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
                    ]
                }
            ],
        }
    ]
    workdir = tmp_path / "envoy"
    workdir.mkdir()
    return EnvoyProcess(yaml.safe_dump(bootstrap), admin_port=admin_port, workdir=workdir), listen_port


@contextlib.asynccontextmanager
async def routes_only(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[Broker, str]]:
    broker = Broker("127.0.0.1", 0, settings=BrokerSettings(**settings))
    await broker.start()
    envoy, listen_port = _routes_only_envoy(tmp_path, broker.port)
    try:
        await envoy.start()
        await envoy.wait_ready(30, listeners=1)
        yield broker, f"http://127.0.0.1:{listen_port}"
    finally:
        await envoy.stop()
        await broker.stop()


async def test_the_sse_route_leads_to_the_broker(tmp_path: Path) -> None:
    async with routes_only(tmp_path) as (broker, base), httpx.AsyncClient(timeout=10) as http:
        # Without the filter's headers the broker refuses: this 400 is the broker's, via Envoy.
        response = await http.get(f"{base}{PATH}/sse", headers=ACCEPT_SSE)
        assert response.status_code == 400
        assert "x-mcpgw-sse-channel" in response.json()["error"]
        assert response.headers["server"] == "envoy" and "x-envoy-upstream-service-time" in response.headers
        # Only that exact path goes to the broker.
        for other in (f"{PATH}/sse/more", f"{PATH}/ss", PATH):
            response = await http.get(f"{base}{other}")
            assert response.status_code == 503, other
            assert "x-envoy-upstream-service-time" not in response.headers
        assert broker.bus.stream_count == 0


async def test_a_stream_through_envoy_is_not_cut_and_carries_messages(tmp_path: Path) -> None:
    # Envoy's default route timeout is 15 s; the route sets none. 20 s with a 1 s keep-alive.
    async with routes_only(tmp_path, keepalive=1.0) as (broker, base), httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", f"{base}{PATH}/sse", headers=sse_headers() | ACCEPT_SSE) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            events = Events(response)
            assert await events.next() == ("endpoint", ENDPOINT)
            started, keepalives = time.monotonic(), 0
            published: list[dict[str, Any]] = []
            received: list[dict[str, Any]] = []
            while time.monotonic() - started < 20:
                event, data = await events.next(timeout=3)
                if event == "comment":
                    keepalives += 1
                    if keepalives % 5 == 0:
                        published.append(message(keepalives))
                        publish = await http.post(f"{broker.url}/v1/sse/{CHANNEL}", json=published[-1])
                        assert publish.status_code == 202
                else:
                    assert event == "message", (event, data)
                    received.append(json.loads(data))
            assert keepalives >= 17
            # Still open after 20 s: a message published now arrives, after all the others.
            published.append(message(99))
            assert (await http.post(f"{broker.url}/v1/sse/{CHANNEL}", json=published[-1])).status_code == 202
            while len(received) < len(published):
                received.append(await events.message())
            assert received == published


# -- End to end through the MCP filter (needs the filter's SSE transport: branch `sess`) -----------

STATELESS = "2026-07-28"
STATELESS_META = {
    "io.modelcontextprotocol/protocolVersion": STATELESS,
    "io.modelcontextprotocol/clientCapabilities": {},
}


async def test_sdk_sse_client_lists_and_calls_tools(gateway: Gateway) -> None:
    async with Client(sse_client(f"{gateway.url}/sse"), mode="legacy") as client:
        assert client.server_info is not None and client.server_info.name == "default/petstore"
        tools = [tool.name for tool in (await client.list_tools()).tools]
        assert tools == ["listPets", "getPet", "createPet", "describePet"]
        result = await client.call_tool("describePet", {"id": 2})
        assert not result.is_error and result.content[0].text == "Tom is a cat (id 2)."
        result = await client.call_tool("describePet", {"id": 99})
        assert result.is_error


async def test_sdk_sse_client_gets_an_error_when_redis_stops(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    async with running_gateway(tmp_path, registry, backend_port, broker_redis=redis_server.url) as gateway:
        async with Client(sse_client(f"{gateway.url}/sse"), mode="legacy") as client:
            result = await client.call_tool("describePet", {"id": 2})
            assert result.content[0].text == "Tom is a cat (id 2)."
            redis_server.stop()
            stopped = time.monotonic()
            with pytest.raises(MCPError, match="Connection closed"):
                await asyncio.wait_for(client.call_tool("describePet", {"id": 2}), 5)
            assert time.monotonic() - stopped < 5
        # Streamable HTTP does not depend on Redis.
        async with Client(gateway.url, mode="legacy") as client:
            result = await client.call_tool("describePet", {"id": 2})
            assert result.content[0].text == "Tom is a cat (id 2)."


async def test_sse_post_without_or_with_a_bad_session_is_refused(gateway: Gateway) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        response = await http.post(f"{gateway.url}/message", json=body)
        assert response.status_code == 400
        response = await http.post(f"{gateway.url}/message?sessionId=not-a-session", json=body)
        assert response.status_code == 404
        # Client-sent broker headers never reach the broker: the filter replaces them.
        async with http.stream("GET", f"{gateway.url}/sse", headers=sse_headers() | ACCEPT_SSE) as stream:
            assert stream.status_code == 200
            event, endpoint = await Events(stream).next()
            assert event == "endpoint" and endpoint != ENDPOINT
            assert endpoint.startswith(f"{PATH}/message?sessionId=")


class Replica:
    """One Envoy (with its own broker) of a two-Envoy gateway; both share one listener port."""

    def __init__(self, name: str, envoy: EnvoyProcess, broker: Broker) -> None:
        self.name, self.envoy, self.broker = name, envoy, broker

    def requests(self) -> int:
        return self.envoy.stats("http.mcpgw.downstream_rq_total").get("http.mcpgw.downstream_rq_total", 0)


async def pinned(url: str, target: Replica, other: Replica, attempts: int = 60) -> httpx.AsyncClient:
    """A client whose one connection landed on `target`'s Envoy.

    Both Envoys listen on one port (SO_REUSEPORT) and the kernel spreads connections between
    them, so connect until one lands on `target`, told by the Envoys' request counters.
    """
    for _ in range(attempts):
        client = httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=1))
        before = (target.requests(), other.requests())
        await client.get(f"{url}/")  # any request: the 404 of the catch-all route
        after = (target.requests(), other.requests())
        if after[0] == before[0] + 1 and after[1] == before[1]:
            return client
        await client.aclose()
    raise AssertionError(f"no connection reached {target.name} in {attempts} attempts")


CALL_PET_3 = {
    "jsonrpc": "2.0",
    "id": 9,
    "method": "tools/call",
    "params": {"name": "describePet", "arguments": {"id": 3}},
}


async def stateless_call(http: httpx.AsyncClient, url: str, pet: int) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "describePet", "arguments": {"id": pet}, "_meta": STATELESS_META},
    }
    headers = {
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": STATELESS,
        "mcp-method": "tools/call",
        "mcp-name": "describePet",
    }
    response = await http.post(url, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["result"]["content"][0]["text"])


@contextlib.asynccontextmanager
async def two_replicas(
    tmp_path: Path, redis_url: str | None
) -> AsyncIterator[tuple[Gateway, Replica, Replica]]:
    """One control plane; Envoy A (the stack's) and Envoy B, each with its own broker on one Redis
    (`redis_url` None: B uses A's broker, one in-process bus; never a broker of its own without
    Redis, where a POST through B would find no stream held through A)."""
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    async with running_gateway(tmp_path, registry, backend_port, broker_redis=redis_url) as gateway:
        stack = gateway.stack
        assert stack.envoy is not None and stack.broker is not None and stack.control_plane is not None
        broker_b = stack.broker
        if redis_url is not None:
            broker_b = Broker("127.0.0.1", 0, redis_url=redis_url)
            await broker_b.start()
        admin_port = free_port()
        (tmp_path / "envoy-b").mkdir()
        envoy_b = EnvoyProcess(
            render(
                BootstrapOptions(
                    node_id="test-node-b",
                    xds=(("127.0.0.1", stack.control_plane.xds_port),),
                    admin_port=admin_port,
                    broker=("127.0.0.1", broker_b.port),
                )
            ),
            admin_port=admin_port,
            workdir=tmp_path / "envoy-b",
        )
        try:
            await envoy_b.start()
            await envoy_b.wait_ready(60, listeners=1)
            yield gateway, Replica("A", stack.envoy, stack.broker), Replica("B", envoy_b, broker_b)
        finally:
            await envoy_b.stop()
            if broker_b is not stack.broker:
                await broker_b.stop()


async def test_stream_on_one_replica_posts_on_the_other_then_redis_stops(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with two_replicas(tmp_path, redis_server.url) as (gateway, a, b):
        base = gateway.stack.mcp_base_url
        on_a, on_b = await pinned(base, a, b), await pinned(base, b, a)
        try:
            async with on_a.stream("GET", f"{gateway.url}/sse", headers=ACCEPT_SSE) as stream:
                assert stream.status_code == 200
                events = Events(stream)
                event, endpoint = await events.next()
                assert event == "endpoint" and endpoint.startswith(f"{PATH}/message?sessionId=")
                assert a.broker.bus.stream_count == 1 and b.broker.bus.stream_count == 0
                a_before, b_before = a.requests(), b.requests()

                messages: list[dict[str, Any]] = [
                    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                        "protocolVersion": "2024-11-05", "capabilities": {},
                        "clientInfo": {"name": "cross-replica", "version": "1"}}},
                    {"jsonrpc": "2.0", "method": "notifications/initialized"},
                    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                    *({"jsonrpc": "2.0", "id": 3 + n, "method": "tools/call",
                       "params": {"name": "describePet", "arguments": {"id": 1 + n % 3}}} for n in range(10)),
                ]  # fmt: skip
                for body in messages:
                    response = await on_b.post(f"{base}{endpoint}", json=body)
                    assert response.status_code == 202, response.text
                answers = [await events.message() for _ in range(12)]
                assert [answer["id"] for answer in answers] == list(range(1, 13))
                assert answers[0]["result"]["protocolVersion"] == "2024-11-05"
                assert len(answers[1]["result"]["tools"]) == 4
                assert all("result" in answer for answer in answers[2:])
                # Every POST went through Envoy B, and none through A.
                assert b.requests() - b_before == len(messages) and a.requests() == a_before

                redis_server.stop()
                stopped = time.monotonic()
                event, data = await events.skip_comments(timeout=5)
                assert event == "error" and "session bus" in json.loads(data)["error"]
                assert time.monotonic() - stopped < 5

            # Streamable HTTP does not need Redis: both replicas still answer, statelessly and in
            # sessions, and a session issued by one replica is valid on the other (signed tokens,
            # no shared session store).
            assert await stateless_call(on_a, gateway.url, 2) == "Tom is a cat (id 2)."
            assert await stateless_call(on_b, gateway.url, 2) == "Tom is a cat (id 2)."
            from_a, from_b = await open_session(on_a, gateway.url), await open_session(on_b, gateway.url)
            for client, session in ((on_b, from_a), (on_a, from_b)):
                answer = await client.post(gateway.url, json=CALL_PET_3, headers=MCP_ACCEPT | session)
                assert answer.status_code == 200, answer.text
                assert answer.json()["result"]["content"][0]["text"] == "Nemo is a fish (id 3)."
            # A new SSE stream is refused with a clear error rather than hanging.
            response = await asyncio.wait_for(on_a.get(f"{gateway.url}/sse", headers=ACCEPT_SSE), 5)
            assert response.status_code == 503
        finally:
            await on_a.aclose()
            await on_b.aclose()
