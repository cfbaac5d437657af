"""Envoy's `/ready` (on the stats listener) means "configured by the control plane": it fails while
no control plane answers (the stats listener opens with the others, once Envoy is initialized;
the admin's own `/ready` says 503), also past Envoy's default initial fetch timeouts (15 s for
CDS, then 15 s for LDS), and turns 200 once the first configuration arrives. Kubernetes'
readiness probe of the Envoy pods asks it.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

from mcpgw.bootstrap import BootstrapOptions, render
from mcpgw.envoyproc import EnvoyProcess
from mcpgw.stack import free_ports
from tests.integration.conftest import copy_registry, running_gateway
from tests.waiting import eventually

# Envoy's default initial_fetch_timeout is 15 s for CDS, then 15 s for LDS: without a control
# plane, Envoy 1.40 used to report LIVE (with nothing configured) after ~31 s (measured).
ENVOY_DEFAULT_INITIAL_FETCH = 2 * 15.0


def ready(port: int) -> tuple[int, str]:
    """What a probe of `/ready` on `port` sees; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode().strip()
    except OSError as error:
        return 0, str(error)


async def test_ready_only_once_the_control_plane_configured_envoy(tmp_path: Path) -> None:
    xds_port, admin_port, stats_port, backend_port = free_ports(4)
    bootstrap = render(
        BootstrapOptions(
            node_id="waiting-node",
            xds=(("127.0.0.1", xds_port),),
            admin_port=admin_port,
            stats=("127.0.0.1", stats_port),
        )
    )
    (tmp_path / "envoy").mkdir()
    envoy = EnvoyProcess(bootstrap, admin_port=admin_port, workdir=tmp_path / "envoy")
    await envoy.start()
    try:
        # Envoy runs and waits (its admin, on loopback, says so); the stats listener, like every
        # listener, opens only once Envoy is initialized: a probe fails until then.
        await eventually(lambda: ready(admin_port)[0] == 503, 30, "Envoy's admin answering")
        started = time.monotonic()
        while time.monotonic() - started < ENVOY_DEFAULT_INITIAL_FETCH + 5:
            assert ready(stats_port)[0] != 200, "Envoy reported ready with no control plane"
            assert ready(admin_port)[0] == 503, ready(admin_port)
            await asyncio.sleep(0.5)
        registry = copy_registry(tmp_path / "registry", backend_port)
        async with running_gateway(tmp_path, registry, backend_port, xds_port=xds_port):
            await eventually(lambda: ready(stats_port) == (200, "LIVE"), 30, "Envoy ready once configured")
    finally:
        await envoy.stop()
