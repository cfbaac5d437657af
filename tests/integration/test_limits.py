"""Resource limits through real Envoy: slow and idle clients, HTTP+SSE streams per client, the fd budget.

The gateway runs with small limits (1 s header timeout, 2 s idle timeout, 3 streams per client)
so each exhaustion is reached in a few seconds; the production defaults are in `mcpgw.limits`
and `BrokerSettings`, and `docs/security.md`.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mcpgw.broker import BrokerSettings
from mcpgw.limits import ListenerLimits, fd_reserve
from mcpgw.stack import free_port
from tests.integration.conftest import Gateway, copy_registry, envoy_log_line, running_gateway
from tests.integration.mcphttp import ACCEPT, initialize_request, open_session, rpc
from tests.waiting import eventually

LIMITS = ListenerLimits(request_headers_timeout_s=1.0, idle_timeout_s=2.0)
STREAMS_PER_CLIENT = 3
# One ended-session record per slot (1,024 slots): a few hundred DELETEs fill some slots.
MAX_ENDED = 1024
ACCEPT_SSE = {"accept": "text/event-stream"}


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Gateway]:
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    async with running_gateway(
        tmp_path,
        registry,
        backend_port,
        limits=LIMITS,
        broker_settings=BrokerSettings(max_streams_per_client=STREAMS_PER_CLIENT, max_streams=50),
        session_max_ended=MAX_ENDED,
    ) as gateway:
        yield gateway


def _listener_stats(gateway: Gateway) -> dict[str, int]:
    assert gateway.stack.envoy is not None
    return gateway.stack.envoy.stats("http.mcpgw.")


async def _closed_by_peer(reader: asyncio.StreamReader, within: float) -> bytes:
    """What the server sent before closing the connection; fails if it stays open `within` s."""
    received = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(4096), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"connection still open after {within}s (received {received!r})")


async def test_slowloris_connections_are_closed_by_the_header_timeout(limited: Gateway) -> None:
    port = limited.stack.options.listen_port
    before = _listener_stats(limited).get("http.mcpgw.downstream_rq_header_timeout", 0)
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(30)]
    try:
        # Headers that never end: a byte now and then, as a slowloris client sends them.
        for _, writer in connections:
            writer.write(b"POST /mcp/default/petstore HTTP/1.1\r\nHost: gw\r\nX-Slow: a")
            await writer.drain()
        started = time.monotonic()
        answers = await asyncio.gather(*(_closed_by_peer(reader, 6.0) for reader, _ in connections))
        elapsed = time.monotonic() - started
        assert elapsed < 6.0
        # Envoy answers 408 (or just closes) once the 1 s header timeout passes.
        assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers), answers[:3]
        after = await eventually(
            lambda: (
                _listener_stats(limited).get("http.mcpgw.downstream_rq_header_timeout", 0) >= before + 30
                and _listener_stats(limited)["http.mcpgw.downstream_rq_header_timeout"]
            ),
            5,
            "Envoy counts the header timeouts",
        )
        assert after >= before + 30
    finally:
        for _, writer in connections:
            writer.close()
    # The gateway still serves everyone else.
    async with httpx.AsyncClient(timeout=10) as http:
        await open_session(http, limited.url)


async def test_idle_connections_are_closed(limited: Gateway) -> None:
    port = limited.stack.options.listen_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # An MCP request the filter answers (initialize): the connection stays open after it.
        body = (
            b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
            b'"capabilities":{},"clientInfo":{"name":"idle","version":"1"}}}'
        )
        writer.write(
            b"POST /mcp/default/petstore HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\n"
            b"accept: application/json, text/event-stream\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower(), head
        # Keep-alive, no request in flight: closed after the 2 s idle timeout plus Envoy's drain
        # (drain_timeout, 5 s by default), not kept forever.
        started = time.monotonic()
        await _closed_by_peer(reader, 15.0)
        assert time.monotonic() - started >= 1.0
    finally:
        writer.close()
    await eventually(
        lambda: _listener_stats(limited).get("http.mcpgw.downstream_cx_idle_timeout", 0) >= 1,
        5,
        "Envoy counts the idle timeout",
    )


@contextlib.asynccontextmanager
async def _sse_clients(source: str, count: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """`count` HTTP clients whose connections come from the loopback address `source`."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(timeout=10, transport=httpx.AsyncHTTPTransport(local_address=source))
            )
            for _ in range(count)
        ]
        yield clients


