"""A flood is answered with 503s, not an out-of-memory kill: Envoy's overload manager (issue 14).

The bootstrap measures Envoy's heap against `--max-heap` (`envoy.resource_monitors.fixed_heap`).
Real Envoy with a small heap limit, real filter, a flood of raw clients that each start a large
request body (near the server's `maxRequestBytes`) and then stall, as slow senders do: Envoy
must hold each started body for the filter, so without the overload manager the flood grows its
heap by its whole size. With it, Envoy stays alive, resets the streams holding the most memory,
answers new requests with 503, and serves again (200) once the flood has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
import yaml

from mcpgw.envoyproc import EnvoyProcess
from mcpgw.stack import free_port
from tests.integration.conftest import Gateway, running_gateway
from tests.integration.test_mcp_upstream import wait_served
from tests.integration.test_stateless import headers as modern_headers
from tests.integration.test_stateless import request as modern_request
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

MIB = 1 << 20
# Small enough that the flood below is several times larger, large enough for Envoy's own
# configuration (~15 MiB of heap with this registry) to leave room for ordinary requests.
MAX_HEAP = 64 * MIB
MAX_REQUEST = 8 * MIB
# Each flooding client announces an 8 MiB body and sends 6 MiB of it, then stalls.
SENT = 6 * MIB
# At most this many at once: 40 x 6 MiB = 240 MiB, almost four times the heap limit.
FLOODERS = 40
PIECE = b"x" * (256 * 1024)


@dataclass
class Setup:
    gateway: Gateway

    @property
    def envoy(self) -> EnvoyProcess:
        assert self.gateway.stack.envoy is not None
        return self.gateway.stack.envoy

    @property
    def port(self) -> int:
        return int(self.gateway.stack.mcp_base_url.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        return f"{self.gateway.stack.mcp_base_url}/mcp/default/big"

    def heap(self) -> int:
        """Envoy's heap in use, as fixed_heap measures it (reserved - unmapped - free)."""
        memory = json.loads(self.envoy.admin("/memory"))
        return int(memory["heap_size"]) - int(memory["pageheap_unmapped"]) - int(memory["pageheap_free"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("overload")
    registry = workdir / "registry"
    registry.mkdir()
    document = {
        "kind": "McpServer",
        "name": "big",
        # Never called: tools/list is answered by the filter.
        "backend": {"endpoints": [f"127.0.0.1:{free_port()}"]},
        "limits": {"maxRequestBytes": MAX_REQUEST},
        "tools": [{"name": "t", "requestTemplate": {"url": "/t", "method": "GET"}}],
    }
    (registry / "big.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    async with running_gateway(workdir, registry, envoy_max_heap_bytes=MAX_HEAP) as gateway:
        ready = Setup(gateway)
        await wait_served(ready.url)
        yield ready


async def list_tools(url: str) -> httpx.Response:
    """A small stateless tools/list on a new connection (a new client arriving)."""
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, json=modern_request("tools/list"), headers=modern_headers("tools/list"))


async def start_large_body(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that announces a MAX_REQUEST body, sends SENT bytes of it and then stalls."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in modern_headers("tools/list").items())
    start = f"POST /mcp/default/big HTTP/1.1\r\nhost: 127.0.0.1\r\n{head}content-length: {MAX_REQUEST}\r\n"
    writer.write(f"{start}\r\n".encode())
    with contextlib.suppress(ConnectionError):
        for _ in range(SENT // len(PIECE)):
            writer.write(PIECE)
            await writer.drain()
    return reader, writer


async def test_a_flood_of_large_bodies_gets_503_and_envoy_recovers(setup: Setup) -> None:
    envoy = setup.envoy
    idle_heap = setup.heap()
    assert idle_heap < MAX_HEAP * 0.5, f"Envoy's idle heap {idle_heap >> 20} MiB leaves no room for the test"
    ok = await list_tools(setup.url)
    assert ok.status_code == 200, ok.text

    flood: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    statuses: list[int] = []
    refusals: list[str] = []
    peak = idle_heap
    try:
        for _ in range(FLOODERS):
            flood.append(await start_large_body(setup.port))
            # Let the overload manager measure (every 0.25 s) before the next client arrives.
            await asyncio.sleep(0.3)
            peak = max(peak, setup.heap())
            probe = await list_tools(setup.url)
            statuses.append(probe.status_code)
            if probe.status_code == 503:
                refusals.append(probe.text)
            assert envoy.process is not None and envoy.process.returncode is None, envoy.log_tail()
        stats = envoy.stats()
    finally:
        for _, writer in flood:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    # New clients were refused with Envoy's overload answer while the heap was full...
    assert 503 in statuses, statuses
    assert all(text == "envoy overloaded" for text in refusals), refusals[:3]
    # ...and counted as such (what an operator's alert reads).
    assert stats["http.mcpgw.downstream_rq_overload_close"] >= statuses.count(503), stats
    assert stats["overload.envoy.overload_actions.shrink_heap.shrink_count"] > 0, stats
    # The flood never took Envoy far past its limit: it holds each started body (measured: a
    # peak of 85 MiB), but refuses new ones. With an 8 GiB limit the same flood peaked at 281 MiB.
    assert peak < 2 * MAX_HEAP, f"peak heap {peak >> 20} MiB"
    # Once the flood has gone, Envoy serves again, still the same process.
    await eventually(
        lambda: (
            envoy.stats("overload.envoy.overload_actions.stop_accepting_requests.active")[
                "overload.envoy.overload_actions.stop_accepting_requests.active"
            ]
            == 0
        ),
        15,
        "the overload to end",
    )
    recovered = await list_tools(setup.url)
    assert recovered.status_code == 200, recovered.text
    assert envoy.process is not None and envoy.process.returncode is None
