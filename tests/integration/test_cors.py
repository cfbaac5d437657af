"""CORS for `allowedOrigins`, through a real Envoy, on the wire and from a real browser.

The filter decides the origin check and CORS by one rule (cors.zig): a page of an accepted
origin (a loopback page, or one in `allowedOrigins`) gets its preflight answered and every answer
names its origin back with `Vary: Origin` and the headers it may read (`Mcp-Session-Id`,
`MCP-Protocol-Version`); a refused origin gets the filter's 403 without any `Access-Control-*`
header, so the browser reports a CORS failure.

The browser test runs Debian's headless Chromium (`make chromium`) driven by Playwright. Both
pages are served on 127.0.0.1; Chromium resolves their host names `app.test` and `evil.test` to
it, because a loopback origin (127.0.0.1 or localhost, any port) is always accepted.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web
from playwright.async_api import async_playwright

from mcpgw.httpserve import ServedApp, serve
from mcpgw.stack import free_port
from tests.integration.conftest import Gateway, copy_registry, running_gateway
from tests.integration.mcphttp import ACCEPT, LATEST, initialize_request, rpc

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
EXPOSED = "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate"
ALLOWED_HEADERS = (
    "Content-Type, Accept, Authorization, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, "
    "Mcp-Method, Mcp-Name"
)


@pytest.fixture
async def pages() -> AsyncIterator[tuple[ServedApp, ServedApp]]:
    """Two small page servers on 127.0.0.1: the allowed site's and a refused one's."""

    async def index(_: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>mcp page</title>", content_type="text/html")

    served: list[ServedApp] = []
    try:
        for _ in range(2):
            app = web.Application()
            app.router.add_get("/", index)
            served.append(await serve(app, "127.0.0.1", 0))
        yield served[0], served[1]
    finally:
        for s in served:
            await s.close()


@pytest.fixture
async def cors_gateway(tmp_path: Path, pages: tuple[ServedApp, ServedApp]) -> AsyncIterator[Gateway]:
    """The pet store with the allowed page's origin (and another) in `allowedOrigins`."""
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    path = registry / "petstore.yaml"
    document = yaml.safe_load(path.read_text())
    document["allowedOrigins"] = [f"http://app.test:{pages[0].port}", "https://app.example.com"]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    async with running_gateway(tmp_path, registry, backend_port) as running:
        yield running


def preflight(
    origin: str, method: str = "POST", headers: str = "content-type, mcp-protocol-version"
) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": method,
        "access-control-request-headers": headers,
    }


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-") or k == "vary"}


async def test_preflight_and_answers_on_the_wire(cors_gateway: Gateway) -> None:
    url = cors_gateway.url
    async with httpx.AsyncClient(timeout=10) as http:
        for origin in ["https://app.example.com", "https://APP.example.com:443", "http://localhost:6274"]:
            response = await http.options(url, headers=preflight(origin))
            assert response.status_code == 204, (origin, response.text)
            assert response.content == b""
            assert cors_headers(response) == {
                "access-control-allow-origin": origin,
                "vary": "Origin",
                "access-control-allow-methods": "POST, GET, DELETE, OPTIONS",
                "access-control-allow-headers": ALLOWED_HEADERS,
                "access-control-max-age": "600",
            }
        # A refused origin: the filter's 403, no Access-Control-* at all.
        for origin in ["https://evil.example", "https://app.example.com:8443", "null"]:
            response = await http.options(url, headers=preflight(origin))
            assert response.status_code == 403, origin
            assert response.json()["error"]["message"] == "Forbidden: Origin not allowed"
            assert cors_headers(response) == {}
            response = await http.post(url, json=initialize_request(), headers=ACCEPT | {"origin": origin})
            assert response.status_code == 403 and cors_headers(response) == {}
        # OPTIONS that is no preflight stays 405, CORS headers or not.
        response = await http.options(url, headers={"origin": "https://app.example.com"})
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"

        # Every answer to an accepted origin names it, with what the page may read.
        origin = {"origin": "https://app.example.com"}
        expected = {
            "access-control-allow-origin": "https://app.example.com",
            "vary": "Origin",
            "access-control-expose-headers": EXPOSED,
        }
        response = await http.post(url, json=initialize_request(), headers=ACCEPT | origin)
        assert response.status_code == 200 and cors_headers(response) == expected
        session = response.headers["mcp-session-id"]
        session_headers = ACCEPT | origin | {"mcp-session-id": session, "mcp-protocol-version": LATEST}
        response = await http.post(url, json=rpc("tools/list"), headers=session_headers)
        assert response.status_code == 200 and cors_headers(response) == expected
        # Errors too: a missing session (400), a bad Accept (406), an argument error, a 202.
        response = await http.post(url, json=rpc("tools/list"), headers=ACCEPT | origin)
        assert response.status_code == 400 and cors_headers(response) == expected
        response = await http.post(url, json=rpc("ping"), headers=ACCEPT | origin | {"accept": "text/html"})
        assert response.status_code == 406 and cors_headers(response) == expected
        call = rpc("tools/call", {"name": "getPet", "arguments": {}})
        response = await http.post(url, json=call, headers=session_headers)
        assert response.json()["result"]["isError"] is True and cors_headers(response) == expected
        notification = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        response = await http.post(url, json=notification, headers=session_headers)
        assert response.status_code == 202 and cors_headers(response) == expected
        response = await http.delete(url, headers=session_headers)
        assert response.status_code == 204 and cors_headers(response) == expected
        # No Origin (SDKs, curl): no CORS headers.
        response = await http.post(url, json=initialize_request(), headers=ACCEPT)
        assert response.status_code == 200 and cors_headers(response) == {}


