"""Run a rendered overlay with `podman kube play`, on this machine, from the real images.

What a cluster provides and podman does not is supplied the way the test instructions of
issue 15 ask, and nothing else changes (`for_podman`):
- Networking: every pod on the host network (`hostNetwork: true`), each listening port moved to
  a free one on 127.0.0.1, Service names (`mcpgw-xds:18000`, …) replaced by those addresses.
- Volumes: Secrets and the registry ConfigMap become host directories the test fills (the
  ConfigMap one laid out and updated as the kubelet does, `tests.kubevolume`); an `emptyDir`, a
  host directory. Secret environment variables get the test's values.
- Workloads: each Deployment or StatefulSet replica becomes a Pod named like a StatefulSet's
  (`NAME-0`, `NAME-1`), with `$(POD_NAME)` expanded as the kubelet does, and `restartPolicy:
  Never` so a killed container stays dead. Probes are left to the test, which asks the same
  endpoints (podman 4.3 does not run readiness or startup probes).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Where each Service name leads, and which container port is that service's.
SERVICE_PORTS = {"mcpgw-xds": 18000, "mcpgw-admin": 18001, "mcpgw-plugins": 18002, "mcpgw-broker": 18003}
UID = 10001


@dataclass
class Ports:
    """The free host ports one deployment uses: per replica where replicas listen."""

    xds: list[int]
    admin: list[int]
    broker: list[int]
    plugins: int
    listen: int
    stats: list[int]
    envoy_admin: list[int]
    redis: int
    backend: int


@dataclass
class Played:
    """What `podman kube play` ran: the file and the pods' names, for `kube down`."""

    file: Path
    pods: list[str] = field(default_factory=list)


