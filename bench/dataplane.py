"""Data-plane benchmark: the same tool call through every way of serving it, side by side.

    .venv/bin/python bench/dataplane.py [--duration 5] [--repeats 5] [--skip-scale] [--out DIR]

Starts one nginx backend, a plain proxy Envoy, an Envoy with Envoy's native
`mcp_json_rest_bridge`, an Envoy with the minimal Proxy-Wasm filter `wasm_floor.zig`, the
mcpgw stack (plugin server, control plane, Envoy with our filter) and a Python MCP server
built with the `mcp` SDK; drives each with `wrk` (one thread, fixed connections) in
interleaved rounds and keeps the median of each figure, and of each per-round mcpgw/native
ratio. Every round runs on new Envoy processes (each Envoy is restarted at the start of every
round after the first), so one process's own speed does not follow a scenario through the
whole run. With 2 or more CPUs, one CPU holds only the process under test (every Envoy, the
python server) and the other wrk, nginx and this process. Every Envoy runs the same binary
with the same flags (`--concurrency 1`, log level warning); each Envoy's CPU time per request
is measured over the measured runs. Then
measures memory with 1, 100 and 1,000 servers configured (`dataplane_scale.py`). Writes
`dataplane.json` and `dataplane.md` into `bench/results/` (or `--out`).
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dataplane_hotpath
import dataplane_jwt
import dataplane_report
import dataplane_scale
from dataplane_configs import CALL_BODY, INIT_BODY, LIST_BODY, server_yaml, static_envoy
from dataplane_proc import (
    LoadSpec,
    Nginx,
    cpu_seconds,
    ensure_tool,
    http_post,
    open_session,
    pin_threads,
    rss_kib,
    stop_process,
    thread_cpus,
    tree_cpu_seconds,
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
    # Whose CPU time is counted when there is no Envoy: nginx for the floor, the python server.
    server_pid: int | None = None
    # Count the CPU time of server_pid's whole process tree (a peer's gunicorn master + workers).
    cpu_tree: bool = False

    @property
    def cpu_pid(self) -> int | None:
        return self.envoy_pid if self.envoy_pid is not None else self.server_pid


# Paired ratios, each against the native row of its group, measured in the same round.
PAIRED = (("call", "mcpgw"), ("list", "mcpgw"), ("initialize", "mcpgw"), ("list", "wasm-floor"))
# Paired against another row than native: what auth costs over the same call without it.
PAIRED_WITH = (("call", "mcpgw-jwt", "mcpgw"), ("call", "mcpgw-apikey", "mcpgw"))
# The `mcpgw-apikey` rows: a server with `auth: {apiKeys: {}}` and one consumer holding this key
# (a bench-only key; only its SHA-256 is in the registry, as in production).
BENCH_API_KEY = "mcpgw_bench-key-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"


def apikey_registry(backend_port: int) -> str:
    """The `pets-key` server (the bench server with `auth`) and its consumer, as registry YAML."""
    server = server_yaml("bench", "pets-key", backend_port).replace(
        "timeoutMs: 5000\n", "timeoutMs: 5000\nauth:\n  apiKeys: {}\n", 1
    )
    digest = hashlib.sha256(BENCH_API_KEY.encode()).hexdigest()
    consumer = (
        f"apiVersion: mcpgw/v1\nkind: Consumer\nname: bench\nnamespace: bench\n"
        f"apiKeys:\n  - id: k-bench\n    sha256: {digest}\n"
    )
    return f"{server}---\n{consumer}"


@dataclass(frozen=True)
class Placement:
    """Which CPUs the load side (wrk, nginx, this process) and the processes under test run on
    (None: not pinned)."""

    load: frozenset[int] | None
    tested: frozenset[int] | None

    @staticmethod
    def for_machine() -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return Placement(None, None)
        # Only Envoy's one worker does request work, so one CPU holds the process under test
        # and nothing else: it takes turns with neither wrk nor the backend. nginx stands in for
        # a service on another machine, so it sits with wrk; the figures also stop depending
        # on how the scheduler happened to spread the processes.
        return Placement(frozenset({cpus[0]}), frozenset({cpus[1]}))

    def describe(self) -> str:
        if self.load is None or self.tested is None:
            return "none: 1 CPU, wrk, nginx and every process under test share it (nothing pinned)"
        return (
            f"CPU {min(self.tested)} holds only the process under test (every Envoy, each of its "
            f"threads; the python server); CPU {min(self.load)} holds wrk, nginx (the backend, "
            f"standing in for a service on another machine) and the bench process (control plane, "
            f"idle during runs); so the floor row (wrk -> nginx) runs on CPU {min(self.load)} alone"
        )

    def pin_tested(self, pid: int) -> None:
        if self.tested is not None:
            pin_threads(pid, self.tested)

    def pin_load(self, pid: int) -> None:
        if self.load is not None:
            pin_threads(pid, self.load)


@contextmanager
def load_side(placement: Placement) -> Iterator[None]:
    """Pin this process (every thread) to the load CPU, so wrk, which it starts, inherits it;
    the mask it had is restored on exit (the scale runs and the hot-path timing are not
    placed)."""
    if placement.load is None:
        yield
        return
    before = os.sched_getaffinity(0)
    pin_threads(os.getpid(), placement.load)
    try:
        yield
    finally:
        pin_threads(os.getpid(), before)


def build_bench_wasm(source: str, work: Path) -> Path:
    """Compile a small bench filter (`bench/<source>.zig`) into the run's work dir (never committed)."""
    return _zig_build(
        source,
        work,
        f"{source}.wasm",
        "build-exe",
        "-target",
        "wasm32-freestanding",
        "-fno-entry",
        "-rdynamic",
    )