# Runs in the page: the MCP handshake and tools/list with fetch(), as a browser MCP client does.
PAGE_SCRIPT = """
async (url) => {
  const headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"};
  try {
    const init = await fetch(url, {method: "POST", headers, body: JSON.stringify({
      jsonrpc: "2.0", id: 1, method: "initialize",
      params: {protocolVersion: "2025-11-25", capabilities: {}, clientInfo: {name: "page", version: "1"}}})});
    const session = init.headers.get("mcp-session-id");
    const version = (await init.json()).result.protocolVersion;
    const more = {...headers, "mcp-session-id": session, "mcp-protocol-version": version};
    const done = await fetch(url, {method: "POST", headers: more,
      body: JSON.stringify({jsonrpc: "2.0", method: "notifications/initialized"})});
    const list = await fetch(url, {method: "POST", headers: more,
      body: JSON.stringify({jsonrpc: "2.0", id: 2, method: "tools/list"})});
    const tools = (await list.json()).result.tools.map((t) => t.name);
    return {ok: true, status: init.status, session, version, initialized: done.status, tools};
  } catch (e) {
    return {ok: false, error: String(e)};
  }
}
"""


async def run_in_page(page_url: str, gateway_url: str) -> dict[str, Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make chromium`)", pytrace=False)
    rules = ", ".join(f"MAP {host} 127.0.0.1" for host in ["app.test", "evil.test"])
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, f"--host-resolver-rules={rules}"]
        )
        try:
            page = await browser.new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            await page.goto(page_url, timeout=15_000)
            result: dict[str, Any] = await page.evaluate(PAGE_SCRIPT, gateway_url)
            result["console"] = console
            return result
        finally:
            await browser.close()


async def test_a_browser_page_of_an_allowed_origin_talks_mcp_and_a_refused_one_cannot(
    cors_gateway: Gateway, pages: tuple[ServedApp, ServedApp]
) -> None:
    allowed, refused = pages
    result = await run_in_page(f"http://app.test:{allowed.port}/", cors_gateway.url)
    assert result["ok"], result
    assert (result["status"], result["version"], result["initialized"]) == (200, LATEST, 202)
    # The page read Mcp-Session-Id: exposed to it.
    assert result["session"], result
    assert result["tools"] == ["listPets", "getPet", "createPet", "describePet"]

    result = await run_in_page(f"http://evil.test:{refused.port}/", cors_gateway.url)
    assert not result["ok"] and result["error"] == "TypeError: Failed to fetch", result
    assert any("blocked by CORS policy" in line for line in result["console"]), result
