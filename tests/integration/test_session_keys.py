"""Session keys through a real control plane and a real Envoy: a rotation through the admin API
(or the CLI) re-delivers every server's filter configuration, replicas on one Redis follow each
other's rotations, and secrets show up nowhere but in what Envoy receives."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mcp import Client

from mcpgw.bootstrap import BootstrapOptions, render
from mcpgw.controlplane import ControlPlane, ControlPlaneOptions
from mcpgw.envoyproc import EnvoyProcess
from mcpgw.httpserve import serve
from mcpgw.registry.redisstore import RedisStore
from mcpgw.stack import free_ports
from mcpgw.xds import types
from pluginserver.server import DEFAULT_ROOT, create_app
from tests.integration.conftest import Gateway, copy_registry, free_port, running_gateway
from tests.integration.mcphttp import ACCEPT, open_session, rpc
from tests.redisserver import RedisServer
from tests.unit.test_registry import minimal
from tests.waiting import eventually

TOKEN = "session-keys-integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVERS = {"mcpgw/default/petstore", "mcpgw/ops/inventory"}


def inventory(backend_port: int) -> dict[str, Any]:
    return {
        "kind": "McpServer",
        "namespace": "ops",
        "name": "inventory",
        "backend": {"endpoints": [f"127.0.0.1:{backend_port}"]},
        "tools": [{"name": "countPets", "requestTemplate": {"url": "/v1/pets", "method": "GET"}}],
    }


def envoy_filter_configs(envoy: EnvoyProcess) -> dict[str, dict[str, Any]]:
    """Each ECDS filter config Envoy holds, by name, as the filter's parsed JSON configuration."""
    dump = json.loads(envoy.admin("/config_dump?resource=ecds_filters"))
    configs = {}
    for entry in dump.get("configs", []):
        ecds = entry["ecds_filter"]
        configs[ecds["name"]] = json.loads(ecds["typed_config"]["config"]["configuration"]["value"])
    return configs


def signing_ids(envoy: EnvoyProcess) -> dict[str, list[str]]:
    return {
        name: [key["id"] for key in config.get("sessions", {}).get("keys", [])]
        for name, config in envoy_filter_configs(envoy).items()
    }


def envoy_secrets(envoy: EnvoyProcess) -> set[str]:
    return {
        key["secret"]
        for config in envoy_filter_configs(envoy).values()
        for key in config.get("sessions", {}).get("keys", [])
    }


def assert_no_secret(text: str, secrets: set[str]) -> None:
    assert secrets
    assert not [s for s in secrets if s in text], f"a session key secret appears in: {text[:300]}"


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)


