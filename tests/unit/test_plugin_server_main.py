"""`python -m pluginserver`: the plugin server on its own, as the Kubernetes Deployment
mcpgw-plugins runs it; it serves the shipped plugins with their sha256 and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

from mcpgw.stack import free_port
from pluginserver.catalog import scan
from pluginserver.server import DEFAULT_ROOT


def test_serves_the_shipped_plugins_and_stops_on_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pluginserver", f"--bind=127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "plugin server on http://127.0.0.1:" in process.stdout.readline()
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.read() == b"ok\n"
                break
            except OSError:
                assert time.monotonic() < deadline, "no /healthz within 20 s"
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/plugins/", timeout=5) as response:
            index = json.load(response)
        shipped, _ = scan(DEFAULT_ROOT)
        assert shipped and {p["sha256"] for p in index["plugins"]} == {p.sha256 for p in shipped}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_bad_address_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pluginserver", "--bind=nowhere"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and result.stderr.startswith("error: --bind:"), result.stderr
