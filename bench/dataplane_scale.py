"""Memory and configuration scale: the mcpgw stack with 1, 100 and 1,000 servers of 10 tools.

For each size: start the stack (Envoy `--concurrency 1`) on a generated registry, then read
Envoy's RSS (`/proc/<pid>/status`), its `/memory` admin endpoint, the Wasm stats and the
filter's own `wasmcustom.mcpgw_vm_memory_bytes` gauge (the Wasm linear memory of a VM, set
by the filter after each configuration). Then edit every server at once (a new tool
description each) and time the new configuration until Envoy has applied all of it: from
the moment the control plane published it (its snapshot cache) to the newest
`extension_config_discovery.*.update_time` — the ECDS push, Envoy's ACK path and the filter's
`proxy_on_configure` for every server. Also times a one-server edit, and drives a short
`tools/call` load against the last server to show per-request cost does not grow with the
number of servers.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from dataplane_configs import CALL_BODY, server_yaml
from dataplane_proc import LoadSpec, Nginx, http_post, open_session, rss_kib, wrk
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2
from google.protobuf import wrappers_pb2

from mcpgw.envoyproc import EnvoyProcess
from mcpgw.stack import Stack, free_port, on_free_ports
from mcpgw.xds import types

TOOLS = 10
ECDS_PREFIX = "extension_config_discovery.http_filter.mcpgw/"


def ecds_state(envoy: EnvoyProcess) -> dict[str, tuple[str, int]]:
    """Per ECDS resource: (version_text, update_time in ms since the epoch)."""
    text = envoy.admin(
        "/stats?filter=^extension_config_discovery\\.http_filter\\.mcpgw/.*\\.(version_text|update_time)$", 10
    )
    versions: dict[str, str] = {}
    times: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        resource, _, stat = name.removeprefix(ECDS_PREFIX).rpartition(".")
        if stat == "version_text":
            versions[resource] = value.strip().strip('"')
        elif stat == "update_time":
            times[resource] = int(value)
    return {k: (v, times.get(k, 0)) for k, v in versions.items()}


async def wait_applied(
    envoy: EnvoyProcess, before: dict[str, tuple[str, int]], names: set[str], timeout: float
) -> dict[str, tuple[str, int]]:
    """Until every resource in `names` shows a version other than in `before`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = ecds_state(envoy)
        if all(n in now and now[n][0] != before.get(n, ("", 0))[0] for n in names):
            return now
        await asyncio.sleep(0.05)
    raise TimeoutError(f"configuration not applied to {len(names)} servers within {timeout:.0f}s")


def write_registry(registry: Path, servers: int, backend_port: int, edit: str = "") -> None:
    for i in range(servers):
        (registry / f"s{i:04d}.yaml").write_text(
            server_yaml("scale", f"s{i:04d}", backend_port, tools=TOOLS, extra=edit)
        )


