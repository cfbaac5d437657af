"""The kustomize overlays as a cluster would get them: rendered by `kubectl kustomize`, valid for
Kubernetes 1.30 (`kubernetes-validate --strict`), clean under `checkov` (every check passes or is
skipped in the manifest with a written reason), and holding what production expects: probes,
resources, a locked-down securityContext, PodDisruptionBudgets, NetworkPolicies, Secrets only by
reference, anti-affinity.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mcpgw import __version__
from mcpgw.limits import parse_size
from mcpgw.stack import DEFAULT_REGISTRY
from tests.deploy.kube import (
    KUSTOMIZE,
    OVERLAYS,
    find,
    kubernetes_validate,
    render,
    render_text,
    tool,
    workloads,
)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def rendered_file(overlay: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(render_text(overlay))
    return path


def test_kubernetes_validate_strict(overlay: str, tmp_path: Path) -> None:
    path = rendered_file(overlay, tmp_path)
    result = kubernetes_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    # One line per resource: nothing was left out.
    assert result.stdout.count(" passed for resource ") == len(render(overlay)), result.stdout


def test_kubernetes_validate_strict_refuses_a_misspelt_field(tmp_path: Path) -> None:
    """The validator is not a formality: one unknown field in the Envoy pod fails it."""
    path = tmp_path / "typo.yaml"
    path.write_text(
        render_text("single").replace("readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", 1)
    )
    result = kubernetes_validate(path)
    assert result.returncode != 0 and "readOnlyRootFileSystem" in result.stdout + result.stderr


def checkov(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [tool("checkov"), "-f", str(path), "--framework", "kubernetes", "-o", "json", "--compact"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_checkov_finds_nothing_unexplained(overlay: str, tmp_path: Path) -> None:
    # checkov without a Prisma account reports no severities: every finding counts, so none may
    # be left, high or not.
    report = checkov(rendered_file(overlay, tmp_path))
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]]
    assert failed == [], "\n".join(failed)
    assert report["summary"]["passed"] > 100 and report["summary"]["parsing_errors"] == 0, report["summary"]
    # Every skip carries its reason in the manifest (checkov.io/skipN: CHECK=reason), and only
    # the three explained ones are skipped.
    for skipped in results["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "").strip()) > 40, skipped["check_id"]
    assert {c["check_id"] for c in results["skipped_checks"]} == {"CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_43"}


def test_checkov_catches_a_writable_root_filesystem(tmp_path: Path) -> None:
    """The lint is not a formality: a writable root filesystem in one container fails it."""
    path = tmp_path / "writable.yaml"
    path.write_text(
        render_text("single").replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", 1)
    )
    failed = {c["check_id"] for c in checkov(path)["results"]["failed_checks"]}
    assert "CKV_K8S_22" in failed, failed


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_every_container_is_probed_sized_and_locked_down(overlay: str) -> None:
    for workload in workloads(render(overlay)):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] >= 10000, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            label = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, label
            assert context["readOnlyRootFilesystem"] is True, label
            assert context["capabilities"] == {"drop": ["ALL"]}, label
            assert context.get("privileged", False) is False, label
            resources = container["resources"]
            for side in ("requests", "limits"):
                assert set(resources[side]) == {"cpu", "memory"}, label
        for container in pod["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{name}/{container['name']}: no {probe}"


def test_probes_ask_the_right_endpoints(overlay: str) -> None:
    docs = render(overlay)
    envoy = containers(find(docs, "StatefulSet", "mcpgw-envoy"))[0]
    # Envoy is ready once it has a configuration from the control plane: /ready on the stats
    # listener (Envoy's admin itself stays on loopback).
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "stats"}
    assert {"name": "stats", "containerPort": 9902} in envoy["ports"]
    assert env_of(envoy)["MCPGW_STATS"] == "0.0.0.0:9902"
    control = containers(find(docs, "Deployment", "mcpgw-controlplane"))[0]
    assert control["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin", "scheme": "HTTPS"}
    plugins = containers(find(docs, "Deployment", "mcpgw-plugins"))[0]
    assert plugins["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "plugins"}


def test_secrets_are_referenced_never_defined(overlay: str) -> None:
    docs = render(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"]
    text = render_text(overlay)
    assert not re.search(r"BEGIN [A-Z ]*PRIVATE KEY|BEGIN CERTIFICATE", text)
    referenced: set[str] = set()
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        referenced |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            for env in container.get("env", []):
                # Literal values are settings, never credentials.
                assert not re.search(r"TOKEN|PASSWORD|SECRET|KEY$", env["name"]) or "value" not in env, env
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add(ref["name"])
    expected = {
        "mcpgw-admin-token",
        "mcpgw-session-key",
        "mcpgw-admin-tls",
        "mcpgw-xds-server",
        "mcpgw-xds-envoy",
    }
    if overlay == "ha":
        expected.add("mcpgw-redis")
    assert referenced == expected


def test_xds_runs_mutual_tls_between_pods(overlay: str) -> None:
    docs = render(overlay)
    args = containers(find(docs, "Deployment", "mcpgw-controlplane"))[0]["args"]
    assert "--xds=0.0.0.0:18000" in args
    for flag in ("cert", "key", "ca"):
        assert any(a.startswith(f"--xds-tls-{flag}=/etc/mcpgw/xds-tls/") for a in args), flag
    envoy = env_of(containers(find(docs, "StatefulSet", "mcpgw-envoy"))[0])
    assert envoy["MCPGW_XDS"] == "mcpgw-xds:18000" and envoy["MCPGW_NODE_ID"] == "$(POD_NAME)"
    for flag in ("cert", "key", "ca"):
        assert f"--xds-tls-{flag}=/etc/mcpgw/xds-tls/" in envoy["MCPGW_BOOTSTRAP_ARGS"], flag


def test_envoy_fits_its_container_limits(overlay: str) -> None:
    """The overload manager must shed load before the kernel's OOM killer acts: `--max-heap` at
    most two thirds of the container's memory limit (docs/security.md, "Sizing it"). Envoy's
    workers follow the CPU limit, not the node's hardware threads (docs/deploy.md#sizing)."""
    envoy = containers(find(render(overlay), "StatefulSet", "mcpgw-envoy"))[0]
    limits, variables = envoy["resources"]["limits"], env_of(envoy)
    flags = dict(a.split("=", 1) for a in shlex.split(variables["MCPGW_BOOTSTRAP_ARGS"]) if "=" in a)
    assert parse_size(flags["--max-heap"]) <= parse_size(limits["memory"]) * 2 // 3, (flags, limits)
    envoy_args = shlex.split(variables["ENVOY_ARGS"])
    workers = int(envoy_args[envoy_args.index("--concurrency") + 1])
    assert 1 <= workers <= float(limits["cpu"]), (envoy_args, limits)


