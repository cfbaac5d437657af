"""Translation benchmark: registry snapshot → Envoy resources → versioned xDS snapshot.

For 100 … 100,000 tools (servers of 10 tools each) it measures, each size in its own process so
peak memory is that size's alone:
- full build: translate every server and build the xDS snapshot (what a control plane does at
  start-up or on a replica's first load), and the process's peak RSS;
- one-tool rebuild: edit one tool's description, re-translate incrementally and rebuild the xDS
  snapshot; the baseline in the same run is a fresh (non-incremental) translation of the same
  edited registry.

    .venv/bin/python bench/translation.py [--sizes 100,1000,10000,100000] [--edits 20] [--out DIR]

Writes translation.json and translation.md into bench/results/ (or --out).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TOOLS_PER_SERVER = 10


def server_document(index: int, description: str = "List the items.") -> dict[str, Any]:
    tools = [
        {
            "name": f"tool{j}",
            "description": description if j == 0 else f"Tool number {j}.",
            "args": [
                {"name": "id", "type": "integer", "required": True, "position": "path"},
                {"name": "q", "type": "string", "position": "query"},
                {"name": "limit", "type": "integer", "default": 10, "position": "query"},
            ],
            "requestTemplate": {"url": "/v1/items/{{.args.id}}", "method": "GET"},
            "responseTemplate": {"body": "{{range .items}}- {{.name}}\n{{end}}"},
        }
        for j in range(TOOLS_PER_SERVER)
    ]
    return {
        "kind": "McpServer",
        "namespace": f"team{index % 50}",
        "name": f"server{index}",
        "backend": {"endpoints": [f"10.0.{index // 250 % 250}.{index % 250 + 1}:8080"]},
        "tools": tools,
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure_size(tools: int, edits: int) -> dict[str, Any]:
    """Runs inside a child process: one size, fresh memory."""
    from mcpgw.registry.model import RegistrySnapshot
    from mcpgw.registry.validate import parse_server
    from mcpgw.translate.envoy import GatewaySettings, PluginRef, Translator, translate
    from mcpgw.xds.cache import SnapshotCache

    settings = GatewaySettings(
        PluginRef("http://127.0.0.1:18002/plugins/mcp-server/0.1.0/plugin.wasm", "0" * 64)
    )
    servers = tools // TOOLS_PER_SERVER
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    parsed = {s.key: s for s in (parse_server(server_document(i)) for i in range(servers))}
    parse_s = time.perf_counter() - started

    started = time.perf_counter()
    translator = Translator(settings)
    cache = SnapshotCache()
    cache.set_resources(
        translator.translate(RegistrySnapshot(servers=tuple(parsed[k] for k in sorted(parsed))))
    )
    build_s = time.perf_counter() - started
    gc.freeze()  # as the control plane does after its first full translation
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024

    incremental: list[float] = []
    fresh: list[float] = []
    for edit in range(edits):
        index = (edit * 7919) % servers
        edited = parse_server(server_document(index, description=f"Edited {edit}."))
        parsed[edited.key] = edited
        snapshot = RegistrySnapshot(servers=tuple(parsed[k] for k in sorted(parsed)))
        started = time.perf_counter()
        resources = translator.translate(snapshot)
        delta = translator.delta
        changed = cache.set_resources(resources, (delta.base, delta.changed) if delta else None)
        incremental.append((time.perf_counter() - started) * 1000)
        assert changed == ["type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"], changed
        if edit < 3:  # a fresh translation is the baseline; three samples keep big sizes affordable
            started = time.perf_counter()
            translate(snapshot, settings)
            fresh.append((time.perf_counter() - started) * 1000)
    return {
        "tools": tools,
        "servers": servers,
        "parse_s": round(parse_s, 3),
        "full_build_s": round(build_s, 3),
        "peak_rss_mib": round(peak_mib, 1),
        "rebuild_ms_p50": round(statistics.median(incremental), 2),
        "rebuild_ms_p99": round(percentile(incremental, 0.99), 2),
        "fresh_translate_ms_p50": round(statistics.median(fresh), 1),
        "speedup": round(statistics.median(fresh) / statistics.median(incremental), 1),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| tools | servers | full build (s) | peak RSS (MiB) | one-tool rebuild p50 / p99 (ms) "
        "| fresh translate (ms) | speedup |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['tools']:,} | {r['servers']:,} | {r['full_build_s']} | {r['peak_rss_mib']} | "
            f"{r['rebuild_ms_p50']} / {r['rebuild_ms_p99']} | {r['fresh_translate_ms_p50']} | "
            f"{r['speedup']}x |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,10000,100000", help="tool counts, comma-separated")
    parser.add_argument(
        "--edits", type=int, default=20, help="one-tool edits per size (default: %(default)s)"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results directory (default: bench/results)"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_size(args.child, args.edits)))
        return 0
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"translation: {size:,} tools …", file=sys.stderr, flush=True)
        output = subprocess.run(
            [sys.executable, __file__, "--child", str(size), "--edits", str(args.edits)],
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        ).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {
        "python": platform.python_version(),
        "cpu_count": __import__("os").cpu_count(),
        "machine": platform.machine(),
    }
    (args.out / "translation.json").write_text(
        json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n"
    )
    table = markdown(rows)
    target = next((r for r in rows if r["tools"] == 100_000), None)
    verdict = ""
    if target is not None:
        met = target["rebuild_ms_p99"] < 20
        verdict = (
            f"\n\nTarget: one-tool rebuild under 20 ms at 100,000 tools: p99 {target['rebuild_ms_p99']} ms, "
            f"{'met' if met else 'MISSED'}."
        )
    (args.out / "translation.md").write_text(f"## Translation\n\n{table}{verdict}\n")
    print(table + verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
