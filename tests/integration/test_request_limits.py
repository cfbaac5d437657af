"""`limits.maxRequestBytes` is the real limit on both sides of Envoy's 1 MiB default buffer, and a
body over it always gets a JSON-RPC answer (issue 12, defect 8).

Envoy buffers the body the filter waits for; its per-connection limit used to be its 1 MiB
default, so a server allowing 4 MiB still answered a plain-text 413 above 1 MiB. Real Envoy, real
filter; bodies go out as a client sends them: with `Content-Length` (refused from the headers),
and chunked in small and large pieces (refused once the filter, or Envoy's own limit above every
server's, sees them cross).
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from mcpgw.stack import free_port
from tests.integration.conftest import Gateway, running_gateway
from tests.integration.test_mcp_upstream import wait_served
from tests.integration.test_stateless import headers as modern_headers
from tests.integration.test_stateless import request as modern_request

pytestmark = pytest.mark.asyncio(loop_scope="module")

MIB = 1 << 20
BIG = 4 * MIB


def server(name: str, max_request_bytes: int | None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "kind": "McpServer",
        "name": name,
        # Never called: tools/list is answered by the filter.
        "backend": {"endpoints": [f"127.0.0.1:{free_port()}"]},
        "tools": [{"name": "t", "requestTemplate": {"url": "/t", "method": "GET"}}],
    }
    if max_request_bytes is not None:
        document["limits"] = {"maxRequestBytes": max_request_bytes}
    return document


@dataclass
class Setup:
    gateway: Gateway

    @property
    def port(self) -> int:
        return int(self.gateway.stack.mcp_base_url.rsplit(":", 1)[1])

    def url(self, name: str) -> str:
        return f"{self.gateway.stack.mcp_base_url}/mcp/default/{name}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("limits")
    registry = workdir / "registry"
    registry.mkdir()
    documents = [server("small", None), server("big", BIG)]
    (registry / "limits.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    async with running_gateway(workdir, registry) as gateway:
        ready = Setup(gateway)
        for document in documents:
            await wait_served(ready.url(document["name"]))
        yield ready


def listing(size: int) -> bytes:
    """A stateless tools/list of exactly `size` bytes (padded with an ignored parameter)."""
    empty = json.dumps(modern_request("tools/list", {"pad": ""})).encode()
    body = json.dumps(modern_request("tools/list", {"pad": "x" * (size - len(empty))})).encode()
    assert len(body) == size
    return body


def raw_post(port: int, path: str, body: bytes, chunk: int | None) -> tuple[int, dict[str, str], bytes]:
    """POST over a plain socket, as a client that reads the answer whenever it comes: with
    `Content-Length` (chunk None: the headers first, then the body) or chunked in `chunk`-byte
    pieces. Sending stops when Envoy closes the connection."""
    head = [f"POST {path} HTTP/1.1", "Host: gateway", "Connection: close"]
    head += [f"{k}: {v}" for k, v in modern_headers("tools/list").items()]
    head.append(f"Content-Length: {len(body)}" if chunk is None else "Transfer-Encoding: chunked")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            if chunk is None:
                sock.sendall(body)
            else:
                for start in range(0, len(body), chunk):
                    piece = body[start : start + chunk]
                    sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # answered and closed before the whole body was sent
        received = b""
        try:
            while chunk_read := sock.recv(65536):
                received += chunk_read
        except OSError:
            pass
    head_bytes, _, answer = received.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/1.1 "), received[:200]
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, answer


async def test_bodies_within_the_limit_are_served_below_and_above_one_mib(setup: Setup) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        for name, size in (("small", MIB - 64), ("big", 3 * MIB), ("big", BIG)):
            response = await http.post(
                setup.url(name), content=listing(size), headers=modern_headers("tools/list")
            )
            assert response.status_code == 200, (name, size, response.text[:200])
            assert response.json()["result"]["tools"][0]["name"] == "t"


@pytest.mark.parametrize("chunk", [None, 16 * 1024, MIB])
@pytest.mark.parametrize(
    ("name", "limit", "size"), [("small", MIB, MIB + 1), ("big", BIG, BIG + 1), ("big", BIG, 9 * MIB)]
)
async def test_bodies_over_the_limit_get_a_json_rpc_413(
    setup: Setup, name: str, limit: int, size: int, chunk: int | None
) -> None:
    status, headers, answer = raw_post(setup.port, f"/mcp/default/{name}", listing(size), chunk)
    assert status == 413, answer[:200]
    assert headers["content-type"] == "application/json", headers
    error = json.loads(answer)
    assert error["id"] is None and error["error"]["code"] == -32600, error
    # The filter names the server's limit; Envoy's own answer (a body that arrived past its
    # buffer in one read) is mapped to the same error without it.
    assert error["error"]["message"] in (
        f"Invalid Request: body exceeds {limit} bytes",
        "Invalid Request: body too large",
    )
