"""Property: a server document that passes validation is served by a real Envoy.

Documents are generated from the registry schema with the values that once slipped through
(gateway-owned header names, control characters and non-ASCII text in credentials, header
templates and header arguments: `tests/registrydocs.py`). Each one the validation accepts is
written through the admin API (whose precheck also runs the filter's own parser) and must then
be ACKed by Envoy, be listed by `tools/list` and answer a `tools/call` from the backend, while
the server that was there before keeps answering. Hypothesis drives the examples, so the
gateway runs on an event loop of its own thread for the module (hypothesis tests are plain
functions); 20 examples keep it within CI time.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, given, settings

from mcpgw.registry.validate import Invalid, parse_server
from tests.integration.conftest import Gateway, running_gateway
from tests.integration.mcphttp import call
from tests.integration.test_header_rules import AUTH, TOKEN, hdrs_document, nacks
from tests.integration.wirebackend import WireBackend
from tests.registrydocs import header_arguments, server_documents
from tests.waiting import eventually

T = TypeVar("T")


class LoopThread:
    """An event loop running in a thread of its own, for what must outlive one example."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Served:
    gateway: Gateway
    backend: WireBackend
    examples: list[int] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.gateway.stack.mcp_base_url}/mcp/default/{name}"

    @property
    def admin(self) -> str:
        assert self.gateway.stack.control_plane is not None
        return f"http://127.0.0.1:{self.gateway.stack.control_plane.status_port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir: Path = tmp_path_factory.mktemp("registry-property")
    loop = LoopThread()
    try:
        backend = loop.run(WireBackend().start(), 10)
        registry = workdir / "registry"
        registry.mkdir()
        (registry / "hdrs.yaml").write_text(yaml.safe_dump(hdrs_document(backend.port)))
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
                running = running_gateway(workdir, registry)
                gateway = loop.run(running.__aenter__(), 120)
                try:
                    yield Served(gateway, backend)
                finally:
                    loop.run(running.__aexit__(None, None, None), 60)
        finally:
            loop.run(backend.close(), 10)
    finally:
        loop.close()


async def _serve_and_call(served: Served, document: dict[str, Any], marker: str) -> None:
    async with httpx.AsyncClient(base_url=served.admin, timeout=10) as admin:
        response = await admin.put("/v1/servers/default/prop", json=document, headers=AUTH)
        assert response.status_code in (200, 201), response.text

        async def listed() -> bool:
            answer = await call(served.url("prop"), "tools/list")
            [tool] = answer["result"]["tools"]
            return bool(tool["description"].endswith(marker))

        await eventually(
            listed, 15, "the accepted document is listed through Envoy", ignore=(AssertionError,)
        )
        answer = await call(
            served.url("prop"), "tools/call", {"name": "probe", "arguments": header_arguments(document, "v")}
        )
        assert "result" in answer and not answer["result"].get("isError"), answer
        # Envoy ACKed every resource it was sent, and the other server still answers.
        status = (await admin.get("/status")).json()
        assert nacks(status) == []
        for node in status["nodes"]:
            for kind, state in node["types"].items():
                assert state["version_acked"] == state["version_sent"], (kind, state)
        assert "result" in await call(served.url("hdrs"), "tools/list")


@settings(
    max_examples=20,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
        HealthCheck.too_slow,
    ],
)
@given(generated=server_documents(name="prop"))
def test_every_document_validation_accepts_is_served_by_envoy(
    served: Served, generated: dict[str, Any]
) -> None:
    document = copy.deepcopy(generated)
    document["backend"] = {"endpoints": [f"127.0.0.1:{served.backend.port}"]}
    try:
        parse_server(document, "prop.yaml")
    except Invalid:
        assume(False)
    served.examples.append(len(served.examples) + 1)
    marker = f" #{len(served.examples)}"
    document["tools"][0]["description"] += marker
    asyncio.run(_serve_and_call(served, document, marker))
