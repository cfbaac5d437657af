"""Streamable HTTP (2025-03-26 / 2025-06-18 / 2025-11-25) through the real stack: the
MCP-Protocol-Version header, Origin checks against DNS rebinding, Accept, DELETE and
paginated tools/list with opaque cursors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from mcp import Client

from mcpgw.stack import free_port
from tests.integration.conftest import Gateway, copy_registry, running_gateway
from tests.integration.mcphttp import post, rpc

ALL_TOOLS = ["listPets", "getPet", "createPet", "describePet"]
ALLOWED = "https://app.example.com"


@pytest.fixture
async def paged_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """The example registry with pageSize 2 and one allowed browser origin on the pet store."""
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    path = registry / "petstore.yaml"
    document = yaml.safe_load(path.read_text())
    document.update(pageSize=2, allowedOrigins=[ALLOWED])
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    async with running_gateway(tmp_path, registry, backend_port) as running:
        yield running


async def test_protocol_version_header(paged_gateway: Gateway) -> None:
    url = paged_gateway.url
    # Absent: 2025-03-26 assumed, accepted; a served version: accepted.
    assert (await post(url, rpc("ping"), mcp_protocol_version=None)).status_code == 200
    assert (await post(url, rpc("ping"), mcp_protocol_version="2025-06-18")).status_code == 200
    response = await post(url, rpc("ping", id=41), mcp_protocol_version="1999-01-01")
    assert response.status_code == 400
    body = response.json()
    assert body["id"] == 41 and body["error"]["code"] == -32600
    assert "1999-01-01" in body["error"]["message"]
    assert "2025-03-26, 2025-06-18, 2025-11-25" in body["error"]["message"]
    # initialize negotiates in its body, whatever the header says.
    init = rpc(
        "initialize",
        {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    )
    response = await post(url, init, session=False, mcp_protocol_version="1999-01-01")
    assert response.status_code == 200 and response.json()["result"]["protocolVersion"] == "2025-11-25"
    assert response.json()["result"]["capabilities"] == {"tools": {"listChanged": False}}


async def test_origin_checks(paged_gateway: Gateway) -> None:
    url = paged_gateway.url
    response = await post(url, rpc("ping"), origin="https://evil.example")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == -32600 and response.json()["id"] is None
    assert (await post(url, rpc("ping"), origin="http://localhost:6274")).status_code == 200
    assert (await post(url, rpc("ping"), origin="http://127.0.0.1:3000")).status_code == 200
    assert (await post(url, rpc("ping"), origin=ALLOWED)).status_code == 200
    assert (await post(url, rpc("ping"), origin="https://app.example.com:8443")).status_code == 403
    # No Origin at all (SDKs, curl): accepted.
    assert (await post(url, rpc("ping"))).status_code == 200


async def test_accept_and_delete(paged_gateway: Gateway) -> None:
    url = paged_gateway.url
    response = await post(url, rpc("ping"), accept="text/html")
    assert response.status_code == 406 and response.json()["error"]["code"] == -32600
    for accept in ("application/json", "text/event-stream", "application/json, text/event-stream", "*/*"):
        assert (await post(url, rpc("ping"), accept=accept)).status_code == 200, accept
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.delete(url, headers={"mcp-session-id": "anything"})
    assert response.status_code == 405 and response.headers["allow"] == "POST"


async def test_pagination_with_the_sdk_and_raw_requests(paged_gateway: Gateway) -> None:
    url = paged_gateway.url
    async with Client(url, mode="legacy") as client:
        names: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            pages += 1
            assert len(page.tools) <= 2
            names += [tool.name for tool in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert names == ALL_TOOLS and pages == 2

    response = await post(url, rpc("tools/list"))
    result = response.json()["result"]
    assert [t["name"] for t in result["tools"]] == ALL_TOOLS[:2]
    assert isinstance(result["nextCursor"], str) and result["nextCursor"]
    response = await post(url, rpc("tools/list", {"cursor": result["nextCursor"]}))
    result = response.json()["result"]
    assert [t["name"] for t in result["tools"]] == ALL_TOOLS[2:] and "nextCursor" not in result

    response = await post(url, rpc("tools/list", {"cursor": "not-a-cursor"}, id=9))
    assert response.status_code == 200
    assert response.json()["id"] == 9 and response.json()["error"]["code"] == -32602