def test_network_policies_keep_internal_ports_internal(overlay: str) -> None:
    docs = render(overlay)
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    deny = policies["mcpgw-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    rules = policies["mcpgw-controlplane"]["spec"]["ingress"]
    by_port = {p["port"]: rule["from"] for rule in rules for p in rule["ports"]}
    envoys = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mcpgw-envoy"}}}]
    assert by_port[18000] == envoys and by_port[18003] == envoys
    assert by_port[18001] == [{"podSelector": {}}]  # this namespace only
    (plugins,) = policies["mcpgw-plugins"]["spec"]["ingress"]
    assert plugins["from"] == envoys and plugins["ports"] == [{"protocol": "TCP", "port": 18002}]
    if overlay == "ha":
        (redis,) = policies["mcpgw-redis"]["spec"]["ingress"]
        assert redis["from"] == [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mcpgw-controlplane"}}}
        ]


def test_disruption_budgets_and_anti_affinity(overlay: str) -> None:
    docs = render(overlay)
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in docs
        if d["kind"] == "PodDisruptionBudget"
    }
    assert {"mcpgw-controlplane", "mcpgw-envoy", "mcpgw-plugins"} <= budgets
    for name in ("mcpgw-controlplane", "mcpgw-plugins"):
        affinity = find(docs, "Deployment", name)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        assert affinity, name
    assert find(docs, "StatefulSet", "mcpgw-envoy")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]


def test_single_serves_the_registry_configmap() -> None:
    docs = render("single")
    for workload in workloads(docs):
        assert workload["spec"]["replicas"] == 1
    configmap = find(docs, "ConfigMap", "mcpgw-registry")
    # The same demo registry `mcpgw up` serves; no name hash, so an edit is a live swap.
    assert configmap["data"] == {"petstore.yaml": (DEFAULT_REGISTRY / "petstore.yaml").read_text()}
    control = find(docs, "Deployment", "mcpgw-controlplane")["spec"]["template"]["spec"]
    assert "--registry=/etc/mcpgw/registry" in control["containers"][0]["args"]
    assert {"name": "registry", "configMap": {"name": "mcpgw-registry"}} in control["volumes"]


def test_ha_runs_replicas_on_redis_with_aof() -> None:
    docs = render("ha")
    assert find(docs, "Deployment", "mcpgw-controlplane")["spec"]["replicas"] >= 2
    assert find(docs, "StatefulSet", "mcpgw-envoy")["spec"]["replicas"] >= 2
    assert find(docs, "Deployment", "mcpgw-plugins")["spec"]["replicas"] >= 2
    control = find(docs, "Deployment", "mcpgw-controlplane")["spec"]["template"]["spec"]
    args = control["containers"][0]["args"]
    assert "--registry=redis://mcpgw-redis:6379/0" in args
    assert not [v for v in control["volumes"] if "configMap" in v]
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    redis = find(docs, "StatefulSet", "mcpgw-redis")
    script = redis["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "appendonly yes" in script and "requirepass" in script and "redis-server -" in script
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    affinity = control["affinity"]["podAntiAffinity"]
    assert affinity["requiredDuringSchedulingIgnoredDuringExecution"]


def test_base_registry_is_the_demo_registry() -> None:
    assert (KUSTOMIZE / "base" / "registry" / "petstore.yaml").read_text() == (
        DEFAULT_REGISTRY / "petstore.yaml"
    ).read_text()


def test_images_are_this_version(overlay: str) -> None:
    """The tags `make images` builds and the offline kit carries (deploy/README.md)."""
    images = {
        c["image"] for w in workloads(render(overlay)) for c in w["spec"]["template"]["spec"]["containers"]
    }
    expected = {f"localhost/mcpgw-controlplane:{__version__}", f"localhost/mcpgw-envoy:{__version__}"}
    if overlay == "ha":
        expected.add("localhost/mcpgw-redis:bookworm")  # deploy/redis-image.sh, in the kit
    assert images == expected
