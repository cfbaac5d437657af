"""The filter's native configuration check for tests: the built one, or built now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mcpgw.translate.filtercheck import FilterCheck, beside
from pluginserver.catalog import latest
from pluginserver.server import DEFAULT_ROOT

REPO = Path(__file__).resolve().parents[1]


def built_filter_check() -> FilterCheck:
    """The check beside the newest built `mcp-server` plugin, as `ControlPlane.start` finds it;
    runs `wasm-filters/build.py mcp-server` first when it is missing (~1 minute)."""
    check = _beside_latest()
    if check is None:
        subprocess.run(
            [sys.executable, str(REPO / "wasm-filters" / "build.py"), "mcp-server"], check=True, timeout=600
        )
        check = _beside_latest()
    assert check is not None, f"no native configuration check under {DEFAULT_ROOT} after building"
    return check


def _beside_latest() -> FilterCheck | None:
    try:
        plugin = latest("mcp-server", DEFAULT_ROOT)
    except Exception:
        return None
    return beside(plugin.path)
