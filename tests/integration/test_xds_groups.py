"""Gateway groups: a node receives only the servers (and credentials) of its group.

The intruder holds a valid certificate for node `envoy-a` of group `a`; whatever it subscribes
to, over either protocol, nothing it receives names group b's server or carries its
credential. A real Envoy of group `a` serves a's servers and answers 404 for b's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from mcpgw.controlplane import ControlPlane, ControlPlaneOptions
from mcpgw.pki import Issued, issue, make_ca
from mcpgw.stack import free_port, free_ports
from mcpgw.xds.tls import XdsTls, node_identity
from mcpgw.xds.types import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE, SECRET
from pluginserver.server import DEFAULT_ROOT
from tests.integration.conftest import copy_registry, running_gateway
from tests.integration.mcphttp import call, post, rpc
from tests.unit.adsclient import AdsClient, DeltaAdsClient
from tests.waiting import eventually

ALPHA_SECRET, BETA_SECRET, COMMON_SECRET = "alpha-token-5e1f", "beta-token-9c2d", "common-token-77aa"


def server_doc(
    name: str, credential: str, gateways: list[str] | None, backend_port: int = 1
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "kind": "McpServer",
        "namespace": "shop",
        "name": name,
        "backend": {"endpoints": [f"127.0.0.1:{backend_port}"]},
        "securitySchemes": [{"id": "t", "type": "http", "scheme": "bearer", "defaultCredential": credential}],
        "tools": [
            {
                "name": f"{name}Count",
                "requestTemplate": {"url": "/v1/pets", "method": "GET", "security": {"id": "t"}},
            }
        ],
    }
    if gateways is not None:
        document["gateways"] = gateways
    return document


class Certs:
    def __init__(self, directory: Path) -> None:
        self.ca = make_ca()
        leaf = issue(self.ca, "control plane", ips=["127.0.0.1"])
        cert, key = leaf.write(directory, "server")
        (directory / "ca.crt").write_bytes(self.ca.cert_pem)
        self.server = XdsTls(cert, key, directory / "ca.crt")

    def node(self, cluster: str, node_id: str) -> grpc.ChannelCredentials:
        leaf: Issued = issue(
            self.ca, node_id, uris=[node_identity(cluster, node_id)], server=False, client=True
        )
        return grpc.ssl_channel_credentials(self.ca.cert_pem, leaf.key_pem, leaf.cert_pem)


@pytest.fixture
async def grouped(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, Certs, Path]]:
    registry = tmp_path / "registry"
    registry.mkdir()
    for name, secret, gateways in (
        ("alpha", ALPHA_SECRET, ["a"]),
        ("beta", BETA_SECRET, ["b"]),
        ("common", COMMON_SECRET, None),
    ):
        (registry / f"{name}.yaml").write_text(yaml.safe_dump(server_doc(name, secret, gateways)))
    certs = Certs(tmp_path / "certs")
    xds, status = free_ports(2)
    control_plane = ControlPlane(
        ControlPlaneOptions(
            registry_dir=registry,
            plugins_dir=DEFAULT_ROOT,
            xds_port=xds,
            status_port=status,
            xds_tls=certs.server,
        )
    )
    await control_plane.start()
    try:
        yield control_plane, certs, registry
    finally:
        await control_plane.stop()


GUESSES = [f"mcpgw/shop/{n}" for n in ("alpha", "beta", "common", "nosuch")]
EVERY_NAME = {
    ENDPOINT: GUESSES,
    EXTENSION_CONFIG: GUESSES,
    ROUTE: ["mcpgw-routes"],
    SECRET: [f"{name}/credential" for name in GUESSES],
}


async def _everything(client: AdsClient | DeltaAdsClient) -> bytes:
    """Subscribe to every type, by wildcard and by every name the intruder can guess; all bytes received.

    Delta answers a subscribed name that the node may not have in `removed_resources`, like a
    name that does not exist (so existence cannot be probed either): those echoes of the
    client's own guesses are checked, then left out of what it received.
    """
    received = b""
    for type_url in (CLUSTER, SECRET, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE):
        await client.subscribe(type_url, ["*", *EVERY_NAME.get(type_url, ())])
        for resp in await client.ack_until_quiet(quiet=0.5):
            if isinstance(client, DeltaAdsClient) and resp.removed_resources:
                removed = set(resp.removed_resources)
                beta = [n for n in removed if "/beta" in n]
                assert all(n.replace("/beta", "/nosuch") in removed for n in beta), removed
                resp.ClearField("removed_resources")
            received += resp.SerializeToString()
    return received


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_intruder_in_group_a_never_receives_group_b(
    grouped: tuple[ControlPlane, Certs, Path], protocol: str
) -> None:
    control_plane, certs, registry = grouped
    target = f"127.0.0.1:{control_plane.xds_port}"
    xds = control_plane.status()["xds"]
    assert set(xds["groups"]) == {"a", "b", "*"} and xds["tls"] is True
    kind = DeltaAdsClient if protocol == "delta" else AdsClient
    async with kind(target, "envoy-a", "a", credentials=certs.node("a", "envoy-a")) as intruder:
        received = await _everything(intruder)
        assert ALPHA_SECRET.encode() in received and COMMON_SECRET.encode() in received
        assert b"shop/alpha" in received and b"shop/common" in received
        assert b"beta" not in received and BETA_SECRET.encode() not in received
        # An edit of b's server reaches b's gateways only: a hears nothing.
        edited = server_doc("beta", BETA_SECRET + "-rotated", ["b"])
        (registry / "beta.yaml").write_text(yaml.safe_dump(edited))
        await eventually(
            lambda: "beta-token-9c2d-rotated" in _beta_credential(control_plane), 10, "the edit applied"
        )
        await intruder.expect_silence(0.5)
    # A node of group b gets b's server; a group no server names gets only the shared one.
    async with kind(target, "envoy-b", "b", credentials=certs.node("b", "envoy-b")) as node_b:
        received = await _everything(node_b)
        assert b"shop/beta" in received and b"alpha" not in received
    async with kind(target, "envoy-x", "other", credentials=certs.node("other", "envoy-x")) as stranger:
        received = await _everything(stranger)
        assert b"shop/common" in received and b"alpha" not in received and b"beta" not in received


def _beta_credential(control_plane: ControlPlane) -> str:
    """Beta's resources as the control plane holds them (its credential is in its SDS secret)."""
    snapshot = control_plane.cache.snapshot
    found = [
        resource.packed.value.decode(errors="replace")
        for type_url in (SECRET, EXTENSION_CONFIG)
        for name, resource in snapshot.get(type_url).resources.items()
        if name.startswith("mcpgw/shop/beta")
    ]
    return "".join(found)


