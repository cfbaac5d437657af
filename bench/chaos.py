"""Faults under load: what clients see while parts of a highly available gateway fail, one at a time.

The deployment, all real processes on this machine:
- Redis under Sentinel: a primary and a replica (append-only file, fsync always) and three
  sentinels; every Redis URL is `redis+sentinel://…` (registry, session keys, SSE bus);
- two control-plane replicas (`mcpgw serve -f redis+sentinel://…`), each with its session broker;
- two Envoys from `mcpgw bootstrap`, each listing both replicas (A prefers replica 1, B replica 2).
  The control plane gives every Envoy the same listener, so on one machine they share its port
  (SO_REUSEPORT); clients reach them through a TCP load balancer (an Envoy TCP proxy);
- a REST backend (`mcpgw demo-backend`) and an upstream MCP server (the `mcp` SDK's MCPServer
  over Streamable HTTP, a child process of this script).

The load, steady through the run: Streamable HTTP sessions (`tools/call` of a REST tool and of
the upstream MCP server's tool, `tools/list`), stateless (2026-07-28) `tools/call`s, HTTP+SSE
sessions (the `mcp` SDK's SSE client), and an admin API write every 200 ms (each a new version of
one of a few servers, to either replica, the other one when the first cannot be reached).

The faults, one at a time, `--seconds-per-fault` apart: SIGKILL control-plane replica 1 (restarted
after 2 s); SIGKILL Envoy A (restarted after 2 s); stop Redis (the primary, SIGTERM) and start it
again; SIGKILL the REST backend (restarted after 2 s); SIGSTOP the upstream MCP server for 5 s;
SIGKILL the Redis primary so the sentinels fail over (the node restarts as the new primary's
replica, as a supervisor's start script would start it).

For each fault: calls failed by kind and status, the time from the fault to the last failure (the
error rate is zero after it), admin writes acknowledged and lost (every acknowledged write is read
back at the end: for each server, the version stored must be at least the last acknowledged one),
and the sessions that lived through it.

    .venv/bin/python bench/chaos.py [--seconds-per-fault 20] [--faults controlplane,envoy,…] [--out DIR]

Writes chaos.json and chaos.md into bench/results/ (or --out).
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from mcp import Client
from mcp.client.sse import sse_client

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcpgw.envoyproc import EnvoyProcess  # noqa: E402
from mcpgw.httpserve import serve  # noqa: E402
from mcpgw.registry.redisstore import RedisStore  # noqa: E402
from mcpgw.stack import free_port  # noqa: E402
from pluginserver.server import DEFAULT_ROOT, create_app  # noqa: E402
from tests.integration.mcphttp import ACCEPT, initialize_request, rpc  # noqa: E402
from tests.redisserver import SentinelSetup  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "chaos-admin-token"
FAULTS = ("controlplane", "envoy", "redis", "backend", "upstream", "sentinel")
WRITE_KEYS = 5
STATELESS = "2026-07-28"
STATELESS_META = {
    "io.modelcontextprotocol/protocolVersion": STATELESS,
    "io.modelcontextprotocol/clientCapabilities": {},
}
PY = sys.executable


# -- the upstream MCP server (a child process: `chaos.py --upstream PORT`) ---------------------


def run_upstream(port: int) -> None:
    import uvicorn
    from mcp.server.mcpserver import MCPServer

    server: MCPServer[Any] = MCPServer(name="weather")

    @server.tool(description="Forecast for a city.")
    def forecast(city: str) -> str:
        return f"sunny in {city}"

    uvicorn.run(
        server.streamable_http_app(json_response=True), host="127.0.0.1", port=port, log_level="warning"
    )


# -- processes -----------------------------------------------------------------------------------


class Child:
    """A child process that can be killed, stopped and started again with the same command."""

    def __init__(self, name: str, command: list[str], log: Path) -> None:
        self.name, self.command, self.log = name, command, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGCONT)
                self.signal(signal.SIGTERM)


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if isinstance(value, Awaitable):
                value = await value
            if value:
                return value
        except (OSError, httpx.HTTPError, ValueError, KeyError):
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{what} did not happen within {timeout}s")


def lb_bootstrap(listen: int, target: int, admin: int) -> str:
    """An Envoy that only balances TCP connections over the gateway's Envoys."""
    return yaml.safe_dump(
        {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {
                "listeners": [
                    {
                        "name": "lb",
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                        "filter_chains": [
                            {
                                "filters": [
                                    {
                                        "name": "envoy.filters.network.tcp_proxy",
                                        "typed_config": {
                                            "@type": "type.googleapis.com/envoy.extensions.filters."
                                            "network.tcp_proxy.v3.TcpProxy",
                                            "stat_prefix": "lb",
                                            "cluster": "gateway",
                                            # A connection refused (an Envoy gone) is retried.
                                            "max_connect_attempts": 3,
                                        },
                                    }
                                ]
                            }
                        ],
                    }
                ],
                "clusters": [
                    {
                        "name": "gateway",
                        "connect_timeout": "1s",
                        "type": "STATIC",
                        "load_assignment": {
                            "cluster_name": "gateway",
                            "endpoints": [
                                {
                                    "lb_endpoints": [
                                        {
                                            "endpoint": {
                                                "address": {
                                                    "socket_address": {
                                                        "address": "127.0.0.1",
                                                        "port_value": target,
                                                    }
                                                }
                                            }
                                        }
                                    ]
                                }
                            ],
                        },
                    }
                ],
            },
        }
    )


