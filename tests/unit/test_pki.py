"""The test CA makes certificates that a real TLS stack accepts for the right name and refuses otherwise."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from mcpgw.pki import Issued, issue, make_ca


def _handshake(tmp_path: Path, server_leaf: Issued, client_ca: Issued, hostname: str) -> None:
    """One TLS handshake over a loopback socket pair; raises ssl.SSLError when verification fails."""
    cert, key = server_leaf.write(tmp_path, "server")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cadata=client_ca.cert_pem.decode())
    left, right = socket.socketpair()
    left.settimeout(5)
    right.settimeout(5)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(right, server_side=True):
                pass
        except (ssl.SSLError, OSError) as error:
            errors.append(error)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(left, server_hostname=hostname):
            pass
    finally:
        thread.join(5)
        left.close()
        right.close()


def test_leaf_verifies_against_its_ca_for_its_name(tmp_path: Path) -> None:
    ca = make_ca()
    leaf = issue(ca, "backend", dns=["backend.test"], ips=["127.0.0.1"])
    _handshake(tmp_path, leaf, ca, "backend.test")


def test_leaf_refused_for_another_name(tmp_path: Path) -> None:
    ca = make_ca()
    leaf = issue(ca, "backend", dns=["backend.test"])
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(tmp_path, leaf, ca, "other.test")


def test_leaf_refused_by_another_ca(tmp_path: Path) -> None:
    ca, other = make_ca(), make_ca("another CA")
    leaf = issue(ca, "backend", dns=["backend.test"])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tmp_path, leaf, other, "backend.test")


def test_key_file_is_private(tmp_path: Path) -> None:
    _, key = make_ca().write(tmp_path, "ca")
    assert key.stat().st_mode & 0o777 == 0o600


def test_uri_san_and_usages() -> None:
    from cryptography import x509

    ca = make_ca()
    leaf = issue(ca, "node-a", uris=["spiffe://mcpgw/node/a"], server=False, client=True)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://mcpgw/node/a"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u._name for u in usages] == ["clientAuth"]
    with pytest.raises(ValueError):
        issue(ca, "nothing", server=False, client=False)
