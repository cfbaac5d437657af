"""Peer benchmark: mcpgw beside the gateways a Python team would pick instead, in one run.

    .venv/bin/python bench/peers.py [--duration 5] [--repeats 5] [--peers contextforge,fastmcp] [--out DIR]

The data-plane bench's tool call, `getPet(id=1)` → `GET /v1/pets/1` on the same nginx backend,
served by mcpgw (the real `Stack`: plugin server, control plane, Envoy with our filter), by IBM
ContextForge (its production gunicorn server, the REST tool registered through its API; once more
with `SKIP_SSL_VERIFY=true`, to show what its per-call TLS client costs) and by FastMCP's
OpenAPI server (`FastMCP.from_openapi`). Each peer is installed once into its own venv under
`.cache/peers/` (`peers_servers.py`). The same client drives all: `wrk` with the data-plane
bench's Lua script, each gateway's MCP session opened once (initialize + initialized) and its
headers (session id, protocol version, bearer token) sent on every call. Rounds interleave
every row; mcpgw's Envoy is a new process each round, as in `dataplane.py`. Every gateway runs
on the CPU mcpgw's Envoy gets (CPU 1 with 2+ CPUs), wrk and nginx on the other. Writes
`peers.json` and `peers.md` into `bench/results/` (or `--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dataplane import (
    CONCURRENCY,
    Placement,
    Scenario,
    check,
    load_side,
    measure_once,
    median_of,
    restart_envoy,
)
from dataplane_configs import CALL_BODY, TOOL_NAME, server_yaml
from dataplane_proc import (
    LoadSpec,
    Nginx,
    ensure_tool,
    first_line,
    open_session,
    pin_tree,
    process_tree,
    rss_kib,
    thread_cpus,
    tree_cpu_seconds,
    tree_rss_kib,
    wrk,
)
from peers_servers import (
    CONTEXTFORGE_VERSION,
    FASTMCP_VERSION,
    ContextForge,
    FastMcpServer,
    Venv,
    ensure_venv,
)

from mcpgw.envoyproc import envoy_binary
from mcpgw.stack import Stack, free_port, on_free_ports

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ERRORS = ("connect", "read", "write", "status", "timeout")  # wrk's error counts
PEERS = ("contextforge", "contextforge-skipverify", "fastmcp")
WHAT = {
    "mcpgw": "mcpgw: Envoy + mcpgw filter (`Stack`), Envoy `--concurrency 1`",
    "contextforge": "ContextForge: gunicorn + Uvicorn workers, SQLite, its defaults (SKIP_SSL_VERIFY unset)",
    "contextforge-skipverify": "the same ContextForge setup with SKIP_SSL_VERIFY=true",
    "fastmcp": "FastMCP `from_openapi`, Streamable HTTP, its defaults (stateful, SSE), one uvicorn process",
}


def call_body(tool: str) -> str:
    return CALL_BODY.replace(f'"name":"{TOOL_NAME}"', json.dumps({"name": tool})[1:-1], 1)


@dataclass
class Gateway:
    name: str
    url: str
    session: dict[str, str]
    body: str
    envoy_pid: int | None = None  # mcpgw: the Envoy (changes every round)
    server_pid: int | None = None  # a peer: the root of its process tree

    def scenarios(self) -> list[Scenario]:
        tree = self.server_pid is not None
        return [
            Scenario(
                self.name,
                group,
                self.url,
                "POST",
                self.body,
                "Rex",
                self.envoy_pid,
                connections,
                self.session,
                server_pid=self.server_pid,
                cpu_tree=tree,
            )
            for group, connections in (("call", None), ("call@c1", 1))
        ]

    @property
    def pid(self) -> int:
        pid = self.envoy_pid if self.envoy_pid is not None else self.server_pid
        assert pid is not None
        return pid


async def measure(
    args: argparse.Namespace, spec: LoadSpec, work: Path, placement: Placement
) -> dict[str, Any]:
    """Start everything, run the interleaved rounds, stop everything; the figures per row."""
    peers = [p for p in args.peers.split(",") if p]
    venvs = install(args)
    backend_port = free_port()
    nginx = Nginx(work / "nginx", backend_port)
    stack: Stack | None = None
    servers: list[ContextForge | FastMcpServer] = []
    try:
        nginx.start()
        assert nginx.process is not None
        registry = work / "registry"
        registry.mkdir()
        (registry / "pets.yaml").write_text(server_yaml("bench", "pets", backend_port))
        (work / "mcpgw").mkdir()
        stack = Stack(
            on_free_ports(
                registry, node_id="bench-peers", envoy_concurrency=CONCURRENCY, envoy_workdir=work / "mcpgw"
            )
        )
        await stack.start(ready_timeout=60)
        assert stack.envoy is not None
        mcpgw_url = f"{stack.mcp_base_url}/mcp/bench/pets"
        gateways = [
            Gateway("mcpgw", mcpgw_url, open_session(mcpgw_url), CALL_BODY, envoy_pid=stack.envoy.pid)
        ]
        settings: dict[str, Any] = {}
        for peer in peers:
            if peer.startswith("contextforge"):
                cf = ContextForge(
                    venvs["contextforge"],
                    work / peer,
                    free_port(),
                    backend_port,
                    placement.tested,
                    skip_ssl_verify=peer.endswith("skipverify"),
                )
                servers.append(cf)
                started = time.monotonic()
                await asyncio.to_thread(cf.start)
                assert cf.process is not None
                settings[peer] = {
                    "environment": cf.settings(),
                    "gunicorn_workers": cf.workers,
                    "startup_s": round(time.monotonic() - started, 1),
                    "mcp_url": cf.mcp_url.replace(f":{cf.port}", ":<port>"),
                    "tool_name": cf.tool_name,
                }
                session = open_session(cf.mcp_url, cf.auth)
                gateways.append(
                    Gateway(peer, cf.mcp_url, session, call_body(cf.tool_name), server_pid=cf.process.pid)
                )
            elif peer == "fastmcp":
                fm = FastMcpServer(venvs["fastmcp"], work / peer, free_port(), backend_port, placement.tested)
                servers.append(fm)
                await asyncio.to_thread(fm.start)
                assert fm.process is not None
                gateways.append(
                    Gateway(peer, fm.mcp_url, open_session(fm.mcp_url), CALL_BODY, server_pid=fm.process.pid)
                )
            else:
                raise SystemExit(f"unknown peer {peer!r}; known: {', '.join(PEERS)}")
        placement.pin_load(nginx.process.pid)

        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        idle_rss: dict[str, int] = {}
        envoy_pids: list[int] = []
        for round_no in range(args.repeats):
            if round_no > 0:
                await restart_envoy(stack.envoy, placement)
            gateways[0].envoy_pid = stack.envoy.pid
            envoy_pids.append(stack.envoy.pid)
            placement.pin_load(nginx.process.pid)
            for gateway in gateways:
                pin_tree(gateway.pid, placement.tested)
            scenarios = [s for g in gateways for s in g.scenarios()]
            # Interleaved by group: every gateway's c16 run, then every gateway's c1 run.
            scenarios.sort(key=lambda s: s.group == "call@c1")
            for scenario in scenarios:
                check(scenario)
            if round_no == 0:
                idle_rss = {g.name: tree_rss_kib(g.pid) if g.server_pid else rss_kib(g.pid) for g in gateways}
            for scenario in scenarios:
                gateway = next(g for g in gateways if g.name == scenario.name)
                result = await measure_drained(scenario, spec, work, gateway.pid)
                result["rss_kib"] = tree_rss_kib(gateway.pid) if gateway.server_pid else rss_kib(gateway.pid)
                runs.setdefault((scenario.group, scenario.name), []).append(result)
                print(
                    f"round {round_no + 1}/{args.repeats} {scenario.group:<8} {scenario.name:<24} "
                    f"{result['rps']:>8.0f} req/s  p50 {result['p50_us']:>7} µs  "
                    f"p99 {result['p99_us']:>7} µs  "
                    f"cpu {result.get('cpu_us_per_req', 0):.1f} µs/call  "
                    f"errors {sum(result[f'err_{k}'] for k in ERRORS)}",
                    flush=True,
                )
        affinity = {
            g.name: sorted({c for p in process_tree(g.pid) for c in thread_cpus(p)}) for g in gateways
        }
        affinity["nginx"] = thread_cpus(nginx.process.pid)
        affinity["bench process + wrk"] = thread_cpus(os.getpid())
        out_rows: dict[str, Any] = {}
        for (group, name), rows in runs.items():
            row = median_of(rows)
            row.pop("envoy_rss_kib", None)
            row["rss_kib"] = max(r["rss_kib"] for r in rows)
            row["drain_after_s_runs"] = [r["drain_after_s"] for r in rows]
            out_rows[f"{group}/{name}"] = row
        return {
            "scenarios": out_rows,
            "ratios": ratios(runs),
            "idle_rss_kib": idle_rss,
            "peer_settings": settings,
            "mcpgw_envoy_pids_per_round": envoy_pids,
            "cpu_affinity_after_runs": affinity,
            "installs": {
                name: {
                    "package": v.package,
                    "version": v.version,
                    "venv": str(v.python.parent.parent.relative_to(HERE.parent)),
                    **v.installed,
                }
                for name, v in venvs.items()
            },
            "peer_versions": peer_versions(venvs),
        }
    finally:
        for server in servers:
            server.stop()
        if stack is not None:
            await stack.stop()
        nginx.stop()


async def drained(pid: int, quiet_s: float = 0.5, limit_s: float = 30.0) -> float:
    """Wait until the process tree of `pid` uses no CPU for `quiet_s` (at most `limit_s`); the
    seconds waited. wrk stops with calls in flight and the gateway still works them off: a slow
    peer (seconds per call at 16 connections) would otherwise charge abandoned calls to the next
    measured run, its own (CPU per call) or the next row's (the same CPU)."""
    started = time.monotonic()
    before = tree_cpu_seconds(pid)
    while time.monotonic() - started < limit_s:
        await asyncio.sleep(quiet_s)
        now = tree_cpu_seconds(pid)
        if now - before < 0.01:  # one clock tick at most: idle
            break
        before = now
    return time.monotonic() - started


