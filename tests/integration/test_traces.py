"""OpenTelemetry traces through a real Envoy and the real filter.

No OpenTelemetry collector is installable here: the collector is a stand-in, an OTLP gRPC
trace receiver built in the test on `opentelemetry-proto` and grpcio, that records every span
Envoy exports. A client `tools/call` carrying a W3C `traceparent` must reach the backend (an
aiohttp server recording headers) in the same trace, and Envoy's span of that request must come
to the receiver with the trace id and the filter's MCP fields.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from mcpgw import tracing
from mcpgw.httpserve import ServedApp, serve
from tests.integration.conftest import Gateway, running_gateway
from tests.integration.mcphttp import ACCEPT, open_session, rpc
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAMESPACE = "team-t"
SERVER = "traced"
TOOL = "pets.get"
PROXIED = "proxied"


def _scopes(resource_spans: Any) -> Any:
    """The span groups of a ResourceSpans, whichever opentelemetry-proto is on disk.

    `xds-protos` (grpcio's xDS protos, which mcpgw uses) ships opentelemetry-proto v0.x files in
    the same package path as `opentelemetry-proto`; whichever pip installs last wins. v0.x calls
    field 2 `instrumentation_library_spans`, v1 `scope_spans`: the same field number and layout,
    so what Envoy sends parses into either.
    """
    fields = resource_spans.DESCRIPTOR.fields_by_name
    return (
        resource_spans.scope_spans
        if "scope_spans" in fields
        else resource_spans.instrumentation_library_spans
    )


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """The stand-in collector: keeps every span it is sent, with its resource's service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = _attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope in _scopes(resource_spans):
                self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[tuple[str, trace_pb2.Span]]:
        return [(s, span) for s, span in self.spans if span.trace_id.hex() == trace_id]


def _attributes(pairs: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in pairs}


@dataclass
class Setup:
    gateway: Gateway
    receiver: Receiver
    seen: list[dict[str, str]] = field(default_factory=list)
    # The `type: mcp` upstream's requests: (JSON-RPC method, headers).
    upstream: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.gateway.stack.mcp_base_url}/mcp/{NAMESPACE}/{SERVER}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("traces")
    receiver = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    seen: list[dict[str, str]] = []

    async def pet(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"id": request.match_info["id"]})

    upstream: list[tuple[str, dict[str, str]]] = []

    async def mcp_upstream(request: web.Request) -> web.Response:
        """A minimal MCP server (plain JSON answers) for the `type: mcp` server."""
        message = await request.json()
        upstream.append((message.get("method", ""), dict(request.headers)))
        if "id" not in message:
            return web.Response(status=202)
        result: dict[str, Any] = {"content": [{"type": "text", "text": "ok"}], "isError": False}
        if message["method"] == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "upstream", "version": "1"},
            }
        answer = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        return web.json_response(answer, headers={"Mcp-Session-Id": "upstream-session"})

    app = web.Application()
    app.router.add_get("/pets/{id}", pet)
    app.router.add_post("/mcp", mcp_upstream)
    backend: ServedApp = await serve(app, "127.0.0.1", 0)
    registry = workdir / "registry"
    registry.mkdir()
    document = {
        "kind": "McpServer",
        "namespace": NAMESPACE,
        "name": SERVER,
        "backend": {"endpoints": [f"127.0.0.1:{backend.port}"], "timeoutMs": 5000},
        "tools": [
            {
                "name": TOOL,
                "args": [{"name": "id", "type": "integer", "required": True, "position": "path"}],
                "requestTemplate": {"url": "/pets/{{.args.id}}", "method": "GET"},
            }
        ],
    }
    proxied = {
        "kind": "McpServer",
        "type": "mcp",
        "namespace": NAMESPACE,
        "name": PROXIED,
        "backend": {"endpoints": [f"127.0.0.1:{backend.port}"], "timeoutMs": 5000},
    }
    (registry / "svc.yaml").write_text(yaml.safe_dump_all([document, proxied], sort_keys=False))
    settings = tracing.TraceSettings("127.0.0.1", port, sampling=0.0)
    try:
        async with running_gateway(Path(workdir), registry, access_log=None, tracing=settings) as gateway:
            yield Setup(gateway, receiver, seen, upstream)
    finally:
        await backend.close()
        await server.stop(grace=None)


