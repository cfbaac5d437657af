#!/usr/bin/env python3
"""Coverage-guided fuzzing of the filter's core (src/fuzz.zig) with libFuzzer.

    python fuzz/run.py [--seconds N] [--targets request,answer,...] [--report FILE]
    python fuzz/run.py --smoke       a Debug build, 4 s per target (`make test`)

Builds `src/fuzz.zig` with Zig's `-ffuzz` instrumentation (inline 8-bit counters, compare
tracing) into a static library, links it with clang's libFuzzer (`clang -fsanitize=fuzzer`,
Debian: clang-14 + libclang-rt-14-dev; `make fuzz-tools` installs them) and runs each target for
N seconds on one core, from the committed seeds (fuzz/corpus/<target>), the extremes
`seeds.py --extremes` writes, and the corpus earlier runs grew (build/fuzz/corpus/<target>).
Zig's safety checks stay on (ReleaseSafe): an out-of-bounds index, an overflow or an
`unreachable` is a crash, as is a leak (the harness's DebugAllocator), a failed check of the
answer (src/fuzz.zig) or an input running over 10 s (a hang).

Prints one line per target and a table (`--report` writes it as Markdown); exits 1 when any
target crashed, leaving the input under build/fuzz/crashes/. Reproduce one with
`MCPGW_FUZZ_TARGET=<target> ../../build/fuzz/mcpgw-fuzz <input>` from wasm-filters/mcp-server, then
add it to fuzz/regressions/<target>/ (the unit tests replay every file there).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILTER = HERE.parent
REPO = FILTER.parents[1]
BUILD = REPO / "build" / "fuzz"
BINARY = BUILD / "mcpgw-fuzz"
TARGETS = ["request", "answer", "proxy", "session", "config"]
# Deep enough for 30,000 levels of nesting (60 KB of brackets) and then some.
MAX_LEN = 65536
SMOKE_SECONDS = 3
CLANGS = ["clang-14", "clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15"]


def clang() -> str:
    for name in CLANGS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(
        "error: no clang with libFuzzer found; run `make fuzz-tools` "
        "(Debian/Ubuntu: apt-get install clang-14 libclang-rt-14-dev)"
    )


def build(optimize: str = "ReleaseSafe") -> Path:
    """The libFuzzer binary, rebuilt when a source is newer than it. ReleaseSafe for long runs;
    Debug (through LLVM, which instruments: ~10 s to build instead of ~1 minute) for the smoke.
    Both keep Zig's safety checks."""
    BUILD.mkdir(parents=True, exist_ok=True)
    binary = BINARY if optimize == "ReleaseSafe" else BUILD / f"mcpgw-fuzz-{optimize.lower()}"
    sources = [*(FILTER / "src").glob("*.zig"), HERE / "sancov.c"]
    if binary.exists() and all(s.stat().st_mtime <= binary.stat().st_mtime for s in sources):
        return binary
    cc = clang()
    lib = BUILD / f"libmcpgw-fuzz-{optimize.lower()}.a"
    started = time.monotonic()
    zig = [sys.executable, "-m", "ziglang", "build-lib", "src/fuzz.zig", "-O", optimize, "-fllvm", "-ffuzz"]
    zig += ["-fPIC", "-lc", "-fcompiler-rt", f"-femit-bin={lib}"]
    steps = [
        zig,
        [cc, "-c", "-O1", str(HERE / "sancov.c"), "-o", str(BUILD / "sancov.o")],
        [cc, "-fsanitize=fuzzer", str(BUILD / "sancov.o"), str(lib), "-o", str(binary)],
    ]
    for step in steps:
        r = subprocess.run(step, cwd=FILTER, capture_output=True, text=True)
        if r.returncode != 0:
            hint = ""
            if "fsanitize=fuzzer" in " ".join(step):
                hint = "\n(libFuzzer missing? `make fuzz-tools`: apt-get install clang-14 libclang-rt-14-dev)"
            raise SystemExit(f"error: {' '.join(step[:4])} failed:\n{r.stderr}{hint}")
    print(f"built {binary.relative_to(REPO)} in {time.monotonic() - started:.0f} s", flush=True)
    return binary


@dataclass
class Result:
    target: str
    seconds: float
    executions: int = 0
    new_units: int = 0
    corpus: int = 0
    peak_rss_mb: int = 0
    crashes: int = 0
    leaks: int = 0
    hangs: int = 0
    ooms: int = 0
    artifact: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.crashes or self.leaks or self.hangs or self.ooms)


def extremes() -> Path:
    out = BUILD / "extremes"
    if out.exists():
        shutil.rmtree(out)
    subprocess.run([sys.executable, str(HERE / "seeds.py"), "--extremes", str(out)], check=True)
    return out


