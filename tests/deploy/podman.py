"""Podman for the deploy tests: mcpgw's configuration (deploy/podman/), the images, containers
that are always removed.

Every container a test starts is named `mcpgw-test-<random>` and runs with host networking on
127.0.0.1 with ports from `free_ports`, so tests reach nothing but this machine.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mcpgw import __version__

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CONTROLPLANE = f"localhost/mcpgw-controlplane:{__version__}"
ENVOY = f"localhost/mcpgw-envoy:{__version__}"


def podman_env() -> dict[str, str]:
    """This process's environment with podman pointed at deploy/podman/ (what env.sh exports)."""
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(DEPLOY / "podman" / "containers.conf")
    env["CONTAINERS_STORAGE_CONF"] = str(DEPLOY / "podman" / "storage.conf")
    return env


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
    return result


def build_images() -> float:
    """deploy/build-images.sh (base image cached, wheelhouse built when absent); its seconds.

    `MCPGW_REUSE_IMAGES=1` keeps images already built (local iterations; CI builds them).
    """
    start = time.monotonic()
    if os.environ.get("MCPGW_REUSE_IMAGES") == "1":
        present = [podman("image", "exists", i, check=False).returncode == 0 for i in (CONTROLPLANE, ENVOY)]
        if all(present):
            return 0.0
    subprocess.run([str(DEPLOY / "build-images.sh")], env=podman_env(), check=True, timeout=1800)
    return time.monotonic() - start


class Containers:
    """Containers started by one test; `remove_all` removes every one, running or not."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def run(self, image: str, *args: str, options: tuple[str, ...] = ()) -> str:
        """A detached container on the host network, read-only root, tmpfs /tmp, as the image's user."""
        name = f"mcpgw-test-{secrets.token_hex(4)}"
        self.names.append(name)
        podman(
            "run", "--detach", "--name", name, "--network", "host", "--read-only",
            "--tmpfs", "/tmp:rw,size=64m", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            *options, image, *args,
        )  # fmt: skip
        return name

    def logs(self, name: str) -> str:
        result = podman("logs", name, check=False)
        return result.stdout + result.stderr

    def remove_all(self) -> None:
        for name in self.names:
            podman("rm", "--force", "--time", "0", name, check=False)


@contextmanager
def containers() -> Iterator[Containers]:
    started = Containers()
    try:
        yield started
    finally:
        started.remove_all()
