"""What a REST tool's caller gets when the backend is unreachable or slower than the tool's
timeout, streams its answer, streams past the response limit, or answers without a body.

Real Envoy, real filter, a real aiohttp backend started here; one backend endpoint is a port
nothing listens on.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from mcpgw.demo.petstore import RECORDED, RecordedRequest, record_requests
from mcpgw.httpserve import ServedApp, serve
from mcpgw.limits import ListenerLimits
from mcpgw.stack import free_port
from tests.integration.conftest import Gateway, envoy_client_headers, envoy_log_line, running_gateway
from tests.integration.mcphttp import call

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = 2048
TIMEOUT_MS = 400
# Request slots of each backend cluster (`--backend-max-requests`), small to reach the limit.
BACKEND_SLOTS = 2
CHUNK = b"y" * 500


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(3)
    return web.json_response({"late": True})


async def _chunked(request: web.Request) -> web.StreamResponse:
    """`count` chunks of 500 bytes, without content-length: only the stream shows the size."""
    response = web.StreamResponse(headers={"content-type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(int(request.query["count"])):
        await response.write(CHUNK)
        await asyncio.sleep(0.01)
    await response.write_eof()
    return response


async def _empty(request: web.Request) -> web.Response:
    return web.Response(status=204)


def backend_app() -> web.Application:
    app = web.Application(middlewares=[record_requests])
    app[RECORDED] = []
    app.router.add_get("/slow", _slow)
    app.router.add_get("/chunked", _chunked)
    app.router.add_delete("/empty", _empty)
    return app


def get(url: str) -> dict[str, Any]:
    return {"requestTemplate": {"url": url, "method": "GET"}}


def registry_documents(backend: ServedApp, dead_port: int) -> list[dict[str, Any]]:
    return [
        {
            "kind": "McpServer",
            "name": "rest",
            "backend": {
                "endpoints": [f"127.0.0.1:{backend.port}"],
                "host": "rest.internal",
                "timeoutMs": TIMEOUT_MS,
            },
            "limits": {"maxResponseBytes": LIMIT},
            "tools": [
                {"name": "slow", **get("/slow")},
                {"name": "threeChunks", **get("/chunked?count=3")},
                {"name": "tenChunks", **get("/chunked?count=10")},
                {"name": "empty", "requestTemplate": {"url": "/empty", "method": "DELETE"}},
            ],
        },
        {
            "kind": "McpServer",
            "name": "down",
            "backend": {"endpoints": [f"127.0.0.1:{dead_port}"], "host": "down.internal", "timeoutMs": 2000},
            # The error template is for the backend's answers, never for Envoy's own.
            "tools": [
                {"name": "unreachable", **get("/anything"), "errorResponseTemplate": "backend: {{.error}}"}
            ],
        },
    ]


@dataclass
class Setup:
    gateway: Gateway
    backend: ServedApp

    @property
    def seen(self) -> list[RecordedRequest]:
        return self.backend.runner.app[RECORDED]

    def url(self, name: str) -> str:
        return f"{self.gateway.stack.mcp_base_url}/mcp/default/{name}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("answers")
    backend = await serve(backend_app(), "127.0.0.1", 0)
    registry = workdir / "registry"
    registry.mkdir()
    documents = registry_documents(backend, dead_port=free_port())
    (registry / "answers.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    try:
        limits = ListenerLimits(backend_max_requests=BACKEND_SLOTS)
        async with running_gateway(workdir, registry, limits=limits) as gateway:
            yield Setup(gateway, backend)
    finally:
        await backend.close()


async def call_tool(url: str, name: str) -> dict[str, Any]:
    answer = await call(url, "tools/call", {"name": name, "arguments": {}})
    assert "result" in answer, answer
    return answer["result"]


def only_text(result: dict[str, Any]) -> str:
    [content] = result["content"]
    assert content["type"] == "text"
    return content["text"]


REQUEST_ID = re.compile(r" \(request id ([0-9a-f-]{36})\)$")


def internals_of(setup: Setup) -> list[str]:
    """What a client must never read: cluster names, backend addresses, Envoy's reset reasons."""
    backend = f"127.0.0.1:{setup.backend.port}"
    return [
        "mcpgw/",
        "cluster",
        backend,
        "127.0.0.1",
        "reset reason",
        "upstream connect error",
        "down.internal",
    ]


