"""Every query of the shipped Grafana dashboard returns data from a real Prometheus.

The whole stack on a Redis registry (so the Redis panels have series), Debian's `prometheus`
scraping Envoy's stats listener and the control plane's /metrics with the shipped rules loaded.
The data-plane metrics test's mix of calls (ok, tool errors, backend 500s, unknown tools, a slow
call) and an admin edit go through it; then each template variable's `label_values` query and
each panel target, with the variables set to the values the variable queries found, must
return at least one series.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mcpgw.httpserve import ServedApp, serve
from mcpgw.registry.redisstore import RedisStore
from tests import grafana, waiting
from tests.integration.conftest import Gateway, running_gateway
from tests.integration.test_controlplane_metrics import AUTH, TOKEN, admin_target, eventually
from tests.integration.test_dataplane_metrics import (
    NAMESPACE,
    SERVER,
    SLOW_TOOL,
    Setup,
    backend_app,
    drive_mix,
    registry_document,
)
from tests.integration.test_refused_config import control_plane_of
from tests.prometheus import SHIPPED_RULES, Job, Prometheus, running_prometheus
from tests.redisserver import RedisServer


@dataclass
class Stack:
    gateway: Gateway
    prometheus: Prometheus
    backend: ServedApp


@pytest.fixture
async def stack(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    backend = await serve(backend_app(), "127.0.0.1", 0)
    seed = RedisStore(redis_server.url)
    await seed.load()
    await seed.put(registry_document(backend))
    await seed.close()
    try:
        async with running_gateway(tmp_path, redis_server.url) as gateway:  # type: ignore[arg-type]
            jobs = {
                "mcpgw-envoy": Job(
                    [f"127.0.0.1:{gateway.stack.options.envoy_stats_port}"], "/stats/prometheus"
                ),
                "mcpgw-controlplane": Job([admin_target(control_plane_of(gateway))]),
            }
            async with running_prometheus(tmp_path / "prometheus", jobs, SHIPPED_RULES) as prometheus:
                await prometheus.wait_up()
                yield Stack(gateway, prometheus, backend)
    finally:
        await backend.close()


async def label_values(prom: Prometheus, query: str) -> list[str]:
    """What Grafana's `label_values(selector, label)` lists: the label's values over the series."""
    selector, label = query.removeprefix("label_values(").removesuffix(")").rsplit(",", 1)
    async with httpx.AsyncClient(base_url=prom.url, timeout=10) as http:
        answer = await http.get(f"/api/v1/label/{label.strip()}/values", params={"match[]": selector})
    assert answer.status_code == 200, answer.text
    values: list[str] = answer.json()["data"]
    return values


async def test_every_panel_query_returns_data(stack: Stack) -> None:
    prom = stack.prometheus
    plane = control_plane_of(stack.gateway)
    # Traffic: ok calls, tool errors, backend 500s, unknown tools, a slow call.
    # Twice, Prometheus scraping in between: a tool's counters appear at their first value
    # (the filter defines a metric when it first counts it), and rate() counts only what a
    # series gained after Prometheus first saw it, as with steady traffic.
    setup = Setup(stack.gateway, Path("/nonexistent"), prom)
    await drive_mix(setup)
    await prom.eventually(f'mcpgw_tool_calls{{mcp_tool="{SLOW_TOOL}"}}', 30, "the first calls scraped")
    await drive_mix(setup)
    # An admin edit: a new revision, a translation, pushes, ACKs and a write-to-ACK observation.
    before = plane.applied_revision
    async with httpx.AsyncClient(base_url=f"http://{admin_target(plane)}", timeout=10) as admin:
        document = registry_document(stack.backend, "svc-edited")
        response = await admin.post("/v1/servers", json=document, headers=AUTH)
        assert response.status_code == 201, response.text
    await eventually(lambda: plane.applied_revision != before, 20, "the edit applied")
    # Envoy merges histograms at its stats flush (5 s); the control plane observes write-to-ACK
    # once the Envoy ACKed the edit.
    await prom.eventually(
        f'mcpgw_tool_duration_ms_count{{mcp_tool="{SLOW_TOOL}"}} == 2', 30, "the histograms"
    )
    await prom.eventually("mcpgw_controlplane_write_to_ack_seconds_count > 0", 30, "a write-to-ACK")

    dashboard = grafana.load()
    # Each variable's values as Grafana would list them, chained like Grafana (namespace, then
    # server within it, then tool); the panels then run with every listed value chosen, and
    # with every variable on *All*.
    chosen: dict[str, list[str]] = {}
    for name, query in grafana.query_variables(dashboard).items():
        values = await label_values(prom, grafana.substitute(query, chosen))
        assert values, f"variable {name}: {query} lists nothing"
        chosen[name] = values
    assert NAMESPACE in chosen["namespace"] and SERVER in chosen["server"]
    assert {SLOW_TOOL, "(unknown)"} <= set(chosen["tool"])

    every = {name: grafana.ALL for name in chosen}
    empty = []
    for target, values in itertools.product(grafana.targets(dashboard), (chosen, every)):
        expr = grafana.substitute(target.expr, values)

        async def plotted(expr: str = expr) -> bool:
            # At least one series with a number to draw (histogram_quantile gives NaN for a
            # series without observations in the range: such a panel would show nothing).
            return any(math.isfinite(float(s["value"][1])) for s in await prom.query(expr))

        try:
            await waiting.eventually(plotted, 30, f"{target.panel} [{target.ref_id}]", interval=0.5)
        except AssertionError:
            empty.append(f"{target.panel} [{target.ref_id}]: {expr} -> {await prom.query(expr)}")
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
