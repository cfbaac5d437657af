"""TLS on the MCP listener as the control plane sends it: a TLS context on the listener and SDS
secrets that name files on the Envoy node (`mcpgw.listenertls`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf import json_format

from mcpgw.listenertls import CA_SECRET, CERT_SECRET, ListenerTls
from mcpgw.translate.envoy import LISTENER_NAME, Translator, translate
from mcpgw.xds import types
from mcpgw.xds.cache import SnapshotCache
from tests.unit.test_registry import minimal
from tests.unit.test_translate import SETTINGS, serialized, snapshot_of

TLS = ListenerTls("/etc/mcpgw/tls/tls.crt", "/etc/mcpgw/tls/tls.key")
ADS = {"ads": {}, "resourceApiVersion": "V3"}


def tls_context(resources: dict[str, Any]) -> dict[str, Any]:
    listener = json_format.MessageToDict(resources[types.LISTENER][LISTENER_NAME])
    (chain,) = listener["filterChains"]
    assert chain["transportSocket"]["name"] == "envoy.transport_sockets.tls"
    context: dict[str, Any] = chain["transportSocket"]["typedConfig"]
    return context


def secrets(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: json_format.MessageToDict(m) for name, m in resources[types.SECRET].items()}


def test_plain_http_has_no_transport_socket_and_no_secrets() -> None:
    resources = translate(snapshot_of(minimal()), SETTINGS)
    listener = json_format.MessageToDict(resources[types.LISTENER][LISTENER_NAME])
    assert "transportSocket" not in listener["filterChains"][0]
    assert resources[types.SECRET] == {}


def test_https_listener_reads_its_certificate_through_sds_over_ads() -> None:
    resources = translate(snapshot_of(minimal()), dataclasses.replace(SETTINGS, listener_tls=TLS))
    context = tls_context(resources)
    common = context["commonTlsContext"]
    assert common["tlsParams"] == {"tlsMinimumProtocolVersion": "TLSv1_2"}
    assert common["alpnProtocols"] == ["h2", "http/1.1"]
    assert common["tlsCertificateSdsSecretConfigs"] == [{"name": CERT_SECRET, "sdsConfig": ADS}]
    # No client certificates asked for without a CA.
    assert "validationContextSdsSecretConfig" not in common and "requireClientCertificate" not in context
    # The secret holds paths only; one watched directory (a Kubernetes mount) for the pair.
    assert secrets(resources) == {
        CERT_SECRET: {
            "name": CERT_SECRET,
            "tlsCertificate": {
                "certificateChain": {"filename": "/etc/mcpgw/tls/tls.crt"},
                "privateKey": {"filename": "/etc/mcpgw/tls/tls.key"},
                "watchedDirectory": {"path": "/etc/mcpgw/tls"},
            },
        }
    }


def test_a_client_ca_requires_client_certificates() -> None:
    tls = ListenerTls("/certs/tls.crt", "/keys/tls.key", ca="/clients/ca.crt")
    resources = translate(snapshot_of(minimal()), dataclasses.replace(SETTINGS, listener_tls=tls))
    context = tls_context(resources)
    assert context["requireClientCertificate"] is True
    assert context["commonTlsContext"]["validationContextSdsSecretConfig"] == {
        "name": CA_SECRET,
        "sdsConfig": ADS,
    }
    found = secrets(resources)
    # Certificate and key in different directories: Envoy watches each file's own directory.
    assert "watchedDirectory" not in found[CERT_SECRET]["tlsCertificate"]
    assert found[CA_SECRET]["validationContext"] == {
        "trustedCa": {"filename": "/clients/ca.crt"},
        "watchedDirectory": {"path": "/clients"},
    }


def test_paths_must_be_absolute() -> None:
    assert ListenerTls("tls.crt", "/k", ca="ca.pem").problems() == [
        "--listener-tls-cert 'tls.crt': must be an absolute path on the Envoy node",
        "--listener-tls-ca 'ca.pem': must be an absolute path on the Envoy node",
    ]
    assert TLS.problems() == []


def test_incremental_translation_and_the_cache_carry_the_secrets() -> None:
    settings = dataclasses.replace(SETTINGS, listener_tls=TLS)
    translator = Translator(settings)
    snapshot = snapshot_of(minimal(), minimal(name="two"))
    translator.translate(snapshot)
    edited = minimal()
    edited["tools"][0]["description"] = "changed"
    snapshot = snapshot_of(edited, minimal(name="two"))
    assert serialized(translator.translate(snapshot)) == serialized(translate(snapshot, settings))
    cache = SnapshotCache()
    assert types.SECRET in cache.set_resources(translator.last or {}, None)
    assert set(cache.snapshot.get(types.SECRET).resources) == {CERT_SECRET}


def test_listener_secrets_live_beside_injected_credentials() -> None:
    """Both kinds of SDS secret share the type; a server's credential coming and going never
    touches the listener's."""
    from mcpgw.registry.secrets import resolve
    from tests.unit.test_injected_credentials import rest

    settings = dataclasses.replace(SETTINGS, listener_tls=TLS)
    translator = Translator(settings)
    with_credential = snapshot_of(rest("svc"), minimal(name="two"))
    names = set(translator.translate(with_credential, resolve(with_credential))[types.SECRET])
    assert names == {CERT_SECRET, "mcpgw/default/svc/credential"}
    without = snapshot_of(minimal(name="two"))
    assert set(translator.translate(without, resolve(without))[types.SECRET]) == {CERT_SECRET}
    assert serialized(translator.last or {}) == serialized(translate(without, settings))
