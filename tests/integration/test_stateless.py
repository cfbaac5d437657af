"""End to end over the stateless MCP revision 2026-07-28: SDK client (default mode) and raw HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
from mcp import Client

from tests.integration.conftest import Gateway

MODERN = "2026-07-28"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META = {
    META_VERSION: MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}


def request(method: str, params: dict[str, Any] | None = None, *, id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": {**(params or {}), "_meta": META}}


def headers(method: str, name: str | None = None, version: str = MODERN) -> dict[str, str]:
    h = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": version,
        "mcp-method": method,
    }
    if name is not None:
        h["mcp-name"] = name
    return h


async def post(url: str, body: Any, hdrs: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, content=json.dumps(body).encode(), headers=hdrs)


async def test_sdk_default_mode_negotiates_2026_07_28(gateway: Gateway) -> None:
    async with Client(gateway.url) as client:
        assert client.protocol_version == MODERN
        assert client.server_info is not None and client.server_info.name == "default/petstore"
        tools = [tool.name for tool in (await client.list_tools()).tools]
        assert tools == ["listPets", "getPet", "createPet", "describePet"]

        result = await client.call_tool("getPet", {"id": 2, "fields": "name,tag"})
        assert not result.is_error
        assert result.structured_content == {"name": "Tom", "tag": "cat"}
        seen = gateway.backend_requests[-1]
        assert (seen.method, seen.path, seen.query) == ("GET", "/v1/pets/2", "fields=name%2Ctag")

        result = await client.call_tool("describePet", {"id": 99})
        assert result.is_error and result.content[0].text == "No such pet: pet 99 not found"


async def test_discover_list_and_call_over_raw_http(gateway: Gateway) -> None:
    response = await post(gateway.url, request("server/discover"), headers("server/discover"))
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers
    result = response.json()["result"]
    assert MODERN in result["supportedVersions"]
    assert result["capabilities"] == {"tools": {}}
    assert result["resultType"] == "complete"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "default/petstore"

    response = await post(gateway.url, request("tools/list"), headers("tools/list"))
    assert response.status_code == 200 and "mcp-session-id" not in response.headers
    result = response.json()["result"]
    assert result["resultType"] == "complete" and len(result["tools"]) == 4

    body = request("tools/call", {"name": "listPets", "arguments": {"tag": "dog"}})
    response = await post(gateway.url, body, headers("tools/call", "listPets"))
    assert response.status_code == 200 and "mcp-session-id" not in response.headers
    result = response.json()["result"]
    assert result["resultType"] == "complete" and result["isError"] is False
    assert json.loads(result["content"][0]["text"]) == [{"id": 1, "name": "Rex", "tag": "dog"}]


async def test_header_mismatch_and_missing_meta(gateway: Gateway) -> None:
    body = request("tools/call", {"name": "listPets", "arguments": {}}, id=3)
    response = await post(gateway.url, body, headers("tools/call", "getPet"))
    assert response.status_code == 400
    assert response.json()["id"] == 3 and response.json()["error"]["code"] == -32020

    response = await post(gateway.url, body, headers("tools/list", "listPets"))
    assert response.status_code == 400 and response.json()["error"]["code"] == -32020

    response = await post(gateway.url, request("tools/list"), headers("tools/list", version="2025-11-25"))
    assert response.status_code == 400 and response.json()["error"]["code"] == -32020

    no_meta = {"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {}}
    response = await post(gateway.url, no_meta, headers("tools/list"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32602 and "_meta" in response.json()["error"]["message"]

    half = {"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": {META_VERSION: MODERN}}}
    response = await post(gateway.url, half, headers("tools/list"))
    assert response.status_code == 400 and response.json()["error"]["code"] == -32602

    # The revision removed ping and initialize.
    response = await post(gateway.url, request("ping"), headers("ping"))
    assert response.status_code == 404 and response.json()["error"]["code"] == -32601
