"""Mutual TLS and node authorization on the ADS server, with real certificates from mcpgw.pki."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from mcpgw.pki import Issued, issue, make_ca
from mcpgw.xds.cache import SnapshotCache
from mcpgw.xds.server import AdsServer
from mcpgw.xds.tls import XdsConfigError, XdsTls, authorize, check_bind, node_identity
from mcpgw.xds.types import CLUSTER
from tests.unit.adsclient import AdsClient, names_of
from tests.unit.adsharness import QUIET, world

NODE, GROUP = "envoy-a", "group-a"


@dataclass
class Pki:
    ca: Issued
    dir: Path

    def client(self, cluster: str = GROUP, node_id: str = NODE, ca: Issued | None = None) -> Issued:
        return issue(
            ca or self.ca, node_id, uris=[node_identity(cluster, node_id)], server=False, client=True
        )

    def credentials(self, leaf: Issued | None, ca: Issued | None = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=(ca or self.ca).cert_pem,
            private_key=leaf.key_pem if leaf else None,
            certificate_chain=leaf.cert_pem if leaf else None,
        )

    def install_server(self, ca: Issued) -> XdsTls:
        """Write a server certificate for 127.0.0.1 from `ca`, and `ca` as the client CA, atomically."""
        leaf = issue(ca, "control plane", dns=["localhost"], ips=["127.0.0.1"])
        staged = self.dir / "staged"
        leaf.write(staged, "server")
        (staged / "ca.crt").write_bytes(ca.cert_pem)
        for name in ("server.crt", "server.key", "ca.crt"):
            os.replace(staged / name, self.dir / name)  # new inodes, as a rotation makes them
        return XdsTls(self.dir / "server.crt", self.dir / "server.key", self.dir / "ca.crt")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(make_ca(), tmp_path)


@contextlib.asynccontextmanager
async def tls_server(pki: Pki) -> AsyncIterator[tuple[AdsServer, str]]:
    cache = SnapshotCache()
    cache.set_resources(world())
    server = AdsServer(cache, tls=pki.install_server(pki.ca))
    port = await server.start(port=0)
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(0.5)


async def _first_response_or_status(client: AdsClient) -> object:
    """The names in the first response, or the status the stream ended with (a refused
    handshake fails the request's write already)."""
    try:
        await client.subscribe(CLUSTER)
        return names_of(await client.recv(timeout=5))
    except grpc.aio.AioRpcError as error:
        return error.code()
    except EOFError:
        return client.closed_with


async def test_node_with_its_certificate_gets_configuration(pki: Pki) -> None:
    async with tls_server(pki) as (_, target):
        client = AdsClient(target, NODE, GROUP, credentials=pki.credentials(pki.client()))
        async with client:
            assert await _first_response_or_status(client) == ["b1", "b2"]


@pytest.mark.parametrize("who", ["no certificate", "another CA", "another node", "another group"])
async def test_wrong_client_gets_nothing(pki: Pki, who: str) -> None:
    other_ca = make_ca("another CA")
    leaf = {
        "no certificate": None,
        "another CA": pki.client(ca=other_ca),
        "another node": pki.client(node_id="envoy-b"),
        "another group": pki.client(cluster="group-b"),
    }[who]
    async with tls_server(pki) as (server, target):
        # Every one of them claims to be NODE in GROUP.
        client = AdsClient(target, NODE, GROUP, credentials=pki.credentials(leaf))
        async with client:
            got = await _first_response_or_status(client)
        refused_in_handshake = who in ("no certificate", "another CA")
        expected = grpc.StatusCode.UNAVAILABLE if refused_in_handshake else grpc.StatusCode.PERMISSION_DENIED
        assert got == expected, got
        assert server.status() == []  # no stream ever opened for the claimed node


async def test_plain_client_cannot_talk_to_tls_server(pki: Pki) -> None:
    async with tls_server(pki) as (_, target), AdsClient(target, NODE, GROUP) as client:
        assert await _first_response_or_status(client) == grpc.StatusCode.UNAVAILABLE


def _served_certificate(target: str, client: Issued, ca: Issued, tmp: Path) -> bytes:
    """The certificate a new TLS handshake with `target` presents (DER)."""
    cert, key = client.write(tmp, "probe")
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


async def test_certificates_reload_without_restart(pki: Pki, tmp_path: Path) -> None:
    from cryptography import x509

    async with tls_server(pki) as (server, target):
        old = pki.client()
        before = x509.load_der_x509_certificate(_served_certificate(target, old, pki.ca, tmp_path / "p1"))
        # Rotate everything to a new CA: server certificate, key, and the CA clients must chain to.
        new_ca = make_ca("rotated CA")
        pki.install_server(new_ca)
        new = pki.client(ca=new_ca)
        after = x509.load_der_x509_certificate(_served_certificate(target, new, new_ca, tmp_path / "p2"))
        assert after.issuer != before.issuer and after.serial_number != before.serial_number
        assert server.credentials is not None and server.credentials.loads == 2
        # A new stream with a certificate from the old CA is refused; the new CA's works.
        async with AdsClient(target, NODE, GROUP, credentials=pki.credentials(old)) as client:
            assert await _first_response_or_status(client) == grpc.StatusCode.UNAVAILABLE
        async with AdsClient(target, NODE, GROUP, credentials=pki.credentials(new, new_ca)) as client:
            assert await _first_response_or_status(client) == ["b1", "b2"]


async def test_half_rotated_files_keep_the_old_certificate(pki: Pki, tmp_path: Path) -> None:
    async with tls_server(pki) as (server, target):
        other = issue(make_ca("x"), "control plane", ips=["127.0.0.1"])
        (tmp_path / "server.crt").write_bytes(other.cert_pem)  # the key does not match it yet
        client = pki.client()
        async with AdsClient(target, NODE, GROUP, credentials=pki.credentials(client)) as ads:
            assert await _first_response_or_status(ads) == ["b1", "b2"]
        assert server.credentials is not None and server.credentials.loads == 1


async def test_stream_quiet_after_refusal(pki: Pki) -> None:
    async with tls_server(pki) as (_, target):
        client = AdsClient(target, "intruder", GROUP, credentials=pki.credentials(pki.client()))
        async with client:
            await client.subscribe(CLUSTER)
            await client.expect_silence(QUIET)
            assert client.closed_with == grpc.StatusCode.PERMISSION_DENIED


def test_identity_rule() -> None:
    ca = make_ca()
    leaf = issue(ca, "n", uris=[node_identity("edge", "envoy/1")], server=False, client=True)
    assert node_identity("edge", "envoy/1") == "spiffe://mcpgw/edge/envoy%2F1"
    assert authorize(leaf.cert_pem, "edge", "envoy/1") is None
    assert "needs a certificate for spiffe://mcpgw/edge2/envoy%2F1" in (
        authorize(leaf.cert_pem, "edge2", "envoy/1") or ""
    )
    bare = issue(ca, "n", dns=["envoy-1"], server=False, client=True)
    assert "one spiffe:// URI SAN" in (authorize(bare.cert_pem, "edge", "envoy-1") or "")
    assert authorize(None, "edge", "envoy-1") == "no client certificate"


def test_non_loopback_xds_needs_tls(pki: Pki) -> None:
    tls = pki.install_server(pki.ca)
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", tls)
    with pytest.raises(XdsConfigError, match=r"refusing to serve xDS on 0\.0\.0\.0 without TLS"):
        check_bind("0.0.0.0", None)
    with pytest.raises(XdsConfigError, match="refusing"):
        check_bind("cp.example.com", None)
