"""Soak: the real stack under steady mixed load and one registry edit per second, RSS over time.

Every part runs as its own process, so each one's memory is its own: the demo REST backend
(`mcpgw demo-backend`), one control-plane replica (`mcpgw serve --no-broker`: xDS, admin API,
plugin server), the session broker (`mcpgw broker`) and Envoy (`mcpgw bootstrap` + `envoy`).
Against them, for `--minutes`:

- Streamable HTTP sessions (2025-11-25): `tools/call getPet` and `tools/list`; each session
  ends with DELETE after 50 requests and a new one is opened;
- stateless clients (2026-07-28): `tools/call describePet` and `tools/list`, no session;
- HTTP+SSE sessions (2024-11-05, the MCP SDK's SSE client): open, list, call, close;
- one admin API write per second: `PUT` of a tool with a new description (a new Envoy
  configuration every second).

Every answer is checked (status, JSON-RPC result, no tool error); any failure counts as an error.
Each process's RSS (with its children's) is sampled every `--sample-every` seconds. After the
warm-up, a least-squares line through each process's samples gives its slope in MiB per 10
minutes; the goal is < 1 MiB per 10 minutes per process and no error.

    .venv/bin/python bench/soak.py [--minutes 30] [--warmup-minutes 5] [--rate 10] [--out DIR]

Writes soak.json, soak.md and soak.png (RSS over time) into bench/results/ (or --out). Exits 1
on any error, after writing the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcpgw.envoyproc import EnvoyProcess  # noqa: E402
from mcpgw.stack import demo_registry, free_ports  # noqa: E402
from tests.integration.mcphttp import ACCEPT, open_session, rpc  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "soak-admin-token"
MIB = 1 << 20
# The goal per process, after warm-up.
GOAL_MIB_PER_10MIN = 1.0
# A Streamable HTTP session is ended (DELETE) and replaced after this many requests.
SESSION_REQUESTS = 50
MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
MCP_PATH = "/mcp/default/petstore"
TOOLS = ["listPets", "getPet", "createPet", "describePet"]
EDITED_TOOL = "listPets"


@dataclass
class Load:
    """What the clients did: requests by kind, and the errors by kind and reason."""

    done: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def ok(self, kind: str) -> None:
        self.done[kind] += 1

    def fail(self, kind: str, why: str) -> None:
        key = f"{kind}: {why[:80]}"
        self.errors[key] += 1
        self.examples.setdefault(key, why[:400])


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` and all its descendants, KiB (0 once it is gone)."""
    total = 0
    for one in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found += [int(child), *descendants(int(child))]
    return found


def slope_mib_per_10min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, KiB) points, in MiB per 10 minutes."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 600 / 1024


