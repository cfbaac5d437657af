"""The wheel runs anywhere: built from the sources, installed into a clean venv, run from outside.

`make test-wheel` runs this module (it is left out of the main pytest run, which it would slow
by about two minutes). The wheel is built from a copy of the checkout's tracked and unignored
files only, so nothing built in the checkout (plugin-server/plugins/, build/) can leak into it:
the plugin in the wheel is the one its own build made. The venv is created outside the
repository, installs the wheel with its dependencies (pip's cache is reused), and every command
runs from a directory outside the repository, with nothing of the checkout on sys.path.

Nothing here skips: a missing git, a failed build, a failed install fail the test loudly.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mcpgw import __version__
from mcpgw.stack import free_port, free_ports
from mcpgw.translate.filterconfig import SCHEMA
from tests.integration.mcphttp import call

REPO = Path(__file__).resolve().parents[2]
PLUGIN_VERSION = (REPO / "wasm-filters" / "mcp-server" / "VERSION").read_text().strip()
# Building the Wasm filter (Zig) and installing every dependency take a while on a busy machine.
pytestmark = pytest.mark.timeout(1200)


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path  # outside the repository: every command runs here
    site: Path  # the venv's site-packages

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    @property
    def env(self) -> dict[str, str]:
        """This process's environment without anything that points into the checkout."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.bin("mcpgw"), *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str, log: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.bin("mcpgw"), *args],
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            start_new_session=True,
        )


def _checked(command: list[str], what: str, timeout: float, cwd: Path) -> str:
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"{what} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    print(f"{what}: {time.monotonic() - started:.1f} s")
    return result.stdout


def _source_copy(target: Path) -> Path:
    """The checkout's tracked and unignored files (what a fresh clone has, plus new files)."""
    listed = _checked(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], "git ls-files", 60, REPO
    )
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a file deleted but not yet committed is still listed
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    assert not root.resolve().is_relative_to(REPO), f"{root} must be outside the repository"
    source = _source_copy(root / "src")
    dist = root / "dist"
    _checked(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(source)],
        "pip wheel (builds the filter)",
        900,
        root,
    )
    (wheel,) = dist.glob("mcpgw-*.whl")
    venv = root / "venv"
    _checked([sys.executable, "-m", "venv", str(venv)], "python -m venv", 120, root)
    _checked(
        [str(venv / "bin" / "python"), "-m", "pip", "install", str(wheel)], "pip install wheel", 900, root
    )
    work = root / "work"
    work.mkdir()
    site = Path(
        _checked(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"],
            "site-packages",
            60,
            work,
        ).strip()
    )
    yield Installed(venv=venv, work=work, site=site)


