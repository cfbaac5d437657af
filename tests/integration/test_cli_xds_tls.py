"""`mcpgw certs`, `mcpgw serve` refusing plain xDS off loopback, `mcpgw bootstrap --xds-tls-*`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_cli import assert_envoy_accepts, run


def test_certs_make_what_serve_and_bootstrap_use(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    assert run("certs", "ca", "--out", str(pki)).returncode == 0
    assert (pki / "ca.key").stat().st_mode & 0o077 == 0
    again = run("certs", "ca", "--out", str(pki))
    assert again.returncode == 2 and "refusing to replace a CA" in again.stderr
    made = run("certs", "issue", "--ca", str(pki), "--name", "cp", "--ip", "127.0.0.1", "--dns", "cp.example")
    assert made.returncode == 0, made.stderr
    made = run("certs", "issue", "--ca", str(pki), "--name", "envoy-1", "--node", "edge/envoy-1")
    assert made.returncode == 0, made.stderr
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate((pki / "envoy-1.crt").read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://mcpgw/edge/envoy-1"]
    bad = run("certs", "issue", "--ca", str(pki), "--name", "x", "--node", "no-slash")
    assert bad.returncode == 2 and "CLUSTER/ID" in bad.stderr and "Traceback" not in bad.stderr

    sds = tmp_path / "sds"
    booted = run(
        "bootstrap", "--node-id", "envoy-1", "--node-cluster", "edge", "--xds", "127.0.0.1:18000",
        "--xds", "cp.example:18000", "--xds-tls-cert", str(pki / "envoy-1.crt"),
        "--xds-tls-key", str(pki / "envoy-1.key"), "--xds-tls-ca", str(pki / "ca.crt"), "--sds-dir", str(sds),
    )  # fmt: skip
    assert booted.returncode == 0, booted.stderr
    assert "UpstreamTlsContext" in booted.stdout and "exact: cp.example" in booted.stdout
    client = json.loads((sds / "xds-client.yaml").read_text())["resources"][0]
    assert client["tls_certificate"]["private_key"] == {"filename": str(pki / "envoy-1.key")}
    bootstrap = tmp_path / "bootstrap.yaml"
    bootstrap.write_text(booted.stdout)
    assert_envoy_accepts(bootstrap)


def test_bootstrap_tls_usage_errors_exit_2(tmp_path: Path) -> None:
    half = run("bootstrap", "--node-id", "n", "--xds", "127.0.0.1:1", "--xds-tls-cert", str(tmp_path / "c"))
    assert half.returncode == 2 and "go together" in half.stderr and "Traceback" not in half.stderr
    missing = run(
        "bootstrap", "--node-id", "n", "--xds", "127.0.0.1:1", "--xds-tls-cert", str(tmp_path / "c"),
        "--xds-tls-key", str(tmp_path / "k"), "--xds-tls-ca", str(tmp_path / "ca"),
    )  # fmt: skip
    assert missing.returncode == 2 and "xDS TLS files unusable" in missing.stderr


def test_serve_refuses_plain_xds_off_loopback(tmp_path: Path) -> None:
    result = run("serve", "--xds", "0.0.0.0:18000")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: refusing to serve xDS on 0.0.0.0 without TLS: it carries every credential; "
        "give --xds-tls-cert, --xds-tls-key and --xds-tls-ca, or listen on 127.0.0.1"
    ], result.stderr
