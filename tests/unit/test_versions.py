"""Versions a platform team tracks: mcpgw's, the plugin's and the configuration schema they share;
and what makes mcpgw adoptable (its LICENSE, CHANGELOG and license metadata)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from importlib.metadata import metadata, version
from pathlib import Path

import pytest

from mcpgw import __version__
from mcpgw.controlplane import ControlPlane, ControlPlaneOptions
from mcpgw.stack import DEFAULT_REGISTRY, free_ports
from mcpgw.translate.filtercheck import FilterRefused
from mcpgw.translate.filterconfig import SCHEMA
from mcpgw.versions import SchemaMismatch, check_schema, version_text
from pluginserver.catalog import latest
from pluginserver.server import DEFAULT_ROOT
from tests.filtercheck import built_filter_check

REPO = Path(__file__).resolve().parents[2]
PLUGIN_VERSION = (REPO / "wasm-filters" / "mcp-server" / "VERSION").read_text().strip()
# sha256 of the Apache License 2.0 as the ASF publishes it (LICENSE-2.0.txt), appendix included.
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_one_version_source() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mcpgw.__version__"}
    # The installed distribution (editable here, the wheel in tests/wheel) reports the same.
    assert version("mcpgw") == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_license_is_apache_2_and_declared() -> None:
    assert hashlib.sha256((REPO / "LICENSE").read_bytes()).hexdigest() == APACHE_2_SHA256
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert metadata("mcpgw")["License-Expression"] == "Apache-2.0"


def test_changelog_keeps_unreleased_and_this_version() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", text, flags=re.M)
    assert headings[0] == "Unreleased"
    assert __version__ in headings
    assert "keepachangelog.com" in text


def test_version_prints_mcpgw_and_the_plugin() -> None:
    command = [sys.executable, "-m", "mcpgw.cli", "--version"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"mcpgw {__version__} (configuration schema {SCHEMA})",
        f"plugin mcp-server {PLUGIN_VERSION} (configuration schema {SCHEMA}) "
        f"from {DEFAULT_ROOT / 'mcp-server' / PLUGIN_VERSION}",
    ]


def test_version_says_when_there_is_no_plugin(tmp_path: Path) -> None:
    text = version_text(tmp_path)
    assert text.splitlines()[0] == f"mcpgw {__version__} (configuration schema {SCHEMA})"
    assert text.splitlines()[1].startswith("plugin mcp-server: none (")


def test_the_plugin_reads_the_schema_the_control_plane_writes() -> None:
    check = built_filter_check()
    assert check.schema == SCHEMA
    # The filter's parser refuses any other schema, with the field named.
    config = {"server": {"name": "s", "version": "1"}, "base_path": "/m", "tools": []}
    check.check(json.dumps({"schema": SCHEMA, **config}))
    with pytest.raises(FilterRefused) as refused:
        check.check(json.dumps({"schema": SCHEMA + 1, **config}))
    assert refused.value.path == "schema"
    assert f"reads configuration schema {SCHEMA}, not {SCHEMA + 1}" in str(refused.value)


def test_config_md_documents_the_schema() -> None:
    text = (REPO / "wasm-filters" / "mcp-server" / "CONFIG.md").read_text()
    assert f'"schema": {SCHEMA},' in text
    assert "## Schema" in text


def test_a_plugin_of_another_schema_is_refused() -> None:
    plugin = latest("mcp-server", DEFAULT_ROOT)
    check = built_filter_check()
    check_schema(plugin, check)
    check.schema = SCHEMA + 1
    expected = f"reads configuration schema {SCHEMA + 1}, mcpgw .* writes schema {SCHEMA}"
    with pytest.raises(SchemaMismatch, match=expected):
        check_schema(plugin, check)
    check.schema = None  # a library that cannot say: nothing to compare, the filter still refuses
    check_schema(plugin, check)


async def test_the_control_plane_refuses_to_start_on_another_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the built plugin whose check library reports another schema: start refuses it."""
    import mcpgw.controlplane as controlplane

    real = controlplane._filter_check

    def other_schema(path: Path):  # type: ignore[no-untyped-def]
        check = real(path)
        assert check is not None
        check.schema = SCHEMA + 1
        return check

    monkeypatch.setattr(controlplane, "_filter_check", other_schema)
    registry = Path(shutil.copytree(DEFAULT_REGISTRY, tmp_path / "registry"))
    xds, admin = free_ports(2)
    plane = ControlPlane(
        ControlPlaneOptions(registry_dir=registry, plugins_dir=DEFAULT_ROOT, xds_port=xds, status_port=admin)
    )
    try:
        with pytest.raises(SchemaMismatch):
            await plane.start()
    finally:
        await plane.stop()


async def test_status_reports_every_version(tmp_path: Path) -> None:
    registry = Path(shutil.copytree(DEFAULT_REGISTRY, tmp_path / "registry"))
    xds, admin = free_ports(2)
    plane = ControlPlane(
        ControlPlaneOptions(registry_dir=registry, plugins_dir=DEFAULT_ROOT, xds_port=xds, status_port=admin)
    )
    await plane.start()
    try:
        plugin = latest("mcp-server", DEFAULT_ROOT)
        url = f"http://127.0.0.1:{plane.status_port}/status"

        def fetch() -> dict:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)

        status = await asyncio.to_thread(fetch)
        assert status["version"] == {
            "mcpgw": __version__,
            "config_schema": SCHEMA,
            "plugin": {
                "name": "mcp-server",
                "version": PLUGIN_VERSION,
                "sha256": plugin.sha256,
                "config_schema": SCHEMA,
            },
        }
    finally:
        await plane.stop()
