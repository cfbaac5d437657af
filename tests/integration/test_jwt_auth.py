"""JWT and OAuth 2.1 resource server through real Envoy, with a real authorization server.

`oidc-provider` (tests/oidc.py) issues client-credentials access tokens (JWTs whose `aud` is the
requested resource); Envoy's `jwt_authn` fetches its JWKS and verifies them; the `mcp-server`
filter decides (401 with `WWW-Authenticate`, 403 `insufficient_scope`). The Protected Resource
Metadata (RFC 9728) is served by Envoy, and the MCP Python SDK's OAuth client finds the
authorization server from the 401 and the metadata on its own.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import yaml
from mcp import Client as McpClient
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from mcpgw import pki
from mcpgw.stack import free_port
from tests.integration.conftest import Gateway, copy_registry, envoy_log_line, running_gateway
from tests.integration.mcphttp import ACCEPT, initialize_request, rpc
from tests.oidc import AuthorizationServer, Client
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

AGENT = Client("agent", "agent-secret")
# May only ask for tools:read: the server requires tools:call (step-up 403).
READER = Client("reader", "reader-secret", scope="tools:read")
SCOPES = ["tools:read", "tools:call"]
WELL_KNOWN = "/.well-known/oauth-protected-resource"


@dataclass
class Setup:
    gateway: Gateway
    idp: AuthorizationServer

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def metadata_url(self) -> str:
        return f"{self.gateway.stack.mcp_base_url}{WELL_KNOWN}/mcp/default/petstore"


def with_auth(registry: Path, idp: AuthorizationServer) -> None:
    path = registry / "petstore.yaml"
    document = yaml.safe_load(path.read_text())
    document["auth"] = {
        "jwt": [
            {
                "issuer": idp.issuer,
                # Short: the rotation test waits for Envoy's next fetch.
                "jwks": {"uri": idp.jwks_uri, "cacheSeconds": 1},
                "consumerClaim": "client_id",
            }
        ],
        "oauth": {"authorizationServers": [idp.issuer], "scopes": SCOPES, "requiredScopes": ["tools:call"]},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    folder = tmp_path_factory.mktemp("jwt")
    with AuthorizationServer([AGENT, READER], SCOPES) as idp:
        backend_port = free_port()
        registry = copy_registry(folder / "registry", backend_port)
        with_auth(registry, idp)
        async with running_gateway(folder, registry, backend_port) as gateway:
            yield Setup(gateway, idp)


async def send(url: str, token: str | None, body: dict[str, object] | None = None) -> httpx.Response:
    """One `initialize` (or `body`) with `Authorization: Bearer token` (none when None)."""
    headers = dict(ACCEPT)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, json=body or initialize_request(), headers=headers)


async def session_call(
    url: str, token: str, method: str, params: dict[str, object] | None = None
) -> httpx.Response:
    """`method` in a fresh session, every request with the token."""
    auth = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=10) as http:
        first = await http.post(url, json=initialize_request(), headers=ACCEPT | auth)
        assert first.status_code == 200, first.text
        session = {
            "mcp-session-id": first.headers["mcp-session-id"],
            "mcp-protocol-version": first.json()["result"]["protocolVersion"],
        }
        done = await http.post(
            url,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers=ACCEPT | auth | session,
        )
        assert done.status_code == 202, done.text
        return await http.post(url, json=rpc(method, params), headers=ACCEPT | auth | session)


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def claims(setup: Setup, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": setup.idp.issuer,
        "aud": setup.url,
        "sub": "agent",
        "client_id": "agent",
        "scope": "tools:read tools:call",
        "iat": now,
        "exp": now + 300,
    }
    return base | overrides


def assert_unauthorized(response: httpx.Response, setup: Setup, error: str | None) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer "), challenge
    assert f'resource_metadata="{setup.metadata_url}"' in challenge, challenge
    if error is None:
        assert "error=" not in challenge, challenge
    else:
        assert f'error="{error}"' in challenge, challenge


async def test_a_client_credentials_token_lists_and_calls_tools(setup: Setup) -> None:
    token = setup.idp.token(AGENT, setup.url, "tools:read tools:call")
    listed = await session_call(setup.url, token, "tools/list")
    assert listed.status_code == 200, listed.text
    assert "listPets" in {tool["name"] for tool in listed.json()["result"]["tools"]}
    called = await session_call(setup.url, token, "tools/call", {"name": "listPets", "arguments": {}})
    assert called.status_code == 200, called.text
    assert called.json()["result"]["isError"] is False, called.text
    # The gateway's token is never a backend's (MCP authorization: no token passthrough).
    sent = [r for r in setup.gateway.backend_requests if r.path.startswith("/v1/pets")]
    assert sent, "the backend saw the call"
    assert all(token not in json.dumps(r.headers) for r in sent)


async def test_no_token_gets_the_challenge_naming_the_metadata(setup: Setup) -> None:
    response = await send(setup.url, None)
    assert_unauthorized(response, setup, None)
    assert 'scope="tools:call"' in response.headers["www-authenticate"]
    assert response.json()["error"]["code"] == -32001


async def test_refused_tokens_get_invalid_token(setup: Setup) -> None:
    good = setup.idp.token(AGENT, setup.url, "tools:read tools:call")
    header, payload, signature = good.split(".")
    tampered_payload = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered_payload["client_id"] = "someone-else"
    refused = {
        "expired": setup.idp.sign(claims(setup, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        "wrong audience": setup.idp.token(
            AGENT, "http://127.0.0.1:1/mcp/default/other", "tools:read tools:call"
        ),
        "wrong issuer": setup.idp.sign(claims(setup, iss="https://elsewhere.example")),
        "tampered": f"{header}.{b64(tampered_payload)}.{signature}",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(setup))}.",
        "not a JWT": "not-a-jwt",
    }
    for what, token in refused.items():
        response = await send(setup.url, token)
        assert response.status_code == 401, f"{what}: {response.status_code} {response.text}"
        assert_unauthorized(response, setup, "invalid_token")
    # The same claims, properly signed, pass: the refusals above were about what changed.
    assert (await send(setup.url, setup.idp.sign(claims(setup)))).status_code == 200
    # One log line per denial, with jwt_authn's reason; never the token.
    line = await envoy_log_line(setup.gateway, "reason=invalid status=401")
    assert "auth_denied server=/mcp/default/petstore" in line, line
    assert 'detail="' in line, line
    envoy = setup.gateway.stack.envoy
    assert envoy is not None
    log = envoy.log_path.read_text()
    assert all(token not in log for token in refused.values() if len(token) > 20)
    # Each refused for its own reason (jwt_authn's words, in the detail).
    for reason in (
        "Jwt is expired",
        "Audiences in Jwt are not allowed",
        "Jwt issuer is not configured",
        "Jwt verification fails",
    ):
        assert f'detail="{reason}"' in log, reason


async def test_missing_scope_is_a_step_up_403(setup: Setup) -> None:
    token = setup.idp.token(READER, setup.url, "tools:read")
    response = await send(setup.url, token)
    assert response.status_code == 403, response.text
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge, challenge
    assert 'scope="tools:call"' in challenge, challenge
    assert f'resource_metadata="{setup.metadata_url}"' in challenge, challenge


async def test_protected_resource_metadata_names_the_authorization_server(setup: Setup) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(setup.metadata_url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "resource": setup.url,
        "authorization_servers": [setup.idp.issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": SCOPES,
    }


async def test_new_tokens_pass_after_the_idp_rotates_its_key(setup: Setup) -> None:
    before = setup.idp.token(AGENT, setup.url, "tools:read tools:call")
    setup.idp.rotate()
    after = setup.idp.token(AGENT, setup.url, "tools:read tools:call")
    assert (
        json.loads(base64.urlsafe_b64decode(after.split(".")[0] + "=="))["kid"]
        != json.loads(base64.urlsafe_b64decode(before.split(".")[0] + "=="))["kid"]
    )

    async def passes() -> bool:
        return (await send(setup.url, after)).status_code == 200

    # Envoy refetches the JWKS every cacheSeconds (1 s); a loaded machine may take longer.
    await eventually(passes, 30, "a token signed with the new key accepted")
    # The old key is still published: its tokens still pass.
    assert (await send(setup.url, before)).status_code == 200


class MemoryTokens:
    """The SDK's `TokenStorage`, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def test_the_mcp_sdk_discovers_the_authorization_server_and_gets_a_token(setup: Setup) -> None:
    """The SDK is given only the gateway URL and its client credentials: it learns the
    authorization server from the 401's `resource_metadata` and the metadata document, asks it
    for a token for this resource, then lists and calls tools."""
    storage = MemoryTokens()
    provider = ClientCredentialsOAuthProvider(
        server_url=setup.url,
        storage=storage,
        client_id=AGENT.id,
        client_secret=AGENT.secret,
        scope="tools:read tools:call",
        issuer=setup.idp.issuer,
    )
    http = create_mcp_http_client(auth=provider)
    async with http, McpClient(streamable_http_client(setup.url, http_client=http), mode="legacy") as client:
        tools = {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}
        assert "listPets" in tools
        result = await client.call_tool("listPets", {})
        assert result.is_error is False, result
    assert storage.tokens is not None
    payload = storage.tokens.access_token.split(".")[1]
    token_claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    # The token was minted for this server (RFC 8707) by the advertised authorization server.
    assert token_claims["aud"] == setup.url
    assert token_claims["iss"] == setup.idp.issuer


