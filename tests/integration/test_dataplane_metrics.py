"""Per-tool metrics and the MCP access log, through a real Envoy and the real filter.

A known mix of tools/call (ok, tool errors, backend 500s, unknown tools, a slow backend) goes
through the gateway; the counts and histogram buckets are read from Envoy's own
`/stats/prometheus` on the stats listener, both as scraped text (parsed here) and through PromQL
to a real Prometheus scraping that listener with the shipped rules loaded (tests/prometheus.py),
and the access-log lines of the same calls are checked field by field.
Tool names hold dots and underscores, and some look like label names, so a tag regex that
split at the wrong place would show here as a wrong label.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from mcpgw.httpserve import ServedApp, serve
from tests.integration.conftest import Gateway, running_gateway
from tests.integration.mcphttp import ACCEPT, open_session, rpc
from tests.prometheus import SHIPPED_RULES, Job, Prometheus, running_prometheus
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAMESPACE = "team-a"
SERVER = "svc-1"
OK_TOOL = "pets.get_v2"
FAIL_TOOL = "pets.fail"
SLOW_TOOL = "slow_call.mcp_tool"
SECRET_ARG = "s3cret-argument-value"
SECRET_TOKEN = "Bearer tok-do-not-log"
N_OK, M_TOOL_ERRORS, K_BACKEND_500, J_UNKNOWN = 3, 2, 2, 2
SLOW_S = 0.3
# The same tools on a server that logs arguments (`observability: {logArguments: true}`).
DEBUG_SERVER = "svc-debug"


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"id": request.match_info["id"]})


async def _fail(request: web.Request) -> web.Response:
    return web.json_response({"error": "boom"}, status=500)


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(SLOW_S)
    return web.json_response({"slow": True})


def backend_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ok/{id}", _ok)
    app.router.add_get("/fail", _fail)
    app.router.add_get("/slow", _slow)
    return app


def registry_document(backend: ServedApp, name: str = SERVER, log_arguments: bool = False) -> dict[str, Any]:
    id_arg = [{"name": "id", "type": "integer", "required": True, "position": "path"}]
    return {
        "kind": "McpServer",
        "namespace": NAMESPACE,
        "name": name,
        **({"observability": {"logArguments": True}} if log_arguments else {}),
        "backend": {"endpoints": [f"127.0.0.1:{backend.port}"], "timeoutMs": 5000},
        "tools": [
            {
                "name": OK_TOOL,
                "args": id_arg,
                "requestTemplate": {"url": "/ok/{{.args.id}}", "method": "GET"},
            },
            {"name": FAIL_TOOL, "requestTemplate": {"url": "/fail", "method": "GET"}},
            {"name": SLOW_TOOL, "requestTemplate": {"url": "/slow", "method": "GET"}},
        ],
    }


@dataclass
class Setup:
    gateway: Gateway
    access_log: Path
    prometheus: Prometheus

    @property
    def url(self) -> str:
        return f"{self.gateway.stack.mcp_base_url}/mcp/{NAMESPACE}/{SERVER}"

    def scrape(self) -> str:
        port = self.gateway.stack.options.envoy_stats_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/prometheus", timeout=5) as answer:
            text: str = answer.read().decode()
        return text


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("dpmetrics")
    backend = await serve(backend_app(), "127.0.0.1", 0)
    registry = workdir / "registry"
    registry.mkdir()
    documents = [registry_document(backend), registry_document(backend, DEBUG_SERVER, log_arguments=True)]
    (registry / "svc.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    access_log = workdir / "access.log"
    try:
        async with running_gateway(workdir, registry, access_log=str(access_log)) as gateway:
            stats = f"127.0.0.1:{gateway.stack.options.envoy_stats_port}"
            jobs = {"mcpgw-envoy": Job([stats], metrics_path="/stats/prometheus")}
            async with running_prometheus(workdir / "prometheus", jobs, SHIPPED_RULES) as prometheus:
                await prometheus.wait_up()
                yield Setup(gateway, access_log, prometheus)
    finally:
        await backend.close()


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of metric `name` in Prometheus text, keyed by its label set."""
    found = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match.group(1) == name:
            labels = frozenset(LABEL.findall(match.group(2) or ""))
            found[labels] = float(match.group(3))
    return found