def podman_env() -> dict[str, str]:
    """podman with mcpgw's configuration (deploy/podman/: runc, vfs, lowered ulimits; deploy/README.md)."""
    try:
        from tests.deploy.podman import podman_env as shared  # the images' tests' own helper
    except ImportError:
        podman_dir = Path(__file__).resolve().parents[2] / "deploy" / "podman"
        return {
            **os.environ,
            "CONTAINERS_CONF": str(podman_dir / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(podman_dir / "storage.conf"),
        }
    return shared()


def podman(env: dict[str, str], *args: str, timeout: float = 300, check: bool = True) -> str:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


def _rewrite_arg(arg: str, replacements: dict[str, str]) -> str:
    for flag, value in replacements.items():
        if arg.startswith(f"{flag}="):
            return f"{flag}={value}"
    return arg


def _pod(workload: dict[str, Any], index: int) -> dict[str, Any]:
    name = f"{workload['metadata']['name']}-{index}"
    template = copy.deepcopy(workload["spec"]["template"])
    labels = {**template["metadata"].get("labels", {}), "mcpgw-test": "kubeplay"}
    spec = template["spec"]
    spec["hostNetwork"] = True
    spec["restartPolicy"] = "Never"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def _containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod["spec"].get("initContainers", [])
    yield from pod["spec"]["containers"]


def for_podman(
    docs: list[dict[str, Any]],
    ports: Ports,
    volumes: dict[str, Path],
    secret_env: dict[tuple[str, str], str],
) -> list[dict[str, Any]]:
    """The overlay's workloads as Pods podman runs on this machine (see the module docstring).

    `volumes` maps a Secret's or ConfigMap's name to the host directory that stands in for it,
    and an `emptyDir`'s or claim template's name to a directory of per-pod directories;
    `secret_env` maps (Secret name, key) to the value an environment variable gets.
    """
    pods: list[dict[str, Any]] = []
    xds_all = ",".join(f"127.0.0.1:{p}" for p in ports.xds)
    for workload in docs:
        if workload["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for index in range(workload["spec"].get("replicas", 1)):
            pod = _pod(workload, index)
            name, component = pod["metadata"]["name"], workload["metadata"]["name"]
            for container in _containers(pod):
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    container.pop(probe, None)
                container["ports"] = []
                replacements: dict[str, str] = {}
                if component == "mcpgw-controlplane":
                    replacements = {
                        "--xds": f"127.0.0.1:{ports.xds[index]}",
                        "--admin": f"127.0.0.1:{ports.admin[index]}",
                        "--broker": f"127.0.0.1:{ports.broker[index]}",
                        "--listen": f"127.0.0.1:{ports.listen}",
                        "--plugins": f"127.0.0.1:{ports.plugins}",
                    }
                elif component == "mcpgw-plugins":
                    replacements = {"--bind": f"127.0.0.1:{ports.plugins}"}
                container["args"] = [
                    _rewrite_arg(a, replacements).replace("mcpgw-redis:6379", f"127.0.0.1:{ports.redis}")
                    for a in container.get("args", [])
                ]
                if component == "mcpgw-redis":
                    container["args"] = [
                        a.replace("port 6379", f"port {ports.redis}").replace(
                            "bind 0.0.0.0", "bind 127.0.0.1"
                        )
                        for a in container["args"]
                    ]
                env = []
                for variable in container.get("env", []):
                    ref = variable.get("valueFrom", {})
                    if "secretKeyRef" in ref:
                        key = (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
                        variable = {"name": variable["name"], "value": secret_env[key]}
                    elif "fieldRef" in ref:
                        assert ref["fieldRef"]["fieldPath"] == "metadata.name", variable
                        variable = {"name": variable["name"], "value": name}
                    else:
                        variable = {**variable, "value": variable["value"].replace("$(POD_NAME)", name)}
                    env.append(variable)
                if component == "mcpgw-envoy":
                    values = {
                        "MCPGW_XDS": xds_all,
                        # A Service would lead to a live broker; the tests kill replica 0.
                        "MCPGW_BROKER": f"127.0.0.1:{ports.broker[-1]}",
                        "MCPGW_STATS": f"127.0.0.1:{ports.stats[index]}",
                    }
                    env = [{**v, "value": values.get(v["name"], v["value"])} for v in env]
                    env.append(
                        {"name": "MCPGW_ENVOY_ADMIN", "value": f"127.0.0.1:{ports.envoy_admin[index]}"}
                    )
                container["env"] = env
            for volume in pod["spec"].get("volumes", []):
                if "secret" in volume:
                    path = volumes[volume["secret"]["secretName"]]
                elif "configMap" in volume:
                    path = volumes[volume["configMap"]["name"]]
                else:  # an emptyDir: one directory per pod
                    path = volumes[volume["name"]] / name
                    path.mkdir(parents=True, exist_ok=True)
                    _own(path)
                for kind in ("secret", "configMap", "emptyDir"):
                    volume.pop(kind, None)
                volume["hostPath"] = {"path": str(path), "type": "Directory"}
            for claim in workload["spec"].get("volumeClaimTemplates", []):
                data = volumes[claim["metadata"]["name"]] / name
                data.mkdir(parents=True, exist_ok=True)
                _own(data)
                pod["spec"].setdefault("volumes", []).append(
                    {"name": claim["metadata"]["name"], "hostPath": {"path": str(data), "type": "Directory"}}
                )
            pods.append(pod)
    # Redis first: a control plane whose Redis registry is unreachable at start exits (3), and a
    # kubelet would restart it until Redis is up, which `restartPolicy: Never` does not.
    pods.sort(key=lambda pod: not pod["metadata"]["name"].startswith("mcpgw-redis"))
    return pods


def demo_backend_pod(image: str, port: int) -> dict[str, Any]:
    """The demo REST backend the demo registry's tools call (the control plane's image has it)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "mcpgw-demo-backend", "labels": {"mcpgw-test": "kubeplay"}},
        "spec": {
            "hostNetwork": True,
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID},
            "containers": [
                {
                    "name": "backend",
                    "image": image,
                    "command": ["mcpgw"],
                    "args": ["demo-backend", "--port", str(port)],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def _own(path: Path) -> None:
    """Readable and writable by the pods' user, as a Secret volume with fsGroup would be."""
    for root, dirs, files in os.walk(path):
        for entry in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.lchown(entry, UID, UID)


def own(path: Path) -> None:
    """What the kubelet's fsGroup does for a Secret or ConfigMap volume: the pods' user reads it."""
    _own(path)


def play(env: dict[str, str], pods: list[dict[str, Any]], workdir: Path) -> Played:
    file = workdir / "kube-play.yaml"
    file.write_text(yaml.safe_dump_all(pods, sort_keys=False))
    played = Played(file, [p["metadata"]["name"] for p in pods])
    for name in played.pods:  # a crashed earlier run's pods, by their exact names only
        podman(env, "pod", "rm", "--force", "--ignore", name, check=False)
    podman(env, "kube", "play", "--start", str(file), timeout=600)
    return played


def down(env: dict[str, str], played: Played) -> None:
    """`podman kube down`, then make sure no pod or container of ours is left."""
    podman(env, "kube", "down", str(played.file), timeout=300, check=False)
    for name in played.pods:
        podman(env, "pod", "rm", "--force", "--ignore", name, check=False)
    left = podman(env, "pod", "ps", "--filter", "label=mcpgw-test=kubeplay", "--format", "json", check=False)
    assert not json.loads(left or "[]"), f"pods left after kube down: {left}"


def logs(env: dict[str, str], container: str) -> str:
    return podman(env, "logs", container, check=False, timeout=30)


def container_name(pod: str, container: str) -> str:
    """podman kube play names a pod's container `<pod>-<container>`."""
    return f"{pod}-{container}"