async def test_a_bad_auth_block_is_refused_and_the_running_one_keeps_serving(setup: Setup) -> None:
    control_plane = setup.gateway.stack.control_plane
    assert control_plane is not None
    path = setup.gateway.registry / "petstore.yaml"
    good = path.read_text()
    document = yaml.safe_load(good)
    document["auth"]["jwt"][0]["jwks"] = {"uri": "http://idp.example/jwks"}
    document["auth"]["oauth"]["scopes"] = ["tools call"]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    try:
        problems = await eventually(lambda: control_plane.store.problems, 15, "the bad auth block rejected")
        found = {(p.path, p.reason.split(":")[0]) for p in problems}
        assert ("auth.jwt[0].jwks.uri", "'http") in found, problems
        assert any(p.path == "auth.oauth.scopes[0]" and "scope token" in p.reason for p in problems), problems
        assert all(p.file.endswith("petstore.yaml") for p in problems), problems
        # What Envoy has is unchanged: tokens still verified, the challenge still served.
        token = setup.idp.token(AGENT, setup.url, "tools:read tools:call")
        assert (await send(setup.url, token)).status_code == 200
        assert_unauthorized(await send(setup.url, None), setup, None)
    finally:
        path.write_text(good)
    await eventually(lambda: not control_plane.store.problems, 15, "the good registry applied again")