def fuzz(binary: Path, target: str, seconds: int, extra: Path, log_dir: Path, smoke: bool = False) -> Result:
    # The smoke starts from the committed seeds only: its few seconds prove the binary runs and
    # the seeds pass, whatever earlier runs left behind.
    corpus = BUILD / ("smoke-corpus" if smoke else "corpus") / target
    if smoke and corpus.exists():
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True, exist_ok=True)
    crashes = BUILD / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    log = log_dir / f"{target}.log"
    args = [
        str(binary),
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-dict={HERE / 'mcp.dict'}",
        f"-artifact_prefix={crashes}/{target}-",
        str(corpus),
        str(HERE / "corpus" / target),
        str(extra / target),
    ]
    env = os.environ | {"MCPGW_FUZZ_TARGET": target, "MCPGW_FUZZ_DIR": str(HERE)}
    started = time.monotonic()
    with log.open("w") as out:
        # Bounded: libFuzzer stops itself at max_total_time; a stuck process is killed well after.
        subprocess.run(args, cwd=FILTER, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 600)
    result = Result(target, time.monotonic() - started)
    text = log.read_text(errors="replace")
    for key, attr in (
        ("number_of_executed_units", "executions"),
        ("new_units_added", "new_units"),
        ("peak_rss_mb", "peak_rss_mb"),
    ):
        m = re.search(rf"stat::{key}:\s*(\d+)", text)
        if m:
            setattr(result, attr, int(m.group(1)))
    result.corpus = sum(1 for _ in corpus.iterdir())
    for path in sorted(set(crashes.iterdir()) - before):
        kind = path.name.removeprefix(f"{target}-").split("-")[0]
        attr = {"crash": "crashes", "leak": "leaks", "timeout": "hangs", "oom": "ooms"}.get(kind, "crashes")
        setattr(result, attr, getattr(result, attr) + 1)
        result.artifact = str(path.relative_to(REPO))
    if "panic: memory leaked" in text and not result.leaks:
        result.leaks, result.crashes = 1, max(0, result.crashes - 1)
    if result.executions == 0 and not result.failed:
        raise SystemExit(f"error: {target}: libFuzzer ran nothing; see {log}")
    return result


def table(results: list[Result]) -> str:
    rows = [
        "| target | seconds | executions | exec/s | new units | corpus | peak RSS MB "
        "| crashes | leaks | hangs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rate = r.executions / r.seconds if r.seconds else 0
        rows.append(
            f"| {r.target} | {r.seconds:.0f} | {r.executions:,} | {rate:,.0f} | {r.new_units} | {r.corpus} "
            f"| {r.peak_rss_mb} | {r.crashes + r.ooms} | {r.leaks} | {r.hangs} |"
        )
    total = sum(r.executions for r in results)
    seconds = sum(r.seconds for r in results)
    fails = sum(r.crashes + r.ooms for r in results)
    leaks = sum(r.leaks for r in results)
    hangs = sum(r.hangs for r in results)
    rate = total / seconds if seconds else 0
    rows.append(
        f"| **all** | {seconds:.0f} | **{total:,}** | {rate:,.0f} | | | | {fails} | {leaks} | {hangs} |"
    )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")), help="per target"
    )
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated (default: all)")
    p.add_argument("--report", type=Path, help="write the table as Markdown here too")
    p.add_argument("--build-only", action="store_true")
    p.add_argument(
        "--smoke", action="store_true", help="a Debug build, SMOKE_SECONDS per target (part of make test)"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.seconds = SMOKE_SECONDS
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise SystemExit(f"unknown target(s): {', '.join(sorted(unknown))} (have: {', '.join(TARGETS)})")
    binary = build("Debug" if args.smoke else "ReleaseSafe")
    if args.build_only:
        return 0
    extra = extremes()
    log_dir = BUILD / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for target in targets:
        r = fuzz(binary, target, args.seconds, extra, log_dir, smoke=args.smoke)
        status = f"FAILED: {r.artifact}" if r.failed else "ok"
        print(
            f"{target}: {r.executions:,} executions in {r.seconds:.0f} s, corpus {r.corpus}: {status}",
            flush=True,
        )
        results.append(r)
    report = table(results)
    print(report)
    if args.report:
        args.report.write_text(report)
    failed = [r for r in results if r.failed]
    for r in failed:
        print(
            f"{r.target}: reproduce with `cd wasm-filters/mcp-server && MCPGW_FUZZ_TARGET={r.target} "
            f"MCPGW_FUZZ_DIR=fuzz ../../{BINARY.relative_to(REPO)} ../../{r.artifact}`; "
            f"log {log_dir / (r.target + '.log')}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
