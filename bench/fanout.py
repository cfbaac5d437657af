"""Fan-out benchmark: one tool edit delivered to many ADS streams, State of the World vs Delta.

A control plane (SnapshotCache + AdsServer) runs in its own process, serving a registry of
`--servers` MCP servers with `--tools` tools each, translated by the real translator. Client
processes open `--streams` ADS streams that behave like Envoy (tests/unit/adsclient.py):
subscribe like an Envoy node, ACK every response at once. Each round edits one tool's
description (cumulatively, so exactly one server's ECDS config changes), and measures the time
from `set_snapshot` until the last stream's ACK of what that edit sent. Both protocols run in
the same invocation against the same registry and edits.

Times compare across processes because `time.perf_counter` is CLOCK_MONOTONIC on Linux, one
clock for the whole machine. The server process builds the new snapshot (translate + seal)
before starting the clock: the measurement is delivery, not translation.

    .venv/bin/python bench/fanout.py [--streams 100] [--servers 100] [--tools 10] [--edits 30] [--out DIR]

Writes fanout.json and fanout.md into bench/results/ (or --out), and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcpgw import log  # noqa: E402
from mcpgw.registry.model import McpServer, RegistrySnapshot  # noqa: E402
from mcpgw.registry.validate import parse_server  # noqa: E402
from mcpgw.translate.envoy import GatewaySettings, PluginRef, translate  # noqa: E402
from mcpgw.xds.cache import Snapshot, SnapshotCache  # noqa: E402
from mcpgw.xds.server import AdsServer  # noqa: E402
from mcpgw.xds.types import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE  # noqa: E402
from tests.unit.adsclient import AdsClient, DeltaAdsClient  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROTOCOLS = ("sotw", "delta")
SETTINGS = GatewaySettings(
    PluginRef(url="http://127.0.0.1:18002/plugins/mcp-server/1/plugin.wasm", sha256="0" * 64)
)
STEP_TIMEOUT = 60.0  # no single command between processes may take longer


# -- the registry --------------------------------------------------------------------------


def document(index: int, tools: int, edits: dict[tuple[int, int], str]) -> dict[str, Any]:
    return {
        "kind": "McpServer",
        "namespace": "bench",
        "name": f"server{index}",
        "backend": {"endpoints": [f"127.0.0.1:{20000 + index}"]},  # IP: delivered by EDS
        "tools": [
            {
                "name": f"tool{j}",
                "description": edits.get((index, j), f"Tool {j} of server {index}."),
                "args": [{"name": "id", "type": "integer", "required": True, "position": "path"}],
                "requestTemplate": {"url": "/items/{{.args.id}}", "method": "GET"},
            }
            for j in range(tools)
        ],
    }


@dataclass
class Registry:
    """The benchmark registry; `edit` changes one tool and re-parses only its server."""

    servers: int
    tools: int
    edits: dict[tuple[int, int], str] = field(default_factory=dict)
    parsed: list[McpServer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.parsed = [self._parse(i) for i in range(self.servers)]

    def _parse(self, index: int) -> McpServer:
        return parse_server(document(index, self.tools, self.edits), f"server{index}.yaml")

    def edit(self, round_no: int) -> None:
        index, tool = round_no % self.servers, (round_no // self.servers) % self.tools
        self.edits[(index, tool)] = f"Edited in round {round_no}."
        self.parsed[index] = self._parse(index)

    def resources(self) -> dict[str, Any]:
        return translate(RegistrySnapshot(servers=tuple(self.parsed)), SETTINGS)


# -- the control-plane process -------------------------------------------------------------


def serve(conn: Connection, servers: int, tools: int) -> None:
    asyncio.run(_serve(conn, servers, tools))


async def _serve(conn: Connection, servers: int, tools: int) -> None:
    log.configure("warning")
    registry = Registry(servers, tools)
    cache = SnapshotCache()
    cache.set_resources(registry.resources())
    server = AdsServer(cache)
    port = await server.start("127.0.0.1", 0)
    snapshot = cache.snapshot
    subscriptions = [
        (CLUSTER, []),
        (ENDPOINT, sorted(snapshot.get(ENDPOINT).resources)),
        (EXTENSION_CONFIG, sorted(snapshot.get(EXTENSION_CONFIG).resources)),
        (LISTENER, []),
        (ROUTE, sorted(snapshot.get(ROUTE).resources)),
    ]
    conn.send({"target": f"127.0.0.1:{port}", "subscriptions": subscriptions})
    loop = asyncio.get_running_loop()
    try:
        while True:
            command, arg = await loop.run_in_executor(None, conn.recv)
            if command == "edit":
                registry.edit(arg)
                built = Snapshot.build(registry.resources(), previous=cache.snapshot)
                started = time.perf_counter()
                changed = cache.set_snapshot(built)
                conn.send({"t0": started, "changed": changed})
            elif command == "stop":
                break
    finally:
        await server.stop(1.0)
        conn.send("stopped")


# -- the client processes ------------------------------------------------------------------


@dataclass
class Received:
    at: float  # perf_counter once the ACK was written
    type_url: str
    resources: int
    size: int  # serialised response bytes


class Streams:
    """`count` Envoy-like streams of one protocol, each ACKing everything it receives."""

    def __init__(self, protocol: str, target: str, count: int, offset: int) -> None:
        kind = DeltaAdsClient if protocol == "delta" else AdsClient
        self.clients = [kind(target, f"bench-{protocol}-{offset + i}") for i in range(count)]
        self.log: list[Received] = []
        self.last_activity = time.perf_counter()
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, subscriptions: list[tuple[str, list[str]]]) -> None:
        for client in self.clients:
            await client.connect()
            self._tasks.append(asyncio.create_task(self._ack_forever(client)))
            for type_url, names in subscriptions:
                await client.subscribe(type_url, names)

    async def _ack_forever(self, client: AdsClient | DeltaAdsClient) -> None:
        while True:
            try:
                resp = await client.recv(timeout=3600)
            except (TimeoutError, EOFError):
                return
            await client.ack(resp)  # type: ignore[arg-type]  # each client gets its own kind
            now = time.perf_counter()
            self.last_activity = now
            self.log.append(Received(now, resp.type_url, len(resp.resources), resp.ByteSize()))

    async def settle(self, quiet: float, timeout: float, at_least: int = 0) -> list[Received]:
        """Wait for `at_least` responses, then until none arrives for `quiet` seconds (bounded).

        Returns and clears the log of what was received.
        """
        deadline = time.perf_counter() + timeout
        while len(self.log) < at_least or time.perf_counter() - self.last_activity < quiet:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"streams still busy after {timeout}s")
            await asyncio.sleep(quiet / 4)
        received, self.log = self.log, []
        return received

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self.clients:
            await client.close()


def clients(conn: Connection, protocol: str, target: str, count: int, offset: int, subs: list[Any]) -> None:
    asyncio.run(_clients(conn, protocol, target, count, offset, subs))


async def _clients(
    conn: Connection, protocol: str, target: str, count: int, offset: int, subs: list[Any]
) -> None:
    streams = Streams(protocol, target, count, offset)
    loop = asyncio.get_running_loop()
    try:
        await streams.open(subs)
        initial = await streams.settle(0.5, STEP_TIMEOUT)
        conn.send(len(initial))
        while True:
            command, quiet = await loop.run_in_executor(None, conn.recv)
            if command != "settle":
                break
            # Every stream gets at least one response per edit; then wait out stragglers.
            received = await streams.settle(quiet, STEP_TIMEOUT, at_least=count)
            conn.send([(r.at, r.type_url, r.resources, r.size) for r in received])
    finally:
        await streams.close()


# -- the orchestration ---------------------------------------------------------------------


def _call(conn: Connection, message: Any) -> Any:
    conn.send(message)
    return _reply(conn)


def _reply(conn: Connection) -> Any:
    if not conn.poll(STEP_TIMEOUT):
        raise TimeoutError(f"no answer within {STEP_TIMEOUT}s")
    return conn.recv()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_protocol(
    ctx: mp.context.SpawnContext,
    protocol: str,
    server: Connection,
    info: dict[str, Any],
    args: argparse.Namespace,
    first_round: int,
) -> dict[str, Any]:
    """Connect `args.streams` streams of `protocol`, then time `args.edits` tool edits."""
    pipes, procs = [], []
    per_worker = [
        args.streams // args.workers + (i < args.streams % args.workers) for i in range(args.workers)
    ]
    offset = 0
    for count in per_worker:
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(
            target=clients, args=(theirs, protocol, info["target"], count, offset, info["subscriptions"])
        )
        proc.start()
        pipes.append(mine)
        procs.append(proc)
        offset += count
    try:
        initial = sum(_reply(p) for p in pipes)
        samples, responses, resources, sizes, types = [], [], [], [], set()
        for round_no in range(first_round, first_round + args.edits):
            edit = _call(server, ("edit", round_no))
            assert edit["changed"] == [EXTENSION_CONFIG], edit
            received = [r for p in pipes for r in _call(p, ("settle", args.quiet))]
            assert len(received) >= args.streams, f"{len(received)} responses for {args.streams} streams"
            samples.append((max(r[0] for r in received) - edit["t0"]) * 1000)
            responses.append(len(received))
            resources.append(sum(r[2] for r in received))
            sizes.append(sum(r[3] for r in received))
            types.update(r[1].rsplit(".", 1)[-1] for r in received)
        for p in pipes:
            p.send(("stop", 0))
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    return {
        "protocol": protocol,
        "initial_responses": initial,
        "samples_ms": [round(s, 3) for s in samples],
        "median_ms": round(statistics.median(samples), 3),
        "p99_ms": round(percentile(samples, 0.99), 3),
        "max_ms": round(max(samples), 3),
        "responses_per_edit": statistics.median(responses),
        "resources_per_edit": statistics.median(resources),
        "bytes_per_edit": statistics.median(sizes),
        "types_sent": sorted(types),
    }


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        "## Fan-out: one tool edit to many ADS streams",
        "",
        f"{cfg['streams']} streams, {cfg['servers']} servers x {cfg['tools']} tools, {cfg['edits']} edits "
        f"per protocol; `set_snapshot` to the last stream's ACK ({result['machine']['cpus']} CPUs).",
        "",
        "| protocol | median (ms) | p99 (ms) | max (ms) | responses/edit | resources/edit | bytes/edit |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['protocol']} | {row['median_ms']:.2f} | {row['p99_ms']:.2f} | {row['max_ms']:.2f} | "
            f"{row['responses_per_edit']:g} | {row['resources_per_edit']:g} | {row['bytes_per_edit']:,.0f} |"
        )
    ratio = result["ratio_sotw_over_delta"]
    lines += [
        "",
        f"SotW / Delta: median {ratio['median']:.2f}x, p99 {ratio['p99']:.2f}x, max {ratio['max']:.2f}x.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100, help="concurrent ADS streams per protocol")
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--tools", type=int, default=10, help="tools per server")
    parser.add_argument("--edits", type=int, default=30, help="timed edits per protocol (1-1000)")
    parser.add_argument(
        "--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="client processes"
    )
    parser.add_argument(
        "--quiet", type=float, default=0.2, help="seconds without a response that end a round"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results directory (default: bench/results)"
    )
    args = parser.parse_args()
    if not 1 <= args.edits <= 1000 or args.streams < 1 or args.workers < 1:
        parser.error("--edits must be 1..1000, --streams and --workers at least 1")
    args.workers = min(args.workers, args.streams)

    ctx = mp.get_context("spawn")  # no inherited event loops or gRPC state in the children
    server_pipe, theirs = ctx.Pipe()
    server = ctx.Process(target=serve, args=(theirs, args.servers, args.tools))
    server.start()
    rows = []
    try:
        info = _reply(server_pipe)
        for index, protocol in enumerate(PROTOCOLS):
            rows.append(run_protocol(ctx, protocol, server_pipe, info, args, first_round=index * args.edits))
            print(f"{protocol}: median {rows[-1]['median_ms']} ms, max {rows[-1]['max_ms']} ms", flush=True)
        server_pipe.send(("stop", 0))
        with contextlib.suppress(TimeoutError):
            _reply(server_pipe)
    finally:
        server.join(10)
        if server.is_alive():
            server.terminate()
            server.join(5)

    by_protocol = {row["protocol"]: row for row in rows}
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        # Where the results go is no part of the configuration measured.
        "config": {key: value for key, value in vars(args).items() if key != "out"},
        "rows": rows,
        "ratio_sotw_over_delta": {
            key: round(by_protocol["sotw"][f"{key}_ms"] / by_protocol["delta"][f"{key}_ms"], 3)
            for key in ("median", "p99", "max")
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fanout.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "fanout.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
