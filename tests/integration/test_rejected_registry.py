"""A registry kept out by something outside it (an unreadable credential file) is applied once
that is fixed, with no registry change to trigger it; meanwhile Envoy keeps what it has.

A real control plane (file registry, the built filter from the plugin directory, its xDS
cache); no Envoy is needed to see what would be delivered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mcpgw.controlplane import ControlPlane, ControlPlaneOptions
from mcpgw.registry.secrets import UNAVAILABLE
from mcpgw.stack import free_ports
from mcpgw.xds import types
from pluginserver.server import DEFAULT_ROOT
from tests.unit.test_registry import minimal
from tests.waiting import eventually

RETRY_S = 0.2


def server_document(secret: Path, description: str) -> dict[str, Any]:
    document = minimal(
        securitySchemes=[
            {"id": "bearer", "type": "http", "scheme": "bearer", "defaultCredential": {"file": str(secret)}}
        ]
    )
    tool = document["tools"][0]
    tool["description"] = description
    tool["requestTemplate"]["security"] = {"id": "bearer"}
    return document


def rejected_count(control_plane: ControlPlane) -> int:
    return int(control_plane.status()["registry"]["rejected"])


def delivered_configuration(control_plane: ControlPlane) -> str:
    """The filter configuration and the SDS secrets Envoy gets (a constant header credential
    travels as a secret that Envoy's credential_injector adds, not in the filter's config)."""
    resources = control_plane.cache.snapshot.resources
    [config] = resources[types.EXTENSION_CONFIG].values()
    return str(config) + "".join(str(secret) for secret in resources[types.SECRET].values())


async def test_a_registry_rejected_for_an_unreadable_credential_applies_once_it_is_readable(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "token"
    secret.write_text("tok-1\n")
    registry = tmp_path / "registry"
    registry.mkdir()
    document = registry / "svc.yaml"
    document.write_text(yaml.safe_dump(server_document(secret, "first")))
    xds, status = free_ports(2)
    control_plane = ControlPlane(
        ControlPlaneOptions(
            registry_dir=registry,
            plugins_dir=DEFAULT_ROOT,
            xds_port=xds,
            status_port=status,
            rejected_retry_s=RETRY_S,
        )
    )
    await control_plane.start()
    try:
        assert "first" in delivered_configuration(control_plane)
        applied = control_plane.applied_revision

        secret.unlink()
        document.write_text(yaml.safe_dump(server_document(secret, "second")))
        problems = await eventually(lambda: control_plane.rejections, 5, "the edit rejected")
        assert [p.reason for p in problems] == [UNAVAILABLE]
        # Retried, still unreadable: still rejected, and what Envoy gets is unchanged.
        first_rejections = rejected_count(control_plane)
        await eventually(lambda: rejected_count(control_plane) >= first_rejections + 2, 5, "retries")
        assert control_plane.applied_revision == applied
        assert "first" in delivered_configuration(control_plane)

        # Fixing the file is enough: no registry change follows.
        secret.write_text("tok-2\n")
        await eventually(lambda: not control_plane.rejections, 5, "the registry applied once readable")
        assert "second" in delivered_configuration(control_plane)
        assert "tok-2" in delivered_configuration(control_plane)
        assert control_plane.applied_revision != applied
    finally:
        await control_plane.stop()
