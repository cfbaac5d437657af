"""Deeply nested JSON never takes a worker down (issue 12, defect 1).

Nesting of 100,000 levels goes to every place the filter parses or re-serialises a value: client
messages of every kind (legacy and 2026-07-28, REST and `type: mcp` servers), a REST answer a
response template prints with `{{.}}`, `type: mcp` answers as JSON and as SSE frames, for legacy
and for stateless clients. Each gets its clear error, and then every worker of a two-worker Envoy
still answers, with no VM failed and reloaded on the way (the reload policy would hide a crash).
Values at the largest configurable depth (1000) are parsed and re-serialised on every path
(argsToJsonBody, `{{.}}`, the legacy form sent upstream, a rewritten upstream result).

Real Envoy, real filter; the backend is a small aiohttp app that is both the REST service and a
minimal MCP upstream (it answers without parsing the deep bodies it is sent).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from mcpgw.httpserve import ServedApp, serve
from tests.integration.conftest import Gateway, running_gateway
from tests.integration.mcphttp import ACCEPT, open_session
from tests.integration.test_mcp_upstream import wait_served
from tests.integration.test_stateless import META
from tests.integration.test_stateless import headers as modern_headers

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEEP = 100_000
CAP = 1000  # the largest limits.maxJsonDepth
# What a value may add at the cap: the JSON-RPC envelope, params and arguments (3 levels) or the
# upstream's answer envelope around the result (2); a few levels more to spare.
AT_CAP = CAP - 5


def nested(depth: int) -> str:
    """`depth` levels of arrays around a number: `[[[...1...]]]`, as text (json.dumps recurses)."""
    return "[" * depth + "1" + "]" * depth


def message(method: str, params: str, *, id: int | None = 1, meta: bool = False) -> bytes:
    """A JSON-RPC message whose params are `params` (JSON text), optionally with the 2026-07-28
    `_meta` envelope."""
    if meta:
        inner = params[1:-1]
        params = "{" + (inner + "," if inner else "") + '"_meta":' + json.dumps(META) + "}"
    head = '{"jsonrpc":"2.0",' + (f'"id":{id},' if id is not None else "")
    return (head + f'"method":"{method}","params":{params}' + "}").encode()


def call_params(tool: str, value: str) -> str:
    return '{"name":"' + tool + '","arguments":{"tree":' + value + "}}"


# ------------------------------------------------------------------------ the backend


async def _rest(request: web.Request) -> web.Response:
    """REST: `/nested?depth=N` answers `{"v": <N-1 levels>}`; anything else echoes its body."""
    if request.path == "/nested":
        depth = int(request.query["depth"])
        return web.Response(text='{"v":' + nested(depth - 1) + "}", content_type="application/json")
    body = await request.read()
    return web.json_response({"received": len(body)})


_ID = re.compile(rb'"id":(\d+|"[^"]*")')
_METHOD = re.compile(rb'"method":"([^"]+)"')
_NAME = re.compile(rb'"name":"([^"]+)"')


async def _mcp(request: web.Request) -> web.StreamResponse:
    """A minimal MCP upstream over Streamable HTTP. It reads the id, method and tool name with
    regular expressions: the gateway sends it values nested as deep as the cap."""
    if request.method == "DELETE":
        return web.Response(status=204)
    body = await request.read()
    method = _METHOD.search(body)
    found = _ID.search(body)
    if method is None or found is None:
        return web.Response(status=202)
    name, id = method.group(1).decode(), found.group(1).decode()
    if name == "initialize":
        result = (
            '{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},'
            '"serverInfo":{"name":"deep-upstream","version":"1"}}'
        )
        return answer(id, result, {"mcp-session-id": "upstream-session-1"})
    if name == "tools/list":
        return answer(id, '{"tools":[{"name":"deep","inputSchema":{"type":"object"}}]}')
    tool = _NAME.search(body)
    which = tool.group(1).decode() if tool else ""
    if which == "deep":
        return answer(id, '{"content":[],"structuredContent":{"v":' + nested(DEEP) + "}}")
    if which == "deepSse":
        return answer(id, '{"content":[],"structuredContent":{"v":' + nested(DEEP) + "}}", sse=True)
    if which == "atCap":
        # The result object is level 2 under the envelope.
        return answer(id, '{"content":[],"structuredContent":{"v":' + nested(AT_CAP - 3) + "}}")
    return answer(id, '{"content":[{"type":"text","text":"got ' + str(len(body)) + ' bytes"}]}')


def answer(id: str, result: str, headers: dict[str, str] | None = None, sse: bool = False) -> web.Response:
    text = '{"jsonrpc":"2.0","id":' + id + ',"result":' + result + "}"
    if sse:
        # A deep notification first: skipped, the deep response after it refused.
        note = '{"jsonrpc":"2.0","method":"notifications/message","params":{"v":' + nested(DEEP) + "}}"
        text = f"event: message\ndata: {note}\n\nevent: message\ndata: {text}\n\n"
        return web.Response(text=text, content_type="text/event-stream", headers=headers)
    return web.Response(text=text, content_type="application/json", headers=headers)


def backend_app() -> web.Application:
    app = web.Application(client_max_size=8 << 20)
    app.router.add_route("*", "/mcp", _mcp)
    app.router.add_route("*", "/{tail:.*}", _rest)
    return app


# ------------------------------------------------------------------------ the gateway


def rest_server(name: str, backend: ServedApp, depth: int | None) -> dict[str, Any]:
    tree = {"name": "tree", "type": "array"}
    document: dict[str, Any] = {
        "kind": "McpServer",
        "name": name,
        "backend": {"endpoints": [f"127.0.0.1:{backend.port}"], "timeoutMs": 5000},
        "limits": {"maxResponseBytes": 1 << 20},
        "tools": [
            {
                # {{.}}: the template prints the whole parsed answer.
                "name": "printAnswer",
                "args": [{"name": "depth", "type": "integer", "required": True}],
                "requestTemplate": {"url": "/nested?depth={{.args.depth}}", "method": "GET"},
                "responseTemplate": {"body": "{{.}}"},
            },
            {
                "name": "postTree",
                "args": [tree],
                "requestTemplate": {"url": "/sink", "method": "POST", "argsToJsonBody": True},
            },
        ],
    }
    if depth is not None:
        document["limits"]["maxJsonDepth"] = depth
    return document


def mcp_server(name: str, backend: ServedApp, depth: int | None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "kind": "McpServer",
        "type": "mcp",
        "name": name,
        "backend": {"endpoints": [f"127.0.0.1:{backend.port}"], "timeoutMs": 5000},
    }
    if depth is not None:
        document["limits"] = {"maxJsonDepth": depth}
    return document


@dataclass
class Setup:
    gateway: Gateway
    # Envoy's Wasm VM counters once every server is served (see `vm_counters`).
    vms: dict[str, int] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"{self.gateway.stack.mcp_base_url}/mcp/default/{name}"

    def stats(self, prefix: str) -> dict[str, int]:
        envoy = self.gateway.stack.envoy
        assert envoy is not None
        return envoy.stats(prefix)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("deep")
    backend = await serve(backend_app(), "127.0.0.1", 0)
    registry = workdir / "registry"
    registry.mkdir()
    documents = [
        rest_server("rest", backend, None),
        rest_server("rest-cap", backend, CAP),
        mcp_server("up", backend, None),
        mcp_server("up-cap", backend, CAP),
    ]
    (registry / "deep.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    try:
        # Two workers: the test must see every one of them still answering.
        async with running_gateway(workdir, registry, envoy_concurrency=2) as gateway:
            ready = Setup(gateway)
            for document in documents:
                await wait_served(ready.url(document["name"]))
            ready.vms = vm_counters(ready)
            yield ready
    finally:
        await backend.runner.cleanup()


async def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=15) as http:
        return await http.post(url, content=body, headers=headers)


async def in_session(url: str, body: bytes) -> httpx.Response:
    """`body` inside a fresh legacy session."""
    async with httpx.AsyncClient(timeout=15) as http:
        session = await open_session(http, url)
        return await http.post(url, content=body, headers=ACCEPT | session)


def vm_counters(setup: Setup) -> dict[str, int]:
    """Envoy's count of Wasm VMs created and reloaded: a VM that crashed and was reloaded
    (FAIL_RELOAD) shows here even though later requests succeed."""
    stats = setup.stats("wasm.")
    return {
        k: v for k, v in stats.items() if k.endswith((".created", "vm_reload_success", "vm_reload_failure"))
    }


def parse_error(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == -32700, error
    assert "nested deeper than the limit of 64 levels" in error["message"], error
    assert response.json()["id"] is None


# ------------------------------------------------------------------------ the tests


async def test_deep_client_messages_are_parse_errors(setup: Setup) -> None:
    deep = '{"x":' + nested(DEEP) + "}"
    for server in ("rest", "up"):
        url = setup.url(server)
        for method in ("initialize", "tools/list", "tools/call", "ping", "resources/list"):
            parse_error(await post(url, message(method, deep), ACCEPT))
        # A notification and a client response: no id to answer, still refused.
        parse_error(await post(url, message("notifications/initialized", deep, id=None), ACCEPT))
        parse_error(
            await post(url, b'{"jsonrpc":"2.0","id":7,"result":' + nested(DEEP).encode() + b"}", ACCEPT)
        )
        # Inside a session, and as a stateless 2026-07-28 request.
        parse_error(await in_session(url, message("tools/call", call_params("x", nested(DEEP)))))
        stateless = message("tools/call", call_params("deep", nested(DEEP)), meta=True)
        parse_error(await post(url, stateless, modern_headers("tools/call", "deep")))
    # Nesting hidden in a string is not nesting.
    listed = message("tools/list", '{"s":"' + "[" * DEEP + '"}', meta=True)
    response = await post(setup.url("rest"), listed, modern_headers("tools/list"))
    assert response.status_code == 200 and "tools" in response.json()["result"], response.text


async def test_deep_rest_answer_is_a_tool_error(setup: Setup) -> None:
    body = message("tools/call", '{"name":"printAnswer","arguments":{"depth":' + str(DEEP) + "}}")
    response = await in_session(setup.url("rest"), body)
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["isError"] is True
    assert result["content"][0]["text"] == "upstream answer nests JSON deeper than the limit of 64 levels"


@pytest.mark.parametrize("tool", ["deep", "deepSse"])
async def test_deep_mcp_upstream_answers_are_errors_for_legacy_and_stateless_clients(
    setup: Setup, tool: str
) -> None:
    url = setup.url("up")
    legacy = await in_session(url, message("tools/call", call_params(tool, "1")))
    stateless = await post(
        url, message("tools/call", call_params(tool, "1"), meta=True), modern_headers("tools/call", tool)
    )
    for response in (legacy, stateless):
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == -32603
        assert "answered JSON nested deeper than the limit of 64 levels" in error["message"], error


async def test_values_at_the_largest_depth_are_parsed_and_reserialised(setup: Setup) -> None:
    # argsToJsonBody re-serialises the argument; {{.}} prints the whole answer.
    rest = setup.url("rest-cap")
    posted = await in_session(rest, message("tools/call", call_params("postTree", nested(AT_CAP - 3))))
    assert posted.status_code == 200 and posted.json()["result"]["isError"] is False, posted.text
    printed = await in_session(
        rest, message("tools/call", '{"name":"printAnswer","arguments":{"depth":' + str(AT_CAP) + "}}")
    )
    assert printed.status_code == 200, printed.text
    text = printed.json()["result"]["content"][0]["text"]
    assert printed.json()["result"]["isError"] is False and nested(AT_CAP - 1) in text, text[:200]
    # type: mcp, stateless: the request goes upstream in its legacy form (re-serialised) and the
    # upstream's result comes back rewritten (re-serialised again).
    up = setup.url("up-cap")
    sent = message("tools/call", call_params("echo", nested(AT_CAP - 3)), meta=True)
    echoed = await post(up, sent, modern_headers("tools/call", "echo"))
    assert echoed.status_code == 200 and "got" in echoed.text, echoed.text
    deep_result = await post(
        up, message("tools/call", call_params("atCap", "1"), meta=True), modern_headers("tools/call", "atCap")
    )
    assert deep_result.status_code == 200, deep_result.text
    assert nested(AT_CAP - 3) in deep_result.text
    legacy = await in_session(up, message("tools/call", call_params("atCap", "1")))
    assert legacy.status_code == 200 and nested(AT_CAP - 3) in legacy.text, legacy.text[:200]


async def test_deep_body_keeps_vm_memory_flat(setup: Setup) -> None:
    """A body just under maxRequestBytes (1 MiB) of nothing but `[`: refused before parsing, so
    the VM's linear memory (which Wasm never gives back) does not grow by the ~258 MiB a parse of
    it used to take."""
    gauge = "wasmcustom.mcpgw_vm_memory_bytes"
    body = b"[" * ((1 << 20) - 16)
    parse_error(await post(setup.url("rest"), body, ACCEPT))
    before = setup.stats(gauge)[gauge]
    for _ in range(4):
        parse_error(await post(setup.url("rest"), body, ACCEPT))
    after = setup.stats(gauge)[gauge]
    assert after - before <= 4 << 20, (before, after)
    assert after < 64 << 20, after


async def test_every_worker_still_answers(setup: Setup) -> None:
    """Runs last in this module: after every deep body above, each worker's VM answers, and
    none was failed and reloaded on the way."""
    assert vm_counters(setup) == setup.vms
    assert not any(v for k, v in setup.vms.items() if "vm_reload" in k), setup.vms
    # The MCP listener's workers only (the bootstrap's stats listener has its own stats).
    port = setup.gateway.stack.options.listen_port
    listener = {
        k: v
        for k, v in setup.stats("listener.").items()
        if re.search(rf"_{port}\.worker_\d+\.downstream_cx_total$", k)
    }
    assert len(listener) >= 2, listener
    listing = message("tools/list", "{}", meta=True)
    for _ in range(32):
        # A fresh connection each time: Envoy hands connections to its workers in turn.
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.post(setup.url("rest"), data=listing, headers=modern_headers("tools/list")) as response,
        ):
            assert response.status == 200, await response.text()
            assert (await response.json())["result"] is not None
    after = {k: v for k, v in setup.stats("listener.").items() if k in listener}
    hit = [k for k in listener if after[k] > listener[k]]
    assert len(hit) == len(listener), (listener, after)
    assert vm_counters(setup) == setup.vms