async def test_claiming_another_group_is_refused(grouped: tuple[ControlPlane, Certs, Path]) -> None:
    control_plane, certs, _ = grouped
    target = f"127.0.0.1:{control_plane.xds_port}"
    # A valid certificate for group a, presenting itself as a node of group b.
    async with AdsClient(target, "envoy-a", "b", credentials=certs.node("a", "envoy-a")) as intruder:
        await intruder.subscribe(CLUSTER)
        with pytest.raises(EOFError):
            await intruder.recv(timeout=5)
        assert intruder.closed_with == grpc.StatusCode.PERMISSION_DENIED
    assert control_plane.status()["nodes"] == []


def test_include_across_groups_is_refused() -> None:
    from mcpgw.registry.validate import check_includes, parse_server

    beta = parse_server(server_doc("beta", BETA_SECRET, ["b"]), "beta.yaml")
    composer = server_doc("mix", ALPHA_SECRET, None) | {"include": [{"server": "shop/beta"}]}
    [problem] = check_includes([beta, parse_server(composer, "mix.yaml")])
    assert (problem.file, problem.path) == ("mix.yaml", "include[0].server")
    assert "served by gateways b only" in problem.reason
    inside = server_doc("mix", ALPHA_SECRET, ["b"]) | {"include": [{"server": "shop/beta"}]}
    assert check_includes([beta, parse_server(inside, "mix.yaml")]) == []


async def test_envoy_of_a_group_serves_its_servers_only(tmp_path: Path) -> None:
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    petstore = yaml.safe_load((registry / "petstore.yaml").read_text())
    (registry / "petstore.yaml").write_text(yaml.safe_dump(petstore | {"gateways": ["a"]}))
    (registry / "beta.yaml").write_text(yaml.safe_dump(server_doc("beta", BETA_SECRET, ["b"], backend_port)))
    async with running_gateway(tmp_path, registry, backend_port, node_cluster="a") as gateway:
        answer = await call(gateway.url, "tools/list")
        assert answer["result"]["tools"]
        beta = gateway.url.replace("/mcp/default/petstore", "/mcp/shop/beta")
        response = await post(beta, rpc("tools/list"), session=False)
        assert response.status_code == 404, response.text
        envoy = gateway.stack.envoy
        assert envoy is not None
        dump = envoy.admin("/config_dump?include_eds", timeout=5)
        assert "shop/beta" not in dump and BETA_SECRET not in dump
        assert "default/petstore" in dump
