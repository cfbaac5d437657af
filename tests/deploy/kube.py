"""What the Kubernetes tests share: the overlays, rendered by the real `kubectl kustomize`, and the
offline validators (`make deploy-tools` installs them into .cache/deploy-tools).

Nothing skips: a missing kubectl or validator fails the test with what to run.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kustomize"
OVERLAYS = ("single", "ha")
TOOLS = Path(os.environ.get("MCPGW_DEPLOY_TOOLS", ROOT / ".cache" / "deploy-tools"))
# The oldest Kubernetes the manifests promise to work on (docs/deploy.md).
KUBERNETES_VERSION = "1.30.0"


def kubectl() -> str:
    found = shutil.which("kubectl")
    assert found, "kubectl is missing: run `make kubectl` (Debian: apt-get install kubernetes-client)"
    return found


def tool(name: str) -> str:
    path = TOOLS / "bin" / name
    assert path.exists(), f"{path} is missing: run `make deploy-tools`"
    return str(path)


def kubernetes_validate(path: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`kubernetes-validate --strict` for KUBERNETES_VERSION over one YAML file (exit 0 = valid)."""
    return subprocess.run(
        [tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@functools.cache
def render_text(overlay: str) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(overlay: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render_text(overlay)) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]