class Processes:
    """The stack's parts as child processes, each in its own process group."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.envoy: EnvoyProcess | None = None

    def start(self, name: str, *args: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.children[name] = subprocess.Popen(
            [str(Path(sys.executable).parent / "mcpgw"), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def pids(self) -> dict[str, int]:
        pids = {name: child.pid for name, child in self.children.items()}
        if self.envoy is not None:
            pids["envoy"] = self.envoy.pid
        return pids

    def exited(self) -> list[str]:
        gone = [f"{n} exited {c.returncode}" for n, c in self.children.items() if c.poll() is not None]
        if (
            self.envoy is not None
            and self.envoy.process is not None
            and self.envoy.process.returncode is not None
        ):
            gone.append(f"envoy exited {self.envoy.process.returncode}")
        return gone

    async def stop(self) -> None:
        if self.envoy is not None:
            await self.envoy.stop()
        for child in reversed(list(self.children.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
        for child in self.children.values():
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(10)


async def wait_until(what: str, check: Any, timeout: float, procs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if await check():
                return
        if gone := procs.exited():
            raise RuntimeError(f"waiting for {what}: {', '.join(gone)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        await asyncio.sleep(0.2)


def check_answer(response: httpx.Response, method: str) -> str | None:
    """None if `response` is a good answer to `method`, else what is wrong."""
    if response.status_code != 200:
        return f"HTTP {response.status_code} {response.text[:200]}"
    answer = response.json()
    result = answer.get("result")
    if not isinstance(result, dict):
        return f"no result: {json.dumps(answer)[:200]}"
    if method == "tools/list" and [t["name"] for t in result.get("tools", [])] != TOOLS:
        return f"tools/list: {[t.get('name') for t in result.get('tools', [])]}"
    if method == "tools/call" and result.get("isError"):
        return f"tool error: {json.dumps(result)[:200]}"
    return None


async def paced(rate: float, stop: asyncio.Event, step: Any) -> None:
    """Call `step()` `rate` times per second until `stop` (no catch-up after a slow step)."""
    interval = 1.0 / rate
    while not stop.is_set():
        started = time.monotonic()
        await step()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.monotonic() - started)))


async def streamable_client(url: str, rate: float, stop: asyncio.Event, load: Load) -> None:
    async with httpx.AsyncClient(timeout=15) as http:
        session: dict[str, str] = {}
        used = 0

        async def step() -> None:
            nonlocal session, used
            try:
                if not session:
                    session = await open_session(http, url)
                    load.ok("streamable initialize")
                method = "tools/call" if used % 2 else "tools/list"
                params = {"name": "getPet", "arguments": {"id": 1}} if method == "tools/call" else None
                response = await http.post(url, json=rpc(method, params), headers=ACCEPT | session)
                if problem := check_answer(response, method):
                    load.fail(f"streamable {method}", problem)
                else:
                    load.ok(f"streamable {method}")
                used += 1
                if used >= SESSION_REQUESTS:
                    ended = await http.delete(url, headers=ACCEPT | session)
                    if ended.status_code != 204:
                        load.fail("streamable delete", f"HTTP {ended.status_code}")
                    else:
                        load.ok("streamable delete")
                    session, used = {}, 0
            except (httpx.HTTPError, AssertionError, ValueError) as error:
                load.fail("streamable", f"{type(error).__name__}: {error}")
                session, used = {}, 0

        await paced(rate, stop, step)


async def stateless_client(url: str, rate: float, stop: asyncio.Event, load: Load) -> None:
    async with httpx.AsyncClient(timeout=15) as http:
        count = 0

        async def step() -> None:
            nonlocal count
            count += 1
            method = "tools/call" if count % 2 else "tools/list"
            params: dict[str, Any] = {"_meta": META}
            headers = ACCEPT | {"mcp-protocol-version": MODERN, "mcp-method": method}
            if method == "tools/call":
                params |= {"name": "describePet", "arguments": {"id": 2}}
                headers["mcp-name"] = "describePet"
            try:
                response = await http.post(url, json=rpc(method, params), headers=headers)
                if problem := check_answer(response, method):
                    load.fail(f"stateless {method}", problem)
                else:
                    load.ok(f"stateless {method}")
            except (httpx.HTTPError, ValueError) as error:
                load.fail("stateless", f"{type(error).__name__}: {error}")

        await paced(rate, stop, step)


async def sse_client(url: str, rate: float, stop: asyncio.Event, load: Load) -> None:
    from mcp import Client
    from mcp.client.sse import sse_client as sse_transport

    async def step() -> None:
        try:
            async with asyncio.timeout(20):
                async with Client(sse_transport(f"{url}/sse"), mode="legacy") as client:
                    tools = [tool.name for tool in (await client.list_tools()).tools]
                    if tools != TOOLS:
                        load.fail("sse tools/list", f"{tools}")
                        return
                    result = await client.call_tool("describePet", {"id": 2})
                    if result.is_error:
                        load.fail("sse tools/call", str(result.content)[:200])
                        return
            load.ok("sse session")
        except Exception as error:  # the SDK raises many kinds (ExceptionGroup, McpError, …)
            load.fail("sse", f"{type(error).__name__}: {error}")

    await paced(rate, stop, step)


async def admin_editor(admin: str, rate: float, stop: asyncio.Event, load: Load) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    tool_url = f"{admin}/v1/servers/default/petstore/tools/{EDITED_TOOL}"
    async with httpx.AsyncClient(timeout=15) as http:
        original = (await http.get(tool_url, headers=auth)).json()
        edit = 0

        async def step() -> None:
            nonlocal edit
            edit += 1
            tool = original | {"description": f"List pets, optionally filtered by tag (edit {edit})."}
            try:
                response = await http.put(tool_url, json=tool, headers=auth)
                if response.status_code != 200:
                    load.fail("admin put", f"HTTP {response.status_code} {response.text[:200]}")
                else:
                    load.ok("admin put")
            except httpx.HTTPError as error:
                load.fail("admin put", f"{type(error).__name__}: {error}")

        await paced(rate, stop, step)


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    backend, xds, admin_port, plugins, listen, broker, envoy_admin, stats = free_ports(8)
    registry = demo_registry(workdir / "registry", backend)
    token = workdir / "token"
    token.write_text(TOKEN)
    procs = Processes(workdir)
    load = Load()
    samples: list[dict[str, Any]] = []
    try:
        procs.start("demo-backend", "demo-backend", "--port", str(backend))
        procs.start(
            "control-plane",
            *("serve", "-f", str(registry), "--no-broker", "--admin-token-file", str(token)),
            *("--xds", f"127.0.0.1:{xds}", "--admin", f"127.0.0.1:{admin_port}"),
            *("--plugins", f"127.0.0.1:{plugins}", "--listen", f"127.0.0.1:{listen}"),
            *("--broker", f"127.0.0.1:{broker}"),
        )
        procs.start("broker", "broker", "--broker", f"127.0.0.1:{broker}")
        admin = f"http://127.0.0.1:{admin_port}"
        async with httpx.AsyncClient(timeout=2) as http:

            async def control_plane_up() -> bool:
                return (await http.get(f"{admin}/healthz")).status_code == 200

            await wait_until("the control plane", control_plane_up, 60, procs)
        bootstrap = subprocess.run(
            [
                str(Path(sys.executable).parent / "mcpgw"),
                *("bootstrap", "--node-id", "soak", "--xds", f"127.0.0.1:{xds}"),
                *("--envoy-admin", f"127.0.0.1:{envoy_admin}", "--stats", f"127.0.0.1:{stats}"),
                *("--broker", f"127.0.0.1:{broker}"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (workdir / "envoy").mkdir()
        procs.envoy = EnvoyProcess(
            bootstrap, admin_port=envoy_admin, concurrency=args.envoy_concurrency, workdir=workdir / "envoy"
        )
        await procs.envoy.start()
        await procs.envoy.wait_ready(60, listeners=2)
        url = f"http://127.0.0.1:{listen}{MCP_PATH}"
        async with httpx.AsyncClient(timeout=5) as http:

            async def served() -> bool:
                session = await open_session(http, url)
                return (
                    check_answer(
                        await http.post(url, json=rpc("tools/list"), headers=ACCEPT | session), "tools/list"
                    )
                    is None
                )

            await wait_until("tools/list through Envoy", served, 60, procs)

        pids = procs.pids()
        stop = asyncio.Event()
        # The request rate is split: 40 % Streamable HTTP, 40 % stateless, 20 % HTTP+SSE (each SSE
        # session is 4 requests: the stream, initialize, list, call).
        tasks = [
            asyncio.create_task(streamable_client(url, args.rate * 0.4, stop, load)),
            asyncio.create_task(stateless_client(url, args.rate * 0.4, stop, load)),
            asyncio.create_task(sse_client(url, max(0.1, args.rate * 0.05), stop, load)),
            asyncio.create_task(admin_editor(admin, args.edits_per_second, stop, load)),
        ]
        started = time.monotonic()
        duration = args.minutes * 60
        print(f"soak: {args.minutes} min, {args.rate} req/s, pids {pids}", flush=True)
        while True:
            elapsed = time.monotonic() - started
            samples.append({"t": round(elapsed, 1)} | {name: rss_kib(pid) for name, pid in pids.items()})
            if gone := procs.exited():
                load.fail("process", ", ".join(gone))
                break
            if elapsed >= duration:
                break
            if len(samples) % 6 == 1:
                rss = ", ".join(f"{k} {v / 1024:.1f}" for k, v in samples[-1].items() if k != "t")
                print(
                    f"soak: {elapsed / 60:5.1f} min  RSS MiB: {rss}  done {sum(load.done.values())} "
                    f"errors {sum(load.errors.values())}",
                    flush=True,
                )
            await asyncio.sleep(min(args.sample_every, max(0.0, duration - elapsed)))
        stop.set()
        for task in tasks:
            try:
                await asyncio.wait_for(task, 30)
            except Exception as error:
                load.fail("client", f"{type(error).__name__}: {error}")
        try:
            text = procs.envoy.admin("/stats?filter=^http.mcpgw.downstream_rq_", timeout=10)
            envoy_stats = {
                name: int(value)
                for name, _, value in (line.partition(": ") for line in text.splitlines())
                if value.strip().isdigit()
            }
        except OSError as error:
            # Informational only: a busy machine must not cost the run its samples.
            print(f"soak: Envoy's request stats unavailable: {error}", flush=True)
            envoy_stats = {}
    finally:
        await procs.stop()
    return report(args, samples, load, envoy_stats)


def report(
    args: argparse.Namespace, samples: list[dict[str, Any]], load: Load, envoy_stats: dict[str, int]
) -> dict[str, Any]:
    warmup = args.warmup_minutes * 60
    names = [k for k in samples[0] if k != "t"] if samples else []
    processes = {}
    for name in names:
        after = [(s["t"], s[name]) for s in samples if s["t"] >= warmup]
        processes[name] = {
            "rss_start_mib": round(samples[0][name] / 1024, 1),
            "rss_after_warmup_mib": round(after[0][1] / 1024, 1) if after else None,
            "rss_end_mib": round(samples[-1][name] / 1024, 1),
            "rss_max_mib": round(max(s[name] for s in samples) / 1024, 1),
            "slope_mib_per_10min": round(slope_mib_per_10min(after), 3),
            "samples_after_warmup": len(after),
        }
    errors = sum(load.errors.values())
    return {
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "sample_every_s": args.sample_every,
        "rate_per_s": args.rate,
        "edits_per_s": args.edits_per_second,
        "envoy_concurrency": args.envoy_concurrency,
        "goal_mib_per_10min": GOAL_MIB_PER_10MIN,
        "requests": dict(sorted(load.done.items())),
        "requests_total": sum(load.done.values()),
        "errors": errors,
        "error_kinds": dict(load.errors),
        "error_examples": load.examples,
        "envoy_downstream_rq": envoy_stats,
        "processes": processes,
        "goal_met": errors == 0
        and all(abs(p["slope_mib_per_10min"]) < GOAL_MIB_PER_10MIN for p in processes.values()),
        "samples": samples,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    figure, axis = plt.subplots(figsize=(9, 5))
    for name in result["processes"]:
        axis.plot([s["t"] / 60 for s in samples], [s[name] / 1024 for s in samples], label=name)
    axis.axvline(result["warmup_minutes"], color="grey", linestyle=":", label="end of warm-up")
    axis.set_xlabel("minutes")
    axis.set_ylabel("RSS (MiB)")
    axis.set_title(f"mcpgw soak: RSS per process, {result['minutes']} min")
    axis.set_ylim(bottom=0)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Soak",
        "",
        f"`make soak` (`bench/soak.py --minutes {result['minutes']}`): the demo registry, every part "
        "its own process (demo backend, `mcpgw serve --no-broker`, `mcpgw broker`, Envoy with "
        f"`--concurrency {result['envoy_concurrency']}`), {result['rate_per_s']} requests/s of mixed "
        "load (Streamable HTTP sessions ended with DELETE every 50 requests, stateless 2026-07-28 "
        "clients, HTTP+SSE sessions through the MCP SDK) and "
        f"{result['edits_per_s']:g} admin API tool edit(s) per second. RSS (with children) sampled every "
        f"{result['sample_every_s']:g} s; slope = least-squares line through the samples after "
        f"{result['warmup_minutes']:g} min of warm-up.",
        "",
        "![RSS over time](soak.png)",
        "",
        f"**Goal: < {result['goal_mib_per_10min']:g} MiB per 10 minutes per process and no error: "
        f"{'met' if result['goal_met'] else 'NOT met'}.** Requests: {result['requests_total']:,}; "
        f"errors: {result['errors']}.",
        "",
        "| process | RSS start (MiB) | after warm-up | end | max | slope after warm-up (MiB / 10 min) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, p in result["processes"].items():
        lines.append(
            f"| {name} | {p['rss_start_mib']} | {p['rss_after_warmup_mib']} | {p['rss_end_mib']} | "
            f"{p['rss_max_mib']} | {p['slope_mib_per_10min']:+.3f} |"
        )
    lines += ["", "| requests | count |", "| --- | ---: |"]
    lines += [f"| {kind} | {count:,} |" for kind, count in result["requests"].items()]
    if result["error_kinds"]:
        lines += ["", "| error | count |", "| --- | ---: |"]
        lines += [f"| {kind} | {count} |" for kind, count in result["error_kinds"].items()]
    machine = result["machine"]
    lines += ["", f"Machine: {machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}.", ""]
    return "\n".join(lines)


async def stoppable(run: Any) -> Any:
    """`run`, cancelled by SIGTERM or SIGINT so that its clean-up stops every process it started
    (a shell's background job ignores SIGINT; `kill` sends SIGTERM)."""
    task = asyncio.ensure_future(run)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    return await task


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the load runs (default: 30)")
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        default=None,
        help="left out of the slope (default: 5, or a fifth of a shorter run)",
    )
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--rate", type=float, default=10.0, help="client requests per second (default: 10)")
    parser.add_argument("--edits-per-second", type=float, default=1.0, help="admin API writes per second")
    parser.add_argument("--envoy-concurrency", type=int, default=2, help="Envoy worker threads (default: 2)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results directory (default: bench/results)"
    )
    args = parser.parse_args()
    if args.warmup_minutes is None:
        args.warmup_minutes = min(5.0, args.minutes / 5)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mcpgw-soak-") as temp:
        try:
            result = asyncio.run(stoppable(soak(args, Path(temp))))
        except asyncio.CancelledError:
            print("soak: stopped by a signal; every process it started is stopped, no results written")
            return 130
    (args.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "soak.png")
    (args.out / "soak.md").write_text(markdown(result))
    print(markdown(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
