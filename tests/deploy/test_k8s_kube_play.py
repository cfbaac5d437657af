"""The overlays run by `podman kube play`, from the images `make images` builds.

single: the Envoy pod ACKs its configuration from the control-plane pod over mutual TLS, fetches
the filter module from the plugin-server pod, and the `mcp` SDK client lists and calls the demo
tools through it; a ConfigMap update (the kubelet's `..data` symlink swap) shows in tools/list
within a second.
ha: two control planes on Redis, two Envoys; one control-plane container killed, an edit through
the other still reaches both Envoys.
Everything is torn down after (`podman kube down`, then the pods by name).

See `tests.deploy.kubeplay` for what stands in for the cluster.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mcp import Client

from mcpgw import __version__, pki
from mcpgw.stack import DEFAULT_REGISTRY, free_ports
from tests import kubevolume
from tests.deploy import kubeplay
from tests.deploy.kube import render
from tests.waiting import eventually

# The images `make images` builds (deploy/README.md); another build can be named for a run.
CONTROLPLANE_IMAGE = os.environ.get("MCPGW_CONTROLPLANE_IMAGE", f"localhost/mcpgw-controlplane:{__version__}")
ENVOY_IMAGE = os.environ.get("MCPGW_ENVOY_IMAGE", f"localhost/mcpgw-envoy:{__version__}")
BASE_IMAGE = "localhost/mcpgw-base:bookworm"
# Redis for the ha overlay, made here from the machine's own redis-server on the base image with
# no network; the overlay names the kit's `localhost/mcpgw-redis:bookworm` (deploy/redis-image.sh,
# built from the Debian mirror), replaced for the test.
TEST_REDIS_IMAGE = "localhost/mcpgw-test-redis:7"
ENVOYS = 2
# What deploy/podman/containers.conf's nofile (4096) leaves Envoy: (4096 - 1024) / 2.
MIN_CONNECTION_CAP = 1536
# Creating containers copies whole images with podman's vfs storage, and the session may build
# the images first (tests/deploy/conftest.py::images): minutes, not seconds.
pytestmark = pytest.mark.timeout(1800)


def image_exists(env: dict[str, str], image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image], env=env, check=False).returncode == 0


@pytest.fixture(scope="module")
def env(images: float) -> dict[str, str]:
    """podman's environment, once the session built the images from this checkout
    (tests/deploy/conftest.py::images) unless they are named for the run."""
    environment = kubeplay.podman_env()
    for image in (CONTROLPLANE_IMAGE, ENVOY_IMAGE, BASE_IMAGE):
        assert image_exists(environment, image), f"image {image} is missing: run `make images`"
    return environment


@pytest.fixture(scope="module")
def redis_image(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """This machine's redis-server and redis-cli with the libraries they link, on the base image
    (the same Debian release), built with no network. Kept, like the base image."""
    if image_exists(env, TEST_REDIS_IMAGE):
        return TEST_REDIS_IMAGE
    context = tmp_path_factory.mktemp("redis-image")
    files: set[str] = set()
    for binary in ("/usr/bin/redis-server", "/usr/bin/redis-cli"):
        files.add(binary)
        ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        files |= {part for line in ldd.splitlines() for part in line.split() if part.startswith("/")}
    # One COPY of a tree: each instruction is a full copy of the root filesystem with vfs.
    root = context / "root"
    for path in files:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(path).resolve(), target)
        target.chmod(0o755)
    (context / "Containerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY root/ /\nUSER 10001\n")
    kubeplay.podman(
        env, "build", "--network", "none", "--layers=false", "-t", TEST_REDIS_IMAGE, str(context), timeout=900
    )
    assert "Redis server" in kubeplay.podman(
        env, "run", "--rm", "--network", "none", TEST_REDIS_IMAGE, "redis-server", "--version"
    )
    return TEST_REDIS_IMAGE


@dataclass
class Deployment:
    env: dict[str, str]
    ports: kubeplay.Ports
    registry: Path
    token: str
    admin_ca: Path
    played: kubeplay.Played

    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.listen}/mcp/default/petstore"

    def admin_client(self, index: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{self.ports.admin[index]}",
            verify=ssl.create_default_context(cafile=self.admin_ca),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=5,
        )

    def envoy_stat(self, index: int, name: str) -> int:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.ports.envoy_admin[index]}/stats?filter=^{name}$", timeout=5
        ) as response:
            line = response.read().decode().strip()
        return int(line.partition(": ")[2] or 0)

    def envoy_config(self, index: int) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.ports.envoy_admin[index]}/config_dump", timeout=5
        ) as response:
            return str(response.read().decode())

    def diagnostics(self) -> str:
        lines = []
        for pod in self.played.pods:
            for container in ("controlplane", "envoy", "plugins", "redis", "backend"):
                text = kubeplay.logs(self.env, kubeplay.container_name(pod, container))
                if text:
                    lines.append(f"--- {pod}/{container}\n{text[-2500:]}")
        return "\n".join(lines)


def http_status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode().strip()


def petstore(backend_port: int, description: str | None = None) -> str:
    text = (
        (DEFAULT_REGISTRY / "petstore.yaml")
        .read_text()
        .replace("127.0.0.1:18080", f"127.0.0.1:{backend_port}")
    )
    if description is None:
        return text
    document = yaml.safe_load(text)
    document["tools"][0]["description"] = description
    return yaml.safe_dump(document, sort_keys=False)


def secrets_as_files(root: Path, envoys: int) -> dict[str, Path]:
    """The Secrets' files, as `kubectl create secret` would mount them (docs/deploy.md)."""
    ca = pki.make_ca("mcpgw kube play CA")
    directories = {
        n: root / n for n in ("mcpgw-xds-server", "mcpgw-admin-tls", "mcpgw-xds-envoy", "mcpgw-admin-token")
    }
    pki.issue(ca, "mcpgw-xds", dns=["mcpgw-xds"], ips=["127.0.0.1"], server=True).write(
        directories["mcpgw-xds-server"], "tls"
    )
    pki.issue(ca, "mcpgw-admin", dns=["mcpgw-admin"], ips=["127.0.0.1"], server=True).write(
        directories["mcpgw-admin-tls"], "tls"
    )
    for index in range(envoys):
        node = f"mcpgw-envoy-{index}"
        pki.issue(ca, node, uris=[f"spiffe://mcpgw/mcpgw/{node}"], client=True).write(
            directories["mcpgw-xds-envoy"], node
        )
    for name in ("mcpgw-xds-server", "mcpgw-xds-envoy"):
        (directories[name] / "ca.crt").write_bytes(ca.cert_pem)
    (root / "ca.crt").write_bytes(ca.cert_pem)
    directories["mcpgw-admin-token"].mkdir()
    (directories["mcpgw-admin-token"] / "token").write_text(secrets.token_hex(16))
    return directories


