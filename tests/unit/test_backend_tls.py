"""`backend.tls`: validation (file, field path, reason; the skip-verify warning), the PEM checks
of values read from files, and the `UpstreamTlsContext` every https backend cluster gets."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from mcpgw import cli, pki
from mcpgw.broker.bridge import BridgeError, upstream_target
from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.reader import Invalid
from mcpgw.registry.secrets import UNAVAILABLE, resolve
from mcpgw.registry.tls import SKIP_VERIFY_WARNING, ClientTls, default_system_ca_file, verify_name
from mcpgw.registry.validate import parse_server
from mcpgw.translate import pgv
from mcpgw.translate.envoy import Translator, translate
from mcpgw.translate.filterconfig import sse_url
from mcpgw.xds import types
from tests.unit.test_registry import minimal, problems_of
from tests.unit.test_translate import SETTINGS

CA = pki.make_ca("backend CA")
LEAF = pki.issue(CA, "api.internal", dns=["api.internal"], client=True)
OTHER = pki.issue(CA, "other", dns=["other.internal"], client=True)


def https(tls: dict[str, Any] | None = None, **backend: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"scheme": "https", "endpoints": ["api.internal:443"], **backend}
    if tls is not None:
        data["tls"] = tls
    return minimal(backend=data)


def upstream_tls(document: dict[str, Any], cluster: str = "mcpgw/default/svc", **kw: Any) -> Any:
    server = parse_server(document, "f.yaml")
    snapshot = RegistrySnapshot(servers=(server,))
    resources = translate(snapshot, kw.pop("settings", SETTINGS), resolve(snapshot))
    context = tls_pb2.UpstreamTlsContext()
    resources[types.CLUSTER][cluster].transport_socket.typed_config.Unpack(context)
    return context


# --- validation --------------------------------------------------------------------------


def test_tls_on_a_plain_http_backend_is_an_error() -> None:
    document = minimal(backend={"endpoints": ["127.0.0.1:80"], "tls": {"serverName": "api.internal"}})
    assert problems_of(document) == [
        ("backend.tls", "only for scheme: https (a plain-http backend has no TLS to configure)")
    ]


def test_pem_parse_errors_name_the_field_and_reason() -> None:
    lines = CA.cert_pem.decode().splitlines()
    broken = "\n".join([lines[0], *lines[1:3], lines[-1]])  # a certificate cut short
    problems = dict(
        problems_of(https({"ca": "not a certificate", "clientCertificate": broken, "clientKey": "x"}))
    )
    assert problems["backend.tls.ca"] == "is not PEM: no '-----BEGIN CERTIFICATE-----' block"
    assert problems["backend.tls.clientCertificate"].startswith("is not a valid PEM certificate bundle: ")
    assert problems["backend.tls.clientKey"] == "is not PEM: no '-----BEGIN … PRIVATE KEY-----' block"


def test_a_certificate_needs_its_key_and_the_key_must_match() -> None:
    only_cert = https({"clientCertificate": LEAF.cert_pem.decode()})
    assert problems_of(only_cert) == [
        ("backend.tls.clientKey", "is required with clientCertificate (a client certificate and its key)")
    ]
    mismatched = https({"clientCertificate": LEAF.cert_pem.decode(), "clientKey": OTHER.key_pem.decode()})
    assert problems_of(mismatched) == [
        ("backend.tls.clientKey", "clientKey is not the key of clientCertificate's first certificate")
    ]


def test_an_encrypted_or_weak_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass"),
    ).decode()
    document = https({"clientCertificate": LEAF.cert_pem.decode(), "clientKey": encrypted})
    assert problems_of(document) == [
        (
            "backend.tls.clientKey",
            "is an encrypted private key: Envoy needs it unencrypted (protect the file instead)",
        )
    ]


def test_skip_verify_is_valid_with_a_warning_and_excludes_a_ca() -> None:
    server = parse_server(https({"insecureSkipVerify": True}), "f.yaml")
    assert server.warnings == (f"backend.tls.insecureSkipVerify: {SKIP_VERIFY_WARNING}",)
    assert parse_server(https(), "f.yaml").warnings == ()
    both = https({"insecureSkipVerify": True, "ca": CA.cert_pem.decode()})
    assert problems_of(both) == [
        ("backend.tls.ca", "is never used with insecureSkipVerify: true (remove one of them)")
    ]


def test_unknown_fields_bad_names_and_types() -> None:
    problems = dict(problems_of(https({"serverName": "bad name", "insecureSkipVerify": "yes", "sni": "x"})))
    assert problems["backend.tls.serverName"] == "'bad name' is not a DNS name or IP address"
    assert problems["backend.tls.insecureSkipVerify"] == "must be true or false, got a string"
    assert problems["backend.tls.sni"].startswith("unknown field (allowed: ca, clientCertificate")


def test_endpoints_with_different_names_need_one_name_to_verify() -> None:
    document = https(endpoints=["a.internal:443", "b.internal:443"])
    assert problems_of(document) == [
        (
            "backend.endpoints",
            "https endpoints with different names: set backend.host or backend.tls.serverName to "
            "the name their certificates carry (one name is verified for all of them)",
        )
    ]
    parse_server(https(endpoints=["a.internal:443", "b.internal:443"], host="api.internal"))
    parse_server(https({"serverName": "api.internal"}, endpoints=["a.internal:443", "b.internal:443"]))


def sse_document(tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "McpServer",
        "name": "up",
        "type": "mcp",
        "transport": "sse",
        "backend": {"scheme": "https", "endpoints": ["10.0.0.9:8443"], "tls": tls},
    }


def test_an_sse_upstream_takes_no_client_certificate() -> None:
    document = sse_document({"clientCertificate": LEAF.cert_pem.decode(), "clientKey": LEAF.key_pem.decode()})
    reason = (
        "not for transport: sse: the session broker connects to the upstream itself and holds no "
        "client certificate (use transport: streamable-http for mTLS)"
    )
    assert problems_of(document) == [
        ("backend.tls.clientCertificate", reason),
        ("backend.tls.clientKey", reason),
    ]


def test_an_sse_upstream_url_carries_its_tls_settings_to_the_bridge() -> None:
    server = parse_server(sse_document({"ca": CA.cert_pem.decode(), "serverName": "mcp.internal"}))
    snapshot = RegistrySnapshot(servers=(server,))
    url = sse_url(server, server.backend.endpoints[0], resolve(snapshot))
    assert url.startswith("https://10.0.0.9:8443/sse#mcpgw-tls=")
    target, tls = upstream_target(url)
    assert str(target) == "https://10.0.0.9:8443/sse"
    assert tls == ClientTls(ca=CA.cert_pem.decode(), server_name="mcp.internal")
    assert tls.ssl_context().verify_mode == ssl.CERT_REQUIRED
    # The defaults need no fragment; a plain URL has no TLS settings.
    plain = parse_server(sse_document({}))
    assert sse_url(plain, plain.backend.endpoints[0], {}) == "https://10.0.0.9:8443/sse"
    assert upstream_target("https://10.0.0.9:8443/sse")[1] is None
    skip = parse_server(sse_document({"insecureSkipVerify": True}))
    _, skipped = upstream_target(sse_url(skip, skip.backend.endpoints[0], {}))
    assert skipped is not None and skipped.ssl_context().verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    "url",
    ["https://h:1/sse#other", "https://h:1/sse#mcpgw-tls=!!", "http://h:1/sse#mcpgw-tls=eyJza2lwIjp0cnVlfQ"],
)
def test_the_bridge_refuses_malformed_tls_settings(url: str) -> None:
    with pytest.raises(BridgeError) as error:
        upstream_target(url)
    assert error.value.status == 400


def test_validate_command_prints_the_warning_and_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "svc.yaml").write_text(yaml.safe_dump(https({"insecureSkipVerify": True})))
    assert cli.main(["validate", "-f", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'svc.yaml'}: backend.tls.insecureSkipVerify: TLS verification is off" in err


# --- values read from files --------------------------------------------------------------


def test_pem_files_resolve_and_their_problems_stay_in_the_log(tmp_path: Path) -> None:
    ca_file, key_file = tmp_path / "ca.pem", tmp_path / "key.pem"
    ca_file.write_bytes(CA.cert_pem)
    key_file.write_text("not a key\n")
    document = https({"ca": {"file": str(ca_file)}})
    snapshot = RegistrySnapshot(servers=(parse_server(document, "f.yaml"),))
    (value,) = resolve(snapshot).values()
    assert value == CA.cert_pem.decode().rstrip("\n")
    bad = https({"clientCertificate": LEAF.cert_pem.decode(), "clientKey": {"file": str(key_file)}})
    snapshot = RegistrySnapshot(servers=(parse_server(bad, "f.yaml"),))
    with pytest.raises(Invalid) as error:
        resolve(snapshot)
    assert [(p.path, p.reason) for p in error.value.problems] == [("backend.tls.clientKey", UNAVAILABLE)]


def test_a_pem_file_is_still_no_header_credential(tmp_path: Path) -> None:
    """The same file as a CA (fine) and as a bearer token (multi-line: refused) is checked per use."""
    pem = tmp_path / "ca.pem"
    pem.write_bytes(CA.cert_pem)
    document = https({"ca": {"file": str(pem)}})
    document["securitySchemes"] = [
        {"id": "t", "type": "http", "scheme": "bearer", "defaultCredential": {"file": str(pem)}}
    ]
    snapshot = RegistrySnapshot(servers=(parse_server(document, "f.yaml"),))
    with pytest.raises(Invalid) as error:
        resolve(snapshot)
    assert [p.path for p in error.value.problems] == ["securitySchemes[0].defaultCredential"]


def test_a_key_file_that_does_not_match_rejects_the_translation(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(OTHER.key_pem)
    document = https({"clientCertificate": LEAF.cert_pem.decode(), "clientKey": {"file": str(key_file)}})
    snapshot = RegistrySnapshot(servers=(parse_server(document, "f.yaml"),))
    with pytest.raises(pgv.ResourceInvalid, match=r"f.yaml: backend.tls.clientKey: clientKey is not the key"):
        Translator(SETTINGS).translate(snapshot, resolve(snapshot))


# --- the cluster ---------------------------------------------------------------------------


def _san(context: Any) -> list[tuple[int, str]]:
    sans = context.common_tls_context.validation_context.match_typed_subject_alt_names
    return [(s.san_type, s.matcher.exact) for s in sans]


def test_default_verifies_against_the_system_cas_and_the_endpoint_name() -> None:
    context = upstream_tls(https())
    validation = context.common_tls_context.validation_context
    assert validation.trusted_ca.filename == SETTINGS.backend_ca_file == "/etc/ssl/certs/ca-certificates.crt"
    assert _san(context) == [(validation.match_typed_subject_alt_names[0].DNS, "api.internal")]
    assert context.sni == "api.internal"
    assert not context.common_tls_context.tls_certificates


def test_host_then_server_name_decide_the_verified_name() -> None:
    assert upstream_tls(https(host="api.example.com")).sni == "api.example.com"
    context = upstream_tls(https({"serverName": "tls.example.com"}, host="api.example.com"))
    assert context.sni == "tls.example.com"
    assert _san(context)[0][1] == "tls.example.com"


def test_an_address_is_verified_as_an_ip_san_and_not_sent_as_sni() -> None:
    context = upstream_tls(minimal(backend={"scheme": "https", "endpoints": ["10.0.0.7:8443"]}))
    san_type = context.common_tls_context.validation_context.match_typed_subject_alt_names[0]
    assert (san_type.san_type, san_type.matcher.exact) == (san_type.IP_ADDRESS, "10.0.0.7")
    assert context.sni == ""
    v6 = upstream_tls(minimal(backend={"scheme": "https", "endpoints": ["[0:0:0:0:0:0:0:1]:8443"]}))
    assert _san(v6) == [(san_type.IP_ADDRESS, "::1")]


def test_own_ca_client_certificate_and_skip_verify() -> None:
    document = https(
        {
            "ca": CA.cert_pem.decode(),
            "clientCertificate": LEAF.cert_pem.decode(),
            "clientKey": LEAF.key_pem.decode(),
        }
    )
    context = upstream_tls(document)
    assert context.common_tls_context.validation_context.trusted_ca.inline_string == CA.cert_pem.decode()
    (pair,) = context.common_tls_context.tls_certificates
    assert pair.certificate_chain.inline_string == LEAF.cert_pem.decode()
    assert pair.private_key.inline_string == LEAF.key_pem.decode()
    skipped = upstream_tls(https({"insecureSkipVerify": True}))
    assert not skipped.common_tls_context.HasField("validation_context")
    assert skipped.sni == "api.internal"


def test_the_system_ca_file_is_a_setting() -> None:
    import dataclasses

    settings = dataclasses.replace(SETTINGS, backend_ca_file="/etc/pki/tls/certs/ca-bundle.crt")
    context = upstream_tls(https(), settings=settings)
    assert (
        context.common_tls_context.validation_context.trusted_ca.filename
        == "/etc/pki/tls/certs/ca-bundle.crt"
    )


def test_every_upstream_mcp_host_verifies_its_own_name() -> None:
    document = {
        "kind": "McpServer",
        "name": "up",
        "type": "mcp",
        "backend": {"scheme": "https", "endpoints": ["a.internal:443", "b.internal:443"]},
    }
    assert upstream_tls(document, "mcpgw/default/up|h0").sni == "a.internal"
    assert _san(upstream_tls(document, "mcpgw/default/up|h1"))[0][1] == "b.internal"


# --- the same rules for a Python client ----------------------------------------------------


def test_client_tls_follows_the_same_rules() -> None:
    server = parse_server(https({"ca": CA.cert_pem.decode()}, host="api.example.com"))
    tls = ClientTls.of(server.backend, resolve(RegistrySnapshot(servers=(server,))))
    context = tls.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "backend CA"),),)]
    assert tls.server_name == verify_name(server.backend, server.backend.endpoints[0]) == "api.example.com"
    default = ClientTls.of(parse_server(https()).backend, {}).ssl_context()
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname


def test_serve_and_up_take_the_system_ca_bundle_of_the_envoy_nodes() -> None:
    from mcpgw.cli import _parser

    for command in (["serve", "-f", "registry"], ["up"]):
        assert _parser().parse_args(command).backend_tls_ca == default_system_ca_file()
        chosen = _parser().parse_args([*command, "--backend-tls-ca", "/etc/pki/tls/certs/ca-bundle.crt"])
        assert chosen.backend_tls_ca == "/etc/pki/tls/certs/ca-bundle.crt"
    # This machine is Debian: the default is its bundle.
    assert default_system_ca_file() == "/etc/ssl/certs/ca-certificates.crt"
