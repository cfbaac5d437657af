"""Tool argument failures as each protocol revision asks, through a real Envoy (SEP-1303).

From 2025-11-25 on, an input validation error is a tool execution error: a result with
`isError: true` whose text reaches the model, so it can correct its call. Up to 2025-06-18 the
same failure is the JSON-RPC error -32602. An unknown tool or a malformed request stays -32602
in every revision. Nothing reaches the backend in any of these cases.
"""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.integration.conftest import Gateway
from tests.integration.mcphttp import post, rpc

# (arguments of the demo's getPet, the message the client gets)
FAILURES = [
    ({}, "missing required argument: id"),
    ({"id": "two"}, "argument id: expected integer"),
    ({"id": 1.5}, "argument id: expected integer"),
]


@pytest.mark.parametrize(("mode", "revision"), [("legacy", "2025-11-25"), ("auto", "2026-07-28")])
async def test_sdk_client_hands_the_argument_message_to_the_model(
    gateway: Gateway, mode: str, revision: str
) -> None:
    """The `mcp` SDK over 2025-11-25 (legacy mode) and the stateless 2026-07-28 (its default mode)."""
    async with Client(gateway.url, mode=mode) as client:
        assert client.session.protocol_version == revision
        for arguments, message in FAILURES:
            result = await client.call_tool("getPet", arguments)
            assert result.is_error, result
            assert [c.type for c in result.content] == ["text"]
            assert result.content[0].text == message
        # The model corrects its call.
        result = await client.call_tool("getPet", {"id": 2})
        assert not result.is_error and result.structured_content == {"id": 2, "name": "Tom", "tag": "cat"}
        # An unknown tool is still a protocol error.
        with pytest.raises(MCPError) as refused:
            await client.call_tool("nope", {})
        assert (refused.value.error.code, refused.value.error.message) == (-32602, "unknown tool: nope")
    assert [(seen.method, seen.path) for seen in gateway.backend_requests] == [("GET", "/v1/pets/2")]


def tool_error(id: int, message: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": id,
        "result": {"content": [{"type": "text", "text": message}], "isError": True},
    }


def invalid_params(id: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": message}}


async def test_the_form_follows_the_revision_of_the_request(gateway: Gateway) -> None:
    """Raw HTTP: by `MCP-Protocol-Version`, else by the session's negotiated version."""
    for arguments, message in FAILURES:
        body = rpc("tools/call", {"name": "getPet", "arguments": arguments}, id=3)
        for version, header, expected in [
            ("2025-11-25", "2025-11-25", tool_error(3, message)),
            ("2025-06-18", "2025-06-18", invalid_params(3, message)),
            ("2025-03-26", "2025-03-26", invalid_params(3, message)),
            # Without the header, the version the session was opened with.
            ("2025-11-25", None, tool_error(3, message)),
            ("2025-06-18", None, invalid_params(3, message)),
        ]:
            response = await post(gateway.url, body, version=version, mcp_protocol_version=header)
            assert response.status_code == 200, (version, header, response.text)
            assert response.json() == expected, (version, header)
    # Malformed requests and unknown tools: -32602 in every revision.
    for version in ["2025-06-18", "2025-11-25"]:
        for params, message in [
            ({"name": "nope", "arguments": {}}, "unknown tool: nope"),
            ({"name": "getPet", "arguments": [1]}, "invalid params: arguments must be an object"),
            ({"name": 7}, "invalid params: name must be a string"),
        ]:
            response = await post(gateway.url, rpc("tools/call", params, id=4), version=version)
            assert response.json() == invalid_params(4, message), version
    assert gateway.backend_requests == []