def deploy(overlay: str, env: dict[str, str], tmp_path: Path, replicas: dict[str, int]) -> Deployment:
    docs = render(overlay)
    for workload in docs:
        name = workload["metadata"]["name"]
        if name in replicas:
            workload["spec"]["replicas"] = replicas[name]
        for container in workload.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if container["image"].startswith("localhost/mcpgw-redis:"):
                container["image"] = TEST_REDIS_IMAGE
            elif container["image"].startswith("localhost/mcpgw-controlplane:"):
                container["image"] = CONTROLPLANE_IMAGE
            elif container["image"].startswith("localhost/mcpgw-envoy:"):
                container["image"] = ENVOY_IMAGE
    controlplanes = replicas.get("mcpgw-controlplane", 1)
    xds, admin, broker = free_ports(controlplanes), free_ports(controlplanes), free_ports(controlplanes)
    stats, envoy_admin = free_ports(ENVOYS), free_ports(ENVOYS)
    plugins, listen, redis, backend = free_ports(4)
    ports = kubeplay.Ports(xds, admin, broker, plugins, listen, stats, envoy_admin, redis, backend)
    registry = tmp_path / "registry"
    kubevolume.publish(registry, {"petstore.yaml": petstore(backend)})
    files = secrets_as_files(tmp_path / "secrets", ENVOYS)
    token = (files["mcpgw-admin-token"] / "token").read_text()
    secret_env = {
        ("mcpgw-session-key", "key"): secrets.token_urlsafe(32),
        ("mcpgw-redis", "password"): secrets.token_hex(16),
    }
    for directory in ("tmp", "data"):
        (tmp_path / directory).mkdir()
    volumes = {**files, "mcpgw-registry": registry, "tmp": tmp_path / "tmp", "data": tmp_path / "data"}
    pods = kubeplay.for_podman(docs, ports, volumes, secret_env)
    pods.insert(0, kubeplay.demo_backend_pod(CONTROLPLANE_IMAGE, backend))
    for directory in (registry, *files.values()):
        kubeplay.own(directory)
    played = kubeplay.play(env, pods, tmp_path)
    return Deployment(env, ports, registry, token, tmp_path / "secrets" / "ca.crt", played)


