"""HTTPS on Envoy's MCP listener: real Envoy, real certificates from `mcpgw.pki`, real clients.

The certificate files are laid out as Kubernetes mounts a TLS secret (`tls.crt` → `..data/tls.crt`,
`..data` → a timestamped directory) and rotated the way the kubelet does it: a new directory,
then one rename of the `..data` link. Envoy must pick the new pair up for new connections,
with no restart and no listener drain.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import pytest
from cryptography import x509
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcpgw import pki
from mcpgw.envoyproc import EnvoyProcess
from mcpgw.listenertls import ListenerTls
from mcpgw.stack import free_ports
from mcpgw.tlsreload import TlsFiles
from tests.integration.conftest import Gateway, copy_registry, free_port, running_gateway
from tests.integration.mcphttp import ACCEPT, initialize_request
from tests.integration.test_admin import mcpgw
from tests.waiting import eventually


@dataclass
class Certs:
    ca: pki.Issued
    ca_file: Path
    # The directory Envoy reads, laid out like a mounted Kubernetes secret.
    mount: Path

    @property
    def cert(self) -> Path:
        return self.mount / "tls.crt"

    @property
    def key(self) -> Path:
        return self.mount / "tls.key"


def serial(pem: bytes | str) -> int:
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificate(data).serial_number


def server_cert(ca: pki.Issued, name: str = "gateway") -> pki.Issued:
    return pki.issue(ca, name, dns=["localhost"], ips=["127.0.0.1"], server=True)


def mount(directory: Path, issued: pki.Issued, version: str) -> None:
    """Publish `issued` in `directory` as the kubelet updates a secret volume: atomically."""
    issued.write(directory / version, "tls")
    data = directory / "..data"
    if not data.exists():
        data.symlink_to(version)
        for name in ("tls.crt", "tls.key"):
            (directory / name).symlink_to(f"..data/{name}")
        return
    staged = directory / "..data_tmp"
    staged.symlink_to(version)
    os.rename(staged, data)


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ca = pki.make_ca("listener test CA")
    ca_file = tmp_path / "ca" / "ca.crt"
    ca_file.parent.mkdir()
    ca_file.write_bytes(ca.cert_pem)
    directory = tmp_path / "listener-tls"
    directory.mkdir()
    mount(directory, server_cert(ca), "..v1")
    return Certs(ca, ca_file, directory)


@pytest.fixture
async def tls_gateway(tmp_path: Path, certs: Certs) -> AsyncIterator[Gateway]:
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    tls = ListenerTls(str(certs.cert), str(certs.key))
    # The admin API over TLS too, with its own certificate from the same CA.
    admin_cert, admin_key = server_cert(certs.ca, "admin").write(tmp_path / "admin-tls", "tls")
    admin = TlsFiles(admin_cert, admin_key)
    async with running_gateway(
        tmp_path, registry, backend_port, listener_tls=tls, admin_tls=admin
    ) as running:
        yield running


def trusting(ca_file: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


async def initialize(url: str, context: ssl.SSLContext | bool) -> httpx.Response:
    async with httpx.AsyncClient(verify=context, timeout=10) as http:
        return await http.post(url, json=initialize_request(), headers=ACCEPT)


def presented_serial(port: int) -> int:
    """The serial of the certificate a new connection to the listener is shown."""
    return serial(ssl.get_server_certificate(("127.0.0.1", port), timeout=5))


async def test_mcp_sdk_over_https(tls_gateway: Gateway, certs: Certs) -> None:
    url = tls_gateway.url
    assert url.startswith("https://127.0.0.1:")
    http = httpx2.AsyncClient(verify=trusting(certs.ca_file), timeout=httpx2.Timeout(15, read=15))
    async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"listPets", "getPet", "createPet", "describePet"}
        result = await client.call_tool("listPets", {"tag": "dog"})
        assert not result.is_error
        assert json.loads(result.content[0].text) == [{"id": 1, "name": "Rex", "tag": "dog"}]


async def test_a_client_that_does_not_trust_the_ca_is_refused(tls_gateway: Gateway, certs: Certs) -> None:
    # The system's CAs did not sign the gateway's certificate: the handshake fails, nothing is sent.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await initialize(tls_gateway.url, True)
    other = pki.make_ca("another CA")
    other_file = certs.ca_file.parent / "other.crt"
    other_file.write_bytes(other.cert_pem)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await initialize(tls_gateway.url, trusting(other_file))
    # Plain HTTP on the TLS port gets no MCP answer.
    with pytest.raises(httpx.HTTPError):
        await initialize(tls_gateway.url.replace("https://", "http://"), False)
    assert (await initialize(tls_gateway.url, trusting(certs.ca_file))).status_code == 200


def negotiated(port: int, context: ssl.SSLContext) -> tuple[str | None, str | None]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.selected_alpn_protocol(), tls.version()


async def test_alpn_and_protocol_versions(tls_gateway: Gateway, certs: Certs) -> None:
    port = tls_gateway.stack.options.listen_port
    context = trusting(certs.ca_file)
    context.set_alpn_protocols(["h2", "http/1.1"])
    assert await asyncio.to_thread(negotiated, port, context) == ("h2", "TLSv1.3")
    context = trusting(certs.ca_file)
    context.set_alpn_protocols(["http/1.1"])
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await asyncio.to_thread(negotiated, port, context) == ("http/1.1", "TLSv1.2")


async def test_certificate_rotation_without_restart(tls_gateway: Gateway, certs: Certs) -> None:
    envoy = tls_gateway.stack.envoy
    assert envoy is not None
    port = tls_gateway.stack.options.listen_port
    first = serial(certs.cert.read_bytes())
    assert await asyncio.to_thread(presented_serial, port) == first
    listeners_before = envoy.stats("listener_manager.")
    # A connection open across the rotation keeps working (and keeps its certificate).
    async with httpx.AsyncClient(verify=trusting(certs.ca_file), timeout=10) as held:
        assert (
            await held.post(tls_gateway.url, json=initialize_request(), headers=ACCEPT)
        ).status_code == 200

        renewed = server_cert(certs.ca, "gateway renewed")
        mount(certs.mount, renewed, "..v2")

        async def rotated() -> bool:
            return await asyncio.to_thread(presented_serial, port) == serial(renewed.cert_pem)

        await eventually(rotated, 10, "a new connection is shown the renewed certificate")
        response = await held.post(tls_gateway.url, json=initialize_request(), headers=ACCEPT)
        assert response.status_code == 200
    # The MCP path works on a new connection, which verifies the new certificate.
    assert (await initialize(tls_gateway.url, trusting(certs.ca_file))).status_code == 200
    # No restart and no new listener: the same process, no listener added, modified or drained.
    listeners_after = envoy.stats("listener_manager.")
    for stat in (
        "listener_added",
        "listener_modified",
        "listener_removed",
        "total_filter_chains_draining",
        "total_listeners_active",
    ):
        assert listeners_after.get(f"listener_manager.{stat}") == listeners_before.get(
            f"listener_manager.{stat}"
        )


async def test_admin_api_over_tls_with_the_cli(tls_gateway: Gateway, certs: Certs) -> None:
    control_plane = tls_gateway.stack.control_plane
    assert control_plane is not None
    url = control_plane.admin_url
    assert url == f"https://127.0.0.1:{control_plane.status_port}"
    code, out, err = await mcpgw("get", "servers", "--admin", url, "--admin-tls-ca", str(certs.ca_file))
    assert (code, err) == (0, "") and "default/petstore" in out
    code, out, err = await mcpgw("get", "servers", "--admin", url)
    assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err and "Traceback" not in err
    async with httpx.AsyncClient(verify=trusting(certs.ca_file), timeout=10) as http:
        status = (await http.get(url + "/status")).json()
    # The node asked for the listener's secret over ADS and accepted it.
    (node,) = status["nodes"]
    assert node["node_id"] == "test-node"
    assert node["types"]["sds"]["version_acked"] == node["types"]["sds"]["version_sent"]
    assert node["types"]["sds"]["subscribed"] == 1 and node["types"]["sds"]["last_nack"] is None


async def test_client_certificates_when_a_ca_is_set(tmp_path: Path, certs: Certs) -> None:
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    tls = ListenerTls(str(certs.cert), str(certs.key), ca=str(certs.ca_file))
    client_dir = tmp_path / "client"
    trusted = pki.issue(certs.ca, "mcp-client", server=False, client=True).write(client_dir, "good")
    stranger = pki.issue(pki.make_ca("stranger CA"), "intruder", server=False, client=True)
    untrusted = stranger.write(client_dir, "bad")
    # Over Delta xDS: the secrets arrive by name there too.
    async with running_gateway(tmp_path, registry, backend_port, listener_tls=tls, xds_delta=True) as gateway:
        for context in (trusting(certs.ca_file), trusting(certs.ca_file, untrusted)):
            # TLS 1.3: the refusal (an alert) may arrive after the client finished its side of the
            # handshake, while httpx reads: then it surfaces as the ssl module's own error.
            with pytest.raises(
                (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)
            ):
                await initialize(gateway.url, context)
        response = await initialize(gateway.url, trusting(certs.ca_file, trusted))
        assert (
            response.status_code == 200
            and response.json()["result"]["serverInfo"]["name"] == "default/petstore"
        )
        # The SDK with a client certificate: a whole tool call.
        http = httpx2.AsyncClient(
            verify=trusting(certs.ca_file, trusted), timeout=httpx2.Timeout(15, read=15)
        )
        async with Client(streamable_http_client(gateway.url, http_client=http), mode="legacy") as client:
            result = await client.call_tool("getPet", {"id": 2, "fields": "name,tag"})
            assert result.structured_content == {"name": "Tom", "tag": "cat"}


async def test_an_operator_runs_serve_and_bootstrap_and_gets_https(tmp_path: Path, certs: Certs) -> None:
    """The two commands of a deployment, as subprocesses: `serve` with the TLS flags, `bootstrap`
    unchanged, and an Envoy started from its output serves HTTPS from the files on its node."""
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcpgw.cli", "demo-backend", "--port", str(backend_port), start_new_session=True
    )
    listen, xds, admin, plugins, broker, envoy_admin = free_ports(6)
    admin_cert, admin_key = server_cert(certs.ca, "admin").write(tmp_path / "admin-tls", "tls")
    # The control plane's output goes to a file: a pipe nobody reads could fill and stall it.
    with (tmp_path / "serve.log").open("wb") as serve_log:
        control_plane = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "mcpgw.cli", "serve", "-f", str(registry)),
            *(
                "--listen",
                f"127.0.0.1:{listen}",
                "--xds",
                f"127.0.0.1:{xds}",
                "--admin",
                f"127.0.0.1:{admin}",
            ),
            *("--plugins", f"127.0.0.1:{plugins}", "--broker", f"127.0.0.1:{broker}"),
            *("--listener-tls-cert", str(certs.cert), "--listener-tls-key", str(certs.key)),
            *("--admin-tls-cert", str(admin_cert), "--admin-tls-key", str(admin_key)),
            stdout=serve_log,
            stderr=serve_log,
            start_new_session=True,
        )
    envoy: EnvoyProcess | None = None
    try:
        boot = await mcpgw(
            *("bootstrap", "--node-id", "edge-1", "--xds", f"127.0.0.1:{xds}"),
            *("--admin", f"127.0.0.1:{envoy_admin}", "--broker", f"127.0.0.1:{broker}"),
        )
        assert boot[0] == 0, boot[2]
        url = f"https://127.0.0.1:{admin}/healthz"

        async def control_plane_up() -> bool:
            async with httpx.AsyncClient(verify=trusting(certs.ca_file), timeout=2) as http:
                return (await http.get(url)).status_code == 200

        await eventually(
            control_plane_up,
            60,
            "the control plane's admin API answers over https",
            ignore=(httpx.HTTPError,),
        )
        (tmp_path / "envoy").mkdir()
        envoy = EnvoyProcess(boot[1], admin_port=envoy_admin, workdir=tmp_path / "envoy")
        await envoy.start()
        await envoy.wait_ready(60, listeners=1)
        mcp = f"https://127.0.0.1:{listen}/mcp/default/petstore"
        response = await initialize(mcp, trusting(certs.ca_file))
        assert (
            response.status_code == 200
            and response.json()["result"]["serverInfo"]["name"] == "default/petstore"
        )
        log = (tmp_path / "serve.log").read_text()
        assert f"admin https://127.0.0.1:{admin}" in log and f"MCP listener https://127.0.0.1:{listen}" in log
    finally:
        if envoy is not None:
            await envoy.stop()
        for process in (control_plane, demo):
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