async def cli(*args: str, token: bool = True) -> tuple[int, str, str]:
    """`mcpgw …` as a child process, awaited: the admin API it calls runs on this event loop."""
    environ = {k: v for k, v in os.environ.items() if k != "MCPGW_ADMIN_TOKEN"}
    if token:
        environ["MCPGW_ADMIN_TOKEN"] = TOKEN
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcpgw.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
async def gateway(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[Gateway]:
    """Two servers; State of the World xDS unless the test passes `True` (Delta) as the param."""
    delta = bool(getattr(request, "param", False))
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("MCPGW_SESSION_KEY", raising=False)
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    (registry / "inventory.yaml").write_text(yaml.safe_dump(inventory(backend_port)))
    async with running_gateway(
        tmp_path, registry, backend_port, session_ttl_s=600, xds_delta=delta
    ) as running:
        yield running


def admin_url(gateway: Gateway) -> str:
    assert gateway.stack.control_plane is not None
    return f"http://127.0.0.1:{gateway.stack.control_plane.status_port}"


def ecds_reloads(envoy: EnvoyProcess) -> dict[str, int]:
    stats = envoy.stats("extension_config_discovery.http_filter.")
    return {
        name: stats.get(f"extension_config_discovery.http_filter.{name}.config_reload", 0) for name in SERVERS
    }


@pytest.mark.parametrize("gateway", [False, True], ids=["sotw", "delta"], indirect=True)
async def test_a_rotation_through_the_admin_api_reaches_every_server_in_envoy(
    gateway: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    envoy = gateway.stack.envoy
    assert envoy is not None and gateway.stack.control_plane is not None
    # The keys file sits beside the registry directory, private to the gateway's user.
    keys_file = tmp_path / ".mcpgw" / "registry-session-keys.json"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600

    async with httpx.AsyncClient(base_url=admin_url(gateway), timeout=10) as admin:
        listed = await admin.get("/v1/session-keys")
        assert listed.status_code == 200
        (first,) = listed.json()["keys"]
        assert listed.json()["ttl_seconds"] == 600
        # Every server's filter got the same sessions block, and the SSE broker.
        configs = await eventually(lambda: envoy_filter_configs(envoy), 10, "ECDS configs in Envoy")
        assert set(configs) == SERVERS
        for config in configs.values():
            assert [k["id"] for k in config["sessions"]["keys"]] == [first["id"]]
            assert config["sessions"]["ttl_ms"] == 600_000
            assert config["broker"] == {"cluster": "mcpgw-broker", "timeout_ms": 5000}
        before = ecds_reloads(envoy)

        rotated = await admin.post("/v1/session-keys/rotate", json={"grace_seconds": 120}, headers=AUTH)
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["keys"][0]["id"]
        assert [k["id"] for k in rotated.json()["keys"]] == [new, first["id"]]
        expected = {name: [new, first["id"]] for name in SERVERS}
        await eventually(lambda: signing_ids(envoy) == expected, 10, "every server's new keys in Envoy")
        await eventually(
            lambda: all(n > before[name] for name, n in ecds_reloads(envoy).items()),
            10,
            "every ECDS reloaded",
        )
        for config in envoy_filter_configs(envoy).values():
            retired = config["sessions"]["keys"][1]["accept_until_ms"]
            assert abs(retired - (time.time() + 120) * 1000) < 30_000

        # The control plane sees the ECDS version ACKed by the node.
        async def acked() -> bool:
            node = (await admin.get("/status")).json()["nodes"][0]["types"]["ecds"]
            cache = gateway.stack.control_plane.cache.snapshot  # type: ignore[union-attr]
            return bool(
                node["version_acked"] == cache.version(types.EXTENSION_CONFIG) == node["version_sent"]
            )

        deadline = time.monotonic() + 10
        while not await acked():
            assert time.monotonic() < deadline, "the rotated ECDS version ACKed within 10s"
            await asyncio.sleep(0.05)

        # MCP keeps working after the filter got its new configuration.
        async with Client(gateway.url, mode="legacy") as client:
            assert not (await client.call_tool("getPet", {"id": 1})).is_error

        # Secrets: in Envoy's configuration, nowhere else.
        secrets = envoy_secrets(envoy)
        assert len(secrets) == 2
        status = await admin.get("/status")
        assert [k["id"] for k in status.json()["sessions"]["keys"]] == [new, first["id"]]
        listed_again = await admin.get("/v1/session-keys")
        for text in (listed.text, rotated.text, status.text, listed_again.text):
            assert_no_secret(text, secrets)
        assert "session_keys_rotated" in logged(caplog)
        assert_no_secret(logged(caplog), secrets)


async def test_the_cli_lists_and_rotates_keys(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    envoy = gateway.stack.envoy
    assert envoy is not None
    url = admin_url(gateway)
    code, out, err = await cli("session-keys", "list", "--admin", url, "-o", "json")
    assert code == 0, err
    (first,) = json.loads(out)["keys"]

    code, out, err = await cli("session-keys", "rotate", "--admin", url)
    assert code == 0, err
    assert "new sessions are signed with" in out and f"{first['id']} still accepted until" in out
    code, out, err = await cli("session-keys", "list", "--admin", url)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["KEY", "ROLE", "CREATED", "ACCEPTED", "UNTIL"]
    assert [row[:2] for row in rows[1:3]] == [[rows[1][0], "signing"], [first["id"], "verifying"]]
    await eventually(lambda: set(map(len, signing_ids(envoy).values())) == {2}, 10, "two keys in Envoy")
    secrets = envoy_secrets(envoy)

    # Grace 0: the older key ends now, Envoy keeps only the new one.
    code, out, err = await cli("session-keys", "rotate", "--grace", "0", "--admin", url)
    assert code == 0, err
    await eventually(lambda: set(map(len, signing_ids(envoy).values())) == {1}, 10, "one key in Envoy")
    secrets |= envoy_secrets(envoy)

    code, _, err = await cli("session-keys", "rotate", "--grace", "-5", "--admin", url)
    assert code == 3 and "grace_seconds" in err
    code, _, err = await cli("session-keys", "rotate", "--admin", url, token=False)
    assert code == 1 and "bearer token" in err
    code, _, err = await cli("session-keys", "rotate", "--grace", "soon", "--admin", url)
    assert code == 2
    code, _, err = await cli("session-keys", "list", "--admin", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot reach" in err
    assert_no_secret(logged(caplog) + out + err, secrets)


async def test_replicas_on_one_redis_follow_a_rotation(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotated on replica one; the Envoy connected to replica two gets the new keys, and both
    replicas serve identical versions (their translations are byte for byte the same)."""
    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("MCPGW_SESSION_KEY", raising=False)
    seed = RedisStore(redis_server.url)
    await seed.load()
    await seed.put(minimal(name="one"))
    await seed.put(minimal(name="two", namespace="team"))
    await seed.close()
    plugins = await serve(create_app(DEFAULT_ROOT), "127.0.0.1", 0)
    listen_port, envoy_admin = free_ports(2)

    def replica() -> ControlPlane:
        xds, status = free_ports(2)
        return ControlPlane(
            ControlPlaneOptions(
                registry_dir=redis_url,
                plugins_dir=DEFAULT_ROOT,
                xds_port=xds,
                status_port=status,
                plugin_server_port=plugins.port,
                listen_port=listen_port,
            )
        )

    redis_url = redis_server.url
    one, two = replica(), replica()
    envoy: EnvoyProcess | None = None
    try:
        await asyncio.gather(one.start(), two.start())
        assert one.sessions is not None and two.sessions is not None
        assert one.sessions.keys == two.sessions.keys and len(one.sessions.keys) == 1
        assert one.cache.snapshot.versions() == two.cache.snapshot.versions()
        (tmp_path / "envoy").mkdir()
        bootstrap = render(
            BootstrapOptions(node_id="envoy-two", xds=(("127.0.0.1", two.xds_port),), admin_port=envoy_admin)
        )
        envoy = EnvoyProcess(bootstrap, admin_port=envoy_admin, workdir=tmp_path / "envoy")
        await envoy.start()
        await envoy.wait_ready(60, listeners=1)
        names = {"mcpgw/default/one", "mcpgw/team/two"}
        first = one.sessions.keys[0].id
        await eventually(lambda: signing_ids(envoy) == {n: [first] for n in names}, 10, "keys in Envoy")

        async with httpx.AsyncClient(timeout=10) as http:
            started = time.monotonic()
            response = await http.post(
                f"http://127.0.0.1:{one.status_port}/v1/session-keys/rotate",
                json={"grace_seconds": 60},
                headers=AUTH,
            )
            assert response.status_code == 200, response.text
        new = response.json()["keys"][0]["id"]
        await eventually(
            lambda: signing_ids(envoy) == {n: [new, first] for n in names}, 5, "rotation in Envoy"
        )
        assert time.monotonic() - started < 3
        assert one.sessions.keys == two.sessions.keys
        assert one.cache.snapshot.versions() == two.cache.snapshot.versions()
    finally:
        if envoy is not None:
            await envoy.stop()
        await one.stop()
        await two.stop()
        await plugins.close()


def test_serve_refuses_a_malformed_pinned_key_or_an_unwritable_keys_file(tmp_path: Path) -> None:
    registry = copy_registry(tmp_path / "registry", free_port())
    xds, admin = free_ports(2)
    command = [
        sys.executable, "-m", "mcpgw.cli", "serve", "-f", str(registry), "--no-plugin-server",
        "--xds", f"127.0.0.1:{xds}", "--admin", f"127.0.0.1:{admin}",
    ]  # fmt: skip
    bad_value = "not-a-32-byte-key"
    environ = {**os.environ, "MCPGW_SESSION_KEY": bad_value}
    result = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=60, check=False)
    # A bad environment value is a usage error (exit 2), checked before anything starts.
    assert result.returncode == 2, result.stderr
    assert "$MCPGW_SESSION_KEY" in result.stderr and bad_value not in result.stderr + result.stdout

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    environ = {k: v for k, v in os.environ.items() if k != "MCPGW_SESSION_KEY"}
    result = subprocess.run(
        [*command, "--session-keys", str(blocker / "keys.json")],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "session keys" in result.stderr, result.stderr


async def session_status(url: str, session: dict[str, str]) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(url, json=rpc("ping"), headers=ACCEPT | session)
    return response.status_code


async def test_after_a_rotation_old_sessions_live_out_the_grace_period_then_get_404(gateway: Gateway) -> None:
    envoy = gateway.stack.envoy
    assert envoy is not None
    inventory_url = f"{gateway.stack.mcp_base_url}/mcp/ops/inventory"
    async with httpx.AsyncClient(timeout=10) as http:
        old = await open_session(http, gateway.url)
        # A session belongs to the server that issued it: the token signs its path.
        response = await http.post(inventory_url, json=rpc("ping"), headers=ACCEPT | old)
        assert response.status_code == 404 and response.json()["error"]["message"] == "Session not found"

        grace = 4
        async with httpx.AsyncClient(base_url=admin_url(gateway), timeout=10) as admin:
            rotated = await admin.post("/v1/session-keys/rotate", json={"grace_seconds": grace}, headers=AUTH)
        rotated_at = time.monotonic()
        assert rotated.status_code == 200, rotated.text
        new_id, old_id = (key["id"] for key in rotated.json()["keys"])
        await eventually(
            lambda: signing_ids(envoy) == {name: [new_id, old_id] for name in SERVERS},
            3,
            "the new keys in Envoy",
        )
        # Within the grace period: the old session still works, new sessions use the new key.
        assert await session_status(gateway.url, old) == 200
        new = await open_session(http, gateway.url)
        assert await session_status(gateway.url, new) == 200
        assert time.monotonic() - rotated_at < grace, "the checks above ran inside the grace period"

        # After it: the old key no longer verifies (the filter checks accept_until itself).
        await asyncio.sleep(max(0.0, rotated_at + grace + 0.5 - time.monotonic()))
        assert await session_status(gateway.url, old) == 404
        assert await session_status(gateway.url, new) == 200


async def test_a_session_expires_after_its_ttl(tmp_path: Path) -> None:
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    async with running_gateway(tmp_path, registry, backend_port, session_ttl_s=2) as running:
        async with httpx.AsyncClient(timeout=10) as http:
            session = await open_session(http, running.url)
            opened = time.monotonic()
            assert await session_status(running.url, session) == 200
            await asyncio.sleep(max(0.0, opened + 2.5 - time.monotonic()))
            assert await session_status(running.url, session) == 404
            # A new handshake gives a working session again.
            assert await session_status(running.url, await open_session(http, running.url)) == 200
