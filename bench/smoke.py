"""Every benchmark in bench/, tiny: proof on every `make test` that each still runs end to end.

A benchmark that is only run before a release rots: the propagation benchmark broke silently
when the gateway began to require its session id. Here each benchmark runs as `make bench`
runs it (the same script, processes and tools, wrk and nginx installed the same way), with
sizes that take seconds, and writes into a temporary directory, so the committed results in
bench/results/ are never touched (checked: their content must be the same afterwards).

A benchmark fails the smoke when it exits non-zero, runs past its time limit, writes no
results, writes a NaN or infinite number, or lacks a figure its full run reports (each
benchmark lists the figures it must yield, below). Every file in bench/ must belong to one
benchmark here, so a new benchmark cannot be added without its smoke.

    .venv/bin/python bench/smoke.py [--only translation,propagation] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# Seconds a benchmark may take before it is stopped: ten times or more what it takes on a
# 2-core machine, so a slow CI runner passes and a hang still ends the run.
STOP_AFTER = 300.0
# After SIGINT (the benchmarks' own clean-up runs: stacks and Envoys stopped), this long until
# SIGKILL.
GRACE = 20.0


def positive(value: Any) -> bool:
    """a number above 0"""
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def number(value: Any) -> bool:
    """a number"""
    return isinstance(value, int | float) and not isinstance(value, bool)


def zero(value: Any) -> bool:
    """0"""
    return value == 0 and not isinstance(value, bool)


@dataclass(frozen=True)
class Benchmark:
    name: str
    # Each command: a script in bench/ and its arguments; "{out}" is the benchmark's results
    # directory. One of them writes `result` (checked after the last), the others prepare or
    # read it.
    commands: tuple[tuple[str, ...], ...]
    result: str  # the JSON file the first command writes into {out}
    # (dotted path, check): "*" matches every key or item and must match at least one. A dict
    # with a "skipped" key (a part the benchmark skips, saying why) is reported, not failed.
    figures: tuple[tuple[str, Callable[[Any], bool]], ...]
    covers: tuple[str, ...]  # the files in bench/ this run exercises
    # Seconds a command whose first argument is --install-only may take (a package install, cold
    # pip cache on a busy runner), instead of --stop-after.
    install_stop_after: float = 900.0


BENCHMARKS = (
    Benchmark(
        "translation",
        (("translation.py", "--sizes", "100,1000", "--edits", "3", "--out", "{out}"),),
        "translation.json",
        (
            ("rows.*.full_build_s", positive),
            ("rows.*.peak_rss_mib", number),
            ("rows.*.rebuild_ms_p50", positive),
            ("rows.*.rebuild_ms_p99", positive),
            ("rows.*.fresh_translate_ms_p50", positive),
            ("rows.*.speedup", positive),
        ),
        ("translation.py",),
    ),
    Benchmark(
        "propagation",
        (("propagation.py", "--servers", "2,5", "--edits", "3", "--out", "{out}"),),
        "propagation.json",
        (
            ("rows.*.p50_ms", positive),
            ("rows.*.p99_ms", positive),
            ("rows.*.max_ms", positive),
            ("rows.*.tools_list_rtt_p50_ms", positive),
            ("rows.*.startup_s", positive),
        ),
        ("propagation.py",),
    ),
    Benchmark(
        "fanout",
        (
            (
                "fanout.py",
                *("--streams", "4", "--servers", "5", "--tools", "2", "--edits", "2"),
                *("--out", "{out}"),
            ),
        ),
        "fanout.json",
        (
            ("rows.*.median_ms", positive),
            ("rows.*.p99_ms", positive),
            ("rows.*.responses_per_edit", positive),
            ("rows.*.bytes_per_edit", positive),
            ("ratio_sotw_over_delta.median", positive),
        ),
        ("fanout.py",),
    ),
    Benchmark(
        "dataplane",
        (
            (
                "dataplane.py",
                *("--duration", "1", "--warmup", "0", "--repeats", "1"),
                *("--scale-sizes", "2", "--scale-duration", "1", "--hotpath-iterations", "1000"),
                *("--out", "{out}"),
            ),
            # The report also renders on its own from the JSON (how results are re-rendered).
            ("dataplane_report.py", "{out}/dataplane.json"),
        ),
        "dataplane.json",
        (
            ("scenarios.*.rps", positive),
            ("scenarios.*.p50_us", positive),
            ("scenarios.*.p99_us", positive),
            ("scenarios.*.cpu_us_per_req", positive),
            ("scenarios.*.requests", positive),
            # wrk counts non-2xx answers and socket errors: a scenario answering 4xx fast is
            # not a result.
            ("scenarios.*.errors", zero),
            ("paired_ratios.*.rps_ratio", positive),
            ("paired_ratios.*.cpu_ratio", positive),
            ("idle_envoy_rss_kib.*", positive),
            ("scale.sizes.*.before_edit.envoy_rss_kib", positive),
            ("scale.sizes.*.full_update.registry_write_to_all_applied_ms", number),
            ("scale.sizes.*.call_on_last_server.rps", positive),
            ("filter_hotpath_v8.*.tools_call_ns", positive),
            ("filter_hotpath_v8.*.tools_list_ns", positive),
            ("filter_hotpath_v8.*.auth_apikey_ns", positive),
            ("filter_hotpath_v8.*.module_bytes", positive),
        ),
        (
            "dataplane.py",
            "dataplane_configs.py",
            "dataplane_jwt.py",
            "dataplane_proc.py",
            "dataplane_python.py",
            "dataplane_report.py",
            "dataplane_scale.py",
            "dataplane_hotpath.py",
            "dataplane_hotpath.mjs",
            "wasm_floor.zig",
            "wasm_headers.zig",
        ),
    ),
    # The peers run for real: each installed into its own venv under .cache/peers/ (a fresh clone
    # pays ~1.5 min for ContextForge and ~1 min for FastMCP with pip's cache warm, ~4 min cold on
    # this loaded 2-vCPU machine), one install per command with its own time limit (900 s).
    Benchmark(
        "peers",
        (
            ("peers.py", "--install-only", "--peers", "contextforge"),
            ("peers.py", "--install-only", "--peers", "fastmcp"),
            (
                "peers.py",
                *("--duration", "2", "--warmup", "1", "--repeats", "1", "--connections", "4"),
                *("--out", "{out}"),
            ),
        ),
        "peers.json",
        (
            ("scenarios.*.rps", positive),
            ("scenarios.*.p50_us", positive),
            ("scenarios.*.p99_us", positive),
            ("scenarios.*.cpu_us_per_req", positive),
            ("scenarios.*.requests", positive),
            ("scenarios.*.errors", zero),
            ("scenarios.*.rss_kib", positive),
            ("ratios.*.mcpgw_rps_over_peer", positive),
            ("ratios.*.peer_cpu_over_mcpgw", positive),
            ("idle_rss_kib.*", positive),
            ("peer_settings.*.gunicorn_workers", positive),
            ("installs.*.install_seconds", positive),
        ),
        ("peers.py", "peers_servers.py", "peers_fastmcp.py"),
    ),
    Benchmark(
        "dataplane_profile",
        (
            (
                "dataplane_profile.py",
                *("--rounds", "1", "--duration", "1", "--warmup", "0", "--instances", "1"),
                *("--probe-duration", "1", "--probe-log-every", "1000", "--out", "{out}"),
            ),
        ),
        "dataplane_profile.json",
        (
            ("ladder.*.cpu_us_per_req_median", positive),
            ("ladder.*.rps_median", positive),
            ("ladder.*.errors", zero),
            ("probe.requests_run", positive),
            ("probe.averaged_over_requests", positive),
            ("probe.clock_read_ns", positive),
            ("probe.ns.*", number),
        ),
        ("dataplane_profile.py", "native_module_floor.zig", "wasm_probe.zig"),
    ),
    Benchmark(
        "chaos",
        # The whole deployment (5 Redis processes, 2 replicas, 3 Envoys) and one fault: ~45 s.
        (
            (
                "chaos.py",
                *("--faults", "controlplane", "--seconds-per-fault", "6", "--warmup", "2"),
                *("--out", "{out}"),
            ),
        ),
        "chaos.json",
        (
            ("rows.*.calls", positive),
            ("rows.*.admin_acked", positive),
            ("rows.*.admin_acked_then_lost", zero),
            ("rows.*.recovery_s", number),
            ("admin_writes.acknowledged", positive),
            ("admin_writes.lost", zero),
        ),
        ("chaos.py",),
    ),
    Benchmark(
        "soak",
        (
            (
                "soak.py",
                *("--minutes", "0.25", "--warmup-minutes", "0.05", "--sample-every", "2"),
                *("--rate", "6", "--out", "{out}"),
            ),
        ),
        "soak.json",
        (
            ("processes.*.slope_mib_per_10min", number),
            ("processes.*.rss_end_mib", positive),
            ("processes.envoy.samples_after_warmup", positive),
            ("requests.admin put", positive),
            ("requests.sse session", positive),
            ("requests.stateless tools/call", positive),
            ("requests.streamable tools/call", positive),
            # Any failed request or admin write, a process that exited: soak.py also exits 1.
            ("errors", zero),
        ),
        ("soak.py",),
    ),
)


class SmokeFailure(Exception):
    """A benchmark did not run, or ran and did not yield its figures."""


def strict_json(text: str) -> Any:
    """JSON without NaN or ±Infinity (Python writes them by default; no benchmark may)."""

    def refuse(constant: str) -> None:
        raise SmokeFailure(f"{constant} in the results")

    return json.loads(text, parse_constant=refuse)


def matches(data: Any, path: list[str], where: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) for every value at `path`; "*" is every key or item. A missing key
    yields (path, KeyError) so the caller names it."""
    if isinstance(data, dict) and "skipped" in data:
        yield where, data  # reported by the caller
        return
    if not path:
        yield where, data
        return
    head, rest = path[0], path[1:]
    if head == "*":
        items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
        for key, value in items:
            yield from matches(value, rest, f"{where}.{key}".lstrip("."))
        return
    if isinstance(data, dict) and head in data:
        yield from matches(data[head], rest, f"{where}.{head}".lstrip("."))
    else:
        yield f"{where}.{head}".lstrip("."), KeyError


