"""Raw Streamable HTTP for tests that check the wire: one message per call, inside a fresh session.

The gateway issues a signed `Mcp-Session-Id` at `initialize` and refuses other requests without
it, so `post` performs the handshake (initialize + notifications/initialized) first and sends the
message with the session's headers, unless the test asks for a bare request (`session=False`).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
LATEST = "2025-11-25"


def rpc(method: str, params: dict[str, Any] | None = None, id: int | str = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def initialize_request(version: str = LATEST, id: int | str = 0) -> dict[str, Any]:
    return rpc(
        "initialize",
        {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "mcpgw-tests", "version": "1"},
        },
        id=id,
    )


async def open_session(http: httpx.AsyncClient, url: str, version: str = LATEST) -> dict[str, str]:
    """The handshake; returns the headers later requests of this session carry."""
    response = await http.post(url, json=initialize_request(version), headers=ACCEPT)
    assert response.status_code == 200, f"initialize: {response.status_code} {response.text}"
    headers = {"mcp-protocol-version": response.json()["result"]["protocolVersion"]}
    if session_id := response.headers.get("mcp-session-id"):
        headers["mcp-session-id"] = session_id
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    response = await http.post(url, json=initialized, headers=ACCEPT | headers)
    assert response.status_code == 202, f"notifications/initialized: {response.status_code} {response.text}"
    return headers


async def post(
    url: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    session: bool = True,
    version: str = LATEST,
    **headers: str | None,
) -> httpx.Response:
    """POST `body` (or the bytes `raw`) as one message; keyword headers use `_` for `-`.

    The session is opened with protocol `version` (the latest by default).

    A header given as None is left out, e.g. `mcp_protocol_version=None` sends the session's
    request without the version header.
    """
    async with httpx.AsyncClient(timeout=10) as http:
        sent = dict(ACCEPT)
        if session:
            sent |= await open_session(http, url, version)
        for name, value in headers.items():
            name = name.replace("_", "-")
            if value is None:
                sent.pop(name, None)
            else:
                sent[name] = value
        content = raw if raw is not None else json.dumps(body).encode()
        return await http.post(url, content=content, headers=sent)


async def call(
    url: str, method: str, params: dict[str, Any] | None = None, **headers: str | None
) -> dict[str, Any]:
    """One request in a fresh session that must answer HTTP 200; its JSON-RPC answer."""
    response = await post(url, rpc(method, params), **headers)
    assert response.status_code == 200, f"{method}: {response.status_code} {response.text}"
    return response.json()