def labelled(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset({"mcp_namespace": NAMESPACE, "mcp_server": SERVER, **labels}.items())


async def drive_mix(setup: Setup) -> dict[str, str]:
    """The known mix, in one session; returns its headers."""
    async with httpx.AsyncClient(timeout=10) as http:
        headers = await open_session(http, setup.url)
        headers = ACCEPT | headers | {"authorization": SECRET_TOKEN}
        calls: list[tuple[str, dict[str, Any]]] = (
            [(OK_TOOL, {"id": i}) for i in range(N_OK)]
            + [(OK_TOOL, {"id": SECRET_ARG})] * M_TOOL_ERRORS
            + [(FAIL_TOOL, {})] * K_BACKEND_500
            + [(f"nope.{i}", {"x": SECRET_ARG}) for i in range(J_UNKNOWN)]
            + [(SLOW_TOOL, {})]
        )
        for n, (tool, arguments) in enumerate(calls):
            answer = await http.post(
                setup.url,
                json=rpc("tools/call", {"name": tool, "arguments": arguments}, id=100 + n),
                headers=headers,
            )
            assert answer.status_code == 200, answer.text
        return headers


async def test_exact_counts_and_buckets_per_tool_and_outcome(setup: Setup) -> None:
    await drive_mix(setup)
    calls = labelled  # readability below

    def settled() -> str | None:
        text = setup.scrape()
        # Envoy merges histograms at its stats flush (every 5 s): wait for the slow call's.
        hist = samples(text, "mcpgw_tool_duration_ms_count")
        return text if hist.get(calls(mcp_tool=SLOW_TOOL)) == 1 else None

    text: str = await eventually(settled, 30, "the per-tool histograms in /stats/prometheus")
    counted = samples(text, "mcpgw_tool_calls")
    assert counted == {
        calls(mcp_tool=OK_TOOL, outcome="ok"): N_OK,
        calls(mcp_tool=OK_TOOL, outcome="tool_error"): M_TOOL_ERRORS,
        calls(mcp_tool=FAIL_TOOL, outcome="backend_5xx"): K_BACKEND_500,
        calls(mcp_tool="(unknown)", outcome="jsonrpc_error"): J_UNKNOWN,
        calls(mcp_tool=SLOW_TOOL, outcome="ok"): 1,
    }, counted
    assert samples(text, "mcpgw_tool_jsonrpc_errors") == {
        calls(mcp_tool="(unknown)", code="-32602"): J_UNKNOWN
    }

    durations = samples(text, "mcpgw_tool_duration_ms_bucket")
    backend = samples(text, "mcpgw_tool_backend_duration_ms_bucket")
    slow = dict(calls(mcp_tool=SLOW_TOOL))
    # The slow backend (0.3 s): above 250 ms, within 500 ms, whole call and backend call alike.
    for histogram in (durations, backend):
        assert histogram[frozenset((slow | {"le": "250"}).items())] == 0
        assert histogram[frozenset((slow | {"le": "500"}).items())] == 1
        assert histogram[frozenset((slow | {"le": "+Inf"}).items())] == 1
    # Every call of the fast tools is in the histogram; only those that reached the backend in
    # the backend's (tool errors from the arguments never leave the filter).
    fast = dict(calls(mcp_tool=OK_TOOL))
    assert durations[frozenset((fast | {"le": "+Inf"}).items())] == N_OK + M_TOOL_ERRORS
    assert backend[frozenset((fast | {"le": "+Inf"}).items())] == N_OK
    assert durations[frozenset((fast | {"le": "250"}).items())] == N_OK + M_TOOL_ERRORS
    # Bucket bounds are the bootstrap's (mcpgw.observability.DURATION_BUCKETS_MS), not Envoy's defaults.
    assert {dict(k)["le"] for k in durations if dict(k).get("mcp_tool") == SLOW_TOOL} == {
        "1", "2.5", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000", "30000",
        "60000", "+Inf",
    }  # fmt: skip
    # Bytes: the request bodies in, the answers out.
    assert samples(text, "mcpgw_tool_request_bytes")[calls(mcp_tool=FAIL_TOOL)] > 0
    assert samples(text, "mcpgw_tool_response_bytes")[calls(mcp_tool=FAIL_TOOL)] > 0
    # Per server: the session, its handshake, and the revision in use.
    assert samples(text, "mcpgw_server_sessions")[calls()] >= 1
    requests = samples(text, "mcpgw_server_requests")
    total_calls = N_OK + M_TOOL_ERRORS + K_BACKEND_500 + J_UNKNOWN + 1
    assert requests[calls(mcp_method="tools/call", mcp_protocol_version="2025-11-25")] == total_calls
    assert requests[calls(mcp_method="initialize", mcp_protocol_version="2025-11-25")] >= 1
    # No metric name is left with an unextracted label segment.
    assert "mcp_tool=" not in text.replace('mcp_tool="', "")

    # The same through PromQL, as an operator's Prometheus sees them (it scrapes every second).
    prom = setup.prometheus
    sel = f'mcp_namespace="{NAMESPACE}",mcp_server="{SERVER}"'
    await prom.eventually(
        f'mcpgw_tool_duration_ms_count{{{sel},mcp_tool="{SLOW_TOOL}"}} == 1', 15, "the scraped histograms"
    )
    for tool, outcome, expected in [
        (OK_TOOL, "ok", N_OK),
        (OK_TOOL, "tool_error", M_TOOL_ERRORS),
        (FAIL_TOOL, "backend_5xx", K_BACKEND_500),
        ("(unknown)", "jsonrpc_error", J_UNKNOWN),
        (SLOW_TOOL, "ok", 1),
    ]:
        query = f'mcpgw_tool_calls{{{sel},mcp_tool="{tool}",outcome="{outcome}"}}'
        assert await prom.value(query) == expected, query
    assert await prom.value(f"sum(mcpgw_tool_calls{{{sel}}})") == total_calls
    slow_bucket = f'mcpgw_tool_duration_ms_bucket{{{sel},mcp_tool="{SLOW_TOOL}",le="%s"}}'
    assert await prom.value(slow_bucket % "250") == 0
    assert await prom.value(slow_bucket % "500") == 1
    assert await prom.value(f'mcpgw_tool_jsonrpc_errors{{{sel},code="-32602"}}') == J_UNKNOWN
    # The shipped recording rules evaluate over these series: a ratio for every called tool.
    ratios = await prom.eventually(f"mcpgw:tool_error_ratio:rate5m{{{sel}}}", 15, "the error-ratio rule")
    assert {r["metric"]["mcp_tool"] for r in ratios} == {OK_TOOL, FAIL_TOOL, SLOW_TOOL, "(unknown)"}


def log_lines(setup: Setup) -> list[dict[str, Any]]:
    if not setup.access_log.exists():
        return []
    lines = []
    for text in setup.access_log.read_text().splitlines():
        if text.strip():
            line = json.loads(text)
            # The filter's fields: one JSON object, printed as the string `mcp`.
            lines.append(line | json.loads(line.pop("mcp", "{}")))
    return lines


async def test_access_log_carries_the_mcp_fields_and_no_secrets(setup: Setup) -> None:
    headers = await drive_mix(setup)
    ids = {str(100 + n) for n in range(N_OK + M_TOOL_ERRORS + K_BACKEND_500 + J_UNKNOWN + 1)}

    def logged() -> list[dict[str, Any]] | None:
        # Both runs of the mix (the other test's too) carry the same ids: take this run's.
        mine = [li for li in log_lines(setup) if li.get("jsonrpc.request.id") in ids]
        return mine[-len(ids) :] if len(mine) >= 2 * len(ids) or len(mine) == len(ids) else None

    lines = await eventually(logged, 15, "the access-log lines of the mix")
    by_id = {li["jsonrpc.request.id"]: li for li in lines}
    session_hash = by_id["100"]["mcp.session.id"]
    assert re.fullmatch(r"[0-9a-f]{32}", session_hash)
    for line in lines:
        assert line["mcp.method.name"] == "tools/call"
        assert line["gen_ai.operation.name"] == "execute_tool"
        assert line["mcpgw.namespace"] == NAMESPACE and line["mcpgw.server"] == SERVER
        assert line["mcp.protocol.version"] == "2025-11-25"
        assert line["mcp.session.id"] == session_hash
        assert line["url.path"] == f"/mcp/{NAMESPACE}/{SERVER}"
        assert line["http.response.status_code"] == 200
        assert int(line["bytes_received"]) > 0 and int(line["bytes_sent"]) > 0
    ok = by_id["100"]
    assert ok["gen_ai.tool.name"] == OK_TOOL and ok["mcpgw.outcome"] == "ok" and "error.type" not in ok
    assert ok["mcpgw.backend.status"] == 200 and ok["mcpgw.backend.duration_ms"] >= 0
    tool_error = by_id[str(100 + N_OK)]
    assert tool_error["mcpgw.outcome"] == tool_error["error.type"] == "tool_error"
    assert "mcpgw.backend.status" not in tool_error
    failed = by_id[str(100 + N_OK + M_TOOL_ERRORS)]
    assert failed["gen_ai.tool.name"] == FAIL_TOOL and failed["error.type"] == "backend_5xx"
    assert failed["mcpgw.backend.status"] == 500
    unknown = by_id[str(100 + N_OK + M_TOOL_ERRORS + K_BACKEND_500)]
    assert unknown["gen_ai.tool.name"] == "(unknown)" and unknown["error.type"] == "-32602"
    assert unknown["rpc.response.status_code"] == "-32602"
    slow = by_id[str(100 + len(ids) - 1)]
    assert slow["mcpgw.backend.duration_ms"] >= SLOW_S * 1000 - 5
    # Neither argument values nor the credential nor the raw session id are logged by default.
    text = setup.access_log.read_text()
    assert SECRET_ARG not in text and "tok-do-not-log" not in text
    assert headers["mcp-session-id"] not in text
    assert all("mcpgw.arguments" not in li for li in log_lines(setup) if li.get("mcpgw.server") == SERVER)


async def test_arguments_are_logged_only_where_the_registry_says(setup: Setup) -> None:
    url = setup.url.replace(f"/{SERVER}", f"/{DEBUG_SERVER}")
    async with httpx.AsyncClient(timeout=10) as http:
        headers = ACCEPT | await open_session(http, url)
        body = rpc("tools/call", {"name": OK_TOOL, "arguments": {"id": 4242}}, id="debug-1")
        answer = await http.post(url, json=body, headers=headers)
        assert answer.status_code == 200 and not answer.json()["result"]["isError"], answer.text

    def logged() -> dict[str, Any] | None:
        return next((li for li in log_lines(setup) if li.get("jsonrpc.request.id") == "debug-1"), None)

    line = await eventually(logged, 15, "the access-log line of the debug call")
    assert line["mcpgw.server"] == DEBUG_SERVER and line["gen_ai.tool.name"] == OK_TOOL
    assert line["mcpgw.arguments"] == {"id": 4242}
    # The other server's lines still carry none.
    assert all("mcpgw.arguments" not in li for li in log_lines(setup) if li.get("mcpgw.server") == SERVER)
