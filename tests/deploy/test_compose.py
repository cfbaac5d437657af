"""deploy/compose.yaml runs with podman-compose: tools/list through both Envoys, then torn down.

The compose project gets a name of its own and every port from `free_ports` (the file's variables),
and a demo registry rewired to its demo backend. Both Envoys share the MCP listener (SO_REUSEPORT):
requests on fresh connections reach both, which their stats show. `down -v` removes the
containers and volumes, checked after.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
import yaml

from mcpgw import __version__
from mcpgw.stack import free_ports
from tests.deploy.podman import DEPLOY, REPO, podman, podman_env
from tests.deploy.test_images import readable_registry
from tests.integration.mcphttp import call

# The session's image build (wheelhouse, Zig inside the wheel, both images) runs under the first
# test that needs it: minutes on a busy machine.
pytestmark = pytest.mark.timeout(1800)

COMPOSE = REPO / ".cache" / "image-tools" / "bin" / "podman-compose"
RQ = re.compile(r'^envoy_http_downstream_rq_total\{envoy_http_conn_manager_prefix="mcpgw"\} (\d+)', re.M)


def mcp_requests(stats_port: int) -> int:
    """MCP requests the Envoy with this stats port served (0 while it is not up yet)."""
    url = f"http://127.0.0.1:{stats_port}/stats/prometheus"
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return 0
    found = RQ.search(text)
    return int(found.group(1)) if found else 0


def test_compose_default_images_are_this_version() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert text.count("${MCPGW_VERSION:-") == text.count(f"${{MCPGW_VERSION:-{__version__}}}") > 0
    services = yaml.safe_load(text)["services"]
    assert set(services) == {"redis", "demo-backend", "controlplane", "envoy-1", "envoy-2"}


def test_compose_serves_tools_through_both_envoys(images: float) -> None:
    assert COMPOSE.exists(), "podman-compose is missing: run `make image-tools`"
    subprocess.run([str(DEPLOY / "redis-image.sh")], env=podman_env(), check=True, timeout=600)
    ports = free_ports(11)
    names = [
        "MCPGW_REDIS_PORT", "MCPGW_DEMO_BACKEND_PORT", "MCPGW_XDS_PORT", "MCPGW_ADMIN_PORT",
        "MCPGW_PLUGIN_PORT", "MCPGW_LISTEN_PORT", "MCPGW_BROKER_PORT", "MCPGW_ENVOY1_STATS_PORT",
        "MCPGW_ENVOY1_ADMIN_PORT", "MCPGW_ENVOY2_STATS_PORT", "MCPGW_ENVOY2_ADMIN_PORT",
    ]  # fmt: skip
    port = dict(zip(names, ports, strict=True))
    made = readable_registry(port["MCPGW_DEMO_BACKEND_PORT"])
    registry = next(made)
    project = f"mcpgwtest{secrets.token_hex(3)}"
    env = podman_env() | {k: str(v) for k, v in port.items()} | {"MCPGW_REGISTRY": str(registry)}
    compose = [str(COMPOSE), "-f", str(DEPLOY / "compose.yaml"), "-p", project]
    try:
        start = time.monotonic()
        up = subprocess.run([*compose, "up", "-d"], env=env, capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        print(f"\ncompose up in {time.monotonic() - start:.0f} s")
        url = f"http://127.0.0.1:{port['MCPGW_LISTEN_PORT']}/mcp/default/petstore"
        stats = (port["MCPGW_ENVOY1_STATS_PORT"], port["MCPGW_ENVOY2_STATS_PORT"])

        async def until_both_served() -> None:
            deadline = time.monotonic() + 120
            while True:
                try:
                    answer = await call(url, "tools/list")  # a fresh connection each time
                    assert {"getPet", "describePet"} <= {t["name"] for t in answer["result"]["tools"]}
                    if all(mcp_requests(p) > 0 for p in stats):
                        return
                except (AssertionError, OSError, KeyError, httpx.HTTPError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
                served = [mcp_requests(p) for p in stats]
                assert time.monotonic() < deadline, f"one Envoy served nothing: {served}"

        asyncio.run(until_both_served())
    finally:
        start = time.monotonic()
        subprocess.run([*compose, "down", "-v", "-t", "15"], env=env, capture_output=True, timeout=600)
        print(f"compose down in {time.monotonic() - start:.0f} s")
        made.close()
        label = f"label=io.podman.compose.project={project}"
        left = podman("ps", "-a", "--filter", label, "--format", "{{.Names}}")
        volumes = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
        assert not left.stdout.strip(), left.stdout
        assert not [v for v in volumes if v.startswith(project)], volumes
    assert not Path(registry).exists()
