"""TLS toward backends through a real Envoy, with certificates made by the test (`mcpgw.pki`).

HTTPS backends on 127.0.0.1 record every handshake and request (`wirebackend.py`); each
server sends a bearer token. A certificate for another name, a self-signed one, or one from a CA
nobody trusts (the default settings: the system CAs) fails the call during the handshake: the
backend never receives a request, so never the token. The right per-server CA succeeds; a
backend that requires a client certificate gets the configured one; `insecureSkipVerify` works
and is warned about. The same rules hold for upstream MCP servers over https (the `mcp` SDK's
server under uvicorn), over Streamable HTTP through Envoy and over HTTP+SSE through the session
broker's bridge; Envoy's `/config_dump` shows the client key redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
import yaml

from mcpgw import pki
from tests.integration.conftest import Gateway, running_gateway
from tests.integration.mcphttp import call, initialize_request, post
from tests.integration.test_mcp_upstream import Upstream, client, only_text
from tests.integration.test_mcp_upstream_sse import SseUpstream
from tests.integration.wirebackend import WireBackend

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAME = "api.internal"
TOKEN = "backend-token-7f3a"
MCP_NAME = "mcp.internal"


@dataclass
class Pki:
    ca: pki.Issued
    ca_file: Path
    right: pki.Issued  # for NAME, by `ca`
    wrong_name: pki.Issued  # for another name, by `ca`
    untrusted: pki.Issued  # for NAME, by a self-signed CA nobody trusts
    self_signed: pki.Issued  # that CA's own certificate (self-signed, CN = NAME)
    client_ca: pki.Issued
    client: pki.Issued
    client_key_file: Path
    mcp: pki.Issued  # for MCP_NAME, by `ca`


def make_pki(folder: Path) -> Pki:
    ca, stranger, client_ca = pki.make_ca("backend CA"), pki.make_ca(NAME), pki.make_ca("client CA")
    client = pki.issue(client_ca, "gateway", server=False, client=True)
    ca_file = folder / "backend-ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    _, key_file = client.write(folder, "gateway-client")
    return Pki(
        ca=ca,
        ca_file=ca_file,
        right=pki.issue(ca, NAME, dns=[NAME]),
        wrong_name=pki.issue(ca, "other.internal", dns=["other.internal"]),
        untrusted=pki.issue(stranger, NAME, dns=[NAME]),
        self_signed=stranger,
        client_ca=client_ca,
        client=client,
        client_key_file=key_file,
        mcp=pki.issue(ca, MCP_NAME, dns=[MCP_NAME]),
    )


def server_context(
    folder: Path, issued: pki.Issued, label: str, client_ca: pki.Issued | None = None
) -> ssl.SSLContext:
    cert, key = issued.write(folder, label)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.cert_pem.decode())
    return context


def rest_server(name: str, backend: WireBackend, tls: dict[str, Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {"scheme": "https", "endpoints": [f"127.0.0.1:{backend.port}"], "host": NAME}
    if tls is not None:
        data["tls"] = tls
    return {
        "kind": "McpServer",
        "namespace": "tls",
        "name": name,
        "backend": data,
        "securitySchemes": [{"id": "t", "type": "http", "scheme": "bearer", "defaultCredential": TOKEN}],
        "tools": [
            {
                "name": "ping",
                "description": "Calls the backend.",
                "requestTemplate": {"url": "/ping", "method": "GET", "security": {"id": "t"}},
            }
        ],
    }


def mcp_server(
    name: str, upstream: Upstream, server_name: str, ca_file: Path, transport: str = "streamable-http"
) -> dict[str, Any]:
    return {
        "kind": "McpServer",
        "type": "mcp",
        "transport": transport,
        "namespace": "tls",
        "name": name,
        "backend": {
            "scheme": "https",
            "endpoints": [upstream.endpoint],
            "timeoutMs": 5000,
            "tls": {"serverName": server_name, "ca": {"file": str(ca_file)}},
        },
        "securitySchemes": [{"id": "t", "type": "http", "scheme": "bearer", "defaultCredential": TOKEN}],
        "upstreamSecurity": {"id": "t"},
    }


@dataclass
class Setup:
    gateway: Gateway
    certs: Pki
    backends: dict[str, WireBackend]
    upstream: Upstream
    sse_upstream: SseUpstream
    registry: Path

    def url(self, name: str) -> str:
        return f"{self.gateway.stack.mcp_base_url}/mcp/tls/{name}"


@contextlib.asynccontextmanager
async def https_upstream(upstream: Upstream, folder: Path, issued: pki.Issued) -> AsyncIterator[None]:
    cert, key = issued.write(folder, f"mcp-upstream-{upstream.label}")
    config = uvicorn.Config(
        upstream.app(),
        host="127.0.0.1",
        port=upstream.port,
        log_level="error",
        lifespan="on",
        timeout_graceful_shutdown=2,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    try:
        while not server.started:
            assert not task.done(), "the https upstream did not start"
            assert time.monotonic() < deadline, "the https upstream did not start within 10 s"
            await asyncio.sleep(0.05)
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 15)


async def wait_served(url: str) -> None:
    """Until the server's filter is in Envoy (it answers GET with 405; the route alone 503)."""
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(timeout=5) as http:
        while (response := await http.get(url)).status_code != 405:
            assert time.monotonic() < deadline, f"{url} not served: {response.status_code} {response.text}"
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    folder = tmp_path_factory.mktemp("backend-tls")
    certs = make_pki(folder)
    backends = {
        "wrong-name": WireBackend(tls=server_context(folder, certs.wrong_name, "wrong-name")),
        "untrusted": WireBackend(tls=server_context(folder, certs.untrusted, "untrusted")),
        "self-signed": WireBackend(tls=server_context(folder, certs.self_signed, "self-signed")),
        "right": WireBackend(tls=server_context(folder, certs.right, "right")),
        "mtls": WireBackend(tls=server_context(folder, certs.right, "mtls", client_ca=certs.client_ca)),
    }
    for backend in backends.values():
        await backend.start()
    own_ca = {"ca": {"file": str(certs.ca_file)}}
    mtls = {
        **own_ca,
        "clientCertificate": certs.client.cert_pem.decode(),
        "clientKey": {"file": str(certs.client_key_file)},
    }
    upstream, sse = Upstream("secure"), SseUpstream("secure-sse")
    documents = [
        rest_server("wrong-name", backends["wrong-name"], own_ca),
        # No tls block: the defaults, the system CAs, which never issued this certificate.
        rest_server("untrusted", backends["untrusted"], None),
        rest_server("self-signed", backends["self-signed"], None),
        rest_server("right", backends["right"], own_ca),
        rest_server("mtls", backends["mtls"], mtls),
        rest_server("mtls-without-cert", backends["mtls"], own_ca),
        rest_server("skip-verify", backends["untrusted"], {"insecureSkipVerify": True}),
        mcp_server("mcp-right", upstream, MCP_NAME, certs.ca_file),
        mcp_server("mcp-wrong-name", upstream, "elsewhere.internal", certs.ca_file),
        # Through the session broker's bridge (Python), with the same settings.
        mcp_server("sse-right", sse, MCP_NAME, certs.ca_file, transport="sse"),
        mcp_server("sse-wrong-name", sse, "elsewhere.internal", certs.ca_file, transport="sse"),
    ]
    registry = folder / "registry"
    registry.mkdir()
    (registry / "servers.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    try:
        async with (
            https_upstream(upstream, folder, certs.mcp),
            https_upstream(sse, folder, certs.mcp),
            running_gateway(folder, registry) as gateway,
        ):
            running = Setup(gateway, certs, backends, upstream, sse, registry)
            for document in documents:
                await wait_served(running.url(document["name"]))
            yield running
    finally:
        for backend in backends.values():
            await backend.close()


def envoy_stat(setup: Setup, name: str) -> int:
    envoy = setup.gateway.stack.envoy
    assert envoy is not None
    url = f"http://127.0.0.1:{envoy.admin_port}/stats?filter=^{name}$"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    (line,) = text.splitlines()
    return int(line.rsplit(": ", 1)[1])


async def ping(setup: Setup, server: str) -> dict[str, Any]:
    return await call(setup.url(server), "tools/call", {"name": "ping", "arguments": {}})


def assert_refused_before_any_request(answer: dict[str, Any], backend: WireBackend, before: int) -> None:
    result = answer.get("result", {})
    assert result.get("isError") is True, answer
    assert "backend" in result["content"][0]["text"].lower(), answer
    assert backend.handshake_failures, "Envoy never tried the backend: the test proves nothing"
    assert len(backend.requests) == before, "a request (and the token) reached the backend"


async def test_a_certificate_for_another_name_fails_before_any_request(setup: Setup) -> None:
    backend = setup.backends["wrong-name"]
    answer = await ping(setup, "wrong-name")
    assert_refused_before_any_request(answer, backend, 0)
    assert backend.requests == []
    # Envoy says why, for the operator: the certificate did not carry the expected name.
    assert envoy_stat(setup, "cluster.mcpgw/tls/wrong-name.ssl.fail_verify_san") >= 1


async def test_an_untrusted_certificate_fails_with_the_default_settings(setup: Setup) -> None:
    backend = setup.backends["untrusted"]
    before = len(backend.requests)
    answer = await ping(setup, "untrusted")
    assert_refused_before_any_request(answer, backend, before)
    assert not any(r.all("authorization") for r in backend.requests[before:])
    # The chain did not verify (no trusted CA issued it).
    assert envoy_stat(setup, "cluster.mcpgw/tls/untrusted.ssl.fail_verify_error") >= 1


async def test_a_self_signed_certificate_fails_with_the_default_settings(setup: Setup) -> None:
    backend = setup.backends["self-signed"]
    answer = await ping(setup, "self-signed")
    assert_refused_before_any_request(answer, backend, 0)
    assert envoy_stat(setup, "cluster.mcpgw/tls/self-signed.ssl.fail_verify_error") >= 1


async def test_the_right_ca_succeeds_with_sni_and_the_token(setup: Setup) -> None:
    backend = setup.backends["right"]
    answer = await ping(setup, "right")
    assert not answer["result"].get("isError"), answer
    [request] = backend.requests
    assert request.all("authorization") == [f"Bearer {TOKEN}"]
    assert request.all("host") == [NAME]
    assert set(backend.server_names) == {NAME}
    assert backend.handshake_failures == []


async def test_mutual_tls_needs_the_configured_client_certificate(setup: Setup) -> None:
    backend = setup.backends["mtls"]
    answer = await ping(setup, "mtls")
    assert not answer["result"].get("isError"), answer
    assert [r.all("authorization") for r in backend.requests] == [[f"Bearer {TOKEN}"]]
    certificate = backend.client_certificates[-1]
    assert certificate is not None
    assert dict(pair[0] for pair in certificate["subject"]) == {"commonName": "gateway"}
    failures_before = len(backend.handshake_failures)
    answer = await ping(setup, "mtls-without-cert")
    assert answer["result"].get("isError") is True, answer
    assert len(backend.requests) == 1, "the server without a client certificate reached the backend"
    assert len(backend.handshake_failures) > failures_before


async def mcpgw(*args: str) -> tuple[int, str]:
    """`mcpgw ARGS` in a child process: its exit status and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcpgw.cli", *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_skip_verify_works_and_is_warned_about(setup: Setup) -> None:
    backend = setup.backends["untrusted"]
    before = len(backend.requests)
    answer = await ping(setup, "skip-verify")
    assert not answer["result"].get("isError"), answer
    assert [r.all("authorization") for r in backend.requests[before:]] == [[f"Bearer {TOKEN}"]]
    status, err = await mcpgw("validate", "-f", str(setup.registry))
    assert status == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {setup.registry / 'servers.yaml'}#6: backend.tls.insecureSkipVerify: TLS verification "
        "is off: any certificate is accepted, so whoever can intercept the connection receives the "
        "backend's credentials; set ca instead"
    ]
    admin = setup.gateway.stack.control_plane
    assert admin is not None
    async with httpx.AsyncClient(timeout=5) as http:
        listed = (await http.get(f"http://127.0.0.1:{admin.status_port}/v1/servers")).json()["servers"]
    by_key = {s["key"]: s["warnings"] for s in listed}
    assert by_key["tls/skip-verify"] == [warnings[0].split("#6: ", 1)[1]]
    assert by_key["tls/right"] == []


async def test_an_https_mcp_upstream_follows_the_same_rules(setup: Setup) -> None:
    async with client(setup.url("mcp-right")) as session:
        result = await session.call_tool("whoami", {})
    assert only_text(result) == "secure"
    assert any(s.headers.get("authorization") == f"Bearer {TOKEN}" for s in setup.upstream.seen)
    seen = len(setup.upstream.seen)
    # The certificate names mcp.internal; the registry expects another name: no request arrives.
    response = await post(setup.url("mcp-wrong-name"), initialize_request(), session=False)
    error = response.json()["error"]
    assert error["code"] == -32603, response.text
    assert error["message"].startswith("upstream MCP server is unavailable"), response.text
    assert len(setup.upstream.seen) == seen, "a request reached the upstream despite the wrong name"


async def test_an_https_sse_upstream_through_the_bridge_follows_the_same_rules(setup: Setup) -> None:
    sse = setup.sse_upstream
    async with client(setup.url("sse-right")) as session:
        result = await session.call_tool("whoami", {})
    assert only_text(result) == "secure-sse"
    assert {r.headers.get("authorization") for r in sse.requests} == {f"Bearer {TOKEN}"}
    seen = len(sse.requests)
    response = await post(setup.url("sse-wrong-name"), initialize_request(), session=False)
    error = response.json()["error"]
    assert error["code"] == -32603, response.text
    assert error["message"].startswith("upstream MCP server is unavailable"), response.text
    assert len(sse.requests) == seen, "a request reached the SSE upstream despite the wrong name"


async def test_config_dump_redacts_the_client_key(setup: Setup) -> None:
    envoy = setup.gateway.stack.envoy
    assert envoy is not None
    url = f"http://127.0.0.1:{envoy.admin_port}/config_dump?resource=dynamic_active_clusters"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    key_body = setup.certs.client.key_pem.decode().splitlines()[1]
    assert key_body not in text
    clusters = json.loads(text)["configs"]
    [mtls] = [c for c in clusters if c["cluster"]["name"] == "mcpgw/tls/mtls"]
    common = mtls["cluster"]["transport_socket"]["typed_config"]["common_tls_context"]
    [pair] = common["tls_certificates"]
    assert pair["private_key"] == {"inline_string": "[redacted]"}
    assert pair["certificate_chain"]["inline_string"] == setup.certs.client.cert_pem.decode()
