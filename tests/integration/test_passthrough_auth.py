"""No token passthrough through real Envoy: with gateway auth on, the backend gets the credential
the registry names for it, never the token the gateway validated.

The pet store gains two passthrough tools: `myPet` forwards the client's `X-Backend-Token`
header, `myPetByCookie` its `Cookie`. The demo backend records every request's headers (the
echo backend). Callers authenticate once with an API key in `Authorization` (the API-key test's
registry and consumers) and once with a JWT from a real authorization server (the JWT test's
`auth` block); each time the backend must see the backend credential and nothing of the
gateway's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcpgw.registry import validate
from mcpgw.stack import free_port
from tests.integration.conftest import Gateway, running_gateway
from tests.integration.test_auth_apikeys import ALICE, answer, auth_registry, bearer
from tests.integration.test_jwt_auth import AGENT, SCOPES, with_auth
from tests.oidc import AuthorizationServer

BACKEND_TOKEN = "backend-credential-of-the-user-0123"
COOKIE = "shop_session=cookie-credential-of-the-user-4567"
SCHEMES = [
    {"id": "backendToken", "type": "apiKey", "in": "header", "name": "X-Backend-Token"},
    {"id": "session", "type": "apiKey", "in": "header", "name": "Cookie"},
    # The gateway's API-key header in the last test: a passthrough validation refuses.
    {"id": "gatewayKey", "type": "apiKey", "in": "header", "name": "X-Api-Key"},
]


def with_passthrough(
    registry: Path,
    tools: tuple[tuple[str, str], ...] = (("myPet", "backendToken"), ("myPetByCookie", "session")),
) -> None:
    """Copies of `getPet` (name, scheme) that pass the client's credential through."""
    path = registry / "petstore.yaml"
    document = yaml.safe_load(path.read_text())
    document["securitySchemes"] = document.get("securitySchemes", []) + SCHEMES
    (get_pet,) = [t for t in document["tools"] if t["name"] == "getPet"]
    for name, scheme in tools:
        tool = json.loads(json.dumps(get_pet))
        tool["name"] = name
        tool["security"] = {"id": scheme, "passthrough": True}
        document["tools"].append(tool)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


async def assert_backend_gets_only_its_credential(gateway: Gateway, gateway_credential: str) -> None:
    """Call both tools with the gateway credential and both backend credentials; the backend's
    recorded headers hold the named one and never the gateway's."""
    headers = bearer(gateway_credential) | {"x-backend-token": BACKEND_TOKEN, "cookie": COOKIE}
    for tool, header, value in (
        ("myPet", "x-backend-token", BACKEND_TOKEN),
        ("myPetByCookie", "cookie", COOKIE),
    ):
        before = len(gateway.backend_requests)
        called = await answer(gateway.url, "tools/call", {"name": tool, "arguments": {"id": 1}}, headers)
        assert called.status_code == 200, called.text
        result: dict[str, Any] = called.json()["result"]
        assert result["isError"] is False, called.text
        (sent,) = [r for r in gateway.backend_requests[before:] if r.path == "/v1/pets/1"]
        assert sent.headers.get(header) == value, sent.headers
        assert "authorization" not in sent.headers, sent.headers
        assert gateway_credential not in json.dumps(sent.headers), sent.headers
        # Only the credential the tool names: the other one stays with the client.
        other = BACKEND_TOKEN if header == "cookie" else COOKIE
        assert other not in json.dumps(sent.headers), sent.headers
    # Without its backend credential the tool says so (and still gets nothing of the gateway's).
    before = len(gateway.backend_requests)
    missing = await answer(
        gateway.url, "tools/call", {"name": "myPet", "arguments": {"id": 1}}, bearer(gateway_credential)
    )
    assert missing.status_code == 200 and missing.json()["result"]["isError"] is True, missing.text
    assert "X-Backend-Token" in missing.text or "x-backend-token" in missing.text, missing.text
    assert not [r for r in gateway.backend_requests[before:] if r.path == "/v1/pets/1"]


async def test_an_api_key_never_reaches_the_backend_its_backend_token_does(tmp_path: Path) -> None:
    backend_port = free_port()
    registry = auth_registry(tmp_path, backend_port)  # auth: {apiKeys: {}}: keys in Authorization
    with_passthrough(registry)
    async with running_gateway(tmp_path, registry, backend_port) as gateway:
        await assert_backend_gets_only_its_credential(gateway, ALICE)


async def test_a_jwt_never_reaches_the_backend_its_backend_token_does(tmp_path: Path) -> None:
    with AuthorizationServer([AGENT], SCOPES) as idp:
        backend_port = free_port()
        registry = auth_registry(tmp_path, backend_port)
        with_auth(registry, idp)  # auth: jwt + oauth (replaces the API keys)
        with_passthrough(registry)
        async with running_gateway(tmp_path, registry, backend_port) as gateway:
            token = idp.token(AGENT, gateway.url, "tools:read tools:call")
            await assert_backend_gets_only_its_credential(gateway, token)


async def test_a_gateway_key_header_that_slips_past_validation_is_still_never_forwarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: with the registry's check switched off, a tool that passes through
    the API-key header still gets nothing from the filter, whether the caller came in with that
    key or with a JWT (then the key header was never even checked)."""
    monkeypatch.setattr(validate, "check_passthrough", lambda *_: None)
    with AuthorizationServer([AGENT], SCOPES) as idp:
        backend_port = free_port()
        registry = auth_registry(tmp_path, backend_port)
        with_auth(registry, idp)
        petstore = registry / "petstore.yaml"
        document = yaml.safe_load(petstore.read_text())
        document["auth"]["apiKeys"] = {"header": "X-Api-Key"}
        petstore.write_text(yaml.safe_dump(document, sort_keys=False))
        with_passthrough(registry, (("leaky", "gatewayKey"),))
        async with running_gateway(tmp_path, registry, backend_port) as gateway:
            token = idp.token(AGENT, gateway.url, "tools:read tools:call")
            call = {"name": "leaky", "arguments": {"id": 1}}
            for headers in ({"x-api-key": ALICE}, bearer(token) | {"x-api-key": ALICE}):
                before = len(gateway.backend_requests)
                called = await answer(gateway.url, "tools/call", call, headers)
                assert called.status_code == 200, called.text
                assert called.json()["result"]["isError"] is True, called.text
                assert "needs the client's credential" in called.text, called.text
                sent = gateway.backend_requests[before:]
                assert all(
                    ALICE not in json.dumps(r.headers) and token not in json.dumps(r.headers) for r in sent
                )
