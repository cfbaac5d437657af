"""Oversized backend answers do not cost Envoy their size (issue 12, defect 7).

Envoy buffers a backend's whole answer for the filter, which only then sees its size: 40
concurrent 30 MB answers grew Envoy by ~95 MiB that it never gave back. The bootstrap now caps
that buffer at the largest `maxResponseBytes` a registry may set (`http.async_response_buffer_limit`),
past which Envoy resets the backend stream. Real Envoy, real filter, an aiohttp backend that
streams 30 MB answers and records how much of each it got to send.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from mcpgw.httpserve import ServedApp, serve
from mcpgw.registry.validate import MAX_RESPONSE_BYTES
from tests.integration.conftest import Gateway, running_gateway
from tests.integration.test_mcp_upstream import wait_served
from tests.integration.test_stateless import headers as modern_headers
from tests.integration.test_stateless import request as modern_request
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

MIB = 1 << 20
ANSWER = 30 * MIB
CONCURRENT = 40
PIECE = b"x" * (64 * 1024)


@dataclass
class Backend:
    served: ServedApp
    # Bytes of each answer the backend got to write before Envoy stopped reading.
    sent: list[int] = field(default_factory=list)


def backend_app(record: list[int]) -> web.Application:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        try:
            while sent < ANSWER:
                await response.write(PIECE)
                sent += len(PIECE)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            record.append(sent)
        return response

    app = web.Application()
    app.router.add_get("/huge", huge)
    return app


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def allocated(setup: Setup) -> int:
    """Bytes Envoy's allocator has handed out and not yet been given back."""
    envoy = setup.gateway.stack.envoy
    assert envoy is not None
    return envoy.stats("server.memory_allocated")["server.memory_allocated"]


@dataclass
class Setup:
    gateway: Gateway
    backend: Backend

    def url(self, name: str) -> str:
        return f"{self.gateway.stack.mcp_base_url}/mcp/default/{name}"

    @property
    def envoy_pid(self) -> int:
        assert self.gateway.stack.envoy is not None
        return self.gateway.stack.envoy.pid


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("answers")
    sent: list[int] = []
    served = await serve(backend_app(sent), "127.0.0.1", 0)
    registry = workdir / "registry"
    registry.mkdir()
    documents = [
        {
            "kind": "McpServer",
            "name": name,
            "backend": {"endpoints": [f"127.0.0.1:{served.port}"], "timeoutMs": 30_000},
            **({"limits": {"maxResponseBytes": limit}} if limit else {}),
            "tools": [{"name": "huge", "requestTemplate": {"url": "/huge", "method": "GET"}}],
        }
        for name, limit in (("default", None), ("widest", MAX_RESPONSE_BYTES))
    ]
    (registry / "answers.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    try:
        async with running_gateway(workdir, registry) as gateway:
            ready = Setup(gateway, Backend(served, sent))
            for document in documents:
                await wait_served(ready.url(str(document["name"])))
            yield ready
    finally:
        await served.runner.cleanup()


async def call_huge(http: httpx.AsyncClient, url: str) -> dict[str, object]:
    body = modern_request("tools/call", {"name": "huge", "arguments": {}})
    response = await http.post(url, json=body, headers=modern_headers("tools/call", "huge"))
    assert response.status_code == 200, response.text[:300]
    result = response.json()["result"]
    assert isinstance(result, dict)
    return result


async def test_concurrent_oversized_answers_are_cut_off_and_keep_envoy_flat(setup: Setup) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        # Warm-up: pools, VMs and buffers of one such call exist before measuring.
        for name in ("default", "widest"):
            result = await call_huge(http, setup.url(name))
            assert result["isError"] is True
        before = rss_bytes(setup.envoy_pid)
        allocated_before = allocated(setup)
        setup.backend.sent.clear()
        results = await asyncio.gather(
            *(call_huge(http, setup.url("default" if i % 2 else "widest")) for i in range(CONCURRENT))
        )
        after = rss_bytes(setup.envoy_pid)
    for result in results:
        # A clear tool error for the caller, never an answer cut short.
        assert result["isError"] is True, result
        text = result["content"][0]["text"]  # type: ignore[index]
        # Envoy resets the stream at its buffer limit: to the filter that is a failed call.
        assert text.startswith("backend unavailable (request id "), text
    # Envoy stopped reading each answer near the cap instead of taking all 30 MB. What the
    # backend counts as sent also fills loopback socket buffers (several MiB each way) before
    # it notices the reset; on a busy machine that reached cap + 9 MiB.
    assert len(setup.backend.sent) == CONCURRENT
    assert max(setup.backend.sent) < MAX_RESPONSE_BYTES + 12 * MIB < ANSWER, setup.backend.sent
    # Envoy gave the answers' buffers back: what its allocator holds returns to where it was.
    # (RSS alone cannot say this: the allocator keeps freed pages, and how many answers were
    # buffered at once depends on how busy the machine is.)
    await eventually(
        lambda: allocated(setup) - allocated_before < 16 * MIB,
        10,
        "Envoy's allocated memory back near its level before the calls",
    )
    # And it never held more than the cap per answer at once: without the cap, all 40 answers
    # of 30 MB could be buffered whole (1.2 GB); with it, at most 40 x 8 MiB.
    assert after - before < CONCURRENT * 8 * MIB + 48 * MIB, (before, after)
