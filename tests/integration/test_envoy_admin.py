"""Envoy's admin endpoint stays on loopback; the stats listener passes on only metrics and readiness."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client

from tests.integration.conftest import Gateway, copy_registry, free_port, running_gateway
from tests.waiting import eventually

MCPGW = [sys.executable, "-m", "mcpgw.cli"]
BOOT = ["bootstrap", "--node-id", "e", "--xds", "127.0.0.1:18000"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MCPGW, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("address", ["0.0.0.0:9901", "10.1.2.3:9901", "[::]:9901", "localhost:9901"])
def test_bootstrap_refuses_an_admin_off_loopback(address: str) -> None:
    result = run(*BOOT, "--envoy-admin", address)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Envoy admin address"), result.stderr
    assert "loopback" in lines[0]


def test_bootstrap_refuses_a_stats_listener_it_cannot_bind() -> None:
    for args, reason in (
        (("--stats", "stats.example:9902"), "not an IP address"),
        (("--stats", "127.0.0.1:9901"), "would take the Envoy admin port"),
        (("--stats", "0.0.0.0:9901"), "would take the Envoy admin port"),
    ):
        result = run(*BOOT, *args)
        assert result.returncode == 2 and reason in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One request with `path` sent exactly as written (http.client does not normalise it)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def admin_requests(gateway: Gateway) -> int:
    """Requests the stats listener passed on to the admin endpoint so far."""
    assert gateway.stack.envoy is not None
    return gateway.stack.envoy.stats("cluster.mcpgw-envoy-admin.upstream_rq_total").get(
        "cluster.mcpgw-envoy-admin.upstream_rq_total", 0
    )


REFUSED = [
    ("GET", "/config_dump"),
    ("GET", "/config_dump?include_eds"),
    ("GET", "/clusters"),
    ("POST", "/quitquitquit"),
    ("GET", "/quitquitquit"),
    ("POST", "/runtime_modify?upstream.use_http2=false"),
    ("GET", "/stats"),
    ("GET", "/stats?format=json"),
    ("GET", "/stats/prometheus?filter=.*"),
    ("GET", "/stats/prometheus/"),
    ("GET", "/stats/prometheus/../config_dump"),
    ("GET", "/stats/prometheus/..%2Fconfig_dump"),
    ("GET", "/stats%2Fprometheus"),
    ("GET", "//stats/prometheus"),
    ("GET", "/stats/./prometheus"),
    ("GET", "/STATS/PROMETHEUS"),
    ("GET", "/READY"),
    ("GET", "/ready?x"),
    ("GET", "/ready/"),
    ("GET", "/%72eady"),
    ("POST", "/ready"),
    ("PUT", "/stats/prometheus"),
    ("DELETE", "/ready"),
    ("GET", "http://127.0.0.1/config_dump"),
    ("GET", "/"),
    ("GET", "/help"),
    ("POST", "/logging?level=trace"),
    ("POST", "/healthcheck/fail"),
    ("POST", "/drain_listeners"),
    ("GET", "/certs"),
    ("GET", "/server_info"),
]


async def test_stats_listener_passes_only_metrics_and_readiness(gateway: Gateway) -> None:
    port = gateway.stack.options.envoy_stats_port
    status, body = await asyncio.to_thread(request, port, "GET", "/stats/prometheus")
    assert status == 200 and "# TYPE envoy_server_live gauge" in body
    status, body = await asyncio.to_thread(request, port, "GET", "/ready")
    assert (status, body.strip()) == (200, "LIVE")
    assert (await asyncio.to_thread(request, port, "HEAD", "/ready"))[0] == 200
    assert (await asyncio.to_thread(request, port, "HEAD", "/stats/prometheus"))[0] == 200
    before = admin_requests(gateway)
    assert before == 4
    for method, path in REFUSED:
        status, body = await asyncio.to_thread(request, port, method, path)
        assert (status, body) == (404, "not found\n"), (method, path, status, body[:200])
    # A fragment is not part of a request target: Envoy's codec refuses it before any route.
    assert (await asyncio.to_thread(request, port, "GET", "/ready#x"))[0] == 400
    # Not one of them reached the admin endpoint, and Envoy is still serving.
    assert admin_requests(gateway) == before
    status, _ = await asyncio.to_thread(request, port, "GET", "/ready")
    assert status == 200


MOVED = "moved-secret-1"
ROTATED = "moved-secret-3"
STAYS = "stays-secret-2"


def shop(backend_port: int, keyed_token: str) -> list[dict[str, Any]]:
    """`keyed`: one bearer token for every tool (Envoy injects it); `mixed`: a query API key
    (the filter must place it, so it stays in the filter configuration)."""
    pets = {"url": "/v1/pets", "method": "GET"}
    keyed = {
        "kind": "McpServer",
        "namespace": "shop",
        "name": "keyed",
        "backend": {"endpoints": [f"127.0.0.1:{backend_port}"]},
        "securitySchemes": [
            {"id": "t", "type": "http", "scheme": "bearer", "defaultCredential": keyed_token}
        ],
        "tools": [
            {
                "name": name,
                "description": "How many pets the store has.",
                "requestTemplate": {**pets, "security": {"id": "t"}},
                "responseTemplate": {"body": "{{len .}} pets"},
            }
            for name in ("countPets", "countAgain")
        ],
    }
    mixed = {
        **keyed,
        "name": "mixed",
        "securitySchemes": [
            {"id": "k", "type": "apiKey", "in": "query", "name": "key", "defaultCredential": STAYS}
        ],
        "tools": [{**tool, "requestTemplate": {**pets, "security": {"id": "k"}}} for tool in keyed["tools"]],
    }
    return [keyed, mixed]


def write_shop(registry: Path, backend_port: int, keyed_token: str, keyed_host: str = "127.0.0.1") -> None:
    keyed, mixed = shop(backend_port, keyed_token)
    keyed["backend"] = {"endpoints": [f"{keyed_host}:{backend_port}"]}
    (registry / "shop.yaml").write_text(yaml.safe_dump_all([keyed, mixed], sort_keys=False))


async def count_pets(url: str) -> str:
    async with Client(url, mode="legacy") as client:
        return str((await client.call_tool("countPets", {})).content[0].text)  # type: ignore[union-attr]


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_constant_credentials_leave_the_filter_configuration(tmp_path: Path, delta: bool) -> None:
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    write_shop(registry, backend_port, MOVED)
    async with running_gateway(tmp_path, registry, backend_port, xds_delta=delta) as gateway:
        envoy = gateway.stack.envoy
        assert envoy is not None
        keyed = f"{gateway.stack.mcp_base_url}/mcp/shop/keyed"
        mixed = f"{gateway.stack.mcp_base_url}/mcp/shop/mixed"
        assert (
            await eventually(lambda: count_pets(keyed), 15, "keyed is served", ignore=(Exception,))
            == "3 pets"
        )
        assert gateway.backend_requests[-1].headers["authorization"] == f"Bearer {MOVED}"
        assert await count_pets(mixed) == "3 pets"
        assert gateway.backend_requests[-1].query == f"key={STAYS}"

        dump = await asyncio.to_thread(envoy.admin, "/config_dump?include_eds", 10)
        # Envoy has the credential as an SDS secret and prints it redacted; nowhere in clear.
        assert MOVED not in dump
        secrets = json.loads(
            await asyncio.to_thread(envoy.admin, "/config_dump?resource=dynamic_active_secrets")
        )
        (entry,) = [s for s in secrets["configs"] if s["name"] == "mcpgw/shop/keyed/credential"]
        assert entry["secret"]["generic_secret"]["secret"] == {"inline_string": "[redacted]"}
        # What must stay (docs/security.md): a query credential is placed by the filter per call.
        assert STAYS in dump
        # Envoy, not the filter, added it (its counter, read through the stats listener).
        port = gateway.stack.options.envoy_stats_port
        status, metrics = await asyncio.to_thread(request, port, "GET", "/stats/prometheus")
        assert status == 200 and MOVED not in metrics
        injected = 'envoy_cluster_credential_injector_injected{envoy_cluster_name="mcpgw/shop/keyed"} '
        (line,) = [li for li in metrics.splitlines() if li.startswith(injected)]
        assert int(line.removeprefix(injected)) >= 1

        # A new value reaches Envoy as an SDS update; the old and new values stay out of the dump.
        write_shop(registry, backend_port, ROTATED)

        async def rotated() -> bool:
            await count_pets(keyed)
            return gateway.backend_requests[-1].headers["authorization"] == f"Bearer {ROTATED}"

        await eventually(rotated, 15, "the rotated credential is sent", ignore=(Exception,))
        dump = await asyncio.to_thread(envoy.admin, "/config_dump?include_eds", 10)
        assert MOVED not in dump and ROTATED not in dump

        # A changed cluster (EDS → DNS) naming the same, unchanged secret warms at once (Envoy
        # shares the secret's subscription; nothing needs to be resent), and injects it.
        write_shop(registry, backend_port, ROTATED, keyed_host="localhost")

        def dns_cluster_active() -> bool:
            clusters = json.loads(envoy.admin("/config_dump?resource=dynamic_active_clusters"))
            (keyed,) = [c for c in clusters["configs"] if c["cluster"]["name"] == "mcpgw/shop/keyed"]
            warming = envoy.stats("cluster_manager.warming_clusters").get("cluster_manager.warming_clusters")
            return keyed["cluster"]["type"] == "STRICT_DNS" and warming == 0

        await eventually(
            dns_cluster_active, 5, "the changed cluster is active (under the 15 s SDS fetch timeout)"
        )
        before = len(gateway.backend_requests)
        assert await count_pets(keyed) == "3 pets"
        assert len(gateway.backend_requests) == before + 1
        assert gateway.backend_requests[-1].headers["authorization"] == f"Bearer {ROTATED}"
