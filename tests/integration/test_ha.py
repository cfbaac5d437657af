"""High availability: two control-plane processes on one real Redis, two Envoys, one per replica.

A write on replica 1 reaches the Envoy connected to replica 2; replica 1 is killed; its Envoy
fails over to replica 2 (its bootstrap lists both) while it keeps serving, and a later edit
reaches it.

Both Envoys get the same listener from the control plane (one registry, one configuration), so
on this one machine they share its port with SO_REUSEPORT; what each Envoy holds is therefore
read from its own admin endpoint (`/config_dump`), which is exactly the configuration it serves.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mcpgw.bootstrap import BootstrapOptions, render
from mcpgw.envoyproc import EnvoyProcess
from mcpgw.httpserve import serve
from mcpgw.registry.redisstore import RedisStore
from pluginserver.server import DEFAULT_ROOT, create_app
from tests import waiting
from tests.integration.conftest import free_port
from tests.integration.mcphttp import call
from tests.redisserver import RedisServer
from tests.unit.test_registry import minimal

TOKEN = "ha-test-token"


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    xds_port: int
    admin_port: int
    log: Path

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def nodes(self) -> list[str]:
        with urllib.request.urlopen(f"{self.admin}/status", timeout=2) as response:
            return [node["node_id"] for node in json.load(response)["nodes"]]


def start_replica(redis_url: str, plugin_port: int, listen_port: int, token_file: Path, log: Path) -> Replica:
    xds_port, admin_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "mcpgw.cli", "--log-level", "info", "serve", "-f", redis_url,
        "--xds", f"127.0.0.1:{xds_port}", "--admin", f"127.0.0.1:{admin_port}",
        "--admin-token-file", str(token_file), "--plugins", f"127.0.0.1:{plugin_port}", "--no-plugin-server",
        "--listen", f"127.0.0.1:{listen_port}", "--broker", f"127.0.0.1:{free_port()}",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    replica = Replica(process, xds_port, admin_port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"replica exited {process.returncode}:\n{log.read_text()}")
        try:
            replica.nodes()
            return replica
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"replica not ready:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# The checks reach replicas that may be starting or stopped (connection refused).
eventually = functools.partial(waiting.eventually, ignore=(OSError,), interval=0.1)


@pytest.fixture
def replicas_cleanup() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop(process, signal.SIGKILL)


async def test_write_reaches_every_envoy_and_envoy_fails_over(
    tmp_path: Path, redis_server: RedisServer, replicas_cleanup: list[subprocess.Popen[bytes]]
) -> None:
    # The registry starts in Redis, written by a store like any replica would.
    seed = RedisStore(redis_server.url)
    await seed.load()
    await seed.put(minimal(name="shared", description="v1"))
    await seed.close()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    # One plugin server for the deployment, so both replicas produce identical configuration.
    plugins = await serve(create_app(DEFAULT_ROOT), "127.0.0.1", 0)
    listen_port = free_port()
    one = start_replica(redis_server.url, plugins.port, listen_port, token_file, tmp_path / "replica1.log")
    replicas_cleanup.append(one.process)
    two = start_replica(redis_server.url, plugins.port, listen_port, token_file, tmp_path / "replica2.log")
    replicas_cleanup.append(two.process)

    def envoy(node: str, preferred: Replica, other: Replica) -> EnvoyProcess:
        bootstrap = render(
            BootstrapOptions(
                node_id=node,
                xds=(("127.0.0.1", preferred.xds_port), ("127.0.0.1", other.xds_port)),
                admin_port=free_port(),
            )
        )
        return EnvoyProcess(bootstrap, admin_port=int(bootstrap.split("port_value: ")[1].split("}")[0]),
                            workdir=tmp_path / node)  # fmt: skip

    (tmp_path / "envoy-a").mkdir()
    (tmp_path / "envoy-b").mkdir()
    envoy_a, envoy_b = envoy("envoy-a", one, two), envoy("envoy-b", two, one)
    try:
        for proxy in (envoy_a, envoy_b):
            await proxy.start()
        for proxy in (envoy_a, envoy_b):
            await proxy.wait_ready(60, listeners=1)
        await eventually(
            lambda: one.nodes() == ["envoy-a"] and two.nodes() == ["envoy-b"], 10, "one Envoy per replica"
        )

        async with httpx.AsyncClient(timeout=10) as http:
            tool = minimal()["tools"][0] | {"description": "written on replica 1"}
            response = await http.put(
                f"{one.admin}/v1/servers/default/shared/tools/get",
                json=tool,
                headers={"authorization": f"Bearer {TOKEN}"},
            )
            assert response.status_code == 200, response.text
            # Replica 2 learns it from Redis and pushes it to the Envoy connected to it.
            await eventually(
                lambda: "written on replica 1" in envoy_b.admin("/config_dump"), 5, "edit on Envoy B"
            )
            await eventually(
                lambda: "written on replica 1" in envoy_a.admin("/config_dump"), 5, "edit on Envoy A"
            )

            stop(one.process, signal.SIGKILL)
            # Envoy A keeps serving its last configuration while it reconnects.
            listed = await call(f"http://127.0.0.1:{listen_port}/mcp/default/shared", "tools/list")
            assert listed["result"]["tools"][0]["description"] == "written on replica 1"
            await eventually(
                lambda: sorted(two.nodes()) == ["envoy-a", "envoy-b"], 15, "Envoy A failed over to replica 2"
            )

            tool = tool | {"description": "written on replica 2 after the failover"}
            response = await http.put(
                f"{two.admin}/v1/servers/default/shared/tools/get",
                json=tool,
                headers={"authorization": f"Bearer {TOKEN}"},
            )
            assert response.status_code == 200, response.text
            await eventually(
                lambda: "after the failover" in envoy_a.admin("/config_dump"), 5, "later edit on Envoy A"
            )
            assert envoy_a.process is not None and envoy_a.process.returncode is None
    finally:
        for proxy in (envoy_a, envoy_b):
            await proxy.stop()
        stop(two.process)
        await plugins.close()