def check_figures(benchmark: Benchmark, data: Any) -> tuple[int, list[str]]:
    """How many figures were checked, and the notes on skipped parts; raises on a bad one."""
    checked, notes = 0, []
    for path, ok in benchmark.figures:
        found = list(matches(data, path.split(".")))
        if not found:
            raise SmokeFailure(f"{path}: no such figure (an empty table?)")
        for where, value in found:
            if value is KeyError:
                raise SmokeFailure(f"{path}: {where} is missing")
            if isinstance(value, dict) and "skipped" in value:
                note = f"{where or path} skipped: {value['skipped']}"
                if note not in notes:
                    notes.append(note)
                continue
            if not ok(value):
                raise SmokeFailure(f"{where} = {value!r}, expected {ok.__doc__}")
            checked += 1
    return checked, notes


def run_command(command: list[str], log: Path, stop_after: float) -> None:
    """Run one benchmark command in its own process group, its output to `log`; stopped after
    `stop_after` seconds (SIGINT first, so its own clean-up stops what it started)."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            code = process.wait(stop_after)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(GRACE)
            raise SmokeFailure(f"still running after {stop_after:.0f} s, stopped") from None
    if code != 0:
        raise SmokeFailure(f"exited with {code}")


def run_benchmark(benchmark: Benchmark, out: Path, stop_after: float) -> tuple[int, list[str]]:
    out.mkdir(parents=True, exist_ok=True)
    log = out / "output.log"
    for script, *args in benchmark.commands:
        command = [sys.executable, str(HERE / script), *(a.replace("{out}", str(out)) for a in args)]
        try:
            limit = benchmark.install_stop_after if args[:1] == ["--install-only"] else stop_after
            run_command(command, log, limit)
        except SmokeFailure as failure:
            tail = log.read_text(errors="replace").splitlines()[-40:]
            shown = " ".join(command[1:]).replace(str(HERE) + "/", "bench/")
            raise SmokeFailure(f"`{shown}` {failure}; its last output:\n  " + "\n  ".join(tail)) from None
    result = out / benchmark.result
    if not result.is_file():
        raise SmokeFailure(f"wrote no {benchmark.result}")
    return check_figures(benchmark, strict_json(result.read_text()))


def fingerprint(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def uncovered() -> list[str]:
    """Files in bench/ no benchmark here exercises (the README and the results aside)."""
    covered = {name for b in BENCHMARKS for name in b.covers} | {Path(__file__).name}
    return sorted(
        p.name
        for p in HERE.iterdir()
        if p.is_file() and p.suffix in {".py", ".zig", ".mjs"} and p.name not in covered
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [b.name for b in BENCHMARKS]
    parser.add_argument("--only", help=f"comma-separated, of: {', '.join(names)}")
    parser.add_argument("--keep", type=Path, help="write the results here (kept) instead of a temp dir")
    parser.add_argument("--stop-after", type=float, default=STOP_AFTER, help="seconds per command")
    args = parser.parse_args()
    chosen = BENCHMARKS
    if args.only:
        wanted = args.only.split(",")
        if unknown := [w for w in wanted if w not in names]:
            parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(names)}")
        chosen = tuple(b for b in BENCHMARKS if b.name in wanted)
    if missing := uncovered():
        print(
            f"bench-smoke: FAILED: no smoke runs {', '.join(missing)}; add it to BENCHMARKS in bench/smoke.py"
        )
        return 1

    before = fingerprint(RESULTS)
    failed: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mcpgw-bench-smoke-") as temp:
        root = args.keep or Path(temp)
        for benchmark in chosen:
            t0 = time.monotonic()
            print(f"bench-smoke: {benchmark.name} …", flush=True)
            try:
                checked, notes = run_benchmark(benchmark, root / benchmark.name, args.stop_after)
            except SmokeFailure as failure:
                failed.append(benchmark.name)
                print(f"bench-smoke: {benchmark.name} FAILED: {failure}", flush=True)
                continue
            print(
                f"bench-smoke: {benchmark.name} ok, {checked} figures checked, {time.monotonic() - t0:.1f} s",
                flush=True,
            )
            for note in notes:
                print(f"bench-smoke:   note: {note}", flush=True)
    if fingerprint(RESULTS) != before:
        failed.append("bench/results/ changed (a smoke run must not write committed results)")
    elapsed = time.monotonic() - started
    if failed:
        print(f"bench-smoke: FAILED ({elapsed:.0f} s): {'; '.join(failed)}", flush=True)
        return 1
    print(f"bench-smoke: all {len(chosen)} benchmarks ran, {elapsed:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