async def measure_drained(scenario: Scenario, spec: LoadSpec, work: Path, pid: int) -> dict[str, Any]:
    """Warm-up, drain, the measured run (CPU counted over it only), drain again."""
    run_spec = spec if scenario.connections is None else replace(spec, connections=scenario.connections)
    if spec.warmup_s > 0:
        await wrk(
            scenario.url,
            scenario.method,
            scenario.body,
            run_spec,
            work,
            warmup=True,
            headers=scenario.headers,
        )
    await drained(pid)
    result = await measure_once(scenario, replace(spec, warmup_s=0), work)
    result["drain_after_s"] = round(await drained(pid), 2)
    return result


def install(args: argparse.Namespace) -> dict[str, Venv]:
    """The venv of each peer `--peers` names (installed once, under .cache/peers/)."""
    peers = [p for p in args.peers.split(",") if p]
    if unknown := [p for p in peers if p not in PEERS]:
        raise SystemExit(f"unknown peer {', '.join(unknown)}; known: {', '.join(PEERS)}")
    venvs: dict[str, Venv] = {}
    if any(p.startswith("contextforge") for p in peers):
        venvs["contextforge"] = ensure_venv("mcp-contextforge-gateway", args.contextforge_version)
    if "fastmcp" in peers:
        venvs["fastmcp"] = ensure_venv("fastmcp", args.fastmcp_version)
    return venvs


