"""Header names and values from the registry and from clients, through a real Envoy to a backend
that records every request as it arrives on the wire (`wirebackend.py`).

- Gateway-owned header names (`Transfer-Encoding`, `Host`, pseudo-headers, ...) as header
  arguments, templates or `apiKey` headers, and credentials that are no header value (CR/LF
  inline, a second line in a `{file:}`), are refused by the admin API with the field path, and
  nothing changes in what Envoy serves.
- Were validation to miss one, the filter's own parser (built natively, run in the control
  plane's precheck) still refuses it with its reason.
- A header argument with a control character other than tab is refused naming the argument
  (a tool execution error in 2025-11-25, SEP-1303); no request reaches the backend, none is
  smuggled behind another, and every request carries exactly one `Host`.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from mcpgw.registry import tools as registry_tools
from tests.integration.conftest import Gateway, running_gateway
from tests.integration.mcphttp import call
from tests.integration.wirebackend import WireBackend

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "header-rules-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AUTHORITY = "hdrs.internal"


def hdrs_document(port: int) -> dict[str, Any]:
    return {
        "kind": "McpServer",
        "name": "hdrs",
        "backend": {"endpoints": [f"127.0.0.1:{port}"], "host": AUTHORITY},
        "securitySchemes": [
            {"id": "key", "type": "apiKey", "in": "header", "name": "X-Api-Key", "defaultCredential": "k-1"}
        ],
        "tools": [
            {
                "name": "note",
                "args": [
                    {"name": "id", "type": "string", "required": True, "position": "path"},
                    {"name": "X-Note", "type": "string", "position": "header"},
                    {"name": "tag", "type": "string"},
                ],
                "requestTemplate": {
                    "url": "/items/{{.args.id}}",
                    "method": "GET",
                    "headers": [{"key": "X-Tag", "value": "t-{{.args.tag}}"}],
                    "security": {"id": "key"},
                },
            }
        ],
    }


@dataclass
class Setup:
    gateway: Gateway
    backend: WireBackend
    document: dict[str, Any]
    workdir: Path

    @property
    def url(self) -> str:
        return f"{self.gateway.stack.mcp_base_url}/mcp/default/hdrs"

    @property
    def admin(self) -> str:
        assert self.gateway.stack.control_plane is not None
        return f"http://127.0.0.1:{self.gateway.stack.control_plane.status_port}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("header-rules")
    backend = await WireBackend().start()
    registry = workdir / "registry"
    registry.mkdir()
    document = hdrs_document(backend.port)
    (registry / "hdrs.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    try:
        with pytest.MonkeyPatch.context() as patch:
            # The control plane reads $MCPGW_ADMIN_TOKEN at start, as `mcpgw up` does.
            patch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
            async with running_gateway(workdir, registry) as gateway:
                yield Setup(gateway, backend, document, workdir)
    finally:
        await backend.close()


async def call_note(setup: Setup, **arguments: str) -> dict[str, Any]:
    return await call(setup.url, "tools/call", {"name": "note", "arguments": {"id": "1", **arguments}})


async def test_an_ordinary_call_carries_one_host_and_the_header_arguments(setup: Setup) -> None:
    before = len(setup.backend.requests)
    answer = await call_note(setup, **{"X-Note": "a\tb é", "tag": "x"})
    assert "result" in answer and not answer["result"].get("isError"), answer
    [request] = setup.backend.requests[before:]
    assert request.line == "GET /items/1 HTTP/1.1"
    assert request.all("host") == [AUTHORITY]
    assert request.all("x-note") == ["a\tb é"]
    assert request.all("x-tag") == ["t-x"]
    assert request.all("x-api-key") == ["k-1"]
    assert request.all("transfer-encoding") == []
    # Surrounding whitespace is allowed (HTTP/1 drops it as optional whitespace).
    answer = await call_note(setup, **{"X-Note": " \tpadded\t "})
    assert "result" in answer and not answer["result"].get("isError"), answer
    assert setup.backend.requests[-1].all("x-note")[0].strip(" \t") == "padded"


@pytest.mark.parametrize(
    "value",
    [
        "a\x0bb",
        "a\x7fb",
        "\x1b[31m",
        "a\r\nb",
        "x\r\nTransfer-Encoding: chunked",
        "0\r\n\r\nDELETE /admin/users/42 HTTP/1.1\r\nHost: backend\r\n\r\n",
    ],
)
async def test_a_header_argument_with_a_control_character_is_an_argument_error(
    setup: Setup, value: str
) -> None:
    before = len(setup.backend.requests)
    answer = await call_note(setup, **{"X-Note": value})
    assert answer["result"]["isError"] is True, answer
    assert answer["result"]["content"] == [
        {
            "type": "text",
            "text": "argument X-Note: contains a control character, which header x-note cannot carry "
            "(only tab is allowed)",
        }
    ]
    # Templated headers name the argument too.
    answer = await call_note(setup, tag=value)
    assert answer["result"]["isError"] is True, answer
    assert answer["result"]["content"][0]["text"].startswith("argument tag: contains a control character")
    # Nothing reached the backend; the pooled connections still carry ordinary calls only.
    assert len(setup.backend.requests) == before
    for _ in range(3):
        assert "result" in await call_note(setup, tag="ok")
    after = setup.backend.requests[before:]
    assert [r.line for r in after] == ["GET /items/1 HTTP/1.1"] * 3
    assert all(r.all("host") == [AUTHORITY] and r.body == b"" for r in after)
    assert setup.backend.garbage == []


def refused_documents(base: dict[str, Any], secret_file: Path) -> list[tuple[str, dict[str, Any], str]]:
    """(what, document, the field path the refusal names)."""
    cases: list[tuple[str, dict[str, Any], str]] = []

    def variant(what: str, path: str, change: Any) -> None:
        document = copy.deepcopy(base)
        document["name"] = "bad"
        change(document)
        cases.append((what, document, path))

    tool = "tools[0]"
    for name in ("Transfer-Encoding", "Host", "Content-Length", "Connection", "Proxy-Authorization"):
        variant(
            f"header argument {name}",
            f"{tool}.args[1].name",
            lambda d, n=name: d["tools"][0]["args"][1].update(name=n),
        )
    for name in (":authority", "Host", "Transfer-Encoding", "x-envoy-original-path"):
        variant(
            f"apiKey header {name}",
            "securitySchemes[0].name",
            lambda d, n=name: d["securitySchemes"][0].update(name=n),
        )
    variant(
        "templated Content-Length",
        f"{tool}.requestTemplate.headers[0].key",
        lambda d: d["tools"][0]["requestTemplate"]["headers"][0].update(key="Content-Length"),
    )
    variant(
        "templated value with VT",
        f"{tool}.requestTemplate.headers[0].value",
        lambda d: d["tools"][0]["requestTemplate"]["headers"][0].update(value="a\x0b{{.args.tag}}"),
    )
    variant(
        "inline credential with CR/LF",
        "securitySchemes[0].defaultCredential",
        lambda d: d["securitySchemes"][0].update(defaultCredential="k\r\nX-Injected: 1"),
    )
    variant(
        "file credential with a second line",
        "securitySchemes[0].defaultCredential",
        lambda d: d["securitySchemes"][0].update(defaultCredential={"file": str(secret_file)}),
    )
    return cases


def nacks(status: dict[str, Any]) -> list[Any]:
    """Every NACK the connected Envoys sent, per node and resource type."""
    return [
        (node["node_id"], kind, state["last_nack"])
        for node in status["nodes"]
        for kind, state in node["types"].items()
        if state.get("last_nack")
    ]


async def test_documents_the_filter_or_envoy_would_refuse_are_refused_with_the_field(setup: Setup) -> None:
    secret = setup.workdir / "two-lines"
    secret.write_text("k-1\nsecond-line\n")
    before = len(setup.backend.requests)
    async with httpx.AsyncClient(base_url=setup.admin, timeout=10) as admin:
        for what, document, path in refused_documents(setup.document, secret):
            response = await admin.post("/v1/servers", json=document, headers=AUTH)
            assert response.status_code == 422, (what, response.text)
            paths = [p["path"] for p in response.json()["problems"]]
            assert path in paths, (what, response.json())
            assert all(p["file"] for p in response.json()["problems"]), what
            # The credential itself is never echoed.
            assert "second-line" not in response.text and "X-Injected" not in response.text
        # Nothing was written, nothing new is served, the existing server is untouched.
        response = await admin.get("/v1/servers/default/bad")
        assert response.status_code == 404
        status = (await admin.get("/status")).json()
    assert [s["key"] for s in status["registry"]["servers"]] == ["default/hdrs"]
    assert nacks(status) == []
    assert "result" in await call_note(setup, tag="still-served")
    assert len(setup.backend.requests) == before + 1


async def test_what_validation_misses_the_filter_s_own_parser_refuses(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Validation drifting from the filter (here: forgetting the header-name rule) must not let
    # the document reach Envoy: the filter's parser in the precheck refuses it, with its reason.
    monkeypatch.setattr(registry_tools, "header_name_problem", lambda name: None)
    document = copy.deepcopy(setup.document)
    document["name"] = "drift"
    document["tools"][0]["args"][1]["name"] = "Transfer-Encoding"
    async with httpx.AsyncClient(base_url=setup.admin, timeout=10) as admin:
        response = await admin.post("/v1/servers", json=document, headers=AUTH)
        assert response.status_code == 422, response.text
        [problem] = response.json()["problems"]
        assert problem["path"] == "filter:tools[0].request.headers[1].name"
        assert problem["reason"].startswith(
            "default/drift: the mcp-server filter would refuse the generated configuration (tool 'note'): "
            'tools[0].request.headers[1].name: must be a regular header name: "transfer-encoding"'
        )
        assert (await admin.get("/v1/servers/default/drift")).status_code == 404