async def test_the_broker_refuses_a_clients_stream_over_its_limit_and_serves_others(limited: Gateway) -> None:
    url = f"{limited.url}/sse"
    async with (
        contextlib.AsyncExitStack() as streams,
        _sse_clients("127.0.0.1", STREAMS_PER_CLIENT + 1) as mine,
    ):
        for client in mine[:STREAMS_PER_CLIENT]:
            response = await streams.enter_async_context(client.stream("GET", url, headers=ACCEPT_SSE))
            assert response.status_code == 200
        refused = await mine[-1].get(url, headers=ACCEPT_SSE)
        assert refused.status_code == 429, refused.text
        assert f"from this client (limit {STREAMS_PER_CLIENT})" in refused.json()["error"]
        # Another client address still gets its streams, and MCP over POST is unaffected.
        async with _sse_clients("127.0.0.2", 1) as (other,):
            async with other.stream("GET", url, headers=ACCEPT_SSE) as response:
                assert response.status_code == 200
            await open_session(other, limited.url)
        response = await mine[-1].post(limited.url, json=rpc("ping"), headers=ACCEPT)
        assert response.status_code in (200, 400), response.text  # answered, not refused

    # Closed streams are released: the same client opens one again.
    async def reopened() -> bool:
        async with (
            httpx.AsyncClient(timeout=10) as http,
            http.stream("GET", url, headers=ACCEPT_SSE) as response,
        ):
            return response.status_code == 200

    await eventually(reopened, 10, "a stream after the client closed its others")


async def test_envoys_connection_cap_fits_its_file_descriptor_limit(limited: Gateway) -> None:
    assert limited.stack.envoy is not None
    bootstrap = limited.stack.envoy.bootstrap
    cap = int(bootstrap.split("max_active_downstream_connections: ")[1].split()[0])
    limits = Path(f"/proc/{limited.stack.envoy.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    soft = int(line.split()[3])
    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert 2 * cap + fd_reserve(soft) <= soft, (cap, soft)


async def test_a_full_ended_session_table_keeps_deletes_working(limited: Gateway) -> None:
    """Hundreds of initialize + DELETE pairs against a 1-record-per-slot table: every DELETE
    is 204 (the oldest records make room), the session just ended stays ended, and Envoy
    counts what it had to forget."""

    async def end_one(http: httpx.AsyncClient) -> tuple[str, int]:
        opened = await http.post(limited.url, json=initialize_request(), headers=ACCEPT)
        assert opened.status_code == 200, opened.text
        token = opened.headers["mcp-session-id"]
        ended = await http.delete(limited.url, headers={"mcp-session-id": token})
        return token, ended.status_code

    async with httpx.AsyncClient(timeout=30) as http:
        statuses: list[int] = []
        for _ in range(20):
            batch = await asyncio.gather(*(end_one(http) for _ in range(15)))
            statuses += [status for _, status in batch]
        assert set(statuses) == {204}, sorted(set(statuses))
        # The last session ended is refused from now on (its record is the newest in its slot).
        token, status = await end_one(http)
        assert status == 204
        again = await http.post(
            limited.url,
            json=rpc("ping"),
            headers=ACCEPT | {"mcp-session-id": token, "mcp-protocol-version": "2025-11-25"},
        )
        assert again.status_code == 404, again.text
        assert (await http.delete(limited.url, headers={"mcp-session-id": token})).status_code == 404
    assert limited.stack.envoy is not None
    evicted = limited.stack.envoy.stats("wasmcustom.mcpgw_ended_sessions_evicted")
    assert sum(evicted.values()) > 0, evicted
    await envoy_log_line(limited, "the ended-session table is full")
