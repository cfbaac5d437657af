"""`mcpgw certs`, `mcpgw serve` refusing plain xDS off loopback, `mcpgw bootstrap --xds-tls-*`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from mcpgw.envoyproc import EnvoyProcess
from mcpgw.stack import free_ports
from tests.integration.conftest import copy_registry
from tests.integration.mcphttp import call
from tests.integration.test_cli import MCPGW, assert_envoy_accepts, run, wait_for_line


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
    result = run("serve", "-f", str(tmp_path), "--xds", "0.0.0.0:18000")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: refusing to serve xDS on 0.0.0.0 without TLS: it carries every credential; "
        "give --xds-tls-cert, --xds-tls-key and --xds-tls-ca, or listen on 127.0.0.1"
    ], result.stderr


async def test_serve_and_bootstrap_over_mtls_end_to_end(tmp_path: Path) -> None:
    """The commands an operator types: certs, serve with --xds-tls-*, bootstrap with --xds-tls-*, Envoy."""
    pki = tmp_path / "pki"
    for args in (
        ("ca", "--out", str(pki)),
        ("issue", "--ca", str(pki), "--name", "cp", "--ip", "127.0.0.1"),
        ("issue", "--ca", str(pki), "--name", "edge-1", "--node", "mcpgw/edge-1"),
    ):
        assert run("certs", *args).returncode == 0
    xds, admin, plugins, listen, broker, envoy_admin, stats = free_ports(7)
    registry = copy_registry(tmp_path / "registry", free_ports(1)[0])
    serve = subprocess.Popen(
        [
            *MCPGW, "serve", "-f", str(registry), "--xds", f"127.0.0.1:{xds}",
            "--admin", f"127.0.0.1:{admin}", "--plugins", f"127.0.0.1:{plugins}",
            "--listen", f"127.0.0.1:{listen}", "--broker", f"127.0.0.1:{broker}",
            "--xds-tls-cert", str(pki / "cp.crt"), "--xds-tls-key", str(pki / "cp.key"),
            "--xds-tls-ca", str(pki / "ca.crt"),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    envoy: EnvoyProcess | None = None
    try:
        assert "(mutual TLS)" in wait_for_line(serve, "control plane serving", 60)[-1]
        booted = run(
            "bootstrap", "--node-id", "edge-1", "--xds", f"127.0.0.1:{xds}",
            "--broker", f"127.0.0.1:{broker}",
            "--envoy-admin", f"127.0.0.1:{envoy_admin}", "--stats", f"127.0.0.1:{stats}",
            "--xds-tls-cert", str(pki / "edge-1.crt"), "--xds-tls-key", str(pki / "edge-1.key"),
            "--xds-tls-ca", str(pki / "ca.crt"), "--sds-dir", str(tmp_path / "sds"),
        )  # fmt: skip
        assert booted.returncode == 0, booted.stderr
        (tmp_path / "envoy").mkdir()
        envoy = EnvoyProcess(booted.stdout, admin_port=envoy_admin, workdir=tmp_path / "envoy")
        await envoy.start()
        await envoy.wait_ready(60, listeners=2)  # the stats listener and the MCP listener
        answer = await call(f"http://127.0.0.1:{listen}/mcp/default/petstore", "tools/list")
        assert {t["name"] for t in answer["result"]["tools"]} >= {"getPet"}
    finally:
        if envoy is not None:
            await envoy.stop()
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
