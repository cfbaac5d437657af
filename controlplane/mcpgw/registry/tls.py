"""TLS toward `scheme: https` backends: the `backend.tls` block and the rules every client follows.

One rule set, whoever connects (Envoy's backend clusters, built in `translate/envoy.py`, or a
Python client through `ssl_context`):

- verified by default: the certificate chains to the system CAs (or to `tls.ca` instead), and
  carries `verify_name` (the `tls.serverName`, else `backend.host`, else the endpoint's own
  name or address) as a subject alternative name; SNI sends that name;
- `tls.clientCertificate` + `tls.clientKey` answer a backend that asks for a client certificate;
- `tls.insecureSkipVerify: true` turns verification off, and validation warns about it.

PEM values (inline, `{file:}` or `{env:}`, read through the credential policy like any other
credential) are parsed here: a value Envoy would refuse is refused with its field and reason.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping

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


def ssl_context(
    backend: Backend, secrets: Mapping[Secret, str], system_ca_file: str | None = None
) -> ssl.SSLContext:
    """A client `SSLContext` for `backend` that follows the same rules as its Envoy cluster.

    Connect with `server_hostname=verify_name(backend, endpoint)`. `system_ca_file` None: the
    Python defaults (`SSL_CERT_FILE`, OpenSSL's paths), which are the system CAs.
    """
    tls = backend.tls or BackendTls()
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls.ca is not None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=secrets[tls.ca])
    elif system_ca_file is not None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=system_ca_file)
    if tls.client_certificate is not None and tls.client_key is not None:
        # `load_cert_chain` reads files only; the values may be inline or from a variable.
        with tempfile.TemporaryDirectory() as folder:
            chain, key = os.path.join(folder, "chain.pem"), os.path.join(folder, "key.pem")
            with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as out:
                out.write(secrets[tls.client_key])
            with open(chain, "w") as out:
                out.write(secrets[tls.client_certificate])
            context.load_cert_chain(chain, key)
    return context
