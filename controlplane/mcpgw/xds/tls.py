"""Mutual TLS for the ADS server, and the rule that ties a node id to its certificate.

Every Envoy presents a client certificate signed by the configured CA; the certificate names
the node as a SPIFFE ID, `spiffe://mcpgw/<node.cluster>/<node.id>` (each part percent-encoded),
and the first DiscoveryRequest of a stream must present exactly that node. `node.cluster` is
the node's gateway group: it decides which registry servers (and so which credentials) the
node receives (`mcpgw.translate.groups`).

The certificate files are re-read when they change (inode, size or mtime), without restart:
gRPC asks `fetch` before each new handshake, and established streams keep the certificate
they were opened with.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from mcpgw.admin.auth import is_loopback
from mcpgw.log import get_logger

if TYPE_CHECKING:
    import grpc

# grpc and cryptography are imported where used: the CLI imports this module for its checks,
# and `mcpgw bootstrap` or `validate` should not pay for them.

log = get_logger(__name__)

TRUST_DOMAIN = "mcpgw"
_SPIFFE = "spiffe://"


class XdsConfigError(ValueError):
    """The xDS server cannot start safely with this configuration."""


def node_identity(cluster: str, node_id: str) -> str:
    """The SPIFFE ID a node's certificate must carry: `spiffe://mcpgw/<cluster>/<id>`."""
    return f"{_SPIFFE}{TRUST_DOMAIN}/{quote(cluster, safe='')}/{quote(node_id, safe='')}"


def certificate_identities(cert_pem: bytes) -> list[str]:
    """The `spiffe://` URI SANs of a PEM certificate (SPIFFE allows one; we report all)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in sans.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(_SPIFFE)]


def authorize(cert_pem: bytes | None, cluster: str, node_id: str) -> str | None:
    """None if the certificate names exactly this node, else why not (for the log and the peer)."""
    if cert_pem is None:
        return "no client certificate"
    found = certificate_identities(cert_pem)
    wanted = node_identity(cluster, node_id)
    if len(found) != 1:
        return f"the certificate must carry one spiffe:// URI SAN ({wanted}), it has {len(found)}"
    if found[0] != wanted:
        return f"node {cluster}/{node_id} needs a certificate for {wanted}, got {found[0]}"
    return None


@dataclass(frozen=True)
class XdsTls:
    """The ADS server's certificate and key, and the CA its clients' certificates must chain to."""

    cert: Path
    key: Path
    ca: Path

    def check(self) -> None:
        """Raise `XdsConfigError` if the files cannot serve TLS (missing, unreadable, mismatched)."""
        try:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert, self.key)
            context.load_verify_locations(cafile=self.ca)
        except (OSError, ssl.SSLError) as error:
            raise XdsConfigError(
                f"xDS TLS files unusable (cert {self.cert}, key {self.key}, CA {self.ca}): {error}"
            ) from error


def check_bind(host: str, tls: XdsTls | None) -> None:
    """Refuse to serve xDS beyond loopback without mutual TLS: every node's secrets travel on it."""
    if tls is None and not is_loopback(host):
        raise XdsConfigError(
            f"refusing to serve xDS on {host} without TLS: it carries every credential; "
            "give --xds-tls-cert, --xds-tls-key and --xds-tls-ca, or listen on 127.0.0.1"
        )


class ReloadingCredentials:
    """gRPC server credentials whose certificate, key and CA are re-read when their files change."""

    def __init__(self, tls: XdsTls) -> None:
        self.tls = tls
        self._stamp = self._stat()
        self._initial = self._load()
        self.loads = 1  # how many times the files were read (for tests and status)

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in (self.tls.cert, self.tls.key, self.tls.ca):
            st = path.stat()  # follows symlinks: a Kubernetes `..data` swap changes the target
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        import grpc

        return grpc.ssl_server_certificate_configuration(
            [(self.tls.key.read_bytes(), self.tls.cert.read_bytes())],
            root_certificates=self.tls.ca.read_bytes(),
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before a handshake: new files, or None to keep the current ones."""
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return None
            # Files caught in the middle of a rotation (a new cert beside the old key) would fail
            # every handshake: check the pair first and keep the old one until both are in place.
            self.tls.check()
            config = self._load()
        except (OSError, XdsConfigError) as error:
            log.warning("xds_tls_reload_failed", error=str(error))
            return None
        self._stamp = stamp
        self.loads += 1
        log.info("xds_tls_reloaded", cert=str(self.tls.cert))
        return config

    def server_credentials(self) -> grpc.ServerCredentials:
        import grpc

        return grpc.dynamic_ssl_server_credentials(
            self._initial, self.fetch, require_client_authentication=True
        )