@pytest.fixture
def deployed(request: pytest.FixtureRequest, env: dict[str, str], tmp_path: Path) -> Iterator[Deployment]:
    overlay, replicas = request.param
    deployment = deploy(overlay, env, tmp_path, replicas)
    try:
        yield deployment
    finally:
        report = getattr(request.node, "report_call", None)
        if report is None or report.failed:
            print(deployment.diagnostics())
        kubeplay.down(env, deployment.played)


async def wait_ready(deployment: Deployment, envoys: int) -> None:
    """What the probes ask: /healthz of each control plane and the plugin server, /ready of each
    Envoy (200 only once the control plane configured it)."""
    ports = deployment.ports
    for admin in ports.admin:
        await eventually(
            lambda a=admin: admin_healthy(deployment, a),
            120,
            f"control plane :{admin} /healthz",
            ignore=(OSError, httpx.HTTPError),
        )
    await eventually(
        lambda: http_status(f"http://127.0.0.1:{ports.plugins}/healthz")[0] == 200,
        60,
        "plugin server /healthz",
        ignore=(OSError, httpx.HTTPError),
    )
    for stats in ports.stats[:envoys]:
        await eventually(
            lambda s=stats: http_status(f"http://127.0.0.1:{s}/ready") == (200, "LIVE"),
            120,
            f"Envoy :{stats} /ready",
            ignore=(OSError, httpx.HTTPError),
        )
    # The connection cap follows the container's nofile limit (`mcpgw bootstrap`): with podman's
    # old 1024 it was 1, and every second concurrent client connection was closed at accept.
    for index in range(envoys):
        cap = connection_cap(deployment, index)
        assert cap >= MIN_CONNECTION_CAP, f"Envoy {index} takes {cap} client connections at once"


def connection_cap(deployment: Deployment, index: int) -> int:
    """Envoy `index`'s cap on client connections (its overload manager, from the bootstrap)."""
    dump = json.loads(deployment.envoy_config(index))
    bootstrap = next(c["bootstrap"] for c in dump["configs"] if "bootstrap" in c)
    return next(
        int(monitor["typed_config"]["max_active_downstream_connections"])
        for monitor in bootstrap["overload_manager"]["resource_monitors"]
        if monitor["name"] == "envoy.resource_monitors.global_downstream_max_connections"
    )


async def admin_healthy(deployment: Deployment, port: int) -> bool:
    async with httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=deployment.admin_ca), timeout=2
    ) as http:
        return (await http.get(f"https://127.0.0.1:{port}/healthz")).status_code == 200


async def nodes_acked(deployment: Deployment, index: int, expected: int) -> list[dict[str, Any]]:
    async with deployment.admin_client(index) as admin:
        status = (await admin.get("/status")).json()
    nodes = [
        n
        for n in status["nodes"]
        if all(
            t["version_acked"] == t["version_sent"] and t["last_nack"] is None for t in n["types"].values()
        )
    ]
    return nodes if len(nodes) == expected else []


async def served(deployment: Deployment, description: str) -> bool:
    """One MCP session through the gateway: listPets has `description` and getPet answers.
    Callers retry: Envoy ACKs a new server's configuration before its listener serves it (the
    filter module is first loaded into every worker: seconds on a busy machine), and answers 404
    meanwhile (docs/operations.md, Troubleshooting)."""
    async with Client(deployment.mcp_url(), mode="legacy") as client:
        return (
            await list_pets_description(client) == description
            and not (await client.call_tool("getPet", {"id": 1})).is_error
        )


async def list_pets_description(client: Client) -> str | None:
    tools = (await client.list_tools(cache_mode="bypass")).tools
    return next(t.description for t in tools if t.name == "listPets")