async def _call(setup: Setup, traceparent: str | None, server: str = SERVER) -> dict[str, Any]:
    url = f"{setup.gateway.stack.mcp_base_url}/mcp/{NAMESPACE}/{server}"
    async with httpx.AsyncClient(timeout=10) as http:
        headers = ACCEPT | await open_session(http, url)
        if traceparent is not None:
            headers["traceparent"] = traceparent
            headers["tracestate"] = "vendor=abc"
        answer = await http.post(
            url, headers=headers, json=rpc("tools/call", {"name": TOOL, "arguments": {"id": 7}}, id=9)
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        assert body["result"]["isError"] is False, body
        return body


async def test_client_traceparent_reaches_the_backend_and_envoy_exports_its_span_to_an_in_test_otlp_receiver(
    setup: Setup,
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    await _call(setup, f"00-{trace_id}-{parent_id}-01")

    # The backend call continues the client's trace, with its tracestate.
    backend = setup.seen[-1]
    assert backend["traceparent"].split("-")[1] == trace_id, backend
    assert backend["tracestate"] == "vendor=abc"

    # Envoy's server span of the tools/call: a child of the client's span, with the MCP fields.
    def exported() -> list[tuple[str, trace_pb2.Span]]:
        return [
            (s, span)
            for s, span in setup.receiver.of_trace(trace_id)
            if "tools/call" in _attributes(span.attributes).get(tracing.MCP_TAG, "")
        ]

    spans = await eventually(exported, 30, "Envoy's span of the tools/call at the receiver")
    service, span = spans[0]
    assert service == tracing.SERVICE_NAME
    assert span.parent_span_id.hex() == parent_id
    assert span.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert span.name == f"tools/call {TOOL}"
    fields = json.loads(_attributes(span.attributes)[tracing.MCP_TAG])
    assert fields["mcp.method.name"] == "tools/call"
    assert fields["gen_ai.tool.name"] == TOOL
    assert fields["mcpgw.namespace"] == NAMESPACE
    assert fields["mcpgw.server"] == SERVER
    assert fields["mcpgw.outcome"] == "ok"


async def test_unsampled_and_absent_traceparents_start_no_trace_at_sampling_zero(setup: Setup) -> None:
    before = len(setup.receiver.spans)
    await _call(setup, None)
    assert "traceparent" not in {k.lower() for k in setup.seen[-1]}
    # The client's decision holds: not sampled, not exported, but still passed on to the backend.
    unsampled = secrets.token_hex(16)
    await _call(setup, f"00-{unsampled}-{secrets.token_hex(8)}-00")
    assert setup.seen[-1]["traceparent"].split("-")[1] == unsampled
    # A sampled trace sent after them: once its span is in, theirs would have been too (same batch
    # or an earlier one).
    marker = secrets.token_hex(16)
    await _call(setup, f"00-{marker}-{secrets.token_hex(8)}-01")
    await eventually(lambda: setup.receiver.of_trace(marker), 30, "the marker trace's spans at the receiver")
    new = setup.receiver.spans[before:]
    assert {span.trace_id.hex() for _, span in new} == {marker}, "an unsampled request was exported"


async def test_a_type_mcp_servers_upstream_request_continues_the_clients_trace(setup: Setup) -> None:
    trace_id = secrets.token_hex(16)
    await _call(setup, f"00-{trace_id}-{secrets.token_hex(8)}-01", server=PROXIED)
    method, headers = setup.upstream[-1]
    assert method == "tools/call"
    assert headers["traceparent"].split("-")[1] == trace_id
    assert headers["tracestate"] == "vendor=abc"
    spans = await eventually(lambda: setup.receiver.of_trace(trace_id), 30, "the proxied call's span")
    # The filter sets no MCP fields for a `type: mcp` server (yet): Envoy's own span name.
    assert [span.name for _, span in spans] == ["ingress"]
