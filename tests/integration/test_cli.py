"""The `mcpgw` command line, run as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcpgw.envoyproc import envoy_binary
from mcpgw.limits import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEAP_BYTES,
    envoy_connection_cap,
    fd_reserve,
)
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
    # Without the matcher, with the tag extraction that turns per-tool names into labels.
    full_stats = yaml.safe_load(full.stdout)["stats_config"] if full.returncode == 0 else {}
    assert "stats_matcher" not in full_stats and full_stats["stats_tags"], full.stderr
    path.write_text(full.stdout)
    assert_envoy_accepts(path)


def test_bootstrap_caps_connections_within_the_fd_limit(tmp_path: Path) -> None:
    """The connection cap (and the broker's breaker) follow --max-connections; without it the
    default is lowered to what this machine's hard RLIMIT_NOFILE can serve."""
    result = run("bootstrap", "--node-id", "e", "--xds", "127.0.0.1:18000", "--max-connections", "1234")
    assert result.returncode == 0, result.stderr
    bootstrap = yaml.safe_load(result.stdout)
    monitor = bootstrap["overload_manager"]["resource_monitors"][0]
    assert monitor["name"] == "envoy.resource_monitors.global_downstream_max_connections"
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
    assert hard == resource.RLIM_INFINITY or 2 * cap + fd_reserve(hard) <= hard


def test_bootstrap_warns_when_the_file_limit_leaves_few_connections() -> None:
    """A runtime's small nofile (here 300) must not silently give Envoy a handful of connections."""

    def small_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))

    result = subprocess.run(
        [*MCPGW, "bootstrap", "--node-id", "e", "--xds", "127.0.0.1:18000"],
        capture_output=True, text=True, timeout=60, check=False, preexec_fn=small_limit,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cap = yaml.safe_load(result.stdout)["overload_manager"]["resource_monitors"][0]["typed_config"][
        "max_active_downstream_connections"
    ]
    assert cap == envoy_connection_cap(hard=300) == 112
    assert "warning: the open-file limit (300) leaves Envoy 112 client connection(s)" in result.stderr


def test_bootstrap_max_heap_sets_the_overload_managers_heap(tmp_path: Path) -> None:
    """--max-heap is the fixed_heap monitor's limit, which every heap action is triggered by;
    the default is DEFAULT_MAX_HEAP_BYTES; a size too small or unreadable is a usage error."""
    result = run("bootstrap", "--node-id", "e", "--xds", "127.0.0.1:18000", "--max-heap", "96Mi")
    assert result.returncode == 0, result.stderr
    overload = yaml.safe_load(result.stdout)["overload_manager"]
    monitors = {m["name"]: m["typed_config"] for m in overload["resource_monitors"]}
    assert monitors["envoy.resource_monitors.fixed_heap"]["max_heap_size_bytes"] == 96 << 20
    actions = {a["name"]: a["triggers"][0] for a in overload["actions"]}
    assert actions["envoy.overload_actions.stop_accepting_requests"]["threshold"] == {"value": 0.98}
    assert actions["envoy.overload_actions.shrink_heap"]["threshold"] == {"value": 0.95}
    assert set(actions) >= {
        "envoy.overload_actions.reduce_timeouts",
        "envoy.overload_actions.reset_high_memory_stream",
        "envoy.overload_actions.disable_http_keepalive",
    }
    assert all(t["name"] == "envoy.resource_monitors.fixed_heap" for t in actions.values())
    path = tmp_path / "bootstrap.yaml"
    path.write_text(result.stdout)
    assert_envoy_accepts(path)
    default = yaml.safe_load(run("bootstrap", "--node-id", "e", "--xds", "127.0.0.1:18000").stdout)
    heap = default["overload_manager"]["resource_monitors"][1]["typed_config"]["max_heap_size_bytes"]
    assert heap == DEFAULT_MAX_HEAP_BYTES
    for size, reason in (("16Mi", "expected at least 32Mi"), ("lots", "expected a size such as 512Mi")):
        refused = run("bootstrap", "--node-id", "e", "--xds", "127.0.0.1:18000", "--max-heap", size)
        assert refused.returncode == 2 and reason in refused.stderr, refused.stderr


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


def up_ports(
    listen: int, xds: int, admin: int, plugin: int, envoy_admin: int, backend: int, broker: int
) -> list[str]:
    """`mcpgw up`'s port flags, every port given (tests run beside each other on free ports)."""
    return [
        *("--listen-port", str(listen), "--xds-port", str(xds), "--admin", f"127.0.0.1:{admin}"),
        *("--plugin-port", str(plugin), "--envoy-admin-port", str(envoy_admin)),
        *("--demo-backend-port", str(backend), "--broker-port", str(broker)),
    ]


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
            *up_ports(listen_port, xds_port, status_port, plugin_port, admin_port, backend_port, broker_port),
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


def test_up_stopped_while_starting_exits_0_and_stops_envoy(tmp_path: Path) -> None:
    """SIGTERM before start-up is done (Envoy started, not yet ready) is a clean stop, not death by -15."""
    backend_port, listen_port, admin_port, status_port, xds_port, plugin_port, broker_port = free_ports(7)
    log = tmp_path / "mcpgw-up.log"
    registry = copy_registry(tmp_path / "registry", backend_port)
    process = subprocess.Popen(
        [
            *MCPGW, "--log-level", "warning", "up", "-f", str(registry),
            *up_ports(listen_port, xds_port, status_port, plugin_port, admin_port, backend_port, broker_port),
            "--envoy-stats-port", str(free_port()),
        ],
        stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True,
    )  # fmt: skip
    envoy_pid = None
    try:
        deadline = time.monotonic() + 60
        while envoy_pid is None:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            envoy_pid = int(children[0]) if children else None
            time.sleep(0.01)
        # Envoy frozen the moment it exists: start-up cannot finish, so the signal lands inside it.
        os.kill(envoy_pid, signal.SIGSTOP)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        os.kill(envoy_pid, signal.SIGCONT)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert "stopped while starting" in log.read_text()
        assert (
            not Path(f"/proc/{envoy_pid}").exists()
            or "zombie" in Path(f"/proc/{envoy_pid}/status").read_text()
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Envoy runs in a process group of its own: when `up` failed to stop it, the test does.
        if envoy_pid is not None:
            with contextlib.suppress(OSError):  # gone (and its pid not reused by another program)
                if b"envoy" in Path(f"/proc/{envoy_pid}/cmdline").read_bytes():
                    os.kill(envoy_pid, signal.SIGKILL)


def test_serve_refuses_a_bad_namespace_token_file_in_one_line(tmp_path: Path) -> None:
    registry = copy_registry(tmp_path / "registry", free_port())
    tokens = tmp_path / "namespace-tokens.yaml"
    tokens.write_text("team-a:\n  - the-token-itself\n")
    xds, admin = free_ports(2)
    result = run(
        "serve", "-f", str(registry), "--xds", f"127.0.0.1:{xds}", "--admin", f"127.0.0.1:{admin}",
        "--no-plugin-server", "--no-broker", "--admin-namespace-tokens", str(tokens),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: {tokens}: team-a[0]: must be the 64 lowercase hex digits" in result.stderr
    assert "Traceback" not in result.stderr and "the-token-itself" not in result.stderr


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


def run_with(env: dict[str, str | bytes], *args: str) -> subprocess.CompletedProcess[str]:
    """`mcpgw` with these environment variables set (bytes: values that are not UTF-8)."""
    full: dict[str | bytes, str | bytes] = {**os.environ, **env}
    return subprocess.run([*MCPGW, *args], capture_output=True, text=True, timeout=60, check=False, env=full)


def subcommands(parser: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every (sub)command path and its parser, nested ones included (`get servers`)."""
    import argparse

    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(((*prefix, name), sub))
                found += subcommands(sub, (*prefix, name))
    return found


# Subcommands with the arguments they need to parse.
EXAMPLES: dict[tuple[str, ...], list[str]] = {
    ("up",): [],
    ("serve",): ["-f", "r"],
    ("validate",): ["-f", "r"],
    ("broker",): [],
    ("demo-backend",): [],
    ("bootstrap",): ["--node-id", "n", "--xds", "h:1"],
    ("import",): ["openapi", "-f", "x"],
    ("apply",): ["-f", "x"],
    ("get", "servers"): [],
    ("get", "tools"): ["a/b"],
    ("delete", "tool"): ["a/b", "t"],
    ("session-keys", "rotate"): [],
}


def test_global_options_go_before_or_after_every_subcommand() -> None:
    from mcpgw.cli import _parser

    parser = _parser()
    leaves = {path: sub for path, sub in subcommands(parser) if not subcommands(sub)}
    # Every subcommand, nested ones and those added later included, has its own copy.
    for path, sub in leaves.items():
        copies = [
            a for a in sub._actions if "--log-level" in a.option_strings or "--version" in a.option_strings
        ]
        assert len(copies) == 2, path
    assert set(EXAMPLES) <= leaves.keys()
    for path, rest in EXAMPLES.items():
        before = parser.parse_args(["--log-level", "debug", *path, *rest])
        after = parser.parse_args([*path, *rest, "--log-level", "warning"])
        neither = parser.parse_args([*path, *rest])
        assert (before.log_level, after.log_level, neither.log_level) == ("debug", "warning", None), path
    # The one given after the subcommand wins, as the last flag given does.
    both = parser.parse_args(["--log-level", "debug", "validate", "-f", "r", "--log-level", "error"])
    assert both.log_level == "error"
    # Through the real command: the level applies (debug lines appear) and --version works after too.
    registry = str(Path(__file__).resolve().parents[2] / "examples" / "registry")
    for args in (
        ["--log-level", "error", "validate", "-f", registry],
        ["validate", "-f", registry, "--log-level", "error"],
    ):
        assert run(*args).returncode == 0
    assert run("up", "--version").stdout.startswith("mcpgw ")
    refused = run("validate", "--log-level", "loud")
    assert refused.returncode == 2 and "invalid choice: 'loud'" in refused.stderr


def test_deprecated_flag_spellings_still_work_and_say_what_replaces_them() -> None:
    from mcpgw.cli import _parser, _up_admin

    old = run(
        "bootstrap", "--node-id", "e", "--xds", "127.0.0.1:18000", "--admin", "127.0.0.1:9911", "--delta"
    )
    new = run(
        "bootstrap",
        "--node-id",
        "e",
        "--xds",
        "127.0.0.1:18000",
        "--envoy-admin",
        "127.0.0.1:9911",
        "--xds-delta",
    )
    assert old.returncode == new.returncode == 0 and old.stdout == new.stdout
    assert new.stderr == ""
    bootstrap = yaml.safe_load(new.stdout)
    assert bootstrap["admin"]["address"]["socket_address"]["port_value"] == 9911
    assert bootstrap["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    assert old.stderr.splitlines() == [
        "warning: --admin is deprecated and will be removed in the next release; use --envoy-admin "
        "HOST:PORT (--admin is the mcpgw admin API everywhere)",
        "warning: --delta is deprecated and will be removed in the next release; use --xds-delta",
    ]
    parser = _parser()
    assert _up_admin(parser.parse_args(["up"])) == ("127.0.0.1", 18001)
    assert _up_admin(parser.parse_args(["up", "--admin", "127.0.0.2:9000"])) == ("127.0.0.2", 9000)
    assert _up_admin(parser.parse_args(["up", "--admin-host", "127.0.0.3", "--status-port", "9001"])) == (
        "127.0.0.3",
        9001,
    )
    broker = parser.parse_args(["broker", "--listen", "127.0.0.1:9002", "--redis", "redis://127.0.0.1:1/0"])
    assert (broker.listen, broker.redis) == (("127.0.0.1", 9002), "redis://127.0.0.1:1/0")
    broker = parser.parse_args(["broker", "--broker", "127.0.0.1:9003", "--broker-redis", "redis://h:1/0"])
    assert (broker.listen, broker.redis) == (("127.0.0.1", 9003), "redis://h:1/0")
    for spelling in ("--token-file", "--admin-token-file"):
        assert parser.parse_args(["get", "servers", spelling, "/t"]).token_file == Path("/t")
    # An admin client takes the admin API as `serve --admin` gives it (HOST:PORT) or as a URL.
    assert parser.parse_args(["get", "servers", "--admin", "127.0.0.1:9004"]).admin == "http://127.0.0.1:9004"
    assert parser.parse_args(["get", "servers", "--admin", "https://gw:9005"]).admin == "https://gw:9005"


def test_docs_list_every_flag_of_every_subcommand() -> None:
    """docs/cli.md's table names each flag with every subcommand that has it."""
    from mcpgw.cli import _parser

    rows: dict[str, str] = {}
    for line in (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)]
        if len(cells) > 3 and cells[1].startswith("`-"):
            for flag in cells[1].replace("`", "").split(","):
                name = flag.strip().split(" ")[0]
                rows[name] = f"{rows.get(name, '')}, {cells[2]}"
    admin = "apply, get, delete, session-keys, consumers"
    missing = []
    for path, sub in subcommands(_parser()):
        if subcommands(sub):
            continue
        for action in sub._actions:
            for flag in action.option_strings:
                if flag in ("-h", "--help"):
                    continue
                named = set(re.findall(r"[a-z][a-z-]*", rows.get(flag, "").replace("admin clients", admin)))
                if not {"all", path[0]} & named:
                    missing.append(f"{' '.join(path)} {flag}")
    assert not missing, missing


@pytest.mark.parametrize(
    ("variable", "value", "command", "says"),
    [
        (
            "MCPGW_LOG_LEVEL",
            "loud",
            ["validate", "-f", "."],
            "='loud' is not a log level; expected one of debug",
        ),
        ("MCPGW_ADMIN_TOKEN", "", ["serve", "-f", "."], "is set but empty; expected a bearer token"),
        ("MCPGW_ADMIN_TOKEN", "  ", ["up"], "is set but empty; expected a bearer token"),
        ("MCPGW_ADMIN_TOKEN", b"t\xffk", ["get", "servers"], "has characters other than visible ASCII"),
        ("MCPGW_ADMIN_TOKEN", "two words", ["serve", "-f", "."], "has characters other than visible ASCII"),
        (
            "MCPGW_ADMIN_URL",
            "ftp://gw",
            ["get", "servers"],
            "='ftp://gw' is not an admin API URL; expected http://",
        ),
        ("MCPGW_REDIS_PASSWORD", "", ["broker"], "is set but empty; expected the Redis password"),
        ("MCPGW_REDIS_PASSWORD", b"p\xff", ["serve", "-f", "."], "is not valid UTF-8"),
        ("MCPGW_BRIDGE_IDLE_SECONDS", "soon", ["broker"], "='soon' is not a positive number of seconds"),
        ("MCPGW_BRIDGE_MAX_SESSIONS", "-1", ["up"], "='-1' is not a positive whole number"),
        (
            "MCPGW_SESSION_KEY",
            "c2hvcnQ",
            ["serve", "-f", "."],
            "must decode to 32 bytes, got 5; expected 32 random",
        ),
        ("MCPGW_SESSION_KEY", "!!", ["up"], "is not base64url; expected 32 random bytes in base64url"),
    ],
)
def test_a_bad_environment_value_is_one_line_and_exit_2(
    variable: str, value: str | bytes, command: list[str], says: str
) -> None:
    result = run_with({variable: value}, *command)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: ${variable}") and says in line, line
    secret = variable in ("MCPGW_ADMIN_TOKEN", "MCPGW_REDIS_PASSWORD", "MCPGW_SESSION_KEY")
    if secret and isinstance(value, str) and len(value.strip()) > 2:
        assert value not in line  # a would-be secret is never echoed


def test_a_flag_overriding_a_variable_makes_its_value_irrelevant(tmp_path: Path) -> None:
    registry = str(Path(__file__).resolve().parents[2] / "examples" / "registry")
    assert (
        run_with({"MCPGW_LOG_LEVEL": "loud"}, "--log-level", "info", "validate", "-f", registry).returncode
        == 0
    )
    assert run_with({"MCPGW_LOG_LEVEL": "DEBUG"}, "validate", "-f", registry).returncode == 0
    # An unreadable token file is the flag's problem, reported as such (not the variable's).
    result = run_with(
        {"MCPGW_ADMIN_TOKEN": ""}, "get", "servers", "--admin-token-file", str(tmp_path / "none")
    )
    assert result.returncode == 2 and "cannot read admin token file" in result.stderr


def test_validate_takes_a_directory_or_one_file(tmp_path: Path) -> None:
    registry = copy_registry(tmp_path / "registry", 18080)
    one = registry / "petstore.yaml"
    result = run("validate", "-f", str(one))
    assert result.returncode == 0 and result.stdout == f"ok: default/petstore (4 tools) from {one}\n"
    one.write_text(one.read_text().replace("type: integer", "type: int", 1))
    result = run("validate", "-f", str(one))
    assert result.returncode == 3 and f"{one}: tools[0].args[1].type: must be one of" in result.stderr
    missing = run("validate", "-f", str(tmp_path / "nothing"))
    assert missing.returncode == 3 and "registry directory does not exist" in missing.stderr
    # `serve` needs a directory, and says so of a file.
    from mcpgw.registry.filesource import load_directory
    from mcpgw.registry.validate import Invalid

    with pytest.raises(Invalid) as refused:
        load_directory(one)
    assert refused.value.problems[0].reason == "not a directory (a registry is a directory of YAML files)"


def test_up_demo_backend_port_rewires_the_demo_registry(tmp_path: Path) -> None:
    """`mcpgw up` without -f serves the demo; --demo-backend-port moves its backend, and the
    demo's servers follow it: a tool call through Envoy reaches the demo backend there."""
    backend_port, listen_port, admin_port, status_port, xds_port, plugin_port, broker_port = free_ports(7)
    log = tmp_path / "mcpgw-up.log"
    process = subprocess.Popen(
        [
            *MCPGW,
            "up",
            "--log-level",
            "warning",
            *up_ports(listen_port, xds_port, status_port, plugin_port, admin_port, backend_port, broker_port),
            "--session-keys",
            str(tmp_path / "keys.json"),
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
        answer = asyncio.run(call(url, "tools/call", {"name": "describePet", "arguments": {"id": 2}}))
        assert answer["result"]["content"][0]["text"] == "Tom is a cat (id 2).", answer
        status = json.load(urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=5))
        assert status["registry"]["servers"][0]["key"] == "default/petstore"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
