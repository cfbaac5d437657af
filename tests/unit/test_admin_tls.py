"""The admin API over TLS: real certificates from `mcpgw.pki`, the real server and the `mcpgw` CLI.

The API is served as the control plane serves it (`httpserve.serve` with a
`ReloadingServerContext`); the CLI runs in a thread, as a user's shell would run it beside.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from mcpgw import cli, pki
from mcpgw.admin.auth import AdminConfigError, check_bind
from mcpgw.admin.client import AdminClient
from mcpgw.httpserve import ServedApp, serve
from mcpgw.tlsreload import ReloadingServerContext, TlsFiles, TlsFilesError, server_context
from tests.unit.test_admin import TOKEN, start_api
from tests.waiting import eventually


@dataclass
class Pki:
    ca: pki.Issued
    ca_file: Path
    files: TlsFiles


def serial(pem: bytes | str) -> int:
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem).serial_number


def admin_cert(ca: pki.Issued, name: str = "admin") -> pki.Issued:
    return pki.issue(ca, name, dns=["localhost"], ips=["127.0.0.1"])


def replace(issued: pki.Issued, files: TlsFiles, staging: Path) -> None:
    """Write `issued` beside, then rename key and certificate into place (never a torn file)."""
    cert, key = issued.write(staging, "next")
    os.rename(key, files.key)
    os.rename(cert, files.cert)


def make_pki(tmp_path: Path, client_ca: bool = False) -> Pki:
    ca = pki.make_ca("admin test CA")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    cert, key = admin_cert(ca).write(tmp_path / "admin-tls", "tls")
    return Pki(ca, ca_file, TlsFiles(cert, key, ca_file if client_ca else None))


async def start_tls_api(tmp_path: Path, files: TlsFiles) -> tuple[ServedApp, ReloadingServerContext]:
    """The admin API of `tests.unit.test_admin`, served over TLS as the control plane serves it."""
    plain = await start_api(tmp_path)
    await plain.http.close()
    app = plain.served.runner.app
    await plain.served.close()
    tls = ReloadingServerContext(files, check_interval=0.1)
    return await serve(app, "127.0.0.1", 0, tls.context), tls


@pytest.fixture
async def closing() -> AsyncIterator[list[ServedApp]]:
    started: list[ServedApp] = []
    yield started
    for served in started:
        await served.close()


async def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`mcpgw …` in a thread (its client is synchronous; the API runs on this loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def presented(port: int) -> int:
    """The serial of the certificate a new connection is shown."""
    return serial(ssl.get_server_certificate(("127.0.0.1", port), timeout=5))


async def test_cli_over_tls_and_rotation_without_restart(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    closing: list[ServedApp],
) -> None:
    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    keys = make_pki(tmp_path)
    served, tls = await start_tls_api(tmp_path / "api", keys.files)
    closing.append(served)
    url = served.url
    assert url.startswith("https://127.0.0.1:")

    code, out, err = await run_cli(
        capsys, "get", "servers", "--admin", url, "--admin-tls-ca", str(keys.ca_file)
    )
    assert (code, err) == (0, "") and "default/svc" in out
    # Without the CA the CLI does not trust the API: one clear line, no traceback, exit 1.
    code, out, err = await run_cli(capsys, "get", "servers", "--admin", url)
    assert code == 1 and out == ""
    assert err.startswith("error: cannot reach the admin API") and "CERTIFICATE_VERIFY_FAILED" in err
    assert "Traceback" not in err
    # $MCPGW_ADMIN_TLS_CA stands for the flag.
    monkeypatch.setenv("MCPGW_ADMIN_TLS_CA", str(keys.ca_file))
    code, out, _ = await run_cli(capsys, "get", "servers", "--admin", url)
    assert code == 0 and "default/svc" in out

    first = serial(keys.files.cert.read_bytes())
    assert await asyncio.to_thread(presented, served.port) == first
    renewed = admin_cert(keys.ca, "admin renewed")
    replace(renewed, keys.files, tmp_path / "staging")

    async def rotated() -> bool:
        return await asyncio.to_thread(presented, served.port) == serial(renewed.cert_pem)

    await eventually(rotated, 5, "a new connection is shown the renewed certificate")
    assert tls.reloads == 1
    # The CLI verifies the renewed certificate against the same CA.
    code, out, _ = await run_cli(capsys, "get", "servers", "--admin", url)
    assert code == 0 and "default/svc" in out


async def test_a_broken_rotation_keeps_the_previous_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, closing: list[ServedApp]
) -> None:
    keys = make_pki(tmp_path)
    served, tls = await start_tls_api(tmp_path / "api", keys.files)
    closing.append(served)
    first = serial(keys.files.cert.read_bytes())
    # Half a rotation: a new certificate beside the old key. It is refused, the old pair served.
    renewed = admin_cert(keys.ca, "admin renewed")
    cert, key = renewed.write(tmp_path / "staging", "next")
    os.rename(cert, keys.files.cert)
    with caplog.at_level(logging.WARNING):
        await asyncio.sleep(0.2)
        assert await asyncio.to_thread(presented, served.port) == first
    assert "tls_reload_failed" in caplog.text and tls.reloads == 0
    # The key follows: the next handshake after the check interval serves the new pair.
    os.rename(key, keys.files.key)

    async def rotated() -> bool:
        return await asyncio.to_thread(presented, served.port) == serial(renewed.cert_pem)

    await eventually(rotated, 5, "the completed rotation is served")


async def test_client_certificates_when_the_admin_api_has_a_ca(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    closing: list[ServedApp],
) -> None:
    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    keys = make_pki(tmp_path, client_ca=True)
    served, _ = await start_tls_api(tmp_path / "api", keys.files)
    closing.append(served)
    ca = ("--admin", served.url, "--admin-tls-ca", str(keys.ca_file))
    code, _, err = await run_cli(capsys, "get", "servers", *ca)
    assert code == 1 and err.startswith("error: cannot reach the admin API")
    cert, key = pki.issue(keys.ca, "operator", server=False, client=True).write(tmp_path / "me", "me")
    code, out, err = await run_cli(
        capsys, "get", "servers", *ca, "--admin-tls-cert", str(cert), "--admin-tls-key", str(key)
    )
    assert (code, err) == (0, "") and "default/svc" in out
    # A certificate from another CA is refused like none.
    other = pki.issue(pki.make_ca("other"), "intruder", server=False, client=True).write(tmp_path / "x", "x")
    code, _, _ = await run_cli(
        capsys, "get", "servers", *ca, "--admin-tls-cert", str(other[0]), "--admin-tls-key", str(other[1])
    )
    assert code == 1


def test_unusable_files_are_named(tmp_path: Path) -> None:
    keys = make_pki(tmp_path)
    with pytest.raises(TlsFilesError, match="no such file"):
        server_context(TlsFiles(tmp_path / "missing.crt", keys.files.key))
    other_key = admin_cert(keys.ca).write(tmp_path / "other", "tls")[1]
    with pytest.raises(TlsFilesError, match=r"cannot load certificate .* with key"):
        ReloadingServerContext(TlsFiles(keys.files.cert, other_key))


def test_non_loopback_admin_needs_a_token_and_tls() -> None:
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "t", tls=True)
    with pytest.raises(AdminConfigError, match="without a token"):
        check_bind("0.0.0.0", None, tls=True)
    with pytest.raises(AdminConfigError, match="without TLS: the token would cross the network in clear"):
        check_bind("10.1.2.3", "t")


def test_the_client_warns_before_sending_a_token_in_clear() -> None:
    assert AdminClient("http://10.1.2.3:18001", "t").sends_token_in_clear()
    assert not AdminClient("https://10.1.2.3:18001", "t").sends_token_in_clear()
    assert not AdminClient("http://127.0.0.1:18001", "t").sends_token_in_clear()
    assert not AdminClient("http://10.1.2.3:18001", None).sends_token_in_clear()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--listener-tls-cert", "/etc/tls.crt"], "--listener-tls-cert and --listener-tls-key go together"),
        (["--listener-tls-ca", "/etc/ca.crt"], "--listener-tls-ca needs"),
        (
            ["--listener-tls-cert", "tls.crt", "--listener-tls-key", "/etc/tls.key"],
            "must be an absolute path on the Envoy node",
        ),
        (["--admin-tls-key", "k"], "--admin-tls-cert and --admin-tls-key go together"),
    ],
)
def test_serve_refuses_inconsistent_tls_flags(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "-f", "/nonexistent", *flags]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_up_refuses_a_non_loopback_admin_api_without_tls(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    assert cli.main(["up", "--admin", "0.0.0.0:18001"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "without TLS" in err and "--admin-tls-cert" in err


def test_a_bad_admin_tls_ca_variable_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPGW_ADMIN_TLS_CA", str(tmp_path / "missing.crt"))
    assert cli.main(["get", "servers"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: $MCPGW_ADMIN_TLS_CA=") and "is not a file" in err and err.count("\n") == 1
    # The flag overrides the variable, which then does not matter.
    keys = make_pki(tmp_path)
    code = cli.main(["get", "servers", "--admin", "https://127.0.0.1:1", "--admin-tls-ca", str(keys.ca_file)])
    assert code == cli.EXIT_FAILURE and "cannot reach the admin API" in capsys.readouterr().err