def build_bench_native_module(source: str, work: Path) -> Path:
    """Compile `bench/<source>.zig` into an Envoy dynamic module, `lib<source>.so` in the work
    dir; Envoy finds it there when $ENVOY_DYNAMIC_MODULES_SEARCH_PATH names the directory."""
    return _zig_build(source, work, f"lib{source}.so", "build-lib", "-dynamic", "-target", "x86_64-linux-gnu")


def _zig_build(source: str, work: Path, output: str, command: str, *flags: str) -> Path:
    out = work / output
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "ziglang",
            command,
            str(HERE / f"{source}.zig"),
            *flags,
            "-O",
            "ReleaseFast",
            f"-femit-bin={out}",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if built.returncode != 0:
        raise RuntimeError(f"building {source}.zig failed:\n{built.stderr}")
    return out


async def restart_envoy(envoy: EnvoyProcess, placement: Placement) -> None:
    """Stop `envoy` and start a new process from the same bootstrap, ports and base id; ready
    (listener up, and for mcpgw its configuration and Wasm module fetched again) and pinned.

    A new process per round: each Envoy process has its own steady speed (up to ~23% apart
    between identical instances, repeating across rounds), which would otherwise follow one
    scenario through the whole run.
    """
    await envoy.stop()
    await envoy.start()
    await envoy.wait_ready(60, listeners=1)
    placement.pin_tested(envoy.pid)


