#!/usr/bin/env python3
"""Build, test and format-check the Proxy-Wasm filters under wasm-filters/.

A filter is a directory holding ``src/main.zig`` and ``VERSION``. Building it
writes ``plugin-server/plugins/<dir>/<version>/plugin.wasm`` and, next to it,
``plugin.wasm.sha256`` (hex digest and a newline), the layout the plugin
server serves and the control plane points Envoy at. A filter with
``src/check.zig`` also gets, in the same directory, its configuration parser
as a native library (``libconfigcheck.so``) that the control plane loads to
check every configuration it generates with the filter's own rules.

    python wasm-filters/build.py               build every filter
    python wasm-filters/build.py --test        run the Zig unit tests natively
    python wasm-filters/build.py --check-fmt   zig fmt --check on the sources
    python wasm-filters/build.py mcp-server    only the named filter(s)
    python wasm-filters/build.py --out DIR     build into DIR/<dir>/<version>/ instead
                                               (the wheel build bundles the plugins so)

The compiler is the ``ziglang`` wheel of the running interpreter, so the
project's venv is the whole toolchain. Exit status is non-zero when any step
fails.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PLUGINS = REPO / "plugin-server" / "plugins"

# ReleaseFast, stripped: ~285 KB against ~197 KB for ReleaseSmall. Measured in V8 (the
# engine Envoy embeds) by bench/dataplane_hotpath.py, the filter's per-request work runs
# 1.7-1.9x faster (tools/call 3.5 -> 2.0 us, tools/list 1.4 -> 0.75 us). The module is
# fetched once (cached by sha256) and compiled once per VM, so 90 KB more costs nothing
# per request. Both modes drop Zig's safety checks; the unit tests run in Debug.
OPTIMIZE = "ReleaseFast"
# The native configuration check runs inside the control plane: keep Zig's safety checks, so
# a bug in the parser stops with a message instead of corrupting the control plane's memory.
CHECK_OPTIMIZE = "ReleaseSafe"
CHECK_LIBRARY = "libconfigcheck.dylib" if sys.platform == "darwin" else "libconfigcheck.so"


def zig(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ziglang", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
    )


def filters(names: list[str]) -> list[Path]:
    found = sorted(
        d
        for d in HERE.iterdir()
        if d.is_dir() and (d / "src" / "main.zig").is_file() and (d / "VERSION").is_file()
    )
    if not names:
        return found
    by_name = {d.name: d for d in found}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise SystemExit(f"unknown filter(s): {', '.join(missing)} (have: {', '.join(by_name) or 'none'})")
    return [by_name[n] for n in names]


def version_of(d: Path) -> str:
    v = (d / "VERSION").read_text().strip()
    if not v or any(c in v for c in "/\\ \t") or v in (".", ".."):
        raise SystemExit(f"{d.name}/VERSION: not a usable version: {v!r}")
    return v


def shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it (the usual case), else whole."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def build(d: Path, plugins: Path = PLUGINS) -> bool:
    out_dir = plugins / d.name / version_of(d)
    out_dir.mkdir(parents=True, exist_ok=True)
    wasm = out_dir / "plugin.wasm"
    tmp = out_dir / "plugin.wasm.tmp"
    r = zig(
        "build-exe",
        "src/main.zig",
        "-target",
        "wasm32-wasi",
        "-O",
        OPTIMIZE,
        "-fno-entry",
        "-rdynamic",
        "-fstrip",
        f"-femit-bin={tmp}",
        cwd=d,
    )
    if r.returncode != 0:
        sys.stderr.write(f"{d.name}: build failed\n{r.stderr}")
        tmp.unlink(missing_ok=True)
        return False
    data = tmp.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    # Publish the module before its digest, each atomically, so a reader
    # never sees a digest for bytes that are not there yet.
    tmp.replace(wasm)
    sha_tmp = out_dir / "plugin.wasm.sha256.tmp"
    sha_tmp.write_text(digest + "\n")
    sha_tmp.replace(out_dir / "plugin.wasm.sha256")
    # zig leaves an object file next to the output on some targets.
    for extra in out_dir.glob("plugin.wasm.tmp.*"):
        extra.unlink()
    print(f"{shown(wasm)}  {len(data)} bytes  sha256 {digest}")
    return build_check(d, out_dir)


def build_check(d: Path, out_dir: Path) -> bool:
    """The filter's configuration parser for this machine (`src/check.zig`), when it has one."""
    if not (d / "src" / "check.zig").is_file():
        return True
    lib = out_dir / CHECK_LIBRARY
    tmp = out_dir / f"tmp-{CHECK_LIBRARY}"
    r = zig(
        "build-lib",
        "-dynamic",
        "src/check.zig",
        "-O",
        CHECK_OPTIMIZE,
        "-fPIC",
        f"-femit-bin={tmp}",
        cwd=d,
    )
    if r.returncode != 0:
        sys.stderr.write(f"{d.name}: native configuration check failed to build\n{r.stderr}")
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(lib)
    for extra in out_dir.glob(f"tmp-{CHECK_LIBRARY}*"):
        extra.unlink()
    print(f"{shown(lib)}  {lib.stat().st_size} bytes")
    return True


def test_roots(d: Path) -> list[Path]:
    """Files whose tests to run: src/tests.zig when present (it imports every
    natively testable module once), else every source with a test block that
    is not the wasm entry point."""
    src = d / "src"
    if (src / "tests.zig").is_file():
        return [src / "tests.zig"]
    return sorted(f for f in src.glob("*.zig") if f.name != "main.zig" and 'test "' in f.read_text())


def test(d: Path) -> bool:
    ok = True
    for f in test_roots(d):
        r = zig("test", str(f.relative_to(d)), cwd=d)
        # The test runner reports on stderr; keep only the summary unless it failed.
        lines = (r.stderr + r.stdout).strip().splitlines()
        if r.returncode != 0:
            ok = False
            sys.stderr.write(f"{d.name}/{f.relative_to(d)}: FAILED\n" + "\n".join(lines) + "\n")
        else:
            summary = lines[-1] if lines else "ok"
            print(f"{d.name}/{f.relative_to(d)}: {summary}")
    return ok


def check_fmt(d: Path) -> bool:
    r = zig("fmt", "--check", "src", cwd=d)
    if r.returncode != 0:
        bad = (r.stdout + r.stderr).strip()
        sys.stderr.write(f"{d.name}: not zig fmt clean:\n{bad}\n")
        return False
    print(f"{d.name}: zig fmt clean")
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--test", action="store_true", help="run the Zig unit tests natively")
    mode.add_argument("--check-fmt", action="store_true", help="zig fmt --check the sources")
    p.add_argument(
        "--out",
        type=Path,
        default=PLUGINS,
        help="the plugin folder to build into (default: plugin-server/plugins)",
    )
    p.add_argument("filters", nargs="*", help="filter directory names (default: all)")
    args = p.parse_args(argv)

    out = args.out.resolve()
    step = test if args.test else check_fmt if args.check_fmt else lambda d: build(d, out)
    targets = filters(args.filters)
    if not targets:
        sys.stderr.write("no filters found (a filter needs src/main.zig and VERSION)\n")
        return 1
    results = [step(d) for d in targets]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
