"""Data-plane profile: where mcpgw's extra Envoy CPU per `tools/list` goes, against native.

    .venv/bin/python bench/dataplane_profile.py [--rounds 4 --duration 2 --instances 2]

`bench/dataplane.py` shows `tools/list` missing its target; this shows why. A cost ladder of
Envoys answers the same `tools/list`, each rung adding one part of what the real gateway runs:

    native                       static Envoy, Envoy's own `mcp_json_rest_bridge`
    native-module-floor          static Envoy, `bench/native_module_floor.zig` as an Envoy dynamic
                                 module (native code: the floor without a VM)
    wasm-floor                   static Envoy, `bench/wasm_floor.zig` inline (the Proxy-Wasm floor)
    mcpgw-inline                 static Envoy, our plugin inline with the stack's exact configuration
    mcpgw-composite              the same inside the composite filter the translator emits
    mcpgw-composite+early+stats  plus the HCM early header mutation and the bootstrap stats exclusion
    mcpgw-stack                  the real `Stack`'s Envoy (xDS, RDS, ECDS)

Every rung runs `--instances` separate Envoy processes (identical processes differ in steady
speed by up to ~20%), all the same binary with `--concurrency 1 -l warning`, pinned to the
tested CPU; each round runs every instance once (warm-up, then the measured run) and records
the Envoy's CPU µs per request. Then `bench/wasm_probe.zig`, run in one static Envoy, times
the host calls the filter makes per request from inside the VM. Writes
`bench/results/dataplane_profile.json` and `dataplane_profile.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataplane import (
    CONCURRENCY,
    PLUGIN,
    Placement,
    Scenario,
    build_bench_native_module,
    build_bench_wasm,
    check,
    load_side,
    measure_once,
    versions,
)
from dataplane_configs import LIST_BODY, server_yaml, static_envoy
from dataplane_proc import LoadSpec, Nginx, ensure_tool, open_session, wrk

from mcpgw.bootstrap import DROPPED_CLUSTER_STATS
from mcpgw.envoyproc import EnvoyProcess
from mcpgw.stack import Stack, free_port, on_free_ports
from mcpgw.translate.envoy import (
    BROKER_HEADERS,
    EARLY_HEADER_MUTATION_TYPE,
    EXECUTE_FILTER_ACTION_TYPE,
    composite_filter,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SERVER_PATH = "/mcp/bench/pets"
EXPECT = '"getPet"'  # every rung lists the same tool
PROBE_OPS = ("pairs", "values8", "present", "absent", "shared", "body", "headers_total")
PROBE_LABELS = {
    "pairs": "`proxy_get_header_map_pairs` (the whole request header map)",
    "values8": "8 x `proxy_get_header_map_value` (:path, origin, :method, accept, mcp-session-id, "
    "mcp-protocol-version, mcp-method, mcp-name)",
    "present": "1 x `proxy_get_header_map_value`, present (:path)",
    "absent": "1 x `proxy_get_header_map_value`, absent (mcp-name)",
    "shared": "`proxy_get_shared_data`, an empty value",
    "body": "`proxy_get_buffer_bytes`, the request body",
    "headers_total": "all of the header-phase calls above together (pairs + 8 values + present + "
    "absent + shared)",
}

Bootstrap = Callable[[int, int], str]  # (listen port, admin port) -> bootstrap text


@dataclass
class Rung:
    name: str
    adds: str
    path: str  # the URL path the rung answers tools/list on
    session: bool  # mcpgw rungs verify the session, so they get the session headers
    bootstrap: Bootstrap | None  # None: the Stack's Envoys
    envoys: list[EnvoyProcess] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    sessions: list[Mapping[str, str]] = field(default_factory=list)  # per instance (stack: its own)


# --- bootstraps ------------------------------------------------------------------------------


def local_wasm(ecds_typed_config: Mapping[str, Any], wasm: Path) -> dict[str, Any]:
    """The stack's ECDS Wasm config (name, root_id, vm_id, configuration, options) as delivered,
    with the module read from disk instead of fetched from the plugin server; the file must be
    the module the stack runs, or the static rungs would profile another build."""
    typed = copy.deepcopy(dict(ecds_typed_config))
    remote = typed["config"]["vm_config"]["code"].get("remote", {}).get("sha256")
    if remote and remote != sha256_of(wasm):
        raise RuntimeError(f"{wasm} (sha256 {sha256_of(wasm)}) is not the module the stack runs ({remote})")
    typed["config"]["vm_config"]["code"] = {"local": {"filename": str(wasm)}}
    return typed


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inline_filter(wasm_typed: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": "envoy.filters.http.wasm", "typed_config": copy.deepcopy(dict(wasm_typed))}


def inline_composite(wasm_typed: Mapping[str, Any]) -> dict[str, Any]:
    """The translator's composite filter with the Wasm config inline in the action instead of an
    ECDS reference (a static Envoy has no xDS)."""
    action = {
        "name": "bench/pets",
        "typed_config": {
            "@type": EXECUTE_FILTER_ACTION_TYPE,
            "typed_config": {"name": wasm_typed["config"]["name"], "typed_config": dict(wasm_typed)},
        },
    }
    return composite_filter({SERVER_PATH: action})


def mcpgw_static(
    listen: int,
    admin: int,
    backend_port: int,
    upstream_cluster: str,
    mcp_filter: Mapping[str, Any],
    *,
    early: bool = False,
    stats: bool = False,
) -> str:
    """The bench's plain static Envoy with `mcp_filter` before the router, a copy of the backend
    cluster under the server's cluster name (the configuration names it), and optionally the
    two bootstrap/HCM parts the stack adds around the filter."""
    bootstrap = json.loads(static_envoy(listen, admin, backend_port, native=False))
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, dict(mcp_filter))
    cluster = copy.deepcopy(bootstrap["static_resources"]["clusters"][0])
    cluster["name"] = cluster["load_assignment"]["cluster_name"] = upstream_cluster
    bootstrap["static_resources"]["clusters"].append(cluster)
    if early:
        # As mcpgw.translate.envoy._listener: strip the broker headers before any filter runs.
        hcm["early_header_mutation_extensions"] = [
            {
                "name": "envoy.http.early_header_mutation.header_mutation",
                "typed_config": {
                    "@type": EARLY_HEADER_MUTATION_TYPE,
                    "mutations": [{"remove": name} for name in BROKER_HEADERS],
                },
            }
        ]
    if stats:
        # As mcpgw.bootstrap: the stack's Envoy drops these per-cluster stats.
        bootstrap["stats_config"] = {
            "stats_matcher": {
                "exclusion_list": {"patterns": [{"safe_regex": {"regex": DROPPED_CLUSTER_STATS}}]}
            }
        }
    return json.dumps(bootstrap, indent=1)


def stack_wasm_config(stack: Stack) -> dict[str, Any]:
    """The Wasm typed_config the stack's Envoy received over ECDS for the bench server: its
    configuration text holds the session keys, so sessions opened on the stack verify here too."""
    assert stack.envoy is not None
    dump = json.loads(stack.envoy.admin("/config_dump?resource=ecds_filters"))
    for entry in dump.get("configs", []):
        typed = entry["ecds_filter"]["typed_config"]
        config = typed.get("config", {})
        if config.get("root_id") == "mcp-server" and "configuration" in config:
            return dict(typed)
    raise RuntimeError(f"no mcp-server ECDS filter in the stack's config dump: {str(dump)[:500]}")


# --- the probe -------------------------------------------------------------------------------


PROBE_LINE = re.compile(r"wasm_probe n=(\d+)((?: \w+=\d+)+)")


def parse_probe(log_text: str) -> dict[str, int]:
    """The last running-averages line the probe logged: {"n": requests, op: ns, ...}."""
    found = PROBE_LINE.findall(log_text)
    if not found:
        raise RuntimeError("the probe logged no averages (fewer requests than --probe-log-every?)")
    n, pairs = found[-1]
    out = {"n": int(n)}
    out.update({k: int(v) for k, v in (p.split("=") for p in pairs.split())})
    return out


async def run_probe(
    work: Path,
    backend_port: int,
    session: Mapping[str, str],
    spec: LoadSpec,
    placement: Placement,
    duration_s: float,
    log_every: int,
) -> dict[str, Any]:
    """One static Envoy with the probe inline under wrk; ns per host call, the clock read's own
    cost (`timer`) subtracted. The probe logs its running averages every `log_every` requests."""
    wasm = build_bench_wasm("wasm_probe", work)
    typed = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": "wasm-probe",
            "vm_config": {
                "vm_id": "wasm-probe",
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": str(wasm)}},
            },
            "allow_on_headers_stop_iteration": True,
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": str(log_every),
            },
        },
    }
    listen, admin = free_port(), free_port()
    workdir = work / "probe"
    workdir.mkdir()
    bootstrap = mcpgw_static(listen, admin, backend_port, "probe-unused", inline_filter(typed))
    envoy = EnvoyProcess(bootstrap, admin_port=admin, concurrency=CONCURRENCY, workdir=workdir)
    await envoy.start()
    try:
        await envoy.wait_ready(30, listeners=1)
        placement.pin_tested(envoy.pid)
        url = f"http://127.0.0.1:{listen}{SERVER_PATH}"
        result = await wrk(
            url,
            "POST",
            LIST_BODY,
            LoadSpec(spec.threads, spec.connections, duration_s, 0),
            work,
            headers=session,
        )
        # The line is logged when the log_every-th request ends; give the log a moment to land.
        deadline = time.monotonic() + 5
        while True:
            try:
                raw = parse_probe(envoy.log_path.read_text(errors="replace"))
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await envoy.stop()
    clock = raw["timer"]
    return {
        "requests_run": result["requests"],
        "rps": round(result["rps"]),
        "averaged_over_requests": raw["n"],
        "clock_read_ns": clock,
        "raw_ns": raw,
        # Each timed step ends with one clock read, as the empty `timer` step does; the
        # headers total spans one read per step (6), the body one.
        "ns": {
            op: max(raw[op] - clock * (6 if op == "headers_total" else 1), 0) for op in PROBE_OPS if op in raw
        },
    }


# --- the ladder ------------------------------------------------------------------------------


def summarize(rungs: list[Rung], runs: Mapping[str, list[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Per rung: the median CPU µs/req over every run, the mean over instances of each
    instance's minimum, and the step from the rung above (on that mean)."""
    out: list[dict[str, Any]] = []
    above: float | None = None
    for rung in rungs:
        per_instance = runs[rung.name]  # [instance][round]
        cpu = [r["cpu_us_per_req"] for inst in per_instance for r in inst]
        mins = [min(r["cpu_us_per_req"] for r in inst) for inst in per_instance]
        mean_min = statistics.mean(mins)
        out.append(
            {
                "rung": rung.name,
                "adds": rung.adds,
                "cpu_us_per_req_median": round(statistics.median(cpu), 2),
                "cpu_us_per_req_mean_of_instance_min": round(mean_min, 2),
                "instance_min": [round(m, 2) for m in mins],
                "step_us": None if above is None else round(mean_min - above, 2),
                "rps_median": round(statistics.median(r["rps"] for inst in per_instance for r in inst)),
                "errors": sum(
                    r[f"err_{k}"]
                    for inst in per_instance
                    for r in inst
                    for k in ("connect", "read", "write", "status", "timeout")
                ),
            }
        )
        above = mean_min
    return out