async def start_static_envoy(
    workdir: Path, backend_port: int, *, native: bool, wasm: Path | None = None
) -> tuple[EnvoyProcess, int]:
    listen, admin = free_port(), free_port()
    envoy = EnvoyProcess(
        static_envoy(listen, admin, backend_port, native=native, wasm=wasm),
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


@dataclass(frozen=True)
class Endpoints:
    """Where each scenario is served; the pids change every round, the ports do not."""

    backend_port: int
    proxy_port: int
    native_port: int
    floor_port: int
    python_port: int
    mcpgw_url: str
    session: Mapping[str, str]
    # The same stack without per-tool metrics and access log (`mcpgw-quiet`).
    quiet_url: str
    quiet_session: Mapping[str, str]
    nginx_pid: int
    python_pid: int
    # The same server with JWT auth (jwt_authn verifies an RS256 token on every request).
    jwt_url: str
    jwt_session: Mapping[str, str]
    # The same server with `auth.apiKeys`, and its session's headers (with the API key).
    apikey_url: str
    apikey_session: Mapping[str, str]


def build_scenarios(e: Endpoints, envoy: Mapping[str, int], round_no: int = 0) -> list[Scenario]:
    """Every scenario of one round, in run order; `envoy` maps proxy / native / wasm-floor /
    mcpgw to the pid of that round's Envoy process. The calls with and without auth on the
    mcpgw Envoy run in reverse order every other round, so running later biases none of them."""
    backend_url = f"http://127.0.0.1:{e.backend_port}/v1/pets/1"
    proxy_url = scenarios_proxy_url(e.proxy_port)
    native_url = f"http://127.0.0.1:{e.native_port}/mcp"
    floor_url = f"http://127.0.0.1:{e.floor_port}/mcp"
    python_url = f"http://127.0.0.1:{e.python_port}/mcp"
    mcpgw_url, session = e.mcpgw_url, e.session
    proxy, native, floor, mcpgw = envoy["proxy"], envoy["native"], envoy["wasm-floor"], envoy["mcpgw"]
    quiet = envoy["mcpgw-quiet"]
    calls = [
        Scenario("mcpgw", "call", mcpgw_url, "POST", CALL_BODY, "Rex", mcpgw, headers=session),
        Scenario("mcpgw-jwt", "call", e.jwt_url, "POST", CALL_BODY, "Rex", mcpgw, headers=e.jwt_session),
        Scenario(
            "mcpgw-apikey", "call", e.apikey_url, "POST", CALL_BODY, "Rex", mcpgw, headers=e.apikey_session
        ),
    ]
    if round_no % 2:
        calls.reverse()
    return [
        Scenario("floor", "call", backend_url, "GET", "", '"Rex"', None, server_pid=e.nginx_pid),
        Scenario("proxy", "call", proxy_url, "GET", "", '"Rex"', proxy),
        # Back to back: the pair whose ratio is what metrics and the access log cost.
        Scenario(
            "mcpgw-quiet", "call", e.quiet_url, "POST", CALL_BODY, "Rex", quiet, headers=e.quiet_session
        ),
        *calls,
        Scenario("native", "call", native_url, "POST", CALL_BODY, "Rex", native),
        Scenario("python", "call", python_url, "POST", CALL_BODY, "Rex", None, server_pid=e.python_pid),
        Scenario("mcpgw", "list", mcpgw_url, "POST", LIST_BODY, '"getPet"', mcpgw, headers=session),
        Scenario("native", "list", native_url, "POST", LIST_BODY, '"getPet"', native),
        # Right after native: the pair whose ratio is the Proxy-Wasm floor.
        Scenario("wasm-floor", "list", floor_url, "POST", LIST_BODY, '"getPet"', floor),
        Scenario("mcpgw", "initialize", mcpgw_url, "POST", INIT_BODY, "protocolVersion", mcpgw),
        Scenario("native", "initialize", native_url, "POST", INIT_BODY, "protocolVersion", native),
        # One connection: latency without queueing, for "what does the filter add per request".
        Scenario("proxy", "call@c1", proxy_url, "GET", "", '"Rex"', proxy, 1),
        Scenario("mcpgw", "call@c1", mcpgw_url, "POST", CALL_BODY, "Rex", mcpgw, 1, session),
        Scenario("native", "call@c1", native_url, "POST", CALL_BODY, "Rex", native, 1),
    ]


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
    cpu = [r["cpu_us_per_req"] for r in runs if r.get("cpu_us_per_req") is not None]
    out["cpu_us_per_req"] = round(statistics.median(cpu), 2) if cpu else None
    out["cpu_us_per_req_runs"] = [round(c, 2) for c in cpu]
    out["requests"] = sum(r["requests"] for r in runs)
    out["errors"] = sum(
        r[f"err_{k}"] for r in runs for k in ("connect", "read", "write", "status", "timeout")
    )
    rss = [r["envoy_rss_kib"] for r in runs if r.get("envoy_rss_kib")]
    out["envoy_rss_kib"] = max(rss) if rss else None
    return out


def paired_ratios(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    """Per round, scenario ÷ the native row of its group; the median of those ratios.

    Both runs of a round are back to back, so a slow stretch of the shared machine tends to
    hit both and cancel in the ratio, where the ratio of two separate medians keeps it.
    """
    out: dict[str, Any] = {}
    for group, name in PAIRED:
        mine, native = runs.get((group, name)), runs.get((group, "native"))
        if mine and native:
            out[f"{group}/{name}"] = _paired(mine, native, f"{group}/native")
    for group, name, base in PAIRED_WITH:
        mine, other = runs.get((group, name)), runs.get((group, base))
        if mine and other:
            out[f"{group}/{name}"] = _paired(mine, other, f"{group}/{base}")
    # What per-tool metrics and the access log cost: mcpgw ÷ the same stack with both off.
    observed, quiet = runs.get(("call", "mcpgw")), runs.get(("call", "mcpgw-quiet"))
    if observed and quiet:
        out["call/mcpgw-observability"] = _paired(observed, quiet, "call/mcpgw-quiet")
    return out


def _paired(mine: list[dict[str, Any]], base: list[dict[str, Any]], vs: str) -> dict[str, Any]:
    rps = [a["rps"] / b["rps"] for a, b in zip(mine, base, strict=True)]
    cpu = [
        a["cpu_us_per_req"] / b["cpu_us_per_req"]
        for a, b in zip(mine, base, strict=True)
        if a.get("cpu_us_per_req") and b.get("cpu_us_per_req")
    ]
    return {
        "vs": vs,
        "rps_ratio": round(statistics.median(rps), 3),
        "rps_ratio_runs": [round(r, 3) for r in rps],
        "cpu_ratio": round(statistics.median(cpu), 3) if cpu else None,
        "cpu_ratio_runs": [round(c, 3) for c in cpu],
    }


def versions(wasm_floor_bytes: int | None = None) -> dict[str, str]:
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
        "wasm_floor_bytes": str(wasm_floor_bytes) if wasm_floor_bytes else "?",
    }


async def measure(
    args: argparse.Namespace, spec: LoadSpec, work: Path, placement: Placement
) -> dict[str, Any]:
    """Start everything, run the interleaved rounds, stop everything; the scenario figures."""
    backend_port = free_port()
    nginx = Nginx(work / "nginx", backend_port)
    started: list[Any] = []
    python: subprocess.Popen[bytes] | None = None
    stack: Stack | None = None
    quiet: Stack | None = None
    try:
        floor_wasm = build_bench_wasm("wasm_floor", work)
        nginx.start()
        assert nginx.process is not None
        for name in ("proxy", "native", "wasm-floor"):
            (work / name).mkdir()
        proxy, proxy_port = await start_static_envoy(work / "proxy", backend_port, native=False)
        started.append(proxy)
        native, native_port = await start_static_envoy(work / "native", backend_port, native=True)
        started.append(native)
        floor, floor_port = await start_static_envoy(
            work / "wasm-floor", backend_port, native=False, wasm=floor_wasm
        )
        started.append(floor)

        registry = work / "registry"
        registry.mkdir()
        (registry / "pets.yaml").write_text(server_yaml("bench", "pets", backend_port))
        token = dataplane_jwt.make_token(work / "jwks.json")
        (registry / "pets-key.yaml").write_text(apikey_registry(backend_port))
        (registry / "pets-jwt.yaml").write_text(
            server_yaml("bench", "pets-jwt", backend_port) + dataplane_jwt.auth_yaml(work / "jwks.json")
        )
        stack = mcpgw_stack(work, registry, "mcpgw")
        await stack.start(ready_timeout=60)
        assert stack.envoy is not None
        mcpgw_url = f"{stack.mcp_base_url}/mcp/bench/pets"
        session = open_session(mcpgw_url)
        jwt_url = f"{stack.mcp_base_url}/mcp/bench/pets-jwt"
        jwt_session = open_session(jwt_url, {"authorization": f"Bearer {token}"})
        apikey_url = f"{stack.mcp_base_url}/mcp/bench/pets-key"
        apikey_session = open_session(apikey_url, {"authorization": f"Bearer {BENCH_API_KEY}"})
        # The baseline of what observing costs: no per-tool metrics, no access log.
        quiet = mcpgw_stack(work, registry, "mcpgw-quiet", access_log=None, observability=False)
        await quiet.start(ready_timeout=60)
        assert quiet.envoy is not None
        quiet_url = f"{quiet.mcp_base_url}/mcp/bench/pets"
        quiet_session = open_session(quiet_url)
        python, python_port = start_python_server(work, backend_port)
        wait_http(f"http://127.0.0.1:{backend_port}/v1/pets/1", None)
        endpoints = Endpoints(
            backend_port=backend_port,
            proxy_port=proxy_port,
            native_port=native_port,
            floor_port=floor_port,
            python_port=python_port,
            mcpgw_url=mcpgw_url,
            session=session,
            quiet_url=quiet_url,
            quiet_session=quiet_session,
            nginx_pid=nginx.process.pid,
            python_pid=python.pid,
            jwt_url=jwt_url,
            jwt_session=jwt_session,
            apikey_url=apikey_url,
            apikey_session=apikey_session,
        )
        envoys = {
            "proxy": proxy,
            "native": native,
            "wasm-floor": floor,
            "mcpgw": stack.envoy,
            "mcpgw-quiet": quiet.envoy,
        }
        # Everything starts on this process's CPU (inherited); nginx stays there (pinned anyway,
        # every thread), the processes under test are moved once they run.
        placement.pin_load(nginx.process.pid)
        placement.pin_tested(python.pid)
        for envoy in envoys.values():
            placement.pin_tested(envoy.pid)

        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        pids_per_round: list[dict[str, int]] = []
        idle_rss: dict[str, int] = {}
        for round_no in range(args.repeats):
            if round_no > 0:
                # New Envoy processes (the first round's are new already).
                await asyncio.gather(*(restart_envoy(e, placement) for e in envoys.values()))
            pids = {name: envoy.pid for name, envoy in envoys.items()}
            pids_per_round.append(pids)
            # Again each round: a thread started by an unpinned one would not inherit the CPU.
            placement.pin_load(nginx.process.pid)
            placement.pin_tested(python.pid)
            for pid in pids.values():
                placement.pin_tested(pid)
            scenarios = build_scenarios(endpoints, pids, round_no)
            # Every scenario answers correctly on this round's processes (for mcpgw: the session
            # opened in the first round still verifies, its keys live in the control plane).
            for scenario in scenarios:
                check(scenario)
            if round_no == 0:
                idle_rss = {name: rss_kib(pid) for name, pid in pids.items()}
            print(f"round {round_no + 1}/{args.repeats}: envoy pids {pids}", flush=True)
            for scenario in scenarios:
                result = await measure_once(scenario, spec, work)
                runs.setdefault((scenario.group, scenario.name), []).append(result)
                cpu = result.get("cpu_us_per_req")
                print(
                    f"round {round_no + 1}/{args.repeats} {scenario.group:<10} {scenario.name:<10} "
                    f"{result['rps']:>9.0f} req/s  p50 {result['p50_us']:>6} µs  "
                    f"p99 {result['p99_us']:>6} µs  cpu {'-' if cpu is None else f'{cpu:.1f}'} µs/req",
                    flush=True,
                )
        tested = {f"envoy {name}": envoy.pid for name, envoy in envoys.items()}
        tested["python server"] = python.pid
        affinity = {name: thread_cpus(pid) for name, pid in tested.items()}
        affinity["nginx"] = thread_cpus(nginx.process.pid)
        affinity["bench process + wrk"] = thread_cpus(os.getpid())
        memory = {
            "mcpgw_admin_memory": json.loads(stack.envoy.admin("/memory")),
            "native_admin_memory": json.loads(native.admin("/memory")),
            "mcpgw_wasm_stats": {k: v for k, v in stack.envoy.stats("wasm").items()},
        }
        return {
            "scenarios": {f"{g}/{n}": median_of(r) for (g, n), r in runs.items()},
            "paired_ratios": paired_ratios(runs),
            "idle_envoy_rss_kib": idle_rss,
            "envoy_pids_per_round": pids_per_round,
            "cpu_affinity_after_runs": affinity,
            "memory": memory,
            "wasm_floor_bytes": floor_wasm.stat().st_size,
        }
    finally:
        if python is not None:
            stop_process(python)
        if stack is not None:
            await stack.stop()
        if quiet is not None:
            await quiet.stop()
        for envoy in started:
            await envoy.stop()
        nginx.stop()


def mcpgw_stack(work: Path, registry: Path, name: str, **options: Any) -> Stack:
    """A mcpgw stack (plugin server, control plane, Envoy) serving `registry`, in `work/name`;
    `options` are further `StackOptions` fields."""
    (work / name).mkdir()
    return Stack(
        on_free_ports(
            registry,
            node_id=f"bench-{name}",
            envoy_concurrency=CONCURRENCY,
            envoy_workdir=work / name,
            **options,
        )
    )


async def measure_once(scenario: Scenario, spec: LoadSpec, work: Path) -> dict[str, Any]:
    """Warm-up, then the measured wrk run, with the CPU time of the process under test over the
    measured run only."""
    run_spec = spec if scenario.connections is None else replace(spec, connections=scenario.connections)
    if spec.warmup_s > 0:  # 0: no warm-up run (the smoke; wrk cannot run for less than 1 s)
        await wrk(
            scenario.url,
            scenario.method,
            scenario.body,
            run_spec,
            work,
            warmup=True,
            headers=scenario.headers,
        )
    pid = scenario.cpu_pid
    cpu = tree_cpu_seconds if scenario.cpu_tree else cpu_seconds
    cpu_before = cpu(pid) if pid is not None else 0.0
    result = await wrk(scenario.url, scenario.method, scenario.body, run_spec, work, headers=scenario.headers)
    if pid is not None:
        result["cpu_us_per_req"] = (cpu(pid) - cpu_before) * 1e6 / max(result["requests"], 1)
    if scenario.envoy_pid is not None:
        result["envoy_rss_kib"] = rss_kib(scenario.envoy_pid)
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = LoadSpec(
        threads=args.threads, connections=args.connections, duration_s=args.duration, warmup_s=args.warmup
    )
    work = Path(tempfile.mkdtemp(prefix="mcpgw-bench-dp-"))
    placement = Placement.for_machine()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    try:
        with load_side(placement):
            measured = await measure(args, spec, work, placement)
        load_after = Path("/proc/loadavg").read_text().split()[:3]
        scale = None
        if not args.skip_scale:
            sizes = tuple(int(n) for n in args.scale_sizes.split(","))
            scale = await dataplane_scale.run(work / "scale", sizes, args.scale_duration)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    hotpath = dataplane_hotpath.run(args.hotpath_iterations)
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {
            "envoy_flags": f"--concurrency {CONCURRENCY} -l warning "
            "(same binary and flags for proxy, native, wasm-floor, mcpgw)",
            "load": f"wrk -t{spec.threads} -c{spec.connections}, {spec.warmup_s:g} s warm-up + "
            f"{spec.duration_s:g} s measured per scenario, {args.repeats} interleaved rounds, "
            "median per figure; "
            "`call@c1` rows use 1 connection (latency without queueing)",
            "backend": "nginx, 1 worker, `return 200` of a fixed 33-byte JSON object (GET /v1/pets/1)",
            "connections": spec.connections,
            "cpu_placement": placement.describe(),
            "processes": "new Envoy processes every round: at the start of each round after the "
            "first, every Envoy (proxy, native, wasm-floor, mcpgw) is stopped and started again "
            "from the same bootstrap (mcpgw's fetches its configuration and module again), re-pinned "
            "and every scenario checked again; pids per round in `envoy_pids_per_round`. Envoy RSS "
            "is the max over the runs, idle RSS from the first round's processes; nginx and the "
            "python server run for the whole run",
            "cpu_per_request": "utime + stime of the process under test (/proc/<pid>/stat) over the "
            "measured wrk run only, ÷ its requests: the Envoy for Envoy rows, nginx for floor, "
            "the python server (not nginx) for python",
            "ratios": "targets use the median of per-round ratios to native (each round runs every "
            "scenario back to back); the x proxy / x native columns divide the medians",
            "tool": "getPet(id=1) -> GET /v1/pets/1, answer as text content",
        },
        "versions": versions(measured.pop("wasm_floor_bytes")),
        **{k: measured[k] for k in ("scenarios", "paired_ratios", "idle_envoy_rss_kib")},
        "envoy_pids_per_round": measured["envoy_pids_per_round"],
        "cpu_affinity_after_runs": measured["cpu_affinity_after_runs"],
        "loadavg": {"before": load_before, "after_scenarios": load_after},
        "filter_hotpath_v8": hotpath,
        "memory": measured["memory"],
        "scale": scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per scenario run")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each run")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--skip-scale", action="store_true", help="skip the memory and scale runs")
    parser.add_argument("--scale-sizes", default="1,100,1000", help="servers per scale run, comma-separated")
    parser.add_argument(
        "--scale-duration", type=float, default=3.0, help="seconds of tools/call load on each scale size"
    )
    parser.add_argument(
        "--hotpath-iterations", type=int, default=100_000, help="iterations per timing in the V8 hot path"
    )
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
