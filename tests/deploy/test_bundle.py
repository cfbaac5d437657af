"""The offline kit installs with pip's network off and runs the gateway.

`deploy/bundle.sh` (`make bundle`) makes the kit; the test unpacks the tarball into a temporary
directory, checks it against SHA256SUMS, installs mcpgw into a fresh venv with `--no-index`
(PIP_NO_INDEX=1 and no pip configuration, so the machine's own find-links and indexes are out of
reach), runs `mcpgw up` from it and lists the demo tools through its Envoy; then loads both image
archives into an empty podman store of its own (as on the air-gapped machine) and runs one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mcpgw import __version__
from mcpgw.stack import free_ports
from tests.deploy.podman import DEPLOY, podman_env
from tests.integration.mcphttp import call

# The session's image build (wheelhouse, Zig inside the wheel, both images) runs under the first
# test that needs it: minutes on a busy machine.
pytestmark = pytest.mark.timeout(1800)

KIT = f"mcpgw-{__version__}-offline"


@pytest.fixture(scope="module")
def kit(images: float) -> Iterator[Path]:
    """The kit's tarball unpacked into a temporary directory, removed after."""
    start = time.monotonic()
    tarball = DEPLOY / ".build" / f"{KIT}.tar.gz"
    # MCPGW_REUSE_IMAGES=1 (local iterations) keeps a kit already made too.
    if os.environ.get("MCPGW_REUSE_IMAGES") != "1" or not tarball.exists():
        subprocess.run([str(DEPLOY / "bundle.sh")], env=podman_env(), check=True, timeout=900)
    print(f"\nkit made in {time.monotonic() - start:.0f} s")
    where = Path(tempfile.mkdtemp(prefix="mcpgw-kit-"))
    try:
        with tarfile.open(tarball) as archive:
            archive.extractall(where, filter="tar")
        yield where / KIT
    finally:
        shutil.rmtree(where)


def offline_env() -> dict[str, str]:
    """No pip configuration, no index: only what the kit carries can be installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "VIRTUAL_ENV"}
    return env | {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull, "PYTHONUNBUFFERED": "1"}


def test_the_kit_has_everything_with_checksums(kit: Path) -> None:
    listed = {line.split(None, 1)[1] for line in (kit / "SHA256SUMS").read_text().splitlines()}
    files = {str(p.relative_to(kit)) for p in kit.rglob("*") if p.is_file() and p.name != "SHA256SUMS"}
    assert listed == files
    assert {"install.sh", "VERSION", f"images/mcpgw-controlplane-{__version__}.oci.tar"} <= files
    assert f"images/mcpgw-envoy-{__version__}.oci.tar" in files
    assert any(f.startswith(f"wheelhouse/mcpgw-{__version__}-") for f in files)
    assert {"prometheus/prometheus.example.yml", "grafana/mcpgw.json"} <= files
    assert {"plugin.wasm", "plugin.wasm.sha256"} <= {p.name for p in (kit / "plugins").rglob("*")}
    verified = subprocess.run([str(kit / "install.sh"), "verify"], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    # A damaged file is caught.
    damaged = kit / "VERSION"
    damaged.write_text(damaged.read_text() + " ")
    try:
        verified = subprocess.run([str(kit / "install.sh"), "verify"], capture_output=True, text=True)
        assert verified.returncode == 1 and "damaged" in verified.stderr
    finally:
        damaged.write_text(__version__ + "\n")


def test_the_kit_installs_without_an_index_and_runs_the_gateway(kit: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = offline_env()
    installed = subprocess.run(
        [str(kit / "install.sh"), "python", str(venv)], env=env, capture_output=True, text=True, timeout=600
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    listen, xds, admin, plugins, envoy_admin, stats, backend, broker = free_ports(8)
    log = (tmp_path / "up.log").open("w+")
    process = subprocess.Popen(
        [
            str(venv / "bin" / "mcpgw"), "--log-level", "warning", "up",
            "--listen-port", str(listen), "--xds-port", str(xds), "--admin", f"127.0.0.1:{admin}",
            "--plugin-port", str(plugins), "--envoy-admin-port", str(envoy_admin),
            "--envoy-stats-port", str(stats), "--demo-backend-port", str(backend),
            "--broker-port", str(broker),
        ],
        cwd=tmp_path, env=env | {"PATH": f"{venv / 'bin'}:{env['PATH']}"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{listen}/mcp/default/petstore"

        async def tools() -> set[str]:
            deadline = time.monotonic() + 120
            while True:
                try:
                    answer = await call(url, "tools/list")
                    return {tool["name"] for tool in answer["result"]["tools"]}
                except (AssertionError, OSError, KeyError, httpx.HTTPError):
                    assert process.poll() is None, Path(log.name).read_text()
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)

        assert {"getPet", "describePet"} <= asyncio.run(tools())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, Path(log.name).read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_the_kit_loads_its_images_into_an_empty_store(kit: Path, tmp_path: Path) -> None:
    # A podman of its own, empty, as on the air-gapped machine (vfs, like deploy/podman/): its
    # store, database and runtime directory all under tmp_path, so nothing it does (nor removing
    # it) touches the machine's podman and the containers others run there.
    store = tmp_path / "store"
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\nrunroot = "{store}/run"\ngraphroot = "{store}/graph"\n')
    engine = tmp_path / "containers.conf"
    base = (DEPLOY / "podman" / "containers.conf").read_text()
    assert base.rstrip().splitlines()[-1].startswith("events_logger")  # [engine] is the last table
    engine.write_text(f'{base}tmp_dir = "{store}/libpod-tmp"\nvolume_path = "{store}/volumes"\n')
    env = podman_env() | {"CONTAINERS_STORAGE_CONF": str(conf), "CONTAINERS_CONF": str(engine)}
    try:
        loaded = subprocess.run(
            [str(kit / "install.sh"), "images"], env=env, capture_output=True, text=True, timeout=600
        )
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        for name in ("controlplane", "envoy"):
            assert f"loaded localhost/mcpgw-{name}:{__version__}" in loaded.stdout
            version = subprocess.run(
                ["podman", "run", "--rm", "--network", "none", "--read-only", "--entrypoint", "mcpgw",
                 f"localhost/mcpgw-{name}:{__version__}", "--version"],
                env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert version.returncode == 0 and __version__ in version.stdout, version.stdout + version.stderr
    finally:
        subprocess.run(["podman", "rmi", "--all", "--force"], env=env, capture_output=True, timeout=300)
        shutil.rmtree(store, ignore_errors=True)