async def measure(args: argparse.Namespace, work: Path, placement: Placement) -> dict[str, Any]:
    spec = LoadSpec(threads=1, connections=args.connections, duration_s=args.duration, warmup_s=args.warmup)
    backend_port = free_port()
    nginx = Nginx(work / "nginx", backend_port)
    stacks: list[Stack] = []
    statics: list[EnvoyProcess] = []
    try:
        floor_wasm = build_bench_wasm("wasm_floor", work)
        build_bench_native_module("native_module_floor", work)
        # Envoy looks dynamic modules up by name in this directory; the Envoys inherit it.
        os.environ["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(work)
        nginx.start()
        assert nginx.process is not None
        placement.pin_load(nginx.process.pid)
        registry = work / "registry"
        registry.mkdir()
        (registry / "pets.yaml").write_text(server_yaml("bench", "pets", backend_port))
        # One Stack per instance: each its own control plane and Envoy, so the stack rung has
        # --instances processes like the others; each gets its own session (own signing keys).
        for i in range(args.instances):
            (work / f"stack{i}").mkdir()
            stack = Stack(
                on_free_ports(
                    registry,
                    node_id=f"bench-profile-{i}",
                    envoy_concurrency=CONCURRENCY,
                    envoy_workdir=work / f"stack{i}",
                )
            )
            stacks.append(stack)
            await stack.start(ready_timeout=60)
        urls = [f"{s.mcp_base_url}{SERVER_PATH}" for s in stacks]
        sessions = [open_session(u) for u in urls]
        # The static mcpgw rungs run stack 0's configuration, so its session verifies there.
        wasm_typed = local_wasm(stack_wasm_config(stacks[0]), args.plugin)
        configuration = json.loads(wasm_typed["config"]["configuration"]["value"])
        upstream = configuration.get("upstream", {}).get("cluster", "mcpgw/bench/pets")

        def mcpgw(filt: dict[str, Any], **extra: bool) -> Bootstrap:
            return lambda listen, admin: mcpgw_static(listen, admin, backend_port, upstream, filt, **extra)

        rungs = [
            Rung(
                "native",
                "Envoy's `mcp_json_rest_bridge` (the reference)",
                "/mcp",
                False,
                lambda listen, admin: static_envoy(listen, admin, backend_port, native=True),
            ),
            Rung(
                "native-module-floor",
                "an Envoy dynamic module doing the least (native code, no VM; fixed reply)",
                "/mcp",
                False,
                lambda listen, admin: static_envoy(
                    listen, admin, backend_port, native=False, module="native_module_floor"
                ),
            ),
            Rung(
                "wasm-floor",
                "a Proxy-Wasm filter doing the least (body into the VM, fixed reply)",
                "/mcp",
                False,
                lambda listen, admin: static_envoy(
                    listen, admin, backend_port, native=False, wasm=floor_wasm
                ),
            ),
            Rung(
                "mcpgw-inline",
                "our filter, inline, the stack's configuration (sessions verified)",
                SERVER_PATH,
                True,
                mcpgw(inline_filter(wasm_typed)),
            ),
            Rung(
                "mcpgw-composite",
                "the composite filter + path matcher around it",
                SERVER_PATH,
                True,
                mcpgw(inline_composite(wasm_typed)),
            ),
            Rung(
                "mcpgw-composite+early+stats",
                "HCM early header mutation + bootstrap stats exclusion",
                SERVER_PATH,
                True,
                mcpgw(inline_composite(wasm_typed), early=True, stats=True),
            ),
            Rung(
                "mcpgw-stack",
                "the real stack's Envoy (xDS: LDS/RDS/CDS/ECDS, remote module)",
                SERVER_PATH,
                True,
                None,
            ),
        ]
        for rung in rungs:
            if rung.bootstrap is None:
                rung.envoys = [s.envoy for s in stacks if s.envoy is not None]
                rung.urls, rung.sessions = urls, sessions
                continue
            for i in range(args.instances):
                listen, admin = free_port(), free_port()
                workdir = work / f"{rung.name}-{i}"
                workdir.mkdir()
                envoy = EnvoyProcess(
                    rung.bootstrap(listen, admin), admin_port=admin, concurrency=CONCURRENCY, workdir=workdir
                )
                statics.append(envoy)
                await envoy.start()
                await envoy.wait_ready(30, listeners=1)
                rung.envoys.append(envoy)
                rung.urls.append(f"http://127.0.0.1:{listen}{rung.path}")
                rung.sessions.append(sessions[0] if rung.session else {})

        def scenario(rung: Rung, i: int) -> Scenario:
            return Scenario(
                rung.name,
                "list",
                rung.urls[i],
                "POST",
                LIST_BODY,
                EXPECT,
                rung.envoys[i].pid,
                headers=rung.sessions[i] or None,
            )

        for rung in rungs:
            for i in range(len(rung.envoys)):
                check(scenario(rung, i))  # answers correctly before anything is measured
        runs: dict[str, list[list[dict[str, Any]]]] = {r.name: [[] for _ in r.envoys] for r in rungs}
        for round_no in range(args.rounds):
            # Again each round: a thread started by an unpinned one would not inherit the CPU.
            placement.pin_load(nginx.process.pid)
            for rung in rungs:
                for envoy in rung.envoys:
                    placement.pin_tested(envoy.pid)
            for rung in rungs:
                for i in range(len(rung.envoys)):
                    result = await measure_once(scenario(rung, i), spec, work)
                    runs[rung.name][i].append(result | {"pid": rung.envoys[i].pid})
                    print(
                        f"round {round_no + 1}/{args.rounds} {rung.name:<28} #{i + 1} "
                        f"{result['rps']:>8.0f} req/s  cpu {result['cpu_us_per_req']:.1f} µs/req",
                        flush=True,
                    )
        probe = await run_probe(
            work, backend_port, sessions[0], spec, placement, args.probe_duration, args.probe_log_every
        )
        return {
            "ladder": summarize(rungs, runs),
            "runs": {
                name: [{"instance": i + 1, "runs": inst} for i, inst in enumerate(per)]
                for name, per in runs.items()
            },
            "probe": probe,
        }
    finally:
        for envoy in statics:
            await envoy.stop()
        for stack in stacks:
            await stack.stop()
        nginx.stop()


# --- report ----------------------------------------------------------------------------------


def render(results: Mapping[str, Any]) -> str:
    setup, ver, probe = results["setup"], results["versions"], results["probe"]
    lines = [
        "# Data-plane profile: mcpgw `tools/list` against native, rung by rung",
        "",
        f"Generated {results['generated_at']} by `bench/dataplane_profile.py` "
        f"(`make bench-dataplane-profile`).",
        "",
        "## Cost ladder (`tools/list`, Envoy CPU µs per request)",
        "",
        "| rung | what it adds | CPU µs/req, median | mean of instance minimums | step |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in results["ladder"]:
        step = "" if row["step_us"] is None else f"{row['step_us']:+.2f}"
        lines.append(
            f"| {row['rung']} | {row['adds']} | {row['cpu_us_per_req_median']:.2f} | "
            f"{row['cpu_us_per_req_mean_of_instance_min']:.2f} | {step} |"
        )
    ladder = {row["rung"]: row for row in results["ladder"]}
    if "native" in ladder and "mcpgw-stack" in ladder:
        extra = (
            ladder["mcpgw-stack"]["cpu_us_per_req_mean_of_instance_min"]
            - ladder["native"]["cpu_us_per_req_mean_of_instance_min"]
        )
        lines += ["", f"mcpgw-stack - native: {extra:+.2f} µs/req (means of instance minimums)."]
    lines += [
        "",
        "## Host calls inside the VM (`bench/wasm_probe.zig`)",
        "",
        f"One static Envoy under wrk for {probe['requests_run']:,} requests ({probe['rps']:,} req/s) "
        "with the bench's session headers; running averages over the first "
        f"{probe['averaged_over_requests']:,} (the probe's last log line). A clock read "
        f"(`proxy_get_current_time_nanoseconds`, {probe['clock_read_ns']} ns) is subtracted from "
        "each figure.",
        "",
        "| operation | ns per request |",
        "| --- | ---: |",
    ]
    for op in PROBE_OPS:
        if op in probe["ns"]:
            lines.append(f"| {PROBE_LABELS[op]} | {probe['ns'][op]:,} |")
    lines += [
        "",
        "Each figure still includes one clock read's overhead noise (the subtraction removes its "
        "average, not its spread), and the clock is the host's, read through a host call.",
        "",
        "## Setup",
        "",
        f"- Rounds: {setup['rounds']}; per run {setup['warmup_s']:g} s warm-up + "
        f"{setup['duration_s']:g} s measured, wrk -t1 -c{setup['connections']}; "
        f"{setup['instances']} Envoy processes per rung, every instance once per round.",
        f"- Envoy: {ver['envoy']}, `--concurrency {CONCURRENCY} -l warning` for every rung; "
        f"filter sha256 {ver['filter_sha256']} ({ver['filter_wasm_bytes']} bytes, {ver['filter_build']}).",
        f"- Placement: {setup['cpu_placement']}.",
        f"- The stack rung: {setup['instances']} `Stack`s (control plane, plugin server, Envoy each), "
        "each with its own session; the static mcpgw rungs load the plugin from disk with stack 1's "
        "ECDS configuration (`/config_dump?resource=ecds_filters`) and stack 1's session.",
        f"- Machine: {ver['machine']}, kernel {ver['kernel']}; load average before "
        f"{' '.join(results['loadavg']['before'])}, after {' '.join(results['loadavg']['after'])}.",
        "",
        "## How to read it",
        "",
        "Each rung is the one above plus one part of what the gateway runs, so its step is what "
        "that part costs per `tools/list` in Envoy's CPU time (user + system, every thread, over "
        "the measured run only, ÷ requests). Noise on a shared VM only ever adds time, so the "
        "figure to compare is the mean of instance minimums (each process's best run, averaged "
        "over processes, since identical processes differ in steady speed); the median shows "
        "how much the runs spread. `native-module-floor` is the least a filter in native code (an "
        "Envoy dynamic module) costs; `wasm-floor - native-module-floor` is what the Proxy-Wasm "
        "ABI costs over native code, and `wasm-floor - native` what Proxy-Wasm costs before any "
        "MCP work against Envoy's own bridge; `mcpgw-inline - wasm-floor` is our filter's own "
        "work (its host calls are priced in the probe table); the composite, early-mutation/stats "
        "and xDS steps are what the stack wraps around it. Steps smaller than the spread between "
        "instances are noise. Raw per-instance, per-round figures (req/s, latency, CPU, pid) are "
        "in the JSON.",
        "",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="mcpgw-bench-profile-"))
    placement = Placement.for_machine()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    try:
        with load_side(placement):
            measured = await measure(args, work, placement)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "instances": args.instances,
            "connections": args.connections,
            "probe_duration_s": args.probe_duration,
            "probe_log_every": args.probe_log_every,
            "cpu_placement": placement.describe(),
            "plugin": str(args.plugin),
            "cpu_per_request": "utime + stime of the rung's Envoy (/proc/<pid>/stat, every thread) "
            "over the measured wrk run only, ÷ its requests",
        },
        # The module actually profiled (versions() reports the first one under plugins/).
        "versions": versions()
        | {
            "filter_sha256": sha256_of(args.plugin)[:16],
            "filter_wasm_bytes": str(args.plugin.stat().st_size),
        },
        "loadavg": {"before": load_before, "after": Path("/proc/loadavg").read_text().split()[:3]},
        **measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds; every instance runs once per round")
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each run")
    parser.add_argument("--instances", type=int, default=2, help="Envoy processes per rung")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--probe-duration", type=float, default=5.0, help="seconds of load on the probe")
    parser.add_argument(
        "--probe-log-every",
        type=int,
        default=20_000,
        help="requests between the probe's running averages (the figures are the last line's)",
    )
    parser.add_argument(
        "--plugin",
        type=Path,
        # The module bench/dataplane.py's versions() reports, and the one `make filters` builds.
        default=next(iter(sorted(PLUGIN.glob("*/plugin.wasm"))), PLUGIN / "0.1.0" / "plugin.wasm"),
        help="the mcpgw filter module the static rungs load",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args()
    if args.probe_log_every < 1:
        parser.error("--probe-log-every must be at least 1")
    if not args.plugin.is_file():
        raise SystemExit(f"{args.plugin} is missing: build it with `make filters`")
    ensure_tool("wrk", "wrk")
    ensure_tool("nginx", "nginx-light")
    results = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dataplane_profile.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = render(results)
    (args.out / "dataplane_profile.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