@dataclass
class Replica:
    child: Child
    xds: int
    admin: int
    broker: int

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Call:
    at: float
    kind: str
    ok: bool
    detail: str


@dataclass
class Window:
    fault: str
    start: float
    end: float = 0.0
    notes: list[str] = field(default_factory=list)


class Chaos:
    def __init__(self, work: Path, seconds_per_fault: float) -> None:
        self.work = work
        self.seconds = seconds_per_fault
        self.calls: list[Call] = []
        self.acked: list[tuple[float, str, int]] = []  # (when, server, version)
        self.write_number = 0
        self.done = asyncio.Event()
        self.windows: list[Window] = []
        self.listen = free_port()
        self.lb_port = free_port()
        self.backend_port = free_port()
        self.upstream_port = free_port()
        # Session survival: (kind, id) → times it had to be opened again.
        self.sessions: dict[str, list[float]] = {}
        self.envoys: dict[str, EnvoyProcess] = {}
        self.bootstraps: dict[str, tuple[str, int]] = {}

    # -- setup ----------------------------------------------------------------------------------

    def record(self, kind: str, ok: bool, detail: str) -> None:
        self.calls.append(Call(time.monotonic(), kind, ok, detail))

    async def start(self) -> None:
        self.redis = SentinelSetup(self.work / "redis", down_after_ms=5000, persistent=True)
        self.redis.start()
        self.backend = Child(
            "backend",
            [PY, "-m", "mcpgw.cli", "demo-backend", "--port", str(self.backend_port)],
            self.work / "backend.log",
        )
        self.backend.start()
        self.upstream = Child(
            "upstream",
            [PY, str(Path(__file__).resolve()), "--upstream", str(self.upstream_port)],
            self.work / "upstream.log",
        )
        self.upstream.start()
        pets = f"http://127.0.0.1:{self.backend_port}/v1/pets"
        await until(lambda: httpx.get(pets, timeout=1).status_code == 200,
                    20, "the REST backend")  # fmt: skip
        await self.seed()
        self.plugins = await serve(create_app(DEFAULT_ROOT), "127.0.0.1", 0)
        (self.work / "token").write_text(TOKEN)
        self.replicas = [self.replica(1), self.replica(2)]
        for replica in self.replicas:
            replica.child.start()
        for replica in self.replicas:
            await self.replica_ready(replica)
        for name, preferred, other in (("a", *self.replicas), ("b", *reversed(self.replicas))):
            await self.start_envoy(name, preferred, other)
        self.lb = EnvoyProcess(lb_bootstrap(self.lb_port, self.listen, free_port()), admin_port=0,
                               workdir=self.work / "lb")  # fmt: skip
        (self.work / "lb").mkdir(exist_ok=True)
        await self.lb.start()
        await until(lambda: self.mcp_ready(), 60, "tools/list through the load balancer")

    async def seed(self) -> None:
        petstore = yaml.safe_load((REPO / "examples" / "registry" / "petstore.yaml").read_text())
        petstore["backend"]["endpoints"] = [f"127.0.0.1:{self.backend_port}"]
        weather = {
            "kind": "McpServer", "type": "mcp", "namespace": "default", "name": "weather",
            "backend": {"endpoints": [f"127.0.0.1:{self.upstream_port}"], "timeoutMs": 3000},
        }  # fmt: skip
        store = RedisStore(self.redis.url)
        await store.load()
        await store.put(petstore)
        await store.put(weather)
        for key in range(WRITE_KEYS):
            await store.put(self.written(key, 0))
        await store.close()

    def written(self, key: int, version: int) -> dict[str, Any]:
        return {
            "kind": "McpServer", "namespace": "chaos", "name": f"w{key}", "description": f"version {version}",
            "backend": {"endpoints": [f"127.0.0.1:{self.backend_port}"]},
            "tools": [{"name": "get", "args": [{"name": "id", "type": "integer", "required": True,
                                                 "position": "path"}],
                       "requestTemplate": {"url": "/v1/pets/{{.args.id}}", "method": "GET"}}],
        }  # fmt: skip

    def replica(self, number: int) -> Replica:
        xds, admin, broker = free_port(), free_port(), free_port()
        command = [
            PY, "-m", "mcpgw.cli", "--log-level", "info", "serve", "-f", self.redis.url,
            "--xds", f"127.0.0.1:{xds}", "--admin", f"127.0.0.1:{admin}",
            "--admin-token-file", str(self.work / "token"), "--plugins", f"127.0.0.1:{self.plugins.port}",
            "--no-plugin-server", "--listen", f"127.0.0.1:{self.listen}", "--broker", f"127.0.0.1:{broker}",
        ]  # fmt: skip
        return Replica(
            Child(f"replica{number}", command, self.work / f"replica{number}.log"), xds, admin, broker
        )

    async def replica_ready(self, replica: Replica) -> None:
        await until(lambda: httpx.get(f"{replica.admin_url}/status", timeout=1).status_code == 200, 60,
                    f"{replica.child.name} ready")  # fmt: skip

    async def start_envoy(self, name: str, preferred: Replica, other: Replica) -> None:
        if name not in self.bootstraps:
            admin = free_port()
            bootstrap = subprocess.run(
                [PY, "-m", "mcpgw.cli", "bootstrap", "--node-id", f"envoy-{name}",
                 "--xds", f"127.0.0.1:{preferred.xds}", "--xds", f"127.0.0.1:{other.xds}",
                 "--envoy-admin", f"127.0.0.1:{admin}", "--stats", f"127.0.0.1:{free_port()}",
                 "--broker", f"127.0.0.1:{preferred.broker}"],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            self.bootstraps[name] = (bootstrap, admin)
        bootstrap, admin = self.bootstraps[name]
        workdir = self.work / f"envoy-{name}"
        workdir.mkdir(exist_ok=True)
        envoy = EnvoyProcess(bootstrap, admin_port=admin, workdir=workdir)  # a new base id each start
        await envoy.start()
        await envoy.wait_ready(60, listeners=1)
        self.envoys[name] = envoy

    def mcp_url(self, server: str) -> str:
        return f"http://127.0.0.1:{self.lb_port}/mcp/default/{server}"

    async def mcp_ready(self) -> bool:
        async with httpx.AsyncClient(timeout=2) as http:
            response = await http.post(self.mcp_url("petstore"), json=initialize_request(), headers=ACCEPT)
            return response.status_code == 200

    # -- load -----------------------------------------------------------------------------------

    async def session_loop(
        self, label: str, server: str, steps: list[tuple[str, dict[str, Any] | None]]
    ) -> None:
        """One Streamable HTTP session, opened once and used for the whole run while it works."""
        opened: list[float] = []
        self.sessions[label] = opened
        headers: dict[str, str] | None = None
        step = 0
        async with httpx.AsyncClient(timeout=10) as http:
            while not self.done.is_set():
                method, params = steps[step % len(steps)]
                kind = f"session {method}" + (f" ({server})" if method == "tools/call" else "")
                try:
                    if headers is None:
                        response = await http.post(
                            self.mcp_url(server), json=initialize_request(), headers=ACCEPT
                        )
                        if response.status_code != 200:
                            self.record("session initialize", False, str(response.status_code))
                            await asyncio.sleep(0.2)
                            continue
                        headers = {"mcp-protocol-version": response.json()["result"]["protocolVersion"],
                                   "mcp-session-id": response.headers["mcp-session-id"]}  # fmt: skip
                        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                        await http.post(self.mcp_url(server), json=initialized,
                                        headers=ACCEPT | headers)  # fmt: skip
                        opened.append(time.monotonic())
                    response = await http.post(
                        self.mcp_url(server), json=rpc(method, params, id=step), headers=ACCEPT | headers
                    )
                    if response.status_code in (400, 404) and "session" in response.text.lower():
                        headers = None  # the session is gone: open a new one
                    self.record(kind, *outcome(response))
                except (httpx.HTTPError, ValueError, KeyError) as error:
                    self.record(kind, False, type(error).__name__)
                step += 1
                await asyncio.sleep(0.2)

    async def stateless_loop(self) -> None:
        headers = ACCEPT | {
            "mcp-protocol-version": STATELESS,
            "mcp-method": "tools/call",
            "mcp-name": "describePet",
        }
        async with httpx.AsyncClient(timeout=10) as http:
            while not self.done.is_set():
                body = rpc(
                    "tools/call", {"name": "describePet", "arguments": {"id": 2}, "_meta": STATELESS_META}
                )
                try:
                    response = await http.post(self.mcp_url("petstore"), json=body, headers=headers)
                    self.record("stateless tools/call", *outcome(response))
                except httpx.HTTPError as error:
                    self.record("stateless tools/call", False, type(error).__name__)
                await asyncio.sleep(0.2)

    async def sse_loop(self, label: str) -> None:
        """An HTTP+SSE session (the `mcp` SDK's client); when it breaks, a new one is opened."""
        opened: list[float] = []
        self.sessions[label] = opened
        while not self.done.is_set():
            try:
                async with Client(sse_client(f"{self.mcp_url('petstore')}/sse"), mode="legacy") as client:
                    opened.append(time.monotonic())
                    while not self.done.is_set():
                        result = await asyncio.wait_for(client.call_tool("describePet", {"id": 2}), 10)
                        self.record(
                            "sse tools/call", not result.is_error, "tool error" if result.is_error else "ok"
                        )
                        await asyncio.sleep(0.5)
            except Exception as error:  # every way a session ends is counted
                self.record("sse tools/call", False, type(error).__name__)
                await asyncio.sleep(0.5)

    async def admin_loop(self) -> None:
        auth = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(timeout=10) as http:
            while not self.done.is_set():
                began = time.monotonic()
                self.write_number += 1
                number, key = self.write_number, self.write_number % WRITE_KEYS
                detail = "unreachable"
                first = number % 2
                for replica in (self.replicas[first], self.replicas[1 - first]):
                    try:
                        response = await http.put(f"{replica.admin_url}/v1/servers/chaos/w{key}",
                                                  json=self.written(key, number), headers=auth)  # fmt: skip
                    except httpx.HTTPError:
                        continue  # that replica is down: the other one
                    detail = str(response.status_code)
                    if response.status_code in (200, 201):
                        self.acked.append((time.monotonic(), f"w{key}", number))
                    break
                self.record("admin write", detail in ("200", "201"), detail)
                await asyncio.sleep(max(0.0, 0.2 - (time.monotonic() - began)))

    # -- faults ---------------------------------------------------------------------------------

    async def fault(self, name: str) -> None:
        window = Window(name, time.monotonic())
        self.windows.append(window)
        print(f"fault: {name}", flush=True)
        if name == "controlplane":
            self.replicas[0].child.signal(signal.SIGKILL)
            await asyncio.sleep(2)
            self.replicas[0].child.start()
            await self.replica_ready(self.replicas[0])
        elif name == "envoy":
            envoy = self.envoys.pop("a")
            assert envoy.process is not None
            envoy.process.kill()
            await envoy.process.wait()
            await asyncio.sleep(2)
            await self.start_envoy("a", *self.replicas)
        elif name == "redis":
            primary = self.redis.primary_port()
            assert primary is not None
            # Back within the sentinels' down-after (5 s): no failover, the primary stays the
            # primary, with its data (append-only file).
            self.redis.kill(primary, signal.SIGTERM)
            await asyncio.sleep(1)
            await asyncio.to_thread(self.redis.start_data, primary)
        elif name == "backend":
            self.backend.signal(signal.SIGKILL)
            await asyncio.sleep(2)
            self.backend.start()
        elif name == "upstream":
            self.upstream.signal(signal.SIGSTOP)
            await asyncio.sleep(5)
            self.upstream.signal(signal.SIGCONT)
        elif name == "sentinel":
            old = self.redis.primary_port()
            assert old is not None
            self.redis.kill(old)
            new = await until(lambda: (port := self.redis.primary_port()) not in (None, old) and port, 60,
                              "a Sentinel failover")  # fmt: skip
            window.notes.append(f"failover after {time.monotonic() - window.start:.1f} s")
            await asyncio.to_thread(self.redis.start_data, old, new)
        window.notes.append(f"recovery actions done after {time.monotonic() - window.start:.1f} s")
        await asyncio.sleep(max(0.0, window.start + self.seconds - time.monotonic()))
        window.end = time.monotonic()

    async def run(self, faults: list[str], warmup: float) -> dict[str, Any]:
        pet = ("tools/call", {"name": "describePet", "arguments": {"id": 1}})
        forecast = ("tools/call", {"name": "forecast", "arguments": {"city": "Oslo"}})
        listing = ("tools/list", None)
        loads = [
            self.session_loop("session petstore 1", "petstore", [pet, listing]),
            self.session_loop("session petstore 2", "petstore", [listing, pet]),
            self.session_loop("session weather", "weather", [forecast, listing]),
            self.stateless_loop(),
            self.sse_loop("sse 1"),
            self.sse_loop("sse 2"),
            self.admin_loop(),
        ]  # fmt: skip
        tasks = [asyncio.create_task(load) for load in loads]
        began = time.monotonic()
        await asyncio.sleep(warmup)
        baseline = Window("none (baseline)", began)
        baseline.end = time.monotonic()
        self.windows.append(baseline)
        for name in faults:
            await self.fault(name)
        self.done.set()
        await asyncio.wait(tasks, timeout=15)
        return await self.report()

    # -- results --------------------------------------------------------------------------------

    async def report(self) -> dict[str, Any]:
        store = RedisStore(self.redis.url)
        await store.load()
        stored = {entry.server.name: int(str(entry.document.get("description", "version 0")).split()[-1])
                  for entry in store.entries() if entry.server.namespace == "chaos"}  # fmt: skip
        await store.close()
        # Through the admin API too: what a replica serves is what Redis holds.
        async with httpx.AsyncClient(timeout=10) as http:
            for name in stored:
                response = await http.get(f"{self.replicas[1].admin_url}/v1/servers/chaos/{name}",
                                          headers={"accept": "application/json"})  # fmt: skip
                served = int(str(response.json()["description"]).split()[-1])
                stored[name] = min(stored[name], served)
        last_acked: dict[str, tuple[float, int]] = {}
        for at, name, number in self.acked:
            last_acked[name] = (at, number)
        lost = [(at, name, number) for at, name, number in self.acked
                if stored.get(name, 0) < number]  # fmt: skip
        rows = []
        for window in self.windows:
            calls = [c for c in self.calls if window.start <= c.at < window.end]
            failed = [c for c in calls if not c.ok]
            by = Counter(f"{c.kind}: {c.detail}" for c in failed)
            recovery = max((c.at for c in failed), default=window.start) - window.start
            sessions = {label: not any(window.start < at < window.end for at in opened[1:])
                        for label, opened in self.sessions.items()}  # fmt: skip
            rows.append({
                "fault": window.fault,
                "seconds": round(window.end - window.start, 1),
                "calls": len(calls),
                "failed": len(failed),
                "failed_by_kind_status": dict(sorted(by.items())),
                "recovery_s": round(recovery, 2),
                "recovered": not failed or max(c.at for c in failed) < window.end - 2,
                "admin_acked": sum(1 for at, _, _ in self.acked if window.start <= at < window.end),
                "admin_acked_then_lost": sum(1 for at, _, _ in lost if window.start <= at < window.end),
                "sessions_survived": f"{sum(sessions.values())}/{len(sessions)}",
                "sessions_lost": sorted(label for label, alive in sessions.items() if not alive),
                "notes": window.notes,
            })  # fmt: skip
        return {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "seconds_per_fault": self.seconds,
            "rows": rows,
            "admin_writes": {
                "attempted": self.write_number,
                "acknowledged": len(self.acked),
                "lost": len(lost),
            },
            "total_calls": len(self.calls),
        }

    async def stop(self) -> None:
        for envoy in [*self.envoys.values(), getattr(self, "lb", None)]:
            if envoy is not None:
                with contextlib.suppress(Exception):
                    await envoy.stop()
        for child in [*(r.child for r in getattr(self, "replicas", [])), getattr(self, "backend", None),
                      getattr(self, "upstream", None)]:  # fmt: skip
            if child is not None:
                child.stop()
        if hasattr(self, "plugins"):
            await self.plugins.close()
        if hasattr(self, "redis"):
            self.redis.stop()


def outcome(response: httpx.Response) -> tuple[bool, str]:
    """(ok, detail): HTTP status, else the JSON-RPC error code, else whether the tool failed."""
    if response.status_code != 200:
        return False, str(response.status_code)
    try:
        answer = response.json()
    except ValueError:
        return False, "200 not JSON"
    if "error" in answer:
        return False, f"JSON-RPC {answer['error'].get('code')}"
    if answer.get("result", {}).get("isError"):
        return False, "tool error"
    return True, "ok"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Faults under load",
        "",
        "`bench/chaos.py` (`make chaos`): two control-plane replicas on Redis under Sentinel (primary + "
        "replica, AOF fsync always, three sentinels), two Envoys behind an Envoy TCP load balancer, a "
        "REST backend and an upstream MCP server; a steady mixed load (Streamable HTTP sessions calling "
        "a REST tool, an upstream MCP tool and tools/list; stateless 2026-07-28 tools/call; two HTTP+SSE "
        "sessions; an admin write every 200 ms). One fault at a time, "
        f"{result['seconds_per_fault']:g} s apart, on a {result['machine']['cpus']}-core machine shared "
        "with other work.",
        "",
        "Recovery = time from the fault to the last failed call (zero errors after it). Acknowledged "
        "writes are read back at the end (Redis through the sentinels, and a replica's admin API).",
        "",
        "| fault | calls | failed | failed by kind: status | recovery s | admin acked | acked then lost "
        "| sessions survived |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for row in result["rows"]:
        failures = (
            "; ".join(f"{kind} x{count}" for kind, count in row["failed_by_kind_status"].items()) or "—"
        )
        lost = ", ".join(row["sessions_lost"])
        lines.append(
            f"| {row['fault']} | {row['calls']} | {row['failed']} | {failures} | {row['recovery_s']:.1f}"
            f"{'' if row['recovered'] else ' (not recovered)'} | {row['admin_acked']} | "
            f"{row['admin_acked_then_lost']} | {row['sessions_survived']}"
            f"{f' (lost: {lost})' if lost else ''} |"
        )
    writes = result["admin_writes"]
    lines += [
        "",
        f"Admin writes: {writes['attempted']} attempted, {writes['acknowledged']} acknowledged, "
        f"{writes['lost']} acknowledged and then lost.",
        "",
        "Notes per fault: "
        + "; ".join(f"{row['fault']}: {', '.join(row['notes'])}" for row in result["rows"] if row["notes"]),
        "",
        "What each fault is expected to cost (the design, see docs/ha.md and docs/mcp.md#sessions):",
        "",
        "- controlplane: Envoys keep serving their configuration and reconnect to the other replica; "
        "admin writes go to the other replica. HTTP+SSE streams held by the killed replica's session "
        "broker (`serve` runs one in-process) end, and so do sessions whose POSTs the load balancer sends "
        "to that replica's Envoy while its broker is down (each Envoy hands answers to its own broker); "
        "run `mcpgw broker` beside each Envoy (`serve --no-broker`) to keep them.",
        "- envoy: requests in flight on the killed Envoy fail (connection reset); new connections go to "
        "the other Envoy (both listen on one port). Sessions are signed tokens: every Envoy accepts them.",
        "- redis: admin writes are refused (503) while Redis is down; HTTP+SSE streams end with an error "
        "event (the bus does not resubscribe behind a client's back) and new ones get 503 until the bus "
        "is back; Streamable HTTP and stateless calls do not touch Redis.",
        "- backend: REST tools answer `isError` results (HTTP 200, JSON-RPC result) while it is down.",
        "- upstream: calls to the stopped MCP server wait up to the server's `timeoutMs` (3 s here), "
        "then fail with 502.",
        "- sentinel: admin writes are refused (503) from the primary's loss until the sentinels promote "
        "the replica and the old node is back as its replica (a write must reach a replica before it "
        "is acknowledged); HTTP+SSE streams end as for redis.",
        "",
        "Reproduce: `make chaos` (or `.venv/bin/python bench/chaos.py --seconds-per-fault 20`).",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    faults = [name.strip() for name in args.faults.split(",") if name.strip()]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        print(f"error: unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mcpgw-chaos-") as temporary:
        work = Path(args.keep) if args.keep else Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        chaos = Chaos(work, args.seconds_per_fault)
        try:
            await chaos.start()
            result = await chaos.run(faults, args.warmup)
        finally:
            await chaos.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "chaos.md").write_text(markdown(result))
    print(markdown(result))
    return 1 if result["admin_writes"]["lost"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds-per-fault", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the first fault")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"default: {','.join(FAULTS)}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", help="keep the processes' logs in this directory")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--render", type=Path, help="only re-render chaos.md from this chaos.json")
    args = parser.parse_args()
    if args.upstream:
        run_upstream(args.upstream)
        return 0
    if args.render:
        (args.out / "chaos.md").write_text(markdown(json.loads(args.render.read_text())))
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
