"""TLS toward `scheme: https` backends: the `backend.tls` block and the rules every client follows.

One rule set, whoever connects (Envoy's backend clusters, built in `translate/envoy.py`, or the
session broker's bridge to HTTP+SSE upstreams, through `ClientTls`):

- verified by default: the certificate chains to the system CAs (or to `tls.ca` instead), and
  carries `verify_name` (the `tls.serverName`, else `backend.host`, else the endpoint's own
  name or address) as a subject alternative name; SNI sends that name;
- `tls.clientCertificate` + `tls.clientKey` answer a backend that asks for a client certificate
  (Envoy only: the bridge never receives a key, so `transport: sse` refuses them);
- `tls.insecureSkipVerify: true` turns verification off, and validation warns about it.

PEM values (inline, `{file:}` or `{env:}`, read through the credential policy like any other
credential) are parsed here: a value Envoy would refuse is refused with its field and reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mcpgw.registry.model import Backend, BackendTls, Endpoint, Secret, SecretFormat

# Debian's (and Ubuntu's, Alpine's) bundle of the system CAs, on the Envoy node. Envoy 1.40
# refuses `system_root_certs` with SAN matching on Linux ("SAN-based verification of peer
# certificates without trusted CA is insecure and not allowed"), so the bundle is named as a
# file: `mcpgw serve|up --backend-tls-ca`, by default the first of these that exists here.
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
_SYSTEM_CA_FILES = (
    SYSTEM_CA_FILE,
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, some others
)


def default_system_ca_file() -> str:
    """The system CA bundle of this machine (Envoy nodes are expected to match it)."""
    return next((path for path in _SYSTEM_CA_FILES if os.path.isfile(path)), SYSTEM_CA_FILE)


TLS_FIELDS = {"ca", "serverName", "clientCertificate", "clientKey", "insecureSkipVerify"}
# Envoy's BoringSSL serves these key types; others fail the cluster at Envoy, not here.
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1)
# Starts the fragment of an HTTP+SSE upstream's URL that carries its TLS settings to the bridge.
BRIDGE_FRAGMENT = "mcpgw-tls="
SKIP_VERIFY_WARNING = (
    "TLS verification is off: any certificate is accepted, so whoever can intercept the "
    "connection receives the backend's credentials; set ca instead"
)


def pem_problem(fmt: SecretFormat, value: str) -> str | None:
    """Why `value` is not what a `backend.tls` field of format `fmt` needs (None: fine)."""
    data = value.encode("utf-8", "surrogateescape")
    if fmt == "certificates":
        if b"-----BEGIN CERTIFICATE-----" not in data:
            return "is not PEM: no '-----BEGIN CERTIFICATE-----' block"
        try:
            x509.load_pem_x509_certificates(data)
        except ValueError as error:
            return f"is not a valid PEM certificate bundle: {error}"
        return None
    if fmt == "private-key":
        if b"PRIVATE KEY-----" not in data:
            return "is not PEM: no '-----BEGIN … PRIVATE KEY-----' block"
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            return "is an encrypted private key: Envoy needs it unencrypted (protect the file instead)"
        except (ValueError, Exception) as error:  # cryptography raises several types for bad keys
            return f"is not a valid PEM private key: {error}"
        if isinstance(key, rsa.RSAPrivateKey):
            return None if key.key_size >= 2048 else f"is an RSA key of {key.key_size} bits (at least 2048)"
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, _EC_CURVES):
            return None
        return "is neither an RSA key nor an ECDSA key on P-256 or P-384"
    return None


def pair_problem(certificate: str, key: str) -> str | None:
    """Why `key` cannot sign for the first certificate of `certificate` (None: it is its key)."""
    try:
        leaf = x509.load_pem_x509_certificates(certificate.encode())[0]
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError) as error:
        return str(error)
    mine = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return None if mine == theirs else "clientKey is not the key of clientCertificate's first certificate"


def verify_name(backend: Backend, endpoint: Endpoint) -> str:
    """The name `endpoint`'s certificate must carry, and SNI sends (unless it is an address)."""
    if backend.tls is not None and backend.tls.server_name:
        return backend.tls.server_name
    return backend.host_header or endpoint.host


@dataclass(frozen=True)
class ClientTls:
    """What a Python client needs to follow a backend's TLS settings: `ssl_context()`, and
    `server_name` to pass as `server_hostname` (None: the URL's host)."""

    ca: str | None = None
    server_name: str | None = None
    skip_verify: bool = False

    @classmethod
    def of(cls, backend: Backend, secrets: Mapping[Secret, str]) -> ClientTls:
        tls = backend.tls or BackendTls()
        return cls(
            ca=secrets[tls.ca] if tls.ca is not None else None,
            server_name=tls.server_name or backend.host_header,
            skip_verify=tls.insecure_skip_verify,
        )

    def ssl_context(self, system_ca_file: str | None = None) -> ssl.SSLContext:
        """Verification as Envoy's cluster does it: the chain (to `ca`, else the system CAs, else
        Python's defaults) and the name; nothing with `skip_verify`."""
        if self.skip_verify:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if self.ca is not None:
            return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca)
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=system_ca_file)

    def fragment(self) -> str:
        """These settings as a URL fragment (`mcpgw-tls=…`; "" for the defaults).

        The session broker's bridge learns an HTTP+SSE upstream's URL from the filter, never
        the registry; a fragment travels with the URL and HTTP never sends it to the server.
        It holds public data only: a client key never goes this way.
        """
        data = {
            k: v for k, v in (("ca", self.ca), ("sni", self.server_name), ("skip", self.skip_verify)) if v
        }
        if not data:
            return ""
        encoded = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()
        return BRIDGE_FRAGMENT + encoded.rstrip("=")

    @classmethod
    def from_fragment(cls, fragment: str) -> ClientTls | None:
        """The settings `fragment()` wrote; None for no fragment; ValueError when malformed."""
        if not fragment:
            return None
        if not fragment.startswith(BRIDGE_FRAGMENT):
            raise ValueError(f"the fragment is not {BRIDGE_FRAGMENT}…")
        text = fragment[len(BRIDGE_FRAGMENT) :]
        try:
            data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (ValueError, binascii.Error) as error:
            raise ValueError(f"malformed TLS settings: {error}") from None
        if not isinstance(data, dict) or not data.keys() <= {"ca", "sni", "skip"}:
            raise ValueError("malformed TLS settings")
        ca, sni, skip = data.get("ca"), data.get("sni"), data.get("skip", False)
        if not isinstance(ca, str | None) or not isinstance(sni, str | None) or not isinstance(skip, bool):
            raise ValueError("malformed TLS settings")
        return cls(ca=ca, server_name=sni, skip_verify=skip)
