"""End to end: OpenAPI document → `mcpgw import` → registry → Envoy + mcp-server.wasm → a real backend.

The backend implements the library API's operations just enough to answer, and records every
request byte for byte, so each call asserts exactly what the imported tool sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web
from mcp import Client

from mcpgw.cli import main
from mcpgw.httpserve import ServedApp, serve
from tests.integration.conftest import envoy_client_headers, running_gateway

FIXTURES = Path(__file__).parent.parent / "fixtures" / "importers"
# The imported backend keeps the registry's default timeout, 10 s.
ENVOY_HEADERS = envoy_client_headers(10000)
BOOK = {"id": 7, "title": "Dune", "authorId": 3, "genre": "fiction", "year": 1965, "isbn": None, "copies": 2}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


SEEN = web.AppKey("seen", list[Seen])


async def _library(request: web.Request) -> web.Response:
    """Answers every library operation; the recorded request is what the tests look at."""
    body = await request.read()
    path, _, query = request.raw_path.partition("?")
    headers = {k.lower(): v for k, v in request.headers.items()}
    request.app[SEEN].append(Seen(request.method, path, query, headers, body))
    if (request.method, path) == ("GET", "/api/v1/books/7"):
        return web.json_response(BOOK)
    if (request.method, path) == ("POST", "/api/v1/books"):
        return web.json_response({"id": 8, **json.loads(body)}, status=201)
    if path.startswith("/api/v1/books/404"):
        return web.json_response({"error": "no such book"}, status=404)
    return web.json_response({"ok": True, "method": request.method, "path": path})


@pytest.fixture
async def backend() -> AsyncIterator[ServedApp]:
    app = web.Application()
    app[SEEN] = []
    app.router.add_route("*", "/{tail:.*}", _library)
    served = await serve(app, "127.0.0.1", 0)
    try:
        yield served
    finally:
        await served.close()


def last(backend: ServedApp) -> Seen:
    seen = backend.runner.app[SEEN]
    assert seen, "the backend saw no request"
    return seen[-1]


def text_json(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


# The same API as OpenAPI 3.0 YAML and as OpenAPI 3.1 JSON.
@pytest.mark.parametrize("document", ["library-openapi-3.0.yaml", "library-openapi-3.1.json"])
async def test_imported_openapi_tools_call_the_backend_through_envoy(
    tmp_path: Path, backend: ServedApp, document: str
) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    args = [
        "import",
        "openapi",
        "-f",
        str(FIXTURES / document),
        "-o",
        str(registry / "library.yaml"),
        "--name",
        "library",
    ]
    assert main([*args, "--backend", f"127.0.0.1:{backend.port}"]) == 0
    host = {"host": f"127.0.0.1:{backend.port}"}

    async with running_gateway(tmp_path, registry) as gateway:
        url = f"{gateway.stack.mcp_base_url}/mcp/default/library"
        async with Client(url, mode="legacy") as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert len(tools) == 24 and "uploadCover" not in tools
            assert tools["getBook"].input_schema["required"] == ["bookId", "X-Tenant"]

            # GET with a path argument, a query argument and a query default (limit=20).
            result = await client.call_tool("listCopies", {"bookId": 7, "status": "available"})
            seen = last(backend)
            assert (seen.method, seen.path, seen.query) == (
                "GET",
                "/api/v1/books/7/copies",
                "status=available&limit=20",
            )
            assert seen.headers == {**host, **ENVOY_HEADERS} and seen.body == b""
            assert text_json(result) == {"ok": True, "method": "GET", "path": "/api/v1/books/7/copies"}

            # A header parameter, and an object answer that becomes structuredContent.
            result = await client.call_tool("getBook", {"bookId": 7, "X-Tenant": "north"})
            seen = last(backend)
            assert (seen.method, seen.path, seen.query) == ("GET", "/api/v1/books/7", "")
            assert seen.headers == {**host, "x-tenant": "north", **ENVOY_HEADERS}
            assert result.structured_content == BOOK
            assert text_json(result) == BOOK

            # POST with a JSON body built from the body arguments.
            result = await client.call_tool(
                "createBook", {"title": "Dune", "authorId": 3, "genre": "fiction"}
            )
            seen = last(backend)
            assert (seen.method, seen.path, seen.query) == ("POST", "/api/v1/books", "")
            assert seen.headers == {
                **host,
                "content-type": "application/json",
                "content-length": str(len(seen.body)),
                **ENVOY_HEADERS,
            }
            assert json.loads(seen.body) == {"title": "Dune", "authorId": 3, "genre": "fiction"}
            assert result.structured_content == {"id": 8, "title": "Dune", "authorId": 3, "genre": "fiction"}

            # A form POST (with the enum default filled in).
            await client.call_tool("addCopy", {"bookId": 7, "barcode": "B-001", "shelf": "A 3"})
            seen = last(backend)
            assert (seen.method, seen.path) == ("POST", "/api/v1/books/7/copies")
            assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
            assert parse_qsl(seen.body.decode()) == [
                ("barcode", "B-001"),
                ("shelf", "A 3"),
                ("condition", "good"),
            ]

            # A non-object JSON body: the whole array is the `body` argument.
            await client.call_tool("setBookTags", {"bookId": 7, "body": ["sci-fi", "classic"]})
            seen = last(backend)
            assert (seen.method, seen.path) == ("PUT", "/api/v1/books/7/tags")
            assert seen.headers["content-type"] == "application/json"
            assert json.loads(seen.body) == ["sci-fi", "classic"]

            # A required header, and a query parameter whose name is no valid argument name.
            await client.call_tool("listMembers", {"X-Branch": "CENTRAL", "active": True})
            seen = last(backend)
            assert (seen.method, seen.path, seen.query) == ("GET", "/api/v1/members", "active=true")
            assert seen.headers == {**host, "x-branch": "CENTRAL", **ENVOY_HEADERS}
            await client.call_tool("searchCatalog", {"q": "dune messiah", "page_size": 5})
            seen = last(backend)
            assert (seen.path, seen.query) == ("/api/v1/search", "page%5Bsize%5D=5&q=dune%20messiah")

            # A non-2xx answer is a tool error, not a protocol error.
            result = await client.call_tool("getBook", {"bookId": 404, "X-Tenant": "north"})
            assert result.is_error