@pytest.mark.parametrize("deployed", [("single", {"mcpgw-envoy": 1})], indirect=True)
async def test_single_overlay_serves_the_demo_and_follows_configmap_swaps(deployed: Deployment) -> None:
    await wait_ready(deployed, envoys=1)
    # The Envoy pod ACKed everything the control-plane pod sent, over mutual TLS.
    (node,) = await eventually(lambda: nodes_acked(deployed, 0, 1), 30, "the Envoy pod's ACKs")
    assert node["node_id"] == "mcpgw-envoy-0"
    async with deployed.admin_client(0) as admin:
        assert (await admin.get("/status")).json()["xds"]["tls"] is True
    # The filter module came from the plugin-server pod (http delivery), not from a file.
    config = deployed.envoy_config(0)
    assert f"http://127.0.0.1:{deployed.ports.plugins}/plugins/mcp-server/" in config
    assert deployed.envoy_stat(0, "wasm.remote_load_fetch_successes") >= 1
    async with Client(deployed.mcp_url(), mode="legacy") as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"listPets", "getPet", "createPet", "describePet"}
        answer = await client.call_tool("describePet", {"id": 2})
        assert not answer.is_error and "Tom is a cat" in answer.content[0].text
        # `kubectl edit configmap mcpgw-registry`: the kubelet swaps the volume's ..data link.
        expected = "Swapped into the ConfigMap volume."
        kubevolume.publish(deployed.registry, {"petstore.yaml": petstore(deployed.ports.backend, expected)})
        kubeplay.own(deployed.registry)
        started = time.monotonic()
        while await list_pets_description(client) != expected:
            assert time.monotonic() - started < 1.0, "the ConfigMap update not in tools/list within 1 s"
        elapsed = time.monotonic() - started
    print(f"ConfigMap swap → tools/list: {elapsed * 1000:.0f} ms")


@pytest.mark.parametrize(
    "deployed", [("ha", {"mcpgw-controlplane": 2, "mcpgw-envoy": ENVOYS, "mcpgw-plugins": 1})], indirect=True
)
@pytest.mark.usefixtures("redis_image")
async def test_ha_overlay_survives_a_killed_control_plane(deployed: Deployment) -> None:
    await wait_ready(deployed, envoys=ENVOYS)
    # The registry is in Redis: loaded through the admin API, as docs/deploy.md says.
    async with deployed.admin_client(0) as admin:
        created = await admin.post(
            "/v1/servers",
            content=petstore(deployed.ports.backend).encode(),
            headers={"content-type": "application/yaml"},
        )
        assert created.status_code == 201, created.text
    # Both Envoys list the replicas in order: both are on the first one and ACKed it all.
    await eventually(lambda: nodes_acked(deployed, 0, ENVOYS), 30, "both Envoys' ACKs on replica 0")
    await eventually(
        lambda: served(deployed, "List pets, optionally filtered by tag."),
        30,
        "the server",
        ignore=(Exception,),
    )
    kubeplay.podman(deployed.env, "kill", kubeplay.container_name("mcpgw-controlplane-0", "controlplane"))
    expected = "Edited through the surviving replica."
    async with deployed.admin_client(1) as admin:
        current = await admin.get("/v1/servers/default/petstore")
        assert current.status_code == 200, current.text
        document = current.json()
        document["tools"][0]["description"] = expected
        written = await admin.put(
            "/v1/servers/default/petstore", json=document, headers={"If-Match": current.headers["ETag"]}
        )
        assert written.status_code == 200, written.text
    # Both Envoys have it (each one's own admin, on loopback), and clients see it.
    for index in range(ENVOYS):
        await eventually(
            lambda i=index: expected in deployed.envoy_config(i), 15, f"the edit in Envoy {index}"
        )
    # Clients see it, on either Envoy (the listener port is shared: SO_REUSEPORT picks one per
    # connection, so several sessions).
    for _ in range(4):
        await eventually(lambda: served(deployed, expected), 30, "the edit through MCP", ignore=(Exception,))
    # They moved to the surviving replica.
    await eventually(lambda: nodes_acked(deployed, 1, ENVOYS), 30, "both Envoys' ACKs on replica 1")
