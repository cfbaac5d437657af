"""The filter's own per-request cost in V8, by Zig optimize mode (the build-mode evidence).

Compiles `wasm-filters/mcp-server/src/hotpath_bench.zig` (the filter's request handling,
no host) with ReleaseSmall and ReleaseFast and times it under Node, whose V8 is the engine
Envoy embeds. Skipped, with the reason, when `node` is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FILTER = HERE.parent / "wasm-filters" / "mcp-server"
MODES = ("ReleaseSmall", "ReleaseFast")


def run(iterations: int = 100_000) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        return {"skipped": "node not installed"}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mcpgw-hotpath-") as tmp:
        for mode in MODES:
            wasm = Path(tmp) / f"{mode}.wasm"
            subprocess.run(
                [sys.executable, "-m", "ziglang", "build-exe", "src/hotpath_bench.zig",
                 "-target", "wasm32-freestanding", "-O", mode, "-fstrip", "-fno-entry", "-rdynamic",
                 f"-femit-bin={wasm}"],
                cwd=FILTER, check=True, capture_output=True,
            )  # fmt: skip
            result = subprocess.run(
                [node, str(HERE / "dataplane_hotpath.mjs"), str(wasm), str(iterations)],
                check=True, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            out[mode] = {
                "module_bytes": wasm.stat().st_size,
                **json.loads(result.stdout.strip().splitlines()[-1]),
            }
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