def test_the_installed_package_uses_its_own_files(installed: Installed) -> None:
    probe = (
        "import json, mcpgw, pluginserver, mcpgw.bundled as b; "
        "kind, where = b.location(); "
        "print(json.dumps({'mcpgw': mcpgw.__file__, 'pluginserver': pluginserver.__file__, 'kind': kind, "
        "'where': str(where), 'template': str(b.bootstrap_template()), 'plugins': str(b.plugins_dir())}))"
    )
    result = subprocess.run(
        [installed.bin("python"), "-c", probe],
        cwd=installed.work,
        env=installed.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["kind"] == "wheel"
    for key in ("mcpgw", "pluginserver", "where", "template", "plugins"):
        assert Path(seen[key]).is_relative_to(installed.site), (key, seen[key])
    built = Path(seen["plugins"]) / "mcp-server" / PLUGIN_VERSION
    assert {p.name for p in built.iterdir()} >= {"plugin.wasm", "plugin.wasm.sha256", "libconfigcheck.so"}


def test_version_names_mcpgw_the_plugin_and_the_schema(installed: Installed) -> None:
    result = installed.run("--version")
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == f"mcpgw {__version__} (configuration schema {SCHEMA})"
    assert second.startswith(f"plugin mcp-server {PLUGIN_VERSION} (configuration schema {SCHEMA}) from ")
    assert Path(second.rpartition(" from ")[2]).is_relative_to(installed.site)


def test_bootstrap_renders_a_config_envoy_accepts(installed: Installed) -> None:
    result = installed.run("bootstrap", "--node-id", "wheel-edge", "--xds", "127.0.0.1:18000")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["node"]["id"] == "wheel-edge"
    path = installed.work / "bootstrap.yaml"
    path.write_text(result.stdout)
    check = subprocess.run(
        [installed.bin("envoy"), "--mode", "validate", "-c", str(path), "--base-id", str(free_port())],
        cwd=installed.work,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def _demo_copy(installed: Installed, name: str) -> Path:
    """A copy of the demo registry bundled in the installed wheel."""
    bundled = installed.site / "mcpgw" / "_bundled" / "demo-registry"
    assert (bundled / "petstore.yaml").is_file(), f"no demo registry in the wheel at {bundled}"
    return Path(shutil.copytree(bundled, installed.work / name))


def test_validate_needs_f_and_checks_the_bundled_demo(installed: Installed) -> None:
    missing = installed.run("validate")
    assert missing.returncode == 2 and "-f/--registry" in missing.stderr, missing.stderr
    registry = _demo_copy(installed, "validate-registry")
    result = installed.run("validate", "-f", str(registry))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: default/petstore ("), result.stdout
    serve = installed.run("serve")
    assert serve.returncode == 2 and "-f/--registry" in serve.stderr, serve.stderr


def _wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float, log: Path) -> list[str]:
    """Lines on stdout up to the one holding `needle` (the process's stderr log when it never comes)."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            lines.append(line)
            if needle in line:
                return lines
            continue
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(
        f"{needle!r} not printed in {timeout}s (exit {process.poll()}); stdout:\n{''.join(lines)}\n"
        f"stderr:\n{log.read_text()[-4000:]}"
    )


def _stop(process: subprocess.Popen[str], log: Path) -> None:
    """SIGINT as Ctrl-C would: the command must stop cleanly and exit 0."""
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"did not stop within 30 s after SIGINT:\n{log.read_text()[-4000:]}") from None
    assert code == 0, f"exit {code}:\n{log.read_text()[-4000:]}"


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_up_serves_the_bundled_demo_through_envoy_and_stops_cleanly(installed: Installed) -> None:
    listen, xds, status, plugins, admin, stats, backend, broker = free_ports(8)
    log = installed.work / "up.log"
    process = installed.start(
        "--log-level", "warning", "up",
        "--listen-port", str(listen), "--xds-port", str(xds), "--admin", f"127.0.0.1:{status}",
        "--plugin-port", str(plugins), "--envoy-admin-port", str(admin), "--envoy-stats-port", str(stats),
        "--demo-backend-port", str(backend), "--broker-port", str(broker),
        log=log,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{listen}/mcp/default/petstore"
        printed = "".join(_wait_for_line(process, url, timeout=120, log=log))
        copy = next(
            Path(line.split("a copy in ", 1)[1].split(";", 1)[0])
            for line in printed.splitlines()
            if "bundled demo registry" in line
        )
        assert copy.is_dir() and not copy.is_relative_to(installed.site), copy
        answer = asyncio.run(call(url, "tools/list"))
        names = {tool["name"] for tool in answer["result"]["tools"]}
        assert {"getPet", "describePet"} <= names, names
        version = _json(f"http://127.0.0.1:{status}/status")["version"]
        assert version["mcpgw"] == __version__ and version["config_schema"] == SCHEMA
        assert version["plugin"]["version"] == PLUGIN_VERSION and version["plugin"]["config_schema"] == SCHEMA
        # The Envoy child, to check it is gone after the stop.
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        assert children, "mcpgw up runs Envoy as its child"
        _stop(process, log)
        for pid in children:
            status_file = Path(f"/proc/{pid}/status")
            assert not status_file.exists() or "zombie" in status_file.read_text(), (
                f"child {pid} left running"
            )
        assert not copy.exists(), "the demo copy is removed when up stops"
        assert "mcpgw stopped" in log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_serve_runs_a_control_plane_with_the_bundled_plugin(installed: Installed) -> None:
    registry = _demo_copy(installed, "serve-registry")
    xds, admin, plugins, listen, broker = free_ports(5)
    log = installed.work / "serve.log"
    process = installed.start(
        "--log-level", "warning", "serve", "-f", str(registry),
        "--xds", f"127.0.0.1:{xds}", "--admin", f"127.0.0.1:{admin}", "--plugins", f"127.0.0.1:{plugins}",
        "--listen", f"127.0.0.1:{listen}", "--broker", f"127.0.0.1:{broker}",
        log=log,
    )  # fmt: skip
    try:
        _wait_for_line(process, "control plane serving", timeout=60, log=log)
        status = _json(f"http://127.0.0.1:{admin}/status")
        assert [s["key"] for s in status["registry"]["servers"]] == ["default/petstore"]
        assert status["version"]["plugin"]["version"] == PLUGIN_VERSION
        index = _json(f"http://127.0.0.1:{plugins}/plugins/")
        assert [(p["name"], p["version"]) for p in index["plugins"]] == [("mcp-server", PLUGIN_VERSION)]
        assert index["plugins"][0]["sha256"] == status["version"]["plugin"]["sha256"]
        _stop(process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
