"""Redis Sentinel: the primary dies under a steady stream of admin writes, and nothing acknowledged is lost.

A real Sentinel setup (one primary, one replica, three sentinels) holds the registry of one
control-plane replica (`mcpgw serve -f redis+sentinel://…`) with an Envoy on it. Admin writes run
every 50 ms, each a new version of one of a few servers; `tools/list` runs through Envoy all the
while. The primary is SIGKILLed; the sentinels promote the replica; the killed node comes back (as
a supervisor would restart it) as a replica of the new primary. Then:
- every write the admin API acknowledged (200) is in the registry: for each server, the version
  read back is at least the last acknowledged one (a later unacknowledged write may also have landed);
- Envoy answered every `tools/list`;
- writes are accepted again within a bounded time of the kill.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import httpx

from mcpgw.bootstrap import BootstrapOptions, render
from mcpgw.envoyproc import EnvoyProcess
from mcpgw.httpserve import serve
from mcpgw.registry.redisstore import RedisStore
from pluginserver.server import DEFAULT_ROOT, create_app
from tests import waiting
from tests.integration.conftest import free_port
from tests.integration.mcphttp import call
from tests.integration.test_ha import TOKEN, replicas_cleanup, start_replica, stop  # noqa: F401
from tests.redisserver import SentinelSetup
from tests.unit.test_registry import minimal

KEYS = 6
# From the kill to the first write accepted again: the sentinels' down-after (1 s), the vote and
# promotion (~1-2 s), the old primary's restart and resync, and the writer's WAIT (2 s) in between.
WRITES_BACK_WITHIN_S = 20.0


def version_of(document: dict[str, object]) -> int:
    return int(str(document["description"]).removeprefix("write "))


async def test_sentinel_failover_loses_no_acknowledged_write_and_envoy_keeps_serving(
    tmp_path: Path,
    replicas_cleanup: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    setup = SentinelSetup(tmp_path / "sentinel")
    setup.start()
    plugins = await serve(create_app(DEFAULT_ROOT), "127.0.0.1", 0)
    envoy: EnvoyProcess | None = None
    try:
        seed = RedisStore(setup.url)
        await seed.load()
        await seed.put(minimal(name="shared"))
        await seed.close()
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        listen_port = free_port()
        replica = start_replica(setup.url, plugins.port, listen_port, token_file, tmp_path / "replica.log")
        replicas_cleanup.append(replica.process)
        admin_port = free_port()
        bootstrap = render(
            BootstrapOptions(node_id="envoy", xds=(("127.0.0.1", replica.xds_port),), admin_port=admin_port)
        )
        (tmp_path / "envoy").mkdir()
        envoy = EnvoyProcess(bootstrap, admin_port=admin_port, workdir=tmp_path / "envoy")
        await envoy.start()
        await envoy.wait_ready(60, listeners=1)
        mcp = f"http://127.0.0.1:{listen_port}/mcp/default/shared"

        acknowledged: dict[str, int] = {}
        refused: list[tuple[float, int]] = []
        accepted_at: list[float] = []
        listed = failed_lists = 0
        done = asyncio.Event()

        async def write() -> None:
            headers = {"authorization": f"Bearer {TOKEN}"}
            number = 0
            async with httpx.AsyncClient(timeout=10) as http:
                while not done.is_set():
                    number += 1
                    name = f"w{number % KEYS}"
                    document = minimal(name=name, description=f"write {number}")
                    try:
                        response = await http.put(
                            f"{replica.admin}/v1/servers/default/{name}", json=document, headers=headers
                        )
                        status = response.status_code
                    except httpx.HTTPError:
                        status = 0
                    if status in (200, 201):
                        acknowledged[name] = number
                        accepted_at.append(time.monotonic())
                    else:
                        refused.append((time.monotonic(), status))
                    await asyncio.sleep(0.05)

        async def list_tools() -> None:
            nonlocal listed, failed_lists
            while not done.is_set():
                try:
                    answer = await call(mcp, "tools/list")
                    assert answer["result"]["tools"][0]["name"] == "get"
                    listed += 1
                except (AssertionError, httpx.HTTPError, KeyError):
                    failed_lists += 1
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(write()), asyncio.create_task(list_tools())]
        try:
            await waiting.eventually(lambda: len(acknowledged) == KEYS, 20, "writes before the kill")
            old = setup.primary_port()
            assert old == setup.data_ports[0]
            setup.kill(old)
            killed_at = time.monotonic()
            new = await waiting.eventually(
                lambda: (port := setup.primary_port()) not in (None, old) and port, 20, "a Sentinel failover"
            )
            failover_s = time.monotonic() - killed_at
            # The node comes back (empty: no persistence here) as a replica of the primary the
            # sentinels name, as a supervisor's start script does, and syncs.
            setup.start_data(old, replica_of=new)
            await waiting.eventually(
                lambda: b"slave" in setup.role(old) and b"connected" in setup.role(old),
                15,
                "old primary rejoins",
            )
            back = await waiting.eventually(
                lambda: [at for at in accepted_at if at > killed_at + failover_s], WRITES_BACK_WITHIN_S,
                "a write accepted after the failover",
            )  # fmt: skip
            writes_back_s = back[0] - killed_at
            count = len(accepted_at)
            await waiting.eventually(lambda: len(accepted_at) >= count + 10, 10, "writes keep being accepted")
        finally:
            done.set()
            await asyncio.gather(*tasks)

        # Read back: through a fresh store (the new primary), and through the admin API.
        check = RedisStore(setup.url)
        await check.load()
        stored = {
            entry.server.name: version_of(entry.document)
            for entry in check.entries()
            if entry.server.name != "shared"
        }
        await check.close()
        lost = {
            name: (number, stored.get(name))
            for name, number in acknowledged.items()
            if stored.get(name, 0) < number
        }
        assert not lost, f"acknowledged writes lost (acknowledged, read back): {lost}"
        async with httpx.AsyncClient(timeout=10) as http:
            for name, number in acknowledged.items():
                response = await http.get(
                    f"{replica.admin}/v1/servers/default/{name}",
                    headers={"authorization": f"Bearer {TOKEN}", "accept": "application/json"},
                )
                assert response.status_code == 200, response.text
                assert version_of(response.json()) >= number
        assert failed_lists == 0 and listed > 0, (
            f"tools/list through Envoy: {failed_lists} failed of {listed + failed_lists}"
        )
        assert new != old
        assert writes_back_s < WRITES_BACK_WITHIN_S
        # Writes refused while there was no primary (or no replica to confirm them) said so.
        assert all(status in (0, 503) for _, status in refused), refused
        print(
            json.dumps(
                {"failover_s": round(failover_s, 2), "writes_back_s": round(writes_back_s, 2),
                 "acknowledged": len(accepted_at), "refused": len(refused), "tools_list": listed}
            )
        )  # fmt: skip
    finally:
        if envoy is not None:
            await envoy.stop()
        for process in replicas_cleanup:
            stop(process, signal.SIGTERM)
        await plugins.close()
        setup.stop()
