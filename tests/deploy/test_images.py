"""The images run the gateway: built from the wheelhouse with no network (deploy/build-images.sh),
then a demo backend, a control plane and an Envoy, each in its own container with a read-only root
filesystem, no capabilities, as the images' non-root user, on the host network on 127.0.0.1.
tools/list answers through the Envoy container, which fetched the Wasm module over HTTP from the
control plane container's plugin server; SIGTERM drains Envoy (`/ready` turns 503) and stops
both cleanly (exit 0).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mcpgw import __version__
from mcpgw.stack import demo_registry, free_ports
from tests.deploy.podman import CONTROLPLANE, ENVOY, Containers, containers, podman
from tests.integration.mcphttp import call

# The session's image build (wheelhouse, Zig inside the wheel, both images) runs under the first
# test that needs it: minutes on a busy machine.
pytestmark = pytest.mark.timeout(1800)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def wait_status(url: str, want: int, timeout: float, running: Containers, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _status(url) == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer {want} within {timeout} s; {name}:\n{running.logs(name)}")


def readable_registry(backend_port: int) -> Iterator[Path]:
    """The demo registry rewired to `backend_port`, readable by the containers' user (uid 10001)."""
    parent = Path(tempfile.mkdtemp(prefix="mcpgw-deploy-"))
    try:
        registry = demo_registry(parent / "registry", backend_port)
        for path in [parent, registry, *registry.iterdir()]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        yield registry
    finally:
        shutil.rmtree(parent)


@pytest.fixture
def registry_factory() -> Iterator[list[Iterator[Path]]]:
    made: list[Iterator[Path]] = []
    yield made
    for generator in made:
        generator.close()


def test_images_run_the_gateway_and_stop_on_sigterm(images: float, registry_factory: list) -> None:
    print(f"\nimages built in {images:.0f} s")
    backend, xds, admin, plugins, listen, broker, stats, envoy_admin = free_ports(8)
    made = readable_registry(backend)
    registry_factory.append(made)
    registry = next(made)
    with containers() as running:
        running.run(CONTROLPLANE, "demo-backend", "--port", str(backend))
        control = running.run(
            CONTROLPLANE,
            "serve", "-f", "/etc/mcpgw/registry", "--session-keys", "/var/lib/mcpgw/session-keys.json",
            "--xds", f"127.0.0.1:{xds}", "--admin", f"127.0.0.1:{admin}", "--plugins", f"127.0.0.1:{plugins}",
            "--plugin-delivery", "http", "--listen", f"127.0.0.1:{listen}", "--broker", f"127.0.0.1:{broker}",
            options=("--volume", f"{registry}:/etc/mcpgw/registry:ro", "--tmpfs", "/var/lib/mcpgw:rw,U"),
        )  # fmt: skip
        wait_status(f"http://127.0.0.1:{admin}/healthz", 200, 60, running, control)
        envoy = running.run(
            ENVOY,
            options=(
                "--env", f"MCPGW_XDS=127.0.0.1:{xds}", "--env", f"MCPGW_BROKER=127.0.0.1:{broker}",
                "--env", f"MCPGW_STATS=127.0.0.1:{stats}",
                "--env", f"MCPGW_ENVOY_ADMIN=127.0.0.1:{envoy_admin}",
                "--env", "MCPGW_DRAIN_SECONDS=3", "--env", "ENVOY_LOG_LEVEL=warning",
            ),
        )  # fmt: skip
        wait_status(f"http://127.0.0.1:{stats}/ready", 200, 60, running, envoy)

        async def tools() -> set[str]:
            deadline = time.monotonic() + 30
            while True:
                try:
                    answer = await call(f"http://127.0.0.1:{listen}/mcp/default/petstore", "tools/list")
                    return {tool["name"] for tool in answer["result"]["tools"]}
                except (AssertionError, OSError, KeyError, httpx.HTTPError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)

        names = asyncio.run(tools())
        assert {"getPet", "describePet"} <= names, names
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5).read())
        assert status["version"]["mcpgw"] == __version__

        # SIGTERM: Envoy fails its readiness at once, drains 3 s, exits 0.
        podman("kill", "--signal", "TERM", envoy)
        wait_status(f"http://127.0.0.1:{stats}/ready", 503, 2, running, envoy)
        started = time.monotonic()
        code = podman("wait", envoy, timeout=30).stdout.strip()
        assert code == "0", f"envoy exit {code}:\n{running.logs(envoy)}"
        assert 1.5 < time.monotonic() - started < 10, "Envoy drained for MCPGW_DRAIN_SECONDS before exiting"
        podman("kill", "--signal", "TERM", control)
        code = podman("wait", control, timeout=30).stdout.strip()
        assert code == "0", f"control plane exit {code}:\n{running.logs(control)}"


@pytest.mark.parametrize("image", [CONTROLPLANE, ENVOY])
def test_images_are_non_root_labelled_and_carry_the_plugin(images: float, image: str) -> None:
    config = json.loads(podman("image", "inspect", image).stdout)[0]
    assert config["Config"]["User"] == "10001:10001"
    labels = config["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.title"] == image.split("/")[1].split(":")[0]
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    # The plugin and its sha256 inside, as the wheel ships them; nothing to fetch at run time.
    check = podman(
        "run", "--rm", "--network", "none", "--read-only", "--entrypoint", "python3", image, "-c",
        "import hashlib, mcpgw.bundled as b; w = next(b.plugins_dir().glob('mcp-server/*/plugin.wasm'));"
        "s = w.with_name('plugin.wasm.sha256').read_text().split()[0];"
        "print(hashlib.sha256(w.read_bytes()).hexdigest() == s)",
    )  # fmt: skip
    assert check.stdout.strip() == "True", check.stdout + check.stderr