async def one_size(work: Path, servers: int, backend_port: int, load_s: float) -> dict[str, Any]:
    registry = work / f"registry-{servers}"
    registry.mkdir(parents=True)
    write_registry(registry, servers, backend_port)
    envoy_dir = work / f"envoy-{servers}"
    envoy_dir.mkdir()
    stack = Stack(
        on_free_ports(
            registry,
            node_id=f"bench-scale-{servers}",
            envoy_concurrency=1,
            envoy_workdir=envoy_dir,
        )
    )
    started = time.perf_counter()
    await stack.start(ready_timeout=300)
    try:
        assert stack.envoy is not None and stack.control_plane is not None
        envoy = stack.envoy
        names = {f"scale/s{i:04d}" for i in range(servers)}
        state = await wait_applied(envoy, {}, names, 300)
        startup_s = time.perf_counter() - started
        last = f"{stack.mcp_base_url}/mcp/scale/s{servers - 1:04d}"
        session = open_session(last)
        status, text = http_post(last, CALL_BODY, headers=session)
        if status != 200 or '"Rex' not in text:
            raise RuntimeError(f"tools/call on {last}: {status} {text[:200]}")
        await asyncio.sleep(1.0)

        ecds = stack.control_plane.cache.snapshot.get(types.EXTENSION_CONFIG).resources
        raw_ecds = sum(len(r.packed.value) for r in ecds.values())
        raw_all = sum(
            len(r.packed.value)
            for tr in stack.control_plane.cache.snapshot.types.values()
            for r in tr.resources.values()
        )
        filter_json = 0
        for r in ecds.values():
            wasm = wasm_pb2.Wasm()
            r.message.typed_config.Unpack(wasm)
            text = wrappers_pb2.StringValue()
            wasm.config.configuration.Unpack(text)
            filter_json += len(text.value.encode())
        memory = json.loads(envoy.admin("/memory"))
        stats = envoy.stats("wasm")
        custom = envoy.stats("wasmcustom")
        before = {
            "envoy_rss_kib": rss_kib(envoy.pid),
            "heap_allocated": int(memory["allocated"]),
            "heap_size": int(memory["heap_size"]),
            "wasm_vm_count": stats.get("wasm.wasm_vm_count"),
            "wasm_vms_active": stats.get("wasm.envoy.wasm.runtime.v8.active"),
            "vm_memory_bytes": custom.get("wasmcustom.mcpgw_vm_memory_bytes"),
        }

        # Publish-time hook: the moment the control plane hands a new snapshot to the ADS server.
        published: list[float] = []
        cache = stack.control_plane.cache
        original = cache.set_resources

        def hooked(resources: Any, *hint: Any) -> list[str]:
            changed = original(resources, *hint)
            published.append(time.time())
            return changed

        cache.set_resources = hooked  # type: ignore[method-assign]

        # Every server changes at once: a new configuration of the whole size.
        wrote = time.time()
        write_registry(registry, servers, backend_port, edit=" (edited)")
        after_state = await wait_applied(envoy, state, names, 300)
        all_applied_ms = max(t for _, t in after_state.values())
        full = {
            "registry_write_to_published_ms": round((published[-1] - wrote) * 1000, 1) if published else None,
            "published_to_all_applied_ms": round(all_applied_ms - published[-1] * 1000, 1)
            if published
            else None,
            "registry_write_to_all_applied_ms": round(all_applied_ms - wrote * 1000, 1),
            "envoy_update_span_ms": all_applied_ms - min(t for _, t in after_state.values()),
        }
        await asyncio.sleep(1.0)
        memory2 = json.loads(envoy.admin("/memory"))
        after = {
            "envoy_rss_kib": rss_kib(envoy.pid),
            "heap_allocated": int(memory2["allocated"]),
            "vm_memory_bytes": envoy.stats("wasmcustom").get("wasmcustom.mcpgw_vm_memory_bytes"),
        }

        # One server edited: what an operator's typical change costs.
        one_times: list[float] = []
        for k in range(3):
            published.clear()
            target = servers - 1
            (registry / f"s{target:04d}.yaml").write_text(
                server_yaml("scale", f"s{target:04d}", backend_port, tools=TOOLS, extra=f" (edit {k})")
            )
            snap = ecds_state(envoy)
            done = await wait_applied(envoy, snap, {f"scale/s{target:04d}"}, 60)
            if published:
                one_times.append(done[f"scale/s{target:04d}"][1] - published[-1] * 1000)
        cache.set_resources = original  # type: ignore[method-assign]

        load = await wrk(last, "POST", CALL_BODY, LoadSpec(1, 16, load_s, 0.0), work, headers=session)
        return {
            "servers": servers,
            "tools": servers * TOOLS,
            "startup_to_all_applied_s": round(startup_s, 2),
            "raw_config_bytes": {"ecds_total": raw_ecds, "filter_configs": filter_json, "all_xds": raw_all},
            "before_edit": before,
            "full_update": full,
            "after_full_update": after,
            "one_server_edit_published_to_applied_ms": round(statistics.median(one_times), 1)
            if one_times
            else None,
            "call_on_last_server": {
                "rps": round(load["rps"]),
                "p50_us": load["p50_us"],
                "p99_us": load["p99_us"],
            },
        }
    finally:
        await stack.stop()


async def run(work: Path, sizes: tuple[int, ...], load_s: float = 3.0) -> dict[str, Any]:
    """Every size in turn on one nginx backend; `load_s`: seconds of tools/call load on each."""
    work.mkdir(parents=True, exist_ok=True)
    backend_port = free_port()
    nginx = Nginx(work / "nginx", backend_port)
    nginx.start()
    try:
        results = []
        for n in sizes:
            result = await one_size(work, n, backend_port, load_s)
            print(
                f"scale {n:>5} servers: RSS {result['before_edit']['envoy_rss_kib'] / 1024:.1f} MiB, "
                f"full update applied {result['full_update']['published_to_all_applied_ms']} ms",
                flush=True,
            )
            results.append(result)
        return {"sizes": results}
    finally:
        nginx.stop()