async def test_unreachable_backend_is_a_stable_tool_error_and_the_cause_is_logged(setup: Setup) -> None:
    result = await call_tool(setup.url("down"), "unreachable")
    assert result["isError"] is True
    reason = only_text(result)
    match = REQUEST_ID.search(reason)
    assert reason.startswith("backend unavailable (request id ") and match, reason
    assert not [word for word in internals_of(setup) if word in reason], reason
    # The operator finds the cause under the id the client quotes.
    logged = await envoy_log_line(setup.gateway, match.group(1))
    assert "/mcp/default/down" in logged and "mcpgw/default/down" in logged
    assert "upstream connect error" in logged and "connection failure" in logged, logged


async def test_tool_timeout_cuts_a_slow_backend(setup: Setup) -> None:
    started = time.monotonic()
    result = await call_tool(setup.url("rest"), "slow")
    elapsed = time.monotonic() - started
    assert result["isError"] is True
    reason = only_text(result)
    assert reason.startswith("backend did not answer in time (request id ") and REQUEST_ID.search(reason), (
        reason
    )
    # The backend sleeps 3 s; the tool allows 0.4 s (wide margin for a loaded machine).
    assert elapsed < 2.5, elapsed


async def test_a_backend_over_its_request_slots_is_busy_and_other_backends_are_not(setup: Setup) -> None:
    # 6 slow calls at once against a backend with 2 slots (BACKEND_SLOTS): 2 calling and at
    # most 2 waiting for a connection; the others are refused at once.
    started = time.monotonic()
    results = await asyncio.gather(*(call_tool(setup.url("rest"), "slow") for _ in range(6)))
    reasons = [only_text(r) for r in results]
    # Envoy refuses the call as it starts ("busy or unavailable") or answers 503 overloaded.
    busy = [r for r in reasons if r.startswith("backend busy") and "try again later (request id " in r]
    assert len(busy) >= 6 - 2 * BACKEND_SLOTS, reasons
    assert all(r["isError"] for r in results) and time.monotonic() - started < 3.0
    # Another server's backend has its own slots: it still answers meanwhile.
    assert only_text(await call_tool(setup.url("down"), "unreachable")).startswith("backend unavailable")
    # The operator sees the refusals in the cluster's overflow counters.
    stats = setup.gateway.stack.envoy.stats("cluster.mcpgw/default/rest.upstream_rq_")  # type: ignore[union-attr]
    overflows = {name: n for name, n in stats.items() if name.endswith("_overflow")}
    assert sum(overflows.values()) >= 1, stats


async def test_streamed_answer_is_assembled_from_its_chunks(setup: Setup) -> None:
    result = await call_tool(setup.url("rest"), "threeChunks")
    assert result == {"content": [{"type": "text", "text": (CHUNK * 3).decode()}], "isError": False}


async def test_streamed_answer_over_the_limit_is_an_error_result(setup: Setup) -> None:
    result = await call_tool(setup.url("rest"), "tenChunks")
    assert result == {
        "content": [
            {
                "type": "text",
                "text": f"upstream response of {10 * len(CHUNK)} bytes exceeds the limit of {LIMIT} bytes",
            }
        ],
        "isError": True,
    }


async def test_headers_only_answer_is_an_empty_success(setup: Setup) -> None:
    before = len(setup.seen)
    result = await call_tool(setup.url("rest"), "empty")
    assert result == {"content": [{"type": "text", "text": ""}], "isError": False}
    assert len(setup.seen) == before + 1
    seen = setup.seen[-1]
    assert (seen.method, seen.path, seen.body) == ("DELETE", "/empty", b"")
    assert seen.headers == {"host": "rest.internal", **envoy_client_headers(TIMEOUT_MS)}
