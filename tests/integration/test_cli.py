"""The `mcpgw` command line, run as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from mcpgw.envoyproc import envoy_binary
from mcpgw.limits import DEFAULT_MAX_CONNECTIONS, ENVOY_FD_RESERVE, envoy_connection_cap
from mcpgw.stack import free_ports
from tests.integration.conftest import copy_registry, free_port
from tests.integration.mcphttp import call

MCPGW = [sys.executable, "-m", "mcpgw.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MCPGW, *args], capture_output=True, text=True, timeout=60, check=False)


def assert_envoy_accepts(bootstrap: Path) -> None:
    """Envoy itself validates the bootstrap (`--mode validate`)."""
    check = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(bootstrap), "--base-id", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_bootstrap_is_a_config_envoy_accepts(tmp_path: Path) -> None:
    result = run(
        "bootstrap", "--node-id", "edge-1", "--xds", "127.0.0.1:18000", "--xds", "cp2.internal:18000"
    )
    assert result.returncode == 0, result.stderr
    bootstrap = yaml.safe_load(result.stdout)
    assert bootstrap["node"]["id"] == "edge-1"
    localities = bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"]
    # One priority per replica, in the order given: the first is preferred, the next takes over.
    assert [
        (lo.get("priority", 0), lo["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"])
        for lo in localities
    ] == [
        (0, "127.0.0.1"),
        (1, "cp2.internal"),
    ]
    path = tmp_path / "bootstrap.yaml"
    path.write_text(result.stdout)
    assert_envoy_accepts(path)
    # The core-stats matcher is on by default; --full-cluster-stats leaves it out, also valid.
    assert (
        "cluster\\.mcpgw/"
        in bootstrap["stats_config"]["stats_matcher"]["exclusion_list"]["patterns"][0]["safe_regex"]["regex"]
    )
    full = run("bootstrap", "--node-id", "edge-1", "--xds", "127.0.0.1:18000", "--full-cluster-stats")
    assert full.returncode == 0 and "stats_config" not in yaml.safe_load(full.stdout), full.stderr
    path.write_text(full.stdout)
    assert_envoy_accepts(path)


def test_bootstrap_caps_connections_within_the_fd_limit(tmp_path: Path) -> None:
    """The connection cap (and the broker's breaker) follow --max-connections; without it the
    default is lowered to what this machine's hard RLIMIT_NOFILE can serve."""
    result = run("bootstrap", "--node-id", "e", "--xds", "127.0.0.1:18000", "--max-connections", "1234")
    assert result.returncode == 0, result.stderr
    bootstrap = yaml.safe_load(result.stdout)
    (monitor,) = bootstrap["overload_manager"]["resource_monitors"]
    assert monitor["typed_config"]["max_active_downstream_connections"] == 1234
    broker = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "mcpgw-broker")
    assert broker["circuit_breakers"]["thresholds"][0]["max_requests"] == 1234
    path = tmp_path / "bootstrap.yaml"
    path.write_text(result.stdout)
    assert_envoy_accepts(path)
    default = yaml.safe_load(run("bootstrap", "--node-id", "e", "--xds", "127.0.0.1:18000").stdout)
    cap = default["overload_manager"]["resource_monitors"][0]["typed_config"][
        "max_active_downstream_connections"
    ]
    assert cap == envoy_connection_cap(DEFAULT_MAX_CONNECTIONS)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or 2 * cap + ENVOY_FD_RESERVE <= hard


def test_bootstrap_usage_errors_exit_2() -> None:
    result = run("bootstrap", "--node-id", "x", "--xds", "no-port")
    assert result.returncode == 2 and "expected host:port" in result.stderr


def test_validate_reports_file_field_and_reason(tmp_path: Path) -> None:
    registry = copy_registry(tmp_path / "registry", 18080)
    assert run("validate", "-f", str(registry)).returncode == 0
    path = registry / "petstore.yaml"
    path.write_text(path.read_text().replace("type: integer", "type: int", 1))
    result = run("validate", "-f", str(registry))
    assert result.returncode == 3
    assert f"{path}: tools[0].args[1].type: must be one of" in result.stderr


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not printed; got: {''.join(lines)}")


def test_up_serves_mcp_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    backend_port, listen_port, admin_port, status_port, xds_port, plugin_port, broker_port = free_ports(7)
    stats_port = free_port()
    log = tmp_path / "mcpgw-up.log"
    registry = copy_registry(tmp_path / "registry", backend_port)
    process = subprocess.Popen(
        [
            *MCPGW,
            "--log-level",
            "warning",
            "up",
            "-f",
            str(registry),
            "--listen-port",
            str(listen_port),
            "--xds-port",
            str(xds_port),
            "--status-port",
            str(status_port),
            "--plugin-port",
            str(plugin_port),
            "--envoy-admin-port",
            str(admin_port),
            "--demo-backend-port",
            str(backend_port),
            "--broker-port",
            str(broker_port),
            "--envoy-stats-port",
            str(stats_port),
        ],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = f"http://127.0.0.1:{listen_port}/mcp/default/petstore"
        try:
            wait_for_line(process, url, timeout=60)
        except AssertionError as error:
            raise AssertionError(f"{error}\nmcpgw up said:\n{log.read_text()[-3000:]}") from None
        status = json.load(urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=5))
        envoy_pid = None
        with open(f"/proc/{process.pid}/task/{process.pid}/children") as children:
            envoy_pid = int(children.read().split()[0])
        assert status["registry"]["servers"][0]["key"] == "default/petstore"
        # The server runs in another process: a private event loop for one session is fine here.
        answer = asyncio.run(call(url, "tools/call", {"name": "describePet", "arguments": {"id": 2}}))
        assert answer["result"]["content"][0]["text"] == "Tom is a cat (id 2)."
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/ready", timeout=5) as ready:
            assert ready.read().decode().strip() == "LIVE"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert (
            not Path(f"/proc/{envoy_pid}").exists()
            or "zombie" in Path(f"/proc/{envoy_pid}/status").read_text()
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_timeouts_take_fractions_and_session_ttls_whole_seconds() -> None:
    """Two parsers of seconds: fractional for timeouts and keep-alives (floats in their
    settings), whole for session TTLs (integers in the filter's tokens)."""
    from mcpgw.cli import _parser

    args = _parser().parse_args(["up", "--request-headers-timeout", "0.5", "--session-ttl", "60"])
    assert args.limit_request_headers_timeout_s == 0.5 and args.session_ttl == 60
    assert _parser().parse_args(["broker", "--keepalive", "0.5"]).keepalive == 0.5
    with pytest.raises(SystemExit):
        _parser().parse_args(["up", "--session-ttl", "0.5"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["up", "--idle-timeout", "0"])
