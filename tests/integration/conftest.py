"""Fixtures that run the real gateway: demo backend, plugin server, control plane, Envoy.

Nothing here skips: a missing Envoy binary or an unbuilt filter fails the test with the
reason, because an integration suite that quietly skips proves nothing.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mcpgw.demo.petstore import RECORDED, RecordedRequest
from mcpgw.stack import DEFAULT_REGISTRY, Stack, free_port, on_free_ports
from tests.waiting import eventually


def envoy_client_headers(timeout_ms: int) -> dict[str, str]:
    """What Envoy's HTTP client adds to every REST call the filter makes, besides the tool's
    own headers: it marks the request internal and announces the tool's timeout."""
    return {"x-envoy-internal": "true", "x-envoy-expected-rq-timeout-ms": str(timeout_ms)}


def copy_registry(target: Path, backend_port: int) -> Path:
    """The example registry, pointed at a demo backend on `backend_port`."""
    shutil.copytree(DEFAULT_REGISTRY, target)
    for path in target.glob("*.yaml"):
        path.write_text(path.read_text().replace("127.0.0.1:18080", f"127.0.0.1:{backend_port}"))
    return target


class Gateway:
    """A running stack plus what tests need to look at it."""

    def __init__(self, stack: Stack, registry: Path) -> None:
        self.stack = stack
        self.registry = registry

    @property
    def url(self) -> str:
        return f"{self.stack.mcp_base_url}/mcp/default/petstore"

    @property
    def backend_requests(self) -> list[RecordedRequest]:
        assert self.stack.demo is not None
        return self.stack.demo.runner.app[RECORDED]


async def envoy_log_line(gateway: Gateway, text: str, timeout: float = 5.0) -> str:
    """The first line of the gateway's Envoy log that contains `text` (e.g. a request id).

    Access-log lines (JSON objects on Envoy's standard output, the same file) are not log lines.
    """
    envoy = gateway.stack.envoy
    assert envoy is not None

    def line() -> str | None:
        lines = envoy.log_path.read_text().splitlines()
        return next((li for li in lines if text in li and not li.startswith("{")), None)

    found: str = await eventually(line, timeout, f"an Envoy log line with {text!r}")
    return found


@contextlib.asynccontextmanager
async def running_gateway(
    workdir: Path, registry: Path, backend_port: int | None = None, **overrides: Any
) -> AsyncIterator[Gateway]:
    """The whole stack on free ports, serving `registry`; with `backend_port`, the demo backend runs there.

    `overrides` are further `StackOptions` fields, e.g. `xds_delta=True`.
    """
    envoy_dir = workdir / "envoy"
    envoy_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(
        on_free_ports(
            registry,
            demo_backend_port=backend_port,
            node_id="test-node",
            envoy_workdir=envoy_dir,
            **overrides,
        )
    )
    await stack.start(ready_timeout=60)
    try:
        yield Gateway(stack, registry)
    finally:
        await stack.stop()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """The example registry served against the demo backend."""
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    async with running_gateway(tmp_path, registry, backend_port) as running:
        yield running