def ratios(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    """Per round, mcpgw ÷ each peer (throughput) and peer ÷ mcpgw (CPU per call), both runs back
    to back in the round; the median of those per-round ratios."""
    out: dict[str, Any] = {}
    for (group, name), mine in runs.items():
        base = runs.get((group, "mcpgw"))
        if name == "mcpgw" or not base:
            continue
        # A peer that completed no call in a run has no ratio for it (the smoke then fails on
        # its rps figure, the full run shows the missing round).
        rps = [b["rps"] / a["rps"] for a, b in zip(mine, base, strict=True) if a["rps"] > 0]
        cpu = [
            a["cpu_us_per_req"] / b["cpu_us_per_req"]
            for a, b in zip(mine, base, strict=True)
            if a.get("cpu_us_per_req") and b.get("cpu_us_per_req")
        ]
        out[f"{group}/{name}"] = {
            "vs": f"{group}/mcpgw",
            "mcpgw_rps_over_peer": round(statistics.median(rps), 2) if rps else None,
            "mcpgw_rps_over_peer_runs": [round(r, 2) for r in rps],
            "peer_cpu_over_mcpgw": round(statistics.median(cpu), 2) if cpu else None,
            "peer_cpu_over_mcpgw_runs": [round(c, 2) for c in cpu],
        }
    return out


def peer_versions(venvs: dict[str, Venv]) -> dict[str, str]:
    out: dict[str, str] = {}
    if "contextforge" in venvs:
        v = venvs["contextforge"]
        for dist in ("mcp-contextforge-gateway", "gunicorn", "uvicorn", "httpx", "mcp", "sqlalchemy"):
            out[f"contextforge venv: {dist}"] = v.version_of(dist)
    if "fastmcp" in venvs:
        v = venvs["fastmcp"]
        for dist in ("fastmcp", "mcp", "uvicorn", "httpx2", "starlette"):
            out[f"fastmcp venv: {dist}"] = v.version_of(dist)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = LoadSpec(
        threads=args.threads, connections=args.connections, duration_s=args.duration, warmup_s=args.warmup
    )
    work = Path(tempfile.mkdtemp(prefix="mcpgw-bench-peers-"))
    placement = Placement.for_machine()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    try:
        with load_side(placement):
            measured = await measure(args, spec, work, placement)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    tested = "CPU 1" if placement.tested is not None else "the one CPU"
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {
            "tool": "getPet(id=1) -> GET /v1/pets/1 on one nginx (1 worker, fixed 33-byte JSON), "
            "the data-plane bench's backend; every gateway calls it over plain HTTP",
            "client": f"wrk -t{spec.threads} -c{spec.connections} with bench/dataplane_configs.py:WRK_LUA "
            "(POST of the JSON-RPC body, Accept: application/json, text/event-stream); each gateway's "
            "MCP session opened once before the runs (initialize + notifications/initialized) and its "
            "headers sent on every call (mcpgw: its signed Mcp-Session-Id; ContextForge: the bearer "
            "JWT, it runs stateless; FastMCP: its Mcp-Session-Id); `call@c1`: 1 connection",
            "runs": f"{spec.warmup_s:g} s warm-up + {spec.duration_s:g} s measured per row, {args.repeats} "
            "interleaved rounds (every row once per round), median per figure; ratios are the median "
            "of per-round ratios (both runs in the same round)",
            "cpu_placement": (
                f"{tested} holds only the gateway under test: mcpgw's Envoy (--concurrency 1, each "
                "thread pinned), every ContextForge process (gunicorn master + workers, started on it "
                "so workers it forks inherit it) and the FastMCP process; wrk, nginx and this process "
                "(mcpgw's control plane and plugin server, idle during runs) on CPU 0"
                if placement.tested is not None
                else "1 CPU: nothing pinned"
            ),
            "cpu_per_call": "utime + stime over the measured run only, / calls: mcpgw = its Envoy "
            "(the control plane and plugin server are off the request path); ContextForge = its "
            "whole process tree (master + workers, cutime/cstime of reaped workers included); "
            "FastMCP = its process",
            "drain": "before each measured run (after its warm-up) and after it, the bench waits "
            "until the gateway's processes use no CPU for 0.5 s (at most 30 s): calls wrk leaves in "
            "flight are worked off before the next measurement, so they are charged to no run "
            "(`drain_after_s` per run in the JSON); calls in flight at the end of a measured run "
            "still count their CPU but not as calls, which overstates a peer's CPU/call at 16 "
            "connections when it completes few calls per run: its `call@c1` row is the clean one",
            "processes": "mcpgw's Envoy is stopped and started again at the start of every round "
            "after the first (as in dataplane.py); the peers run for the whole run",
            "contextforge_server": "ContextForge's run-gunicorn.sh defaults: gunicorn with "
            "uvicorn.workers.UvicornWorker, workers = min(2 x nproc + 1, 16) with nproc = the CPUs it "
            "may use (1 here: 3 workers), --preload, --timeout 600, --max-requests 100000 "
            "--max-requests-jitter 100, access log off, its gunicorn.config.py post_fork (SQLAlchemy "
            "pool and Redis client reset per worker); SQLite; its cache_type default `database` (no "
            "Redis); tool and virtual server registered with POST /tools and POST /servers; clients "
            "call /servers/<id>/mcp",
            "fastmcp_server": "bench/peers_fastmcp.py: FastMCP.from_openapi(spec) (its default "
            "client for the spec's server URL, its default route map), run(transport='http') with "
            "its defaults (stateful sessions, SSE answers), one uvicorn process, access log off",
            "openapi": "peers_servers.petstore_openapi: the one operation GET /v1/pets/{id} "
            "(operationId getPet), same description and argument schema as mcpgw's tool",
        },
        "versions": {
            "machine": f"{os.cpu_count()} vCPU",
            "kernel": platform.release(),
            "envoy": first_line(envoy_binary(), "--version").split("version: ")[-1],
            "wrk": first_line(ensure_tool("wrk", "wrk"), "-v"),
            "nginx": first_line(ensure_tool("nginx", "nginx-light"), "-v"),
            "python": platform.python_version(),
            **measured.pop("peer_versions"),
        },
        "loadavg": {"before": load_before, "after": load_after},
        **measured,
    }


