"""Scraping mcpgw on Kubernetes: the pod annotations point at ports and paths that exist, and the
optional ServiceMonitor (deploy/kustomize/optional/, not in the base) names Services' real port
names; its NetworkPolicy is valid Kubernetes 1.30 (`kubernetes-validate --strict`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.deploy.kube import KUSTOMIZE, OVERLAYS, find, kubernetes_validate, render

SERVICE_MONITOR = KUSTOMIZE / "optional" / "servicemonitor.yaml"
# workload -> (port, path, scheme) Prometheus should scrape
EXPECTED = {
    ("Deployment", "mcpgw-controlplane"): ("18001", "/metrics", "https"),
    ("StatefulSet", "mcpgw-envoy"): ("9902", "/stats/prometheus", None),
}


def test_pods_carry_scrape_annotations_for_real_ports() -> None:
    for overlay in OVERLAYS:
        docs = render(overlay)
        for (kind, name), (port, path, scheme) in EXPECTED.items():
            template = find(docs, kind, name)["spec"]["template"]
            annotations = template["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == port
            assert annotations["prometheus.io/path"] == path
            assert annotations.get("prometheus.io/scheme") == scheme
            ports = {str(p["containerPort"]) for c in template["spec"]["containers"] for p in c["ports"]}
            assert port in ports, f"{overlay} {name}: no container port {port}"


def service_monitor_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(SERVICE_MONITOR.read_text()) if d]


def test_service_monitor_endpoints_name_real_service_ports() -> None:
    # Not rendered by any overlay: the CRD may not exist in the cluster.
    assert not [d for o in OVERLAYS for d in render(o) if d["kind"] == "ServiceMonitor"]
    (monitor,) = [d for d in service_monitor_docs() if d["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    for overlay in OVERLAYS:
        services = [
            d
            for d in render(overlay)
            if d["kind"] == "Service" and selector.items() <= d["metadata"].get("labels", {}).items()
        ]
        by_port = {p["name"]: s["metadata"]["name"] for s in services for p in s["spec"]["ports"]}
        assert by_port["https-admin"] == "mcpgw-admin"
        assert by_port["http-stats"] == "mcpgw-envoy"
    admin, stats = endpoints["https-admin"], endpoints["http-stats"]
    assert (admin["path"], admin["scheme"]) == ("/metrics", "https")
    assert admin["authorization"]["credentials"] == {"name": "mcpgw-admin-token", "key": "token"}
    assert admin["tlsConfig"]["serverName"] == "mcpgw-admin"
    assert (stats["path"], stats["scheme"]) == ("/stats/prometheus", "http")


def test_service_monitor_network_policy_is_valid(tmp_path: Path) -> None:
    policies = [d for d in service_monitor_docs() if d["kind"] != "ServiceMonitor"]
    assert [p["kind"] for p in policies] == ["NetworkPolicy"]
    (rule,) = policies[0]["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 18001}]  # the admin port only
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump_all(policies))
    result = kubernetes_validate(path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
