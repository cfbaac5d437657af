# ruff: noqa: RUF001, E501 - Markdown table rows, with multiplication, minus and dash signs on purpose
"""Render `dataplane.json` as Markdown: the side-by-side table, the targets, the scale table.

.venv/bin/python bench/dataplane_report.py [bench/results/dataplane.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROWS = (
    (
        "call",
        "floor",
        "REST backend called directly (GET /v1/pets/1); nginx on wrk's CPU, not the tested one",
    ),
    ("call", "proxy", "Envoy proxying the same GET, no MCP work"),
    ("call", "mcpgw", "`tools/call` through Envoy + mcpgw filter (per-tool metrics and access log on)"),
    ("call", "mcpgw-quiet", "the same, per-tool metrics and access log off"),
    ("call", "mcpgw-jwt", "the same `tools/call` with JWT auth (jwt_authn verifies RS256)"),
    ("call", "mcpgw-apikey", "the same `tools/call` with an API key (`auth.apiKeys`, checked by the filter)"),
    ("call", "native", "`tools/call` through Envoy's `mcp_json_rest_bridge`"),
    ("call", "python", "`tools/call` on a `mcp` SDK server (uvicorn)"),
    ("list", "mcpgw", "`tools/list`, mcpgw filter (local answer)"),
    ("list", "native", "`tools/list`, native bridge (local answer)"),
    (
        "list",
        "wasm-floor",
        "the least any Proxy-Wasm filter does for `tools/list`: read the body, send a fixed answer",
    ),
    ("initialize", "mcpgw", "`initialize`, mcpgw filter (local answer)"),
    ("initialize", "native", "`initialize`, native bridge (local answer)"),
    ("call@c1", "proxy", "proxy, 1 connection (unloaded latency)"),
    ("call@c1", "mcpgw", "mcpgw `tools/call`, 1 connection"),
    ("call@c1", "native", "native `tools/call`, 1 connection"),
)


def _mib(kib: float | None) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f}"


def _ratio(a: float, b: float | None) -> str:
    return "–" if not b else f"{a / b:.2f}×"


def _cpu(r: dict[str, Any]) -> str:
    cpu = r.get("cpu_us_per_req")
    return "–" if cpu is None else f"{cpu:.1f}"


def paired(results: dict[str, Any], key: str) -> dict[str, Any]:
    """The median of per-round ratios to native (`paired_ratios`); results written before they
    existed fall back to the ratio of the two medians."""
    found = results.get("paired_ratios", {}).get(key)
    if found:
        return dict(found)
    s = results["scenarios"]
    native = s[key.split("/")[0] + "/native"]
    return {"rps_ratio": s[key]["rps"] / native["rps"], "rps_ratio_runs": [], "cpu_ratio": None}


def _paired_text(p: dict[str, Any]) -> str:
    """The ratio with its rounds, then the CPU ratio with its rounds, on one line."""
    text = f"{p['rps_ratio']:.2f}×"
    if p.get("rps_ratio_runs"):
        text += f" (rounds {', '.join(f'{r:.2f}' for r in p['rps_ratio_runs'])})"
    if p.get("cpu_ratio") is not None:
        text += f"; CPU µs/req {p['cpu_ratio']:.2f}× native"
        text += f" ({', '.join(f'{r:.2f}' for r in p['cpu_ratio_runs'])})"
    return text


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    s = results["scenarios"]
    call, native, proxy, python = s["call/mcpgw"], s["call/native"], s["call/proxy"], s["call/python"]
    c1, c1p = s["call@c1/mcpgw"], s["call@c1/proxy"]
    call_ratio, list_ratio = paired(results, "call/mcpgw"), paired(results, "list/mcpgw")
    out = [
        (
            "`tools/call` throughput ≥ 0.8× native",
            f"{_paired_text(call_ratio)}; medians {call['rps']:.0f} vs {native['rps']:.0f} req/s",
            call_ratio["rps_ratio"] >= 0.8,
        ),
        (
            "adds ≤ 150 µs at p50 over proxy (1 connection, no queueing)",
            f"+{c1['p50_us'] - c1p['p50_us']:.0f} µs ({c1['p50_us']:.0f} vs {c1p['p50_us']:.0f} µs); "
            f"at {results['setup'].get('connections', 16)} connections +{call['p50_us'] - proxy['p50_us']:.0f} µs",
            c1["p50_us"] - c1p["p50_us"] <= 150,
        ),
        (
            "≥ 10× python's throughput at equal or lower p99",
            f"{call['rps'] / python['rps']:.0f}×, p99 {call['p99_us']:.0f} vs {python['p99_us']:.0f} µs",
            call["rps"] >= 10 * python["rps"] and call["p99_us"] <= python["p99_us"],
        ),
        (
            "`tools/list` throughput ≥ 0.9× native",
            _paired_text(list_ratio),
            list_ratio["rps_ratio"] >= 0.9,
        ),
    ]
    jwt = results.get("paired_ratios", {}).get("call/mcpgw-jwt")
    if jwt and jwt.get("cpu_ratio") is not None:
        out.append(
            (
                "JWT auth adds ≤ 10 % Envoy CPU per `tools/call`",
                f"CPU µs/req {jwt['cpu_ratio']:.2f}× no auth (rounds "
                f"{', '.join(f'{r:.2f}' for r in jwt['cpu_ratio_runs'])}); throughput {jwt['rps_ratio']:.2f}×",
                jwt["cpu_ratio"] <= 1.10,
            )
        )
    key = results.get("paired_ratios", {}).get("call/mcpgw-apikey")
    if key and key.get("cpu_ratio") is not None:
        out.append(
            (
                "an API key adds ≤ 10 % Envoy CPU per `tools/call`",
                f"CPU µs/req {key['cpu_ratio']:.2f}× no auth (rounds "
                f"{', '.join(f'{r:.2f}' for r in key['cpu_ratio_runs'])}); throughput {key['rps_ratio']:.2f}×",
                key["cpu_ratio"] <= 1.10,
            )
        )
    observed = results.get("paired_ratios", {}).get("call/mcpgw-observability")
    if observed and observed.get("cpu_ratio") is not None:
        runs = ", ".join(f"{r:.3f}" for r in observed["cpu_ratio_runs"])
        out.append(
            (
                "per-tool metrics + access log: ≤ 5 % more Envoy CPU per `tools/call`",
                f"{observed['cpu_ratio']:.3f}× the same stack with both off (rounds {runs}); "
                f"throughput {observed['rps_ratio']:.3f}×",
                observed["cpu_ratio"] <= 1.05,
            )
        )
    scale = results.get("scale")
    if scale:
        sizes = {r["servers"]: r for r in scale["sizes"]}
        if 1 in sizes and 1000 in sizes:
            one = sizes[1]["before_edit"]["envoy_rss_kib"] * 1024
            big = sizes[1000]["before_edit"]["envoy_rss_kib"] * 1024
            raw = sizes[1000]["raw_config_bytes"]["ecds_total"]
            limit = 2 * one + raw
            out.append(
                (
                    "RSS(1,000 servers) < 2×RSS(1) + raw config",
                    f"{big / 2**20:.1f} MiB < 2×{one / 2**20:.1f} + {raw / 2**20:.1f} = {limit / 2**20:.1f} MiB",
                    big < limit,
                )
            )
    return out


def render(results: dict[str, Any]) -> str:
    s = results["scenarios"]
    lines = [
        "# Data-plane benchmark",
        "",
        f"Generated {results['generated_at']} by `make bench-dataplane` (`bench/dataplane.py`).",
        "",
        "| method | scenario | what | req/s | p50 µs | p99 µs | p99.9 µs | CPU µs/req | Envoy RSS MiB | ×proxy | ×native | p50 − proxy |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for group, name, what in ROWS:
        r = s.get(f"{group}/{name}")
        if r is None:
            continue
        native = s.get(f"{group}/native", {}).get("rps")
        base = s.get(f"{group}/proxy", s["call/proxy"])
        lines.append(
            f"| {group} | **{name}** | {what} | {r['rps']:.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
            f"{r['p999_us']:.0f} | {_cpu(r)} | {_mib(r.get('envoy_rss_kib'))} | {_ratio(r['rps'], base['rps'])} | "
            f"{_ratio(r['rps'], native)} | {r['p50_us'] - base['p50_us']:+.0f} µs |"
        )
    lines += [
        "",
        "CPU µs/req: CPU time (user + system) of the process under test over the measured run, "
        "÷ requests: the Envoy in Envoy rows, nginx in **floor**, the python server in **python**.",
        "",
        "## Targets (median of per-round ratios to native, this run)"
        if "paired_ratios" in results
        else "## Targets (ratios from this run)",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    for name, measured, ok in targets(results):
        lines.append(f"| {name} | {measured} | {'yes' if ok else '**no**'} |")
    ratios = results.get("paired_ratios", {})
    if "list/wasm-floor" in ratios:
        lines += [
            "",
            f"Proxy-Wasm floor in this Envoy (`list/wasm-floor` ÷ `list/native`, a filter that only "
            f"reads the body and sends a fixed answer): throughput {_paired_text(ratios['list/wasm-floor'])}.",
        ]
    if "initialize/mcpgw" in ratios:
        lines += ["", f"`initialize` (no target): {_paired_text(ratios['initialize/mcpgw'])}."]

    scale = results.get("scale")
    if scale:
        lines += [
            "",
            "## Memory and configuration scale (servers × 10 tools, Envoy `--concurrency 1`)",
            "",
            "| servers | tools | filter config JSON | ECDS bytes | Envoy RSS MiB | Envoy heap MiB | Wasm VM memory MiB | VMs | "
            "RSS after full update | full update: published → applied | one-server edit | call p50 / p99 µs |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in scale["sizes"]:
            b, raw, full = r["before_edit"], r["raw_config_bytes"], r["full_update"]
            vm = b.get("vm_memory_bytes")
            lines.append(
                f"| {r['servers']} | {r['tools']} | {raw['filter_configs'] / 1024:.0f} KiB | {raw['ecds_total'] / 1024:.0f} KiB | "
                f"{_mib(b['envoy_rss_kib'])} | {b['heap_allocated'] / 2**20:.1f} | "
                f"{'–' if vm is None else f'{vm / 2**20:.1f}'} | {b.get('wasm_vms_active')} | "
                f"{_mib(r['after_full_update']['envoy_rss_kib'])} | {full['published_to_all_applied_ms']} ms | "
                f"{r['one_server_edit_published_to_applied_ms']} ms | "
                f"{r['call_on_last_server']['p50_us']} / {r['call_on_last_server']['p99_us']} |"
            )

    hot = results.get("filter_hotpath_v8") or {}
    if "ReleaseFast" in hot:
        lines += [
            "",
            "## The filter's own work per request, in V8, by build mode (`bench/dataplane_hotpath.py`)",
            "",
            "| build | module bytes | tools/call ns | tools/list ns | initialize ns |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for mode, h in hot.items():
            lines.append(
                f"| {mode} | {h['module_bytes']} | {h['tools_call_ns']} | {h['tools_list_ns']} | {h['initialize_ns']} |"
            )
    lines += ["", "## Setup", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in results["setup"].items()]
    lines += ["", "## Versions", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in results["versions"].items()]
    if "loadavg" in results:
        lines.append(f"- load average before / after the scenarios: {results['loadavg']}")
    if "cpu_affinity_after_runs" in results:
        placed = ", ".join(f"{k} {v}" for k, v in results["cpu_affinity_after_runs"].items())
        lines.append(f"- CPUs each process's threads were allowed after the runs: {placed}")
    if "envoy_pids_per_round" in results:
        pids = "; ".join(
            f"round {i + 1}: " + ", ".join(f"{k} {v}" for k, v in r.items())
            for i, r in enumerate(results["envoy_pids_per_round"])
        )
        lines.append(f"- Envoy pids per round (new processes each round): {pids}")
    runs = ", ".join(f"{k}: {v['rps_runs']}" for k, v in s.items())
    lines += ["", f"Per-round req/s: {runs}."]
    cpu_runs = ", ".join(
        f"{k}: {v['cpu_us_per_req_runs']}" for k, v in s.items() if v.get("cpu_us_per_req_runs")
    )
    if cpu_runs:
        lines += ["", f"Per-round CPU µs/req: {cpu_runs}."]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    path = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parent / "results" / "dataplane.json"
    )
    print(render(json.loads(path.read_text())))
