"""TLS on Envoy's MCP listener: certificate files on the Envoy node, reloaded when they change.

The control plane sends, over ADS, a `DownstreamTlsContext` on the listener and two SDS
`Secret` resources that hold only the *paths* of PEM files on the Envoy node (never key
material). Envoy reads the files itself and, because the secrets came from SDS, watches them:
when a file is replaced by a rename in its directory (`mv`, Kubernetes' `..data` symlink swap,
cert-manager, `mcpgw.pki`'s writers), every new connection gets the new certificate, without a
restart and without draining the listener. Connections already open keep the certificate
they were accepted with. A file rewritten in place (no rename) is not noticed: Envoy watches
for moves only, so an update is always atomic.

Why SDS over ADS rather than an SDS file (`path_config_source`) rendered by `mcpgw bootstrap`:
the result on the node is the same (Envoy's `SdsApi` watches the files a secret references,
whichever way the secret arrived), but then `serve` and `bootstrap` would have to agree on
where that file lies and on whether client certificates are asked for. This way one command
(`mcpgw serve --listener-tls-cert/--listener-tls-key[/--listener-tls-ca]`) says everything
and the bootstrap does not change; the certificate files only have to exist, at those paths,
on every Envoy node (a Kubernetes secret mounted at the same path in every pod).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

CERT_SECRET = "mcpgw-listener-cert"
CA_SECRET = "mcpgw-listener-ca"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_ADS = {"ads": {}, "resource_api_version": "V3"}


@dataclass(frozen=True)
class ListenerTls:
    """PEM files on the Envoy node (absolute paths: Envoy resolves relative ones against its own
    working directory, which the control plane cannot know)."""

    cert: str
    key: str
    # The CA that signs client certificates; set, every client must present one it signed.
    ca: str | None = None

    def problems(self) -> list[str]:
        """What is wrong with the paths themselves (their files are on another machine)."""
        found = []
        for flag, path in (("cert", self.cert), ("key", self.key), ("ca", self.ca)):
            if path is not None and not posixpath.isabs(path):
                found.append(f"--listener-tls-{flag} {path!r}: must be an absolute path on the Envoy node")
        return found


def transport_socket(tls: ListenerTls) -> dict[str, Any]:
    """The listener filter chain's TLS transport socket (JSON form of the proto)."""
    common: dict[str, Any] = {
        # TLS 1.0/1.1 are off; Envoy's default maximum is TLS 1.3.
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        # The HTTP connection manager's codec is AUTO: it speaks whichever of the two is chosen.
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_certificate_sds_secret_configs": [{"name": CERT_SECRET, "sds_config": _ADS}],
    }
    context: dict[str, Any] = {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": common}
    if tls.ca is not None:
        common["validation_context_sds_secret_config"] = {"name": CA_SECRET, "sds_config": _ADS}
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def secrets(tls: ListenerTls) -> dict[str, dict[str, Any]]:
    """The SDS secrets the transport socket names, by name (JSON form of `Secret`)."""
    certificate: dict[str, Any] = {
        "certificate_chain": {"filename": tls.cert},
        "private_key": {"filename": tls.key},
    }
    directory = posixpath.dirname(tls.cert)
    if directory == posixpath.dirname(tls.key):
        # One watch for both files (Kubernetes swaps the directory's `..data` link): Envoy then
        # reads the pair together and checks that neither changed in between.
        certificate["watched_directory"] = {"path": directory}
    found = {CERT_SECRET: {"name": CERT_SECRET, "tls_certificate": certificate}}
    if tls.ca is not None:
        found[CA_SECRET] = {
            "name": CA_SECRET,
            "validation_context": {
                "trusted_ca": {"filename": tls.ca},
                "watched_directory": {"path": posixpath.dirname(tls.ca)},
            },
        }
    return found