def render(results: dict[str, Any]) -> str:
    rows, ratio = results["scenarios"], results["ratios"]
    lines = [
        "# Peer benchmark: mcpgw, ContextForge, FastMCP",
        "",
        f"Generated {results['generated_at']} by `make bench-peers` (`bench/peers.py`), one run. "
        f"Load average (1/5/15 min) before: {' '.join(results['loadavg']['before'])}, after: "
        f"{' '.join(results['loadavg']['after'])} on {results['versions']['machine']} shared with "
        "other work: compare the ratios (same round, back to back), not absolute req/s across runs.",
        "",
        "| load | gateway | what | req/s | p50 µs | p99 µs | CPU µs/call | RSS MiB | mcpgw throughput ÷ this "
        "(per-round median) | CPU/call ÷ mcpgw |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in rows.items():
        group, name = key.split("/", 1)
        r = ratio.get(key, {})
        cpu = row.get("cpu_us_per_req")
        lines.append(
            f"| {group} | **{name}** | {WHAT.get(name, name)} | {row['rps']:.0f} | {row['p50_us']:.0f} | "
            f"{row['p99_us']:.0f} | {'-' if cpu is None else f'{cpu:.1f}'} | {row['rss_kib'] / 1024:.1f} | "
            f"{_x(r.get('mcpgw_rps_over_peer'))} | {_x(r.get('peer_cpu_over_mcpgw'))} |"
        )
    lines += [
        "",
        "`call`: 16 connections (throughput); `call@c1`: 1 connection (latency without queueing). "
        "RSS: mcpgw's Envoy; a peer's whole process tree (max over the runs).",
        "",
        "## Settings",
        "",
    ]
    lines += [f"- **{k.replace('_', ' ')}**: {v}" for k, v in results["setup"].items()]
    for peer, s in results["peer_settings"].items():
        lines += ["", f"### {peer}", ""]
        lines += [
            f"- gunicorn workers: {s['gunicorn_workers']}; startup to healthy + registration: "
            f"{s['startup_s']} s; MCP endpoint {s['mcp_url']}; tool name it exposes: `{s['tool_name']}`"
        ]
        lines += ["", "| environment variable | value |", "| --- | --- |"]
        lines += [f"| `{k}` | {v} |" for k, v in s["environment"].items()]
        lines += ["", "Everything else: ContextForge's defaults for this version."]
    lines += ["", "## Installs (each peer in its own venv, never the project's)", ""]
    for name, i in results["installs"].items():
        took = f"{i['install_seconds']} s (load average then {' '.join(i['loadavg_at_install'])})"
        lines.append(
            f"- {name}: `pip install {i['package']}=={i['version']}` into `{i['venv']}`, "
            f"{took}{'; reused by this run' if i.get('cached') else ''}"
        )
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in results["versions"].items()]
    lines += [
        "",
        "Per-round req/s: " + "; ".join(f"{k}: {v['rps_runs']}" for k, v in rows.items()) + ".",
        "",
        "Per-round CPU µs/call: "
        + "; ".join(f"{k}: {v['cpu_us_per_req_runs']}" for k, v in rows.items())
        + ".",
        "",
        "CPUs each gateway's threads were allowed after the runs: "
        + ", ".join(f"{k} {v}" for k, v in results["cpu_affinity_after_runs"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}\u00d7"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per row and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each run (0: none)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections of the `call` rows")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of: {', '.join(PEERS)}")
    parser.add_argument("--contextforge-version", default=CONTEXTFORGE_VERSION)
    parser.add_argument("--fastmcp-version", default=FASTMCP_VERSION)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument(
        "--install-only",
        action="store_true",
        help="install the peers' venvs (once) and exit, measuring nothing",
    )
    args = parser.parse_args()
    if args.install_only:
        for name, venv in install(args).items():
            print(f"{name}: {venv.python.parent.parent} ({venv.installed})")
        return
    ensure_tool("wrk", "wrk")
    ensure_tool("nginx", "nginx-light")
    results = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = render(results)
    (args.out / "peers.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
