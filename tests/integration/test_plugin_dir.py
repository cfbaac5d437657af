"""`--plugin-dir`: a plugin folder of the operator's instead of the plugins mcpgw ships with."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mcpgw.stack import DEFAULT_REGISTRY, free_ports
from mcpgw.translate.filterconfig import SCHEMA
from pluginserver.catalog import latest
from pluginserver.server import DEFAULT_ROOT


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_serve_selects_and_serves_the_plugin_of_its_plugin_dir(tmp_path: Path) -> None:
    built = latest("mcp-server", DEFAULT_ROOT)
    mine = tmp_path / "plugins" / "mcp-server" / "7.7.7"
    shutil.copytree(built.path.parent, mine)
    registry = Path(shutil.copytree(DEFAULT_REGISTRY, tmp_path / "registry"))
    xds, admin, plugins, listen, broker = free_ports(5)
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mcpgw.cli", "--log-level", "warning", "serve", "-f", str(registry),
            "--plugin-dir", str(tmp_path / "plugins"),
            "--xds", f"127.0.0.1:{xds}", "--admin", f"127.0.0.1:{admin}", "--plugins", f"127.0.0.1:{plugins}",
            "--listen", f"127.0.0.1:{listen}", "--broker", f"127.0.0.1:{broker}",
        ],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while "control plane serving" not in line:
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()[-3000:]
            line = process.stdout.readline()
        version = _json(f"http://127.0.0.1:{admin}/status")["version"]
        assert version["plugin"] == {
            "name": "mcp-server",
            "version": "7.7.7",
            "sha256": built.sha256,
            "config_schema": SCHEMA,
        }
        index = _json(f"http://127.0.0.1:{plugins}/plugins/")
        assert [(p["name"], p["version"]) for p in index["plugins"]] == [("mcp-server", "7.7.7")]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_an_empty_plugin_dir_is_a_clear_error(tmp_path: Path) -> None:
    registry = Path(shutil.copytree(DEFAULT_REGISTRY, tmp_path / "registry"))
    xds, admin, plugins, listen, broker = free_ports(5)
    result = subprocess.run(
        [
            sys.executable, "-m", "mcpgw.cli", "serve", "-f", str(registry), "--plugin-dir", str(tmp_path),
            "--xds", f"127.0.0.1:{xds}", "--admin", f"127.0.0.1:{admin}", "--plugins", f"127.0.0.1:{plugins}",
            "--listen", f"127.0.0.1:{listen}", "--broker", f"127.0.0.1:{broker}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"error: {tmp_path / 'mcp-server'}: no versions of plugin 'mcp-server'" in result.stderr
    assert "Traceback" not in result.stderr