def jwt_server(document: dict[str, object], name: str, issuer: str, jwks_uri: str) -> dict[str, object]:
    copy = json.loads(json.dumps(document))
    copy["name"] = name
    copy["auth"] = {"jwt": [{"issuer": issuer, "jwks": {"uri": jwks_uri}, "consumerClaim": "client_id"}]}
    return copy


async def test_the_jwks_is_fetched_over_verified_tls(tmp_path: Path) -> None:
    """An https IdP: Envoy fetches its JWKS through a TLS cluster verified like a backend's (the
    CA of `--backend-tls-ca`, the URL's host in the certificate). The same IdP under a name its
    certificate does not carry yields no keys, so its tokens are refused."""
    ca = pki.make_ca("idp CA")
    cert, key = pki.issue(ca, "idp", ips=["127.0.0.1"]).write(tmp_path / "pki", "idp")
    ca_file = tmp_path / "pki" / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    with AuthorizationServer([AGENT], SCOPES, tls=(cert, key, ca_file)) as idp:
        assert idp.issuer.startswith("https://127.0.0.1:")
        backend_port = free_port()
        registry = copy_registry(tmp_path / "registry", backend_port)
        petstore = yaml.safe_load((registry / "petstore.yaml").read_text())
        port = idp.issuer.rsplit(":", 1)[1]
        for name, jwks in (("verified", idp.jwks_uri), ("wrong-name", f"https://localhost:{port}/jwks")):
            document = jwt_server(petstore, name, idp.issuer, jwks)
            (registry / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        async with running_gateway(tmp_path, registry, backend_port, backend_ca_file=str(ca_file)) as gateway:
            base = f"{gateway.stack.mcp_base_url}/mcp/default"
            verified = await send(f"{base}/verified", idp.token(AGENT, f"{base}/verified", "tools:read"))
            assert verified.status_code == 200, verified.text
            refused = await send(f"{base}/wrong-name", idp.token(AGENT, f"{base}/wrong-name", "tools:read"))
            assert refused.status_code == 401, refused.text
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]


async def test_valid_tokens_pass_across_a_registry_update(setup: Setup) -> None:
    """Every registry change gives Envoy a new listener with a new jwt_authn configuration; no
    valid token is refused while the update lands, even when the IdP takes 1.5 s to answer."""
    control_plane = setup.gateway.stack.control_plane
    assert control_plane is not None
    token = setup.idp.token(AGENT, setup.url, "tools:read tools:call")
    extra = setup.gateway.registry / "extra.yaml"
    document = yaml.safe_load((setup.gateway.registry / "petstore.yaml").read_text())
    document["name"] = "extra"
    before = control_plane.applied_revision
    statuses: list[int] = []
    setup.idp.delay_jwks(1500)
    extra.write_text(yaml.safe_dump(document, sort_keys=False))
    try:
        deadline = time.monotonic() + 30
        # Until the new listener (with the extra server) answers, and a little after.
        extra_url = setup.url.replace("/petstore", "/extra")
        while time.monotonic() < deadline:
            statuses.append((await send(setup.url, token)).status_code)
            if control_plane.applied_revision != before and (await send(extra_url, None)).status_code == 401:
                break
        for _ in range(20):
            statuses.append((await send(setup.url, token)).status_code)
        assert control_plane.applied_revision != before, "the update was applied"
        assert set(statuses) == {200}, statuses
    finally:
        setup.idp.delay_jwks(0)
        extra.unlink()
    await eventually(lambda: control_plane.applied_revision == before, 15, "the extra server removed")
