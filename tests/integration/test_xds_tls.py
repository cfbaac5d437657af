"""xDS over mutual TLS with a real Envoy and real certificates (mcpgw.pki).

The control plane requires a client certificate from its CA naming the node; Envoy's bootstrap
(`mcpgw bootstrap --xds-tls-*`) presents one through file-based SDS and checks the control
plane's certificate against its own CA and the address it dials. Rotating every file on both
sides to a new CA, without restarting anything, still lets Envoy reconnect and take updates.
"""

from __future__ import annotations

import os
from pathlib import Path

from mcpgw.bootstrap import XdsClientTls, write_sds
from mcpgw.pki import Issued, issue, make_ca
from mcpgw.stack import free_port
from mcpgw.xds.tls import XdsTls, node_identity
from tests.integration.conftest import copy_registry, running_gateway
from tests.integration.mcphttp import call
from tests.waiting import eventually

NODE, GROUP = "test-node", "edge"


def _install(directory: Path, leaf: Issued, name: str, ca: Issued) -> tuple[Path, Path, Path]:
    """Write `name`.crt/.key and ca.crt into `directory`, each by rename (as a rotation does)."""
    staged = directory / ".staged"
    leaf.write(staged, name)
    (staged / "ca.crt").write_bytes(ca.cert_pem)
    for file in (f"{name}.crt", f"{name}.key", "ca.crt"):
        os.replace(staged / file, directory / file)
    return directory / f"{name}.crt", directory / f"{name}.key", directory / "ca.crt"


def _control_plane_files(directory: Path, ca: Issued) -> XdsTls:
    leaf = issue(ca, "mcpgw control plane", ips=["127.0.0.1"])
    return XdsTls(*_install(directory, leaf, "server", ca))


def _envoy_files(directory: Path, ca: Issued) -> tuple[Path, Path, Path]:
    """Envoy's certificate, key and CA, swapped in all at once as a Kubernetes secret volume does:
    the files are links into `..data`, itself a link to a versioned directory, replaced by rename."""
    leaf = issue(ca, NODE, uris=[node_identity(GROUP, NODE)], server=False, client=True)
    directory.mkdir(parents=True, exist_ok=True)
    version = directory / f"..v{len(list(directory.glob('..v*')))}"
    leaf.write(version, "envoy")
    (version / "ca.crt").write_bytes(ca.cert_pem)
    (directory / "..data.tmp").symlink_to(version.name)
    os.replace(directory / "..data.tmp", directory / "..data")
    for name in ("envoy.crt", "envoy.key", "ca.crt"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    return directory / "envoy.crt", directory / "envoy.key", directory / "ca.crt"


async def test_envoy_gets_configuration_over_mtls_and_follows_rotation(tmp_path: Path) -> None:
    ca = make_ca()
    server_tls = _control_plane_files(tmp_path / "cp", ca)
    cert, key, ca_file = _envoy_files(tmp_path / "envoy-certs", ca)
    client_tls = XdsClientTls(cert, key, ca_file, tmp_path / "sds")
    write_sds(client_tls)
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    async with running_gateway(
        tmp_path, registry, backend_port, node_cluster=GROUP, xds_tls=server_tls, envoy_xds_tls=client_tls
    ) as gateway:
        control_plane = gateway.stack.control_plane
        assert control_plane is not None
        answer = await call(gateway.url, "tools/list")
        assert {t["name"] for t in answer["result"]["tools"]} >= {"getPet"}
        [node] = [n for n in control_plane.status()["nodes"] if n["node_id"] == NODE]
        assert node["connected"]

        # Rotate both sides to a new CA: nothing restarts, old and new certificates are not
        # compatible, so only reloaded files on both sides let Envoy reconnect.
        envoy = gateway.stack.envoy
        assert envoy is not None
        reloads = "cluster.mcpgw-xds.client_ssl_socket_factory.ssl_context_update_by_sds"
        before = envoy.stats(reloads)[reloads]
        new_ca = make_ca("rotated CA")
        _control_plane_files(tmp_path / "cp", new_ca)
        _envoy_files(tmp_path / "envoy-certs", new_ca)
        # Envoy re-reads its secrets on the rename (file-based SDS, watched directory).
        await eventually(
            lambda: envoy.stats(reloads)[reloads] >= before + 2, 30, "Envoy reloading its xDS TLS files"
        )
        # End the stream: Envoy must reconnect with a new handshake on the rotated files.
        port = control_plane.xds_port
        await control_plane.ads.stop(grace=0.5)
        await control_plane.ads.start(control_plane.options.xds_host, port)
        (registry / "petstore.yaml").write_text(
            (registry / "petstore.yaml").read_text().replace("name: getPet", "name: getPetRotated", 1)
        )

        async def rotated_tool_listed() -> bool:
            listed = await call(gateway.url, "tools/list")
            return "getPetRotated" in {t["name"] for t in listed["result"]["tools"]}

        await eventually(rotated_tool_listed, 60, "an edit reaching Envoy over the rotated certificates")
        [node] = [n for n in control_plane.status()["nodes"] if n["node_id"] == NODE]
        assert node["connected"]


async def test_envoy_refuses_a_control_plane_certificate_for_another_name(tmp_path: Path) -> None:
    """The right CA is not enough: the control plane's certificate must name the host Envoy dials."""
    from mcpgw.bootstrap import BootstrapOptions, render
    from mcpgw.envoyproc import EnvoyProcess
    from mcpgw.xds.cache import SnapshotCache
    from mcpgw.xds.server import AdsServer

    ca = make_ca()
    wrong = issue(ca, "elsewhere", dns=["elsewhere.example"])  # no 127.0.0.1
    server_tls = XdsTls(*_install(tmp_path / "cp", wrong, "server", ca))
    cert, key, ca_file = _envoy_files(tmp_path / "envoy-certs", ca)
    client_tls = XdsClientTls(cert, key, ca_file, tmp_path / "sds")
    write_sds(client_tls)
    ads = AdsServer(SnapshotCache(), tls=server_tls)
    port = await ads.start(port=0)
    admin_port = free_port()
    envoy = EnvoyProcess(
        render(
            BootstrapOptions(
                node_id=NODE,
                node_cluster=GROUP,
                xds=(("127.0.0.1", port),),
                admin_port=admin_port,
                xds_tls=client_tls,
            )
        ),
        admin_port=admin_port,
        workdir=tmp_path,
    )
    try:
        await envoy.start()
        san = "cluster.mcpgw-xds.ssl.fail_verify_san"
        await eventually(
            lambda: envoy.stats(san).get(san, 0) >= 1, 30, "Envoy refusing the name", ignore=(OSError,)
        )
        assert ads.status() == []  # no stream ever opened
    finally:
        await envoy.stop()
        await ads.stop(0.5)
