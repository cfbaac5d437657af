"""A Wasm VM that crashes comes back: the failure policy the translator gives every plugin
(FAIL_RELOAD) makes Envoy reload a failed VM instead of answering 503 on that worker until it
restarts.

The real filter must not crash on any input, so a stand-in filter that traps on demand
(`crash_filter.zig`, built here) runs in a real Envoy with the PluginConfig the translator's own
helper builds. Every answer names the VM that gave it, so the test sees each worker's VM, crashes
them all and then sees every worker answer from a new one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from mcpgw.envoyproc import EnvoyProcess
from mcpgw.stack import free_port
from mcpgw.translate.envoy import HTTP_CONNECTION_MANAGER_TYPE, WASM_TYPE, wasm_plugin_config
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio

HERE = Path(__file__).parent
WORKERS = 2
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def build_crash_filter(work: Path) -> Path:
    out = work / "crash_filter.wasm"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "ziglang",
            "build-exe",
            str(HERE / "crash_filter.zig"),
            "-target",
            "wasm32-freestanding",
            "-fno-entry",
            "-rdynamic",
            "-O",
            "ReleaseSmall",
            f"-femit-bin={out}",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, f"building crash_filter.zig failed:\n{built.stderr}"
    return out


def bootstrap(listen: int, admin: int, wasm: Path) -> str:
    plugin = wasm_plugin_config("crash-filter", "", "crash-filter", {"local": {"filename": str(wasm)}}, "")
    manager = {
        "@type": HTTP_CONNECTION_MANAGER_TYPE,
        "stat_prefix": "test",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": []}]},
        "http_filters": [
            {"name": "crash-filter", "typed_config": {"@type": WASM_TYPE, "config": plugin}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    return json.dumps(
        {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {
                "listeners": [
                    {
                        "name": "test",
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": manager}]}],
                    }
                ]
            },
        }
    )


@pytest.fixture
async def envoy(tmp_path: Path) -> AsyncIterator[tuple[EnvoyProcess, str]]:
    wasm = build_crash_filter(tmp_path)
    listen, admin = free_port(), free_port()
    config = bootstrap(listen, admin, wasm)
    process = EnvoyProcess(config, admin_port=admin, concurrency=WORKERS, workdir=tmp_path)
    await process.start()
    try:
        await process.wait_ready(30, listeners=1)
        yield process, f"http://127.0.0.1:{listen}"
    finally:
        await process.stop()


async def get(url: str) -> tuple[int, str]:
    """One request on a fresh connection: Envoy hands each new connection to some worker."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        return response.status, await response.text()


async def vms_answering(base: str, connections: int = 24) -> list[tuple[int, str]]:
    return [await get(f"{base}/alive") for _ in range(connections)]


async def test_a_crashed_stand_in_filter_vm_is_reloaded_on_every_worker(
    envoy: tuple[EnvoyProcess, str],
) -> None:
    process, base = envoy
    # Every worker's VM, seen through fresh connections (24 of them all on one of two workers:
    # one chance in 2^23).
    before = await vms_answering(base)
    assert {status for status, _ in before} == {200}, before
    first_vms = {body for _, body in before}
    assert len(first_vms) == WORKERS, first_vms

    # Crash until no worker answers from a VM it had before; each crash fails one worker's VM.
    async def all_crashed() -> bool:
        await get(f"{base}/crash")
        answers = await vms_answering(base, 8)
        return not any(body in first_vms for status, body in answers if status == 200)

    await eventually(all_crashed, 20, "every worker's VM crashed", interval=0.1)

    # Reloaded after the backoff: every worker answers again, each from a new VM.
    async def all_back() -> list[tuple[int, str]] | None:
        answers = await vms_answering(base)
        fine = all(status == 200 for status, _ in answers) and len({b for _, b in answers}) == WORKERS
        return answers if fine else None

    after = await eventually(all_back, 20, "every worker answering from a reloaded VM", interval=0.2)
    assert not {body for _, body in after} & first_vms
    stats = process.stats("wasm.")
    assert any(name.endswith("vm_reload_success") and value >= WORKERS for name, value in stats.items()), (
        stats
    )
