"""Data-plane benchmark: the same tool call through every way of serving it, side by side.

    .venv/bin/python bench/dataplane.py [--duration 5] [--repeats 3] [--skip-scale]

Starts one nginx backend, a plain proxy Envoy, an Envoy with Envoy's native
`mcp_json_rest_bridge`, the mcpgw stack (plugin server, control plane, Envoy with our
filter) and a Python MCP server built with the `mcp` SDK; drives each with `wrk` (one
thread, fixed connections) in interleaved rounds and keeps the median of each figure.
Every Envoy runs the same binary with the same flags (`--concurrency 1`, log level
warning). Then measures memory with 1, 100 and 1,000 servers configured
(`dataplane_scale.py`). Writes `bench/results/dataplane.json` and `dataplane.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dataplane_hotpath
import dataplane_report
import dataplane_scale
from dataplane_configs import CALL_BODY, INIT_BODY, LIST_BODY, server_yaml, static_envoy
from dataplane_proc import (
    LoadSpec,
    Nginx,
    ensure_tool,
    http_post,
    open_session,
    rss_kib,
    stop_process,
    wait_http,
    wrk,
)

from mcpgw.envoyproc import EnvoyProcess, envoy_binary
from mcpgw.stack import Stack, free_port, on_free_ports

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
CONCURRENCY = 1
PLUGIN = REPO / "plugin-server" / "plugins" / "mcp-server"


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str  # "call", "list", "initialize"
    url: str
    method: str
    body: str
    expect: str  # a substring every correct answer contains
    envoy_pid: int | None
    connections: int | None = None  # None: the run's default (throughput); 1: unloaded latency
    headers: Mapping[str, str] | None = None  # e.g. the MCP session of the mcpgw runs


async def start_static_envoy(workdir: Path, backend_port: int, *, native: bool) -> tuple[EnvoyProcess, int]:
    listen, admin = free_port(), free_port()
    envoy = EnvoyProcess(
        static_envoy(listen, admin, backend_port, native=native),
        admin_port=admin,
        concurrency=CONCURRENCY,
        workdir=workdir,
    )
    await envoy.start()
    await envoy.wait_ready(30, listeners=1)
    return envoy, listen


def start_python_server(workdir: Path, backend_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = (workdir / "python-mcp.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "dataplane_python.py"),
            "--port",
            str(port),
            "--backend",
            f"http://127.0.0.1:{backend_port}",
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        cwd=HERE,
        start_new_session=True,
    )
    # Any answer (405 for GET) means uvicorn is up.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            http_post(f"http://127.0.0.1:{port}/mcp", LIST_BODY, timeout=1)
            return process, port
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(
                    f"python MCP server exited: {(workdir / 'python-mcp.log').read_text()[-2000:]}"
                ) from None
            time.sleep(0.2)
    raise TimeoutError("python MCP server did not start")


def scenarios_proxy_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/pets/1"


def check(scenario: Scenario) -> None:
    """One request by hand: the scenario must answer correctly before it is measured."""
    if scenario.method == "GET":
        from dataplane_proc import http_get

        text = http_get(scenario.url)
    else:
        status, text = http_post(scenario.url, scenario.body, headers=scenario.headers)
        if status != 200:
            raise RuntimeError(f"{scenario.name}: HTTP {status}: {text}")
    if scenario.expect not in text or '"isError":true' in text:
        raise RuntimeError(f"{scenario.name}: unexpected answer {text[:300]}")


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rps", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us")
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["rps_runs"] = [round(r["rps"]) for r in runs]
    out["requests"] = sum(r["requests"] for r in runs)
    out["errors"] = sum(
        r[f"err_{k}"] for r in runs for k in ("connect", "read", "write", "status", "timeout")
    )
    rss = [r["envoy_rss_kib"] for r in runs if r.get("envoy_rss_kib")]
    out["envoy_rss_kib"] = max(rss) if rss else None
    return out


def versions() -> dict[str, str]:
    def first_line(*cmd: str) -> str:
        r = subprocess.run(cmd, capture_output=True, text=True)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "?"

    from importlib.metadata import version

    wasm = next(iter(sorted(PLUGIN.glob("*/plugin.wasm"))), None)
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    build_py = (REPO / "wasm-filters" / "build.py").read_text()
    mode = next((ln.split('"')[1] for ln in build_py.splitlines() if ln.startswith("OPTIMIZE = ")), "?")
    return {
        "machine": f"{cpu}, {os.cpu_count()} vCPU, {mem_kib // 1024} MiB RAM",
        "kernel": platform.release(),
        "envoy": first_line(envoy_binary(), "--version").split("version: ")[-1],
        "wrk": first_line(ensure_tool("wrk", "wrk"), "-v"),
        "nginx": first_line(ensure_tool("nginx", "nginx-light"), "-v"),
        "python": platform.python_version(),
        "mcp_sdk": version("mcp"),
        "uvicorn": version("uvicorn"),
        "zig": first_line(sys.executable, "-m", "ziglang", "version"),
        "filter_build": mode,
        "filter_wasm_bytes": str(wasm.stat().st_size) if wasm else "?",
        "filter_sha256": hashlib.sha256(wasm.read_bytes()).hexdigest()[:16] if wasm else "?",
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = LoadSpec(
        threads=args.threads, connections=args.connections, duration_s=args.duration, warmup_s=args.warmup
    )
    work = Path(tempfile.mkdtemp(prefix="mcpgw-bench-dp-"))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    backend_port = free_port()
    nginx = Nginx(work / "nginx", backend_port)
    started: list[Any] = []
    python: subprocess.Popen[bytes] | None = None
    stack: Stack | None = None
    try:
        nginx.start()
        (work / "proxy").mkdir()
        (work / "native").mkdir()
        proxy, proxy_port = await start_static_envoy(work / "proxy", backend_port, native=False)
        started.append(proxy)
        native, native_port = await start_static_envoy(work / "native", backend_port, native=True)
        started.append(native)

        registry = work / "registry"
        registry.mkdir()
        (registry / "pets.yaml").write_text(server_yaml("bench", "pets", backend_port))
        (work / "mcpgw").mkdir()
        stack = Stack(
            on_free_ports(
                registry,
                node_id="bench-mcpgw",
                envoy_concurrency=CONCURRENCY,
                envoy_workdir=work / "mcpgw",
            )
        )
        await stack.start(ready_timeout=60)
        assert stack.envoy is not None
        mcpgw_url = f"{stack.mcp_base_url}/mcp/bench/pets"
        session = open_session(mcpgw_url)
        python, python_port = start_python_server(work, backend_port)
        wait_http(f"http://127.0.0.1:{backend_port}/v1/pets/1", None)

        backend_url = f"http://127.0.0.1:{backend_port}/v1/pets/1"
        native_url = f"http://127.0.0.1:{native_port}/mcp"
        scenarios = [
            Scenario("floor", "call", backend_url, "GET", "", '"Rex"', None),
            Scenario(
                "proxy", "call", f"http://127.0.0.1:{proxy_port}/v1/pets/1", "GET", "", '"Rex"', proxy.pid
            ),
            Scenario("mcpgw", "call", mcpgw_url, "POST", CALL_BODY, "Rex", stack.envoy.pid, headers=session),
            Scenario("native", "call", native_url, "POST", CALL_BODY, "Rex", native.pid),
            Scenario("python", "call", f"http://127.0.0.1:{python_port}/mcp", "POST", CALL_BODY, "Rex", None),
            Scenario(
                "mcpgw", "list", mcpgw_url, "POST", LIST_BODY, '"getPet"', stack.envoy.pid, headers=session
            ),
            Scenario("native", "list", native_url, "POST", LIST_BODY, '"getPet"', native.pid),
            Scenario("mcpgw", "initialize", mcpgw_url, "POST", INIT_BODY, "protocolVersion", stack.envoy.pid),
            Scenario("native", "initialize", native_url, "POST", INIT_BODY, "protocolVersion", native.pid),
            # One connection: latency without queueing, for "what does the filter add per request".
            Scenario("proxy", "call@c1", scenarios_proxy_url(proxy_port), "GET", "", '"Rex"', proxy.pid, 1),
            Scenario("mcpgw", "call@c1", mcpgw_url, "POST", CALL_BODY, "Rex", stack.envoy.pid, 1, session),
            Scenario("native", "call@c1", native_url, "POST", CALL_BODY, "Rex", native.pid, 1),
        ]
        for scenario in scenarios:
            check(scenario)
        idle_rss = {
            "proxy": rss_kib(proxy.pid),
            "native": rss_kib(native.pid),
            "mcpgw": rss_kib(stack.envoy.pid),
        }
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {(s.group, s.name): [] for s in scenarios}
        for round_no in range(args.repeats):
            for scenario in scenarios:
                run_spec = (
                    spec if scenario.connections is None else replace(spec, connections=scenario.connections)
                )
                await wrk(
                    scenario.url,
                    scenario.method,
                    scenario.body,
                    run_spec,
                    work,
                    warmup=True,
                    headers=scenario.headers,
                )
                result = await wrk(
                    scenario.url, scenario.method, scenario.body, run_spec, work, headers=scenario.headers
                )
                if scenario.envoy_pid is not None:
                    result["envoy_rss_kib"] = rss_kib(scenario.envoy_pid)
                runs[(scenario.group, scenario.name)].append(result)
                print(
                    f"round {round_no + 1}/{args.repeats} {scenario.group:<10} {scenario.name:<7} "
                    f"{result['rps']:>9.0f} req/s  p50 {result['p50_us']:>6} µs  "
                    f"p99 {result['p99_us']:>6} µs",
                    flush=True,
                )
        memory = {
            "mcpgw_admin_memory": json.loads(stack.envoy.admin("/memory")),
            "native_admin_memory": json.loads(native.admin("/memory")),
            "mcpgw_wasm_stats": {k: v for k, v in stack.envoy.stats("wasm").items()},
        }
        scenario_results = {f"{g}/{n}": median_of(r) for (g, n), r in runs.items()}
    finally:
        if python is not None:
            stop_process(python)
        if stack is not None:
            await stack.stop()
        for envoy in started:
            await envoy.stop()
        nginx.stop()

    load_after = Path("/proc/loadavg").read_text().split()[:3]
    try:
        scale = None if args.skip_scale else await dataplane_scale.run(work / "scale", (1, 100, 1000))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    hotpath = dataplane_hotpath.run()
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {
            "envoy_flags": f"--concurrency {CONCURRENCY} -l warning "
            "(same binary and flags for proxy, native, mcpgw)",
            "load": f"wrk -t{spec.threads} -c{spec.connections}, {spec.warmup_s:g} s warm-up + "
            f"{spec.duration_s:g} s measured per scenario, {args.repeats} interleaved rounds, "
            "median per figure; "
            "`call@c1` rows use 1 connection (latency without queueing)",
            "backend": "nginx, 1 worker, `return 200` of a fixed 33-byte JSON object (GET /v1/pets/1)",
            "connections": spec.connections,
            "cpu_pinning": "none: Envoy's one worker, nginx, wrk and the python server share the 2 vCPUs",
            "tool": "getPet(id=1) -> GET /v1/pets/1, answer as text content",
        },
        "versions": versions(),
        "scenarios": scenario_results,
        "idle_envoy_rss_kib": idle_rss,
        "loadavg": {"before": load_before, "after_scenarios": load_after},
        "filter_hotpath_v8": hotpath,
        "memory": memory,
        "scale": scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per scenario run")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--skip-scale", action="store_true", help="skip the 1/100/1000-server memory runs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args()
    ensure_tool("wrk", "wrk")
    ensure_tool("nginx", "nginx-light")
    results = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dataplane.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = dataplane_report.render(results)
    (args.out / "dataplane.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
